"""The synthetic world: deterministic, exact truth, data that follows the truth, rank far above d+1."""

import dataclasses

import numpy as np
import pytest

from softmax_bottleneck.data import load_prepared, save_prepared
from softmax_bottleneck.synthetic import SyntheticConfig, SyntheticWorld, generate, prepare_synthetic

SMALL = SyntheticConfig(n_items=60, n_sessions=3000, seed=3)


def test_same_seed_same_world_and_data_and_files(tmp_path):
    a, b = prepare_synthetic(SMALL), prepare_synthetic(SMALL)
    save_prepared(a, tmp_path / "a")
    save_prepared(b, tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) >= 10
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    other = prepare_synthetic(dataclasses.replace(SMALL, seed=4))
    assert other.fingerprint != a.fingerprint


def test_truth_is_a_distribution_and_log_probs_are_exact():
    world, _ = generate(SMALL)
    probs = world.next_item_probs(np.arange(SMALL.n_items))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert (probs > 0).all()
    log_p = world.log_probs(np.arange(5))
    np.testing.assert_array_equal(log_p, np.log(probs[:5]))
    catalogue = np.arange(0, SMALL.n_items, 2)
    restricted = world.log_probs(np.arange(5), items=catalogue)
    np.testing.assert_allclose(np.exp(restricted).sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(restricted, np.log(probs[:5, catalogue] / probs[:5, catalogue].sum(1, keepdims=True)),
                               rtol=1e-12)


def test_every_item_has_n_successors_predecessors_and_no_self_successor():
    world, _ = generate(SMALL)
    n = SMALL.n_items
    assert not (world.successors == np.arange(n)[:, None]).any()
    assert all(len(set(row)) == SMALL.n_successors for row in world.successors.tolist())
    assert np.bincount(world.successors.ravel(), minlength=n).tolist() == [SMALL.n_successors] * n


def test_true_log_prob_matrix_rank_is_near_n_items():
    world, _ = generate(SMALL)
    log_p = world.log_probs(np.arange(SMALL.n_items))
    rank = np.linalg.matrix_rank(log_p)
    assert rank >= SMALL.n_items - 1 and rank > 10 * 4  # a softmax of d=4 is capped at 5 (6 with bias)


def test_prepared_sessions_are_the_generated_sessions():
    # 1-hour gap recovers the generated sessions exactly: nothing merged, split or filtered
    dataset = prepare_synthetic(SMALL)
    assert sum(dataset.splits[n].n_sessions for n in dataset.splits) == SMALL.n_sessions
    assert [s["stage"] for s in dataset.meta["stages"]][:2] == ["loaded", "sessionised"]
    assert dataset.meta["stages"][1]["sessions"] == SMALL.n_sessions
    assert dataset.meta["prepare_config"]["remove_consecutive_duplicates"] is False


def test_sampled_transitions_follow_the_truth():
    config = SyntheticConfig(n_items=30, n_sessions=20_000, n_successors=3, seed=1)
    world, inter = generate(config)
    dataset = prepare_synthetic(config)
    counts = np.zeros((30, 30))
    for split in dataset.splits.values():
        ids = dataset.item_ids.astype(int)
        for s in range(split.n_sessions):
            session = ids[split.session(s)]
            np.add.at(counts, (session[:-1], session[1:]), 1)
    rows = counts.sum(axis=1) > 2000
    assert rows.sum() >= 5
    truth = world.next_item_probs(np.flatnonzero(rows))
    empirical = counts[rows] / counts[rows].sum(axis=1, keepdims=True)
    # total variation per row: sampling noise for >2000 draws over 30 items is ~0.05
    assert np.abs(empirical - truth).sum(axis=1).max() < 0.1


def test_world_travels_with_the_prepared_folder(tmp_path):
    dataset = prepare_synthetic(SMALL)
    save_prepared(dataset, tmp_path / "s")
    loaded = load_prepared(tmp_path / "s")
    world = SyntheticWorld.from_arrays(loaded.world)
    np.testing.assert_array_equal(world.log_probs(np.arange(3)), generate(SMALL)[0].log_probs(np.arange(3)))


@pytest.mark.parametrize("bad", [dict(n_items=2), dict(epsilon=0.0), dict(n_successors=0),
                                 dict(mean_session_length=1.5), dict(n_sessions=3)])
def test_invalid_synthetic_config(bad):
    with pytest.raises(ValueError):
        SyntheticConfig(**bad)
