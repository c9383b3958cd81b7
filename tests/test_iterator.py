"""Session-parallel batches: every transition once and in order, one reset per session, GRU4Rec order."""

import numpy as np
import pytest

from softmax_bottleneck.data import SessionSplit, session_order, session_parallel_batches


def random_split(rng, n_sessions, allow_singletons=False):
    low = 1 if allow_singletons else 2
    lengths = rng.integers(low, 9, size=n_sessions)
    starts = rng.integers(0, 50, size=n_sessions).astype(float)  # many equal start times
    times = np.concatenate([s + np.arange(n) for s, n in zip(starts, lengths)])
    items = rng.integers(0, 40, size=lengths.sum())
    return SessionSplit(items=items, offsets=np.r_[0, np.cumsum(lengths)], timestamps=times)


def replay(split, batch_size):
    """Drive the iterator as a model would: keep rows, reset rows, check each row's continuity."""
    rows = []  # per active row: (session, position of the last target) the row's state has seen
    seen, resets, entry_order = [], {}, []
    for batch in session_parallel_batches(split, batch_size):
        if batch.keep is not None:
            assert len(batch.keep) == len(rows)
            rows = [r for r, k in zip(rows, batch.keep) if k]
        assert len(rows) in (0, len(batch.inputs))
        if not rows:
            rows = [None] * len(batch.inputs)
        for slot in range(len(batch.inputs)):
            session, position = int(batch.sessions[slot]), int(batch.positions[slot])
            if batch.reset[slot]:
                assert position == 1
                resets[session] = resets.get(session, 0) + 1
                entry_order.append(session)
            else:  # the state this row carries must be the same session, one step earlier
                assert rows[slot] == (session, position - 1)
            events = split.session(session)
            assert batch.inputs[slot] == events[position - 1] and batch.targets[slot] == events[position]
            rows[slot] = (session, position)
            seen.append((session, position))
        assert len(batch.inputs) <= batch_size
    return seen, resets, entry_order


@pytest.mark.parametrize("seed", range(20))
def test_every_transition_once_in_order_and_one_reset_per_session(seed):
    rng = np.random.default_rng(seed)
    split = random_split(rng, int(rng.integers(1, 60)), allow_singletons=seed % 2 == 1)
    batch_size = int(rng.integers(1, 12))
    seen, resets, entry_order = replay(split, batch_size)
    expected = [(s, p) for s in range(split.n_sessions) for p in range(1, len(split.session(s)))]
    assert sorted(seen) == expected  # every transition exactly once
    for session in range(split.n_sessions):  # ...and in order within its session
        positions = [p for s, p in seen if s == session]
        assert positions == sorted(positions)
    with_targets = [s for s in range(split.n_sessions) if len(split.session(s)) >= 2]
    assert resets == {s: 1 for s in with_targets}
    # sessions take slots in order of their first event, never shuffled
    assert entry_order == [s for s in session_order(split).tolist() if s in set(with_targets)]


def test_batch_shrinks_at_the_end_and_never_exceeds_batch_size():
    lengths = np.array([2, 5, 3])
    split = SessionSplit(items=np.arange(10), offsets=np.r_[0, np.cumsum(lengths)],
                         timestamps=np.arange(10, dtype=float))
    sizes = [len(b.inputs) for b in session_parallel_batches(split, batch_size=2)]
    # slots: s0 (1 step) then s2 (2 steps) in slot 0; s1 (4 steps) in slot 1
    assert sizes == [2, 2, 2, 1]
    assert sum(sizes) == lengths.sum() - len(lengths)


def test_bad_batch_size():
    with pytest.raises(ValueError):
        next(session_parallel_batches(random_split(np.random.default_rng(0), 3), 0))
