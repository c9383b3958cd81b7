"""Sigsoftmax and mixture of logits through every tool, with no special case: train, evaluate, rank, compare,
reach and capacity on checkpoints trained beside a softmax and a MoS of the same size."""

import json

from conftest import run_cli


def _json(main, argv, capsys):
    status, out, err = run_cli(main, argv + ["--json"], capsys)
    assert status == 0, err
    return json.loads(out)


def test_evaluate_and_rank_report_no_cap_and_a_rank_above_the_softmax_cap(new_heads, capsys):
    from analysis.rank import main as rank_main
    from softmax_bottleneck.evaluate import main as evaluate_main

    for head in ("sigsoftmax", "mol"):
        summary = _json(evaluate_main, ["--checkpoint", str(new_heads / f"{head}.pt")], capsys)
        assert summary["head"] == head and 0 < summary["recall@20"] <= 1
    paths = [str(new_heads / f"{h}.pt") for h in ("softmax", "sigsoftmax", "mol")]
    report = _json(rank_main, ["--checkpoint", *paths, "--max-contexts", "300"], capsys)
    softmax, sig, mol = report["models"]
    assert softmax["rank_cap"] == 4 + 2 == softmax["rank"]
    assert sig["rank_cap"] is None and mol["rank_cap"] is None
    assert sig["rank"] > softmax["rank_cap"] and mol["rank"] > softmax["rank_cap"]  # d = 4: both beyond d+2


def test_compare_and_reach_take_them_beside_softmax_and_mos(new_heads, capsys, tmp_path):
    from analysis.compare import main as compare_main
    from analysis.reach import main as reach_main

    paths = [str(new_heads / f"{h}.pt") for h in ("softmax", "mos", "sigsoftmax", "mol")]
    compared = _json(compare_main, ["--checkpoint", *paths, "--n-bootstrap", "100", "--k", "20"], capsys)
    assert [m["head"] for m in compared["models"]] == ["softmax", "mos", "sigsoftmax", "mol"]
    status, out, err = run_cli(reach_main, ["--checkpoint", *paths, "--n-random", "64", "--out", str(tmp_path)],
                               capsys)
    assert status == 0, err
    assert "no top-1 certificate for this head" in out  # said of the MoL model
    summary = json.loads((tmp_path / "reach.json").read_text())
    by_head = {m["head"]: m for m in summary["models"]}
    assert by_head["sigsoftmax"]["certificate"] == "softmax" and by_head["mol"]["certificate"] is None
    assert by_head["mol"].get("unreachable", 0) == 0  # nothing is certified for MoL, so nothing is claimed


def test_capacity_fits_both_new_families(new_heads, capsys):
    from analysis.capacity import main as capacity_main

    for head in ("sigsoftmax", "mol"):
        summary = _json(capacity_main, ["--data", str(new_heads / "data"), "--head", head, "--hidden-dim", "4",
                                        "--checkpoint", str(new_heads / f"{head}.pt"), "--max-contexts", "128",
                                        "--restarts", "1", "--steps", "100"], capsys)
        oracle, fit, trained = summary["rows"]
        assert fit["kind"] == "best fit" and fit["head"] == head and trained["residual_gap"] == trained["kl"] - fit["kl"]
