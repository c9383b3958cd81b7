"""Writing result folders: each file appears whole or not at all, with ordinary permissions."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from softmax_bottleneck.cli import InputError


def write_files(out: Path, writers: dict[str, Callable[[Path], object]]) -> None:
    """Create `out` if needed; for each name, write to a temporary sibling and rename it into place."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    for name, write in writers.items():
        handle, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=Path(name).suffix, dir=out)
        os.close(handle)
        try:
            write(Path(tmp))
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
            os.replace(tmp, out / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
