"""analysis.capacity: the best head of a family fitted to the truth, against worlds whose answer is known."""

import json

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL, run_cli
from analysis.capacity import main
from analysis.capacity_fit import capacity, expected_metrics
from softmax_bottleneck.data import save_prepared
from softmax_bottleneck.metrics import target_ranks
from softmax_bottleneck.config import ModelConfig
from softmax_bottleneck.synthetic import SyntheticConfig, prepare_synthetic
from softmax_bottleneck.train import main as train_main

FIT = {"max_contexts": 256, "restarts": 1, "steps": 800}


def _world(tmp_path_factory, name, **config):
    folder = tmp_path_factory.mktemp(name) / "data"
    save_prepared(prepare_synthetic(SyntheticConfig(n_items=60, n_sessions=1500, seed=3, **config)), folder)
    return folder


@pytest.fixture(scope="module")
def exact_softmax_world(tmp_path_factory):
    """The truth is exactly a softmax of dimension 4 with an item bias."""
    return _world(tmp_path_factory, "rank4", low_rank=4, sparse_weight=0.0)


@pytest.fixture(scope="module")
def high_rank_world(tmp_path_factory):
    return _world(tmp_path_factory, "sparse", low_rank=2, sparse_weight=4.0)


def _fit_kl(data, head, d, **extra):
    summary = capacity(ModelConfig(head=head, hidden_dim=d, n_experts=extra.pop("n_experts", None)), data=data,
                       **{**FIT, **extra})
    return summary, summary["rows"][1]["kl"]


def test_a_softmax_of_the_worlds_dimension_fits_it_and_a_smaller_one_cannot(exact_softmax_world):
    _, at_rank = _fit_kl(exact_softmax_world, "softmax", 4)
    _, below = _fit_kl(exact_softmax_world, "softmax", 2)
    assert at_rank < 1e-3
    assert below > 0.05


def test_on_a_high_rank_world_mos_fits_better_than_softmax_of_the_same_size(high_rank_world):
    _, softmax = _fit_kl(high_rank_world, "softmax", 3, steps=2000)
    _, mos = _fit_kl(high_rank_world, "mos", 3, n_experts=4, steps=2000)
    assert mos < 0.9 * softmax  # measured 0.318 against 0.385 nats (one seeded start each)


def test_expected_metrics_equal_a_brute_force_sum_over_targets():
    rng = np.random.default_rng(0)
    log_truth = np.log(rng.dirichlet(np.ones(7), size=5))
    log_model = rng.normal(size=(5, 7))
    weights = np.array([1.0, 2.0, 1.0, 3.0, 1.0])
    got = expected_metrics(log_truth, log_model, weights, (1, 3))
    recall, mrr = {1: 0.0, 3: 0.0}, {1: 0.0, 3: 0.0}
    for c in range(5):
        for target in range(7):  # every possible next item, weighted by its true probability
            rank = int(target_ranks(torch.from_numpy(log_model[c:c + 1]), torch.tensor([target]))[0])
            for k in (1, 3):
                recall[k] += weights[c] * np.exp(log_truth[c, target]) * (rank <= k)
                mrr[k] += weights[c] * np.exp(log_truth[c, target]) * (rank <= k) / rank
    for k in (1, 3):
        assert got[f"expected_recall@{k}"] == pytest.approx(recall[k] / weights.sum(), rel=1e-12)
        assert got[f"expected_mrr@{k}"] == pytest.approx(mrr[k] / weights.sum(), rel=1e-12)


def test_the_fit_weighs_each_distinct_previous_item_by_its_contexts(high_rank_world):
    """Contexts sharing a previous item are fitted as one row weighted by their count: the reported KL
    must be the mean over the sampled contexts, each counted once, not over the distinct rows."""
    from analysis.capacity_fit import fit_head, mean_kl, truth_contexts
    from analysis.logprobs import LogProbMatrix
    from softmax_bottleneck.data import load_prepared

    contexts = truth_contexts(load_prepared(high_rank_world), "test", None, 0)
    assert contexts.weights.max() > 3 * contexts.weights.min()  # duplicated previous items, unevenly
    fit = fit_head(ModelConfig(head="softmax", hidden_dim=2, n_items=60), contexts, restarts=1, steps=60)
    log_model = LogProbMatrix(fit.head, fit.states, name="fit").dense()
    truth, model = contexts.log_truth[contexts.inverse], log_model[contexts.inverse]  # one row per context
    per_context = (np.exp(truth) * (truth - model)).sum(axis=1).mean()
    assert fit.kl == pytest.approx(per_context, rel=1e-9)
    unweighted = float(mean_kl(torch.from_numpy(contexts.log_truth), torch.from_numpy(log_model),
                               torch.ones(len(log_model), dtype=torch.float64)))
    assert abs(unweighted - per_context) > 0.01 * per_context  # the weighting changes the answer here


def test_the_same_seed_gives_the_same_fit(exact_softmax_world):
    first, _ = _fit_kl(exact_softmax_world, "mos", 2, n_experts=2, seed=5, restarts=2, steps=100)
    second, _ = _fit_kl(exact_softmax_world, "mos", 2, n_experts=2, seed=5, restarts=2, steps=100)
    assert first["rows"] == second["rows"] and first["fit"]["restart_kls"] == second["fit"]["restart_kls"]
    from analysis.capacity_fit import fit_head, truth_contexts
    from softmax_bottleneck.data import load_prepared

    contexts = truth_contexts(load_prepared(exact_softmax_world), "test", 128, seed=0)
    config = ModelConfig(head="mos", hidden_dim=2, n_experts=2, n_items=60)
    fits = [fit_head(config, contexts, restarts=1, steps=100, seed=s).kl for s in (5, 5, 6)]
    assert fits[0] == fits[1] != fits[2]  # the fit's own seed is used, not only the sample's


def test_the_float32_phase_ends_in_float64_at_the_all_float64_fits_kl(exact_softmax_world):
    """The fit's first steps run in float32; the head it returns, and its KL, are float64 and as good."""
    from analysis.capacity_fit import fit_head, truth_contexts
    from softmax_bottleneck.data import load_prepared

    contexts = truth_contexts(load_prepared(exact_softmax_world), "test", 128, seed=0)
    config = ModelConfig(head="mos", hidden_dim=3, n_experts=2, n_items=60)
    mixed = fit_head(config, contexts, restarts=1, steps=400, seed=1)
    exact = fit_head(config, contexts, restarts=1, steps=400, seed=1, float64_share=1.0)
    assert {p.dtype for p in mixed.head.parameters()} == {torch.float64} and mixed.states.dtype == np.float64
    assert mixed.kl == pytest.approx(exact.kl, rel=0.05)
    assert mixed.kl != exact.kl  # the phases differ: this is not the same computation twice
    with pytest.raises(ValueError, match="float64_share"):
        fit_head(config, contexts, float64_share=1.5)


def test_a_mos_fit_also_starts_from_the_softmax_fit_and_ends_no_worse(high_rank_world):
    """A mixture contains the softmax of its size: one MoS restart starts there, so its bound is never looser."""
    from analysis.capacity_fit import _start_from_softmax, fit_head, mean_kl, truth_contexts
    from softmax_bottleneck.data import load_prepared
    from softmax_bottleneck.heads import build_head

    contexts = truth_contexts(load_prepared(high_rank_world), "test", 128, seed=0)
    softmax = fit_head(ModelConfig(head="softmax", hidden_dim=2, n_items=60), contexts, restarts=1, steps=300)
    head = build_head("mos", 60, 2, True, 3).double()
    states = _start_from_softmax(head, softmax, torch.Generator().manual_seed(0))
    with torch.no_grad():
        start = float(mean_kl(torch.from_numpy(contexts.log_truth), head.log_probs(states),
                              torch.from_numpy(contexts.weights)))
    assert start == pytest.approx(softmax.kl, rel=0.05)  # the start is (nearly) the softmax itself
    mos = fit_head(ModelConfig(head="mos", hidden_dim=2, n_experts=3, n_items=60), contexts, restarts=1, steps=300,
                   softmax=softmax)
    assert len(mos.restart_kls) == 2 and mos.restart_kls[-1] <= softmax.kl * 1.001 and mos.kl <= softmax.kl * 1.001
    with pytest.raises(ValueError, match="softmax start"):
        fit_head(ModelConfig(head="softmax", hidden_dim=2, n_items=60), contexts, softmax=softmax)


def test_cli_splits_a_trained_models_gap_and_writes_tidy_outputs(exact_softmax_world, tmp_path, capsys):
    checkpoint = tmp_path / "softmax.pt"
    assert train_main(["--data", str(exact_softmax_world), "--out", str(checkpoint), "--epochs", "1",
                       *TINY_MODEL]) == 0
    status, out, err = run_cli(main, ["--data", exact_softmax_world, "--head", "softmax", "--hidden-dim", "8",
                                      "--checkpoint", checkpoint, "--max-contexts", "200", "--restarts", "1", "--steps", "400",
                                      "--k", "5", "20", "--out", tmp_path / "cap", "--json"], capsys)
    assert status == 0, err
    summary = json.loads(out)
    oracle, fit, trained = summary["rows"]
    assert [r["kind"] for r in summary["rows"]] == ["oracle", "best fit", "trained"]
    assert oracle["kl"] == 0.0 and oracle["expected_recall@20"] >= fit["expected_recall@20"] - 1e-9
    assert trained["capacity_gap"] == fit["kl"]
    assert trained["capacity_gap"] + trained["residual_gap"] == pytest.approx(trained["kl"], rel=1e-12)
    assert trained["kl"] > fit["kl"]  # one epoch of training does not reach the best head
    assert {p.name for p in (tmp_path / "cap").iterdir()} == {"capacity.json", "capacity.csv", "capacity.png"}
    # a model outside the fitted family (softmax d = 8 against a softmax d = 2 fit, or a MoS fit) is refused
    for family, needle in ((["--head", "softmax", "--hidden-dim", "2"], "hidden_dim 8 (the fit: 2)"),
                           (["--head", "mos", "--hidden-dim", "8"], "head softmax (the fit: mos)"),
                           (["--head", "softmax", "--hidden-dim", "8", "--no-item-bias"], "item_bias True (the fit: False)")):
        status, out, err = run_cli(main, ["--data", exact_softmax_world, *family, "--checkpoint", checkpoint,
                                          "--steps", "10", "--restarts", "1", "--out", tmp_path / "other"], capsys)
        assert status == 2 and len(err.strip().splitlines()) == 1 and "not of the fitted head family" in err, err
        assert needle in err and not (tmp_path / "other").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--head", "softmax", "--hidden-dim", "4", "--n-experts", "3"], "needs --head mos"),
    (["--head", "mos", "--hidden-dim", "0"], "--hidden-dim must be >= 1"),
    (["--head", "softmax", "--hidden-dim", "4", "--max-contexts", "99999"], "--max-contexts 99999 is more than"),
])
def test_bad_settings_are_one_line(exact_softmax_world, argv, needle, capsys):
    status, _, err = run_cli(main, ["--data", exact_softmax_world, *argv], capsys)
    assert status == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_real_data_has_no_truth_to_fit(tiny_synthetic, tmp_path, capsys):
    import dataclasses

    plain = save_prepared(dataclasses.replace(tiny_synthetic, world=None), tmp_path / "plain")
    status, _, err = run_cli(main, ["--data", plain, "--head", "softmax", "--hidden-dim", "4"], capsys)
    assert status == 2 and "capacity needs a known truth" in err


def test_a_models_family_keeps_its_variant():
    """softmax-dd's fit is a softmax's (states are free), but its rows must still say softmax-dd."""
    from analysis.capacity_fit import family_config
    from softmax_bottleneck.config import variant_of

    dd = dict(head="softmax", hidden_dim=8, n_experts=1, item_bias=True, embedding="separate", dropout_hidden=0.3,
              mol_context_components=2, mol_item_components=2, mol_dim=None, mol_temperature=0.05)
    assert variant_of(family_config(dd)) == "softmax-dd"
    assert variant_of(family_config({**dd, "embedding": "constrained"})) == "softmax"
    assert family_config(dd).dropout_hidden == ModelConfig().dropout_hidden  # training settings do not enter


def test_a_teacher_stands_in_for_the_truth_on_data_without_one(tiny_synthetic, tiny_checkpoint, tmp_path, capsys):
    """Real data has no truth: a model's predictions take its place. A teacher fitted by its own family and
    size is reproduced (the fit's KL near 0), and a checkpoint's KL is measured against the teacher."""
    import dataclasses

    from softmax_bottleneck.data import save_prepared

    plain = save_prepared(dataclasses.replace(tiny_synthetic, world=None,
                                              meta={**tiny_synthetic.meta, "source": {"format": "test"}}),
                          tmp_path / "plain")
    status, _, err = run_cli(main, ["--data", plain, "--head", "softmax", "--hidden-dim", "8"], capsys)
    assert status == 2 and "--teacher" in err  # no truth: the message names the way out
    # the teacher's family at its size: the fit reproduces it; a smaller softmax cannot
    summary = capacity(ModelConfig(head="softmax", hidden_dim=8), teacher=tiny_checkpoint, checkpoints=[tiny_checkpoint],
                       max_contexts=200, restarts=1, steps=600)
    teacher, fit, same = summary["rows"]
    assert teacher["model"] == "teacher" and teacher["kl"] == 0.0 and summary["teacher"] == str(tiny_checkpoint)
    assert fit["kl"] < 0.05 and same["kl"] == pytest.approx(0.0, abs=1e-9)  # the teacher against itself
    small = capacity(ModelConfig(head="softmax", hidden_dim=1), teacher=tiny_checkpoint, max_contexts=200, restarts=1,
                     steps=600)
    assert small["rows"][1]["kl"] > 5 * fit["kl"]
