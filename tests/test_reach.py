"""Reachability: LP certificates against constructed embeddings and brute force; the mixture cases; the CLI."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_cli
from analysis.argmax import RELATIVE_TOL, certificate_gap, certify_top1, logit_scale, solve_top1_lp, strict_winners
from analysis.reach import main
from analysis.reachability import scan_top_k
from softmax_bottleneck.heads import MixtureOfSoftmaxesHead

SQUARE = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])


def grid(d: int, per_axis: int) -> np.ndarray:
    """A regular grid over [−1, 1]^d, corners included."""
    axis = np.linspace(-1.0, 1.0, per_axis)
    return np.array(list(itertools.product(axis, repeat=d)))


def test_item_inside_the_hull_is_certified_unreachable_and_brute_force_agrees():
    weight = np.vstack([SQUARE, [[0.2, 0.1]]])
    bias = np.array([0.0, 0.0, 0.0, 0.0, -0.05])  # below the hull: beaten everywhere, not only tied at h = 0
    reach = certify_top1(weight, bias, n_random=64)
    assert list(reach.status) == ["reachable"] * 4 + ["unreachable"]
    assert reach.margin[4] < 0 and np.isnan(reach.witness[4]).all()
    winners, leads = strict_winners(grid(2, 201), weight, bias)
    assert not np.any(winners[leads > 0] == 4)
    # the same certificate straight from the LP (no filters): the bound is positive and closed-form
    status, margin, witness, _ = solve_top1_lp(4, weight, bias, np.zeros(2), tol=1e-12)
    assert status == "unreachable" and witness is None and margin == pytest.approx(-0.05, abs=1e-6)


def test_without_bias_an_interior_item_only_ties_at_the_origin():
    weight = np.vstack([SQUARE, [[0.2, 0.1]]])
    reach = certify_top1(weight, n_random=64)
    assert reach.status[4] == "tie" and abs(reach.margin[4]) < 1e-9


def test_vertex_item_is_reachable_with_a_witness_that_really_ranks_it_first():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(40, 3))
    weight[7] = [3.0, -3.0, 3.0]  # a vertex far out
    bias = rng.normal(size=40) * 0.1
    for how in ("default", "lp"):
        if how == "lp":
            status, lead, h, _ = solve_top1_lp(7, weight, bias, np.zeros(3), tol=1e-12)
        else:
            reach = certify_top1(weight, bias, n_random=0)
            status, lead, h = reach.status[7], reach.margin[7], reach.witness[7]
        assert status == "reachable" and lead > 0
        assert np.all(np.abs(h) <= 1.0)
        logits = weight @ h + bias
        assert np.argmax(logits) == 7 and np.sort(logits)[-1] - np.sort(logits)[-2] == pytest.approx(lead)


@pytest.mark.parametrize("seed,d", [(0, 2), (1, 2), (2, 2), (3, 3), (4, 3)])
def test_lp_and_brute_force_agree_on_small_random_cases(seed, d):
    rng = np.random.default_rng(seed)
    n = 25
    weight = rng.normal(size=(n, d)) * rng.uniform(0.2, 1.5, size=(n, 1))
    bias = rng.normal(size=n) * 0.5
    points = grid(d, 161 if d == 2 else 41)
    spacing = 2.0 / (160 if d == 2 else 40)
    winners, leads = strict_winners(points, weight, bias)
    found = set(winners[leads > 0].tolist())
    verdicts = {}
    for item in range(n):
        status, margin, witness, _ = solve_top1_lp(item, weight, bias, np.zeros(d), tol=1e-10)
        verdicts[item] = status
        if status == "unreachable":
            assert item not in found  # brute force never contradicts a certificate
        if item in found:
            assert status == "reachable"
        # a reachable item whose best lead beats the grid's error is seen by the grid
        worst_slope = np.abs(weight[item] - weight).sum(axis=1).max()
        if status == "reachable" and margin > worst_slope * spacing:
            assert item in found
    # the pipeline with its cheap filters reaches the same verdicts as the LP alone
    reach = certify_top1(weight, bias, n_random=256, seed=seed)
    assert {i: s for i, s in enumerate(reach.status)} == verdicts
    assert set(verdicts.values()) == {"reachable", "unreachable"}  # both kinds occur, so the test has teeth


def test_certificate_gap_is_a_valid_lower_bound():
    rng = np.random.default_rng(5)
    weight, bias = rng.normal(size=(30, 3)), rng.normal(size=30)
    points = grid(3, 21)
    for item in range(5):
        lam = rng.dirichlet(np.ones(29))
        others = np.delete(np.arange(30), item)
        gap = certificate_gap(item, others, lam, weight, bias)
        values = (points @ (lam @ weight[others] - weight[item])) + lam @ bias[others] - bias[item]
        assert values.min() >= gap - 1e-12
        assert values.min() == pytest.approx(gap)  # attained at a corner


def mixture_head(weight, bias, expert_states, prior_logits=None):
    """A MoS head whose experts, for the input h = e_1, sit at the given states (tanh of a large projection)."""
    n_items, d = weight.shape
    k = len(expert_states)
    head = MixtureOfSoftmaxesHead(n_items, d, item_bias=True, n_experts=k)
    with torch.no_grad():
        head.item_weight.copy_(torch.as_tensor(weight))
        head.item_bias.copy_(torch.as_tensor(bias)[:, None])
        projection = torch.zeros(k * d, d)
        for e, state in enumerate(expert_states):
            projection[e * d:(e + 1) * d, 0] = torch.atanh(torch.as_tensor(state, dtype=torch.float32).clamp(-0.999999, 0.999999))
        head.projection.weight.copy_(projection)
        head.prior.weight.zero_()
        if prior_logits is not None:
            head.prior.weight[:, 0] = torch.as_tensor(prior_logits)
    return head.double()


def test_a_mixture_ranks_first_an_item_no_expert_ranks_first():
    weight = np.array([[4.0, 0.0], [0.0, 4.0], [3.9, 3.9]])  # a, b and c
    bias = np.zeros(3)  # at both expert states below c's logit is 3.9, just under the leader's 4
    head = mixture_head(weight, bias, [[1.0, 0.0], [0.0, 1.0]])
    h = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    log_prior, states = head.expert_states(h)
    expert_logits = states[0] @ head.item_weight.T + head.item_bias[:, 0]
    assert expert_logits.argmax(dim=1).tolist() == [0, 1]  # expert 1 ranks a first, expert 2 ranks b
    assert head.log_probs(h).argmax().item() == 2  # the mixture ranks c first
    assert torch.allclose(log_prior.exp(), torch.full((1, 2), 0.5, dtype=torch.float64))


def test_softmax_certificate_carries_over_to_any_mixture_sharing_w_and_b():
    rng = np.random.default_rng(2)
    weight = np.vstack([SQUARE * 2.0, [[0.5, 0.4]], rng.normal(size=(6, 2))])
    bias = np.r_[np.zeros(4), -0.2, rng.normal(size=6) * 0.3]
    reach = certify_top1(weight, bias, n_random=64)
    unreachable = np.flatnonzero(reach.status == "unreachable")
    assert 4 in unreachable and (reach.margin[unreachable] < 0).all()
    for trial in range(300):  # random expert states and priors in the box
        k = int(rng.integers(2, 6))
        head = mixture_head(weight, bias, rng.uniform(-1, 1, size=(k, 2)), rng.normal(size=k) * 3)
        log_p = head.log_probs(torch.tensor([[1.0, 0.0]], dtype=torch.float64))[0].detach().numpy()
        # Jensen with the certificate's λ: p(i) ≤ e^{−gap} Σ λ_j p(j) ≤ e^{−gap} max_j p(j), margin = −gap
        assert (log_p[unreachable] <= log_p.max() + reach.margin[unreachable] + 1e-12).all()


def test_sigsoftmax_gets_the_softmax_verdicts_of_its_w_and_b():
    """Its score z + log σ(z) is increasing in z: the top item, so every verdict, is the softmax's."""
    from analysis.reachability import top1_verdicts
    from softmax_bottleneck.heads import SigsoftmaxHead, SoftmaxHead

    rng = np.random.default_rng(4)
    weight, bias = np.vstack([SQUARE * 2.0, [[0.5, 0.4]], rng.normal(size=(9, 2))]), rng.normal(size=14) * 0.3
    contexts = type("Contexts", (), {"hidden": rng.uniform(-1, 1, size=(50, 2))})()
    verdicts = []
    for cls in (SoftmaxHead, SigsoftmaxHead):
        head = cls(14, 2, True).double()
        with torch.no_grad():
            head.item_weight.copy_(torch.from_numpy(weight))
            head.item_bias.copy_(torch.from_numpy(bias)[:, None])
        status, method, margin, _ = top1_verdicts(head, contexts, n_random=64, seed=0)
        verdicts.append((list(status), list(method)))
        if cls is SigsoftmaxHead:  # and a brute-force check over a grid of the box agrees with the certificate
            winners = head.log_probs(torch.from_numpy(grid(2, 41))).argmax(dim=1).unique().tolist()
            assert set(winners) <= {i for i, s in enumerate(status) if s == "reachable"}
    assert verdicts[0] == verdicts[1] and "unreachable" in verdicts[0][0]


def test_mixture_of_logits_gets_witnesses_only_and_each_is_real():
    from analysis.reachability import top1_verdicts
    from softmax_bottleneck.heads import MixtureOfLogitsHead

    head = MixtureOfLogitsHead(12, 3, True, 2, 2, temperature=0.3).double()
    head.reset_parameters(torch.Generator().manual_seed(5))
    rng = np.random.default_rng(5)
    contexts = type("Contexts", (), {"hidden": rng.uniform(-1, 1, size=(40, 3))})()
    status, method, margin, reach = top1_verdicts(head, contexts, n_random=64, seed=0)
    assert reach is None and set(status) <= {"reachable", "undecided"} and "reachable" in set(status)
    with torch.no_grad():
        winners = set(head.log_probs(torch.from_numpy(contexts.hidden)).argmax(dim=1).tolist())
    assert {i for i in range(12) if method[i] == "context"} == winners  # a context witness ranks its item first
    assert (margin[status == "reachable"] > 0).all()


def test_scan_counts_top_k_with_conservative_ties():
    class Rows:
        shape = (3, 5)

        def rows(self, start, stop):
            return np.array([[0.0, 0.5, 0.5, -1.0, 0.2], [3.0, 2.0, 1.0, 0.0, -1.0], [1.0, 1.0, 1.0, 1.0, 1.0]])[start:stop]

    hits, winners, leads = scan_top_k(Rows(), (1, 2, 5), block=2)
    # row 0: the two tied at 0.5 are both out of the top 1 but in the top 2; row 2: all tied, in no top k < 5
    assert hits[0].tolist() == [1, 0, 0, 0, 0]
    assert hits[1].tolist() == [1, 2, 1, 0, 0]
    assert hits[2].tolist() == [3, 3, 3, 3, 3]
    assert leads.tolist() == [0.0, 1.0, 0.0] and winners[1] == 0


def test_tolerance_scales_with_the_logits():
    weight = np.array([[1e6, 0.0], [0.0, 1e6]])
    assert RELATIVE_TOL * logit_scale(weight, np.zeros(2)) == pytest.approx(1e-3)


# ------------------------------------------------------------------------------------------------ CLI

def test_cli_audits_softmax_and_mos_on_the_same_contexts(twins, tmp_path, capsys):
    out = tmp_path / "reach"
    status, stdout, err = run_cli(main, ["--checkpoint", twins / "softmax.pt", "--checkpoint", twins / "mos.pt",
                                         "--k", "1", "5", "10", "20", "--json", "--out", out, "--n-random", "512"], capsys)
    assert status == 0, err
    summary = json.loads(stdout)
    assert summary["ks"] == [1, 5, 10, 20]
    assert sorted(p.name for p in out.iterdir()) == ["reach.csv", "reach.json", "reach.png"]
    assert (out / "reach.png").stat().st_size > 10_000
    table = pd.read_csv(out / "reach.csv")
    n_items = summary["n_items"]
    assert len(table) == 2 * n_items
    softmax = table[table["model"] == summary["models"][0]["label"]]
    assert set(softmax["status"]) <= {"reachable", "unreachable", "tie"}  # softmax: every item decided
    # an item some context ranks first is reachable; coverage matches the hits column
    assert (softmax.loc[softmax["hits@1"] > 0, "status"] == "reachable").all()
    for model, part in zip(summary["models"], (softmax, table[table["model"] == summary["models"][1]["label"]])):
        for k in (1, 5, 10, 20):
            assert model["coverage"][str(k)] == pytest.approx((part[f"hits@{k}"] > 0).mean())
        assert (part["hits@1"] <= part["hits@5"]).all() and (part["hits@10"] <= part["hits@20"]).all()
        assert (part["hits@1"].sum()) <= summary["n_contexts"]  # at most one strict winner per context
        assert (part.loc[part["status"] == "unreachable", "hits@1"] == 0).all()
        # the reachable count splits by witness: a state the GRU produced, or a box state only
        reachable = part[part["status"] == "reachable"]
        assert model["reachable_by_a_held_out_context"] == (reachable["method"] == "context").sum()
        assert model["reachable_by_a_held_out_context"] + model["reachable_by_a_box_state_only"] == len(reachable)
        assert model["reachable_by_a_held_out_context"] >= (part["hits@1"] > 0).sum()
    # d = 4 with 80 items: the softmax cannot rank every item first
    assert summary["models"][0].get("unreachable", 0) + summary["models"][0].get("tie", 0) > 0


def test_cli_bad_inputs(twins, tmp_path, capsys):
    status, _, err = run_cli(main, ["--checkpoint", tmp_path / "none.pt"], capsys)
    assert status == 2 and "no such checkpoint" in err
    status, _, err = run_cli(main, ["--checkpoint", twins / "softmax.pt", "--max-contexts", "10000000"], capsys)
    assert status == 2 and "contexts this split has" in err
    status, _, err = run_cli(main, ["--checkpoint", twins / "softmax.pt", "--k", "0"], capsys)
    assert status == 2 and "--k" in err and len(err.strip().splitlines()) == 1
    status, _, err = run_cli(main, ["--checkpoint", twins / "softmax.pt", "--n-random", "-1",
                                    "--out", tmp_path / "o"], capsys)
    assert status == 2 and not (tmp_path / "o").exists()
