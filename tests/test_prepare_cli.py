"""python -m softmax_bottleneck.prepare: tables, JSON, and bad input as one line + exit 2, nothing written."""

import json
import subprocess
import sys

import pytest

from conftest import REPO, run_cli, write
from softmax_bottleneck.data import load_prepared
from softmax_bottleneck.prepare import main

TINY_SYNTHETIC = ["--synthetic", "--n-items", "40", "--n-sessions", "600"]


def test_synthetic_table_and_loadable_folder(tmp_path, capsys):
    status, out, err = run_cli(main, TINY_SYNTHETIC + ["--out", tmp_path / "s"], capsys)
    assert status == 0, err
    assert "split" in out and "train" in out and "test" in out
    dataset = load_prepared(tmp_path / "s")
    assert dataset.meta["source"]["config"]["n_items"] == 40
    assert dataset.world is not None


def test_json_summary_is_one_object(tmp_path, capsys, ml100k_path):
    status, out, _ = run_cli(main, ["--input", ml100k_path, "--format", "recbole", "--out", tmp_path / "m",
                                    "--json", "--quiet"], capsys)
    assert status == 0
    summary = json.loads(out)
    assert summary["splits"]["train"]["sessions"] == 1755 and summary["n_items"] == 1339
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["prepare_config"] == {"session_gap": 3600.0, "remove_consecutive_duplicates": True,
                                      "min_item_support": 5, "min_session_length": 2, "test_fraction": 0.1,
                                      "test_days": None, "min_rating": None}
    assert meta["source"]["sha256"] and meta["source"]["size"] == ml100k_path.stat().st_size


def test_flags_reach_the_config(tmp_path, capsys, ml100k_path):
    status, out, _ = run_cli(main, ["--input", ml100k_path, "--format", "recbole", "--out", tmp_path / "m",
                                    "--session-gap", "none", "--min-item-support", "10", "--json"], capsys)
    assert status == 0
    config = json.loads((tmp_path / "m" / "meta.json").read_text())["prepare_config"]
    assert config["session_gap"] is None and config["min_item_support"] == 10
    assert json.loads(out)["splits"]["train"]["sessions"] < 943  # one sequence per user


def test_rerun_replaces_an_earlier_prepared_dataset(tmp_path, capsys):
    assert run_cli(main, TINY_SYNTHETIC + ["--out", tmp_path / "s"], capsys)[0] == 0
    assert run_cli(main, TINY_SYNTHETIC + ["--seed", "5", "--out", tmp_path / "s"], capsys)[0] == 0
    assert load_prepared(tmp_path / "s").meta["source"]["config"]["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary folders left behind


BAD = {
    "missing file": (["--input", "{tmp}/nope.csv", "--format", "movielens"], "no such file"),
    "empty file": (["--input", "{tmp}/empty.csv", "--format", "movielens"], "empty"),
    "misnamed columns": (["--input", "{tmp}/cols.csv", "--format", "movielens"], "missing movieId"),
    "non-numeric timestamp": (["--input", "{tmp}/time.csv", "--format", "movielens"], "'yesterday'"),
    "NaN timestamp": (["--input", "{tmp}/nan.tsv", "--format", "gru4rec"], "NaN"),
    "format mismatch": (["--input", "{tmp}/nan.tsv", "--format", "recbole"], "does not look like --format recbole"),
    "filters empty a split": (["--input", "{tmp}/ok.csv", "--format", "movielens", "--min-item-support", "1000"],
                              "support filter (--min-item-support 1000, --min-session-length 2)"),
    "no source": ([], "--synthetic"),
    "bad config": (TINY_SYNTHETIC + ["--test-fraction", "0.7"], "--test-fraction must be"),
    "bad flag value": (["--synthetic", "--n-items", "many"], "invalid int value"),
    "duplicates removed from the synthetic world": (TINY_SYNTHETIC + ["--remove-consecutive-duplicates"],
                                                    "drop --remove-consecutive-duplicates"),
}


def _bad_files(tmp_path):
    write(tmp_path / "empty.csv", "")
    write(tmp_path / "cols.csv", "userId,item,rating,timestamp\n1,2,3,4\n")
    write(tmp_path / "time.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,5,3,yesterday\n")
    write(tmp_path / "nan.tsv", "SessionId\tItemId\tTime\n1\t2\t5\n1\t3\t\n")
    rows = "".join(f"{u},{i},3,{u * 10 ** 6 + i}\n" for u in range(30) for i in range(5))
    write(tmp_path / "ok.csv", "userId,movieId,rating,timestamp\n" + rows)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, case):
    _bad_files(tmp_path)
    argv, needle = BAD[case]
    out_dir = tmp_path / "out"
    status, out, err = run_cli(main, [a.format(tmp=tmp_path) for a in argv] + ["--out", out_dir, "--quiet"], capsys)
    assert status == 2
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err
    assert "Traceback" not in err
    assert not out_dir.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_out_that_is_not_a_prepared_dataset_is_left_alone(tmp_path, capsys):
    precious = write(tmp_path / "results" / "notes.txt", "do not lose me")
    status, _, err = run_cli(main, TINY_SYNTHETIC + ["--out", tmp_path / "results"], capsys)
    assert status == 2 and "not a prepared dataset" in err
    assert precious.read_text() == "do not lose me"
    status, _, err = run_cli(main, TINY_SYNTHETIC + ["--out", precious], capsys)
    assert status == 2 and precious.read_text() == "do not lose me"


def test_module_runs_as_a_subprocess_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "softmax_bottleneck.prepare", "--input", str(tmp_path / "x"),
                             "--format", "movielens", "--out", str(tmp_path / "o")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no such file" in result.stderr
    help_text = subprocess.run([sys.executable, "-m", "softmax_bottleneck.prepare", "--help"], cwd=REPO,
                               capture_output=True, text=True).stdout
    assert "python -m softmax_bottleneck.prepare --synthetic --out" in help_text


def test_an_unwritable_out_is_refused_before_the_input_is_read(tmp_path, capsys, monkeypatch):
    import softmax_bottleneck.prepare as prepare_module

    monkeypatch.setattr(prepare_module, "load_interactions", lambda *a, **k: pytest.fail("read before checking --out"))
    monkeypatch.setattr(prepare_module, "prepare_synthetic", lambda *a, **k: pytest.fail("drew before checking --out"))
    write(tmp_path / "file", "x")
    write(tmp_path / "mine" / "notes.txt", "keep me")
    for out, needle in (("/proc/x", "cannot write"), (tmp_path / "file" / "x", "is a file"),
                        (tmp_path / "mine", "not a prepared dataset")):
        for source in (["--input", tmp_path / "file", "--format", "gru4rec"], TINY_SYNTHETIC):
            status, _, err = run_cli(main, [*source, "--out", out], capsys)
            assert status == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("tamper, needle", [
    ("meta", "meta.json or world/ was modified"), ("world", "meta.json or world/ was modified"),
    ("support column", "items.csv has no support column")])
def test_a_tampered_folder_is_refused_with_one_line(tmp_path, capsys, tamper, needle):
    import numpy as np
    import pandas as pd

    from softmax_bottleneck.train import main as train_main

    assert run_cli(main, TINY_SYNTHETIC + ["--out", tmp_path / "s", "--quiet"], capsys)[0] == 0
    load_prepared(tmp_path / "s")  # untouched, it loads
    if tamper == "meta":
        meta = json.loads((tmp_path / "s" / "meta.json").read_text())
        meta["counts"] = {"n_items": 5}
        (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    elif tamper == "world":
        np.save(tmp_path / "s" / "world" / "epsilon.npy", np.array(0.9))
    else:
        items = pd.read_csv(tmp_path / "s" / "items.csv")
        items.drop(columns="support").to_csv(tmp_path / "s" / "items.csv", index=False)
    status, _, err = run_cli(train_main, ["--data", tmp_path / "s", "--out", tmp_path / "x.pt", "--quiet"], capsys)
    assert status == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.pt").exists()


def test_session_gap_on_an_already_sessionised_file_is_refused_and_recorded_as_not_applied(tmp_path, capsys):
    rows = "".join(f"{s}\t{i}\t{s * 100 + k}\n" for s in range(40) for k, i in enumerate((s % 7, s % 5 + 7, 12)))
    tsv = write(tmp_path / "s.tsv", "SessionId\tItemId\tTime\n" + rows)
    status, _, err = run_cli(main, ["--input", tsv, "--format", "gru4rec", "--session-gap", "60", "--out",
                                    tmp_path / "p", "--min-item-support", "1", "--quiet"], capsys)
    assert status == 2 and "--session-gap does not apply" in err and not (tmp_path / "p").exists()
    status, _, err = run_cli(main, ["--input", tsv, "--format", "gru4rec", "--out", tmp_path / "p",
                                    "--min-item-support", "1", "--quiet"], capsys)
    assert status == 0, err
    assert json.loads((tmp_path / "p" / "meta.json").read_text())["session_gap_applied"] is False
