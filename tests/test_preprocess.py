"""The preprocessing protocol against hand-made cases, a plain-Python reference, and ML-100K's counts."""

import dataclasses

import numpy as np
import pytest

from softmax_bottleneck.errors import InputError
from softmax_bottleneck.data import Interactions, PrepareConfig, load_interactions, load_prepared, prepare, save_prepared
from softmax_bottleneck.data.preprocess import sessionize, support_filter


def interactions(rows, sessionised=False):
    """rows: (user, item, timestamp) in file order."""
    users, items, times = zip(*rows)
    item_ids, codes = np.unique(np.array([str(i) for i in items]), return_inverse=True)
    return Interactions(user=np.array(users), item=codes.astype(np.int32), timestamp=np.array(times, float),
                        item_ids=item_ids, sessionised=sessionised, source={"format": "test"})


def split_sessions(dataset, name):
    split = dataset.splits[name]
    return [dataset.item_ids[split.session(s)].tolist() for s in range(split.n_sessions)]


FILLER_DAYS = 5e8 / 86_400  # with the filler below: valid = user 901's session, test = user 902's


def prepare_with_filler(rows, **config):
    """Prepare `rows` (all before t=1e9) as train; filler sessions keep valid and test non-empty."""
    filler = [(900, "p", -1e7), (900, "q", -1e7 + 1), (901, "p", 1.2e9), (901, "q", 1.2e9 + 1),
              (902, "p", 2e9), (902, "q", 2e9 + 1)]
    config = dict(dict(min_item_support=1, test_days=FILLER_DAYS), **config)
    return prepare(interactions(rows + filler), PrepareConfig(**config))


def test_timestamp_ties_keep_file_order_never_item_order():
    # user 1's events at t=100 come as item 9 then item 2 in the file: that order must stay
    rows = [(1, 9, 100), (1, 2, 100), (1, 5, 50)]
    assert ["5", "9", "2"] in split_sessions(prepare_with_filler(rows), "train")


def test_session_gap_is_strictly_greater_than():
    user = np.ones(4, dtype=np.int64)
    times = np.array([0, 3600, 7201, 7202], float)
    assert sessionize(user, times, 3600, sessionised=False).tolist() == [0, 0, 1, 1]
    assert sessionize(user, times, None, sessionised=False).tolist() == [0, 0, 0, 0]
    assert sessionize(user, times, 3600, sessionised=True).tolist() == [0, 0, 0, 0]


def reference_prepare(rows, gap, min_support, min_length, test_fraction, dedup=True):
    """A slow, obvious implementation of DESIGN.md's protocol, for comparison."""
    events = sorted(((u, t, r, i) for r, (u, i, t) in enumerate(rows)), key=lambda e: (e[0], e[1]))
    sessions = []
    for u, t, r, i in events:
        if sessions and sessions[-1][-1][0] == u and (gap is None or t - sessions[-1][-1][1] <= gap):
            sessions[-1].append((u, t, r, i))
        else:
            sessions.append([(u, t, r, i)])
    if dedup:
        sessions = [[e for k, e in enumerate(s) if k == 0 or e[3] != s[k - 1][3]] for s in sessions]
    while True:
        before = sum(map(len, sessions))
        counts = {}
        for s in sessions:
            for e in s:
                counts[e[3]] = counts.get(e[3], 0) + 1
        sessions = [[e for e in s if counts[e[3]] >= min_support] for s in sessions]
        sessions = [s for s in sessions if len(s) >= min_length]
        if sum(map(len, sessions)) == before:
            break
    sessions.sort(key=lambda s: (s[0][1], s[0][0], s[0][2]))
    n_test = int(np.floor(len(sessions) * test_fraction + 0.5))
    labels = [0] * (len(sessions) - 2 * n_test) + [1] * n_test + [2] * n_test
    # cut at the boundaries: an event later than the first valid (test) session's start is valid (test)
    boundaries = [sessions[len(sessions) - 2 * n_test][0][1], sessions[len(sessions) - n_test][0][1]]
    parts = {0: [], 1: [], 2: []}
    for s, label in zip(sessions, labels):
        pieces = {}
        for e in s:
            pieces.setdefault(max(label, sum(e[1] > b for b in boundaries)), []).append(e)
        for code, piece in pieces.items():
            if len(piece) >= min_length:
                parts[code].append(piece)
    train, valid, test = (sorted(parts[c], key=lambda s: (s[0][1], s[0][0], s[0][2])) for c in range(3))
    known = {e[3] for s in train for e in s}
    out = {"train": [[str(e[3]) for e in s] for s in train]}
    for name, part in (("valid", valid), ("test", test)):
        kept = [[str(e[3]) for e in s if e[3] in known] for s in part]
        out[name] = [s for s in kept if len(s) >= min_length]
    return out


@pytest.mark.parametrize("seed", range(12))
def test_matches_plain_python_reference_on_random_logs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(150, 400))
    # few distinct timestamps per user, so ties are everywhere; items skewed so the filter bites
    rows = [(int(rng.integers(0, 12)), int(rng.zipf(1.6) % 30), int(rng.integers(0, 40)) * 500)
            for _ in range(n)]
    gap, min_support, min_length = [(1000, 3, 2), (None, 4, 3), (1500, 2, 2)][seed % 3]
    expected = reference_prepare(rows, gap, min_support, min_length, 0.2)
    config = PrepareConfig(session_gap=gap, min_item_support=min_support, min_session_length=min_length,
                           test_fraction=0.2)
    if not all(expected.values()):  # one sequence per user from t≈0: the cut leaves train empty
        with pytest.raises(InputError, match="split is empty"):
            prepare(interactions(rows), config)
        return
    dataset = prepare(interactions(rows), config)
    for name in ("train", "valid", "test"):
        assert split_sessions(dataset, name) == expected[name], name


@pytest.mark.parametrize("gap", [None, 600, 3600, 86_400])
@pytest.mark.parametrize("rule", [dict(test_days=20), dict(test_fraction=0.1)])
def test_no_train_event_is_later_than_a_held_out_event(ml100k_path, gap, rule):
    """With one sequence per user a split of whole sessions by start put 1,659 train events inside the
    30-day test window of ML-100K: every session is now cut at the boundaries."""
    dataset = prepare(load_interactions(ml100k_path, "recbole"), PrepareConfig(session_gap=gap, **rule))
    times = {name: dataset.splits[name].timestamps for name in dataset.splits}
    assert times["train"].max() <= times["valid"].min() and times["valid"].max() <= times["test"].min()
    assert times["train"].max() <= dataset.meta["split"]["valid_from"] <= times["valid"].min()
    assert times["valid"].max() <= dataset.meta["split"]["test_from"] <= times["test"].min()
    if gap is None and "test_days" in rule:
        assert dataset.meta["split"]["events_moved_to_a_later_split"] > 1_000


def test_iterative_filter_reaches_a_fixed_point():
    # with support 3: 'x' (1 event) goes; session 2 ('b x') becomes one event and goes; that leaves
    # 'b' with 2 events, so 'b' goes too, and session 1 ('a b a b') becomes 'a a'
    rows = [(1, "a", 0), (1, "b", 1), (1, "a", 2), (1, "b", 3), (2, "b", 10_000), (2, "x", 10_001),
            (3, "a", 20_000), (3, "c", 20_001), (3, "a", 20_002), (3, "c", 20_003), (4, "a", 30_000),
            (4, "c", 30_001)]
    train = split_sessions(prepare_with_filler(rows, min_item_support=3), "train")
    assert ["a", "a"] in train and all("b" not in s and "x" not in s for s in train)
    session = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3])
    item = np.array([0, 1, 0, 1, 1, 3, 0, 2, 0, 2, 0, 2])
    keep, passes = support_filter(session, item, 4, min_support=3, min_length=2)
    assert keep.tolist() == [True, False, True, False, False, False] + [True] * 6
    assert passes == 3  # two passes that change something, one that confirms the fixed point


def test_consecutive_duplicates_removed_within_sessions_only():
    rows = [(1, "a", 0), (1, "a", 1), (1, "b", 2), (1, "a", 3), (2, "a", 0), (2, "a", 9000), (2, "b", 9001)]
    train = split_sessions(prepare_with_filler(rows), "train")
    assert ["a", "b", "a"] in train  # user 1: a a b a -> a b a
    assert ["a", "b"] in train  # user 2: a | a b, the repeat across the gap starts a new session
    kept = split_sessions(prepare_with_filler(rows, remove_consecutive_duplicates=False), "train")
    assert ["a", "a", "b", "a"] in kept


def test_held_out_items_unseen_in_train_are_dropped():
    rows = [(1, "a", 0), (1, "b", 1), (2, "a", 100_000), (2, "b", 100_001), (3, "b", 150_000), (3, "a", 150_001),
            (4, "a", 200_000), (4, "z", 200_001), (4, "b", 200_002), (5, "b", 300_000), (5, "a", 300_001)]
    dataset = prepare(interactions(rows), PrepareConfig(min_item_support=1, test_fraction=0.2))
    assert split_sessions(dataset, "valid") == [["a", "b"]]  # 'z' dropped from a z b
    assert split_sessions(dataset, "test") == [["b", "a"]]
    assert dataset.item_ids.tolist() == ["a", "b"]
    rows[-1] = (5, "z", 300_001)  # test session 'b z' shrinks to one event: the split is empty
    with pytest.raises(InputError, match="test split is empty after dropping items not seen in train"):
        prepare(interactions(rows), PrepareConfig(min_item_support=1, test_fraction=0.2))


def test_test_days_split_by_session_start():
    day = 86_400
    rows = [(u, item, u * day + k) for u in range(6) for k, item in enumerate("ab")]
    dataset = prepare(interactions(rows), PrepareConfig(min_item_support=1, test_days=2))
    starts = {name: dataset.splits[name].start_times.tolist() for name in ("train", "valid", "test")}
    assert starts["test"] == [4 * day, 5 * day]  # t_max = 5 days + 1 s: test from 3 days + 1 s, valid from 1 day + 1 s
    assert starts["valid"] == [2 * day, 3 * day]
    assert len(starts["train"]) == 2


def test_empty_split_names_the_filter():
    rows = [(u, i, u * 10_000 + k) for u in range(5) for k, i in enumerate("abc")]
    with pytest.raises(InputError, match="support filter"):
        prepare(interactions(rows), PrepareConfig(min_item_support=100))
    with pytest.raises(InputError, match="test split empty; raise test_fraction"):
        prepare(interactions(rows), PrepareConfig(min_item_support=1, test_fraction=0.05))
    with pytest.raises(InputError, match=r"train split empty .*test_days 300: the last 300 days") as raised:
        prepare(interactions(rows), PrepareConfig(min_item_support=1, test_days=300))
    assert "test_fraction" not in str(raised.value)  # the rule in force, not the other one


def test_invalid_config_values_are_refused():
    for bad in (dict(session_gap=0), dict(min_item_support=0), dict(min_session_length=1),
                dict(test_fraction=0.5), dict(test_days=-1)):
        with pytest.raises(ValueError):
            PrepareConfig(**bad)


def test_movielens_100k_reference_counts(ml100k_path, tmp_path):
    dataset = prepare(load_interactions(ml100k_path, "recbole"), PrepareConfig())
    counts = {name: (dataset.splits[name].n_sessions, dataset.splits[name].n_events) for name in dataset.splits}
    assert counts == {"train": (1755, 80_743), "valid": (220, 9_354), "test": (215, 8_621)}
    assert dataset.n_items == 1339
    assert dataset.support.sum() == 80_743 and dataset.support.min() >= 1
    # stored sessions are in temporal order and every held-out session starts after train's last start
    starts = {n: dataset.splits[n].start_times for n in dataset.splits}
    assert all(np.all(np.diff(s) >= 0) for s in starts.values())
    assert starts["train"].max() <= starts["valid"].min() <= starts["valid"].max() <= starts["test"].min()


def test_save_load_round_trip_and_tamper_detection(ml100k_path, tmp_path):
    dataset = prepare(load_interactions(ml100k_path, "recbole"), PrepareConfig())
    save_prepared(dataset, tmp_path / "a")
    again = prepare(load_interactions(ml100k_path, "recbole"), PrepareConfig())
    save_prepared(again, tmp_path / "b")
    for f in sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    loaded = load_prepared(tmp_path / "a")
    assert loaded.fingerprint == dataset.fingerprint
    assert loaded.item_ids.tolist() == dataset.item_ids.tolist()
    for name in dataset.splits:
        for field in dataclasses.fields(loaded.splits[name]):
            np.testing.assert_array_equal(getattr(loaded.splits[name], field.name),
                                          getattr(dataset.splits[name], field.name))
    items = np.load(tmp_path / "a" / "test" / "items.npy")
    items[0] = (items[0] + 1) % dataset.n_items
    np.save(tmp_path / "a" / "test" / "items.npy", items)
    with pytest.raises(InputError, match="fingerprint"):
        load_prepared(tmp_path / "a")


@pytest.mark.parametrize("can_exchange", [True, False])
def test_a_rewrite_never_leaves_the_folder_missing(tmp_path, monkeypatch, can_exchange):
    """The old folder is swapped with the new one in one step; it is never renamed away first
    (only where the system cannot exchange, the fallback does that)."""
    import os

    from softmax_bottleneck import atomic
    from softmax_bottleneck.synthetic import SyntheticConfig, prepare_synthetic

    out = tmp_path / "prepared"
    first = prepare_synthetic(SyntheticConfig(n_items=30, n_sessions=200, seed=1))
    second = prepare_synthetic(SyntheticConfig(n_items=30, n_sessions=200, seed=2))
    save_prepared(first, out)
    moved_away, real_replace = [], os.replace
    def replace(a, b):
        if str(a) == str(out):
            moved_away.append(str(a))
        real_replace(a, b)

    monkeypatch.setattr(os, "replace", replace)
    if not can_exchange:
        monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    save_prepared(second, out)
    assert load_prepared(out).fingerprint == second.fingerprint
    assert moved_away == ([] if can_exchange else [str(out)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]  # no temporary left behind
