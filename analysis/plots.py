"""Axes-level plots: data and ``ax=None`` in, the ``Axes`` out (figures compose them).

Files are saved by :func:`save` with fixed metadata, so the same data gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FIXED_METADATA = {".png": {"Software": None}, ".pdf": {"Creator": None, "Producer": None, "CreationDate": None},
                  ".svg": {"Date": None, "Creator": None}}


def _axes(ax):
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    return ax


def plot_spectra(spectra, ax=None, *, normalise: bool = True):
    """Singular values on a log scale, one line per matrix; dotted verticals at each rank cap.

    spectra: iterable of (label, singular values descending, cap or None).
    """
    ax = _axes(ax)
    for index, (label, values, cap) in enumerate(spectra):
        values = np.asarray(values, dtype=np.float64)
        shown = values / values[0] if normalise and len(values) and values[0] > 0 else values
        positive = shown > 0
        (line,) = ax.plot(np.arange(1, len(shown) + 1)[positive], shown[positive], label=label, lw=1.6,
                          color="black" if label == "truth" else f"C{index}",
                          ls="--" if label == "truth" else "-")
        if cap is not None:
            ax.axvline(cap, color=line.get_color(), ls=":", lw=1.2)
            ax.annotate(f"cap {cap}", (cap, 1.0), textcoords="offset points", xytext=(3, -12), fontsize=8,
                        color=line.get_color())
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("σᵢ / σ₁" if normalise else "σᵢ")
    ax.set_title("Singular values of the log-probability matrix")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def save(figure, path: str | Path) -> Path:
    """Write with fixed metadata (reproducible bytes) and close the figure."""
    path = Path(path)
    suffix = path.suffix.lower()
    figure.savefig(path, dpi=150, metadata=FIXED_METADATA.get(suffix), format=suffix.lstrip(".") or "png")
    plt.close(figure)
    return path
