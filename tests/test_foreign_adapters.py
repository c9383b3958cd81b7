"""Models trained elsewhere behind every tool: the frameworks' own scores, item matching by id, and the CLIs.

The references were made by the frameworks themselves (tests/data/foreign/make_*.sh|py): RecBole's
``full_sort_predict`` of 32 test sequences and its ``field2id_token``, the official forward's scores.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from softmax_bottleneck.data import PreparedDataset, SessionSplit
from softmax_bottleneck.errors import InputError
from softmax_bottleneck.foreign.adapter import detect_format, load_foreign
from softmax_bottleneck.foreign.items import match_items, recbole_item_tokens
from softmax_bottleneck.replay import replay_split

FIXTURES = Path(__file__).parent / "data" / "foreign"
ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "ml-100k.inter"


def _dataset(item_ids, sessions) -> PreparedDataset:
    """An in-memory prepared dataset over `item_ids` whose test split holds `sessions` (lists of item ids)."""
    index = {item: i for i, item in enumerate(item_ids)}
    items = np.array([index[i] for s in sessions for i in s], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sessions])])
    split = SessionSplit(items, offsets, np.arange(len(items), dtype=np.float64))
    empty = SessionSplit(np.zeros(0, np.int32), np.zeros(1, np.int64), np.zeros(0))
    return PreparedDataset({"train": empty, "valid": empty, "test": split}, np.array(item_ids, dtype=object),
                           np.ones(len(item_ids), dtype=np.int64), {"fingerprint": "sha256:test"}, Path("mem"))


def _log_probs(model, split) -> dict:
    """{(session, position): log-probabilities over the dataset's items} from the adapted model."""
    out = {}
    for block in replay_split(model, split, batch_size=3):
        for s, p, row in zip(block.sessions, block.positions, model.log_probs(block.output)):
            out[(int(s), int(p))] = row
    return out


def _need_ml100k() -> None:
    if not ML100K.is_file():
        pytest.skip(f"MovieLens-100K sample not found at {ML100K} (see shared/data/ml-100k/README.md)")


@pytest.fixture(scope="module")
def tiny_inter(tmp_path_factory):
    """The .inter file the RecBole fixtures were trained on: the first 120 MovieLens-100K users (make_recbole.py)."""
    _need_ml100k()
    path = tmp_path_factory.mktemp("recbole") / "ml-tiny.inter"
    with open(ML100K) as source, open(path, "w") as out:
        out.write(next(source))
        out.writelines(line for line in source if int(line.split("\t")[0]) <= 120)
    return path


@pytest.mark.parametrize("name", ["gru4rec", "sasrec"])
def test_recbole_item_order_is_rebuilt_as_recbole_built_it(name, tiny_inter):
    from softmax_bottleneck.foreign.recbole import read_recbole

    reference = torch.load(FIXTURES / f"recbole-{name}.reference.pt", weights_only=True)
    settings = read_recbole(FIXTURES / f"recbole-{name}.pth").settings
    assert list(recbole_item_tokens(settings, tiny_inter)) == reference["item_tokens"]
    with pytest.raises(InputError, match="pass item_map"):  # the CLI says --item-map
        recbole_item_tokens(settings)  # the settings' data_path was a temporary folder, gone since
    stricter = recbole_item_tokens({**settings, "item_inter_num_interval": "[5,inf)", "rm_dup_inter": "first"},
                                   tiny_inter)
    assert stricter[0] == "[PAD]" and 1 < len(stricter) < len(reference["item_tokens"])


@pytest.mark.parametrize("name", ["gru4rec", "sasrec"])
def test_a_recbole_model_through_the_adapter_gives_recboles_scores_on_the_datasets_items(name, tmp_path):
    check_recbole_adapter(FIXTURES, name, tmp_path)


def check_recbole_adapter(folder: Path, name: str, tmp_path: Path) -> None:
    """Sessions = RecBole's own test sequences, the dataset's items in another order and one item RecBole lacks:
    each prefix's log-probabilities are RecBole's full-sort scores, normalised over the dataset's items."""
    reference = torch.load(folder / f"recbole-{name}.reference.pt", weights_only=True)
    tokens = reference["item_tokens"]
    (tmp_path / "tokens.txt").write_text("\n".join(tokens) + "\n")
    rng = np.random.default_rng(0)
    catalogue = [tokens[i] for i in rng.permutation(np.arange(1, len(tokens)))] + ["new-item"]
    sessions, expected = [], []
    for seq, length, scores in zip(reference["item_seq"], reference["item_seq_len"], reference["scores"]):
        prefix = [tokens[i] for i in seq[:length].tolist()]
        extra = [tokens[1], tokens[2], tokens[3]] if length == reference["max_len"] else []  # cut by truncation
        sessions.append(extra + prefix[:1] + ["new-item"] + prefix[1:] + [tokens[5]])  # "new-item": skipped
        expected.append(scores)
    dataset = _dataset(catalogue, sessions)
    checkpoint = load_foreign(folder / f"recbole-{name}.pth", dataset, "recbole", item_map=tmp_path / "tokens.txt")
    model = checkpoint.model
    assert checkpoint["foreign"]["items"].unknown == ["new-item"]
    got = _log_probs(model, dataset.split("test"))
    rows = [tokens.index(t) for t in catalogue[:-1]]
    for s, (session, scores) in enumerate(zip(sessions, expected)):
        want = torch.log_softmax(scores[rows], dim=0)
        log_p = got[(s, len(session) - 1)]
        torch.testing.assert_close(log_p[:-1], want, rtol=0, atol=2e-5)
        assert log_p[-1] == -torch.inf  # the unknown item: never recommended
    assert model.head.rank_cap == 18  # emb 16 + 1, and the bias that masks the unknown item (17 without: see below)


def test_the_official_model_through_the_adapter_steps_as_the_official_forward():
    check_official_adapter(FIXTURES)


def check_official_adapter(folder: Path) -> None:
    """The official forward's scores of 5 sessions; the dataset's items permuted, one unknown item inserted
    in each session (the official code drops unknown items from its data: the model steps over it)."""
    reference = torch.load(folder / "official-gru4rec.reference.pt", weights_only=True)
    ids = reference["item_ids"]
    catalogue = list(np.random.default_rng(1).permutation(ids)) + ["new-item"]
    sessions = [s[:1] + ["new-item"] + s[1:] for s in reference["sessions"]]
    dataset = _dataset(catalogue, sessions)
    model = load_foreign(folder / "official-gru4rec.pt", dataset, "gru4rec-official").model
    got = _log_probs(model, dataset.split("test"))
    rows = [ids.index(t) for t in catalogue[:-1]]
    step = 0
    for s, session in enumerate(reference["sessions"]):
        for position in range(1, len(session)):
            want = torch.log_softmax(reference["scores"][step][rows], dim=0)
            shifted = position + (position > 1)  # prefixes after the inserted item
            torch.testing.assert_close(got[(s, shifted)][:-1], want, rtol=0, atol=1e-5)
            if position == 1:  # the prefix ending at the unknown item: the state after the item before it
                torch.testing.assert_close(got[(s, 2)][:-1], want, rtol=0, atol=1e-5)
            step += 1
    assert model.head.rank_cap == 18  # d=16 + 2: the official output bias


@pytest.mark.parametrize("fmt", ["gru4rec-official", "recbole"])
def test_a_prefix_without_any_known_item_gets_the_zero_state(fmt, tmp_path):
    if fmt == "recbole":
        path, ids = FIXTURES / "recbole-sasrec.pth", torch.load(FIXTURES / "recbole-sasrec.reference.pt")["item_tokens"]
        (tmp_path / "tokens.txt").write_text("\n".join(ids) + "\n")
        ids, item_map = ids[1:], tmp_path / "tokens.txt"
    else:
        path, ids, item_map = FIXTURES / "official-gru4rec.pt", torch.load(FIXTURES / "official-gru4rec.reference.pt")[
            "item_ids"], None
    dataset = _dataset(ids + ["x", "y"], [["x", "y", ids[0], ids[1]]])
    model = load_foreign(path, dataset, fmt, item_map=item_map).model
    blocks = list(replay_split(model, dataset.split("test")))
    states = {int(p): o for b in blocks for p, o in zip(b.positions, b.output)}
    assert torch.count_nonzero(states[1]) == 0 and torch.count_nonzero(states[2]) == 0
    assert torch.count_nonzero(states[3]) > 0


def test_items_are_matched_by_id_and_a_model_of_other_items_is_refused():
    match = match_items(["b", "a", "z"], ["[PAD]", "a", "b", "c"])
    assert match.rows.tolist() == [2, 1, -1] and match.unknown == ["z"] and match.not_in_data == 1
    with pytest.raises(InputError, match="none of the data's 2 item ids"):
        match_items(["1", "2"], ["[PAD]", "7", "8"])
    with pytest.raises(InputError, match="only 1 of the data's 3 items"):
        match_items(["1", "2", "3"], ["[PAD]", "1", "8"])


def test_formats_are_detected_from_the_classes_the_file_names(tiny_checkpoint, tmp_path):
    assert detect_format(FIXTURES / "recbole-gru4rec.pth") == "recbole"
    assert detect_format(FIXTURES / "recbole-bert4rec.pth") == "recbole"
    assert detect_format(FIXTURES / "official-gru4rec.pt") == "gru4rec-official"
    assert detect_format(tiny_checkpoint) == "native"
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    assert detect_format(tmp_path / "junk.pt") == "native"  # the native loader says what is wrong


class _Done:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _run(flag, module, *args):
    """``python -m module args`` in this process (its main, its exit status, what it printed)."""
    import contextlib
    import importlib
    import io

    assert flag == "-m"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = importlib.import_module(module).main([str(a) for a in args])
    return _Done(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def tiny_prepared(tiny_inter, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "ml-tiny"
    done = _run("-m", "softmax_bottleneck.prepare", "--input", tiny_inter, "--format", "recbole", "--out", out,
                "--quiet")
    assert done.returncode == 0, done.stderr
    return out


def test_every_tool_takes_a_recbole_checkpoint(tiny_prepared, tiny_inter, tmp_path):
    """evaluate, rank and compare (against a native model on the same prepared sessions, paired CIs)."""
    recbole = FIXTURES / "recbole-gru4rec.pth"
    done = _run("-m", "softmax_bottleneck.evaluate", "--checkpoint", recbole, "--data", tiny_prepared,
                "--item-map", tiny_inter, "--k", "20", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["variant"] == "recbole-gru4rec" and summary["n_events"] > 1000
    assert summary["foreign"]["items"]["matched"] == summary["foreign"]["items"]["data_items"]
    assert 0 < summary["recall@20"] < 1
    done = _run("-m", "analysis.rank", "--checkpoint", recbole, "--data", tiny_prepared, "--item-map", tiny_inter,
                "--engine", "direct", "--json")
    assert done.returncode == 0, done.stderr
    direct = json.loads(done.stdout)
    factored = json.loads(_run("-m", "analysis.rank", "--checkpoint", recbole, "--data", tiny_prepared, "--item-map",
                               tiny_inter, "--engine", "factored", "--json").stdout)
    assert direct["rank"] == factored["rank"] <= direct["rank_cap"] == 17
    native = tmp_path / "mos.pt"
    done = _run("-m", "softmax_bottleneck.train", "--data", tiny_prepared, "--out", native, "--head", "mos",
                "--hidden-dim", "8", "--epochs", "1", "--quiet")
    assert done.returncode == 0, done.stderr
    done = _run("-m", "analysis.compare", "--checkpoint", recbole, native, "--item-map", tiny_inter, "--k", "20",
                "--n-bootstrap", "200", "--json")  # --data from the native checkpoint
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [m["variant"] for m in result["models"]] == ["recbole-gru4rec", "mos"]
    assert result["models"][0]["foreign"]["model"] == "RecBole GRU4Rec"
    assert result["models"][1]["p_recall@20"] is not None


def test_foreign_checkpoints_that_cannot_be_used_give_one_line(tiny_prepared, tiny_inter, tmp_path):
    cases = [
        (["softmax_bottleneck.evaluate", "--checkpoint", FIXTURES / "recbole-gru4rec.pth"], "records no prepared data"),
        (["softmax_bottleneck.evaluate", "--checkpoint", FIXTURES / "recbole-bert4rec.pth", "--data", tiny_prepared],
         "a RecBole BERT4Rec checkpoint; supported: GRU4Rec, SASRec"),
        (["softmax_bottleneck.evaluate", "--checkpoint", FIXTURES / "recbole-gru4rec.pth", "--data", tiny_prepared],
         "pass --item-map"),
        (["softmax_bottleneck.evaluate", "--checkpoint", FIXTURES / "recbole-gru4rec.pth", "--data", tiny_prepared,
          "--checkpoint-format", "native"], "a RecBole checkpoint, not a native one"),
        (["analysis.reach", "--checkpoint", FIXTURES / "recbole-gru4rec.pth", "--data", tiny_prepared, "--item-map",
          tiny_inter], "box"),
    ]
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes((FIXTURES / "recbole-gru4rec.pth").read_bytes()[:5000])
    cases.append((["analysis.rank", "--checkpoint", truncated, "--data", tiny_prepared,
                   "--checkpoint-format", "recbole"], "truncated"))
    other = tmp_path / "other.inter"  # another item space: ids no prepared item has
    other.write_text("user_id:token\titem_id:token\ttimestamp:float\n" +
                     "".join(f"1\tx{i}\t{i}\n" for i in range(1265)))
    cases.append((["softmax_bottleneck.evaluate", "--checkpoint", FIXTURES / "recbole-gru4rec.pth", "--data",
                   tiny_prepared, "--item-map", other], "none of the data's"))
    for args, message in cases:
        done = _run("-m", *args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("module, qualname", [("recbole.config.configurator", "Config"),
                                              ("gru4rec_pytorch", "GRU4Rec")])
def test_a_crafted_file_of_either_format_is_refused_by_the_tools_and_runs_nothing(module, qualname, tmp_path,
                                                                                  monkeypatch, tiny_prepared):
    """A file in the framework's format (it names the framework's class) that runs a command when loaded naively."""
    import types

    parts = module.split(".")
    for depth in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:depth]), types.ModuleType(".".join(parts[:depth])))
    cls = type(qualname, (), {"__module__": module})
    setattr(sys.modules[module], qualname, cls)
    marker = tmp_path / "ran"
    payload = {"config": cls(), "state_dict": {}, "epoch": 0, "hook": _Payload(marker)}
    path = tmp_path / "evil.pth"
    torch.save(payload, path, pickle_protocol=4 if module.startswith("recbole") else 2)
    assert detect_format(path) == ("recbole" if module.startswith("recbole") else "gru4rec-official")
    done = _run("-m", "analysis.rank", "--checkpoint", path, "--data", tiny_prepared)
    assert done.returncode == 2 and "posix.system" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    torch.load(path, weights_only=False)  # loaded naively, it runs
    assert marker.exists()


# Against the frameworks themselves: train fresh models with them, then check the adapters on their files.
# Run where they are installed (see tests/data/foreign/make_*): RECBOLE_PYTHON=… OFFICIAL=… OFFICIAL_PYTHON=…
# python -m pytest -m slow tests/test_foreign_adapters.py


@pytest.mark.slow
def test_fresh_recbole_models_score_through_the_adapter_as_recbole_scores_them(tmp_path):
    python = os.environ.get("RECBOLE_PYTHON")
    if not python or not Path(python).exists():
        pytest.skip("RECBOLE_PYTHON (an interpreter with recbole==1.2.1) is not set")
    done = subprocess.run([python, FIXTURES / "make_recbole.py", tmp_path], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("gru4rec", "sasrec"):
        check_recbole_adapter(tmp_path, name, tmp_path)


@pytest.mark.slow
def test_a_fresh_official_model_scores_through_the_adapter_as_the_official_forward(tmp_path):
    official, python = os.environ.get("OFFICIAL"), os.environ.get("OFFICIAL_PYTHON")
    if not (official and python and Path(official, "gru4rec_pytorch.py").exists()):
        pytest.skip("OFFICIAL (a GRU4Rec_PyTorch_Official checkout) and OFFICIAL_PYTHON are not set")
    done = subprocess.run(["bash", FIXTURES / "make_official.sh"], capture_output=True, text=True,
                          env={**os.environ, "PY": python, "OUT": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    check_official_adapter(tmp_path)


def test_the_reachability_audit_takes_an_official_gru4rec_file(tmp_path):
    """Its head inputs are GRU outputs, in the box the certificates are over: every item gets a verdict."""
    _need_ml100k()
    inter = tmp_path / "ml60.inter"  # the 60 users the official fixture was trained on (make_official.sh)
    with open(ML100K) as source, open(inter, "w") as out:
        out.write(next(source))
        out.writelines(line for line in source if int(line.split("\t")[0]) <= 60)
    prepared = tmp_path / "ml60"
    assert _run("-m", "softmax_bottleneck.prepare", "--input", inter, "--format", "recbole", "--out", prepared,
                "--quiet").returncode == 0
    done = _run("-m", "analysis.reach", "--checkpoint", FIXTURES / "official-gru4rec.pt", "--data", prepared,
                "--n-random", "256", "--max-contexts", "200", "--json")
    assert done.returncode == 0, done.stderr
    model = json.loads(done.stdout)["models"][0]
    assert model["variant"] == "official-gru4rec" and model["foreign"]["items"]["unknown_items"] == 0
    assert model["reachable"] + model["unreachable"] + model.get("tie", 0) + model.get("undecided", 0) == model["n_items"]
