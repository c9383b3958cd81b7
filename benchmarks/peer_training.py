"""Training throughput side by side: this toolkit's GRU4Rec, the official GRU4Rec, and RecBole's GRU4Rec.

    python benchmarks/peer_training.py --official path/to/GRU4Rec_PyTorch_Official \\
        --official-python venvs/official/bin/python --recbole-python venvs/recbole/bin/python --repeats 3
    python benchmarks/peer_training.py --official ... --official-python ... --datasets ml-100k globo --repeats 3

All three train on the same sessions: the training split of MovieLens-100K (and, with --datasets
globo, of the Globo.com news clicks: 10,252 items, 1.5M training events) prepared by this toolkit's
protocol (DESIGN.md), written out as the official code's TSV (SessionId, ItemId, Time) and as a
RecBole atomic file whose user is the session. Same layer size (64, one layer, constrained
embedding), batch size (32) and thread count (--threads, default 1); the loss where it corresponds:
cross-entropy with 2,048 shared popularity samples (α 0.5) and logQ correction for ours and the
official code, RecBole's cross-entropy over all items (it has no sampled softmax for GRU4Rec). One
epoch each, the three runs alternating, --repeats times. Each runs in its own process (the peers in
their own virtual environments: the official code needs numpy < 2 and pandas < 3; RecBole 1.2.1
needs setuptools < 81, numpy 1.26 and pandas 2.3), and reports:

- setup: from the start of training code to the first step: the data iterator (ours: the prepared
  arrays; official: its item map, offsets and sample store; RecBole: its dataset and data loaders)
  and the model;
- epoch: one training epoch, its events (next-item predictions trained) and events/s;
- peak memory: the process's high-water mark of resident memory (VmHWM).

The official code prints its own events/s, but counts a full batch (32) for every step, also in the
epoch's tail where fewer sessions remain (its ``n_valid`` in ``fit`` is never updated): on this split
86,016 for 78,988 events. Its events/s here is the true event count over its own epoch time.

Medians over the repeats; ratios are against the official code in the same run. A peer whose
interpreter is not given is not measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "ml-100k.inter"
GLOBO = Path(__file__).resolve().parents[2] / "shared" / "data" / "globo-news" / "clicks.tar.gz"
GLOBO_COLUMNS = ["--format", "csv", "--session-column", "session_id", "--item-column", "click_article_id",
                 "--time-column", "click_timestamp", "--time-unit", "ms"]  # the README's Globo command
ROOT = Path(__file__).resolve().parents[1]

OURS = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[2]))
from softmax_bottleneck.config import ModelConfig, TrainConfig
from softmax_bottleneck.data import load_prepared
from softmax_bottleneck.model import GRU4Rec
from softmax_bottleneck.training import build_training, train_epoch
start = time.perf_counter()
dataset = load_prepared(sys.argv[1])
config = TrainConfig(epochs=1, seed=0, batch_size=32, n_sample=2048, sample_alpha=0.5, logq=1.0)
model, optimizer, sampler, _, log_support = build_training(dataset, ModelConfig(hidden_dim=64), config, "cpu")
setup = time.perf_counter() - start
stats = train_epoch(model, dataset, config, optimizer, sampler, log_support, torch.device("cpu"), progress=False)
print(json.dumps({"setup_s": setup, "epoch_s": stats["train_seconds"], "events": stats["train_events"],
                  "peak_mib": int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024}))
"""

OFFICIAL = r"""
import contextlib, io, json, re, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
sys.path.insert(0, sys.argv[2])
import pandas as pd
from gru4rec_pytorch import GRU4Rec
data = pd.read_csv(sys.argv[1], sep="\t", dtype={"ItemId": str})
gru = GRU4Rec(layers=[64], loss="cross-entropy", batch_size=32, dropout_p_embed=0.0, dropout_p_hidden=0.4,
              learning_rate=0.2, momentum=0.2, sample_alpha=0.5, n_sample=2048, embedding=0,
              constrained_embedding=True, n_epochs=1, bpreg=0, elu_param=0, logq=1.0, device=torch.device("cpu"))
log = io.StringIO()
start = time.perf_counter()
with contextlib.redirect_stdout(log):
    gru.fit(data)
total = time.perf_counter() - start
epoch = float(re.search(r"\(([0-9.]+)s\)", log.getvalue()).group(1))  # the official code's own epoch time
print(json.dumps({"setup_s": total - epoch, "epoch_s": epoch, "events": int(sys.argv[4]),
                  "peak_mib": int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024}))
"""

RECBOLE = r"""
import json, logging, os, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
start = time.perf_counter()
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_seed
settings = {"data_path": sys.argv[1], "checkpoint_dir": sys.argv[2], "epochs": 1, "embedding_size": 64,
            "hidden_size": 64, "num_layers": 1, "dropout_prob": 0.4, "MAX_ITEM_LIST_LENGTH": 50,
            "train_batch_size": 32, "eval_batch_size": 256, "train_neg_sample_args": None, "loss_type": "CE",
            "seed": 0, "reproducibility": True, "show_progress": False, "device": "cpu", "use_gpu": False,
            "worker": 0, "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "state": "ERROR"}
config = Config(model="GRU4Rec", dataset="train", config_dict=settings)
logging.disable(logging.CRITICAL)
init_seed(config["seed"], config["reproducibility"])
dataset = create_dataset(config)
train, valid, test = data_preparation(config, dataset)
model = get_model(config["model"])(config, train.dataset).to(config["device"])
trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
setup = time.perf_counter() - start
began = time.perf_counter()
trainer._train_epoch(train, 0, show_progress=False)
epoch = time.perf_counter() - began
print(json.dumps({"setup_s": setup, "epoch_s": epoch, "events": len(train.dataset),
                  "peak_mib": int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024}))
"""


def write_inputs(work: Path, name: str = "ml-100k") -> tuple[Path, Path, Path, int]:
    """(prepared folder, official TSV, RecBole data folder, training events) of a dataset's training split."""
    import pandas as pd

    from parity_official import write_tsv  # the official TSV, written one way for both benchmarks
    from softmax_bottleneck.data import load_prepared

    work.mkdir(parents=True)
    source = ["--input", str(ML100K), "--format", "recbole"] if name == "ml-100k" else ["--input", str(GLOBO), *GLOBO_COLUMNS]
    subprocess.run([sys.executable, "-m", "softmax_bottleneck.prepare", *source, "--out", str(work / "prepared"),
                    "--quiet"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    dataset = load_prepared(work / "prepared")
    transitions = write_tsv(dataset, "train", work / "train.tsv")
    frame = pd.read_csv(work / "train.tsv", sep="\t", dtype={"ItemId": str})
    (work / "recbole" / "train").mkdir(parents=True)
    frame.rename(columns={"SessionId": "user_id:token", "ItemId": "item_id:token", "Time": "timestamp:float"}).to_csv(
        work / "recbole" / "train" / "train.inter", sep="\t", index=False)
    return work / "prepared", work / "train.tsv", work / "recbole", transitions


def run(command: list[str], cwd: Path | None = None) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, help="a checkout of hidasib/GRU4Rec_PyTorch_Official")
    parser.add_argument("--official-python", type=Path, help="the official code's interpreter (numpy<2, pandas<3)")
    parser.add_argument("--recbole-python", type=Path, help="an interpreter with recbole==1.2.1")
    parser.add_argument("--datasets", nargs="+", default=["ml-100k"], choices=["ml-100k", "globo"],
                        help="ml-100k, and globo (../shared/data/globo-news, prepared as the README says)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every run (default: 1)")
    parser.add_argument("--out", type=Path, help="also write the runs and medians as JSON here")
    args = parser.parse_args()
    if (args.official is None) != (args.official_python is None):
        parser.error("give --official and --official-python together")
    work = Path(tempfile.mkdtemp(prefix="peers-"))
    record = {"threads": args.threads}
    for dataset in args.datasets:
        record[dataset] = measure(dataset, work / dataset, args)
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


def measure(dataset: str, work: Path, args) -> dict:
    """One dataset: every peer's epoch, alternating, --repeats times; prints the runs and the medians."""
    prepared, tsv, recbole_data, transitions = write_inputs(work, dataset)
    print(f"{dataset} training split: {transitions:,} next-item events; {args.threads} thread(s) per run", flush=True)
    runners = {"ours": lambda: run([sys.executable, "-c", OURS, str(prepared), str(args.threads)], cwd=ROOT)}
    if args.official:
        runners["official"] = lambda: run([str(args.official_python), "-c", OFFICIAL, str(tsv), str(args.official.resolve()),
                                           str(args.threads), str(transitions)])
    if args.recbole_python:
        runners["recbole"] = lambda: run([str(args.recbole_python), "-c", RECBOLE, str(recbole_data), str(work / "saved"),
                                          str(args.threads)], cwd=work)
    runs = {name: [] for name in runners}
    for repeat in range(args.repeats):
        for name, runner in runners.items():  # alternating, so a load change hits every peer alike
            result = runner()
            result["events_per_second"] = result["events"] / result["epoch_s"]
            runs[name].append(result)
            print(f"  repeat {repeat + 1} {name:9s} setup {result['setup_s']:6.1f} s, epoch {result['epoch_s']:6.1f} s, "
                  f"{result['events_per_second']:8,.0f} events/s, peak {result['peak_mib']:6,.0f} MiB", flush=True)
    medians = {name: {key: statistics.median(r[key] for r in rows) for key in rows[0]} for name, rows in runs.items()}
    reference = medians.get("official")
    print(f"\n{dataset:9s} {'setup s':>8s} {'epoch s':>8s} {'events':>9s} {'events/s':>9s} {'× official':>10s} "
          f"{'peak MiB':>9s}")
    for name, m in medians.items():
        ratio = f"{m['events_per_second'] / reference['events_per_second']:9.2f}×" if reference else "         -"
        print(f"{name:9s} {m['setup_s']:8.1f} {m['epoch_s']:8.1f} {m['events']:9,.0f} {m['events_per_second']:9,.0f} "
              f"{ratio:>10s} {m['peak_mib']:9,.0f}")
    print(flush=True)
    return {"runs": runs, "medians": medians}

if __name__ == "__main__":
    main()
