"""The built-in synthetic world: a session process whose true next-item distribution is known.

Items have Zipf popularity ``pop``. Each item ``i`` has ``n_successors`` successors ``S_i`` with
weights ``w_i`` (each item is a successor of exactly ``n_successors`` others, so every item is
reachable). Sessions start from ``pop`` and follow the first-order process

    p(j | previous item i) = (1 - ε) · w_i[j] · [j ∈ S_i] + ε · pop[j]

so the true context × item log-probability matrix has a row per distinct previous item and rank
≈ ``n_items``: far above the d + 1 cap of a softmax head with a small hidden size d.

A dial on the bottleneck (``low_rank`` r > 0, ``sparse_weight`` s): the true next-item logits are
instead a rank-r part plus a sparse successor part,

    l(j | i) = log pop[j] + c · u_i·v_j / √r + s · [j ∈ S_i],      p(· | i) = softmax(l(· | i)),

with u_i, v_j ~ N(0, I_r) and c = ``factor_scale``. At s = 0 the truth is exactly a softmax of
dimension r with an item bias (h_i ∝ u_i, W ∝ v, b = log pop): a softmax head with d ≥ r can
represent it. As s grows the successor indicator, a matrix of rank ≈ ``n_items``, takes over: the
true log-prob matrix's rank and its multi-modality grow beyond any small d. With r = 0 (the
default) the world is the successor process above, drawn from the same random numbers as before.

Self-transitions have probability ε·pop[i] > 0, so the true log-probabilities are finite; the
synthetic data is therefore prepared *without* consecutive-duplicate removal, keeping the
prepared sessions exactly a sample of this process.

Timestamps increase with the session's index and a user's sessions lie ≥ 2 hours apart, so the
standard 1-hour session gap recovers the generated sessions and the temporal split applies.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .config import check_finite
from .data.loaders import Interactions
from .data.preprocess import PrepareConfig, prepare
from .data.prepared import PreparedDataset

EVENT_SPACING_S = 60  # seconds between events of a session
USER_GAP_S = 7200  # at least this much idle time between two sessions of one user


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """The world and the sample drawn from it; defaults keep the whole pipeline quick on 2 cores."""

    n_items: int = dataclasses.field(default=500, metadata={"help": "items in the world", "metavar": "N"})
    n_sessions: int = dataclasses.field(default=12_000, metadata={"help": "sessions to draw", "metavar": "N"})
    mean_session_length: float = dataclasses.field(default=8.0, metadata={
        "help": "mean events per session (1 + geometric, at least 2)", "metavar": "L"})
    max_session_length: int = dataclasses.field(default=50, metadata={"help": "cap on events per session",
                                                                      "metavar": "L"})
    n_successors: int = dataclasses.field(default=4, metadata={
        "help": "successors per item (the sparse part of the truth)", "metavar": "N"})
    epsilon: float = dataclasses.field(default=0.1, metadata={
        "help": "weight of the popularity part of the truth", "metavar": "EPS"})
    zipf_exponent: float = dataclasses.field(default=1.0, metadata={"help": "popularity ∝ rank^-s",
                                                                    "metavar": "S"})
    sessions_per_user: int = dataclasses.field(default=4, metadata={"help": "sessions each user makes",
                                                                    "metavar": "N"})
    low_rank: int = dataclasses.field(default=0, metadata={
        "help": "rank r of a low-rank part of the true logits (0: the successor world)", "metavar": "R"})
    sparse_weight: float = dataclasses.field(default=1.0, metadata={
        "help": "with --low-rank: nats added to each item's successors (0: the truth is a softmax of dimension r)",
        "metavar": "S"})
    factor_scale: float = dataclasses.field(default=2.0, metadata={
        "help": "with --low-rank: standard deviation (nats) of the low-rank part of the logits", "metavar": "C"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the world and the sample"})

    def __post_init__(self):
        check_finite(self)
        if self.n_items < 3:
            raise ValueError(f"n_items must be >= 3, got {self.n_items}")
        if not 1 <= self.n_successors < self.n_items:
            raise ValueError(f"n_successors must be in [1, n_items), got {self.n_successors}")
        if self.n_sessions < 10:
            raise ValueError(f"n_sessions must be >= 10, got {self.n_sessions}")
        if not 2 <= self.mean_session_length <= self.max_session_length:
            raise ValueError("need 2 <= mean_session_length <= max_session_length, got "
                             f"{self.mean_session_length} and {self.max_session_length}")
        if not 0 < self.epsilon <= 1:
            raise ValueError(f"epsilon must be in (0, 1] (ε = 0 gives -inf true log-probabilities), "
                             f"got {self.epsilon}")
        if self.zipf_exponent < 0:
            raise ValueError(f"zipf_exponent must be >= 0, got {self.zipf_exponent}")
        if self.sessions_per_user < 1:
            raise ValueError(f"sessions_per_user must be >= 1, got {self.sessions_per_user}")
        if not 0 <= self.low_rank <= self.n_items:
            raise ValueError(f"low_rank must be in [0, n_items], got {self.low_rank}")
        if self.sparse_weight < 0 or self.factor_scale < 0:
            raise ValueError(f"sparse_weight and factor_scale must be >= 0, got {self.sparse_weight} and "
                             f"{self.factor_scale}")


@dataclasses.dataclass
class SyntheticWorld:
    """Ground truth: popularity, successor sets and weights, and ε."""

    popularity: np.ndarray  # (n_items,) float64, sums to 1
    successors: np.ndarray  # (n_items, n_successors) int64, no self, no repeats in a row
    successor_weights: np.ndarray  # (n_items, n_successors) float64, rows sum to 1
    epsilon: float
    left_factors: np.ndarray | None = None  # (n_items, r) u_i of the low-rank world, else None
    right_factors: np.ndarray | None = None  # (n_items, r) v_j
    factor_scale: float = 0.0
    sparse_weight: float = 0.0

    @property
    def low_rank(self) -> int:
        return 0 if self.left_factors is None else self.left_factors.shape[1]

    @property
    def n_items(self) -> int:
        return len(self.popularity)

    @classmethod
    def generate(cls, config: SyntheticConfig, rng: np.random.Generator) -> "SyntheticWorld":
        n = config.n_items
        popularity = rng.permutation(1.0 / np.arange(1, n + 1) ** config.zipf_exponent)
        popularity /= popularity.sum()
        successors = np.empty((n, config.n_successors), dtype=np.int64)
        for column in range(config.n_successors):
            # one permutation per column, so every item gets exactly one predecessor per column;
            # entries that point to the item itself or repeat an earlier column are swapped away
            perm = rng.permutation(n)
            while True:
                clash = np.flatnonzero((perm == np.arange(n)) | (successors[:, :column] == perm[:, None]).any(axis=1))
                if len(clash) == 0:
                    break
                for i in clash:
                    j = rng.integers(n)
                    perm[i], perm[j] = perm[j], perm[i]
            successors[:, column] = perm
        raw = popularity[successors] * rng.gamma(1.0, size=successors.shape)  # popular successors weigh more
        weights = raw / raw.sum(axis=1, keepdims=True)
        world = cls(popularity=popularity, successors=successors, successor_weights=weights,
                    epsilon=float(config.epsilon))
        if config.low_rank:  # drawn after everything above, so r = 0 leaves the default world's draws alone
            world.left_factors = rng.standard_normal((n, config.low_rank))
            world.right_factors = rng.standard_normal((n, config.low_rank))
            world.factor_scale, world.sparse_weight = float(config.factor_scale), float(config.sparse_weight)
        return world

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"popularity": self.popularity, "successors": self.successors,
                  "successor_weights": self.successor_weights, "epsilon": np.array(self.epsilon)}
        if self.low_rank:
            arrays.update(left_factors=self.left_factors, right_factors=self.right_factors,
                          factor_scale=np.array(self.factor_scale), sparse_weight=np.array(self.sparse_weight))
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "SyntheticWorld":
        world = cls(popularity=arrays["popularity"], successors=arrays["successors"],
                    successor_weights=arrays["successor_weights"], epsilon=float(arrays["epsilon"]))
        if "left_factors" in arrays:
            world.left_factors, world.right_factors = arrays["left_factors"], arrays["right_factors"]
            world.factor_scale, world.sparse_weight = float(arrays["factor_scale"]), float(arrays["sparse_weight"])
        return world

    def logits(self, previous: np.ndarray) -> np.ndarray:
        """The low-rank world's true logits l(· | previous item), (n_contexts, n_items) float64."""
        previous = np.asarray(previous, dtype=np.int64)
        out = np.log(self.popularity)[None, :] + (self.factor_scale / np.sqrt(self.low_rank)) * (
            self.left_factors[previous] @ self.right_factors.T)
        out[np.arange(len(previous))[:, None], self.successors[previous]] += self.sparse_weight
        return out

    def next_item_probs(self, previous: np.ndarray) -> np.ndarray:
        """True p(next | previous item): (n_contexts, n_items) float64, rows sum to 1."""
        if self.low_rank:
            return np.exp(self.log_probs(previous))
        previous = np.asarray(previous, dtype=np.int64)
        probs = np.tile(self.epsilon * self.popularity, (len(previous), 1))
        rows = np.arange(len(previous))[:, None]
        probs[rows, self.successors[previous]] += (1 - self.epsilon) * self.successor_weights[previous]
        return probs

    def log_probs(self, previous: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """Exact true log p(next | previous) in float64, (n_contexts, n_items or len(items)).

        With `items` (world item indices of a catalogue), the distribution is conditioned on the
        next item lying in that catalogue: restricted and renormalised in log space.
        """
        if self.low_rank:
            logits = self.logits(previous)
            top = logits.max(axis=1, keepdims=True)
            log_p = logits - (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))
        else:
            log_p = np.log(self.next_item_probs(previous))
        if items is None:
            return log_p
        log_p = log_p[:, np.asarray(items, dtype=np.int64)]
        top = log_p.max(axis=1, keepdims=True)
        return log_p - (top + np.log(np.exp(log_p - top).sum(axis=1, keepdims=True)))

    def sample_sessions(self, n_sessions: int, mean_length: float, max_length: int,
                        rng: np.random.Generator) -> list[np.ndarray]:
        """Draw sessions: length 1 + Geometric (≥ 2, ≤ max), first item ∝ popularity, then the process."""
        lengths = np.minimum(1 + rng.geometric(1.0 / (mean_length - 1), size=n_sessions), max_length)
        current = _draw(np.cumsum(self.popularity), rng.random(n_sessions))
        sequence = np.empty((n_sessions, max_length), dtype=np.int64)
        sequence[:, 0] = current
        pop_cdf = np.cumsum(self.popularity)
        if self.low_rank:  # every transition row is dense: draw from its cdf
            cdf = np.cumsum(self.next_item_probs(np.arange(self.n_items)), axis=1)
            for step in range(1, int(lengths.max())):
                current = np.minimum((cdf[current] < rng.random(n_sessions)[:, None]).sum(axis=1), self.n_items - 1)
                sequence[:, step] = current
            return [sequence[s, :lengths[s]] for s in range(n_sessions)]
        succ_cdf = np.cumsum(self.successor_weights, axis=1)
        for step in range(1, int(lengths.max())):
            use_pop = rng.random(n_sessions) < self.epsilon
            from_pop = _draw(pop_cdf, rng.random(n_sessions))
            column = (succ_cdf[current] < rng.random(n_sessions)[:, None]).sum(axis=1)
            column = np.minimum(column, self.successors.shape[1] - 1)  # guard the cdf's last rounding
            from_succ = self.successors[current, column]
            current = np.where(use_pop, from_pop, from_succ)
            sequence[:, step] = current
        return [sequence[s, :lengths[s]] for s in range(n_sessions)]


def _draw(cdf: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, uniform, side="right"), len(cdf) - 1)


def generate(config: SyntheticConfig) -> tuple[SyntheticWorld, Interactions]:
    """The world and a raw interaction log drawn from it, fully determined by ``config.seed``."""
    rng = np.random.default_rng(config.seed)
    world = SyntheticWorld.generate(config, rng)
    sessions = world.sample_sessions(config.n_sessions, config.mean_session_length,
                                     config.max_session_length, rng)
    lengths = np.array([len(s) for s in sessions])
    n_users = math.ceil(config.n_sessions / config.sessions_per_user)
    # session s starts at s * spacing; user s % n_users; consecutive sessions of a user are
    # n_users * spacing apart, which leaves >= USER_GAP_S idle between them
    spacing = max(EVENT_SPACING_S, math.ceil((config.max_session_length * EVENT_SPACING_S + USER_GAP_S) / n_users))
    session_of_event = np.repeat(np.arange(config.n_sessions), lengths)
    position = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    timestamp = (1_000_000_000 + session_of_event * spacing + position * EVENT_SPACING_S).astype(np.float64)
    interactions = Interactions(
        user=(session_of_event % n_users).astype(np.int64),
        item=np.concatenate(sessions).astype(np.int32),
        timestamp=timestamp,
        item_ids=np.arange(config.n_items).astype(str),
        sessionised=False,
        source={"format": "synthetic", "config": dataclasses.asdict(config)},
    )
    return world, interactions


def prepare_synthetic(config: SyntheticConfig, prepare_config: PrepareConfig | None = None,
                      log=None) -> PreparedDataset:
    """Draw the synthetic world's sessions and run them through the standard protocol.

    Consecutive duplicates are kept: the world's self-transitions are part of its true
    distribution, so removing them would make the data differ from the truth.
    """
    prepare_config = dataclasses.replace(prepare_config or PrepareConfig(), remove_consecutive_duplicates=False)
    world, interactions = generate(config)
    dataset = prepare(interactions, prepare_config, log=log)
    dataset.world = world.to_arrays()
    return dataset
