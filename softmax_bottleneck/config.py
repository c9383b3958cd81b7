"""The settings of a model and of its training: plain dataclasses, light to import.

Every command builds its flags from these (``softmax_bottleneck.cli.add_config_arguments``) before it
imports torch, so ``--help`` and a bad flag answer at once. Both travel as ``dataclasses.asdict``
inside checkpoints. ``HEADS`` names the output heads; their code is in :mod:`softmax_bottleneck.heads`.
"""

from __future__ import annotations

import dataclasses
import math
import re

HEADS = ("softmax", "mos", "sigsoftmax", "mol")
OPTIMIZERS = ("adagrad", "adam")
METRICS = ("recall", "mrr", "ndcg")  # the ranking metrics (metrics.metric_table)
TIES = ("conservative", "standard")  # how a target tied with other items is ranked (metrics.target_ranks)
SELECT_METRIC = re.compile(r"^(recall|mrr|ndcg)@([1-9][0-9]*)$")
EMBEDDINGS = ("constrained", "separate")
DECOUPLED = "-dd"  # a variant's suffix for a separate input embedding: dropout and decoupling (Lin 2021)
VARIANTS = HEADS + ("softmax" + DECOUPLED,)  # what a study can sweep: every head, and D&D's softmax


def variant_of(config) -> str:
    """The head's name, with ``-dd`` when the input embedding is separate from the output item matrix:
    "softmax-dd" is the softmax of "dropout and decoupling" (its dropout before the head is the
    ``dropout_hidden`` every model has). `config` is a ModelConfig or its dict."""
    config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    if config.get("foreign"):  # a model trained elsewhere: "recbole-gru4rec", "official-gru4rec" (foreign.adapter)
        return config["foreign"]
    return config["head"] + (DECOUPLED if config.get("embedding") == "separate" else "")


def variant_settings(variant: str) -> dict:
    """The ModelConfig fields that make `variant` (a name in VARIANTS): {"head": …, "embedding": …}."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    head = variant.removesuffix(DECOUPLED)
    return {"head": head, "embedding": "separate" if variant != head else "constrained"}


def check_finite(config) -> None:
    """Every float field of a config dataclass must be a finite number: NaN passes most range checks
    (every comparison with it is False) and inf trains for an epoch before it fails.

    >>> check_finite(TrainConfig(lr=0.1))
    >>> check_finite(TrainConfig(lr=float("inf")))
    Traceback (most recent call last):
    ...
    ValueError: lr must be a finite number, got inf
    """
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{field.name} must be a finite number, got {value}")


IDENTITY = ("head", "variant", "hidden_dim", "n_experts")


def describe(config) -> dict:
    """The fields by which every results table names a model's family and size: head, variant,
    hidden_dim, n_experts (rank.json, reach.json, compare.json, metrics.csv, capacity_sweep.csv)."""
    config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    return dict(zip(IDENTITY, (config["head"], variant_of(config), config["hidden_dim"], config["n_experts"])))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network."""

    n_items: int = dataclasses.field(default=0, metadata={"help": "catalogue size (set from the data)"})
    head: str = dataclasses.field(default="softmax", metadata={"help": "output head", "choices": HEADS})
    n_experts: int | None = dataclasses.field(default=None, metadata={
        "help": "MoS experts K (default 4 for mos; softmax is K=1)", "metavar": "K"})
    hidden_dim: int = dataclasses.field(default=64, metadata={"help": "GRU layer size d", "metavar": "D"})
    n_layers: int = dataclasses.field(default=1, metadata={"help": "stacked GRU layers", "metavar": "N"})
    embedding: str = dataclasses.field(default="constrained", metadata={
        "help": "constrained: input embedding = output item matrix; separate: its own table",
        "choices": EMBEDDINGS})
    embedding_dim: int | None = dataclasses.field(default=None, metadata={
        "help": "size of a separate input embedding (default: hidden dim)", "metavar": "D"})
    item_bias: bool = dataclasses.field(default=True, metadata={
        "help": "per-item output bias (raises the softmax rank cap from d+1 to d+2)"})
    dropout_embedding: float = dataclasses.field(default=0.0, metadata={
        "help": "dropout on the input embedding (training only)", "metavar": "P"})
    dropout_hidden: float = dataclasses.field(default=0.4, metadata={
        "help": "dropout on each GRU layer's output (training only)", "metavar": "P"})
    mol_context_components: int = dataclasses.field(default=2, metadata={
        "help": "MoL: context-side embeddings P_q", "metavar": "P"})
    mol_item_components: int = dataclasses.field(default=2, metadata={
        "help": "MoL: item-side embeddings P_x (P_q·P_x dot products are mixed)", "metavar": "P"})
    mol_dim: int | None = dataclasses.field(default=None, metadata={
        "help": "MoL: size of each component embedding (default: hidden dim)", "metavar": "E"})
    mol_temperature: float = dataclasses.field(default=0.05, metadata={
        "help": "MoL: the component dot products are of l2-normalised embeddings, divided by this", "metavar": "T"})

    def __post_init__(self):
        check_finite(self)
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.n_experts is None:
            object.__setattr__(self, "n_experts", 4 if self.head == "mos" else 1)
        if self.n_experts < 1:
            raise ValueError(f"n_experts must be >= 1, got {self.n_experts}")
        if self.head != "mos" and self.n_experts != 1:
            raise ValueError(f"n_experts={self.n_experts} needs --head mos (a {self.head} head has one expert)")
        if self.n_items < 0:
            raise ValueError(f"n_items must be >= 0, got {self.n_items}")
        for name in ("hidden_dim", "n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {self.embedding!r}")
        if self.embedding_dim is not None and (self.embedding_dim < 1 or self.embedding == "constrained"):
            raise ValueError("embedding_dim must be >= 1 and needs --embedding separate")
        for name in ("dropout_embedding", "dropout_hidden"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("mol_context_components", "mol_item_components"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.mol_dim is not None and self.mol_dim < 1:
            raise ValueError(f"mol_dim must be >= 1, got {self.mol_dim}")
        if not self.mol_temperature > 0:
            raise ValueError(f"mol_temperature must be > 0, got {self.mol_temperature}")

    @property
    def input_dim(self) -> int:
        if self.embedding == "constrained":
            return self.hidden_dim
        return self.embedding_dim or self.hidden_dim


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train."""

    epochs: int = dataclasses.field(default=10, metadata={"help": "total epochs", "metavar": "N"})
    batch_size: int = dataclasses.field(default=32, metadata={"help": "session-parallel slots", "metavar": "B"})
    optimizer: str = dataclasses.field(default="adagrad", metadata={
        "help": "adagrad: GRU4Rec's Adagrad with momentum; adam", "choices": OPTIMIZERS})
    lr: float = dataclasses.field(default=0.2, metadata={"help": "learning rate", "metavar": "X"})
    momentum: float = dataclasses.field(default=0.2, metadata={"help": "Adagrad momentum", "metavar": "X"})
    n_sample: int = dataclasses.field(default=2048, metadata={
        "help": "shared negative samples per step (0: in-batch negatives only)", "metavar": "N"})
    sample_alpha: float = dataclasses.field(default=0.5, metadata={
        "help": "negatives drawn ∝ support^alpha", "metavar": "X"})
    logq: float = dataclasses.field(default=1.0, metadata={"help": "weight of the logQ correction", "metavar": "X"})
    full_softmax: bool = dataclasses.field(default=False, metadata={
        "help": "train on the softmax over all items instead of sampled candidates"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of initialisation, dropout and sampling"})
    eval_batch_size: int = dataclasses.field(default=512, metadata={
        "help": "sessions in parallel for validation", "metavar": "B"})
    select_metric: str = dataclasses.field(default="mrr@20", metadata={
        "help": "validation metric that picks the epoch whose weights the checkpoint keeps", "metavar": "M@K"})
    patience: int = dataclasses.field(default=0, metadata={
        "help": "stop after N epochs without a better validation metric (0: never)", "metavar": "N"})

    def __post_init__(self):
        check_finite(self)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        for name in ("n_sample", "sample_alpha", "logq"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not SELECT_METRIC.match(self.select_metric):
            raise ValueError(f"select_metric must look like mrr@20 (recall, mrr or ndcg @ K >= 1), "
                             f"got {self.select_metric!r}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")

    @property
    def select_cutoff(self) -> int:
        return int(SELECT_METRIC.match(self.select_metric).group(2))
