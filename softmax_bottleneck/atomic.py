"""Atomic writes: a file appears whole under its name, or not at all.

Every writer goes through :func:`atomic_path`: it hands out a temporary name beside the
destination (same folder, so the final ``os.replace`` is a rename on one file system), and
renames it over the destination only when the block finishes without an error. A run killed or
failing half-way leaves the previous file intact and no temporary behind.

Folders go through :func:`atomic_dir`: built in a temporary sibling, then swapped with the old
folder in one ``renameat2(RENAME_EXCHANGE)`` (Linux), so the name always holds a whole folder,
the old one or the new one, and never nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; on success it replaces `path`.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "a.txt") as tmp:
    ...     _ = tmp.write_text("whole")
    >>> (folder / "a.txt").read_text(), sorted(p.name for p in folder.iterdir())
    ('whole', ['a.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise _naming(err, tmp, path) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _naming(err: OSError, tmp: Path | None, path: Path) -> OSError:
    """The same error, naming the destination the user asked for instead of our temporary."""
    if err.filename in (None, str(tmp)) or (tmp is not None and str(tmp.name) in str(err.filename)):
        return type(err)(err.errno, err.strerror or str(err), str(path))
    return err


def temporary_beside(path: Path) -> Path:
    """A fresh temporary name beside `path` (a killed writer's old ones are removed first); the suffix stays
    last, so writers that infer a format from it (savefig, to_csv) still do."""
    remove_stale_temporaries(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


def write_all_or_nothing(folder: str | os.PathLike, writers: dict) -> None:
    """Write every file of `writers` ({name: write(path)}) into `folder`, all of them or none: each is written
    to a temporary beside its destination first, and only when every one is whole are they renamed into place
    (renames need no space). A failure (a full disk) removes the temporaries and leaves the folder's earlier
    files as they were, so a rerun never mixes a new rank.json with an old spectrum.csv. Files of `folder`
    that `writers` does not name are left alone."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staged: dict[Path, Path] = {}
    try:
        for name, write in writers.items():
            staged[folder / name] = temporary_beside(folder / name)
            write(staged[folder / name])
    except BaseException as err:
        for tmp in staged.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
        if isinstance(err, OSError):
            raise _naming(err, *next(((tmp, path) for path, tmp in reversed(staged.items())), (None, folder))) from None
        raise
    for path, tmp in staged.items():
        os.replace(tmp, path)


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporaries a writer killed outright (SIGKILL runs no ``finally``) left beside `path`:
    those whose process, named in the file name, is gone."""
    for stale in path.parent.glob(f".{glob_escape(path.name)}.tmp-*"):
        pid = stale.name[len(path.name) + 6:].split("-", 1)[0]
        if stale.is_file() and pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            with contextlib.suppress(OSError):
                stale.unlink()


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def process_alive(pid: int) -> bool:
    """Whether a process of this host has that pid (a killed writer's or worker's has none)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def destination_lock(path: str | os.PathLike, what: str = "run") -> Iterator[None]:
    """Hold an exclusive lock on `path` as a destination (a hidden ``.NAME.lock`` beside it) for the block;
    a second writer is refused at once with InputError instead of silently racing the first."""
    import fcntl

    from .errors import InputError

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{path}: another {what} is writing it now ({lock} is locked); wait for it to end "
                             "or choose another {out}", "out") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb"):
    """An open handle on a temporary file that replaces `path` once written and fsync'd."""
    with atomic_path(path) as tmp:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write `text` to `path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


_RENAME_EXCHANGE = 2  # linux/fs.h


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # not glibc ≥ 2.28 (macOS, musl): no exchange
        return False
    at_cwd = -100  # AT_FDCWD
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system or kernel without it
        return False
    raise OSError(code, os.strerror(code), str(a))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it takes the place of `path`.

    An existing `path` is exchanged with the new folder in one step and then removed; where the
    system cannot exchange, it is renamed aside first (a moment in which `path` is absent).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the folder should look like any other
    try:
        yield tmp
        if not path.exists():
            os.replace(tmp, path)
        elif exchange(tmp, path):
            shutil.rmtree(tmp)  # now the old folder
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / "previous")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
