"""Writing result folders: each file appears whole or not at all, with ordinary permissions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from softmax_bottleneck.atomic import atomic_path
from softmax_bottleneck.errors import InputError


def write_files(out: Path, writers: dict[str, Callable[[Path], object]]) -> None:
    """Create `out` if needed; for each name, write to a temporary sibling and rename it into place."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{{out}} {out}: exists and is not a folder", "out")
    out.mkdir(parents=True, exist_ok=True)
    for name, write in writers.items():
        with atomic_path(out / name) as tmp:
            write(tmp)
