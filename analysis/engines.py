"""Which engine computes a matrix's singular values, and the library entry points that use them.

``singular_values(matrix)`` and ``numerical_rank(matrix, tol=None, rtol=None)`` accept a NumPy
array or a block source (``analysis.logprobs.LogProbMatrix``). ``auto`` picks the exact
factorisation when the source has one (a softmax head), a direct SVD when the matrix is small
enough to hold three times over, and the streamed Gram engine otherwise (see
:mod:`analysis.spectrum` and :mod:`analysis.gram`).
"""

from __future__ import annotations

import numpy as np

from softmax_bottleneck.errors import InputError

from .gram import gram_spectra
from .logprobs import available_memory_bytes, require_memory
from .spectrum import DenseSource, Spectrum, clock, count_above, direct_spectra, factored_spectra, rank_threshold

ENGINES = ("auto", "factored", "direct", "gram")
DIRECT_MAX_SIDE = 2048  # auto: direct SVD when min(N, M) is at most this and the matrix fits easily


def as_source(matrix):
    return DenseSource(matrix) if isinstance(matrix, np.ndarray) or not hasattr(matrix, "rows") else matrix


def choose_engine(source, engine: str = "auto") -> str:
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    n_rows, n_cols = source.shape
    has_factors = getattr(source, "has_factors", False)
    if engine == "factored" and not has_factors:
        raise InputError("the factored engine needs a head with a known factorisation (softmax)")
    if engine != "auto":
        return engine
    if has_factors:
        return "factored"
    fits = 3 * 8.0 * n_rows * n_cols < 0.5 * available_memory_bytes()
    return "direct" if fits and min(n_rows, n_cols) <= DIRECT_MAX_SIDE else "gram"


def compute_spectra(matrix, row_stops: list[int] | None = None, engine: str = "auto", block_size: int = 2048,
                    timings: dict | None = None) -> dict[tuple[bool, int], Spectrum]:
    """{(centred, n): spectrum of the first n rows}, for every n in `row_stops` (default: all rows).

    `timings` (if given) receives the seconds spent per step ("log_probs", "eigenvalues", …)."""
    source = as_source(matrix)
    n_rows, n_cols = source.shape
    row_stops = sorted(set(row_stops or [n_rows]))
    engine = choose_engine(source, engine)
    if engine == "factored":
        with clock(timings, "log_probs"):
            left, right = source.factors()
        with clock(timings, "eigenvalues"):
            spectra = factored_spectra(left, right, row_stops)
    elif engine == "direct":
        require_memory(3 * 8.0 * n_rows * n_cols, f"a direct SVD of a {n_rows:,} × {n_cols:,} matrix")
        with clock(timings, "log_probs"):
            dense = source.dense()
        with clock(timings, "eigenvalues"):
            spectra = direct_spectra(dense, row_stops)
    else:
        side = min(n_rows, n_cols)
        require_memory(4 * 8.0 * side * side, f"a {side:,} × {side:,} Gram matrix")
        spectra = gram_spectra(source, row_stops, block_size=block_size, timings=timings)
    return spectra


def singular_values(matrix, engine: str = "auto") -> np.ndarray:
    """All min(N, M) singular values, descending, float64 (exact zeros beyond a factorisation's width)."""
    source = as_source(matrix)
    return compute_spectra(source, [source.shape[0]], engine)[(False, source.shape[0])].values


def numerical_rank(matrix, tol: float | None = None, rtol: float | None = None, engine: str = "auto") -> int:
    """The rank as ``np.linalg.matrix_rank(matrix, tol=tol, rtol=rtol)`` defines it."""
    source = as_source(matrix)
    values = singular_values(source, engine)
    return count_above(values, rank_threshold(values, source.shape, tol, rtol))
