"""Which item is which: a foreign model's item rows matched to a prepared dataset's items by original id.

A RecBole checkpoint does not hold its item-id map. RecBole builds it when it loads the data: the
item tokens of the ``.inter`` file, after its filters, numbered in order of first appearance
(``pandas.factorize``), with ``[PAD]`` at 0. :func:`recbole_item_tokens` repeats those steps (RecBole
1.2.1 ``Dataset._data_filtering`` and ``_remap``) with the checkpoint's own settings. The official
GRU4Rec file holds its map (:mod:`.official`).

:func:`match_items` matches the model's ids to the dataset's. An item of the dataset the model does not
know cannot be scored by it; the adapters give it log-probability −inf (never recommended), so an event
with such a target is a miss at every cut-off, counted in the metrics, never dropped.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

PAD = "[PAD]"


def _intervals(text) -> list[tuple[str, float, float, str]] | None:
    """RecBole's interval syntax ("[0,inf)", "(0,1];[3,4)") as (left bracket, low, high, right bracket)."""
    if text is None:
        return None
    found = []
    for part in str(text).split(";"):
        match = re.fullmatch(r"\s*([\[(])\s*([^,]+?)\s*,\s*([^,]+?)\s*([\])])\s*", part)
        if not match:
            raise InputError(f"RecBole interval {part!r} is not of the form [low,high)")
        found.append((match[1], float(match[2]), float(match[3]), match[4]))
    return found


def _within(values, intervals) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    inside = np.zeros(values.shape, dtype=bool)
    for left, low, high, right in intervals:
        inside |= ((values >= low) if left == "[" else (values > low)) & ((values <= high) if right == "]" else (values < high))
    return inside


def recbole_item_tokens(settings: dict, inter_path: str | Path | None = None) -> np.ndarray:
    """RecBole's ``field2id_token[ITEM_ID_FIELD]`` for a checkpoint's settings: ``[PAD]`` then the item tokens
    of the filtered ``.inter`` rows in order of first appearance. `inter_path` defaults to the
    ``data_path/dataset.inter`` the settings name."""
    path = Path(inter_path) if inter_path is not None else Path(str(settings.get("data_path", ""))) / \
        f"{settings.get('dataset')}.inter"
    if not path.is_file():
        raise InputError(f"{path}: no such file; a RecBole checkpoint's item order is rebuilt from the .inter file it "
                         "was trained on: pass {item_map}", "item_map")
    if settings.get("benchmark_filename"):
        raise InputError("a RecBole model trained on benchmark files (benchmark_filename): pass {item_map} as a text "
                         "file of its item tokens", "item_map")
    load = settings.get("load_col") or {}
    if isinstance(load, dict) and set(load) - {"inter"}:
        raise InputError(f"a RecBole model that loaded {', '.join(sorted(set(load) - {'inter'}))} features: its item "
                         "order also depends on those files; pass {item_map} as a text file of its item tokens", "item_map")
    user, item, time = settings.get("USER_ID_FIELD"), settings.get("ITEM_ID_FIELD"), settings.get("TIME_FIELD")
    sep = settings.get("field_separator") or "\t"
    try:
        with open(path, encoding=settings.get("encoding") or "utf-8") as handle:
            header = handle.readline().rstrip("\r\n").split(sep)
        fields = dict(h.split(":", 1) for h in header)
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a RecBole atomic file (its header is not field:type{sep!r}…): {err}") from None
    wanted = load.get("inter") if isinstance(load, dict) and load.get("inter") is not None else list(fields)
    unload = set((settings.get("unload_col") or {}).get("inter") or ())
    columns = [f for f in fields if f in wanted and f not in unload]
    if user not in columns or item not in columns:
        raise InputError(f"{path}: has no {user} and {item} columns (its header: {', '.join(header)})")
    names = [f"{f}:{fields[f]}" for f in columns]
    dtypes = {f"{f}:{t}": (str if t.startswith("token") else float) for f, t in fields.items() if f in columns}
    try:
        frame = pd.read_csv(path, sep=sep, usecols=names, dtype=dtypes, encoding=settings.get("encoding") or "utf-8")
    except (ValueError, pd.errors.ParserError) as err:
        raise InputError(f"{path}: unreadable as RecBole atomic file ({err})") from None
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    frame = frame[frame[user].notna() & frame[item].notna()]
    keep = settings.get("rm_dup_inter")
    if keep is not None:
        if time in frame:
            frame = frame.sort_values(by=[time], ascending=True)  # RecBole's own call (not a stable sort)
        frame = frame.drop_duplicates(subset=[user, item], keep=keep)
    for field, interval in (settings.get("val_interval") or {}).items():
        if field not in frame:
            raise InputError(f"the RecBole settings filter on {field}, which {path} does not have")
        if fields[field].startswith("float"):
            frame = frame[_within(frame[field].values, _intervals(interval))]
        else:
            frame = frame[frame[field].isin(interval)]
    frame = _filter_by_counts(frame, user, item, _intervals(settings.get("user_inter_num_interval")),
                              _intervals(settings.get("item_inter_num_interval")))
    _, tokens = pd.factorize(frame[item].values)
    return np.array([PAD, *map(str, tokens)], dtype=object)


def _filter_by_counts(frame: pd.DataFrame, user: str, item: str, users, items) -> pd.DataFrame:
    """RecBole's interaction-count filter: drop users and items whose counts leave the intervals, until none does."""
    if users is None and items is None:
        return frame
    while True:
        banned = []
        for field, interval in ((user, users), (item, items)):
            if interval is None:
                banned.append(None)
                continue
            counts = Counter(frame[field].values)
            ids = np.array(list(counts), dtype=object)
            banned.append(set(ids[~_within([counts[i] for i in ids], interval)]) if len(ids) else set())
        if not any(banned):
            return frame
        drop = np.zeros(len(frame), dtype=bool)
        for field, ban in zip((user, item), banned):
            if ban:
                drop |= frame[field].isin(ban).values
        frame = frame[~drop]


def read_token_list(path: str | Path) -> np.ndarray:
    """Item tokens in model-row order from a text file, one per line (``[PAD]`` first for RecBole)."""
    path = Path(path)
    try:
        tokens = [line.rstrip("\r\n") for line in open(path, encoding="utf-8")]
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read the item tokens ({err})") from None
    tokens = [t for t in tokens if t != ""]
    if len(set(tokens)) != len(tokens):
        raise InputError(f"{path}: the item tokens repeat; one token per model row, in order")
    return np.array(tokens, dtype=object)


@dataclasses.dataclass
class ItemMatch:
    """The dataset's items in the model's rows: ``rows[i]`` is the model row of dataset item i, −1 where unknown."""

    rows: np.ndarray  # (n_data_items,) int64
    n_model_items: int  # the model's scorable items (RecBole: without [PAD])
    unknown: list[str]  # dataset items the model does not know
    not_in_data: int  # model items the dataset does not have (left out of the ranking)

    @property
    def known(self) -> np.ndarray:
        return self.rows >= 0

    def record(self, split=None) -> dict:
        """What a results table says about the match, and per split how the unknown items were handled."""
        out = {"model_items": self.n_model_items, "data_items": len(self.rows), "matched": int(self.known.sum()),
               "unknown_items": len(self.unknown), "unknown_examples": self.unknown[:5],
               "model_items_not_in_data": self.not_in_data}
        if split is not None:
            unknown = ~self.known[split.items]
            first = np.zeros(len(split.items), dtype=bool)
            first[split.offsets[:-1]] = True
            out.update({"unknown_targets": int((unknown & ~first).sum()),
                        "unknown_inputs": int(unknown[np.concatenate([~first[1:], [False]])].sum()),
                        "handling": "unknown targets count as misses (log-probability −inf, ranked last); unknown "
                                    "inputs are left out of the prefix the model sees; items the data lacks are left "
                                    "out of the ranking"})
        return out


def match_items(data_ids, model_ids, *, skip=(PAD,), where: str = "the model") -> ItemMatch:
    """Match the dataset's item ids to the model's row ids (both compared as strings)."""
    model_ids = [str(t) for t in model_ids]
    position = {token: row for row, token in enumerate(model_ids) if token not in skip}
    data_ids = [str(t) for t in data_ids]
    rows = np.array([position.get(token, -1) for token in data_ids], dtype=np.int64)
    matched = int((rows >= 0).sum())
    if matched == 0:
        raise InputError(f"{where}: none of the data's {len(data_ids):,} item ids is among its {len(position):,} items "
                         f"(data e.g. {', '.join(data_ids[:3])}; model e.g. {', '.join(list(position)[:3])}); "
                         "prepare --data from the file the model was trained on")
    if matched < len(data_ids) / 2:
        raise InputError(f"{where}: only {matched:,} of the data's {len(data_ids):,} items are among its "
                         f"{len(position):,}; its items do not match --data (prepare it from the file the model "
                         "was trained on)")
    unknown = [token for token, row in zip(data_ids, rows) if row < 0]
    return ItemMatch(rows, len(position), unknown, len(position) - matched)
