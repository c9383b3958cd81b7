"""The ``gram`` engine: singular values of a matrix too big to hold, from one streamed pass.

The smaller Gram matrix (``A·Aᵀ`` from column blocks, or ``Aᵀ·A`` from row blocks) in float64,
then its eigenvalues: one streamed pass, BLAS-3 throughout. The row-centred Gram is the
rank-one update ``G − M·m·mᵀ``: a Householder reflection turns m into e₁, and LAPACK's lower
tridiagonal reduction never touches e₁, so one reduction serves both spectra (their
tridiagonals differ only in the first entry; two O(n²) ``dsterf`` calls follow).
A Gram matrix resolves only σ ≳ 1.5e-8·σ_max. When every σ is above ``RESOLVED``·σ_max (100×
that floor) its values stand (relative error ≲ eps·σ_max²/σ², below 1e-7 above 1e-4·σ_max).
Otherwise the spectrum is recomputed exactly (``gram+qr``): a blocked QR of the streamed matrix
(backward stable, never squared), whose R has the same singular values as A, accurate to
~eps·σ_max like a direct SVD. (Projecting A on the small eigenvectors is not enough: those
eigenvectors lean towards the directions just above the cut by ~eps·σ_max²/σ_cut², which leaks
~1e-10·σ_max into the bottom.)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from scipy.linalg import blas, lapack

from softmax_bottleneck import distributed

from .spectrum import Source, Spectrum, _descending, clock

RESOLVED = 1e-6  # Gram-derived singular values below RESOLVED·σ_max trigger an exact recomputation (QR)


@dataclasses.dataclass
class _GramProblem:
    """One Gram eigenproblem: the first `row_stop` rows of A, centred or not."""

    row_stop: int
    centred: bool
    eigenvalues: np.ndarray | None = None  # of the Gram matrix, ascending
    values: np.ndarray | None = None  # singular values from the Gram matrix
    unresolved: int = 0  # how many sit below RESOLVED·scale
    r_factor: np.ndarray | None = None  # running R of a blocked QR of the matrix itself, when needed

    def resolve(self, scale: float | None = None) -> float:
        """Singular values from the eigenvalues; count those below RESOLVED·scale (default: own σ_max)."""
        values = np.sqrt(np.clip(self.eigenvalues, 0.0, None))
        top = float(values[-1]) if len(values) else 0.0
        self.unresolved = int(np.count_nonzero(values < RESOLVED * (top if scale is None else scale)))
        self.values, self.eigenvalues = values, None
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


def gram_spectra(source: Source, row_stops: list[int], *, block_size: int = 2048,
                 timings: dict | None = None) -> dict[tuple[bool, int], Spectrum]:
    """Spectra of A[:n] and of its row-centred version, for every n in `row_stops`, in streamed passes.

    Returns {(centred, n): Spectrum}. One pass builds the Gram matrices; one more pass refines
    the directions a Gram matrix cannot resolve, only if there are any. `timings` (if given)
    receives the seconds spent computing log-probs, Gram products, eigenvalues and refinements.
    """
    n_rows, n_cols = source.shape
    stops = sorted(set(row_stops))
    if n_rows <= n_cols:
        problems, refine_pass = _gram_by_columns(source, stops, block_size, timings)
    else:
        problems, refine_pass = _gram_by_rows(source, stops, block_size, timings)
    pending = [p for p in problems.values() if p.unresolved]
    if pending:
        with clock(timings, "refinement"):
            refine_pass(pending)
    return {key: problem.spectrum(n_cols) for key, problem in problems.items()}


def add_upper_gram(gram: np.ndarray, block: np.ndarray, panel: int = 512, mine=None) -> None:
    """gram += block·blockᵀ on and above the diagonal only, in place, by GEMMs on row panels.

    Half the flops of ``block @ block.T``; torch's in-place ``addmm_`` writes straight into the
    panels (no temporaries; measured 68 GFLOP/s-equivalent against 58 for NumPy's syrk here).
    `mine(p)`: whether this process computes panel p (torchrun: each panel on one rank; default all).
    """
    target, rows = torch.from_numpy(gram), torch.from_numpy(block)
    for index, first in enumerate(range(0, len(block), panel)):
        if mine is not None and not mine(index):
            continue
        last = min(first + panel, len(block))
        target[first:last, first:].addmm_(rows[first:last], rows[first:].T)


def eigenvalues_with_rank_one_update(gram: np.ndarray, vector: np.ndarray, weight: float
                                     ) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) of G and of G − weight·v·vᵀ, from one tridiagonal reduction.

    `gram` holds G in its upper triangle (C order) and is overwritten. A Householder reflection P
    maps v to ±‖v‖e₁; LAPACK's lower ``dsytrd`` reduces PGP by reflections that leave e₁ alone, so
    Qᵀ(PGP − weight·‖v‖²e₁e₁ᵀ)Q is its tridiagonal with the first diagonal entry lowered.
    """
    lower = gram.T  # Fortran order: the lower triangle holds G
    n, norm = len(gram), float(np.linalg.norm(vector))
    if n > 1 and norm > 0:
        alpha = -np.copysign(norm, vector[0])
        u = np.array(vector, dtype=np.float64)
        u[0] -= alpha  # P = I − β·u·uᵀ, P·v = α·e₁
        beta = 2.0 / (u @ u)
        p = blas.dsymv(beta, lower, u, lower=1)
        w = p - 0.5 * beta * (u @ p) * u
        lower = blas.dsyr2(-1.0, u, w, a=lower, lower=1, overwrite_a=1)  # PGP = G − u·wᵀ − w·uᵀ
    lwork = int(lapack.dsytrd_lwork(n, lower=1)[0])
    _, diagonal, off_diagonal, _, info = lapack.dsytrd(lower, lower=1, lwork=lwork, overwrite_a=1)
    if info != 0:
        raise RuntimeError(f"dsytrd failed (info={info})")
    shifted = diagonal.copy()
    shifted[0] -= weight * norm ** 2
    return _tridiagonal_eigenvalues(diagonal, off_diagonal), _tridiagonal_eigenvalues(shifted, off_diagonal)


def _tridiagonal_eigenvalues(diagonal: np.ndarray, off_diagonal: np.ndarray) -> np.ndarray:
    if len(diagonal) < 2:
        return diagonal.copy()
    values, info = lapack.dsterf(diagonal, off_diagonal)
    if info != 0:
        raise RuntimeError(f"dsterf failed (info={info})")
    return values


def _gram_by_columns(source, stops, block_size, timings):
    """N ≤ M: G = A·Aᵀ (N × N) from column blocks; A[:n]·A[:n]ᵀ is its leading principal block, and
    the row-centred Gram is G − M·m·mᵀ with m the row means."""
    n_rows, n_cols = source.shape
    top = stops[-1]
    gram, row_sums = np.zeros((top, top)), np.zeros(top)
    buffer = np.empty((top, min(block_size, n_cols)))
    sharded = distributed.active() and distributed.world_size() > 1  # torchrun: each Gram panel on one rank
    mine = (lambda panel: distributed.panel_owner(panel) == distributed.rank()) if sharded else None
    for start in range(0, n_cols, block_size):
        with clock(timings, "log_probs"):
            block = source.columns(start, min(start + block_size, n_cols), row_stop=top, out=buffer)  # (top, b)
        with clock(timings, "gram"):
            add_upper_gram(gram, block, mine=mine)
            row_sums += block.sum(axis=1)
    del buffer
    if sharded:
        with clock(timings, "gram"):
            distributed.sum_array(gram)  # each entry was computed by one rank: adding the others' zeros is exact
    means = row_sums / n_cols
    problems = {}
    with clock(timings, "eigenvalues"):
        for n in stops:  # leading blocks are copied before the full Gram is reduced in place
            sub = gram if n == top else np.array(gram[:n, :n])
            pair = eigenvalues_with_rank_one_update(sub, means[:n], n_cols)
            for centred, eigenvalues in zip((False, True), pair):
                problems[(centred, n)] = _GramProblem(n, centred, eigenvalues)
    del gram, sub
    scale = problems[(False, top)].resolve()  # the full Gram's σ_max sets the resolution of every problem:
    for problem in problems.values():  # the leading blocks and centred Grams came from it
        if problem.values is None:
            problem.resolve(scale)

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


def _gram_by_rows(source, stops, block_size, timings):
    """N > M: G = Aᵀ·A (M × M) from row blocks (centred blocks for the centred Gram); a snapshot at
    every stop."""
    n_cols = source.shape[1]
    grams = {False: np.zeros((n_cols, n_cols)), True: np.zeros((n_cols, n_cols))}
    problems, start = {}, 0
    for stop in stops:
        while start < stop:
            end = min(start + block_size, stop)
            with clock(timings, "log_probs"):
                block = source.rows(start, end)
            with clock(timings, "gram"):
                grams[False] += block.T @ block
                centred = _centre(block)
                grams[True] += centred.T @ centred
            start = end
        with clock(timings, "eigenvalues"):
            for variant in (False, True):  # built from exact (centred) blocks: resolution is its own σ_max
                problems[(variant, stop)] = _GramProblem(stop, variant, np.linalg.eigvalsh(grams[variant]))
                problems[(variant, stop)].resolve()
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
