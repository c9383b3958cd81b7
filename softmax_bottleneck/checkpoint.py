"""Checkpoints: one ``torch.save`` of a plain dict of builtins and tensors, loaded with ``weights_only=True``.

Keys: ``format``, ``format_version``, ``model_config`` and ``train_config`` (dicts),
``state_dict``, ``optimizer`` (optional), ``rng`` (generator states, for ``--resume``),
``epoch``, ``metrics`` (one dict per epoch), ``item_ids``, ``data`` (prepared-data path and
fingerprint), ``versions`` (library, torch).

Writes go to a temporary file in the same folder and are ``os.replace``d, so a run killed while
saving leaves the previous checkpoint intact. A checkpoint that is missing, truncated, not ours,
or would run code when unpickled is refused with one line (InputError), never executed.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import sys
import warnings
import zipfile
from pathlib import Path

import torch

from .provenance import library_version
from .atomic import atomic_open
from .errors import InputError
from .data import PreparedDataset, load_prepared
from .config import ModelConfig
from .model import GRU4Rec

FORMAT_NAME = "softmax-bottleneck/checkpoint"
FORMAT_VERSION = 1


def versions() -> dict:
    return {"library": library_version(), "torch": str(torch.__version__)}  # TorchVersion is not a builtin


_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def _check_plain(value, where: str = "checkpoint") -> None:
    """Only builtins and tensors may go in, so weights_only=True can load it back."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, where)
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif type(value) not in _PLAIN and not isinstance(value, torch.Tensor):
        raise TypeError(f"{where} is a {type(value).__name__}; checkpoints hold builtins and tensors only")


def save_checkpoint(payload: dict, path: str | os.PathLike) -> Path:
    """Atomically write `payload` (plus the format marker) to `path`."""
    path = Path(path)
    payload = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "versions": versions(), **payload}
    _check_plain(payload)
    buffer = io.BytesIO()  # torch's writer turns a full disk into an opaque RuntimeError; a plain write says ENOSPC
    torch.save(payload, buffer)
    with atomic_open(path) as handle:
        handle.write(buffer.getbuffer())
    return path


class Checkpoint(dict):
    """A loaded checkpoint: the saved dict itself, and the file it came from as ``.path`` (an
    attribute, not a key, so saving it again writes exactly what was loaded)."""

    def __init__(self, payload: dict, path: str | os.PathLike | None = None):
        super().__init__(payload)
        self.path = None if path is None else str(path)


def _where(checkpoint: dict) -> str:
    return getattr(checkpoint, "path", None) or "checkpoint"


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load and validate a checkpoint without running any code from it."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint")
    _verify_checksums(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        from .foreign.adapter import FOREIGN, detect_format

        kind = detect_format(path)
        if kind in FOREIGN:
            raise InputError(f"{path}: a {FOREIGN[kind]} checkpoint, not a native one; read it with "
                             f"--checkpoint-format {kind} (or auto)") from None
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found:
            raise InputError(f"{path}: refused to load: it asks to import {found.group(1)} (a pickle that could "
                             "run code; checkpoints hold tensors and builtins only)") from None
        raise InputError(f"{path}: truncated or not a torch checkpoint (unreadable pickle)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        first = _shorten((str(err).splitlines() or [type(err).__name__])[0])  # an EOFError may have no message
        raise InputError(f"{path}: truncated or not a torch checkpoint ({first})") from None
    except Exception as err:  # the restricted unpickler fails on garbage in other ways too (KeyError, IndexError, …)
        raise InputError(f"{path}: truncated or not a torch checkpoint (unreadable: {type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise InputError(f"{path}: not a softmax-bottleneck checkpoint (no '{FORMAT_NAME}' format marker)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path}: checkpoint format version {payload.get('format_version')} is not "
                         f"{FORMAT_VERSION}")
    missing = [k for k in ("model_config", "train_config", "state_dict", "item_ids", "data") if k not in payload]
    if missing:
        raise InputError(f"{path}: damaged checkpoint, missing {', '.join(missing)}")
    return Checkpoint(payload, path)


def _verify_checksums(path: Path) -> None:
    """Refuse an archive whose members fail their CRC-32: torch.load does not check them, so flipped bytes
    inside the weights (or the resume state) would load as a silently different model."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return  # not a readable zip at all: torch.load says so below, in its words
    if bad is not None:
        raise InputError(f"{path}: damaged checkpoint: its member {bad} fails its checksum (the file was changed "
                         "or corrupted after it was written)")


def _shorten(text: str, limit: int = 120) -> str:
    """At most `limit` characters, cut at a word boundary with an ellipsis."""
    if len(text) <= limit:
        return text
    return text[:limit + 1].rsplit(" ", 1)[0].rstrip(" ,;:(") + " …"  # a word ending at the limit stays


def model_from_checkpoint(checkpoint: dict, device: torch.device | str = "cpu") -> GRU4Rec:
    """Rebuild the network and load its weights; eval mode. A foreign checkpoint brings its adapted model."""
    if getattr(checkpoint, "model", None) is not None:
        return checkpoint.model.to(device).eval()
    try:
        config = ModelConfig(**checkpoint["model_config"])
        model = GRU4Rec(config)
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"{_where(checkpoint)}: checkpoint does not match this library's model "
                         f"({_shorten((str(err).splitlines() or [type(err).__name__])[0], 160)})") from None
    return model.to(device).eval()


def dataset_for_checkpoint(checkpoint: dict, data: str | os.PathLike | None = None, *,
                           allow_other_data: bool = False) -> PreparedDataset:
    """The prepared dataset a checkpoint was trained on, fingerprint-checked.

    Without `data`, the recorded folder must exist and match the recorded fingerprint. With
    `data`, a different fingerprint is refused (its held-out split may overlap the model's training
    data), unless `allow_other_data` and the item map is the same; then it is used with a warning.
    """
    recorded = checkpoint["data"]
    where = _where(checkpoint)
    if data is None:
        if not recorded.get("path") or not Path(recorded["path"]).is_dir():
            raise InputError(f"{where}: its prepared data {recorded.get('path')} is not there any more; "
                             "pass --data DIR")
        dataset = load_prepared(recorded["path"])
        if dataset.fingerprint != recorded["fingerprint"]:
            raise InputError(f"{where}: trained on prepared data {recorded['fingerprint'][:19]} but "
                             f"{recorded['path']} now holds {dataset.fingerprint[:19]}; pass {{data}} to override", "data")
        return dataset
    dataset = load_prepared(data)
    if dataset.fingerprint != recorded["fingerprint"]:
        if list(dataset.item_ids) != list(checkpoint["item_ids"]):
            same_items = sorted(map(str, dataset.item_ids)) == sorted(map(str, checkpoint["item_ids"]))
            how = ("the same items in another order" if same_items else
                   f"another item map ({dataset.n_items} items, the checkpoint's {len(checkpoint['item_ids'])})")
            raise InputError(f"{where}: {{data}} {data} has {how}; cannot use it (prepare the data as the model's was)",
                             "data")
        if not allow_other_data:
            raise InputError(f"{where}: {{data}} {data} holds prepared data {dataset.fingerprint[:19]}, the checkpoint "
                             f"was trained on {recorded['fingerprint'][:19]} ({recorded['path']}); its held-out split "
                             "may overlap the model's training data; pass {allow_other_data} to use it anyway",
                             "data", "allow_other_data")
        print(f"warning: data {data} has fingerprint {dataset.fingerprint[:19]}, the checkpoint was trained on "
              f"{recorded['fingerprint'][:19]} ({recorded['path']}); using it", file=sys.stderr)
    return dataset


def checkpoint_formats(paths, formats=None) -> list[str]:
    """Each checkpoint's format: `formats` is one for all ("auto" or None: detected from the file), or one per path."""
    from .cli import CHECKPOINT_FORMATS
    from .foreign.adapter import detect_format

    formats = ["auto"] if formats is None else [formats] if isinstance(formats, str) else list(formats)
    if len(formats) == 1:
        formats = formats * len(paths)
    if len(formats) != len(paths):
        raise InputError(f"give one --checkpoint-format for all checkpoints or one per checkpoint, not {len(formats)} "
                         f"for {len(paths)}")
    for fmt in formats:
        if fmt not in CHECKPOINT_FORMATS:
            raise InputError(f"--checkpoint-format must be one of {', '.join(CHECKPOINT_FORMATS)}, got {fmt!r}")
    return [detect_format(p) if fmt == "auto" else fmt for p, fmt in zip(paths, formats)]


def load_checkpoints_on_one_dataset(paths, data: str | os.PathLike | None = None, formats=None,
                                    item_map: str | os.PathLike | None = None, *,
                                    allow_other_data: bool = False) -> tuple[list[dict], PreparedDataset]:
    """Several checkpoints that must share their prepared data (same fingerprint and item map), and that data.

    Checkpoints of other frameworks (`formats`, see :func:`checkpoint_formats`; RecBole, the official
    GRU4Rec) are read by :mod:`softmax_bottleneck.foreign` onto that data, their items matched by
    original id (`item_map`: a RecBole model's .inter file or token list); they record no data of their
    own, so `data` or a native checkpoint must give it."""
    kinds = checkpoint_formats(paths, formats)
    native = [(p, load_checkpoint(p)) for p, kind in zip(paths, kinds) if kind == "native"]
    if native:
        (first_path, first), *rest = native
        for path, checkpoint in rest:
            if checkpoint["data"]["fingerprint"] != first["data"]["fingerprint"] or checkpoint["item_ids"] != first["item_ids"]:
                raise InputError(f"{first_path} was trained on {first['data']['path']} ({first['data']['fingerprint'][:19]}), "
                                 f"{path} on {checkpoint['data']['path']} ({checkpoint['data']['fingerprint'][:19]}): "
                                 "they must share one prepared dataset")
        dataset = dataset_for_checkpoint(first, data, allow_other_data=allow_other_data)
    elif data is None:
        from .foreign.adapter import FOREIGN

        raise InputError(f"{paths[0]}: a {FOREIGN[kinds[0]]} checkpoint records no prepared data; pass --data DIR, "
                         "prepared from the raw file the model was trained on")
    else:
        dataset = load_prepared(data)
    if item_map is not None and "recbole" not in kinds:
        raise InputError("--item-map is for RecBole checkpoints, and none is given")
    loaded = iter(checkpoint for _, checkpoint in native)
    checkpoints = []
    for path, kind in zip(paths, kinds):
        if kind == "native":
            checkpoints.append(next(loaded))
        else:
            from .foreign.adapter import load_foreign

            checkpoints.append(load_foreign(path, dataset, kind, item_map=item_map if kind == "recbole" else None))
    return checkpoints, dataset
