"""Singular values of (possibly huge) float64 matrices, by three engines that agree on the rank.

- ``factored``: the matrix is given as ``F·Gᵀ`` with few columns (a softmax head's log-prob matrix is
  ``[H, −lse, 1]·[W, 1, b]ᵀ``). ``σ(F·Gᵀ) = σ(R_F·R_Gᵀ)`` from two thin QRs: exact, O((N+M)·r²).
- ``direct``: LAPACK SVD of the dense matrix.
- ``gram``: the smaller Gram matrix (``A·Aᵀ`` from column blocks, or ``Aᵀ·A`` from row blocks) in
  float64, then ``eigvalsh``: one streamed pass, BLAS-3 throughout. A Gram matrix resolves only
  σ ≳ 1.5e-8·σ_max. When every σ is above ``RESOLVED``·σ_max (100× that floor) its values stand
  (relative error ≲ eps·σ_max²/σ², below 1e-7 above 1e-4·σ_max). Otherwise the spectrum is
  recomputed exactly (``gram+qr``): a blocked QR of the streamed matrix (backward stable, never
  squared), whose R has the same singular values as A, accurate to ~eps·σ_max like a direct SVD.
  (Projecting A on the small eigenvectors is not enough: those eigenvectors lean towards the
  directions just above the cut by ~eps·σ_max²/σ_cut², which leaks ~1e-10·σ_max into the bottom.)

Sources hand out blocks (:class:`DenseSource` wraps an array; ``analysis.logprobs.LogProbMatrix``
computes a head's log-probabilities on demand), so the Gram engine never holds the matrix.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

RESOLVED = 1e-6  # Gram-derived singular values below RESOLVED·σ_max are recomputed by projection
EPS = np.finfo(np.float64).eps


class Source(Protocol):
    shape: tuple[int, int]

    def rows(self, start: int, stop: int) -> np.ndarray: ...

    def columns(self, start: int, stop: int, row_stop: int | None = None) -> np.ndarray: ...


class DenseSource:
    """An in-memory matrix behind the block interface."""

    def __init__(self, matrix: np.ndarray):
        self.matrix = np.asarray(matrix, dtype=np.float64)
        self.shape = self.matrix.shape

    def rows(self, start, stop):
        return self.matrix[start:stop]

    def columns(self, start, stop, row_stop=None):
        return self.matrix[:row_stop, start:stop]

    def dense(self):
        return self.matrix


@dataclasses.dataclass
class Spectrum:
    """Singular values (descending, float64) of an (n_rows, n_cols) matrix and how they were obtained."""

    values: np.ndarray
    shape: tuple[int, int]
    engine: str
    refined: int = 0  # values recomputed by projection (Gram engine)


def rank_threshold(values: np.ndarray, shape: tuple[int, int], tol: float | None = None,
                   rtol: float | None = None) -> float:
    """The cut-off ``np.linalg.matrix_rank`` uses: `tol`, else σ_max·`rtol`, else σ_max·max(N, M)·eps."""
    if tol is not None and rtol is not None:
        raise ValueError("give tol or rtol, not both")
    if tol is not None:
        return float(tol)
    if rtol is None:
        rtol = max(shape) * EPS
    return float(values[0] * rtol) if len(values) else 0.0


def count_above(values: np.ndarray, threshold: float) -> int:
    return int(np.count_nonzero(values > threshold))


def _descending(values: np.ndarray, length: int) -> np.ndarray:
    """Sorted descending and padded with exact zeros to `length` (the rest of min(N, M))."""
    values = np.sort(np.asarray(values, dtype=np.float64))[::-1]
    return np.concatenate([values, np.zeros(max(0, length - len(values)))])


def factored_spectrum(left: np.ndarray, right: np.ndarray, r_right: np.ndarray | None = None) -> Spectrum:
    """σ(left·rightᵀ) from two thin QRs; left (N, r), right (M, r); `r_right` reuses right's R factor."""
    shape = (left.shape[0], right.shape[0])
    r_left = np.linalg.qr(left, mode="r")
    r_right = np.linalg.qr(right, mode="r") if r_right is None else r_right
    values = np.linalg.svd(r_left @ r_right.T, compute_uv=False)
    return Spectrum(_descending(values, min(shape)), shape, "factored")


def direct_spectrum(matrix: np.ndarray) -> Spectrum:
    values = np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False)
    return Spectrum(_descending(values, min(matrix.shape)), matrix.shape, "direct")


@dataclasses.dataclass
class _GramProblem:
    """One Gram eigenproblem: the first `row_stop` rows of A, centred or not."""

    gram: np.ndarray | None
    row_stop: int
    centred: bool
    values: np.ndarray | None = None  # singular values from the Gram matrix
    unresolved: int = 0  # how many sit below RESOLVED·scale
    r_factor: np.ndarray | None = None  # running R of a blocked QR of the matrix itself, when needed

    def solve(self, scale: float | None = None) -> float:
        """eigvalsh of the Gram; count values below RESOLVED·scale (default: own σ_max). Returns σ_max."""
        values = np.sqrt(np.clip(np.linalg.eigvalsh(self.gram), 0.0, None))
        top = float(values[-1]) if len(values) else 0.0
        self.unresolved = int(np.count_nonzero(values < RESOLVED * (top if scale is None else scale)))
        self.values, self.gram = values, None
        return top

    def absorb(self, block: np.ndarray) -> None:
        """Fold more rows of the matrix (or of its transpose) into the running R: a QR that never squares."""
        stacked = block if self.r_factor is None else np.vstack([self.r_factor, block])
        self.r_factor = np.linalg.qr(stacked, mode="r")

    def spectrum(self, n_cols: int) -> Spectrum:
        shape = (self.row_stop, n_cols)
        if self.unresolved:  # the Gram could not resolve the bottom: the QR's values replace them all
            values = np.linalg.svd(self.r_factor, compute_uv=False)
            return Spectrum(_descending(values, min(shape)), shape, "gram+qr", self.unresolved)
        return Spectrum(_descending(self.values, min(shape)), shape, "gram", 0)


def gram_spectra(source: Source, row_stops: list[int], *, block_size: int = 2048) -> dict[tuple[bool, int], Spectrum]:
    """Spectra of A[:n] and of its row-centred version, for every n in `row_stops`, in streamed passes.

    Returns {(centred, n): Spectrum}. One pass builds the Gram matrices; one more pass refines
    the directions a Gram matrix cannot resolve, only if there are any.
    """
    n_rows, n_cols = source.shape
    stops = sorted(set(row_stops))
    if n_rows <= n_cols:
        problems, refine_pass = _gram_by_columns(source, stops, block_size)
    else:
        problems, refine_pass = _gram_by_rows(source, stops, block_size)
    pending = [p for p in problems.values() if p.unresolved]
    if pending:
        refine_pass(pending)
    return {key: problem.spectrum(n_cols) for key, problem in problems.items()}


def add_lower_gram(gram: np.ndarray, block: np.ndarray, panel: int = 512) -> None:
    """gram += block·blockᵀ on and below the diagonal only, by GEMMs on row panels.

    Half the flops of ``block @ block.T`` (which BLAS computes in full here; dsyrk is no faster).
    """
    for first in range(0, len(block), panel):
        last = min(first + panel, len(block))
        gram[first:last, :last] += block[first:last] @ block[:last].T


def mirror_lower(gram: np.ndarray) -> None:
    upper = np.triu_indices(len(gram), k=1)
    gram[upper] = gram.T[upper]


def _gram_by_columns(source, stops, block_size):
    """N ≤ M: G = A·Aᵀ (N × N) from column blocks; A[:n]·A[:n]ᵀ is its leading principal block, and
    the row-centred Gram is G − M·m·mᵀ with m the row means."""
    n_rows, n_cols = source.shape
    top = stops[-1]
    gram, row_sums = np.zeros((top, top)), np.zeros(top)
    for start in range(0, n_cols, block_size):
        block = source.columns(start, min(start + block_size, n_cols), row_stop=top)  # (top, b)
        add_lower_gram(gram, block)
        row_sums += block.sum(axis=1)
    mirror_lower(gram)
    means = row_sums / n_cols
    problems, scale = {}, None
    for n in reversed(stops):  # the largest first: its σ_max sets the resolution scale
        for centred in (False, True):
            sub = gram[:n, :n] - n_cols * np.outer(means[:n], means[:n]) if centred else gram[:n, :n]
            problem = _GramProblem(sub, n, centred)
            top_value = problem.solve(scale)  # the centred Gram came from a subtraction at this scale
            scale = top_value if scale is None else scale
            problems[(centred, n)] = problem
    del gram

    def refine(pending):
        for start in range(0, n_cols, block_size):
            block = source.columns(start, min(start + block_size, n_cols), row_stop=top)
            for problem in pending:
                rows = block[:problem.row_stop]
                if problem.centred:
                    rows = rows - means[:problem.row_stop, None]
                problem.absorb(rows.T)  # (b, n): rows of Aᵀ

    return problems, refine


def _centre(block: np.ndarray) -> np.ndarray:
    return block - block.mean(axis=1, keepdims=True)


def _gram_by_rows(source, stops, block_size):
    """N > M: G = Aᵀ·A (M × M) from row blocks (centred blocks for the centred Gram); a snapshot at
    every stop."""
    n_cols = source.shape[1]
    grams = {False: np.zeros((n_cols, n_cols)), True: np.zeros((n_cols, n_cols))}
    problems, start = {}, 0
    for stop in stops:
        while start < stop:
            end = min(start + block_size, stop)
            block = source.rows(start, end)
            grams[False] += block.T @ block
            centred = _centre(block)
            grams[True] += centred.T @ centred
            start = end
        for variant in (False, True):  # built from exact (centred) blocks: resolution is its own σ_max
            problems[(variant, stop)] = _GramProblem(grams[variant], stop, variant)
            problems[(variant, stop)].solve()
    del grams

    def refine(pending):
        last = max(p.row_stop for p in pending)
        for begin in range(0, last, block_size):
            block = source.rows(begin, min(begin + block_size, last))
            centred = _centre(block)
            for problem in pending:
                rows = (centred if problem.centred else block)[:max(0, problem.row_stop - begin)]
                if len(rows):
                    problem.absorb(rows)  # (b, M)

    return problems, refine
