"""The rank report under torchrun: a block source whose blocks every rank helps compute.

:class:`SharedSource` wraps an ``analysis.logprobs.LogProbMatrix`` for :mod:`analysis.engines`.
Its work is cut into the tiles that one process computes anyway, and each rank computes one
contiguous run of whole tiles, all-gathered after
(:func:`softmax_bottleneck.distributed.share_tiles`): the column tiles of every block an engine
asks for (TILE_COLUMNS items, with the block's own row tiles) and the row tiles of the
normalisers. A tile's numbers do not depend on which rank computes it, so every rank holds the
block one process computes, bit for bit, and the report is the single process's to the byte.
Tiles are the unit: a block narrower than two column tiles, or normalisers of fewer than two row
tiles (up to 2,048 contexts on the CPU), are computed by one rank.

Shared out: the log-probabilities (the work that grows with K × N × M), the Gram matrix's row
panels (:func:`analysis.gram.add_upper_gram`, then one all-reduce) and the expressive sweep's
fits (:func:`analysis.expressive.expressive_sweep`). Repeated by every rank, so that each has the
single process's numbers without another exchange: the held-out contexts, the eigenvalues, a direct
SVD and the QR of a refinement.
"""

from __future__ import annotations

import numpy as np

from softmax_bottleneck import distributed

from .logprobs import TILE_COLUMNS, require_memory


class SharedSource:
    """A block source whose blocks are computed by every rank of the job together (see the module)."""

    def __init__(self, source):
        self.source, self.shape = source, source.shape
        source.normalisers(share=distributed.share_tiles)  # row tiles of the normalisers, shared out

    @property
    def has_factors(self) -> bool:
        return self.source.has_factors

    def factors(self):
        return self.source.factors()

    def columns(self, start: int, stop: int, row_stop: int | None = None, row_start: int = 0, out=None) -> np.ndarray:
        """A[row_start:row_stop, start:stop], its column tiles shared out (with the block's row tiles, so that
        each tile is the one a single process computes); `out` is not used: the block is a new array."""
        row_stop = self.shape[0] if row_stop is None else row_stop
        width = stop - start
        tile_rows = self.source.row_tile(width)
        return distributed.share_tiles(width, min(width, TILE_COLUMNS), lambda first, last: self.source.columns(
            start + first, start + last, row_stop=row_stop, row_start=row_start, tile_rows=tile_rows), axis=1)

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.columns(0, self.shape[1], row_stop=stop, row_start=start)

    def dense(self) -> np.ndarray:
        n_rows, n_cols = self.shape
        require_memory(8.0 * n_rows * n_cols, f"a dense {n_rows:,} × {n_cols:,} float64 log-prob matrix")
        return self.columns(0, n_cols)


def shared(source):
    """`source` wrapped so that torchrun's ranks share the computing of its blocks; itself outside torchrun, and
    an array (whose blocks every rank already holds)."""
    computed = hasattr(source, "normalisers")
    return SharedSource(source) if computed and distributed.active() and distributed.world_size() > 1 else source
