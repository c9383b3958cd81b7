"""What produced a result: the release number and a hash of the code that ran.

``library_version()`` is ``__version__`` plus a hash of every module of the library
(``0.1.0+3f2a…``), so it changes whenever the code does, released or not; every output records
it. ``source_hash`` of several packages keys caches (figures.study): a cached analysis is redone
when the code that made it has changed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

from . import __version__


@functools.cache
def source_hash(*packages: str) -> str:
    """sha256 over the relative path and bytes of every ``.py`` file of the named packages."""
    digest = hashlib.sha256()
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"{package} is not an importable package")
        root = Path(list(spec.submodule_search_locations)[0])
        for path in sorted(root.rglob("*.py")):
            digest.update(f"{package}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def library_version() -> str:
    """``__version__+HASH``: the release and the first 12 hex digits of the library's source hash."""
    return f"{__version__}+{source_hash('softmax_bottleneck')[:12]}"
