"""Run a model over a held-out split: its state at every session prefix, block by block.

The one loop over a split (GRU4Rec's session-parallel mini-batches, each session from a zero
state): evaluation ranks, the contexts of the log-probability matrix, the KL to the synthetic
truth and the breakdowns all read the blocks it yields, so no analysis runs a model twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import torch

from .data import SessionSplit, session_parallel_batches
from .errors import InputError
from .model import GRU4Rec, carry_state


@dataclasses.dataclass
class ContextBlock:
    """One mini-batch of prefixes: the head input after each, and which event comes next."""

    output: torch.Tensor  # (batch, d) the last GRU layer's output, on the model's device
    sessions: np.ndarray  # (batch,) session index within the split
    positions: np.ndarray  # (batch,) position of the next item (the prefix is events [0, position))
    previous_items: np.ndarray  # (batch,) item index of the prefix's last event
    targets: np.ndarray  # (batch,) item index of the next event

    def rows(self, start: int, stop: int) -> "ContextBlock":
        """The prefixes start:stop of this block."""
        return ContextBlock(self.output[start:stop], self.sessions[start:stop], self.positions[start:stop],
                            self.previous_items[start:stop], self.targets[start:stop])


@torch.no_grad()
def replay_split(model: GRU4Rec, split: SessionSplit, *, batch_size: int = 512,
                 device: torch.device | str = "cpu") -> Iterator[ContextBlock]:
    """Yield a :class:`ContextBlock` per mini-batch; the model is put in eval mode (no dropout)."""
    if split.n_transitions == 0:
        raise InputError("the split has no next-item events")
    if batch_size < 1:
        raise InputError("{batch_size} must be >= 1, got " + str(batch_size), "batch_size")
    replay = getattr(model, "replay", None)
    if replay is not None:  # a model trained elsewhere (softmax_bottleneck.foreign) replays as its framework does
        yield from replay(split, batch_size=batch_size, device=device)
        return
    model.eval()
    hidden = model.init_hidden(min(batch_size, split.n_sessions), device)
    for batch in session_parallel_batches(split, batch_size):
        hidden = carry_state(hidden, batch.keep, batch.reset)
        output, hidden = model.step(torch.from_numpy(batch.inputs).to(device), hidden)
        yield ContextBlock(output, batch.sessions, batch.positions, batch.inputs, batch.targets)
