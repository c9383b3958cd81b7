"""The prepared dataset: three splits of sessions as integer item indices, on disk and in memory.

A prepared folder holds::

    meta.json               source, every preprocessing parameter, counts, content fingerprint
    items.csv               index, item_id, support (training events of the item)
    train/ valid/ test/     items.npy (int32), offsets.npy (int64), timestamps.npy (float64)
    world/                  only for the synthetic world: its ground-truth arrays

``.npy`` files (not ``.npz``) so the same content gives byte-identical files, and loading needs
no CSV parsing of the raw file. :func:`load_prepared` recomputes the fingerprint and refuses a
folder whose content no longer matches its ``meta.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_dir
from ..cli import check_output_dir
from ..errors import InputError

FORMAT_NAME = "softmax-bottleneck/prepared"
FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class SessionSplit:
    """Sessions of one split, concatenated: session s is items[offsets[s]:offsets[s+1]].

    Sessions are stored in temporal order (by start time, then user, then file row).
    """

    items: np.ndarray  # (n_events,) int32 item indices in [0, n_items)
    offsets: np.ndarray  # (n_sessions + 1,) int64
    timestamps: np.ndarray  # (n_events,) float64

    def __post_init__(self):
        self.items = np.ascontiguousarray(self.items, dtype=np.int32)
        self.offsets = np.ascontiguousarray(self.offsets, dtype=np.int64)
        self.timestamps = np.ascontiguousarray(self.timestamps, dtype=np.float64)

    @property
    def n_sessions(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_events(self) -> int:
        return len(self.items)

    @property
    def n_transitions(self) -> int:
        """Next-item prediction events: each session of length L gives L-1."""
        return self.n_events - self.n_sessions

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def start_times(self) -> np.ndarray:
        return self.timestamps[self.offsets[:-1]] if self.n_sessions else np.empty(0)

    def session(self, index: int) -> np.ndarray:
        return self.items[self.offsets[index]:self.offsets[index + 1]]

    def summary(self) -> dict:
        lengths = self.lengths
        return {
            "sessions": self.n_sessions,
            "events": self.n_events,
            "transitions": self.n_transitions,
            "items": int(len(np.unique(self.items))),
            "mean_length": round(float(lengths.mean()), 3) if len(lengths) else 0.0,
            "first_time": float(self.timestamps.min()) if self.n_events else None,
            "last_time": float(self.timestamps.max()) if self.n_events else None,
        }

    def take_sessions(self, sessions: np.ndarray) -> "SessionSplit":
        """The split of these sessions (indices, in the order given)."""
        sessions = np.asarray(sessions, dtype=np.int64)
        lengths = self.lengths[sessions]
        index = (np.repeat(self.offsets[:-1][sessions] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
                 + np.arange(lengths.sum()))
        return SessionSplit(self.items[index], np.concatenate([[0], np.cumsum(lengths)]), self.timestamps[index])


def sample_sessions(split: SessionSplit, *, max_events: int, seed: int = 0) -> SessionSplit:
    """A seeded random sample of whole sessions holding at most `max_events` next-item events (at least one
    session), kept in the split's order: for evaluating a split too large to rank in full. Intervals that
    resample sessions (analysis.compare) widen by themselves, as there are fewer sessions."""
    if max_events < 1:
        raise InputError("{max_events} must be >= 1, got " + str(max_events), "max_events")
    if split.n_transitions <= max_events:
        return split
    order = np.random.default_rng(seed).permutation(split.n_sessions)
    events = np.cumsum(split.lengths[order] - 1)
    chosen = order[: max(1, int(np.searchsorted(events, max_events, side="right")))]
    return split.take_sessions(np.sort(chosen))


@dataclasses.dataclass
class PreparedDataset:
    """Train/valid/test sessions over one item index, plus what produced them."""

    splits: dict[str, SessionSplit]
    item_ids: np.ndarray  # (n_items,) original ids as str; index = item index
    support: np.ndarray  # (n_items,) int64 training events per item
    meta: dict  # source, config, counts, fingerprint
    path: Path | None = None
    world: dict[str, np.ndarray] | None = None  # synthetic ground truth arrays, if any

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    def split(self, name: str) -> SessionSplit:
        if name not in self.splits:
            raise InputError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return self.splits[name]


def content_fingerprint(splits: dict[str, SessionSplit], item_ids: np.ndarray, support: np.ndarray) -> str:
    """sha256 over the prepared content: the split arrays, the item map and the support counts."""
    digest = hashlib.sha256()
    for name in SPLITS:
        split = splits[name]
        for array in (split.items, split.offsets, split.timestamps):
            digest.update(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    digest.update("\n".join(map(str, item_ids)).encode("utf-8"))
    digest.update(np.ascontiguousarray(support, dtype="<i8").tobytes())
    return "sha256:" + digest.hexdigest()


def is_prepared_dir(path: Path) -> bool:
    meta = path / "meta.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False


def _write_folder(dataset: PreparedDataset, folder: Path) -> None:
    for name in SPLITS:
        split = dataset.splits[name]
        (folder / name).mkdir()
        np.save(folder / name / "items.npy", split.items)
        np.save(folder / name / "offsets.npy", split.offsets)
        np.save(folder / name / "timestamps.npy", split.timestamps)
    pd.DataFrame({"index": np.arange(dataset.n_items), "item_id": dataset.item_ids,
                  "support": dataset.support}).to_csv(folder / "items.csv", index=False)
    if dataset.world is not None:
        (folder / "world").mkdir()
        for key, array in dataset.world.items():
            np.save(folder / "world" / f"{key}.npy", array)
    meta = {k: v for k, v in dataset.meta.items() if k != "integrity"}
    meta["integrity"] = integrity_hash(meta, dataset.world)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def integrity_hash(meta: dict, world: dict | None) -> str:
    """sha256 over what the content fingerprint leaves out: meta.json itself and the synthetic truth."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "integrity"}, sort_keys=True).encode())
    for key in sorted(world or {}):
        array = np.ascontiguousarray(world[key])
        digest.update(key.encode() + str(array.dtype.str).encode() + str(array.shape).encode() + array.tobytes())
    return "sha256:" + digest.hexdigest()


def check_destination(out: str | os.PathLike) -> None:
    """Refuse, before any work, a destination that is a user's file or folder, or cannot be written."""
    out = Path(out)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or is_prepared_dir(out))):
        raise InputError(f"{out}: exists and is not a prepared dataset; refusing to overwrite it")
    check_output_dir(out, "--out")


def save_prepared(dataset: PreparedDataset, out: str | os.PathLike) -> Path:
    """Write atomically: build in a temporary sibling folder, then swap it with `out` (see atomic_dir).

    `out` may be absent, an empty folder, or an earlier prepared dataset (replaced); anything
    else is refused, so no user file is ever overwritten.
    """
    out = Path(out)
    check_destination(out)
    with atomic_dir(out) as tmp:
        _write_folder(dataset, tmp)
    dataset.path = out
    return out


def load_prepared(path: str | os.PathLike, *, verify: bool = True) -> PreparedDataset:
    """Load a prepared folder; with `verify`, refuse content that does not match its fingerprint."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such prepared dataset folder")
    if not is_prepared_dir(path):
        raise InputError(f"{path}: not a prepared dataset (no meta.json of {FORMAT_NAME}); "
                         "make one with python -m softmax_bottleneck.prepare")
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path}: prepared format version {meta.get('format_version')} is not "
                         f"{FORMAT_VERSION}; prepare it again")
    try:
        splits = {name: SessionSplit(items=np.load(path / name / "items.npy"),
                                     offsets=np.load(path / name / "offsets.npy"),
                                     timestamps=np.load(path / name / "timestamps.npy"))
                  for name in SPLITS}
        items = pd.read_csv(path / "items.csv", dtype={"item_id": str}, keep_default_na=False)
        world = None
        if (path / "world").is_dir():
            world = {f.stem: np.load(f) for f in sorted((path / "world").glob("*.npy"))}
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"{path}: damaged prepared dataset ({err})") from None
    missing = sorted({"item_id", "support"} - set(items.columns))
    if missing:
        raise InputError(f"{path}: damaged prepared dataset (items.csv has no {', '.join(missing)} column)")
    item_ids = np.array(items["item_id"].to_numpy(), dtype=str)  # writable copies (pandas hands out read-only views)
    support = np.array(items["support"].to_numpy(), dtype=np.int64)
    if verify:
        actual = content_fingerprint(splits, item_ids, support)
        if actual != meta.get("fingerprint"):
            raise InputError(f"{path}: content fingerprint {actual[:19]} does not match meta.json's "
                             f"{str(meta.get('fingerprint'))[:19]}; the folder was modified, prepare it again")
        if "integrity" in meta and integrity_hash(meta, world) != meta["integrity"]:
            raise InputError(f"{path}: meta.json or world/ was modified after it was prepared (integrity hash "
                             "mismatch); prepare it again")
    return PreparedDataset(splits=splits, item_ids=item_ids, support=support, meta=meta, path=path, world=world)
