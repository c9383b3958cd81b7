"""The expressive rank: how many dimensions a model's predictions use, in KL and top-20 terms."""

import numpy as np
import pytest

from analysis.expressive import check_sweep, expressive_sweep, log_softmax_rows, svd_start
from softmax_bottleneck.errors import InputError


def _softmax_teacher(rng, d=4, n_items=80, n_contexts=400):
    states, items, bias = rng.uniform(-2, 2, (n_contexts, d)), rng.normal(size=(n_items, d)), rng.normal(size=n_items)
    return log_softmax_rows(states @ items.T + bias)


def test_a_softmax_of_size_d_is_reproduced_at_r_d_and_not_below():
    teacher = _softmax_teacher(np.random.default_rng(0))
    result = expressive_sweep(teacher, [1, 2, 4], steps=60)
    kl = {row["r"]: row["kl"] for row in result["sweep"]}
    assert kl[4] <= 1e-9 and kl[2] > 0.01 and kl[1] > kl[2]
    assert result["expressive_rank"] == 4 and result["sweep"][-1]["overlap@20"] == 1.0


def test_a_mixture_of_two_softmaxes_with_orthogonal_spans_needs_about_the_sum_of_their_ranks():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(80, 4)))[0] * 6  # two rank-2 item matrices, orthogonal spans
    halves = [log_softmax_rows(rng.uniform(-1, 1, (400, 2)) @ basis[:, 2 * i:2 * i + 2].T) for i in range(2)]
    teacher = np.logaddexp(np.log(0.5) + halves[0], np.log(0.5) + halves[1])
    result = expressive_sweep(teacher, [1, 2, 3, 4, 6], steps=100, overlap=0.9)
    kl = {row["r"]: row["kl"] for row in result["sweep"]}
    assert result["expressive_rank"] == 4  # 2 + 2: neither half's rank alone
    assert kl[3] > 4 * kl[4] and kl[2] > 0.01


def test_the_fit_is_never_worse_than_its_svd_start():
    rng = np.random.default_rng(1)
    teacher = np.logaddexp(np.log(0.3) + _softmax_teacher(rng, d=3), np.log(0.7) + _softmax_teacher(rng, d=3))
    for row in expressive_sweep(teacher, [1, 2, 3, 5, 8], steps=40)["sweep"]:
        assert row["kl"] <= row["kl_svd"] + 1e-12, row
    # where the start is already exact, a short polish in float32 would end above it: the start is kept
    exact = expressive_sweep(_softmax_teacher(rng, d=3), [3], steps=10)["sweep"][0]
    assert exact["kl"] <= exact["kl_svd"] + 1e-12, exact


def test_the_svd_start_is_a_rank_r_softmax_with_a_bias():
    teacher = _softmax_teacher(np.random.default_rng(2), d=3)
    factors, bias, states = svd_start(teacher, 2)
    assert factors.shape == (80, 2) and bias.shape == (80,) and states.shape == (400, 2)
    start = log_softmax_rows(states @ factors.T + bias)
    np.testing.assert_allclose(np.exp(start).sum(axis=1), 1.0, rtol=1e-12)


def test_the_truth_as_teacher_agrees_with_the_capacity_fit(tmp_path):
    """The same family (a softmax of size d with free states, items and bias) fitted to the same truth: the
    expressive sweep's KL at r = d is within 5 % of analysis.capacity's best fit."""
    from analysis.capacity_fit import fit_head, truth_contexts
    from softmax_bottleneck.config import ModelConfig
    from softmax_bottleneck.data import load_prepared, save_prepared
    from softmax_bottleneck.synthetic import SyntheticConfig, prepare_synthetic

    save_prepared(prepare_synthetic(SyntheticConfig(n_items=60, n_sessions=1500, seed=3, low_rank=2,
                                                    sparse_weight=2.0)), tmp_path / "world")
    contexts = truth_contexts(load_prepared(tmp_path / "world"), "test", 256, seed=0)
    capacity = fit_head(ModelConfig(head="softmax", hidden_dim=3, n_items=60), contexts, restarts=2, steps=1500)
    per_context = contexts.log_truth[contexts.inverse]  # one row per context: the capacity fit's weighting
    sweep = expressive_sweep(per_context, [3], steps=1500)["sweep"][0]
    assert sweep["kl"] == pytest.approx(capacity.kl, rel=0.05)


@pytest.mark.parametrize("ranks, extra, needle", [([0, 2], {}, "ranks must be >= 1"),
                                                  ([2, 500], {}, "above the 80 items"),
                                                  ([2], {"eps": 0.0}, "must be a finite number > 0"),
                                                  ([2], {"eps": float("nan")}, "must be a finite number > 0"),
                                                  ([2], {"overlap": 1.5}, "must be in (0, 1]")])
def test_bad_sweeps_are_refused(ranks, extra, needle):
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace("]", r"\]")):
        check_sweep(ranks, 80, **extra)


@pytest.mark.parametrize("argv, needle", [(["--expressive", "0", "4"], "--expressive ranks must be >= 1"),
                                          (["--expressive", "4", "--kl-eps", "0"], "--kl-eps must be a finite number > 0"),
                                          (["--expressive", "4", "--min-overlap", "2"], "--min-overlap must be in (0, 1]"),
                                          (["--expressive", "4", "--expressive-steps", "-1"], "--expressive-steps must be >= 0"),
                                          (["--expressive", "4", "100000"], "--expressive rank 100000 is above the")])
def test_the_rank_command_refuses_a_bad_sweep_in_one_line(tiny_checkpoint, tmp_path, capsys, argv, needle):
    from conftest import run_cli
    from analysis.rank import main

    status, _, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--out", tmp_path / "r", *argv], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "r").exists()


def test_the_rank_command_writes_the_sweep(tiny_checkpoint, tmp_path, capsys):
    import json

    import pandas as pd

    from conftest import run_cli
    from analysis.rank import main

    status, out, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--max-contexts", "200", "--expressive", "2", "8",
                                      "12", "--expressive-steps", "20", "--out", tmp_path / "r", "--json"], capsys)
    assert status == 0, err
    report = json.loads(out)["expressive"]
    assert report["expressive_rank"] == 8 and "upper bound" in report["kl_is"]  # a softmax of d = 8
    table = pd.read_csv(tmp_path / "r" / "expressive.csv")
    assert table["r"].tolist() == [2, 8, 12] and (table["kl"] <= table["kl_svd"] + 1e-12).all()
    from matplotlib.image import imread

    picture = imread(tmp_path / "r" / "expressive.png")  # KL and overlap against r, side by side
    assert picture.shape[1] > 1.5 * picture.shape[0] and picture[..., :3].std() > 0.05
