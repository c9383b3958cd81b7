"""analysis.compare: seeded bootstrap, zero self-difference, a planted difference found, bins that
partition the events, the oracle and KL on the synthetic world, and bad input."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY_MODEL, run_cli
from analysis.compare import main
from analysis.stats import (bootstrap_p_value, bootstrap_replicates, holm, interval_from_replicates,
                            p_value_resolution, quantile_bins, session_bootstrap, sign_flip_test)
from softmax_bottleneck.checkpoint import load_checkpoint, save_checkpoint
from softmax_bottleneck.data import save_prepared, session_parallel_batches
from softmax_bottleneck.synthetic import SyntheticConfig, prepare_synthetic
from softmax_bottleneck.train import main as train_main

FAST = ["--n-bootstrap", "300"]


def test_bootstrap_is_seeded_and_resamples_sessions():
    rng_values = np.random.default_rng(0)
    values, sessions = rng_values.random(500), np.repeat(np.arange(50), 10)
    a = session_bootstrap(values, sessions, 500, np.random.default_rng(7))
    b = session_bootstrap(values, sessions, 500, np.random.default_rng(7))
    assert a == b and a[0] < values.mean() < a[1]
    # sessions that are internally identical carry one session's information: a wider interval
    clumped = np.repeat(rng_values.random(50), 10)
    wide = session_bootstrap(clumped, sessions, 500, np.random.default_rng(7))
    narrow = session_bootstrap(clumped, np.arange(500), 500, np.random.default_rng(7))
    assert wide[1] - wide[0] > 2 * (narrow[1] - narrow[0])


def test_sign_flip_test_is_calibrated_under_no_difference_and_finds_shifts():
    rng = np.random.default_rng(1)
    sessions = np.repeat(np.arange(80), 5)
    p_values = [sign_flip_test(rng.normal(0, 1, 400), sessions, 400, rng) for _ in range(200)]
    assert 0.01 <= np.mean(np.array(p_values) < 0.05) <= 0.10  # about 5 % false positives
    assert sign_flip_test(rng.normal(0, 1, 400) + 0.5, sessions, 2000, rng) < 0.001
    assert sign_flip_test(np.zeros(400), sessions, 100, np.random.default_rng(0)) == 1.0


def test_sign_flip_p_values_are_exact_where_every_pattern_is_enumerated():
    # three sessions summing to 1, 2 and 4: of the 8 sign patterns only +++ and --- reach |7|
    sessions, differences = np.array([0, 1, 1, 2]), np.array([1.0, 0.5, 1.5, 4.0])
    assert sign_flip_test(differences, sessions, 8, np.random.default_rng(0)) == 2 / 8
    # |1 + 2 − 4| = 1: patterns with |sum| ≥ 1 are all but none (the smallest |sum| is 1): p = 1
    assert sign_flip_test(np.array([1.0, 2.0, -4.0]), np.arange(3), 8, np.random.default_rng(0)) == 1.0
    assert sign_flip_test(np.array([1.0, 2.0, 4.0, 8.0]), np.arange(4), 16, np.random.default_rng(0)) == 2 / 16


def test_a_drawn_sign_flip_p_value_counts_the_observed_pattern():
    # 40 equal positive sessions: no drawn pattern is as extreme (2 in 2^40), so p = 1 / (1 + permutations)
    p = sign_flip_test(np.ones(40), np.arange(40), 999, np.random.default_rng(3))
    assert p == 1 / 1000


def test_hierarchical_bootstrap_equals_the_session_one_for_identical_seeds_and_widens_when_they_disagree():
    rng = np.random.default_rng(0)
    sessions = np.repeat(np.arange(60), 4)
    model, baseline = rng.random(240), rng.random(240)
    session_only = session_bootstrap(model - baseline, sessions, 600, np.random.default_rng(5))
    estimate, replicates = bootstrap_replicates(np.stack([model] * 3), sessions, 600, np.random.default_rng(5),
                                                baseline=np.stack([baseline] * 3))
    np.testing.assert_allclose(interval_from_replicates(estimate, replicates), session_only, rtol=0, atol=1e-12)
    # the same mean per event, but seeds that disagree (one seed +0.1 everywhere, one −0.1): wider
    shifts = np.array([[-0.1], [0.0], [0.1]])
    estimate_far, far = bootstrap_replicates(model + shifts, sessions, 600, np.random.default_rng(5),
                                             baseline=np.stack([baseline] * 3))
    assert abs(estimate_far - estimate) < 1e-12
    low, high = interval_from_replicates(estimate_far, far)
    assert high - low > 1.5 * (session_only[1] - session_only[0])
    assert bootstrap_p_value(far) > bootstrap_p_value(replicates) or bootstrap_p_value(replicates) == 1.0


def test_holm_against_a_hand_computed_family():
    # sorted: .001·4 = .004, .01·3 = .03, .02·2 = .04, .04·1 = .04 (running max)
    np.testing.assert_allclose(holm([0.04, 0.001, 0.02, 0.01]), [0.04, 0.004, 0.04, 0.03])
    assert holm([0.6, 0.9]).tolist() == [1.0, 1.0]  # 0.6·2 caps at 1, and no later p may fall below it


BOOTSTRAP = "hierarchical bootstrap (seeds, then sessions)"


def test_the_p_value_floor_is_the_smallest_p_each_test_gives():
    rng = np.random.default_rng(0)
    floor = p_value_resolution([BOOTSTRAP] * 10, 999, 500)
    assert bootstrap_p_value(np.ones(999)) == floor["p_floor"] == 2 / 1000  # every replicate on one side of 0
    assert floor["holm_floor"] == pytest.approx(holm([floor["p_floor"]] * 10).min())
    drawn = p_value_resolution(["sign-flip over sessions"], 999, 40)["p_floor"]
    assert sign_flip_test(np.ones(40), np.arange(40), 999, rng) == drawn == 1 / 1000
    enumerated = p_value_resolution(["sign-flip over sessions"], 8, 3)["p_floor"]
    assert sign_flip_test(np.array([1.0, 2.0, 4.0]), np.arange(3), 8, rng) == enumerated == 2 / 8


def test_a_family_too_large_for_its_resamples_is_named_with_the_resamples_that_resolve_it():
    coarse = p_value_resolution([BOOTSTRAP] * 48, 1000, 9862)  # the real study's first gains: Holm ≥ 0.096
    assert coarse["holm_floor"] > 0.05 and "at least 1920 resamples" in coarse["warning"]
    assert p_value_resolution([BOOTSTRAP] * 48, 1920, 9862)["holm_floor"] < 0.05
    assert p_value_resolution([BOOTSTRAP] * 48, 1920, 9862)["warning"] is None
    assert p_value_resolution([BOOTSTRAP] * 48, 1918, 9862)["warning"] is not None
    few = p_value_resolution(["sign-flip over sessions"] * 3, 2000, 5)  # 5 sessions: 2/32 whatever the resamples
    assert "resamples (--n-bootstrap)" not in few["warning"] and few["p_floor"] == 2 / 32


def test_compare_warns_when_holm_cannot_reach_the_level(tiny_checkpoint, capsys):
    # one seed each: 3 metrics × 4 cutoffs = 12 sign-flip differences; 100 permutations floor Holm at 12/101
    coarse = ["--checkpoint", tiny_checkpoint, "--checkpoint", tiny_checkpoint, "--n-bootstrap", "100"]
    status, _, err = run_cli(main, coarse, capsys)
    assert status == 0 and "warning: Holm's p cannot go below 0.119" in err
    status, out, _ = run_cli(main, [*coarse, "--json"], capsys)  # the JSON carries it instead
    assert status == 0 and json.loads(out)["resolution"]["holm_floor"] == pytest.approx(12 / 101)
    status, _, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--checkpoint", tiny_checkpoint, *FAST], capsys)
    assert status == 0 and "Holm's p cannot" not in err


def test_quantile_bins_partition_and_label():
    codes, labels = quantile_bins(np.r_[np.ones(50), np.arange(50.0)], 4)
    assert len(codes) == 100 and codes.min() == 0 and codes.max() == len(labels) - 1


def test_self_comparison_gives_zero_difference(tiny_checkpoint, capsys):
    status, out, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--checkpoint", tiny_checkpoint, "--json",
                                      *FAST], capsys)
    assert status == 0, err
    second = json.loads(out)["models"][1]
    for key in ("diff_recall@20", "diff_mrr@20", "diff_ndcg@5"):
        assert second[key] == 0.0
    assert second["p_recall@20"] == 1.0


def test_planted_difference_is_detected_and_breakdowns_partition(tiny_checkpoint, tiny_synthetic, tmp_path, capsys):
    damaged = load_checkpoint(tiny_checkpoint)
    weights = damaged["state_dict"]["head.item_weight"]
    damaged["state_dict"]["head.item_weight"] = weights + 0.5 * torch.randn(weights.shape,
                                                                              generator=torch.Generator().manual_seed(0))
    save_checkpoint(damaged, tmp_path / "damaged.pt")
    status, out, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--checkpoint", tmp_path / "damaged.pt",
                                      "--out", tmp_path / "c", "--json", *FAST], capsys)
    assert status == 0, err
    table = pd.read_csv(tmp_path / "c" / "metrics.csv")
    row = table[(table["metric"] == "mrr") & (table["k"] == 20)].iloc[1]
    assert row["diff_vs_baseline"] < 0 and row["diff_ci_high"] < 0 and row["p_value"] < 0.01
    n_events = json.loads(out)["n_events"]
    assert n_events == tiny_synthetic.splits["test"].n_transitions
    breakdown = pd.read_csv(tmp_path / "c" / "breakdown.csv")
    one = breakdown[(breakdown["model"] == row["model"]) & (breakdown["metric"] == "recall")]
    for name, part in one.groupby("breakdown"):
        assert part["n_events"].sum() == n_events, name  # the bins partition the events
    # the synthetic world: an oracle row and KL for every model
    assert "oracle" in set(table["model"])
    assert table.loc[table["model"] != "oracle", "kl_to_truth"].gt(0).all()
    oracle_mrr = table[(table["model"] == "oracle") & (table["metric"] == "mrr") & (table["k"] == 20)]["value"].item()
    assert oracle_mrr > row["value"]
    files = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert files == ["breakdown.csv", "compare.json", "gain_heatmap_softmax-d-8-damaged.png", "health.csv", "metrics.csv",
                     "metrics.png"]


def test_seeds_of_one_configuration_are_grouped(tiny_synthetic, tiny_checkpoint, tmp_path, capsys):
    other_seed = tmp_path / "seed1.pt"
    assert train_main(["--data", str(tiny_synthetic.path), "--out", str(other_seed), "--epochs", "2", "--seed", "1",
                       *TINY_MODEL]) == 0
    mos = tmp_path / "mos.pt"
    assert train_main(["--data", str(tiny_synthetic.path), "--out", str(mos), "--epochs", "1", "--head", "mos",
                       "--n-experts", "2", *TINY_MODEL]) == 0
    status, out, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--checkpoint", other_seed, "--checkpoint", mos,
                                      "--json", *FAST], capsys)
    assert status == 0, err
    models = json.loads(out)["models"]
    assert [m["n_seeds"] for m in models] == [2, 1]
    assert models[1]["head"] == "mos" and models[1]["train_events_per_second"] > 0
    # every per-group number is the mean over its seeds, not the first seed's (KL and training speed too)
    alone = []
    for seed_path in (tiny_checkpoint, other_seed):
        status, out, err = run_cli(main, ["--checkpoint", seed_path, "--checkpoint", mos, "--json", *FAST], capsys)
        assert status == 0, err
        alone.append(json.loads(out)["models"][0])
    for key in ("kl_to_truth", "train_events_per_second", "recall@20", "mrr@20"):
        assert models[0][key] == pytest.approx(np.mean([a[key] for a in alone]), rel=1e-12), key
    assert alone[0]["kl_to_truth"] != alone[1]["kl_to_truth"]  # two seeds, two models: the mean is not either one


def test_every_checkpoint_must_give_the_first_ones_events(tiny_checkpoint, monkeypatch, capsys):
    import analysis.groups as groups

    real, calls = groups.evaluate_ranks, []

    def drop_one_event_the_second_time(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            result.sessions, result.positions, result.targets, result.ranks = (
                a[1:] for a in (result.sessions, result.positions, result.targets, result.ranks))
        return result

    monkeypatch.setattr(groups, "evaluate_ranks", drop_one_event_the_second_time)
    status, _, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--checkpoint", tiny_checkpoint, *FAST], capsys)
    assert status == 2 and "evaluated events differ" in err


def test_each_model_is_run_over_the_split_once(tiny_checkpoint, tiny_synthetic, monkeypatch, capsys):
    import softmax_bottleneck.model as model_module

    steps = []
    real = model_module.GRU4Rec.step
    monkeypatch.setattr(model_module.GRU4Rec, "step", lambda self, *a: steps.append(1) or real(self, *a))
    status, _, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--checkpoint", tiny_checkpoint, *FAST], capsys)
    assert status == 0, err
    test = tiny_synthetic.splits["test"]
    batches = sum(1 for _ in session_parallel_batches(test, 512))
    assert len(steps) == 2 * batches  # evaluation, health, KL and the oracle share one pass per model


def test_bad_inputs(tiny_checkpoint, tmp_path, capsys):
    status, _, err = run_cli(main, ["--checkpoint", tiny_checkpoint], capsys)
    assert status == 2 and "at least two" in err
    status, _, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--checkpoint", tiny_checkpoint,
                                    "--metrics", "auc"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1
    status, _, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--checkpoint", tiny_checkpoint, "--k", "0"], capsys)
    assert status == 2 and "--k" in err
    status, _, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--checkpoint", tiny_checkpoint, "--k", "100000"],
                             capsys)
    assert status == 2 and "larger than the catalogue" in err
    other = prepare_synthetic(SyntheticConfig(n_items=50, n_sessions=800, mean_session_length=6, seed=8))
    save_prepared(other, tmp_path / "other")
    assert train_main(["--data", str(tmp_path / "other"), "--out", str(tmp_path / "o.pt"), "--epochs", "1",
                       *TINY_MODEL]) == 0
    status, _, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--checkpoint", tmp_path / "o.pt"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert str(tiny_checkpoint) in err and str(tmp_path / "o.pt") in err


def test_checkpoint_flag_takes_several_paths_and_repeats():
    from analysis.compare import build_parser

    args = build_parser().parse_args(["--checkpoint", "a.pt", "b.pt", "--checkpoint", "c.pt"])
    assert [str(p) for p in args.checkpoint] == ["a.pt", "b.pt", "c.pt"]


def test_distinct_items_in_a_prefix_match_a_count_per_event():
    from analysis.breakdown import distinct_in_prefix
    from softmax_bottleneck.data import SessionSplit

    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 12, size=40)
    items = rng.integers(0, 6, size=lengths.sum())
    split = SessionSplit(items=items, offsets=np.r_[0, np.cumsum(lengths)], timestamps=np.arange(len(items), dtype=float))
    sessions = np.repeat(np.arange(40), lengths - 1)
    positions = np.concatenate([np.arange(1, n) for n in lengths])
    expected = [len(np.unique(split.session(s)[:p])) for s, p in zip(sessions, positions)]
    assert distinct_in_prefix(split, sessions, positions).tolist() == expected
