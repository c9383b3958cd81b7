"""GRU4Rec's session-parallel mini-batches.

``batch_size`` slots each hold one session and advance one event per step. Sessions enter the
slots in order of their first event (never shuffled). When a slot's session runs out of
next-item targets, the next waiting session takes the slot and the model must zero that slot's
hidden state (``reset``); when no session is left, the slot is dropped and the batch shrinks
(``keep`` says which rows of the previous step's hidden state survive).

Usage with a recurrent model (``hidden`` has one row per active slot)::

    for batch in session_parallel_batches(split, batch_size=32):
        if batch.keep is not None:
            hidden = hidden[:, batch.keep]
        hidden[:, batch.reset] = 0
        ...  # predict batch.targets from batch.inputs
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from .prepared import SessionSplit


@dataclasses.dataclass(frozen=True)
class SessionBatch:
    """One step of the session-parallel iterator; arrays have one entry per active slot."""

    inputs: np.ndarray  # (n_active,) int64 item fed to the model at this step
    targets: np.ndarray  # (n_active,) int64 next item to predict
    reset: np.ndarray  # (n_active,) bool: this slot's session starts here; zero its hidden state
    keep: np.ndarray | None  # (n_active_before,) bool: rows of the previous state that survive; None = all
    sessions: np.ndarray  # (n_active,) int64 session index within the split
    positions: np.ndarray  # (n_active,) int64 position of the target in its session (1 .. length-1)


def session_order(split: SessionSplit) -> np.ndarray:
    """Session indices in order of first event (stable: stored order breaks ties)."""
    return np.argsort(split.start_times, kind="stable")


def session_parallel_batches(split: SessionSplit, batch_size: int) -> Iterator[SessionBatch]:
    """Yield every (input, target) transition of every session exactly once, in order per session."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = session_order(split)
    order = order[split.lengths[order] >= 2]  # a session needs a next item to take part
    offsets, items = split.offsets, split.items
    n_slots = min(batch_size, len(order))
    slot_session = order[:n_slots].copy()  # (n_active,) session held by each slot
    slot_pos = np.zeros(n_slots, dtype=np.int64)  # position of the slot's current input
    reset = np.ones(n_slots, dtype=bool)
    keep = None
    waiting = n_slots  # next index into `order`
    while len(slot_session):
        base = offsets[slot_session] + slot_pos
        yield SessionBatch(inputs=items[base].astype(np.int64), targets=items[base + 1].astype(np.int64),
                           reset=reset, keep=keep, sessions=slot_session.copy(), positions=slot_pos + 1)
        slot_pos = slot_pos + 1
        finished = np.flatnonzero(offsets[slot_session] + slot_pos + 1 >= offsets[slot_session + 1])
        reset = np.zeros(len(slot_session), dtype=bool)
        keep = None
        n_refill = min(len(finished), len(order) - waiting)
        refill, drop = finished[:n_refill], finished[n_refill:]
        slot_session = slot_session.copy()
        slot_session[refill] = order[waiting:waiting + n_refill]
        slot_pos[refill] = 0
        reset[refill] = True
        waiting += n_refill
        if len(drop):
            keep = np.ones(len(slot_session), dtype=bool)
            keep[drop] = False
            slot_session, slot_pos, reset = slot_session[keep], slot_pos[keep], reset[keep]
