"""The context × item log-probability matrix ``A[c, i] = log p(i | c)`` of a trained model, in float64.

Contexts are held-out session prefixes: the model's state after each event of a split that has a
next item (the same contexts the evaluation scores), optionally a seeded random sample of them.
The sample's order is random, so its first ``n`` rows are themselves a random sample (used for
rank as the number of contexts grows).

The matrix is never required in memory: :class:`LogProbMatrix` hands out row blocks or column
blocks of exact float64 log-probabilities (per-row normalisers are computed once), its dense
form only on request and after a memory check, and the exact factorisation of a one-expert head
(softmax).
"""

from __future__ import annotations

import copy
import dataclasses
import os

import numpy as np
import torch

from softmax_bottleneck.errors import InputError
from softmax_bottleneck.data import SessionSplit
from softmax_bottleneck.heads import Head
from softmax_bottleneck.model import GRU4Rec
from softmax_bottleneck.replay import replay_split


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


def distinct_prefixes(contexts: Contexts, split) -> int:
    """How many different item sequences the contexts' prefixes are. Two contexts with one prefix have one
    state, so one row of the log-prob matrix: no head's rank on these contexts can exceed this count.

    >>> from softmax_bottleneck.data import SessionSplit
    >>> split = SessionSplit(np.array([4, 5, 6, 4, 5, 7]), np.array([0, 3, 6]), np.zeros(6))
    >>> c = Contexts(np.zeros((4, 1)), np.array([0, 0, 1, 1]), np.array([1, 2, 1, 2]), np.zeros(4), np.zeros(4))
    >>> distinct_prefixes(c, split)  # (4,), (4, 5), (4,), (4, 5)
    2
    """
    starts = split.offsets[contexts.sessions]
    return len({split.items[start:start + length].tobytes() for start, length in zip(starts, contexts.positions)})


def collect_contexts(model: GRU4Rec, split: SessionSplit, *, batch_size: int = 512,
                     device: torch.device | str = "cpu") -> Contexts:
    """Run `model` over every held-out session from a zero state; keep the state at each prefix."""
    if split.n_transitions == 0:
        raise InputError("the split has no next-item events, so no contexts")
    parts = [(block.output.float().cpu().numpy(), block.sessions, block.positions, block.previous_items, block.targets)
             for block in replay_split(model, split, batch_size=batch_size, device=device)]
    columns = [np.concatenate(c) for c in zip(*parts)]
    order = np.lexsort((columns[2], columns[1]))  # by session, then position: independent of batch size
    return Contexts(*(c[order] for c in columns))


def sample_order(n_contexts: int, max_contexts: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded random sample (in random order) of at most `max_contexts` of `n_contexts`
    contexts sorted by session and position: the one sample every analysis draws."""
    if max_contexts is not None and max_contexts > n_contexts:
        raise InputError(f"{{max_contexts}} {max_contexts} is more than the {n_contexts} contexts this split has",
                         "max_contexts")
    return np.random.default_rng(seed).permutation(n_contexts)[:max_contexts]


def sample_contexts(contexts: Contexts, max_contexts: int | None, seed: int) -> Contexts:
    """A seeded random sample (in random order) of at most `max_contexts` contexts (see sample_order)."""
    return contexts.take(sample_order(len(contexts), max_contexts, seed))


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
                         "available; lower {max_contexts}", "max_contexts")


TILE_COLUMNS = 512  # items per tile of logits
TILE_BYTES = {"cpu": 8 << 20, "cuda": 256 << 20}  # one expert's tile: fits the cache of a CPU


class LogProbMatrix:
    """Exact float64 log-probabilities of a head over given contexts, served in blocks.

    Softmax and MoS are mixtures ``log p(i | c) = logsumexp_k(log π_k(c) + s_k(c)·g_i − lse_k(c))``
    (softmax: K = 1, π = 1; see ``Head.expert_factors``). Two passes over tiles of logits that
    stay in cache, computed into reused buffers (no allocation per tile): the normalisers
    lse_k(c) once, by an online logsumexp over item tiles; then any block of log-probabilities,
    with log π_k − lse_k folded into the GEMM and the experts mixed in log space.

    Any other head (sigsoftmax, …) is served by its own ``Head.scores`` on item tiles, in float64:
    ``log p(i | c) = u(c, i) − logsumexp_j u(c, j)``, with the normaliser again computed once by
    the same online logsumexp. A new head of that form needs nothing here.
    """

    def __init__(self, head: Head, hidden: np.ndarray, *, name: str = "model", device: torch.device | str = "cpu",
                 tile_bytes: int | None = None):
        self.head = _float64_copy(head).to(device)
        self.hidden = torch.as_tensor(np.asarray(hidden), dtype=torch.float64, device=device)  # (N, d)
        self.name, self.device = name, device
        self.mixture = type(self.head).expert_factors is not Head.expert_factors
        self.n_experts = getattr(self.head, "n_experts", 1)
        self.tile_elements = (tile_bytes or TILE_BYTES.get(torch.device(device).type, TILE_BYTES["cpu"])) // 8
        with torch.no_grad():
            items = self.head.item_factors()
            self.items = torch.cat([items, torch.ones_like(items[:, :1])], dim=1).contiguous()  # [g_i, 1]
        self._normalisers = None

    def _scores(self, first: int, last: int, start: int, stop: int) -> torch.Tensor:
        """A non-mixture head's log-scores u of contexts first:last for items start:stop."""
        items = torch.arange(start, stop, device=self.device)
        return self.head.scores(self.hidden[first:last], items)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.hidden), self.head.n_items

    def _refuse(self) -> None:
        raise InputError(f"the {self.name} ({type(self.head).__name__}) gives non-finite log-probabilities; "
                         "refusing to analyse them")

    def _tiles(self, n_cols: int) -> tuple[int, int]:
        """(rows, columns) of a tile of logits of at most `tile_elements` entries."""
        columns = max(1, min(n_cols, TILE_COLUMNS))
        return max(1, self.tile_elements // columns), columns

    def _buffers(self, count: int, rows: int, columns: int) -> list[torch.Tensor]:
        return [torch.empty(rows * columns, dtype=torch.float64, device=self.device) for _ in range(count)]

    def row_tile(self, n_cols: int) -> int:
        """Rows of a tile of a block `n_cols` wide (the normalisers': all the items wide). Rows are computed
        tile by tile from a block's first row, so row runs that start on a tile boundary reproduce the whole
        block's bits (analysis.sharded)."""
        return self._tiles(n_cols)[0]

    @torch.no_grad()
    def normalisers(self, share=None) -> torch.Tensor:
        """lse_k(c) over all items: (N, K), computed once. `share` (softmax_bottleneck.distributed.share_rows,
        under torchrun): which rank computes which row tiles."""
        if self._normalisers is not None:
            return self._normalisers
        n_rows, n_items = self.shape
        if share is None:
            out = self._normaliser_rows(0, n_rows)
        else:
            rows = self.row_tile(n_items)
            out = torch.from_numpy(share(n_rows, rows, lambda first, last: self._normaliser_rows(first, last)
                                         .cpu().numpy())).to(self.device)  # tiles of whole rows: the same bits
        if not torch.isfinite(out).all():
            self._refuse()
        self._normalisers = out
        return out

    def _normaliser_rows(self, row_start: int, row_stop: int) -> torch.Tensor:
        """lse_k(c) of contexts row_start:row_stop, tile by tile from row_start: (row_stop - row_start, K)."""
        n_items = self.shape[1]
        n_experts = self.n_experts
        rows, columns = self._tiles(n_items)
        out = torch.empty(row_stop - row_start, n_experts, dtype=torch.float64, device=self.device)
        buffer, = self._buffers(1, rows, columns)
        items = self.items[:, :-1]
        for first in range(row_start, row_stop, rows):
            last = min(first + rows, row_stop)
            if self.mixture:
                _, states = self.head.expert_factors(self.hidden[first:last])  # (K, R, r)
            top = torch.full((n_experts, last - first), -torch.inf, dtype=torch.float64, device=self.device)
            total = torch.zeros_like(top)
            for start in range(0, n_items, columns):
                stop = min(start + columns, n_items)
                logits = buffer[:(last - first) * (stop - start)].view(last - first, stop - start)
                for k in range(n_experts):  # online logsumexp: rescale the running sum to the new maximum
                    if self.mixture:
                        torch.matmul(states[k], items[start:stop].T, out=logits)
                    else:  # the head's own scores, a fresh tensor: used in place, not copied into the buffer
                        logits = self._scores(first, last, start, stop)
                    new_top = torch.maximum(top[k], logits.amax(dim=1))
                    total[k].mul_((top[k] - new_top).exp_()).add_(logits.sub_(new_top[:, None]).exp_().sum(dim=1))
                    top[k] = new_top
            out[first - row_start:last - row_start] = (total.log_() + top).T
        return out

    @torch.no_grad()
    def rows(self, start: int, stop: int) -> np.ndarray:
        """A[start:stop, :] as float64, (stop - start, n_items)."""
        return self.columns(0, self.head.n_items, row_stop=stop, row_start=start)

    @torch.no_grad()
    def columns(self, start: int, stop: int, row_stop: int | None = None, row_start: int = 0,
                out: np.ndarray | None = None, tile_rows: int | None = None) -> np.ndarray:
        """A[row_start:row_stop, start:stop] as float64, written into `out` (a reusable buffer) if given.

        Computed in tiles of `tile_rows` rows (default: :meth:`row_tile` of the block's width) and of
        TILE_COLUMNS items from `start`: a run of whole column tiles of a block, computed with the block's
        `tile_rows`, has the whole block's bits there (analysis.sharded)."""
        row_stop = len(self.hidden) if row_stop is None else row_stop
        shape = (row_stop - row_start, stop - start)
        if out is not None and (out.shape[0] < shape[0] or out.shape[1] < shape[1] or out.dtype != np.float64):
            raise ValueError(f"the buffer {out.shape} {out.dtype} cannot hold a float64 block of {shape}")
        out = np.empty(shape) if out is None else out[:shape[0], :shape[1]]
        on_cpu = torch.device(self.device).type == "cpu"
        target = torch.from_numpy(out) if on_cpu else torch.empty(shape, dtype=torch.float64, device=self.device)
        normalisers, n_experts = self.normalisers(), self.n_experts
        rows, columns = self._tiles(shape[1])
        rows = tile_rows or rows
        buffers = self._buffers(n_experts + (n_experts > 1), rows, columns)
        for first in range(row_start, row_stop, rows):
            last = min(first + rows, row_stop)
            if not self.mixture:
                for begin in range(start, stop, columns):
                    end = min(begin + columns, stop)
                    result = self._scores(first, last, begin, end).sub_(normalisers[first:last])
                    if not torch.isfinite(result.sum()):
                        self._refuse()
                    target[first - row_start:last - row_start, begin - start:end - start] = result
                continue
            log_prior, states = self.head.expert_factors(self.hidden[first:last])
            offsets = (log_prior - normalisers[first:last]).T[..., None]  # (K, R, 1)
            left = torch.cat([states, offsets], dim=-1)  # [s_k, log π_k − lse_k]
            for begin in range(start, stop, columns):
                end = min(begin + columns, stop)
                tiles = [b[:(last - first) * (end - begin)].view(last - first, end - begin) for b in buffers]
                for k in range(n_experts):
                    torch.matmul(left[k], self.items[begin:end].T, out=tiles[k])
                result = tiles[0] if n_experts == 1 else _mix_(tiles[:-1], tiles[-1])
                if not torch.isfinite(result.sum()):  # log-probs are ≤ 0 and bounded: the sum is finite iff all are
                    self._refuse()
                target[first - row_start:last - row_start, begin - start:end - start] = result
        if not on_cpu:
            out[...] = target.cpu().numpy()
        return out

    @torch.no_grad()
    def factors(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(F, G) with A = F·Gᵀ (one expert: ``[s, −lse]·[g, 1]ᵀ``), else None."""
        if not self.has_factors:
            return None
        _, states = self.head.expert_factors(self.hidden)
        left = torch.cat([states[0], -self.normalisers()], dim=1)
        return left.cpu().numpy(), self.items.cpu().numpy()

    @property
    def has_factors(self) -> bool:
        """One expert (softmax, or MoS with K = 1): the exact factorisation behind the d+2 cap."""
        return self.mixture and self.n_experts == 1

    def dense(self) -> np.ndarray:
        n_rows, n_items = self.shape
        require_memory(8.0 * n_rows * n_items, f"a dense {n_rows:,} × {n_items:,} float64 log-prob matrix")
        return self.columns(0, n_items)


def _mix_(tiles: list[torch.Tensor], top: torch.Tensor) -> torch.Tensor:
    """logsumexp over the experts' tiles of log π_k + log p_k, in place (the first tile holds the result)."""
    torch.maximum(tiles[0], tiles[1], out=top)
    for tile in tiles[2:]:
        torch.maximum(top, tile, out=top)
    total = tiles[0].sub_(top).exp_()
    for tile in tiles[1:]:
        total.add_(tile.sub_(top).exp_())
    return total.log_().add_(top)


def _float64_copy(head: Head) -> Head:
    """The head in float64 (a copy: the model itself stays as trained)."""
    return copy.deepcopy(head).double().eval()
