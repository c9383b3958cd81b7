"""Models trained elsewhere behind this toolkit's model interface, so every tool takes them.

:func:`load_foreign` reads a RecBole 1.2.1 GRU4Rec or SASRec checkpoint, or an official GRU4Rec
model file, with the restricted unpickler (no code of theirs runs), matches its items to a prepared
dataset's by original id (:mod:`.items`) and returns a checkpoint dict like ours, whose ``.model``
is a :class:`ForeignModel`:

- ``head``: a softmax over the dataset's items whose rows are the model's own output rows
  (RecBole: the tied item embedding, no bias, cap d+1; official: ``Wy`` and ``By``, cap d+2); an item
  the model does not know gets bias −inf, so it is never recommended and a target of it ranks last;
- ``replay(split)``: the framework's own state after every held-out prefix. RecBole scores a
  prefix as it does a sequence: the last ``MAX_ITEM_LIST_LENGTH`` items, right-padded, the state at
  position len−1 (:func:`.recbole.gru4rec_states`, :func:`.recbole.sasrec_states`). The official GRU4Rec
  steps its GRU cells item by item from a zero state (the same cells as this toolkit's GRU4Rec).

The model sees a prefix without the items it does not know (as the official code drops unknown
items from its test data); a prefix with no known item gets the zero state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from ..config import ModelConfig
from ..data import SessionSplit, session_parallel_batches
from ..errors import InputError
from ..heads import head_for
from ..replay import ContextBlock
from .archive import open_archive, pickle_globals
from .items import match_items, read_token_list, recbole_item_tokens

FOREIGN = {"recbole": "RecBole", "gru4rec-official": "official GRU4Rec"}


def detect_format(path: str | Path) -> str:
    """"recbole", "gru4rec-official" or "native", from the classes the checkpoint's pickle names (nothing
    is unpickled). A file that is no torch archive is "native", whose loader says what is wrong."""
    try:
        archive, _, data = open_archive(path)
        archive.close()
        names = pickle_globals(data)
    except Exception:  # unreadable: the native loader gives the one-line reason
        return "native"
    if any(name.startswith("recbole.") for name in names):
        return "recbole"
    if any(name.startswith("gru4rec_pytorch.") for name in names):
        return "gru4rec-official"
    return "native"


class ForeignModel(torch.nn.Module):
    """A foreign model as the tools see a GRU4Rec: ``config``, ``head``, ``log_probs`` and ``replay``."""

    def __init__(self, config: ModelConfig, head: torch.nn.Module, replay: Callable, known: np.ndarray,
                 encoder: torch.nn.Module | None = None):
        super().__init__()
        self.config, self.head, self.encoder = config, head, encoder
        self.input_embedding = getattr(encoder, "input_embedding", None)  # None: input items are the head's rows
        self._replay = replay
        self.register_buffer("known", torch.from_numpy(known.copy()), persistent=False)

    @property
    def all_known(self) -> bool:
        return bool(self.known.all())

    def log_probs(self, output: torch.Tensor) -> torch.Tensor:
        return self.head.log_probs(output)

    def finite(self, log_p: torch.Tensor) -> bool:
        """Whether the log-probabilities are finite, except the −inf of items the model does not know."""
        return bool(torch.isfinite(log_p if self.all_known else log_p[:, self.known]).all())

    @torch.no_grad()
    def replay(self, split: SessionSplit, *, batch_size: int = 512, device="cpu") -> Iterator[ContextBlock]:
        self.eval()
        yield from self._replay(self, split, batch_size, device)


def _ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The integers of every range [lo[i], hi[i]), concatenated."""
    sizes = hi - lo
    return np.repeat(lo - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes) + np.arange(sizes.sum())


def _contexts(split: SessionSplit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(session, position, global index of the target) of every prefix, in session order."""
    starts = split.offsets[:-1]
    targets = _ranges(starts + 1, split.offsets[1:])
    sessions = np.repeat(np.arange(split.n_sessions), np.maximum(split.lengths - 1, 0))
    return sessions, targets - starts[sessions], targets


def _known_before(split: SessionSplit, known: np.ndarray) -> np.ndarray:
    """K[j]: how many of the split's events before global index j the model knows."""
    return np.concatenate([[0], np.cumsum(known[split.items])])


class RecBoleEncoder(torch.nn.Module):
    """A RecBole GRU4Rec or SASRec without its code: its weights as buffers (they follow ``.to(device)``) and
    the replay of its ``forward``: (item_seq, item_seq_len) → the state at len−1."""

    def __init__(self, read):
        super().__init__()
        from .recbole import gru4rec_states, sasrec_states

        self.read, self.names = read, list(read.state_dict)
        self.states = gru4rec_states if read.model == "GRU4Rec" else sasrec_states
        for index, name in enumerate(self.names):
            self.register_buffer(f"weight{index}", read.state_dict[name], persistent=False)

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        weights = {name: getattr(self, f"weight{index}") for index, name in enumerate(self.names)}
        return self.states(dataclasses.replace(self.read, state_dict=weights), item_seq, item_seq_len)


def _sequence_replay(rows: np.ndarray, max_len: int):
    """RecBole's view of a prefix: the model rows of its last `max_len` known items, right-padded with 0."""

    def replay(model: ForeignModel, split: SessionSplit, batch_size: int, device) -> Iterator[ContextBlock]:
        known = rows >= 0
        sessions, positions, targets = _contexts(split)
        total = _known_before(split, known)
        filtered = rows[split.items][known[split.items]]
        ends = total[targets]  # known items before the target, over the whole split
        counts = ends - total[split.offsets[:-1][sessions]]
        step = max(batch_size, 1) * 8  # prefixes per block (cheap: each is at most max_len items)
        for first in range(0, len(sessions), step):
            part = slice(first, first + step)
            length = np.minimum(counts[part], max_len)
            offsets = np.arange(max_len)[None, :]
            index = (ends[part] - length)[:, None] + offsets
            sequence = np.where(offsets < length[:, None], filtered[np.minimum(index, max(len(filtered) - 1, 0))]
                                if len(filtered) else 0, 0)
            empty = length == 0
            item_seq = torch.from_numpy(sequence.astype(np.int64)).to(device)
            item_len = torch.from_numpy(np.maximum(length, 1)).to(device)
            output = model.encoder(item_seq, item_len).float()
            if empty.any():
                output[torch.from_numpy(empty).to(device)] = 0.0
            yield ContextBlock(output, sessions[part], positions[part], split.items[targets[part] - 1],
                               split.items[targets[part]])

    return replay


def _recurrent_replay(model: ForeignModel, split: SessionSplit, batch_size: int, device) -> Iterator[ContextBlock]:
    """Step the GRU cells over each session's known items (plus one dummy step, so the last known item is an
    input too); every prefix takes the output after its last known item, or the zero state."""
    known = model.known.cpu().numpy()
    sessions, positions, targets = _contexts(split)
    total = _known_before(split, known)
    is_known = known[split.items]
    per_session = total[split.offsets[1:]] - total[split.offsets[:-1]]
    kept = split.items[is_known]
    offsets = np.concatenate([[0], np.cumsum(per_session + 1)])
    items = np.zeros(offsets[-1], dtype=np.int32)
    slots = np.ones(offsets[-1], dtype=bool)
    slots[offsets[1:] - 1] = False  # the dummy step after each session's known items
    items[slots] = kept
    filtered = SessionSplit(items, offsets, np.zeros(offsets[-1]))
    last = total[targets] - 1  # global index (over known events) of the prefix's last known item
    has_state = total[targets] > total[split.offsets[:-1][sessions]]
    empty = np.flatnonzero(~has_state)
    for first in range(0, len(empty), max(batch_size, 1)):
        part = empty[first:first + batch_size]
        yield ContextBlock(torch.zeros(len(part), model.config.hidden_dim, device=device), sessions[part],
                           positions[part], split.items[targets[part] - 1], split.items[targets[part]])
    ordered = np.flatnonzero(has_state)  # `last` is non-decreasing along them
    hidden = model.encoder.init_hidden(min(batch_size, filtered.n_sessions), device)
    from ..model import carry_state

    for batch in session_parallel_batches(filtered, batch_size):
        hidden = carry_state(hidden, batch.keep, batch.reset)
        output, hidden = model.encoder.step(torch.from_numpy(batch.inputs).to(device), hidden)
        stepped = offsets[batch.sessions] + batch.positions - 1  # global index in `filtered`
        real = stepped - batch.sessions  # minus the dummies of earlier sessions: index over known events
        real = np.where(batch.positions - 1 < per_session[batch.sessions], real, -1)
        lo = np.searchsorted(last[ordered], real, "left")
        hi = np.searchsorted(last[ordered], real, "right")
        hi = np.where(real >= 0, hi, lo)
        if not (hi > lo).any():
            continue
        picks = np.repeat(np.arange(len(real)), hi - lo)
        chosen = ordered[_ranges(lo, hi)]
        yield ContextBlock(output[torch.from_numpy(picks).to(device)], sessions[chosen], positions[chosen],
                           split.items[targets[chosen] - 1], split.items[targets[chosen]])


def _softmax_head(hidden_dim: int, weight: torch.Tensor, bias: torch.Tensor | None, known: np.ndarray):
    """A softmax head over the dataset's items from the model's rows; −inf bias for items it does not know."""
    config = ModelConfig(n_items=len(known), head="softmax", hidden_dim=hidden_dim, item_bias=True)
    if bias is None and known.all():
        config = dataclasses.replace(config, item_bias=False)
    head = head_for(config)
    state = {"item_weight": weight.float()}
    if config.item_bias:
        full = torch.zeros_like(head.item_bias) if bias is None else bias.float().reshape(head.item_bias.shape).clone()
        full[torch.from_numpy(~known)] = -torch.inf
        state["item_bias"] = full
    head.load_state_dict(state)
    return head, config


def _rows(tensor: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """The model's rows for the dataset's items (row 0 for unknown items: masked by the head's bias)."""
    return tensor[torch.from_numpy(np.maximum(rows, 0))]


def load_foreign(path: str | Path, dataset, fmt: str, *, item_map: str | Path | None = None) -> dict:
    """A foreign checkpoint as a checkpoint dict of this toolkit (``model_config``, ``item_ids``, ``data``, …,
    ``foreign``: what it is and how its items matched), with the adapted model as its ``.model``."""
    from ..checkpoint import Checkpoint

    if fmt == "recbole":
        model, config, record = _recbole(path, dataset, item_map)
    elif fmt == "gru4rec-official":
        if item_map is not None:
            raise InputError("--item-map is for RecBole checkpoints; the official GRU4Rec file holds its item ids")
        model, config, record = _official(path, dataset)
    else:
        raise ValueError(f"not a foreign format: {fmt!r}")
    checkpoint = Checkpoint({"model_config": {**dataclasses.asdict(config), "foreign": record["name"]},
                             "train_config": {"seed": record["settings"].get("seed")}, "state_dict": {},
                             "item_ids": [str(i) for i in dataset.item_ids], "metrics": [],
                             "data": {"path": str(dataset.path), "fingerprint": dataset.fingerprint},
                             "foreign": record, **record.pop("epochs")}, path)
    checkpoint.model = model
    return checkpoint


def _recbole(path, dataset, item_map):
    from .recbole import read_recbole

    read = read_recbole(path)
    settings = read.settings
    if item_map is not None and Path(item_map).suffix != ".inter":
        tokens = read_token_list(item_map)
    else:
        tokens = recbole_item_tokens(settings, item_map)
    weight = read.state_dict["item_embedding.weight"]
    if len(tokens) != len(weight):
        raise InputError(f"{path}: the model has {len(weight):,} item rows but its item map has {len(tokens):,} "
                         "tokens; the map was not built from the file it was trained on")
    match = match_items(dataset.item_ids, tokens, where=str(path))
    max_len = int(settings.get("MAX_ITEM_LIST_LENGTH") or 50)
    head, config = _softmax_head(weight.shape[1], _rows(weight, match.rows), None, match.known)
    model = ForeignModel(config, head, _sequence_replay(match.rows, max_len), match.known, RecBoleEncoder(read))
    keep = ("model", "embedding_size", "stopping_step", "hidden_size", "num_layers", "n_layers", "n_heads", "MAX_ITEM_LIST_LENGTH",
            "loss_type", "learning_rate", "epochs", "train_batch_size", "seed", "dataset", "eval_args", "valid_metric")
    epochs = {"epoch": None, "best_epoch": None if read.epoch is None else read.epoch + 1,  # RecBole counts from 0
              "selection": {"metric": f"{settings.get('valid_metric')} (RecBole's)", "patience": settings.get("stopping_step")}}
    record = {"format": "recbole", "name": f"recbole-{read.model.lower()}", "model": f"RecBole {read.model}",
              "file": str(path), "epochs": epochs, "items": match, "max_len": max_len,
              "settings": {k: settings.get(k) for k in keep if k in settings}}
    return model, config, record


def _official(path, dataset):
    from ..model import GRU4Rec
    from .official import native_model, read_official

    official = read_official(path)
    native_config, state = native_model(official)
    match = match_items(dataset.item_ids, official.item_ids, skip=(), where=str(path))
    config = dataclasses.replace(native_config, n_items=dataset.n_items)
    encoder = GRU4Rec(config)
    aligned = {}
    for name, value in state.items():
        if name == "head.item_bias":
            value = _rows(value, match.rows).clone()
            value[torch.from_numpy(~match.known)] = -torch.inf
        elif name in ("head.item_weight", "input_embedding.weight"):
            value = _rows(value, match.rows)
        aligned[name] = value
    encoder.load_state_dict(aligned)
    model = ForeignModel(config, encoder.head, _recurrent_replay, match.known, encoder=encoder)
    record = {"format": "gru4rec-official", "name": "official-gru4rec", "model": "official GRU4Rec",
              "file": str(path), "epochs": {"epoch": official.settings.get("n_epochs")}, "items": match,
              "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in official.settings.items()}}
    return model, config, record


def foreign_summary(checkpoint: dict, split: SessionSplit | None = None) -> dict | None:
    """What a results table says about a foreign checkpoint (None for a native one): its framework and model,
    and how its items matched the data's (per `split`: unknown targets and inputs, and how they were handled)."""
    record = checkpoint.get("foreign")
    if record is None:
        return None
    return {"format": record["format"], "model": record["model"], "file": record["file"],
            "items": record["items"].record(split), **({"max_len": record["max_len"]} if "max_len" in record else {})}


def describe_foreign(summary: dict) -> str:
    """One line: the framework's model and how its items met the data's."""
    items = summary["items"]
    line = (f"{summary['model']} ({summary['file']}): {items['matched']:,} of the data's {items['data_items']:,} items "
            f"matched by id")
    if items["model_items_not_in_data"]:
        line += f"; {items['model_items_not_in_data']:,} of its {items['model_items']:,} items are not in the data (not ranked)"
    if items["unknown_items"]:
        line += (f"; {items['unknown_items']:,} unknown to it (e.g. {', '.join(items['unknown_examples'])})"
                 + (f": {items['unknown_targets']:,} targets count as misses, {items['unknown_inputs']:,} inputs "
                    "left out of its prefixes" if "unknown_targets" in items else ""))
    return line


def require_box_states(checkpoint: dict) -> None:
    """Refuse a foreign model whose head inputs are not GRU outputs: the reachability certificates are over
    the box (−1, 1)^d that a GRU's outputs fill (analysis.argmax). The official GRU4Rec's are; RecBole's are
    not (GRU4Rec maps them through its dense layer, SASRec ends in LayerNorm)."""
    record = checkpoint.get("foreign")
    if record is not None and record["format"] == "recbole":
        raise InputError(f"{record['file']}: the reachability audit certifies over the box (−1, 1)^d of GRU outputs, "
                         f"and a {record['model']}'s head inputs are not in it ({'a dense layer after the GRU' if 'GRU4Rec' in record['model'] else 'LayerNorm outputs'}); "
                         "its top-k coverage is in analysis.compare's health and analysis.rank gives its rank")


def require_every_item(checkpoint: dict, what: str) -> None:
    """Refuse a foreign model that cannot score some of the data's items: `what` analyses every item's log-probability."""
    record = checkpoint.get("foreign")
    if record is not None and record["items"].unknown:
        match = record["items"]
        raise InputError(f"{record['file']}: {len(match.unknown):,} of the data's items are unknown to the "
                         f"{record['model']} (e.g. {', '.join(match.unknown[:3])}); {what} needs a log-probability for "
                         "every item: prepare --data from the raw file the model was trained on")
