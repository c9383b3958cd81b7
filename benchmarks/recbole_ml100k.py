"""A RecBole 1.2.1 GRU4Rec on all of MovieLens-100K, and RecBole's own test evaluation of it: a model
"trained elsewhere" for the toolkit's commands. Run it with RecBole's interpreter, not the toolkit's:

    PY=path/to/recbole-venv/bin/python
    $PY benchmarks/recbole_ml100k.py --out runs/recbole-gru4rec-ml100k.pth      # about 10 minutes, 1 thread
    $PY benchmarks/recbole_ml100k.py --out runs/recbole-sessions.pth --train-sessions prepared/ml-100k  # our train split
    python -m softmax_bottleneck.evaluate --checkpoint runs/recbole-gru4rec-ml100k.pth --data prepared/ml-100k \\
        --item-map ../shared/data/ml-100k/ml-100k.inter --k 20

Settings: embedding and hidden size 64, one GRU layer, dropout 0.3, cross-entropy over all items, Adam
lr 0.001, batch 256, sequences of up to 50 items, up to --epochs epochs with RecBole's early stop on
valid MRR@20 (stopping_step 3). RecBole's protocol: one sequence per *user* (not per session), the
user's last interaction is the test target and the one before the valid target (leave-one-out,
``LS``), full ranking over all items. It prints RecBole's test Recall@20 and MRR@20 as JSON.

With torch >= 2.6 RecBole's own reload of the best model (``torch.load`` with the default
weights_only=True) fails on the file it wrote; this script loads the best weights back itself (the
file was written by this process a moment before, so trusted) and evaluates without reloading.
"""

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


def write_train_sessions(prepared: Path, path: Path) -> None:
    """The training split of a prepared dataset (its .npy arrays and meta.json's item ids) as a RecBole atomic file."""
    import numpy as np

    items = np.load(prepared / "train" / "items.npy")
    offsets = np.load(prepared / "train" / "offsets.npy")
    stamps = np.load(prepared / "train" / "timestamps.npy")
    import pandas as pd

    ids = pd.read_csv(prepared / "items.csv", dtype={"item_id": str}, keep_default_na=False)["item_id"].tolist()
    sessions = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    with open(path, "w") as out:
        out.write("user_id:token\titem_id:token\ttimestamp:float\n")
        out.writelines(f"s{s}\t{ids[i]}\t{t:.0f}\n" for s, i, t in zip(sessions, items, stamps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where to copy RecBole's checkpoint")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-sessions", type=Path, metavar="PREPARED",
                        help="train on the training split of this prepared dataset instead (one RecBole 'user' per "
                             "session), so that its valid/test sessions stay unseen; the .inter file is written beside "
                             "--out (pass it to the toolkit as --item-map)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    saved = Path(tempfile.mkdtemp())
    args.out = args.out.resolve()
    data_path, dataset_name = ML100K.parent, "ml-100k"
    if args.train_sessions is not None:
        data_path, dataset_name = saved, "sessions"
        (saved / "sessions").mkdir()
        write_train_sessions(args.train_sessions.resolve(), saved / "sessions" / "sessions.inter")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(saved / "sessions" / "sessions.inter", args.out.with_suffix(".inter"))
    os.chdir(saved)  # RecBole writes log/ and log_tensorboard/ into the working folder
    settings = {"data_path": str(data_path), "checkpoint_dir": str(saved / "saved"), "epochs": args.epochs,
                "embedding_size": 64, "hidden_size": 64, "num_layers": 1, "dropout_prob": 0.3,
                "MAX_ITEM_LIST_LENGTH": 50, "train_batch_size": 256, "eval_batch_size": 256,
                "train_neg_sample_args": None, "loss_type": "CE", "learning_rate": 0.001, "stopping_step": 3,
                "seed": 0, "reproducibility": True, "show_progress": False, "device": "cpu", "use_gpu": False,
                "worker": 0, "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
                "metrics": ["Recall", "MRR"], "topk": [20], "valid_metric": "MRR@20",
                "load_col": {"inter": ["user_id", "item_id", "timestamp"]}}
    config = Config(model="GRU4Rec", dataset=dataset_name, config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train.dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    best_valid, _ = trainer.fit(train, valid, saved=True, show_progress=False)
    path = sorted(glob.glob(str(saved / "saved" / "GRU4Rec-*.pth")))[-1]
    checkpoint = torch.load(path, weights_only=False)  # trusted: written by this process a moment ago
    model.load_state_dict(checkpoint["state_dict"])
    result = trainer.evaluate(test, load_best_model=False, show_progress=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, args.out)
    shutil.rmtree(saved)
    print(json.dumps({"checkpoint": str(args.out), "best_epoch": checkpoint["epoch"] + 1, "best_valid_mrr@20": best_valid,
                      "test": {k: float(v) for k, v in result.items()}, "users": int(dataset.user_num) - 1,
                      "items": int(dataset.item_num) - 1}))


if __name__ == "__main__":
    sys.exit(main())
