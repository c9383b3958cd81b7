"""python -m softmax_bottleneck.evaluate: JSON, per-event ranks, data checks, empty splits."""

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_MODEL, run_cli
from softmax_bottleneck.data import SessionSplit, load_prepared, save_prepared
from softmax_bottleneck.data.prepared import content_fingerprint
from softmax_bottleneck.evaluate import main
from softmax_bottleneck.train import main as train_main


def _with_splits(dataset, **splits):
    """A copy of `dataset` with some splits replaced and the fingerprint recomputed."""
    new_splits = {**dataset.splits, **splits}
    meta = dict(dataset.meta, fingerprint=content_fingerprint(new_splits, dataset.item_ids, dataset.support))
    return dataclasses.replace(dataset, splits=new_splits, meta=meta, path=None)


def test_json_and_table(tiny_checkpoint, tiny_synthetic, capsys):
    status, out, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--json", "--k", "5", "20"], capsys)
    assert status == 0, err
    result = json.loads(out)
    assert {"recall@5", "recall@20", "mrr@20", "ndcg@20", "n_events", "head", "log_likelihood"} <= set(result)
    assert result["n_events"] == tiny_synthetic.splits["test"].n_transitions
    assert result["recall@5"] <= result["recall@20"] and result["mrr@20"] <= result["recall@20"]
    status, out, _ = run_cli(main, ["--checkpoint", tiny_checkpoint, "--split", "valid"], capsys)
    assert status == 0 and "recall" in out and "@20" in out


def test_planted_ties_rank_exactly_by_the_tie_rule(tiny_checkpoint, tmp_path, capsys):
    """A head that scores every item the same: the target ties with all 50 items. Conservative ties
    put it last (rank 50: no hit at 20, MRR 0), standard ties first (rank 1: every metric 1)."""
    import torch

    from softmax_bottleneck.checkpoint import load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(tiny_checkpoint)
    for key in ("head.item_weight", "head.item_bias"):
        checkpoint["state_dict"][key] = torch.zeros_like(checkpoint["state_dict"][key])
    flat = save_checkpoint(checkpoint, tmp_path / "flat.pt")
    runs = {}
    for ties in ("conservative", "standard"):
        status, out, err = run_cli(main, ["--checkpoint", flat, "--json", "--ties", ties, "--k", "1", "20", "50",
                                          "--per-event", tmp_path / f"{ties}.csv"], capsys)
        assert status == 0, err
        runs[ties] = json.loads(out)
    n_items = len(checkpoint["item_ids"])
    assert n_items == 50
    assert pd.read_csv(tmp_path / "conservative.csv")["rank"].eq(n_items).all()
    assert pd.read_csv(tmp_path / "standard.csv")["rank"].eq(1).all()
    assert (runs["conservative"]["recall@20"], runs["conservative"]["mrr@20"], runs["conservative"]["recall@50"],
            runs["conservative"]["mrr@50"]) == pytest.approx((0.0, 0.0, 1.0, 1 / 50), rel=1e-12)  # a mean of 1/50s
    assert runs["standard"]["recall@1"] == runs["standard"]["mrr@20"] == runs["standard"]["ndcg@20"] == 1.0
    assert runs["standard"]["log_likelihood"] == pytest.approx(-np.log(n_items), rel=1e-6)


def test_per_event_output(tiny_checkpoint, tiny_synthetic, tmp_path, capsys):
    path = tmp_path / "ranks.csv"
    status, _, _ = run_cli(main, ["--checkpoint", tiny_checkpoint, "--per-event", path, "--json"], capsys)
    assert status == 0
    frame = pd.read_csv(path, dtype={"target_id": str})
    assert list(frame.columns) == ["session", "position", "target", "target_id", "rank", "log_prob"]
    test = tiny_synthetic.splits["test"]
    assert len(frame) == test.n_transitions
    first = frame.iloc[0]
    assert first["target"] == test.session(first["session"])[first["position"]]
    assert (frame["rank"] >= 1).all() and (frame["rank"] <= tiny_synthetic.n_items).all()


def test_per_event_never_overwrites_a_file_unless_forced(tiny_checkpoint, tmp_path, capsys):
    victim = tmp_path / "model.pt"
    victim.write_bytes(tiny_checkpoint.read_bytes())
    status, _, err = run_cli(main, ["--checkpoint", victim, "--per-event", victim, "--json"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "exists; pass --force" in err
    assert victim.read_bytes() == tiny_checkpoint.read_bytes()
    status, _, err = run_cli(main, ["--checkpoint", victim, "--per-event", tmp_path / "r.csv", "--json"], capsys)
    assert status == 0
    status, _, err = run_cli(main, ["--checkpoint", victim, "--per-event", tmp_path / "r.csv", "--json", "--force"],
                             capsys)
    assert status == 0 and (tmp_path / "r.csv").read_text().startswith("session,")


def test_changed_data_is_refused_and_data_overrides_with_a_warning(tiny_synthetic, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_synthetic.path, data)
    checkpoint = tmp_path / "c.pt"
    assert train_main(["--data", str(data), "--out", str(checkpoint), "--epochs", "1", *TINY_MODEL]) == 0
    test = tiny_synthetic.splits["test"]
    fewer = SessionSplit(items=test.items[: test.offsets[-2]], offsets=test.offsets[:-1],
                         timestamps=test.timestamps[: test.offsets[-2]])
    changed = _with_splits(tiny_synthetic, test=fewer)
    save_prepared(changed, data)  # the recorded folder now holds other content
    status, _, err = run_cli(main, ["--checkpoint", checkpoint], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert tiny_synthetic.fingerprint[:19] in err and changed.fingerprint[:19] in err
    status, out, err = run_cli(main, ["--checkpoint", checkpoint, "--data", data, "--json"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "--allow-other-data" in err
    assert "may overlap the model's training data" in err
    status, out, err = run_cli(main, ["--checkpoint", checkpoint, "--data", data, "--json", "--allow-other-data"], capsys)
    assert status == 0 and err.startswith("warning:") and changed.fingerprint[:19] in err
    assert json.loads(out)["n_events"] == fewer.n_transitions


def test_other_item_map_is_refused(tiny_checkpoint, tmp_path, capsys, ml100k_path):
    from softmax_bottleneck.prepare import main as prepare_main

    assert prepare_main(["--input", str(ml100k_path), "--format", "recbole", "--out", str(tmp_path / "ml"),
                         "--quiet", "--json"]) == 0
    capsys.readouterr()
    status, _, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--data", tmp_path / "ml"], capsys)
    assert status == 2 and "another item map" in err


def test_split_without_events(tiny_synthetic, tmp_path, capsys):
    empty = SessionSplit(items=np.empty(0, np.int32), offsets=np.zeros(1, np.int64), timestamps=np.empty(0))
    save_prepared(_with_splits(tiny_synthetic, test=empty), tmp_path / "d")
    assert load_prepared(tmp_path / "d").splits["test"].n_sessions == 0
    checkpoint = tmp_path / "c.pt"
    assert train_main(["--data", str(tmp_path / "d"), "--out", str(checkpoint), "--epochs", "1", *TINY_MODEL]) == 0
    status, _, err = run_cli(main, ["--checkpoint", checkpoint], capsys)
    assert status == 2 and "has no events" in err


def test_bad_k(tiny_checkpoint, capsys):
    status, _, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--k", "0"], capsys)
    assert status == 2 and "--k" in err


def test_the_same_items_in_another_order_are_named_so(tiny_checkpoint, tiny_synthetic, tmp_path, capsys):
    reordered = dataclasses.replace(tiny_synthetic, item_ids=tiny_synthetic.item_ids[::-1].copy(), path=None)
    reordered.meta = dict(reordered.meta, fingerprint=content_fingerprint(reordered.splits, reordered.item_ids,
                                                                          reordered.support))
    save_prepared(reordered, tmp_path / "reordered")
    status, _, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--data", tmp_path / "reordered"], capsys)
    assert status == 2 and "the same items in another order" in err


def test_a_closed_pipe_ends_quietly(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    command = (f"{sys.executable} -m softmax_bottleneck.prepare --synthetic --n-items 30 --n-sessions 200 "
               f"--out {tmp_path / 's'} --quiet | head -1")
    done = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True)
    assert done.stdout.startswith("prepared") and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_a_sample_of_sessions_scores_them_exactly_as_the_whole_split_does(tiny_checkpoint, tiny_synthetic, tmp_path,
                                                                          capsys):
    """--sample-events: whole sessions, seeded, at most N events; each scored as in the full run (from a zero state)."""
    from softmax_bottleneck.data import sample_sessions

    test = tiny_synthetic.splits["test"]
    sample = sample_sessions(test, max_events=100, seed=3)
    assert 0 < sample.n_transitions <= 100 and sample.n_sessions < test.n_sessions
    again = sample_sessions(test, max_events=100, seed=3)
    assert np.array_equal(again.items, sample.items) and np.array_equal(again.offsets, sample.offsets)
    assert sample_sessions(test, max_events=10**9, seed=3) is test
    full_csv, part_csv = tmp_path / "full.csv", tmp_path / "part.csv"
    assert main(["--checkpoint", str(tiny_checkpoint), "--per-event", str(full_csv), "--json"]) == 0
    capsys.readouterr()
    assert main(["--checkpoint", str(tiny_checkpoint), "--per-event", str(part_csv), "--json",
                 "--sample-events", "100", "--sample-seed", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sample"]["events"] == summary["n_events"] == sample.n_transitions
    assert summary["sample"]["of_events"] == test.n_transitions
    full, part = pd.read_csv(full_csv), pd.read_csv(part_csv)
    sessions = {tuple(test.session(s)) for s in range(test.n_sessions)}
    chosen = [tuple(sample.session(s)) for s in range(sample.n_sessions)]
    assert all(s in sessions for s in chosen)  # whole sessions of the split
    assert len(part) == sample.n_transitions and part["rank"].isin(full["rank"]).all()
    # the same events get the same ranks: match them by (target sequence of the session, position)
    index = {tuple(test.session(s)): s for s in range(test.n_sessions)}
    original = [index[chosen[s]] for s in part["session"]]
    merged = pd.DataFrame({"session": original, "position": part["position"], "rank": part["rank"]}).merge(
        full, on=["session", "position"], suffixes=("", "_full"))
    assert len(merged) == len(part) and (merged["rank"] == merged["rank_full"]).all()


def test_blocks_scored_in_chunks_of_rows_give_the_same_ranks_health_and_observations(tiny_checkpoint, tiny_synthetic,
                                                                                     monkeypatch):
    """A block of the session-parallel loop is scored CHUNK_SCORES scores at a time: same numbers either way."""
    from softmax_bottleneck import evaluation
    from softmax_bottleneck.checkpoint import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(tiny_checkpoint))
    test = tiny_synthetic.splits["test"]

    def run():
        health = evaluation.HeadHealth(tiny_synthetic.support, (1, 5))
        seen = []
        result = evaluation.evaluate_ranks(model, test, batch_size=64, health=health,
                                           observers=(lambda block, log_p: seen.append((len(block.targets), len(log_p))),))
        return result, health.result(), seen

    whole, whole_health, whole_seen = run()
    monkeypatch.setattr(evaluation, "CHUNK_SCORES", 3 * tiny_synthetic.n_items)  # 3 rows per chunk
    chunked, chunked_health, chunked_seen = run()
    assert max(n for n, _ in whole_seen) > 3 and max(n for n, _ in chunked_seen) == 3
    assert all(a == b for a, b in chunked_seen) and sum(n for n, _ in chunked_seen) == test.n_transitions
    assert np.array_equal(whole.ranks, chunked.ranks) and np.array_equal(whole.sessions, chunked.sessions)
    # float32 GEMMs round by their row count (so does --batch-size): equal to float32 precision
    np.testing.assert_allclose(whole.target_log_probs, chunked.target_log_probs, rtol=0, atol=1e-5)
    assert 0 < chunked.seconds < 600 and 0 < whole.seconds < 600  # wall time of the pass, not a loop variable
    assert whole_health.keys() == chunked_health.keys()
    for key, value in whole_health.items():
        np.testing.assert_allclose(value, chunked_health[key], rtol=1e-6)
