"""Raw interactions → sessions → temporal train/valid/test split, as the GRU4Rec authors do it.

The protocol (DESIGN.md, "Default preprocessing"):

1. stable sort by (user, timestamp): ties keep the file's order, never the item id (that leaks
   the target);
2. a new session at every inactivity gap > ``session_gap`` seconds (``None``: one per user);
3. drop consecutive duplicates inside a session;
4. on the whole data, iteratively drop items with < ``min_item_support`` events and sessions
   with < ``min_session_length`` events until nothing changes;
5. order sessions by start (ties: user, then the session's first row in the file); the last
   ``test_fraction`` of them (or those starting in the last ``test_days``) are test, as many
   again before them valid, the rest train; then cut every session at the split boundaries (the
   start of the first valid and of the first test session): its events later than a boundary
   form a session of the later split, so no train event is later than any held-out event (with
   one sequence per user, splitting whole sessions put the users' recent events in train);
   pieces shorter than ``min_session_length`` are dropped;
6. drop valid/test events whose item is not in train, then valid/test sessions left too short.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from ..provenance import library_version
from ..config import check_finite
from ..errors import InputError
from .loaders import Interactions
from .prepared import FORMAT_NAME, FORMAT_VERSION, SPLITS, PreparedDataset, SessionSplit, content_fingerprint

SECONDS_PER_DAY = 86_400.0


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """Every preprocessing parameter; recorded whole in meta.json."""

    session_gap: float | None = dataclasses.field(default=3600.0, metadata={
        "help": "split a user's stream at inactivity gaps longer than this many seconds; 'none' keeps one "
                "sequence per user", "metavar": "SECONDS"})
    remove_consecutive_duplicates: bool = dataclasses.field(default=True, metadata={
        "help": "drop an event that repeats the previous item of its session"})
    min_item_support: int = dataclasses.field(default=5, metadata={
        "help": "iteratively drop items with fewer events (whole data, before splitting)", "metavar": "N"})
    min_session_length: int = dataclasses.field(default=2, metadata={
        "help": "drop sessions with fewer events", "metavar": "N"})
    test_fraction: float = dataclasses.field(default=0.1, metadata={
        "help": "last fraction of sessions (by start) for test, as many before them for valid", "metavar": "F"})
    test_days: float | None = dataclasses.field(default=None, metadata={
        "help": "instead of --test-fraction: sessions starting in the last DAYS are test, the DAYS before "
                "valid", "metavar": "DAYS"})
    min_rating: float | None = dataclasses.field(default=None, metadata={
        "help": "keep only events rated at least this (MovieLens/RecBole); default keeps all", "metavar": "R"})

    def __post_init__(self):
        check_finite(self)
        if self.session_gap is not None and not self.session_gap > 0:
            raise ValueError(f"session_gap must be > 0 seconds or None, got {self.session_gap}")
        if self.min_item_support < 1:
            raise ValueError(f"min_item_support must be >= 1, got {self.min_item_support}")
        if self.min_session_length < 2:
            raise ValueError(f"min_session_length must be >= 2 (a session needs a next item), "
                             f"got {self.min_session_length}")
        if not 0 < self.test_fraction < 0.5:
            raise ValueError(f"test_fraction must be in (0, 0.5), got {self.test_fraction}")
        if self.test_days is not None and not self.test_days > 0:
            raise ValueError(f"test_days must be > 0, got {self.test_days}")


def concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices of the ranges [starts[k], starts[k] + lengths[k]) laid end to end.

    >>> concat_ranges(np.array([5, 0]), np.array([2, 3])).tolist()
    [5, 6, 0, 1, 2]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    ends = np.cumsum(lengths)
    shift = np.repeat(np.asarray(starts, dtype=np.int64) - (ends - lengths), lengths)
    return np.arange(ends[-1] if len(ends) else 0, dtype=np.int64) + shift


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])


class _Stages:
    """Counts after each stage, for meta.json and the error that names the filter that emptied a split."""

    def __init__(self, log: Callable[[str], None] | None):
        self.rows: list[dict] = []
        self._log = log
        self._t0 = time.perf_counter()

    def note(self, text: str) -> None:
        """A log line only (meta.json holds the numbers elsewhere)."""
        if self._log:
            self._log(f"[{time.perf_counter() - self._t0:6.1f}s] {text}")

    def record(self, stage: str, n_events: int, n_sessions: int | None = None, n_items: int | None = None):
        self.rows.append({"stage": stage, "events": int(n_events), "sessions": n_sessions, "items": n_items})
        if self._log:
            self._log(f"[{time.perf_counter() - self._t0:6.1f}s] {stage}: {n_events:,} events"
                      + (f", {n_sessions:,} sessions" if n_sessions is not None else ""))


def sessionize(user: np.ndarray, timestamp: np.ndarray, gap: float | None, sessionised: bool) -> np.ndarray:
    """Session number per event of (user, time)-sorted arrays: new at a user change or a gap > `gap`."""
    new = np.empty(len(user), dtype=bool)
    new[:1] = True
    new[1:] = user[1:] != user[:-1]
    if gap is not None and not sessionised:
        new[1:] |= np.diff(timestamp) > gap
    session = np.cumsum(new, dtype=np.int32 if len(new) < 2**31 else np.int64)  # int32: 100 MB less at 25M events
    session -= 1
    return session


def support_filter(session: np.ndarray, item: np.ndarray, n_item_codes: int, min_support: int,
                   min_length: int) -> tuple[np.ndarray, int]:
    """Keep-mask after iteratively dropping rare items and short sessions; also the number of passes."""
    keep = np.ones(len(item), dtype=bool)
    passes = 0
    while True:
        passes += 1
        before = int(keep.sum())
        item_counts = np.bincount(item[keep], minlength=n_item_codes)
        keep &= item_counts[item] >= min_support
        session_counts = np.bincount(session[keep], minlength=int(session[-1]) + 1 if len(session) else 0)
        keep &= session_counts[session] >= min_length
        if int(keep.sum()) == before:
            return keep, passes


def _split_labels(start: np.ndarray, order: np.ndarray, t_max: float, config: PrepareConfig) -> np.ndarray:
    """0/1/2 = train/valid/test per session (sessions indexed as in `start`)."""
    labels = np.zeros(len(start), dtype=np.int8)
    if config.test_days is not None:
        test_cut = t_max - config.test_days * SECONDS_PER_DAY
        labels[start >= test_cut - config.test_days * SECONDS_PER_DAY] = 1
        labels[start >= test_cut] = 2
        return labels
    # round half up: 10 % of 2,195 sessions is 220 test sessions (the reference protocol)
    n_test = int(np.floor(len(start) * config.test_fraction + 0.5))
    if n_test < 1:
        raise InputError(f"{{test_fraction}} {config.test_fraction} of {len(start)} sessions leaves the test "
                         "split empty; raise {test_fraction}", "test_fraction")
    labels[order[len(order) - 2 * n_test:]] = 1
    labels[order[len(order) - n_test:]] = 2
    return labels


SPLIT_RULE = ("sessions ordered by start; a session's events later than the first valid (test) session's start "
              "are cut off into a valid (test) session of their own, so no train event is later than any valid or "
              "test event, and no valid event later than any test event")


def cut_at_boundaries(labels: np.ndarray, temporal: np.ndarray, first: np.ndarray, lengths: np.ndarray,
                      timestamp: np.ndarray) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[float, float], int]:
    """Cut each session at the split boundaries: ([(first event, length) of each split's pieces], the
    boundaries (valid, test), events moved).

    A boundary is the start of the split's first session in temporal order. An event later than a
    boundary belongs at least to that split: with one sequence per user (or long sessions), a train
    session that runs on past the test boundary would otherwise put the future into training.

    >>> labels, temporal = np.array([0, 1, 2]), np.array([0, 1, 2])  # sessions start at 0, 10, 20
    >>> first, lengths, times = np.array([0, 4, 6]), np.array([4, 2, 2]), np.array([0, 5, 12, 25, 10, 11, 20, 21.])
    >>> pieces, boundaries, moved = cut_at_boundaries(labels, temporal, first, lengths, times)
    >>> [(p[0].tolist(), p[1].tolist()) for p in pieces], boundaries, moved
    ([([0], [2]), ([2, 4], [1, 2]), ([3, 6], [1, 2])], (10.0, 20.0), 2)
    """
    in_order = labels[temporal]
    boundaries = tuple(float(timestamp[first[temporal[np.argmax(in_order >= code)]]]) for code in (1, 2))
    window = (timestamp > boundaries[0]).astype(np.int8) + (timestamp > boundaries[1])
    event_split = np.maximum(np.repeat(labels.astype(np.int8), lengths), window)
    moved = int(np.count_nonzero(window > np.repeat(labels, lengths)))
    new_piece = np.zeros(len(timestamp), dtype=bool)
    new_piece[first] = True
    new_piece[1:] |= event_split[1:] != event_split[:-1]
    piece_first = np.flatnonzero(new_piece)
    piece_lengths = np.diff(np.r_[piece_first, len(timestamp)])
    piece_split = event_split[piece_first]
    return ([(piece_first[piece_split == code], piece_lengths[piece_split == code]) for code in range(3)],
            boundaries, moved)


def _heldout_split(codes: np.ndarray, timestamps: np.ndarray, lengths: np.ndarray, remap: np.ndarray,
                   min_length: int) -> SessionSplit:
    """Map to train item indices, drop unknown items, then sessions left shorter than `min_length`."""
    mapped = remap[codes]
    known = mapped >= 0
    session_of_event = np.repeat(np.arange(len(lengths)), lengths)
    kept_lengths = np.bincount(session_of_event[known], minlength=len(lengths))
    long_enough = kept_lengths >= min_length
    keep = known & long_enough[session_of_event]
    return SessionSplit(items=mapped[keep], offsets=_offsets(kept_lengths[long_enough]),
                        timestamps=timestamps[keep])


def _take_(keep: np.ndarray, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Replace each array of the list by its rows where `keep`, one at a time: when the list holds the only
    references, each old array is freed as soon as its copy exists (at 25M events, hundreds of MB less)."""
    for index in range(len(arrays)):
        arrays[index] = arrays[index][keep]
    return arrays


def prepare(interactions: Interactions, config: PrepareConfig, *,
            log: Callable[[str], None] | None = None) -> PreparedDataset:
    """Run the whole protocol in memory; raises InputError naming the stage that empties a split."""
    # Longer than most (70 lines), on purpose: the protocol's stages in the order the module
    # docstring gives them, each one call and one log line; split up, the order would be harder to audit.
    stages = _Stages(log)
    stages.record("loaded", len(interactions))
    order = np.lexsort((interactions.timestamp, interactions.user))  # stable: ties keep file order
    user, item = interactions.user[order], interactions.item[order]
    timestamp = interactions.timestamp[order]
    row = order.astype(np.int32) if len(order) < 2**31 else order  # the file row: a tie-break key only
    del order
    session = sessionize(user, timestamp, config.session_gap, interactions.sessionised)
    stages.record("sessionised", len(item), int(session[-1]) + 1)
    if config.remove_consecutive_duplicates:
        keep = np.ones(len(item), dtype=bool)
        keep[1:] = (session[1:] != session[:-1]) | (item[1:] != item[:-1])
        columns = [user, item, timestamp, row, session]
        del user, item, timestamp, row, session
        user, item, timestamp, row, session = _take_(keep, columns)
        del columns
        stages.record("consecutive duplicates removed", len(item))
    keep, passes = support_filter(session, item, len(interactions.item_ids), config.min_item_support,
                                  config.min_session_length)
    columns = [user, item, timestamp, row, session]
    del user, item, timestamp, row, session
    user, item, timestamp, row, session = _take_(keep, columns)
    del columns
    if len(item) == 0:
        raise InputError(f"the support filter ({{min_item_support}} {config.min_item_support}, {{min_session_length}} "
                         f"{config.min_session_length}) removed every event; lower them",
                         "min_item_support", "min_session_length")
    first = np.flatnonzero(np.r_[True, session[1:] != session[:-1]])
    del session
    lengths = np.diff(np.r_[first, len(item)])
    stages.record(f"support filter ({passes} passes)", len(item), len(first), int(len(np.unique(item))))

    start = timestamp[first]
    temporal = np.lexsort((row[first], user[first], start))  # by start, then user, then file row
    labels = _split_labels(start, temporal, float(timestamp.max()), config)
    for code, name in enumerate(SPLITS):
        if not np.any(labels == code):
            rule = (f"{{test_days}} {config.test_days:g}: the last {config.test_days:g} days are test and the "
                    f"{config.test_days:g} before them valid" if config.test_days is not None
                    else f"{{test_fraction}} {config.test_fraction}")
            raise InputError(f"the temporal split leaves the {name} split empty ({len(first)} sessions; {rule})",
                             "test_days", "test_fraction")
    pieces, boundaries, moved = cut_at_boundaries(labels, temporal, first, lengths, timestamp)
    del labels, temporal, start
    parts = {}
    for code, name in enumerate(SPLITS):
        piece_first, piece_lengths = pieces[code]
        long_enough = piece_lengths >= config.min_session_length  # a cut can leave a piece too short
        piece_first, piece_lengths = piece_first[long_enough], piece_lengths[long_enough]
        order = np.lexsort((row[piece_first], user[piece_first], timestamp[piece_first]))  # by start, user, row
        events = concat_ranges(piece_first[order], piece_lengths[order])
        parts[name] = (item[events], timestamp[events], piece_lengths[order])
        if len(order) == 0:
            raise InputError(f"the {name} split is empty once sessions are cut at the split boundaries")
    del item, timestamp, user, row
    stages.record(f"cut at the split boundaries ({moved:,} events moved to a later split)",
                  sum(int(p[2].sum()) for p in parts.values()), sum(len(p[2]) for p in parts.values()))

    train_codes, train_times, train_lengths = parts.pop("train")
    codes_in_order, first_seen = np.unique(train_codes, return_index=True)
    codes_in_order = codes_in_order[np.argsort(first_seen)]  # item index = order of first appearance
    remap = np.full(len(interactions.item_ids), -1, dtype=np.int32)  # item indices as SessionSplit keeps them
    remap[codes_in_order] = np.arange(len(codes_in_order))
    splits = {"train": SessionSplit(remap[train_codes], _offsets(train_lengths), train_times)}
    del train_codes, train_times
    unseen = {}
    for name in ("valid", "test"):
        codes, _, lengths = parts[name]
        missing = remap[codes] < 0  # items no train event has: news articles that appear after the boundary
        unseen[name] = {"events_before": int(len(codes)), "sessions_before": int(len(lengths)),
                        "events_of_unseen_items": int(missing.sum()),
                        "unseen_items": int(len(np.unique(codes[missing])))}
        splits[name] = _heldout_split(*parts.pop(name), remap, config.min_session_length)
        if splits[name].n_sessions == 0:
            raise InputError(f"the {name} split is empty after dropping items not seen in train and sessions "
                             f"shorter than {config.min_session_length}")
    for name in SPLITS:
        stages.record(f"{name} split", splits[name].n_events, splits[name].n_sessions)
        if name in unseen:
            u = unseen[name]
            stages.note(f"  {name}: {u['events_of_unseen_items']:,} of its {u['events_before']:,} events were of "
                        f"{u['unseen_items']:,} items unseen in train, dropped with the sessions left too short "
                        f"(of {u['sessions_before']:,} sessions)")

    item_ids = interactions.item_ids[codes_in_order]
    support = np.bincount(splits["train"].items, minlength=len(item_ids)).astype(np.int64)
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library_version": library_version(),
        "source": interactions.source,
        "prepare_config": dataclasses.asdict(config),
        # an already-sessionised file (GRU4Rec TSV, RecBole with session ids) keeps its own sessions
        "session_gap_applied": config.session_gap is not None and not interactions.sessionised,
        "split": {"rule": SPLIT_RULE, "valid_from": boundaries[0], "test_from": boundaries[1],
                  "events_moved_to_a_later_split": moved, "unseen_in_train": unseen},
        "n_items": len(item_ids),
        "splits": {name: splits[name].summary() for name in SPLITS},
        "stages": stages.rows,
        "fingerprint": content_fingerprint(splits, item_ids, support),
    }
    return PreparedDataset(splits=splits, item_ids=item_ids, support=support, meta=meta)
