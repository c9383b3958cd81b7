"""Regenerates the RecBole fixtures: recbole-{gru4rec,sasrec,bert4rec}.pth (files written by RecBole 1.2.1 itself)
and recbole-{gru4rec,sasrec}.reference.pt (RecBole's own reading of them: state dict, item tokens, and
full_sort_predict scores of the first 32 test sequences, with the sequences).

    PY=path/to/recbole-venv/bin/python; $PY tests/data/foreign/make_recbole.py [OUT]

OUT (default: this folder) is where the files go; the slow tests write fresh ones to a temporary folder.

The venv: torch 2.13.0, then recbole==1.2.1, then setuptools<81 numpy==1.26.4 pandas==2.3.3. The
models: the first 120 MovieLens-100K users, embedding 16, sequences of up to 10 items, 1 epoch, on one
thread. The reference is made with weights_only=False, which is safe only because RecBole wrote the
file a moment before; the toolkit never loads them that way.
"""

import glob
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[3] / "shared" / "data" / "ml-100k" / "ml-100k.inter"


def main() -> None:
    global OUT
    OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    torch.set_num_threads(1)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    work = Path(tempfile.mkdtemp())
    os.chdir(work)  # RecBole writes log/ and log_tensorboard/ into the working folder
    (work / "ml-tiny").mkdir()
    with open(DATA) as source, open(work / "ml-tiny" / "ml-tiny.inter", "w") as out:
        header = next(source)
        out.write(header)
        for line in source:
            if int(line.split("\t")[0]) <= 120:
                out.write(line)
    for name in ("GRU4Rec", "SASRec", "BERT4Rec"):  # BERT4Rec: a model the reader refuses, by name
        settings = {"data_path": str(work), "checkpoint_dir": str(work / "saved"), "epochs": 1, "embedding_size": 16,
                    "hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 2, "MAX_ITEM_LIST_LENGTH": 10,
                    "train_batch_size": 256, "eval_batch_size": 256, "train_neg_sample_args": None,
                    "loss_type": "CE", "seed": 0, "reproducibility": True, "show_progress": False,
                    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
                    "device": "cpu", "use_gpu": False, "worker": 0,
                    "load_col": {"inter": ["user_id", "item_id", "timestamp"]}}
        config = Config(model=name, dataset="ml-tiny", config_dict=settings)
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train, valid, test = data_preparation(config, dataset)
        model = get_model(config["model"])(config, train.dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        trainer.fit(train, valid, saved=True, show_progress=False)
        saved = sorted(glob.glob(str(work / "saved" / f"{name}-*.pth")))[-1]
        target = OUT / f"recbole-{name.lower()}.pth"
        shutil.copy(saved, target)
        print(name, target, os.path.getsize(target), "bytes")
        if name == "BERT4Rec":
            continue
        checkpoint = torch.load(target, weights_only=False)  # trusted: RecBole wrote it just now
        model.load_state_dict(checkpoint["state_dict"])
        model.eval()
        batch = next(iter(test))[0]
        with torch.no_grad():
            scores = model.full_sort_predict(batch)
        torch.save({"state_dict": dict(checkpoint["state_dict"]),
                    "item_tokens": [str(t) for t in dataset.field2id_token["item_id"]],
                    "item_seq": batch["item_id_list"][:32].clone(), "item_seq_len": batch["item_length"][:32].clone(),
                    "scores": scores.view(len(batch), -1)[:32].clone(), "max_len": 10},
                   OUT / f"recbole-{name.lower()}.reference.pt")
    shutil.rmtree(work)


if __name__ == "__main__":
    sys.exit(main())
