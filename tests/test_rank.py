"""Rank engines against numpy on matrices of known spectrum; softmax at its cap; MoS far above it."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from analysis import logprobs
from analysis.engines import compute_spectra, numerical_rank, singular_values
from analysis.rank import main
from analysis.rank_report import rank_report
from analysis.gram import RESOLVED, eigenvalues_with_rank_one_update
from analysis.spectrum import factored_spectrum, rank_threshold
from softmax_bottleneck.checkpoint import load_checkpoint, save_checkpoint

EPS = np.finfo(np.float64).eps


def with_spectrum(n_rows, n_cols, values, seed=0):
    """U·diag(values)·Vᵀ with random orthonormal U, V."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((n_rows, len(values))))
    v, _ = np.linalg.qr(rng.standard_normal((n_cols, len(values))))
    return (u * values) @ v.T


def cases():
    threshold = 400 * EPS  # default rtol·σ_max for σ_max = 1 and max(N, M) = 400
    return {
        "tall decaying": (400, 90, np.logspace(0, -15, 70)),
        "wide decaying": (90, 400, np.logspace(0, -15, 70)),
        "rank deficient": (200, 150, np.r_[np.linspace(1, 0.1, 30)]),
        "gap at the threshold": (400, 120, np.r_[np.ones(20), np.full(5, 3 * threshold), np.full(5, threshold / 3)]),
        "well conditioned full rank": (300, 100, np.linspace(1.0, 0.01, 100)),
        "square": (150, 150, np.logspace(0, -9, 150)),
    }


@pytest.mark.parametrize("engine", ["direct", "gram"])
@pytest.mark.parametrize("name", list(cases()))
def test_rank_matches_numpy_with_every_threshold_convention(engine, name):
    n_rows, n_cols, values = cases()[name]
    matrix = with_spectrum(n_rows, n_cols, values)
    assert numerical_rank(matrix, engine=engine) == np.linalg.matrix_rank(matrix)
    for rtol in (1e-3, 1e-8, 1e-12):
        assert numerical_rank(matrix, rtol=rtol, engine=engine) == np.linalg.matrix_rank(matrix, rtol=rtol)
    for tol in (0.5, 1e-6):
        assert numerical_rank(matrix, tol=tol, engine=engine) == np.linalg.matrix_rank(matrix, tol=tol)


@pytest.mark.parametrize("name", list(cases()))
def test_singular_values_match_numpy(name):
    n_rows, n_cols, values = cases()[name]
    matrix = with_spectrum(n_rows, n_cols, values)
    reference = np.linalg.svd(matrix, compute_uv=False)
    for engine, floor, accuracy in (("direct", 1e-6, 1e-10), ("gram", 1e-4, 1e-6)):
        got = singular_values(matrix, engine=engine)
        assert got.shape == reference.shape and np.all(np.diff(got) <= 0)
        keep = reference > floor * reference[0]
        np.testing.assert_allclose(got[keep], reference[keep], rtol=accuracy)


def test_factored_engine_is_exact_for_a_product():
    rng = np.random.default_rng(1)
    left, right = rng.standard_normal((500, 7)), rng.standard_normal((300, 7)) * np.logspace(0, -6, 7)
    got = factored_spectrum(left, right).values
    reference = np.linalg.svd(left @ right.T, compute_uv=False)
    assert len(got) == 300 and np.all(got[7:] == 0)
    np.testing.assert_allclose(got[:7], reference[:7], rtol=1e-10)
    assert numerical_rank(left @ right.T) == np.linalg.matrix_rank(left @ right.T) == 7  # ours against numpy's


@pytest.mark.parametrize("n, first", [(1, 0.7), (2, 0.0), (9, -2.0), (120, 0.3)])
def test_one_reduction_gives_the_spectra_of_g_and_its_rank_one_update(n, first):
    rng = np.random.default_rng(n)
    factor = rng.standard_normal((n, n + 5))
    gram = factor @ factor.T
    vector = rng.standard_normal(n)
    vector[0] = first
    weight = 0.9 / (vector @ np.linalg.solve(gram, vector))  # keeps G − w·v·vᵀ positive definite
    expected = np.linalg.eigvalsh(gram), np.linalg.eigvalsh(gram - weight * np.outer(vector, vector))
    work = np.triu(gram) + np.tril(np.full((n, n), np.nan), -1)  # only the upper triangle may be read
    got = eigenvalues_with_rank_one_update(work, vector, weight)
    for values, reference in zip(got, expected):
        np.testing.assert_allclose(values, reference, rtol=0, atol=1e-12 * reference[-1])
    plain, same = eigenvalues_with_rank_one_update(np.triu(gram), np.zeros(n), 5.0)  # no update
    np.testing.assert_allclose(plain, expected[0], rtol=0, atol=1e-12 * expected[0][-1])
    np.testing.assert_array_equal(plain, same)


def test_gram_resolves_well_separated_spectra_without_refining():
    matrix = with_spectrum(120, 300, np.linspace(1.0, 0.05, 120))
    spectrum = compute_spectra(matrix, engine="gram")[(False, 120)]
    assert spectrum.engine == "gram" and spectrum.refined == 0


def test_gram_values_near_its_floor_are_recomputed_not_reported():
    # σ = 1e-9·σ_max is far below the Gram floor of ~1.5e-8 but above the rank threshold
    values = np.r_[np.ones(10), np.full(10, 1e-9)]
    matrix = with_spectrum(100, 250, values)
    spectrum = compute_spectra(matrix, engine="gram")[(False, 100)]
    assert spectrum.engine == "gram+qr" and spectrum.refined > 0
    assert numerical_rank(matrix, engine="gram") == np.linalg.matrix_rank(matrix) == 20
    np.testing.assert_allclose(spectrum.values[10:20], 1e-9, rtol=1e-5)
    assert RESOLVED > 1.5e-8


@pytest.mark.parametrize("engine", ["direct", "gram"])
def test_rank_vs_n_and_centring(engine):
    rng = np.random.default_rng(2)
    # a rank-8 matrix plus a per-row constant: centring removes exactly that direction
    matrix = rng.standard_normal((300, 8)) @ rng.standard_normal((8, 200)) + rng.standard_normal((300, 1))
    report, _ = rank_report(matrix, engine=engine)
    assert report["rank"] == 9 and report["centred"]["rank"] == 8
    assert [r["n"] for r in report["rank_vs_n"]] == [64, 128, 256, 300]
    assert all(r["rank"] == 9 and r["centred_rank"] == 8 for r in report["rank_vs_n"])
    assert set(report["sweep"]) == {f"{10.0 ** -k:.0e}" for k in range(1, 15)}
    assert 1 <= report["effective_rank"] <= 9 and 1 <= report["stable_rank"] <= 9


def test_threshold_conventions():
    values = np.array([2.0, 1.0, 1e-20])
    assert rank_threshold(values, (10, 30)) == 2.0 * 30 * EPS
    assert rank_threshold(values, (10, 30), rtol=0.1) == 0.2
    assert rank_threshold(values, (10, 30), tol=0.5) == 0.5
    with pytest.raises(ValueError):
        rank_threshold(values, (10, 30), tol=1.0, rtol=1.0)


# --------------------------------------------------------------------------------- trained models

def test_softmax_checkpoint_rank_is_its_cap_and_engines_agree(twins, capsys):
    runs = {}
    for engine in ("factored", "direct", "gram"):
        status, out, err = run_cli(main, ["--checkpoint", twins / "softmax.pt", "--json", "--engine", engine], capsys)
        assert status == 0, err
        runs[engine] = json.loads(out)
    assert runs["factored"]["rank_cap"] == 6  # d + 2 with item bias
    assert {r["rank"] for r in runs.values()} == {6}
    assert runs["factored"]["engine"] == "factored"
    assert {r["centred"]["rank"] for r in runs.values()} == {5}  # centring removes the lse column


def test_mos_rank_is_many_times_the_softmax_cap_and_truth_is_near_full(twins, tmp_path, capsys):
    status, out, err = run_cli(main, ["--checkpoint", twins / "softmax.pt", "--checkpoint", twins / "mos.pt",
                                      "--json", "--out", tmp_path / "r"], capsys)
    assert status == 0, err
    result = json.loads(out)
    softmax, mos = result["models"]
    assert mos["rank_cap"] is None and mos["rank"] >= 5 * softmax["rank_cap"]
    assert result["truth"]["rank"] >= 0.95 * result["n_items"]
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["rank.json", "spectrum.csv", "spectrum.png"]
    assert (tmp_path / "r" / "spectrum.png").stat().st_size > 10_000
    import pandas as pd

    spectrum = pd.read_csv(tmp_path / "r" / "spectrum.csv")
    assert set(spectrum["matrix"]) == {softmax["label"], mos["label"], "truth"}
    assert list(spectrum.columns) == ["matrix", "centred", "index", "singular_value"]


def test_no_rank_exceeds_the_distinct_prefixes_of_its_contexts(twins, capsys):
    from softmax_bottleneck.checkpoint import model_from_checkpoint
    from softmax_bottleneck.data import load_prepared

    status, out, err = run_cli(main, ["--checkpoint", twins / "mos.pt", "--checkpoint", twins / "softmax.pt",
                                      "--json", "--max-contexts", "300"], capsys)
    assert status == 0, err
    result = json.loads(out)
    # the reference: distinct states of the model on the same sampled contexts (one state per prefix)
    model = model_from_checkpoint(load_checkpoint(twins / "mos.pt"), "cpu")
    contexts = logprobs.sample_contexts(
        logprobs.collect_contexts(model, load_prepared(twins / "data").split("test")), 300, 0)
    distinct = len(np.unique(contexts.hidden, axis=0))
    assert result["n_distinct_contexts"] == distinct < result["n_contexts"]  # short sessions repeat prefixes
    assert all(m["rank"] <= distinct for m in result["models"])
    status, out, _ = run_cli(main, ["--checkpoint", twins / "mos.pt", "--checkpoint", twins / "softmax.pt",
                                    "--max-contexts", "300"], capsys)
    assert status == 0 and f"{distinct:,} distinct prefixes, the most any rank here can be" in out


def test_same_seed_same_contexts_and_numbers(twins, capsys):
    outs = [run_cli(main, ["--checkpoint", twins / "mos.pt", "--json", "--max-contexts", "200", "--seed", "5"],
                    capsys)[1] for _ in range(2)]
    assert outs[0] == outs[1]
    assert json.loads(outs[0])["n_contexts"] == 200


def test_single_checkpoint_json_has_the_flat_keys(twins, capsys):
    status, out, _ = run_cli(main, ["--checkpoint", twins / "mos.pt", "--json"], capsys)
    result = json.loads(out)
    for key in ("rank", "rank_cap", "n_contexts", "n_items", "hidden_dim", "head", "n_experts", "threshold",
                "engine", "effective_rank", "stable_rank"):
        assert key in result, key


def test_bad_inputs(twins, tmp_path, capsys, monkeypatch):
    status, _, err = run_cli(main, ["--checkpoint", twins / "mos.pt", "--max-contexts", "10000000"], capsys)
    assert status == 2 and "more than the" in err and "contexts this split has" in err
    status, _, err = run_cli(main, ["--checkpoint", twins / "mos.pt", "--data", tmp_path / "gone"], capsys)
    assert status == 2 and "no such prepared dataset" in err
    status, _, err = run_cli(main, ["--checkpoint", twins / "mos.pt", "--engine", "factored"], capsys)
    assert status == 2 and "factorisation" in err
    monkeypatch.setattr(logprobs, "available_memory_bytes", lambda: 1 << 16)
    status, _, err = run_cli(main, ["--checkpoint", twins / "mos.pt", "--engine", "direct"], capsys)
    assert status == 2 and "GiB" in err and len(err.strip().splitlines()) == 1


def test_non_finite_log_probs_are_refused_naming_the_head(twins, tmp_path, capsys):
    checkpoint = load_checkpoint(twins / "mos.pt")
    checkpoint["state_dict"]["head.item_weight"][3, 0] = float("nan")
    save_checkpoint(checkpoint, tmp_path / "nan.pt")
    status, _, err = run_cli(main, ["--checkpoint", tmp_path / "nan.pt"], capsys)
    assert status == 2 and "mos head" in err and "non-finite" in err


def test_checkpoint_whose_data_is_gone(twins, tmp_path, capsys):
    checkpoint = load_checkpoint(twins / "mos.pt")
    checkpoint["data"]["path"] = str(tmp_path / "moved")
    save_checkpoint(checkpoint, tmp_path / "orphan.pt")
    status, _, err = run_cli(main, ["--checkpoint", tmp_path / "orphan.pt"], capsys)
    assert status == 2 and "--data" in err


def test_energy_beyond_the_cap_uses_d_plus_1_without_an_item_bias(twins, tmp_path, capsys):
    from softmax_bottleneck.train import main as train_main

    out = tmp_path / "mos-nobias.pt"
    assert train_main(["--data", str(twins / "data"), "--out", str(out), "--hidden-dim", "4", "--epochs", "1",
                       "--head", "mos", "--n-experts", "4", "--no-item-bias", "--full-softmax", "--quiet"]) == 0
    status, text, err = run_cli(main, ["--checkpoint", out, "--json", "--out", tmp_path / "rank"], capsys)
    assert status == 0, err
    report = json.loads(text)
    table = pd.read_csv(tmp_path / "rank" / "spectrum.csv")
    label = report["models"][0]["label"]
    values = table[(table["matrix"] == label) & ~table["centred"]]["singular_value"].to_numpy()
    energy = values ** 2
    assert report["energy_beyond_cap"] == pytest.approx(energy[4 + 1:].sum() / energy.sum(), rel=1e-12)
    assert report["energy_beyond_cap"] != pytest.approx(energy[4 + 2:].sum() / energy.sum(), rel=1e-6)


def test_one_label_per_checkpoint_in_rank_reach_and_compare(twins, tmp_path, capsys):
    import shutil

    from analysis.compare import main as compare_main
    from analysis.reach import main as reach_main

    copy = tmp_path / "softmax-copy.pt"
    shutil.copy(twins / "softmax.pt", copy)
    paths = [twins / "softmax.pt", copy]  # one configuration and seed twice: two models with one label
    outputs = {}
    for name, tool, extra in (("rank", main, []), ("reach", reach_main, ["--n-random", "16"]),
                              ("compare", compare_main, ["--n-bootstrap", "100"])):
        status, text, err = run_cli(tool, ["--checkpoint", *paths, "--json", *extra], capsys)
        assert status == 0, err
        outputs[name] = [m["label"] for m in json.loads(text)["models"]]
    assert outputs["rank"] == outputs["reach"] == outputs["compare"] == ["softmax d=4 (softmax)", "softmax d=4 (softmax-copy)"]


def test_information_abundance_tells_a_collapsed_item_matrix_from_a_full_one():
    """Guo et al.'s IA = ‖σ‖₁/‖σ‖∞: d for d equal directions, 1 for one; effective rank alike."""
    import numpy as np
    import torch

    from analysis.rank_report import abundance, embedding_report
    from softmax_bottleneck.heads import build_head

    rng = np.random.default_rng(0)
    orthonormal = np.linalg.qr(rng.normal(size=(50, 8)))[0]
    full, collapsed = abundance(orthonormal), abundance(np.outer(rng.normal(size=50), rng.normal(size=8)))
    assert full["information_abundance"] == pytest.approx(8.0) and full["effective_rank"] == pytest.approx(8.0)
    assert collapsed["information_abundance"] == pytest.approx(1.0, abs=1e-9) and collapsed["width"] == 8
    head = build_head("mos", 50, 8, True, 3).double()
    head.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():
        head.item_weight.copy_(torch.from_numpy(np.outer(rng.normal(size=50), rng.normal(size=8))))  # collapsed W
    report = embedding_report(head, rng.uniform(-1, 1, size=(40, 8)))
    assert report["item_matrix"]["information_abundance"] < 1.01 < report["hidden_states"]["information_abundance"]
    assert len(report["experts"]) == 3 and all(e["projection"]["width"] == 8 for e in report["experts"])
