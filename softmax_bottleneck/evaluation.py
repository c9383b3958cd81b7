"""Full-ranking evaluation: every next-item event of a held-out split ranked against all items.

The command is ``python -m softmax_bottleneck.evaluate``. :func:`evaluate_ranks` replays a split
(:func:`softmax_bottleneck.replay.replay_split`), scores every item by its exact log-probability and
ranks each target with explicit ties (:func:`softmax_bottleneck.metrics.target_ranks`); observers
such as :class:`HeadHealth` ride on the same pass.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import distributed
from .data import SessionSplit
from .errors import InputError
from .metrics import target_ranks
from .model import GRU4Rec
from .replay import ContextBlock, replay_split


@dataclasses.dataclass
class EventRanks:
    """One entry per evaluated event: which session, which position, which target, its rank."""

    sessions: np.ndarray  # (n_events,) int64 session index within the split
    positions: np.ndarray  # (n_events,) int64 position of the target in its session (1-based next item)
    targets: np.ndarray  # (n_events,) int64 item index
    ranks: np.ndarray  # (n_events,) int64 1-based rank among all items
    target_log_probs: np.ndarray  # (n_events,) float64 log p(target | context)
    seconds: float = 0.0

    @property
    def log_likelihood(self) -> float:
        """Mean log-probability of the observed next items."""
        return float(np.mean(self.target_log_probs))

    def to_frame(self, item_ids: np.ndarray | None = None) -> pd.DataFrame:
        frame = pd.DataFrame({"session": self.sessions, "position": self.positions, "target": self.targets,
                              "rank": self.ranks, "log_prob": self.target_log_probs})
        if item_ids is not None:
            frame.insert(3, "target_id", np.asarray(item_ids)[self.targets])
        return frame.sort_values(["session", "position"], kind="stable", ignore_index=True)


SATURATED = 0.99  # |tanh| above this: an expert-state coordinate whose gradient has (almost) vanished


class HeadHealth:
    """What the top-k lists and a mixture's internals look like: a collapsed MoS shows here.

    - ``coverage@K``: share of the catalogue in at least one event's top K;
    - ``support_recommended@K`` against ``support_target``: mean training support of the recommended
      items and of the targets (a popularity-bias indicator);
    - for mixtures: ``saturated_share`` (expert-state coordinates with |h_k| > 0.99), ``prior_entropy``
      (mean entropy of π, nats; its maximum is log K) and ``expert_top_share`` (share of contexts in which
      each expert has the largest prior weight).

    Top-K lists come from ``torch.topk``: among items tied at the K-th score, which ones are listed is
    unspecified, so coverage counts one of the tied orders.
    """

    def __init__(self, support, ks=(20,)):
        self.support = torch.as_tensor(np.asarray(support), dtype=torch.float64)
        self.ks = tuple(sorted(set(ks)))
        self.seen = {k: torch.zeros(len(self.support), dtype=torch.bool) for k in self.ks}
        self.n_events, self.saturated, self.coordinates, self.top = 0, 0, 0, None
        # each block's float sums, added up in block order by result(): the same numbers however the blocks
        # were shared among torchrun's ranks (merge)
        self.sums: list[tuple] = []  # (support of the top-k per k, support of the targets, prior entropy)

    def add(self, log_p: torch.Tensor, targets: torch.Tensor, mixture) -> None:
        """log_p (batch, n_items), targets (batch,), mixture: the head's ``mixture_states`` or None."""
        top = log_p.topk(min(max(self.ks), log_p.shape[1]), dim=1).indices.cpu()  # (batch, K)
        for k in self.ks:
            self.seen[k][top[:, :k].reshape(-1)] = True
        recommended = tuple(float(self.support[top[:, :k]].sum()) for k in self.ks)
        entropy = 0.0
        self.n_events += len(targets)
        if mixture is not None:
            log_prior, states = mixture
            self.saturated += int((states.abs() > SATURATED).sum())
            self.coordinates += states.numel()
            entropy = float(-(log_prior.exp() * log_prior).sum())
            counts = torch.bincount(log_prior.argmax(dim=1).cpu(), minlength=log_prior.shape[1])
            self.top = counts if self.top is None else self.top + counts
        self.sums.append((recommended, float(self.support[targets.cpu()].sum()), entropy))

    def state(self) -> dict:
        """What :meth:`merge` needs from this rank's share of the blocks."""
        return {"seen": self.seen, "n_events": self.n_events, "saturated": self.saturated,
                "coordinates": self.coordinates, "top": self.top, "sums": self.sums}

    def merge(self, states: list[dict], owners: list[int]) -> None:
        """Become the health of all ranks' blocks: `states` one per rank, `owners` the rank of each block."""
        from .distributed import interleave

        self.seen = {k: torch.stack([s["seen"][k] for s in states]).any(dim=0) for k in self.ks}
        for key in ("n_events", "saturated", "coordinates"):
            setattr(self, key, sum(s[key] for s in states))
        tops = [s["top"] for s in states if s["top"] is not None]
        self.top = torch.stack(tops).sum(dim=0) if tops else None
        self.sums = interleave([s["sums"] for s in states], owners)

    def result(self) -> dict:
        recommended, target_support, entropy = [0.0] * len(self.ks), 0.0, 0.0
        for block_recommended, block_target, block_entropy in self.sums:  # in block order, one sum at a time
            recommended = [total + value for total, value in zip(recommended, block_recommended)]
            target_support += block_target
            entropy += block_entropy
        out = {}
        for k, total in zip(self.ks, recommended):
            out[f"coverage@{k}"] = float(self.seen[k].double().mean())
            out[f"support_recommended@{k}"] = total / (self.n_events * k)
        out["support_target"] = target_support / max(self.n_events, 1)
        if self.top is not None:
            out["saturated_share"] = self.saturated / self.coordinates
            out["prior_entropy"] = entropy / self.n_events
            out["prior_entropy_max"] = float(np.log(len(self.top)))
            out["expert_top_share"] = (self.top.double() / self.n_events).tolist()
        return out


CHUNK_SCORES = 1 << 22  # scores per chunk of rows (16 MB of float32): big blocks cost fresh pages every time


def _finite(model, log_p: torch.Tensor) -> bool:
    """Whether every log-probability is finite (a foreign model's unknown items excepted): by row sums, which
    are finite iff every entry is (log-probabilities are ≤ 0), without a boolean copy of the block."""
    if hasattr(model, "finite"):
        return model.finite(log_p)
    return bool(torch.isfinite(log_p.sum(dim=1)).all())


@torch.no_grad()
def evaluate_ranks(model: GRU4Rec, split: SessionSplit, *, ties: str = "conservative", batch_size: int = 512,
                   device: torch.device | str = "cpu", progress: bool = False, health: HeadHealth | None = None,
                   observers: Sequence[Callable[[ContextBlock, torch.Tensor], None]] = ()) -> EventRanks:
    """Rank every next-item event of `split` under `model` (in eval mode: no dropout).

    With `health`, each block's top-k lists and mixture states are added to it; each of
    `observers` is called with every block and its log-probabilities (rows, n_items), so other
    measures ride on the same pass (see analysis.groups). A block of the session-parallel loop is
    scored in chunks of rows of at most CHUNK_SCORES scores, so memory stays bounded whatever the
    catalogue, and the tensors are reused rather than fresh pages.

    Under torchrun (softmax_bottleneck.distributed) every rank replays the same blocks and scores
    the chunks it owns; the events' columns, the health and every observer (which must then have
    ``state()`` and ``merge(states, owners)``, as HeadHealth and analysis.groups.TruthKL do) are
    gathered back in chunk order on every rank: the single process's numbers, bit for bit."""
    if split.n_transitions == 0:
        raise InputError("the split has no next-item events to evaluate")
    n_events = split.n_transitions
    # every event's numbers go straight into arrays made once: a small array kept per chunk would pin the
    # freed chunk memory around it in the heap, and memory would grow with the events instead of staying flat
    columns = [np.empty(n_events, dtype=np.int64) for _ in range(4)] + [np.empty(n_events, dtype=np.float64)]
    done = 0
    start = time.perf_counter()
    bar = tqdm(total=split.n_transitions, unit="ev", disable=not progress or not distributed.is_main(), desc="evaluate", leave=False)
    rows = max(1, CHUNK_SCORES // getattr(model.head, "scores_per_row", model.head.n_items))  # MoS: K × n per row
    sharded = distributed.active()
    if sharded:
        unmergeable = [o for o in observers if not hasattr(o, "merge")]
        if unmergeable:
            raise InputError(f"{type(unmergeable[0]).__name__} cannot be gathered across torchrun's ranks; "
                             "run this on one process")
    owners, mine = [], []  # each chunk's rank; this rank's chunks as (first event, last event + 1)
    for whole in replay_split(model, split, batch_size=batch_size, device=device):
        for first in range(0, len(whole.targets), rows):
            block = whole.rows(first, first + rows)
            owners.append(distributed.owner(len(owners)))
            if owners[-1] != distributed.rank():
                done += len(block.targets)  # another rank scores this chunk
                bar.update(len(block.targets))
                continue
            mine.append((done, done + len(block.targets)))
            targets = torch.from_numpy(block.targets).to(device)
            if health is not None and isinstance(model, GRU4Rec):  # (rows, n_items), a mixture's states made once
                log_p, states = model.head.log_probs_and_states(block.output)
            else:  # a foreign model's log_probs masks the items it does not know
                log_p = model.log_probs(block.output)
                states = model.head.mixture_states(block.output) if health is not None else None
            if not _finite(model, log_p):
                raise InputError(f"the {model.config.head} head produced non-finite log-probabilities")
            ranks = target_ranks(log_p, targets, ties)
            if health is not None:
                health.add(log_p, targets, states)
            for observe in observers:
                observe(block, log_p)
            target_log_p = log_p.gather(1, targets[:, None])[:, 0]
            stop = done + len(block.targets)
            for column, values in zip(columns, (block.sessions, block.positions, block.targets, ranks.cpu(),
                                                target_log_p.cpu())):
                column[done:stop] = values
            done = stop
            bar.update(len(block.targets))
    bar.close()
    if done != n_events:
        raise RuntimeError(f"the replay gave {done} events for a split of {n_events}")
    if sharded:
        _gather_chunks(columns, mine, owners, [o for o in (health, *observers) if o is not None])
    return EventRanks(*columns, seconds=time.perf_counter() - start)


def _gather_chunks(columns: list[np.ndarray], mine: list[tuple[int, int]], owners: list[int], observers: list) -> None:
    """Fill every rank's columns with the other ranks' chunks, and merge the observers (in place)."""
    pieces = distributed.gather_objects([(a, b, [column[a:b] for column in columns]) for a, b in mine])
    for who, theirs in enumerate(pieces):
        if who != distributed.rank():
            for a, b, values in theirs:
                for column, part in zip(columns, values):
                    column[a:b] = part
    for observer in observers:
        observer.merge(distributed.gather_objects(observer.state()), owners)


def epoch_record(checkpoint: dict) -> dict:
    """Which epoch's weights a checkpoint holds, and by which rule they were chosen."""
    selection = checkpoint.get("selection") or {}
    return {"epoch": checkpoint.get("best_epoch", checkpoint.get("epoch")), "epochs_trained": checkpoint.get("epoch"),
            "select_metric": selection.get("metric"), "patience": selection.get("patience"),
            "threads": checkpoint.get("threads")}


def describe_epoch(record: dict) -> str:
    if record.get("select_metric") is None:
        return f"weights of epoch {record['epoch']} (the last; no validation selection recorded)"
    if record.get("epochs_trained") is None:
        return f"weights of epoch {record['epoch']}, the best valid {record['select_metric']} (patience {record['patience']})"
    return (f"weights of epoch {record['epoch']} of {record['epochs_trained']}, the best valid "
            f"{record['select_metric']} (patience {record['patience']})")


def describe_health(record: dict, ks) -> str:
    """One or two lines: coverage and popularity of the top-k lists; a mixture's saturation and prior."""
    k = max(ks)
    line = (f"top-{k}: {record[f'coverage@{k}']:.1%} of the catalogue recommended; mean training support "
            f"{record[f'support_recommended@{k}']:,.0f} recommended vs {record['support_target']:,.0f} targets")
    if "saturated_share" in record:
        shares = ", ".join(f"{s:.0%}" for s in record["expert_top_share"])
        line += (f"\nmixture: {record['saturated_share']:.1%} of expert-state coordinates saturated (|h| > "
                 f"{SATURATED}); prior entropy {record['prior_entropy']:.3f} of {record['prior_entropy_max']:.3f}; "
                 f"top expert share {shares}")
    return line
