"""The context × item log-probability matrix ``A[c, i] = log p(i | c)`` of a trained model, in float64.

Contexts are held-out session prefixes: the model's state after each event of a split that has a
next item (the same contexts the evaluation scores), optionally a seeded random sample of them.
The sample's order is random, so its first ``n`` rows are themselves a random sample (used for
rank as the number of contexts grows).

The matrix is never required in memory: :class:`LogProbMatrix` hands out row blocks or column
blocks of exact float64 log-probabilities (per-row normalisers are computed once), its dense
form only on request and after a memory check, and the head's exact factorisation where it has
one (softmax).
"""

from __future__ import annotations

import copy
import dataclasses
import os

import numpy as np
import torch

from softmax_bottleneck.cli import InputError
from softmax_bottleneck.data import SessionSplit, session_parallel_batches
from softmax_bottleneck.heads import Head
from softmax_bottleneck.model import GRU4Rec, carry_state


@dataclasses.dataclass
class Contexts:
    """Held-out prefixes: the model state after each one and what it is made of."""

    hidden: np.ndarray  # (n, d) float32 head input (the last GRU layer's output)
    sessions: np.ndarray  # (n,) session index in the split
    positions: np.ndarray  # (n,) position of the next item (the prefix is events [0, position))
    previous_items: np.ndarray  # (n,) item index of the prefix's last event
    targets: np.ndarray  # (n,) item index of the next event

    def __len__(self) -> int:
        return len(self.sessions)

    def take(self, index: np.ndarray) -> "Contexts":
        return Contexts(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))

    def key(self) -> np.ndarray:
        """(n, 2) session and position, to check two models were given the same contexts."""
        return np.stack([self.sessions, self.positions], axis=1)


@torch.no_grad()
def collect_contexts(model: GRU4Rec, split: SessionSplit, *, batch_size: int = 512,
                     device: torch.device | str = "cpu") -> Contexts:
    """Run `model` over every held-out session from a zero state; keep the state at each prefix."""
    if split.n_transitions == 0:
        raise InputError("the split has no next-item events, so no contexts")
    model.eval()
    hidden = model.init_hidden(min(batch_size, split.n_sessions), device)
    parts = []
    for batch in session_parallel_batches(split, batch_size):
        hidden = carry_state(hidden, batch.keep, batch.reset)
        output, hidden = model.step(torch.from_numpy(batch.inputs).to(device), hidden)
        parts.append((output.float().cpu().numpy(), batch.sessions, batch.positions, batch.inputs, batch.targets))
    columns = [np.concatenate(c) for c in zip(*parts)]
    order = np.lexsort((columns[2], columns[1]))  # by session, then position: independent of batch size
    return Contexts(*(c[order] for c in columns))


def sample_contexts(contexts: Contexts, max_contexts: int | None, seed: int) -> Contexts:
    """A seeded random sample (in random order) of at most `max_contexts` contexts."""
    if max_contexts is not None and max_contexts > len(contexts):
        raise InputError(f"--max-contexts {max_contexts} is more than the {len(contexts)} contexts this split has")
    order = np.random.default_rng(seed).permutation(len(contexts))
    return contexts.take(order[:max_contexts] if max_contexts is not None else order)


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else physical memory."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def require_memory(n_bytes: float, what: str) -> None:
    available = available_memory_bytes()
    if n_bytes > 0.8 * available:
        raise InputError(f"{what} needs {n_bytes / 2**30:.1f} GiB but only {available / 2**30:.1f} GiB is "
                         "available; lower --max-contexts")


class LogProbMatrix:
    """Exact float64 log-probabilities of a head over given contexts, served in blocks."""

    def __init__(self, head: Head, hidden: np.ndarray, *, block_size: int = 1024, name: str = "model",
                 device: torch.device | str = "cpu"):
        self.head = _float64_copy(head).to(device)
        self.hidden = torch.as_tensor(np.asarray(hidden), dtype=torch.float64, device=device)  # (N, d)
        self.block_size, self.name, self.device = block_size, name, device
        self._normalisers = None

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.hidden), self.head.n_items

    def _check(self, block: torch.Tensor) -> np.ndarray:
        if not torch.isfinite(block).all():
            raise InputError(f"the {self.name} ({type(self.head).__name__}) gives non-finite log-probabilities; "
                             "refusing to analyse them")
        return block.cpu().numpy()

    @torch.no_grad()
    def normalisers(self) -> torch.Tensor:
        if self._normalisers is None:
            self._normalisers = self.head.log_normalisers(self.hidden, self._chunk_rows(self.head.n_items))
        return self._normalisers

    def _chunk_rows(self, n_cols: int) -> int:
        """Rows per computation so that a (K, rows, n_cols) float64 intermediate stays near 64 MiB.

        Measured: 16 MiB blocks fall under glibc's mmap threshold, fragment the heap and raised the
        peak RSS of a 4,096 × 20,000 MoS report from 0.8 to 2.7 GiB; 64 MiB blocks are mapped and
        returned to the system at each free."""
        return max(1, (64 << 20) // (8 * n_cols * getattr(self.head, "n_experts", 1)))

    @torch.no_grad()
    def rows(self, start: int, stop: int) -> np.ndarray:
        """A[start:stop, :] as float64, (stop - start, n_items)."""
        return self.columns(0, self.head.n_items, row_stop=stop, row_start=start)

    @torch.no_grad()
    def columns(self, start: int, stop: int, row_stop: int | None = None, row_start: int = 0) -> np.ndarray:
        """A[row_start:row_stop, start:stop] as float64."""
        row_stop = len(self.hidden) if row_stop is None else row_stop
        normalisers = self.normalisers()
        out = np.empty((row_stop - row_start, stop - start))
        step = self._chunk_rows(stop - start)
        for first in range(row_start, row_stop, step):
            last = min(first + step, row_stop)
            block = self.head.column_log_probs(self.hidden[first:last], slice(start, stop), normalisers[first:last])
            out[first - row_start:last - row_start] = self._check(block)
        return out

    @torch.no_grad()
    def factors(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(F, G) with A = F·Gᵀ for heads that have an exact factorisation, else None."""
        if not self.has_factors:
            return None
        left, right = self.head.log_prob_factors(self.hidden, self.normalisers())
        return self._check(left), self._check(right)

    @property
    def has_factors(self) -> bool:
        """A head with an analytic rank cap (softmax) has the exact factorisation behind that cap."""
        return self.head.rank_cap is not None

    def dense(self) -> np.ndarray:
        n_rows, n_items = self.shape
        require_memory(8.0 * n_rows * n_items, f"a dense {n_rows:,} × {n_items:,} float64 log-prob matrix")
        out = np.empty((n_rows, n_items))
        for start in range(0, n_rows, self.block_size):
            out[start:start + self.block_size] = self.rows(start, min(start + self.block_size, n_rows))
        return out


def _float64_copy(head: Head) -> Head:
    """The head in float64 (a copy: the model itself stays as trained)."""
    return copy.deepcopy(head).double().eval()
