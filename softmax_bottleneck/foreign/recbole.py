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
    gru = torch.nn.GRU(embedding, hidden, num_layers=n_layers, bias=False, batch_first=True).to(item_seq.device)
    gru.load_state_dict({k.removeprefix("gru_layers."): v for k, v in state.items() if k.startswith("gru_layers.")})
    with torch.no_grad():
        output, _ = gru(torch.nn.functional.embedding(item_seq, state["item_embedding.weight"]))
        output = output @ state["dense.weight"].T + state["dense.bias"]
        return output[torch.arange(len(item_seq)), item_seq_len.long() - 1]


ACTIVATIONS = {"gelu": lambda x: x * 0.5 * (1.0 + torch.erf(x / 2.0 ** 0.5)), "relu": torch.relu,
               "swish": lambda x: x * torch.sigmoid(x), "tanh": torch.tanh, "sigmoid": torch.sigmoid}


def sasrec_states(model: RecBoleModel, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
    """RecBole SASRec's sequence states, replayed as its ``forward`` computes them (eval mode): item plus
    position embeddings, LayerNorm, then per layer causal multi-head self-attention over the right-padded
    sequence (padding and future positions masked with −10000 before the softmax, as RecBole does) and a
    feed-forward block, each added to its input and layer-normalised (post-LN); the state at position len−1."""
    if model.model != "SASRec":
        raise InputError(f"sasrec_states replays RecBole SASRec, not {model.model}")
    state, settings = model.state_dict, model.settings
    n_heads, eps = settings["n_heads"], settings["layer_norm_eps"]
    act = ACTIVATIONS.get(settings.get("hidden_act", "gelu"))
    if act is None:
        raise InputError(f"SASRec with hidden_act {settings.get('hidden_act')!r} is not supported")
    n_layers = len({k.split(".")[2] for k in state if k.startswith("trm_encoder.layer.")})

    def linear(x, name):
        return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]

    def norm(x, name):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], state[f"{name}.weight"], state[f"{name}.bias"], eps)

    with torch.no_grad():
        batch, length = item_seq.shape
        x = state["item_embedding.weight"][item_seq] + state["position_embedding.weight"][:length][None]
        x = norm(x, "LayerNorm")
        visible = torch.tril((item_seq != 0)[:, None, None, :].expand(-1, -1, length, -1))
        mask = torch.where(visible, 0.0, -10000.0)
        for layer in range(n_layers):
            at = f"trm_encoder.layer.{layer}.multi_head_attention"
            heads = [linear(x, f"{at}.{part}").view(batch, length, n_heads, -1).transpose(1, 2)
                     for part in ("query", "key", "value")]
            scores = heads[0] @ heads[1].transpose(-1, -2) / heads[0].shape[-1] ** 0.5 + mask
            context = (torch.softmax(scores, dim=-1) @ heads[2]).transpose(1, 2).reshape(batch, length, -1)
            x = norm(linear(context, f"{at}.dense") + x, f"{at}.LayerNorm")
            ff = f"trm_encoder.layer.{layer}.feed_forward"
            x = norm(linear(act(linear(x, f"{ff}.dense_1")), f"{ff}.dense_2") + x, f"{ff}.LayerNorm")
        return x[torch.arange(batch), item_seq_len.long() - 1]
