"""The official GRU4Rec's model file (hidasib/GRU4Rec_PyTorch_Official ``savemodel``), read without its code.

``savemodel`` is ``torch.save(self)``: the whole ``gru4rec_pytorch.GRU4Rec`` object (protocol 2),
with its settings, its ``GRU4RecModel`` (torch modules), its training data iterator (whose
``itemidmap`` is a pandas Series: the training item ids as its index, rows 0…n−1 as its values, so
the id map *is* in the file) and, with the default sample store, megabytes of cached negatives.
:func:`read_official` unpickles it with :mod:`.archive`'s restricted unpickler, where every class
below is an inert record, and returns the weights, the item ids and the settings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .archive import Inert, load_restricted

OFFICIAL_CLASSES = (  # what the official file's pickle names (see tests/data/foreign/make_official.sh)
    "gru4rec_pytorch.GRU4Rec", "gru4rec_pytorch.GRU4RecModel", "gru4rec_pytorch.SessionDataIterator",
    "gru4rec_pytorch.SampleCache",
    "torch.nn.modules.dropout.Dropout", "torch.nn.modules.container.ModuleList", "torch.nn.modules.rnn.GRUCell",
    "torch.nn.modules.sparse.Embedding", "torch.nn.modules.linear.Linear",
    "pandas.core.series.Series", "pandas.core.internals.managers.SingleBlockManager",
    "pandas.core.indexes.base.Index", "pandas.core.indexes.numeric.Int64Index",
    "pandas.core.indexes.range.RangeIndex",
)
OFFICIAL_CALLS = (  # functions the pickle calls: recorded, never run
    "pandas.core.indexes.base._new_Index", "__builtin__.getattr", "builtins.getattr", "torch.device",
)
SETTINGS = ("layers", "loss", "constrained_embedding", "embedding", "dropout_p_embed", "dropout_p_hidden", "logq",
            "n_sample", "sample_alpha", "batch_size", "learning_rate", "momentum", "bpreg", "elu_param", "n_epochs")


@dataclasses.dataclass
class OfficialModel:
    """An official GRU4Rec file's content: ``parameters`` as the model's ``state_dict()`` names them
    (``Wy.weight``, ``By.weight``, ``G.0.weight_ih``, …, ``E.weight`` with a separate embedding),
    the training item ids in row order, and the settings it was trained with."""

    parameters: dict[str, torch.Tensor]
    item_ids: np.ndarray
    settings: dict


def module_parameters(module: Inert, prefix: str = "") -> dict[str, torch.Tensor]:
    """The parameters of an inert torch module tree, named as ``state_dict()`` would name them."""
    found = {}
    for name, value in (module.attribute("_parameters") or {}).items():
        if value is not None:
            found[prefix + name] = value.detach()
    for name, child in (module.attribute("_modules") or {}).items():
        if isinstance(child, Inert):
            found.update(module_parameters(child, f"{prefix}{name}."))
    return found


def _index_values(index) -> np.ndarray:
    """The values of a pickled pandas Index (``_new_Index(cls, {"data": …})``)."""
    if isinstance(index, Inert) and len(index.args) == 2 and isinstance(index.args[1], dict):
        data = index.args[1].get("data")
        if isinstance(data, np.ndarray):
            return data
    raise InputError("the official model's item map is not a pandas Series with a plain index")


def series_index_and_values(series: Inert) -> tuple[np.ndarray, np.ndarray]:
    """(index, values) of a pickled one-column pandas Series (its SingleBlockManager state)."""
    manager = series.attribute("_mgr") if isinstance(series, Inert) else None
    state = getattr(manager, "state", None)
    if not (isinstance(state, tuple) and len(state) == 4 and isinstance(state[3], dict)):
        raise InputError("the official model's item map is not a pandas Series this reader knows")
    block = next(iter(state[3].values()))
    return _index_values(block["axes"][0]), np.asarray(block["blocks"][0]["values"])


def read_official(path: str | Path) -> OfficialModel:
    """Weights, item ids and settings of an official GRU4Rec model file, without running its code."""
    obj = load_restricted(path, allowed=OFFICIAL_CLASSES, calls=OFFICIAL_CALLS)
    if not (isinstance(obj, Inert) and obj.qualname == "gru4rec_pytorch.GRU4Rec"):
        raise InputError(f"{path}: not an official GRU4Rec model file (it holds {type(obj).__name__})")
    model = obj.attribute("model")
    if not isinstance(model, Inert):
        raise InputError(f"{path}: an official GRU4Rec file without a trained model")
    parameters = module_parameters(model)
    ids, rows = series_index_and_values(obj.attribute("data_iterator").attribute("itemidmap"))
    order = np.argsort(rows, kind="stable")
    if not np.array_equal(rows[order], np.arange(len(rows))):
        raise InputError(f"{path}: the item map's rows are not 0…n−1")
    return OfficialModel(parameters, ids[order], {k: obj.attribute(k) for k in SETTINGS})


def native_model(official: OfficialModel):
    """The official model as this toolkit's GRU4Rec (softmax head with item bias; the same GRU cells,
    embedding and output matrix, so every score is the official forward's): (ModelConfig, state_dict)."""
    from ..config import ModelConfig

    settings, parameters = official.settings, official.parameters
    layers = list(settings["layers"])
    if len(set(layers)) != 1:
        raise InputError(f"official GRU4Rec with layers {layers}: only equal layer sizes map onto this toolkit's model")
    if not settings["constrained_embedding"] and not settings["embedding"]:
        raise InputError("official GRU4Rec with the GRU input embedding (embedding=0, unconstrained) is not supported")
    config = ModelConfig(n_items=len(official.item_ids), head="softmax", hidden_dim=layers[0], n_layers=len(layers),
                         embedding="constrained" if settings["constrained_embedding"] else "separate",
                         embedding_dim=None if settings["constrained_embedding"] else settings["embedding"],
                         item_bias=True, dropout_embedding=float(settings["dropout_p_embed"]),
                         dropout_hidden=float(settings["dropout_p_hidden"]))
    state = {"head.item_weight": parameters["Wy.weight"], "head.item_bias": parameters["By.weight"]}
    for layer in range(len(layers)):
        for part in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            state[f"grus.{layer}.{part}"] = parameters[f"G.{layer}.{part}"]
    if not settings["constrained_embedding"]:
        state["input_embedding.weight"] = parameters["E.weight"]
    return config, state
