"""Any delimited interaction log, its columns named by the user: ``prepare --format csv``.

The input is one file, a folder of files, or a ``.tar.gz`` (``.tgz``, ``.tar``) of them. Files are
read in name order, and each in file order; an archive is streamed member by member, nothing is
extracted to disk. Every file needs its own header line naming the columns (the Globo.com clicks
come as 385 such files). The delimiter is sniffed from the first file's header (comma, tab,
semicolon or pipe) unless ``--delimiter`` names it.

Columns: ``--item-column`` and ``--time-column``, and either ``--session-column`` (sessions as the
file gives them; ``--session-gap`` does not apply) or ``--user-column`` (sessions cut at gaps of
``--session-gap``). ``--time-unit ms`` divides the times by 1,000 into seconds.

Every malformed file or row is one line naming the file and, for a row, its line number: a missing
column, a row with too many fields, an empty or non-numeric time, an empty id. A file holding only
its header adds no rows (the Globo.com data has one such hour); an empty file, without even a header,
is refused.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import re
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

DELIMITERS = {"comma": ",", "tab": "\t", "semicolon": ";", "pipe": "|"}
TIME_UNITS = {"s": 1.0, "ms": 1000.0}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


@dataclasses.dataclass(frozen=True)
class Columns:
    """Which columns of a delimited log are what (recorded in meta.json's source)."""

    item: str
    time: str
    session: str | None = None
    user: str | None = None
    time_unit: str = "s"
    delimiter: str | None = None  # a name of DELIMITERS, or None: sniffed

    def __post_init__(self):
        if (self.session is None) == (self.user is None):
            raise InputError("--format csv needs one of {session_column} or {user_column}",
                             "session_column", "user_column")
        if self.time_unit not in TIME_UNITS:
            raise InputError(f"{{time_unit}} must be one of {', '.join(TIME_UNITS)}, got {self.time_unit!r}",
                             "time_unit")
        if self.delimiter is not None and self.delimiter not in DELIMITERS:
            raise InputError(f"{{delimiter}} must be one of {', '.join(DELIMITERS)}, got {self.delimiter!r}",
                             "delimiter")
        named = [c for c in (self.item, self.time, self.session, self.user) if c is not None]
        if len(set(named)) < len(named):
            raise InputError(f"the column flags name the same column twice ({', '.join(named)})")

    @property
    def group(self) -> str:
        return self.session if self.session is not None else self.user

    def roles(self) -> dict[str, str]:
        """file column → role."""
        return {self.group: "group", self.item: "item", self.time: "time"}


def _files(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every data file of `path`: a file, a folder's files in name order, or an archive's
    regular members in archive order (streamed, one at a time; :func:`load_delimited` orders them by name)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise InputError(f"{path}: the folder holds no files")
        for file in files:
            yield str(file), file.read_bytes()
    elif path.name.endswith(ARCHIVE_SUFFIXES):
        found = 0
        try:
            with tarfile.open(path, mode="r|*") as archive:  # a stream: each member read once, in archive order
                for member in archive:
                    if member.isfile() and not Path(member.name).name.startswith("."):
                        found += 1
                        yield f"{path}:{member.name}", archive.extractfile(member).read()
        except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
            raise InputError(f"{path}: not a readable tar archive ({type(err).__name__}: {err})") from None
        if not found:
            raise InputError(f"{path}: the archive holds no files")
    else:
        yield str(path), path.read_bytes()


def sniff_delimiter(header: str, where: str) -> str:
    """The header's delimiter among comma, tab, semicolon and pipe.

    >>> sniff_delimiter("user_id,session_id,click_article_id", "f")
    ','
    >>> sniff_delimiter("SessionId\\tItemId\\tTime", "f")
    '\\t'
    """
    try:
        return csv.Sniffer().sniff(header, delimiters="".join(DELIMITERS.values())).delimiter
    except csv.Error:
        raise InputError(f"{where}: cannot tell the delimiter from its header {header[:60]!r}; give {{delimiter}}",
                         "delimiter") from None


def _malformed(name: str, err: Exception) -> InputError:
    """pandas' tokenizer error as one line naming the file and the line."""
    found = re.search(r"line (\d+)", str(err))
    where = f"line {found.group(1)}: " if found else ""
    return InputError(f"{name}: {where}malformed row ({str(err).splitlines()[0].split('. ')[-1]})")


def _check_field_counts(name: str, raw: bytes, delimiter: str, width: int) -> None:
    """Every line must have the header's number of fields (read with only some columns, pandas lets a row
    with surplus fields through). Counted on the bytes, vectorised; a file with quotes is parsed in full."""
    if b'"' in raw:
        try:
            pd.read_csv(io.BytesIO(raw), sep=delimiter, dtype=str, keep_default_na=False, engine="c")
        except pd.errors.ParserError as err:
            raise _malformed(name, err) from None
        return
    data = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(data == ord("\n"))
    if len(data) and data[-1] != ord("\n"):
        ends = np.append(ends, len(data))
    delimiters = np.concatenate([[0], np.cumsum(data == ord(delimiter))])
    starts = np.concatenate([[0], ends[:-1] + 1])
    fields = delimiters[ends] - delimiters[starts] + 1
    blank = ends - starts <= (data[np.maximum(ends - 1, 0)] == ord("\r"))  # empty lines: skipped, as pandas does
    bad = np.flatnonzero((fields != width) & ~blank)
    if len(bad):
        raise InputError(f"{name}: line {bad[0] + 1}: malformed row ({fields[bad[0]]} fields, the header has {width})")


def _read_one(name: str, raw: bytes, columns: Columns, delimiter: str) -> pd.DataFrame:
    """One file's group, item and time columns, checked row by row (line numbers count the header as 1)."""
    if not raw.strip():
        raise InputError(f"{name}: empty file (not even a header line)")
    text = raw.decode("utf-8-sig", errors="replace")
    header = text.split("\n", 1)[0].rstrip("\r").split(delimiter)
    missing = [c for c in columns.roles() if c not in header]
    if missing:
        raise InputError(f"{name}: line 1: no column {', '.join(map(repr, missing))} (the header has "
                         f"{', '.join(header)[:200]})")
    _check_field_counts(name, raw, delimiter, len(header))
    try:
        frame = pd.read_csv(io.StringIO(text), sep=delimiter, usecols=list(columns.roles()), dtype=str,
                            keep_default_na=False, engine="c")
    except pd.errors.ParserError as err:
        raise _malformed(name, err) from None
    for column, role in columns.roles().items():
        values = frame[column]
        empty = np.flatnonzero((values.str.strip() == "").to_numpy())
        if len(empty):
            raise InputError(f"{name}: line {empty[0] + 2}: empty {role} column {column!r}")
    times = pd.to_numeric(frame[columns.time], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(times))
    if len(bad):
        raise InputError(f"{name}: line {bad[0] + 2}: time column {columns.time!r} holds "
                         f"{frame[columns.time].iloc[bad[0]]!r}, not a finite number")
    return pd.DataFrame({"group": frame[columns.group].to_numpy(), "item": frame[columns.item].to_numpy(),
                         "time": times / TIME_UNITS[columns.time_unit]})


def load_delimited(path: str | Path, columns: Columns, *, hash_file: bool = True):
    """Interactions of a delimited log (a file, a folder or an archive of files; module docstring)."""
    from .loaders import Interactions, file_sha256

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if not (path.is_file() or path.is_dir()):
        raise InputError(f"{path}: not a regular file or folder (a pipe or device); write the log to a file first")
    parsed, digest, delimiter = [], hashlib.sha256(), None
    for name, raw in _files(path):
        if delimiter is None:
            header = raw.decode("utf-8-sig", errors="replace").split("\n", 1)[0].rstrip("\r")
            delimiter = DELIMITERS[columns.delimiter] if columns.delimiter else sniff_delimiter(header, name)
        parsed.append((name, _read_one(name, raw, columns, delimiter)))
        if path.is_dir():
            digest.update(f"{Path(name).name}\0{hashlib.sha256(raw).hexdigest()}\n".encode())
    parsed.sort(key=lambda pair: pair[0])  # name order, then each file's own order
    names = [name for name, _ in parsed]
    frame = pd.concat([f for _, f in parsed], ignore_index=True)
    del parsed
    if len(frame) == 0:
        raise InputError(f"{path}: no rows in any of its {len(names)} file(s)")
    group = pd.Categorical(frame["group"])
    item = pd.Categorical(frame["item"])
    sha256 = (digest.hexdigest() if path.is_dir() else file_sha256(path)) if hash_file else None
    source = {"format": "csv", "path": str(path.resolve()), "size": path.stat().st_size if path.is_file() else
              sum(Path(n).stat().st_size for n in names), "sha256": sha256, "files": len(names),
              "columns": dataclasses.asdict(columns), "delimiter": delimiter}
    return Interactions(user=group.codes.astype(np.int64), item=item.codes.astype(np.int32),
                        timestamp=frame["time"].to_numpy(), item_ids=np.asarray(item.categories.astype(str)),
                        sessionised=columns.session is not None, source=source)
