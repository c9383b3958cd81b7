"""Singular values of float64 matrices: the primitives, and two exact engines.

- ``factored``: the matrix is given as ``F·Gᵀ`` with few columns (a softmax head's log-prob matrix is
  ``[H, 1, −lse]·[W, b, 1]ᵀ``). ``σ(F·Gᵀ) = σ(R_F·R_Gᵀ)`` from two thin QRs: exact, O((N+M)·r²).
  Row-centring ``F·Gᵀ`` centres G over the items, so one QR of ``[1, G]`` serves both spectra
  (:func:`factored_spectra`).
- ``direct``: LAPACK SVD of the dense matrix.

The third engine, for matrices that do not fit, streams a Gram matrix (:mod:`analysis.gram`);
:mod:`analysis.engines` chooses among them. Sources hand out blocks (:class:`DenseSource` wraps
an array; ``analysis.logprobs.LogProbMatrix`` computes a head's log-probabilities on demand).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Protocol

import numpy as np
import torch

EPS = np.finfo(np.float64).eps


class Source(Protocol):
    shape: tuple[int, int]

    def rows(self, start: int, stop: int) -> np.ndarray: ...

    def columns(self, start: int, stop: int, row_stop: int | None = None, row_start: int = 0,
                out: np.ndarray | None = None) -> np.ndarray: ...  # `out`: a buffer the source may fill


class DenseSource:
    """An in-memory matrix behind the block interface."""

    def __init__(self, matrix: np.ndarray):
        self.matrix = np.asarray(matrix, dtype=np.float64)
        self.shape = self.matrix.shape

    def rows(self, start, stop):
        return self.matrix[start:stop]

    def columns(self, start, stop, row_stop=None, row_start=0, out=None):
        return self.matrix[row_start:row_stop, start:stop]

    def dense(self):
        return self.matrix


@dataclasses.dataclass
class Spectrum:
    """Singular values (descending, float64) of an (n_rows, n_cols) matrix and how they were obtained."""

    values: np.ndarray
    shape: tuple[int, int]
    engine: str
    refined: int = 0  # Gram values below the resolution, for which the QR recomputed the spectrum


def rank_threshold(values: np.ndarray, shape: tuple[int, int], tol: float | None = None,
                   rtol: float | None = None) -> float:
    """The cut-off ``np.linalg.matrix_rank`` uses: `tol`, else σ_max·`rtol`, else σ_max·max(N, M)·eps."""
    from .rank import check_threshold  # the flags' check, light enough for the command to run it first

    check_threshold(tol, rtol)
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


def r_factor(matrix: np.ndarray) -> np.ndarray:
    """R of a thin Householder QR (torch's LAPACK: twice NumPy's speed for these tall, narrow shapes)."""
    return torch.linalg.qr(torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float64)), mode="r").R.numpy()


def factored_spectrum(left: np.ndarray, right: np.ndarray, r_right: np.ndarray | None = None,
                      r_left: np.ndarray | None = None) -> Spectrum:
    """σ(left·rightᵀ) from two thin QRs; left (N, r), right (M, r); `r_left`, `r_right` reuse R factors
    (any R with RᵀR = XᵀX will do: σ(X·Yᵀ) = σ(R_X·R_Yᵀ))."""
    shape = (left.shape[0], right.shape[0])
    r_left = r_factor(left) if r_left is None else r_left
    r_right = r_factor(right) if r_right is None else r_right
    values = np.linalg.svd(r_left @ r_right.T, compute_uv=False)
    return Spectrum(_descending(values, min(shape)), shape, "factored")


def direct_spectrum(matrix: np.ndarray) -> Spectrum:
    values = np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False)
    return Spectrum(_descending(values, min(matrix.shape)), matrix.shape, "direct")


@contextlib.contextmanager
def clock(timings: dict | None, key: str):
    """Add the seconds spent in the block to ``timings[key]`` (nothing when `timings` is None)."""
    began = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - began


def factored_spectra(left: np.ndarray, right: np.ndarray, row_stops: list[int]) -> dict[tuple[bool, int], Spectrum]:
    """{(centred, n): spectrum of the first n rows of left·rightᵀ, and of those rows centred}.

    One QR of ``[1, right]`` serves both: R[:, 1:] is an R factor of `right`, and R[1:, 1:] one
    of `right` with its column means removed (row-centring left·rightᵀ centres `right` over the
    columns)."""
    r_both = r_factor(np.hstack([np.ones((len(right), 1)), right]))
    spectra = {}
    for n in row_stops:
        r_left = r_factor(left[:n])
        spectra[(False, n)] = factored_spectrum(left[:n], right, r_both[:, 1:], r_left)
        spectra[(True, n)] = factored_spectrum(left[:n], right, r_both[1:, 1:], r_left)
    return spectra


def direct_spectra(dense: np.ndarray, row_stops: list[int]) -> dict[tuple[bool, int], Spectrum]:
    """{(centred, n): spectrum of the first n rows of `dense`, and of those rows centred}."""
    spectra = {}
    for n in row_stops:
        spectra[(False, n)] = direct_spectrum(dense[:n])
        spectra[(True, n)] = direct_spectrum(dense[:n] - dense[:n].mean(axis=1, keepdims=True))
    return spectra
