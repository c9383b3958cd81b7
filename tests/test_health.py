"""Head health (coverage, popularity of recommendations, a mixture's saturation and prior) against brute force,
and where users read it: evaluate --json and analysis.compare's health.csv."""

import json

import numpy as np
import pandas as pd
import torch

from conftest import run_cli
from analysis.compare import main as compare_main
from softmax_bottleneck.evaluate import main as evaluate_main
from softmax_bottleneck.evaluation import HeadHealth
from softmax_bottleneck.heads import build_head


def test_health_equals_a_brute_force_count():
    torch.manual_seed(0)
    n_items, k = 12, 3
    head = build_head("mos", n_items, 4, True, n_experts=3)
    head.reset_parameters(torch.Generator().manual_seed(1))
    support = np.arange(1, n_items + 1) * 10.0
    health = HeadHealth(support, ks=(1, k))
    hidden, targets = torch.randn(20, 4) * 3, torch.randint(0, n_items, (20,))
    for rows in (slice(0, 7), slice(7, 20)):  # two batches accumulate
        with torch.no_grad():
            health.add(head.log_probs(hidden[rows]), targets[rows], head.mixture_states(hidden[rows]))
    result = health.result()

    with torch.no_grad():
        log_p = head.log_probs(hidden).numpy()
        log_prior, states = head.expert_states(hidden)
    top = np.argsort(-log_p, axis=1, kind="stable")[:, :k]
    assert result[f"coverage@{k}"] == len(np.unique(top)) / n_items
    assert result["coverage@1"] == len(np.unique(top[:, 0])) / n_items
    assert np.isclose(result[f"support_recommended@{k}"], support[top].mean())
    assert np.isclose(result["support_target"], support[targets.numpy()].mean())
    assert np.isclose(result["saturated_share"], (states.abs() > 0.99).double().mean().item())
    prior = log_prior.exp().numpy()
    assert np.isclose(result["prior_entropy"], -(prior * np.log(prior)).sum(axis=1).mean())
    assert np.isclose(result["prior_entropy_max"], np.log(3))
    assert result["expert_top_share"] == (np.bincount(prior.argmax(axis=1), minlength=3) / 20).tolist()


def test_a_collapsed_mixture_reads_as_collapsed():
    """Saturated tanh states and a uniform prior, as Adagrad at lr 0.2 leaves MoS (issue 12)."""
    head = build_head("mos", 30, 4, False, n_experts=4)
    with torch.no_grad():
        head.item_weight.normal_()
        head.prior.weight.zero_()  # uniform prior
        head.projection.weight.fill_(50.0)  # every state coordinate at ±1
    health = HeadHealth(np.ones(30), ks=(20,))
    hidden = torch.rand(64, 4) + 0.5  # positive states: every projected coordinate is 50·Σh ≥ 100
    with torch.no_grad():
        health.add(head.log_probs(hidden), torch.zeros(64, dtype=torch.long), head.mixture_states(hidden))
    result = health.result()
    assert result["saturated_share"] > 0.99
    assert np.isclose(result["prior_entropy"], np.log(4))


def test_softmax_has_no_mixture_measures():
    head = build_head("softmax", 10, 4, True)
    assert head.mixture_states(torch.zeros(2, 4)) is None


def test_evaluate_json_and_compare_tables_carry_health(twins, capsys):
    status, out, err = run_cli(evaluate_main, ["--checkpoint", twins / "mos.pt", "--json"], capsys)
    assert status == 0, err
    record = json.loads(out)
    assert 0 < record["coverage@20"] <= 1 and record["support_recommended@20"] > 0
    assert len(record["expert_top_share"]) == 8 and np.isclose(sum(record["expert_top_share"]), 1)
    assert record["epoch"] == record["epochs_trained"] == 2 or record["epoch"] < record["epochs_trained"]
    status, out, err = run_cli(compare_main, ["--checkpoint", twins / "softmax.pt", "--checkpoint", twins / "mos.pt",
                                              "--n-bootstrap", "200", "--out", twins / "cmp"], capsys)
    assert status == 0, err
    assert "coverage" in out and "saturated" in out
    table = pd.read_csv(twins / "cmp" / "health.csv")
    mos = table[table["model"] == "mos d=4 K=8"]
    assert set(table["measure"]) >= {"coverage", "support_recommended", "support_target", "saturated_share",
                                     "prior_entropy", "expert_top_share"}
    assert len(mos[mos["measure"] == "expert_top_share"]) == 8
    assert "saturated_share" not in set(table[table["model"] == "softmax d=4"]["measure"])
    summary = json.loads((twins / "cmp" / "compare.json").read_text())
    coverage = mos[(mos["measure"] == "coverage") & (mos["k"] == 20)]["value"].item()
    assert summary["models"][1]["health"]["coverage@20"] == coverage
