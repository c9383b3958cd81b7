"""Raw interaction files → :class:`Interactions` (user, item, timestamp arrays in file order).

Formats:

- ``movielens``: ``ratings.csv`` of 20M/25M/latest (``userId,movieId,rating,timestamp``),
  ``ratings.dat`` of 1M/10M (``::``-separated, no header), ``u.data`` of 100K (tab, no header).
  The variant is read off the file's first line, not its name.
- ``recbole``: RecBole atomic ``.inter`` files, tab-separated, header ``name:type``; needs
  ``item_id`` and ``timestamp`` and one of ``user_id`` / ``session_id`` (the latter is taken as
  already sessionised).
- ``gru4rec``: GRU4Rec TSV with header ``SessionId ItemId Time`` (already sessionised).

Memory: numeric columns get explicit narrow dtypes and only the needed columns are parsed, so a
25M-row MovieLens file is held once (about 16 bytes a row), not as several int64 copies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

FORMATS = ("movielens", "recbole", "gru4rec", "csv")


@dataclasses.dataclass
class Interactions:
    """Implicit events in the file's row order (array position = file row among kept rows)."""

    user: np.ndarray  # (n_events,) integer user ids or codes; the session for already-sessionised formats
    item: np.ndarray  # (n_events,) int32 codes into item_ids
    timestamp: np.ndarray  # (n_events,) float64 (seconds for MovieLens)
    item_ids: np.ndarray  # (n_distinct_items,) original ids as str
    sessionised: bool  # True when `user` already names sessions (no gap splitting)
    source: dict  # format, variant, path, size, sha256

    def __len__(self) -> int:
        return len(self.item)


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _first_line(path: Path) -> str:
    with open(path, "rb") as handle:
        raw = handle.readline(1 << 16)
    return raw.decode("utf-8", errors="replace").removeprefix("\ufeff").rstrip("\r\n")  # a UTF-8 BOM is no column


def detect_variant(path: Path) -> str:
    """Name what the file looks like: movielens-csv|movielens-dat|movielens-udata|recbole|gru4rec|unknown."""
    line = _first_line(path)
    tab_fields = line.split("\t")
    if all(":" in f for f in tab_fields) and len(tab_fields) >= 2:
        return "recbole"
    if {"SessionId", "ItemId", "Time"} <= set(tab_fields) or {"SessionId", "ItemId"} <= set(tab_fields):
        return "gru4rec"
    if "::" in line:
        return "movielens-dat"
    comma_fields = [f.strip() for f in line.split(",")]
    if "userId" in comma_fields or "movieId" in comma_fields:
        return "movielens-csv"
    if len(tab_fields) == 4 and all(_is_number(f) for f in tab_fields):
        return "movielens-udata"
    return "unknown"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_VARIANT_FORMAT = {
    "movielens-csv": "movielens", "movielens-dat": "movielens", "movielens-udata": "movielens",
    "recbole": "recbole", "gru4rec": "gru4rec",
}
_VARIANT_WORDS = {
    "movielens-csv": "a MovieLens ratings.csv", "movielens-dat": "a MovieLens ratings.dat",
    "movielens-udata": "a MovieLens u.data", "recbole": "a RecBole atomic .inter file",
    "gru4rec": "a GRU4Rec SessionId/ItemId/Time TSV",
}


def _check_path(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an interaction file")
    if not path.is_file():  # a FIFO would block the first read forever, and the file is read more than once
        raise InputError(f"{path}: not a regular file (a pipe or device); write the interactions to a file first")
    with open(path, "rb") as handle:
        magic = handle.read(6)
    for prefix, kind, tool in ((b"\x1f\x8b", "gzip", "gunzip"), (b"PK\x03\x04", "zip", "unzip"),
                               (b"BZh", "bzip2", "bunzip2"), (b"\xfd7zXZ", "xz", "unxz")):
        if magic.startswith(prefix):
            raise InputError(f"{path}: is {kind}-compressed; decompress it first ({tool} {path.name})")
    if path.stat().st_size == 0 or not _first_line(path).strip():
        raise InputError(f"{path}: file is empty")


def _diagnose_numeric(path: Path, read_kwargs: dict, columns: dict[str, str]) -> str:
    """Find the first non-numeric or missing value among `columns` (file column → our name)."""
    kwargs = {k: v for k, v in read_kwargs.items() if k not in ("dtype", "usecols")}
    frame = pd.read_csv(path, usecols=list(columns), dtype=str, keep_default_na=False,
                        **{"encoding": "utf-8-sig", **kwargs})
    for column, name in columns.items():
        text = frame[column].str.strip()
        numbers = pd.to_numeric(text, errors="coerce")
        bad = np.flatnonzero(numbers.isna().to_numpy())
        if len(bad):
            value = text.iloc[bad[0]]
            what = "a missing value" if value in ("", "nan", "NaN", "NA") else f"non-numeric value {value!r}"
            return f"column {column!r} ({name}) has {what} at data row {bad[0] + 1}"
    return "unparseable numeric column"


def _read(path: Path, read_kwargs: dict, numeric: dict[str, str]) -> pd.DataFrame:
    try:
        return pd.read_csv(path, engine="c", **{"encoding": "utf-8-sig", **read_kwargs})  # utf-8-sig: drops a BOM
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: file is empty") from None
    except (ValueError, pd.errors.ParserError) as err:
        message = str(err)
        if "Usecols do not match" in message or "not in list" in message:
            raise InputError(f"{path}: missing columns ({message})") from None
        try:
            reason = _diagnose_numeric(path, read_kwargs, numeric)
        except Exception:  # the diagnosis is best effort; the original error still names the file
            reason = message
        raise InputError(f"{path}: {reason}") from None


def _require_columns(path: Path, header: list[str], required: list[str], variant: str) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(f"{path}: {_VARIANT_WORDS.get(variant, variant)} needs columns {', '.join(required)}; "
                         f"missing {', '.join(missing)} (found: {', '.join(header)})")


def _movielens_read_spec(path: Path, variant: str, with_rating: bool) -> tuple[dict, dict[str, str]]:
    """read_csv kwargs and the numeric columns (file column → role) for a MovieLens variant."""
    names = {"userId": "user", "movieId": "item", "timestamp": "timestamp"}
    if with_rating:
        names["rating"] = "rating"
    # MovieLens ids fit int32; timestamps are read as float64 so missing values show up as NaN.
    dtypes = {"userId": np.int32, "movieId": np.int32, "rating": np.float32, "timestamp": np.float64}
    if variant == "movielens-csv":
        header = [f.strip() for f in _first_line(path).split(",")]
        _require_columns(path, header, list(names), variant)
        return dict(usecols=list(names), dtype={c: dtypes[c] for c in names}), names
    # u.data (tab) and ratings.dat ('::'; read as ':' so the fast C parser applies, ids are numeric)
    positions = (0, 1, 2, 3) if variant == "movielens-udata" else (0, 2, 4, 6)
    columns = dict(zip(("userId", "movieId", "rating", "timestamp"), positions))
    kept = [c for c in ("userId", "movieId", "rating", "timestamp") if c in names]
    width = len(_first_line(path).split("\t" if variant == "movielens-udata" else ":"))
    if width <= max(positions):
        raise InputError(f"{path}: {_VARIANT_WORDS[variant]} needs 4 fields a row (user, item, rating, timestamp); "
                         f"the first row has {len(_first_line(path).split())}")
    kwargs = dict(sep="\t" if variant == "movielens-udata" else ":", header=None,
                  usecols=[columns[c] for c in kept], dtype={columns[c]: dtypes[c] for c in kept})
    return kwargs, {columns[c]: names[c] for c in kept}


def _token_read_spec(path: Path, variant: str, with_rating: bool) -> tuple[dict, dict[str, str], dict[str, str]]:
    """(read_csv kwargs, role → file column, numeric columns) for RecBole and GRU4Rec TSVs."""
    header = _first_line(path).split("\t")
    if variant == "recbole":
        plain = {h.split(":")[0]: h for h in header}
        user_key = "session_id" if "session_id" in plain and "user_id" not in plain else "user_id"
        roles = {"user": user_key, "item": "item_id", "timestamp": "timestamp"}
        if with_rating:
            roles["rating"] = "rating"
        _require_columns(path, list(plain), list(roles.values()), variant)
        roles = {role: plain[name] for role, name in roles.items()}
    else:
        roles = {"user": "SessionId", "item": "ItemId", "timestamp": "Time"}
        if with_rating:
            raise InputError(f"{path}: {{min_rating}} needs a rating column; GRU4Rec TSVs have none", "min_rating")
        _require_columns(path, header, list(roles.values()), variant)
    dtype = {roles["user"]: "category", roles["item"]: "category", roles["timestamp"]: np.float64}
    if with_rating:
        dtype[roles["rating"]] = np.float32
    numeric = {roles["timestamp"]: "timestamp"} | ({roles["rating"]: "rating"} if with_rating else {})
    return dict(sep="\t", usecols=list(roles.values()), dtype=dtype), roles, numeric


def _codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(int codes, unique labels as str) for an id column, categorical or numeric."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(), np.asarray(column.cat.categories.astype(str))
    codes, uniques = pd.factorize(column.to_numpy(), sort=False)
    return codes, np.asarray(uniques).astype(str)


def load_interactions(path: str | os.PathLike, fmt: str, *, min_rating: float | None = None,
                      hash_file: bool = True, columns=None) -> Interactions:
    """Read a raw interaction file of format `fmt` (one of :data:`FORMATS`) in file order.

    ``csv``: any delimited file, folder or archive of files, its columns named by `columns`
    (:class:`softmax_bottleneck.data.delimited.Columns`). Raises InputError (one line, naming the
    file) for a missing or empty file, a file that is not of `fmt`, missing columns, and
    non-numeric or missing timestamps/ids.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "csv":
        from .delimited import load_delimited

        if columns is None:
            raise InputError("--format csv needs its columns named ({item_column}, {time_column}, and "
                             "{session_column} or {user_column})", "item_column", "time_column",
                             "session_column", "user_column")
        if min_rating is not None:
            raise InputError("{min_rating} needs a rating column; --format csv reads none", "min_rating")
        return load_delimited(path, columns, hash_file=hash_file)
    elif columns is not None:
        raise InputError(f"column flags are for --format csv, not {fmt}")
    _check_path(path)
    variant = detect_variant(path)
    if _VARIANT_FORMAT.get(variant) != fmt:
        looks = _VARIANT_WORDS.get(variant, "no format we know")
        raise InputError(f"{path}: does not look like {{format}} {fmt} (first line {_first_line(path)[:60]!r} "
                         f"looks like {looks})", "format")
    with_rating = min_rating is not None
    if fmt == "movielens":
        kwargs, numeric = _movielens_read_spec(path, variant, with_rating)
        frame = _read(path, kwargs, numeric)
        roles = {role: column for column, role in numeric.items()}
    else:
        kwargs, roles, numeric = _token_read_spec(path, variant, with_rating)
        frame = _read(path, kwargs, numeric)
    if len(frame) == 0:
        raise InputError(f"{path}: file has a header but no rows")
    timestamp = frame[roles["timestamp"]].to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(timestamp))
    if len(bad):
        raise InputError(f"{path}: {len(bad)} missing/NaN/infinite timestamp(s) in column "
                         f"{roles['timestamp']!r}, first at data row {bad[0] + 1}")
    if with_rating:
        keep = frame[roles["rating"]].to_numpy() >= min_rating
        frame, timestamp = frame[keep], timestamp[keep]
        if len(frame) == 0:
            raise InputError(f"{path}: no rows have rating >= {min_rating}")
    user_column = frame[roles["user"]]
    # users only need to be a sort key: numeric ids are used as they are, tokens as codes
    user = _codes(user_column)[0] if isinstance(user_column.dtype, pd.CategoricalDtype) else user_column.to_numpy()
    item, item_ids = _codes(frame[roles["item"]])
    del frame
    source = {"format": fmt, "variant": variant, "path": str(path.resolve()), "size": path.stat().st_size,
              "sha256": file_sha256(path) if hash_file else None}
    return Interactions(user=user, item=item.astype(np.int32, copy=False),
                        timestamp=timestamp, item_ids=item_ids, sessionised=fmt == "gru4rec" or (
                            variant == "recbole" and roles["user"].startswith("session_id")),
                        source=source)
