"""MovieLens-25M scale, stage by stage: wall time and peak memory as the work grows, and growth exponents.

    python benchmarks/scale.py                                # 1M, 5M and 25M events; 10k/20k/60k items (~1.5 hours on 2 cores)
    python benchmarks/scale.py --events 1e6 2e6 --items 5000 10000 --out /tmp/scale   # a quick look

The MovieLens files are not on this machine, so the log is generated with ML-25M's shape
(:func:`write_log`): 162,541 users at 25M events (proportionally fewer below), 59,047 items with
Zipf popularity (exponent 1.0 over the item rank), users' activity heavy-tailed (log-normal, at
least 20 events, as MovieLens keeps), their events in sessions (geometric, mean 8 events, a few
minutes apart; days between sessions), written as ``ratings.csv``. It is prepared with the
default protocol (1-hour sessions, support ≥ 5, last 10 % of sessions test).

Each stage runs in its own process on --threads threads; its peak memory is the process's high-water
mark of resident memory (VmHWM; ``ru_maxrss`` would include the parent's, kept across exec):

- ``prepare``: ``softmax_bottleneck.prepare`` of the whole file (target ≤ 2 min, ≤ 2 GB at 25M);
- ``train b32`` / ``train b512``: sampled softmax (2,048 negatives, logQ), GRU4Rec d = 64: events/s
  over --train-events events after 2,000 of warm-up, and the epoch it implies;
- ``evaluate``: full-ranking evaluation (exact log-probs over all items, conservative ties) of a
  seeded sample of test sessions holding --eval-events events, in blocks; its events/s, the time the
  whole test split would take, and two floors measured in the same process on the same chunks of
  rows: the GEMM alone, and GEMM + log_softmax;
- ``compare``: ``analysis.compare`` of two checkpoints (softmax and MoS K=4, written beforehand by a
  process of their own) on the same seeded sample of test sessions, with its defaults (K = 1, 5, 10,
  20; three metrics; 2,000 paired session-bootstrap replicates; the breakdowns): its events/s, the
  share that is the two evaluations, and the time the whole test split would take;
- ``rank softmax`` / ``rank mos``: the rank report of 4,096 contexts × all items (the engine
  ``auto`` picks: factored for softmax; direct or Gram for MoS K=4), at --items catalogue sizes;
- ``reach``: the top-1 certificate of a softmax head over the catalogue (d = 64);
- ``capacity softmax`` / ``capacity mos``: the capacity fit (``analysis.capacity``; it applies to the
  synthetic world only, whose truth is known) of a world with the catalogue's size, on 1,024 contexts
  with distinct previous items (one free state each, the fit's worst case), d = 64. A default fit is
  hours at 60k items, so it is timed at two lengths (--capacity-steps): the difference gives the cost
  of a step, the rest the cost of a start, and from them the time of ``analysis.capacity``'s default
  fit (2 starts of 1,500 steps; for MoS a softmax start, then 3 MoS starts). Its floor, measured in
  the same process on the same shapes: the GEMM, log_softmax and their backward (K times for MoS),
  80 % in float32 and 20 % in float64 as the fit runs.

Models are freshly initialised (their speed does not depend on what they learned; the
certificate's does, a little: see reach_speed.py). Growth exponents are least-squares slopes on
log-log axes: prepare's time and memory on events; training's and evaluation's time *per event*
on the catalogue (their work per event is the catalogue's, or the sampled candidates'); the rank
report's and the certificate's time, and the capacity fit's time per step, on the catalogue; every
stage's peak memory on its size.
Writes scale.csv, scale.json and scale.png (log-log: whole-stage times against events, the
catalogue stages against items) to --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
ML25M = {"events": 25_000_095, "users": 162_541, "items": 59_047}
STAGES = ("prepare", "train", "evaluate", "compare", "rank", "reach", "capacity")


def write_log(path: Path, n_events: int, seed: int = 0) -> dict:
    """A ratings.csv (userId, movieId, rating, timestamp) with MovieLens-25M's shape, scaled to `n_events`."""
    rng = np.random.default_rng(seed)
    n_users = max(100, round(ML25M["users"] * n_events / ML25M["events"]))
    activity = rng.lognormal(0.0, 1.2, n_users)
    counts = 20 + np.floor(activity / activity.sum() * max(n_events - 20 * n_users, 0)).astype(np.int64)
    counts[: n_events - counts.sum()] += 1 if counts.sum() < n_events else 0
    users = np.repeat(np.arange(1, n_users + 1), counts)
    n = len(users)
    weights = 1.0 / np.arange(1, ML25M["items"] + 1)  # Zipf, exponent 1, over the item's popularity rank
    movies = rng.permutation(ML25M["items"])[rng.choice(ML25M["items"], size=n, p=weights / weights.sum())] + 1
    new_session = rng.random(n) < 1 / 8  # geometric session lengths, mean 8
    first = np.zeros(n, dtype=bool)
    first[np.concatenate([[0], np.cumsum(counts)[:-1]])] = True
    gaps = np.where(new_session, rng.exponential(20 * 86400, n), rng.uniform(30, 600, n))
    gaps[first] = 0
    starts = rng.uniform(789_652_009, 1_500_000_000, n_users)
    offsets = np.cumsum(gaps)
    user_start = offsets[np.concatenate([[0], np.cumsum(counts)[:-1]])]
    stamps = (starts[users - 1] + offsets - np.repeat(user_start, counts)).astype(np.int64)
    with open(path, "w") as handle:
        handle.write("userId,movieId,rating,timestamp\n")
        for start in range(0, n, 5_000_000):
            part = slice(start, start + 5_000_000)
            pd.DataFrame({"u": users[part], "m": movies[part], "r": rng.integers(1, 11, len(users[part])) / 2,
                          "t": stamps[part]}).to_csv(handle, header=False, index=False)
    return {"events": int(n), "users": int(n_users)}


CHILD = r"""
import json, sys, time
args = json.loads(sys.argv[1])
import numpy as np
if args["torch"]:  # prepare's command never imports torch, so its stage does not either (200 MB of resident memory)
    import torch
    torch.set_num_threads(args["threads"])
    device = torch.device(args["device"])
    def sync():  # CUDA runs asynchronously: a time is taken once the device has finished
        if device.type == "cuda":
            torch.cuda.synchronize()
began = time.perf_counter()
out = {}
exec(compile(args["code"], args["stage"], "exec"))
out.setdefault("seconds", time.perf_counter() - began)
with open("/proc/self/status") as status:  # VmHWM: this process's peak; ru_maxrss would keep the parent's across exec
    out["peak_mib"] = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
print(json.dumps(out))
"""

PREPARE = r"""
from softmax_bottleneck.prepare import main
code = main(["--input", args["file"], "--format", "movielens", "--out", args["prepared"], "--quiet"])
assert code == 0
out["seconds"] = time.perf_counter() - began
meta = json.load(open(args["prepared"] + "/meta.json"))
out["items"] = meta["splits"]["train"]["items"]
out["test_events"] = meta["splits"]["test"]["transitions"]
out["train_events"] = meta["splits"]["train"]["transitions"]
"""

TRAIN = r"""
from softmax_bottleneck.config import ModelConfig, TrainConfig
from softmax_bottleneck.data import load_prepared, session_parallel_batches
from softmax_bottleneck.model import carry_state
from softmax_bottleneck.training import build_training, train_step
dataset = load_prepared(args["prepared"], verify=False)
config = TrainConfig(batch_size=args["batch"], n_sample=2048, seed=0)
model, optimizer, sampler, _, log_support = build_training(dataset, ModelConfig(hidden_dim=64), config, device)
model.train()
hidden = model.init_hidden(config.batch_size, device)
sampler.reset()
done, t0 = 0, None
for batch in session_parallel_batches(dataset.splits["train"], config.batch_size):
    if t0 is None and done >= 2000:
        sync()
        t0, done = time.perf_counter(), 0
    hidden = carry_state(hidden, batch.keep, batch.reset)
    _, hidden = train_step(model, torch.from_numpy(batch.inputs).to(device), hidden,
                           torch.from_numpy(batch.targets).to(device), config, optimizer, sampler, log_support)
    done += len(batch.inputs)
    if t0 is not None and done >= args["events"]:
        break
sync()
out["seconds"] = time.perf_counter() - t0
out["events_per_second"] = done / out["seconds"]
out["epoch_hours"] = dataset.splits["train"].n_transitions / out["events_per_second"] / 3600
out["items"] = dataset.n_items
"""

EVALUATE = r"""
from softmax_bottleneck.config import ModelConfig, TrainConfig
from softmax_bottleneck.data import load_prepared, sample_sessions
from softmax_bottleneck.evaluation import evaluate_ranks
from softmax_bottleneck.training import build_training
dataset = load_prepared(args["prepared"], verify=False)
model = build_training(dataset, ModelConfig(hidden_dim=64), TrainConfig(seed=0), device)[0].eval()
test = dataset.splits["test"]
sample = sample_sessions(test, max_events=args["events"], seed=0)
result = evaluate_ranks(model, sample, batch_size=512, device=device)
out["seconds"] = result.seconds
out["events_per_second"] = len(result.ranks) / result.seconds
out["full_test_hours"] = test.n_transitions / out["events_per_second"] / 3600
out["items"] = dataset.n_items
# floors of the same chunks of rows as evaluate_ranks scores (CHUNK_SCORES scores each): the GEMM alone, then
# GEMM + log_softmax, measured here, against the whole evaluation's rate
from softmax_bottleneck.evaluation import CHUNK_SCORES
rows = max(1, CHUNK_SCORES // dataset.n_items)
h = torch.randn(rows, 64, device=device)
weight, bias = model.head.item_weight.detach(), model.head.item_bias.detach().T
def rate(step, repeats=max(5, 2048 // rows)):
    step()
    sync()
    began = time.perf_counter()
    for _ in range(repeats):
        step()
    sync()
    return rows * repeats / (time.perf_counter() - began)
out["floor_gemm_events_per_second"] = rate(lambda: torch.addmm(bias, h, weight.T))
out["floor_log_softmax_events_per_second"] = rate(lambda: torch.log_softmax(torch.addmm(bias, h, weight.T), dim=1))
"""

RANK = r"""
from analysis.logprobs import LogProbMatrix
from analysis.rank_report import rank_report
from softmax_bottleneck.config import ModelConfig
from softmax_bottleneck.heads import head_for
torch.manual_seed(0)
config = ModelConfig(n_items=args["items"], head=args["head"], hidden_dim=64, n_experts=4 if args["head"] == "mos" else None)
head = head_for(config)
head.reset_parameters(torch.Generator().manual_seed(0))
hidden = torch.tanh(torch.randn(4096, 64) * 2).numpy()
t0 = time.perf_counter()
timings = {}
report, _ = rank_report(LogProbMatrix(head, hidden, device=device), cap=head.rank_cap, timings=timings)  # auto engine
out["seconds"] = time.perf_counter() - t0
out["rank"] = report["rank"]
out["engine"] = report["engine"]
"""

COMPARE_SETUP = r"""
import dataclasses
from softmax_bottleneck.checkpoint import save_checkpoint
from softmax_bottleneck.config import ModelConfig, TrainConfig
from softmax_bottleneck.data import load_prepared
from softmax_bottleneck.training import build_training
dataset = load_prepared(args["prepared"], verify=False)
for head, path in zip(("softmax", "mos"), args["paths"]):
    train = TrainConfig(seed=0)
    model = build_training(dataset, ModelConfig(head=head, hidden_dim=64, n_experts=4 if head == "mos" else None), train)[0]
    save_checkpoint({"model_config": dataclasses.asdict(model.config), "train_config": dataclasses.asdict(train),
                     "state_dict": model.state_dict(), "item_ids": dataset.item_ids.tolist(),
                     "data": {"path": args["prepared"], "fingerprint": dataset.fingerprint}}, path)
"""

COMPARE = r"""
from analysis.comparison import compare
result = compare(args["paths"], data=args["prepared"], sample_events=args["events"], sample_seed=0, device=device)
summary = result["summary"]
out["seconds"] = time.perf_counter() - began
out["events_per_second"] = summary["n_events"] / out["seconds"]
out["evaluation_seconds"] = sum(summary["n_events"] / m["eval_events_per_second"] for m in summary["models"])
out["full_test_hours"] = (summary["sample"] or {"of_events": summary["n_events"]})["of_events"] / out["events_per_second"] / 3600
out["items"] = json.load(open(args["prepared"] + "/meta.json"))["n_items"]
"""

CAPACITY = r"""
from analysis.capacity_fit import TruthContexts, fit_head
from softmax_bottleneck.config import ModelConfig
from softmax_bottleneck.synthetic import SyntheticConfig, SyntheticWorld
n = args["items"]
world = SyntheticWorld.generate(SyntheticConfig(n_items=n), np.random.default_rng(0))
# 1,024 contexts with distinct previous items, drawn by popularity: one free state each, the fit's worst case
# (a context sample of a dataset repeats previous items, and contexts that share one share a state)
previous = np.sort(np.random.default_rng(1).choice(n, size=1024, replace=False, p=world.popularity))
contexts = TruthContexts(np.zeros(1024, np.int64), np.ones(1024, np.int64), previous, np.ones(1024),
                         np.arange(1024), world.log_probs(previous))
softmax = ModelConfig(n_items=n, head="softmax", hidden_dim=64)
mos = ModelConfig(n_items=n, head="mos", hidden_dim=64, n_experts=4)
short, long = args["steps"]
warm = fit_head(softmax, contexts, restarts=1, steps=2)  # untimed: the first fit of a process pays one-time costs
if args["head"] == "mos":
    fit_head(mos, contexts, restarts=0, steps=2, softmax=warm)
began = time.perf_counter()
timed = {}
for steps in (short, long):  # two lengths: the difference is the cost of steps, the rest the cost of a start
    fit = fit_head(softmax, contexts, restarts=1, steps=steps)
    timed["softmax", steps] = fit.seconds
    if args["head"] == "mos":  # the one start from that softmax (restarts=0), as analysis.capacity runs its last
        timed["mos", steps] = fit_head(mos, contexts, restarts=0, steps=steps, softmax=fit).seconds
def start(head, steps=1500):  # seconds of one start of `steps` steps: a cost per step and a cost per start
    per_step = (timed[head, long] - timed[head, short]) / (long - short)
    return max(timed[head, short] - short * per_step, 0.0) + steps * per_step
out["seconds"] = time.perf_counter() - began
out["distinct_contexts"] = len(previous)
out["seconds_per_step"] = start(args["head"], 1) - start(args["head"], 0)
# analysis.capacity's defaults: 2 starts of 1,500 steps; for MoS, first a softmax (1 start), then 2 cold MoS starts
# and 1 from that softmax
out["default_fit_hours"] = (2 * start("softmax") if args["head"] == "softmax"
                            else start("softmax") + 3 * start("mos")) / 3600
# the floor of a step, measured here on the same shapes: the GEMM h·Wᵀ, log_softmax, and their backward (K times
# for MoS: its experts' part alone), in float32 and float64 weighted as the fit runs them (80 % / 20 % of the steps)
def floor(dtype, repeats=3):
    h = torch.randn(1024, 64, dtype=dtype, requires_grad=True)
    weight = torch.randn(n, 64, dtype=dtype, requires_grad=True)
    target = torch.softmax(torch.randn(1024, n, dtype=dtype), dim=1)
    def step():
        (-(target * torch.log_softmax(h @ weight.T, dim=1)).sum()).backward()
    step()
    began = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - began) / repeats
experts = 4 if args["head"] == "mos" else 1
out["floor_seconds_per_step"] = experts * (0.8 * floor(torch.float32) + 0.2 * floor(torch.float64))
"""

REACH = r"""
sys.path.insert(0, args["root"] + "/benchmarks")
from reach_speed import make_head
from analysis.argmax import certify_top1
weight, bias = make_head(args["items"], 64)
t0 = time.perf_counter()
reach = certify_top1(weight, bias)
out["seconds"] = time.perf_counter() - t0
"""


DEVICE = "cpu"  # --device: where the torch stages run (train, evaluate, compare, rank)


def run_stage(stage: str, code: str, threads: int, **values) -> dict:
    payload = json.dumps({"stage": stage, "code": code, "threads": threads, "root": str(ROOT),
                          "torch": stage != "prepare", "device": DEVICE, **values})
    done = subprocess.run([sys.executable, "-c", CHILD, payload], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def slope(x, y) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0]) if len(x) > 1 else float("nan")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=float, nargs="*", default=[1e6, 5e6, 25e6])
    parser.add_argument("--items", type=int, nargs="*", default=[10_000, 20_000, 60_000])
    parser.add_argument("--combine", type=Path, nargs="+", metavar="CSV",
                        help="measure nothing: join the rows of earlier runs' scale.csv (a later file's stages "
                             "replace an earlier's), fit and draw them into --out")
    parser.add_argument("--train-events", type=int, default=100_000, help="events timed per training run")
    parser.add_argument("--eval-events", type=int, default=20_000, help="test events evaluated per run")
    parser.add_argument("--capacity-steps", type=int, nargs=2, default=[5, 25], metavar=("SHORT", "LONG"),
                        help="the capacity fit is timed at two lengths: their difference gives the cost of a step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where training, evaluation, compare and the rank report "
                        "run: cpu or cuda (reach and the capacity fit stay on the CPU)")
    parser.add_argument("--skip", nargs="+", default=[], choices=STAGES, metavar="STAGE",
                        help="stages to leave out: " + ", ".join(STAGES))
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "sb-scale",
                        help="generated logs and prepared data (kept for reruns)")
    parser.add_argument("--out", type=Path, default=Path("results/scale"))
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if not 1 <= args.capacity_steps[0] < args.capacity_steps[1]:
        parser.error(f"--capacity-steps needs 1 <= SHORT < LONG, got {args.capacity_steps}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.combine:
        tables = [pd.read_csv(path) for path in args.combine]
        kept = []
        for index, table in enumerate(tables):
            later = {s for t in tables[index + 1:] for s in t["stage"]}
            kept.append(table[~table["stage"].isin(later)])
        summarise(pd.concat(kept, ignore_index=True), args)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []

    def record(stage, axis, size, result):
        rows.append({"stage": stage, "axis": axis, "size": size, **result})
        extra = {k: v for k, v in result.items() if k not in ("seconds", "peak_mib")}
        print(f"{stage:14s} {axis} {size:>12,}  {result['seconds']:9.1f} s  {result['peak_mib']:8,.0f} MiB  "
              + "  ".join(f"{k} {v:,.4g}" if isinstance(v, float) else f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
                         for k, v in extra.items()), flush=True)

    for events in map(int, args.events):
        log = args.work / f"ratings-{events}.csv"
        if not log.exists():  # in a process of its own, so that this one stays small
            began = time.perf_counter()
            done = subprocess.run([sys.executable, __file__, "--write-log", str(log), str(events)], cwd=ROOT)
            if done.returncode != 0:
                raise SystemExit(f"writing {log} failed")
            print(f"wrote {log} ({events:,} events) in {time.perf_counter() - began:.0f} s", flush=True)
        prepared = args.work / f"prepared-{events}"
        if "prepare" not in args.skip or not prepared.exists():
            if prepared.exists():
                import shutil

                shutil.rmtree(prepared)
            record("prepare", "events", events, run_stage("prepare", PREPARE, args.threads, file=str(log),
                                                          prepared=str(prepared)))
        if "train" not in args.skip:
            for batch in (32, 512):
                record(f"train b{batch}", "events", events, run_stage("train", TRAIN, args.threads, prepared=str(prepared),
                                                                      batch=batch, events=args.train_events))
        if "evaluate" not in args.skip:
            record("evaluate", "events", events, run_stage("evaluate", EVALUATE, args.threads, prepared=str(prepared),
                                                           events=args.eval_events))
        if "compare" not in args.skip:  # two checkpoints (softmax, MoS K=4) written by a process of their own
            paths = [str(args.work / f"compare-{head}-{events}.pt") for head in ("softmax", "mos")]
            run_stage("compare setup", COMPARE_SETUP, args.threads, prepared=str(prepared), paths=paths)
            record("compare", "events", events, run_stage("compare", COMPARE, args.threads, prepared=str(prepared),
                                                          paths=paths, events=args.eval_events))
    for items in args.items:
        if "rank" not in args.skip:
            for head in ("softmax", "mos"):
                record(f"rank {head}", "items", items, run_stage("rank", RANK, args.threads, items=items, head=head))
        if "reach" not in args.skip:
            record("reach", "items", items, run_stage("reach", REACH, args.threads, items=items))
        if "capacity" not in args.skip:
            for head in ("softmax", "mos"):
                record(f"capacity {head}", "items", items, run_stage("capacity", CAPACITY, args.threads, items=items,
                                                                     head=head, steps=args.capacity_steps))
    summarise(pd.DataFrame(rows), args)


def summarise(table: pd.DataFrame, args) -> None:
    """scale.csv, the growth exponents (printed and in scale.json) and scale.png."""
    table.to_csv(args.out / "scale.csv", index=False)
    growth = {}
    for stage, part in table.groupby("stage", sort=False):
        per_event = "events_per_second" in part and bool(part["events_per_second"].notna().all())
        per_step = "seconds_per_step" in part and bool(part["seconds_per_step"].notna().all())
        x = part["items"] if per_event else part["size"]
        y = (1.0 / part["events_per_second"] if per_event else part["seconds_per_step"] if per_step
             else part["seconds"])
        growth[stage] = {"x": "items" if per_event else part["axis"].iloc[0],
                         "y": "seconds per event" if per_event else "seconds per step" if per_step else "seconds",
                         "time_exponent": slope(x, y), "memory_exponent": slope(part["size"], part["peak_mib"])}
    print("\ngrowth exponents (log-log slopes)")
    for stage, g in growth.items():
        print(f"  {stage:14s} {g['y']:>17s} vs {g['x']:6s} {g['time_exponent']:5.2f}   peak memory vs size "
              f"{g['memory_exponent']:5.2f}")
    rows = json.loads(table.to_json(orient="records"))
    (args.out / "scale.json").write_text(json.dumps({"threads": args.threads, "rows": rows, "growth": growth},
                                                    indent=2) + "\n")
    draw(table, args.out / "scale.png")
    print(f"wrote {args.out}/scale.csv, scale.json, scale.png")


def draw(table: pd.DataFrame, path: Path) -> None:
    """Left: each data stage's whole cost against events (training: one epoch, evaluation: the whole test
    split, both from their measured rates). Right: the catalogue stages against items."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    data = table[table["axis"] == "events"]
    for stage, rows in data.groupby("stage", sort=False):
        seconds = (rows["epoch_hours"] * 3600 if "train" in stage else rows["full_test_hours"] * 3600
                   if stage in ("evaluate", "compare") else rows["seconds"])
        label = {"evaluate": "evaluate (whole test split)", "compare": "compare of 2 models (whole test split)"}.get(
            stage, f"{stage} (one epoch)" if "train" in stage else stage)
        left.loglog(rows["size"], seconds, marker="o", label=label)
    for stage, rows in table[table["axis"] == "items"].groupby("stage", sort=False):
        capacity = stage.startswith("capacity")
        right.loglog(rows["size"], rows["default_fit_hours"] * 3600 if capacity else rows["seconds"], marker="o",
                     linestyle="--" if capacity else "-",
                     label=stage + (" (4,096 contexts)" if "rank" in stage else
                                    " (default fit, from timed steps)" if capacity else ""))
    for ax, axis in ((left, "events"), (right, "items")):
        ax.set_xlabel(f"{axis} (log)")
        ax.set_ylabel("seconds (log)")
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    left.set_title("data stages")
    right.set_title("catalogue stages")
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write-log"]:
        write_log(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
