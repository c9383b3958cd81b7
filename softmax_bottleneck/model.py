"""GRU4Rec as its authors define it (hidasib/GRU4Rec_PyTorch_Official), with interchangeable heads.

    item → embedding (constrained: the head's output item matrix; or a separate table)
         → dropout (training only) → GRU layers, each followed by dropout (training only)
         → head → exact log-probabilities over all items

As in the official code, the hidden state carried to the next step is the layer output *after*
dropout. The session-parallel loop zeroes a slot's state exactly once, when a new session takes
the slot (:func:`carry_state`), in training and evaluation alike.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig, variant_of
from .heads import Head, head_for, uniform_init_

def model_label(config) -> str:
    """A short name for a model configuration (a ModelConfig or its dict): "softmax d=64", "mos d=64 K=4",
    "mol d=64 P=2×2", "softmax-dd d=64" (a separate input embedding, see config.variant_of)."""
    config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    label = f"{variant_of(config)} d={config['hidden_dim']}"
    if config["head"] == "mos":
        return label + f" K={config['n_experts']}"
    if config["head"] == "mol":
        return label + f" P={config.get('mol_context_components', 2)}×{config.get('mol_item_components', 2)}"
    return label


def unique_labels(configs, paths) -> list[str]:
    """:func:`model_label` of each config, told apart where two coincide: every one of them gets its
    file's stem ("softmax d=8 (run-a)"), and a count if even those coincide ("… #2").

    The one labelling of rank.json, reach.json and compare.json, so a model has the same name in all.
    """
    labels = [model_label(c) for c in configs]
    labels = [f"{label} ({Path(path).stem})" if labels.count(label) > 1 else label for label, path in zip(labels, paths)]
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if labels.count(label) == 1 or seen[label] == 1 else f"{label} #{seen[label]}")
    return out


def carry_state(hidden: torch.Tensor, keep: np.ndarray | None, reset: np.ndarray) -> torch.Tensor:
    """The state for the next session-parallel step: drop finished rows, zero rows of new sessions.

    hidden: (n_layers, n_active_before, d) → (n_layers, n_active, d), cut from the graph (one-step
    truncated backprop).
    """
    hidden = hidden.detach()
    if keep is not None:
        hidden = hidden[:, torch.from_numpy(keep).to(hidden.device)]
    if reset.any():
        hidden = hidden.masked_fill(torch.from_numpy(reset).to(hidden.device)[None, :, None], 0.0)
    return hidden


class GRU4Rec(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.head: Head = head_for(config)
        self.input_embedding = (nn.Embedding(config.n_items, config.input_dim)
                                if config.embedding == "separate" else None)
        self.dropout_embedding = nn.Dropout(config.dropout_embedding)
        self.grus = nn.ModuleList(nn.GRUCell(config.input_dim if layer == 0 else config.hidden_dim,
                                             config.hidden_dim) for layer in range(config.n_layers))
        self.dropout_hidden = nn.Dropout(config.dropout_hidden)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """GRU4Rec's scheme: each gate's matrix U(±sqrt(6/(fan_in+fan_out))), biases zero."""
        self.head.reset_parameters(generator)
        if self.input_embedding is not None:
            uniform_init_(self.input_embedding.weight, self.config.n_items, self.config.input_dim, generator)
        for gru in self.grus:
            hidden = gru.hidden_size
            for weight in (gru.weight_ih, gru.weight_hh):  # (3·hidden, fan_in): reset, update, new gates
                for gate in weight.split(hidden, dim=0):
                    uniform_init_(gate, gate.shape[1], hidden, generator)
            nn.init.zeros_(gru.bias_ih)
            nn.init.zeros_(gru.bias_hh)

    def set_sparse_gradients(self, sparse: bool) -> None:
        """Indexed optimizers (Adagrad as in GRU4Rec) update only the item rows a step touched."""
        self.head.sparse_gradients = sparse

    def touched_rows(self, inputs: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None):
        """The head's :meth:`~softmax_bottleneck.heads.Head.touched_rows` for a training step: the inputs read
        the item matrix too when it is the input embedding (constrained)."""
        return self.head.touched_rows(targets, negatives, inputs if self.input_embedding is None else None)

    def init_hidden(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(self.config.n_layers, batch_size, self.config.hidden_dim, device=device)

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        if self.input_embedding is None:
            return self.head.embed_items(items)
        return F.embedding(items, self.input_embedding.weight, sparse=self.head.sparse_gradients)

    def step(self, items: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One event per row: items (batch,), hidden (n_layers, batch, d) → (output (batch, d), new hidden)."""
        x = self.dropout_embedding(self.embed(items))
        states = []
        for layer, gru in enumerate(self.grus):
            x = self.dropout_hidden(gru(x, hidden[layer]))
            states.append(x)
        return x, torch.stack(states)

    def log_probs(self, output: torch.Tensor) -> torch.Tensor:
        """Exact log p(item | context) over all items, (batch, n_items)."""
        return self.head.log_probs(output)
