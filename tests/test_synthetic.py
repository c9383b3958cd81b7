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
    # 1-hour gap recovers the generated sessions exactly: nothing merged, split or filtered; only the
    # few sessions running across a split boundary are cut there (their pieces of one event dropped)
    dataset = prepare_synthetic(SMALL)
    moved = dataset.meta["split"]["events_moved_to_a_later_split"]
    assert 0 < moved < 0.01 * sum(dataset.splits[n].n_events for n in dataset.splits)
    assert SMALL.n_sessions <= sum(dataset.splits[n].n_sessions for n in dataset.splits) <= SMALL.n_sessions + moved
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


def test_the_dial_at_zero_is_exactly_a_softmax_of_the_worlds_dimension():
    """sparse_weight = 0: log p = [u, 1]·[c·v/√r, log pop]ᵀ − lse: rank r + 1 once rows are centred."""
    world, _ = generate(dataclasses.replace(SMALL, low_rank=3, sparse_weight=0.0))
    log_p = world.log_probs(np.arange(world.n_items))
    np.testing.assert_allclose(np.exp(log_p).sum(axis=1), 1.0, rtol=0, atol=1e-12)
    centred = log_p - log_p.mean(axis=1, keepdims=True)
    assert np.linalg.matrix_rank(centred) == 3 + 1
    turned_up, _ = generate(dataclasses.replace(SMALL, low_rank=3, sparse_weight=3.0))
    high = turned_up.log_probs(np.arange(world.n_items))
    assert np.linalg.matrix_rank(high - high.mean(axis=1, keepdims=True)) > 10 * (3 + 1)


def test_the_default_world_is_drawn_as_before_and_the_dial_is_recorded(tmp_path):
    """low_rank = 0 keeps the successor world's draws (its fingerprint is what the committed tuned
    settings are matched by); a dialled world records its parameters and round-trips its truth."""
    plain = prepare_synthetic(SMALL)
    assert "left_factors" not in plain.world
    dialled = prepare_synthetic(dataclasses.replace(SMALL, low_rank=2, sparse_weight=1.5))
    assert dialled.meta["source"]["config"]["low_rank"] == 2 and dialled.meta["source"]["config"]["sparse_weight"] == 1.5
    save_prepared(dialled, tmp_path / "d")
    again = SyntheticWorld.from_arrays(load_prepared(tmp_path / "d").world)
    assert again.low_rank == 2 and again.sparse_weight == 1.5
    previous = np.arange(5)
    np.testing.assert_array_equal(again.log_probs(previous), SyntheticWorld.from_arrays(dialled.world).log_probs(previous))
