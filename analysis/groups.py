"""Evaluate checkpoints on the same held-out events, and group the seeds of one configuration.

One pass per checkpoint (softmax_bottleneck.evaluation.evaluate_ranks over
softmax_bottleneck.replay): ranks, head health and, on the synthetic world, the KL to the truth
and the oracle's ranks all come from the same blocks. Checkpoints whose model and training
settings differ only in the seed form a :class:`Group`; every per-group number is the mean over
its seeds.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from softmax_bottleneck.checkpoint import model_from_checkpoint
from softmax_bottleneck.foreign.adapter import foreign_summary
from softmax_bottleneck.errors import InputError
from softmax_bottleneck.evaluation import HeadHealth, epoch_record, evaluate_ranks
from softmax_bottleneck.metrics import event_values, target_ranks
from softmax_bottleneck.model import GRU4Rec, unique_labels
from softmax_bottleneck.replay import ContextBlock
from softmax_bottleneck.synthetic import SyntheticWorld


@dataclasses.dataclass
class Group:
    """Checkpoints of one configuration (seeds), evaluated on the same events (sorted by session, position)."""

    label: str
    config: dict
    paths: list[str] = dataclasses.field(default_factory=list)
    seeds: list = dataclasses.field(default_factory=list)
    ranks: list[np.ndarray] = dataclasses.field(default_factory=list)  # one (n_events,) array per seed
    health: list[dict] = dataclasses.field(default_factory=list)  # one HeadHealth.result() per seed
    epochs: list[dict] = dataclasses.field(default_factory=list)  # one epoch_record per seed
    train_speeds: list = dataclasses.field(default_factory=list)  # per seed: median training events/s, or None
    eval_speeds: list[float] = dataclasses.field(default_factory=list)  # per seed: evaluation events/s
    kls: list[float] = dataclasses.field(default_factory=list)  # per seed: KL(truth ‖ model), synthetic only
    tuning: dict | None = None  # where the (shared) settings come from: a tuner's budget, or None
    foreign: dict | None = None  # a model trained elsewhere: foreign.adapter.foreign_summary
    _values: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)  # (metric, k) → per-event

    @property
    def train_events_per_second(self) -> float | None:
        known = [s for s in self.train_speeds if s is not None]
        return float(np.mean(known)) if known else None

    @property
    def eval_events_per_second(self) -> float:
        return float(np.mean(self.eval_speeds))

    @property
    def kl(self) -> float | None:
        return float(np.mean(self.kls)) if self.kls else None

    def health_summary(self) -> dict:
        """Each health measure averaged over seeds (lists element-wise)."""
        return {key: (np.mean([h[key] for h in self.health], axis=0).tolist() if isinstance(value, list)
                      else float(np.mean([h[key] for h in self.health])))
                for key, value in self.health[0].items()}

    def seed_values(self, metric: str, k: int) -> list[float]:
        return [float(event_values(r, metric, k).mean()) for r in self.ranks]

    def seed_event_values(self, metric: str, k: int) -> np.ndarray:
        """Per-event values of each seed, (n_seeds, n_events); computed once per metric and K."""
        if (metric, k) not in self._values:
            self._values[(metric, k)] = np.stack([event_values(r, metric, k) for r in self.ranks])
        return self._values[(metric, k)]

    def event_values(self, metric: str, k: int) -> np.ndarray:
        """Per-event values averaged over seeds, (n_events,) (breakdowns read them for every bin and cell)."""
        return self.seed_event_values(metric, k).mean(axis=0)


class TruthKL:
    """An evaluation observer on the synthetic world: Σ KL(truth ‖ model) over contexts, and the oracle's ranks."""

    def __init__(self, world: SyntheticWorld, catalogue: np.ndarray, *, oracle: bool = False, cache: dict | None = None):
        self.world, self.catalogue = world, catalogue
        self.parts: list[float] = []  # each block's Σ KL, added up in block order (the same under torchrun)
        self.count = 0
        self.oracle_ranks: list[np.ndarray] | None = [] if oracle else None
        self.cache = {} if cache is None else cache  # previous items' bytes → true log-probs: shared by all models

    def truth(self, previous_items: np.ndarray) -> torch.Tensor:
        key = np.ascontiguousarray(previous_items).tobytes()
        if key not in self.cache:
            self.cache[key] = torch.from_numpy(self.world.log_probs(self.catalogue[previous_items], items=self.catalogue))
        return self.cache[key]

    def __call__(self, block: ContextBlock, log_p: torch.Tensor) -> None:
        truth = self.truth(block.previous_items)
        self.parts.append(float((truth.exp() * (truth - log_p.double().cpu())).sum()))
        self.count += len(block.targets)
        if self.oracle_ranks is not None:
            self.oracle_ranks.append(target_ranks(truth, torch.from_numpy(block.targets).long()).numpy())

    def state(self) -> tuple:
        return self.parts, self.count, self.oracle_ranks

    def merge(self, states: list[tuple], owners: list[int]) -> None:
        """All ranks' blocks in block order (see evaluate_ranks)."""
        from softmax_bottleneck.distributed import interleave

        self.parts = interleave([s[0] for s in states], owners)
        self.count = sum(s[1] for s in states)
        if self.oracle_ranks is not None:
            self.oracle_ranks = interleave([s[2] for s in states], owners)

    @property
    def total(self) -> float:
        total = 0.0
        for part in self.parts:
            total += part
        return total

    @property
    def kl(self) -> float:
        return self.total / self.count


def group_key(checkpoint: dict) -> str:
    """Model and training settings but the seed: what makes checkpoints replicates of one configuration."""
    train = {k: v for k, v in checkpoint["train_config"].items() if k != "seed"}
    return json.dumps([checkpoint["model_config"], train], sort_keys=True)


def _median_training_speed(checkpoint: dict) -> float | None:
    speeds = [m["events_per_second"] for m in checkpoint.get("metrics", []) if "events_per_second" in m]
    return statistics.median(speeds) if speeds else None


def evaluate_groups(paths: list[Path], checkpoints: list[dict], dataset, split, ks, *, device="cpu",
                    batch_size: int = 512) -> tuple[list[Group], np.ndarray, np.ndarray | None, GRU4Rec]:
    """(groups in first-seen order, events (n, 3) of session, position, target, the oracle's ranks on
    the synthetic world or None, the first checkpoint's model).

    Every checkpoint must give the same events as the first; the same seed twice is not a replicate
    and starts a group of its own."""
    world = SyntheticWorld.from_arrays(dataset.world) if dataset.world is not None else None
    catalogue = dataset.item_ids.astype(np.int64)
    groups: dict[str, Group] = {}
    events = oracle = baseline_model = None
    truths: dict = {}  # every model sees the same blocks: the truth of each is computed once
    for path, checkpoint in zip(paths, checkpoints):
        model = model_from_checkpoint(checkpoint, device)
        if baseline_model is None:
            baseline_model = model
        health = HeadHealth(dataset.support, ks)
        truth = None if world is None else TruthKL(world, catalogue, oracle=oracle is None, cache=truths)
        result = evaluate_ranks(model, split, batch_size=batch_size, device=device, health=health,
                                observers=() if truth is None else (truth,))
        order = np.lexsort((result.positions, result.sessions))
        these = np.stack([result.sessions[order], result.positions[order], result.targets[order]], axis=1)
        if events is None:
            events = these
            if truth is not None:
                oracle = np.concatenate(truth.oracle_ranks)[order]
        elif not np.array_equal(these, events):
            raise InputError(f"{path}: its evaluated events differ from those of {paths[0]}")
        key = group_key(checkpoint)
        seed = checkpoint["train_config"].get("seed")
        while key in groups and seed in groups[key].seeds:
            key += "+"
        group = groups.setdefault(key, Group("", checkpoint["model_config"]))
        group.paths.append(str(path))
        group.seeds.append(seed)
        group.ranks.append(result.ranks[order])
        group.health.append(health.result())
        group.epochs.append(epoch_record(checkpoint))
        group.train_speeds.append(_median_training_speed(checkpoint))
        group.eval_speeds.append(len(result.ranks) / max(result.seconds, 1e-9))
        if truth is not None:
            group.kls.append(truth.kl)
        group.tuning = checkpoint.get("tuning")
        group.foreign = foreign_summary(checkpoint, split)
    groups = list(groups.values())
    for group, label in zip(groups, unique_labels([g.config for g in groups], [g.paths[0] for g in groups])):
        group.label = label
    return groups, events, oracle, baseline_model
