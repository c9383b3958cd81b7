"""RecBole 1.2.1 checkpoints (``Trainer._save_checkpoint``), read without RecBole's code.

The file is ``torch.save(state, pickle_protocol=4)`` of a dict: ``config`` (a pickled
``recbole.config.configurator.Config``, holding enums, a ``yaml.FullLoader`` reference, the model
class and a ``torch.device``), ``epoch``, ``cur_step``, ``best_valid_score``, ``state_dict``,
``other_parameter`` and ``optimizer``. torch's safe loader cannot read protocol 4 at all
(pytorch#118092); :func:`read_recbole` reads it with :mod:`.archive`'s restricted unpickler, where
every RecBole class is an inert record. The item-id map is *not* in the file: it is the token
order of RecBole's dataset (``field2id_token['item_id']``, ``[PAD]`` at 0).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..errors import InputError
from .archive import Inert, load_restricted

MODELS = {"recbole.model.sequential_recommender.gru4rec.GRU4Rec": "GRU4Rec",
          "recbole.model.sequential_recommender.sasrec.SASRec": "SASRec"}
RECBOLE_CLASSES = ("recbole.config.configurator.Config", "yaml.loader.FullLoader", *MODELS)
RECBOLE_CALLS = ("recbole.utils.enum_type.ModelType", "recbole.utils.enum_type.InputType",
                 "recbole.utils.enum_type.EvaluatorType", "recbole.utils.enum_type.FeatureType",
                 "recbole.utils.enum_type.FeatureSource", "torch.device")


@dataclasses.dataclass
class RecBoleModel:
    """A RecBole checkpoint's content: the model's name, its ``state_dict``, and the settings
    (``final_config_dict``: sizes, ``MAX_ITEM_LIST_LENGTH``, the dataset and its filters)."""

    model: str
    state_dict: dict[str, torch.Tensor]
    settings: dict
    epoch: int | None


def read_recbole(path: str | Path) -> RecBoleModel:
    """The model, weights and settings of a RecBole GRU4Rec or SASRec checkpoint, without running its code."""
    try:
        payload = load_restricted(path, allowed=RECBOLE_CLASSES, calls=RECBOLE_CALLS)
    except InputError as err:
        if "recbole.model." in str(err):  # another RecBole model: name it
            name = str(err).split("import ", 1)[1].split(",", 1)[0]
            raise InputError(f"{path}: a RecBole {name.rsplit('.', 1)[-1]} checkpoint; supported: "
                             f"{', '.join(MODELS.values())}") from None
        raise
    if not (isinstance(payload, dict) and isinstance(payload.get("config"), Inert) and "state_dict" in payload):
        raise InputError(f"{path}: not a RecBole checkpoint (no config and state_dict)")
    settings = payload["config"].attribute("final_config_dict") or {}
    model = settings.get("model")
    if model not in MODELS.values():
        raise InputError(f"{path}: a RecBole {model} checkpoint; supported: {', '.join(MODELS.values())}")
    state = {k: v for k, v in payload["state_dict"].items() if isinstance(v, torch.Tensor)}
    plain = {k: v for k, v in settings.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}
    return RecBoleModel(model, state, plain, payload.get("epoch"))


def gru4rec_states(model: RecBoleModel, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
    """RecBole GRU4Rec's sequence states, replayed as its ``forward`` computes them (eval mode: no dropout):
    embed the right-padded sequences, run the bias-free GRU, apply ``dense``, take position len−1."""
    if model.model != "GRU4Rec":
        raise InputError(f"gru4rec_states replays RecBole GRU4Rec, not {model.model}")
    state = model.state_dict
    n_layers = sum(1 for k in state if k.startswith("gru_layers.weight_ih_l"))
    embedding, hidden = state["item_embedding.weight"].shape[1], state["gru_layers.weight_hh_l0"].shape[1]
    gru = torch.nn.GRU(embedding, hidden, num_layers=n_layers, bias=False, batch_first=True)
    gru.load_state_dict({k.removeprefix("gru_layers."): v for k, v in state.items() if k.startswith("gru_layers.")})
    with torch.no_grad():
        output, _ = gru(torch.nn.functional.embedding(item_seq, state["item_embedding.weight"]))
        output = output @ state["dense.weight"].T + state["dense.bias"]
        return output[torch.arange(len(item_seq)), item_seq_len.long() - 1]
