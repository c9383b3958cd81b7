"""Quality parity with the official GRU4Rec on any prepared dataset, both trained in the same run.

    python -m softmax_bottleneck.prepare --input ../shared/data/globo-news/clicks.tar.gz --format csv \\
        --session-column session_id --item-column click_article_id --time-column click_timestamp \\
        --time-unit ms --out prepared/globo
    python benchmarks/parity_official.py --data prepared/globo --official path/to/GRU4Rec_PyTorch_Official \\
        --official-python venvs/official/bin/python --init official --seeds 0 1 2 3 4 5 --out parity-globo.json

The official code (hidasib/GRU4Rec_PyTorch_Official, in its own virtual environment: numpy < 2,
pandas < 3) and this toolkit train on the same training split, written out as the official TSV
(SessionId, ItemId, Time), and are scored on the same test split with the official
``evaluation.batch_eval`` (conservative ties) and this toolkit's ``evaluate_ranks`` (conservative
ties). The settings are the official defaults with cross-entropy and 2,048 shared samples: layer 100,
batch 64, Adagrad lr 0.05, momentum 0, no dropout, sample_alpha 0.5, constrained embedding, no logQ,
10 epochs, and both keep the last epoch (the official code has no epoch selection, so neither
looks at the valid split). One thread per run (--threads).

Seeds: this toolkit's seed sets its initialisation and its negative samples. The official ``fit``
resets its weights from ``np.random.seed(42)`` (its compatibility mode), so there the seed
(``torch.manual_seed``) changes only the negative samples.

With ``--init official`` this toolkit's runs start from the official code's compatibility-mode weights
(:func:`official_initial_weights`: ``np.random.seed(42)`` drawn in the official order, each item's output
row put on this toolkit's index of that item), so that both implementations start from the same point
and the seeds move only the negative samples on both sides: a comparison of the two training steps with
the initial draw held fixed. Without it (``--init own``, the default) this toolkit draws its own weights
from its seed, from the same distribution, and the seeds move both.

Each (implementation, init, seed) runs in its own process, alternating, and its result is appended to
--out as soon as it is done: a run stopped half-way resumes with the pairs still missing. Prints
the mean over seeds of each implementation, the relative difference, and each run's median epoch
events/s (the true number of next-item events over the epoch's time).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"hidden_dim": 100, "batch_size": 64, "lr": 0.05, "momentum": 0.0, "dropout_embedding": 0.0,
            "dropout_hidden": 0.0, "n_sample": 2048, "sample_alpha": 0.5, "logq": 0.0}

OURS = r"""
import json, statistics, sys
import torch
torch.set_num_threads(int(sys.argv[3]))
from softmax_bottleneck.config import ModelConfig, TrainConfig
from softmax_bottleneck.data import load_prepared
from softmax_bottleneck.evaluation import evaluate_ranks
from softmax_bottleneck.metrics import metric_table
from softmax_bottleneck.training import build_training, train_epoch
settings, seed, epochs, init = json.loads(sys.argv[4]), int(sys.argv[2]), int(sys.argv[5]), sys.argv[6]
dataset = load_prepared(sys.argv[1])
model_config = ModelConfig(hidden_dim=settings["hidden_dim"], head="softmax",
                           dropout_embedding=settings["dropout_embedding"], dropout_hidden=settings["dropout_hidden"])
config = TrainConfig(epochs=epochs, seed=seed, batch_size=settings["batch_size"], lr=settings["lr"],
                     momentum=settings["momentum"], n_sample=settings["n_sample"],
                     sample_alpha=settings["sample_alpha"], logq=settings["logq"], optimizer="adagrad")
model, optimizer, sampler, _, log_support = build_training(dataset, model_config, config, "cpu")
if init == "official":
    from benchmarks.parity_official import official_initial_weights, first_seen
    model.load_state_dict(official_initial_weights(first_seen(dataset), settings["hidden_dim"]))  # copies in place
speeds, losses = [], []
for epoch in range(epochs):
    stats = train_epoch(model, dataset, config, optimizer, sampler, log_support, torch.device("cpu"), progress=False)
    speeds.append(stats["events_per_second"])
    losses.append(stats["loss"])
    print(f"epoch {epoch + 1}: loss {stats['loss']:.4f}, {stats['events_per_second']:,.0f} events/s", file=sys.stderr,
          flush=True)
table = metric_table(evaluate_ranks(model, dataset.splits["test"]).ranks, (20,))
print(json.dumps({"recall@20": table["recall@20"], "mrr@20": table["mrr@20"],
                  "events_per_second": statistics.median(speeds), "losses": losses}))
"""

OFFICIAL = r"""
import contextlib, io, json, re, statistics, sys
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[5]))
sys.path.insert(0, sys.argv[3])
import pandas as pd
from gru4rec_pytorch import GRU4Rec
import evaluation
settings, seed, epochs, events = json.loads(sys.argv[6]), int(sys.argv[4]), int(sys.argv[7]), int(sys.argv[8])
torch.manual_seed(seed)
np.random.seed(seed)
train = pd.read_csv(sys.argv[1], sep="\t", dtype={"ItemId": str})
test = pd.read_csv(sys.argv[2], sep="\t", dtype={"ItemId": str})
gru = GRU4Rec(layers=[settings["hidden_dim"]], loss="cross-entropy", batch_size=settings["batch_size"],
              dropout_p_embed=settings["dropout_embedding"], dropout_p_hidden=settings["dropout_hidden"],
              learning_rate=settings["lr"], momentum=settings["momentum"], sample_alpha=settings["sample_alpha"],
              n_sample=settings["n_sample"], embedding=0, constrained_embedding=True, n_epochs=epochs,
              logq=settings["logq"], device=torch.device("cpu"))
log = io.StringIO()
with contextlib.redirect_stdout(log):
    gru.fit(train)
seconds = [float(s) for s in re.findall(r"\(([0-9.]+)s\)", log.getvalue())]  # the official code's epoch times
losses = [float(s) for s in re.findall(r"loss: ([0-9.]+)", log.getvalue())]  # and mean training losses
with contextlib.redirect_stdout(io.StringIO()):
    # its batch may not exceed the test sessions (a bigger one indexes past them)
    recall, mrr = evaluation.batch_eval(gru, test, cutoff=[20], mode="conservative",
                                        batch_size=min(512, test["SessionId"].nunique()))
print(json.dumps({"recall@20": float(recall[20]), "mrr@20": float(mrr[20]),
                  "events_per_second": statistics.median(events / s for s in seconds), "losses": losses}))
"""


def first_seen(dataset):
    """This toolkit's item indices in the order the official code numbers them: the order of first
    appearance in the training TSV that :func:`write_tsv` writes (``data[item_key].unique()``)."""
    import pandas as pd

    return pd.unique(dataset.splits["train"].items)


def official_initial_weights(items, hidden: int) -> dict:
    """The official code's compatibility-mode initial weights of a one-layer GRU4Rec with the constrained
    embedding (``_reset_weights_to_compatibility_mode``: ``np.random.seed(42)``; three U(±σ) gate blocks of
    the input weights, three of the recurrent weights, then the output matrix, σ = sqrt(6 / (fan_in +
    fan_out)), drawn in float64 and rounded to float32 as numpy < 2 does), as this toolkit's parameters.
    ``items[j]`` is this toolkit's index of the official row j (:func:`first_seen`)."""
    import numpy as np
    import torch

    rng = np.random.RandomState(42)  # np.random.seed(42) then np.random.rand: the same stream

    def block(rows: int, columns: int) -> np.ndarray:
        sigma = np.float32(np.sqrt(6.0 / (rows + columns)))  # numpy < 2: a float64 scalar meets float32 as float32
        return rng.rand(rows, columns).astype(np.float32) * np.float32(2) * sigma - sigma

    weight_ih = np.vstack([block(hidden, hidden) for _ in range(3)])
    weight_hh = np.vstack([block(hidden, hidden) for _ in range(3)])
    output = block(len(items), hidden)
    item_weight = np.empty_like(output)
    item_weight[np.asarray(items)] = output
    zeros = torch.zeros(3 * hidden)
    return {"grus.0.weight_ih": torch.from_numpy(weight_ih), "grus.0.weight_hh": torch.from_numpy(weight_hh),
            "grus.0.bias_ih": zeros, "grus.0.bias_hh": zeros, "head.item_weight": torch.from_numpy(item_weight),
            "head.item_bias": torch.zeros(len(items), 1)}


def write_tsv(dataset, split: str, path: Path) -> int:
    """The split as the official TSV (its original item ids; sessions numbered in order); returns its events."""
    import numpy as np
    import pandas as pd

    held = dataset.splits[split]
    sessions = np.repeat(np.arange(held.n_sessions), held.lengths)
    pd.DataFrame({"SessionId": sessions, "ItemId": dataset.item_ids[held.items], "Time": held.timestamps}).to_csv(
        path, sep="\t", index=False)
    return held.n_transitions


def run(command: list[str], cwd: Path | None = None) -> dict:
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=cwd)
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed (exit status {done.returncode}); its messages are above")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a prepared dataset folder")
    parser.add_argument("--official", type=Path, required=True, help="a checkout of hidasib/GRU4Rec_PyTorch_Official")
    parser.add_argument("--official-python", type=Path, required=True,
                        help="the official code's interpreter (numpy<2, pandas<3)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every run (default: 1)")
    parser.add_argument("--init", choices=["own", "official"], default="own",
                        help="this toolkit's initial weights: drawn from its seed (own, the default) or the "
                             "official code's compatibility-mode weights (official; see above)")
    parser.add_argument("--only", choices=["ours", "official"], help="run one implementation's missing seeds only")
    parser.add_argument("--out", type=Path, required=True, help="JSON of the runs, appended as each one ends")
    args = parser.parse_args()
    if not (args.data / "meta.json").is_file():
        parser.error(f"--data {args.data}: not a prepared dataset folder (python -m softmax_bottleneck.prepare makes one)")
    if not (args.official / "gru4rec_pytorch.py").is_file():
        parser.error(f"--official {args.official}: no gru4rec_pytorch.py there (a checkout of the official code)")
    if not args.official_python.is_file():
        parser.error(f"--official-python {args.official_python}: no such interpreter")

    from softmax_bottleneck.data import load_prepared

    dataset = load_prepared(args.data)
    work = Path(tempfile.mkdtemp(prefix="parity-"))
    train_events = write_tsv(dataset, "train", work / "train.tsv")
    write_tsv(dataset, "test", work / "test.tsv")
    record = json.loads(args.out.read_text()) if args.out.is_file() else {"settings": SETTINGS, "runs": []}
    if record["settings"] != SETTINGS or record.get("fingerprint", dataset.fingerprint) != dataset.fingerprint:
        raise SystemExit(f"{args.out} holds runs of other settings or data; use another --out")
    record.update({"fingerprint": dataset.fingerprint, "data": str(args.data), "epochs": args.epochs,
                   "threads": args.threads})
    settings = json.dumps(SETTINGS)
    print(f"{args.data}: {train_events:,} training events, {dataset.n_items:,} items; "
          f"{args.threads} thread(s) per run", flush=True)
    runners = {
        "ours": lambda seed: run([sys.executable, "-c", OURS, str(args.data.resolve()), str(seed), str(args.threads),
                                  settings, str(args.epochs), args.init], cwd=ROOT),
        "official": lambda seed: run([str(args.official_python), "-c", OFFICIAL, str(work / "train.tsv"),
                                      str(work / "test.tsv"), str(args.official.resolve()), str(seed),
                                      str(args.threads), settings, str(args.epochs), str(train_events)]),
    }
    inits = {"ours": args.init, "official": "official"}
    for seed in args.seeds:
        for name, runner in runners.items():  # alternating, so a load change hits both alike
            if (args.only and name != args.only) or any(_is(r, name, inits[name]) and r["seed"] == seed
                                                        for r in record["runs"]):
                continue
            result = {"implementation": name, "init": inits[name], "seed": seed, **runner(seed)}
            record["runs"].append(result)
            args.out.write_text(json.dumps(record, indent=2) + "\n")
            print(f"  {name:8s} seed {seed}: recall@20 {result['recall@20']:.4f}  mrr@20 {result['mrr@20']:.4f}  "
                  f"{result['events_per_second']:,.0f} events/s (median epoch)", flush=True)
    runs = [r for r in record["runs"] if _is(r, r["implementation"], inits[r["implementation"]])]
    print(f"\nthis toolkit's initial weights: {args.init}")
    means = {}
    for name in runners:
        rows = [r for r in runs if r["implementation"] == name]
        if rows:
            means[name] = {key: statistics.mean(r[key] for r in rows) for key in ("recall@20", "mrr@20")}
            means[name]["events_per_second"] = statistics.median(r["events_per_second"] for r in rows)
            means[name]["seeds"] = len(rows)
    print(f"\n{'':9s} {'seeds':>5s} {'recall@20':>10s} {'mrr@20':>8s} {'events/s':>9s}")
    for name, m in means.items():
        print(f"{name:9s} {m['seeds']:5d} {m['recall@20']:10.4f} {m['mrr@20']:8.4f} {m['events_per_second']:9,.0f}")
    if len(means) == 2:
        ours, official = means["ours"], means["official"]
        print(f"{'relative':9s} {'':5s} {ours['recall@20'] / official['recall@20'] - 1:+10.2%} "
              f"{ours['mrr@20'] / official['mrr@20'] - 1:+8.2%} "
              f"{ours['events_per_second'] / official['events_per_second']:8.2f}×")
        for line in seed_spread(runs):
            print(line)


def _is(run: dict, implementation: str, init: str) -> bool:
    """Whether a recorded run is of this implementation and initialisation (runs recorded before
    ``--init`` existed drew their own: the official code its compatibility mode, this toolkit its seed)."""
    recorded = run.get("init", "official" if run["implementation"] == "official" else "own")
    return run["implementation"] == implementation and recorded == init


def seed_spread(runs: list[dict]) -> list[str]:
    """How far the seeds alone move each metric, and the Welch 95 % interval of the difference of the two
    implementations' means relative to the official mean (the unit of the claim is a training run, so the
    seeds are the sample): whether a 2 % criterion can be told apart from seed noise at this many seeds."""
    from scipy import stats

    lines = []
    for key in ("recall@20", "mrr@20"):
        values = {name: [r[key] for r in runs if r["implementation"] == name] for name in ("ours", "official")}
        if min(len(v) for v in values.values()) < 2:
            return lines
        spread = ", ".join(f"{name} sd {statistics.stdev(v) / statistics.mean(v):.1%} of its mean"
                           for name, v in values.items())
        low, high = stats.ttest_ind(values["ours"], values["official"], equal_var=False).confidence_interval(0.95)
        base = statistics.mean(values["official"])
        relative_sd = math.sqrt(statistics.mean((statistics.stdev(v) / statistics.mean(v)) ** 2
                                                for v in values.values()))
        needed = math.ceil(2 * (1.96 * relative_sd / 0.02) ** 2)  # a side, for a ±2 % interval at these sds
        lines.append(f"{key}: seeds {spread}; ours − official {low / base:+.1%} … {high / base:+.1%} of the "
                     f"official mean (Welch 95 %); about {needed} seeds a side would give ±2 %")
    losses = {name: [r["losses"] for r in runs if r["implementation"] == name and r.get("losses")]
              for name in ("ours", "official")}
    if min(len(v) for v in losses.values()) >= 2:
        lines.append("mean training loss by epoch (nats), runs that recorded it: "
                     + ", ".join(f"{name} {len(v)}" for name, v in losses.items()))
        for name, curves in losses.items():
            lines.append(f"  {name:9s}" + " ".join(f"{statistics.mean(c[e] for c in curves):.4f}"
                                                   for e in range(len(curves[0]))))
        last = {name: [c[-1] for c in curves] for name, curves in losses.items()}
        low, high = stats.ttest_ind(last["ours"], last["official"], equal_var=False).confidence_interval(0.95)
        lines.append(f"last epoch's loss, ours − official: {low:+.4f} … {high:+.4f} nats (Welch 95 %)")
    return lines


if __name__ == "__main__":
    main()
