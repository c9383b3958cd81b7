"""The study's profiles: which models it trains, with what tuning budget, and the analysis settings.

Light to import (no torch), so ``python -m figures --help`` lists them at once; :mod:`figures.study`
runs one.
"""

from __future__ import annotations

import dataclasses

from softmax_bottleneck.config import VARIANTS
from softmax_bottleneck.synthetic import SyntheticConfig


@dataclasses.dataclass(frozen=True)
class Profile:
    """One study: the models, their tuning budget and the analysis settings."""

    world: SyntheticConfig | None  # used when no --data is given (None: the profile is for real data, --data needed)
    epochs: int  # the most epochs of a tuning trial and of every model (each keeps its best valid epoch)
    seeds: tuple[int, ...]  # every (head, d) of the size sweep is trained with each seed
    dims: tuple[int, ...]  # hidden sizes d of the size sweep (every head of `heads`; MoS with `experts` experts)
    experts: int  # K of the MoS size sweep
    expert_dim: int  # d of the expert sweep
    expert_counts: tuple[int, ...]  # K of the expert sweep (seed of the first seed only)
    max_contexts: int  # held-out contexts of the rank report
    n_bootstrap: int  # session-bootstrap replicates of the comparison
    n_random: int  # random box states of the reachability audit
    tune_trials: int = 8  # Optuna trials per head × d × K
    patience: int = 2  # epochs without a better valid MRR@20 that end a trial (and a model's training)
    capacity_restarts: int = 1  # seeded starts of each head × d × K's capacity fit (synthetic world only)
    capacity_steps: int = 800  # Adam steps of each start
    expressive_ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)  # r of the expressive-rank sweep (rank report)
    expressive_steps: int = 150  # Adam steps polishing each r's SVD start
    expressive_dims: tuple[int, ...] | None = None  # the d whose models get the expressive sweep (None: every d)
    tune_dim: int | None = None  # tune every head at this d only and carry its settings to the other sizes
    # categoricals of every head's search space narrowed to these choices (tune --choices), e.g. the batch sizes
    space_choices: tuple[tuple[str, tuple], ...] = ()
    split: str = "test"
    heads: tuple[str, ...] = ("softmax", "mos")  # the size sweep's heads (config.VARIANTS; the first is the baseline)

    def __post_init__(self):
        unknown = [h for h in self.heads if h not in VARIANTS]
        if unknown or not self.heads or self.heads[0] != "softmax":
            raise ValueError(f"heads must start with softmax and name only {', '.join(VARIANTS)}, got {self.heads}")
        if self.tune_dim is not None and self.tune_dim not in self.dims:
            raise ValueError(f"tune_dim {self.tune_dim} is not one of the size sweep's dims {self.dims}")


EVERY_HEAD = ("softmax", "mos", "sigsoftmax", "mol", "softmax-dd")  # softmax-dd: dropout and decoupling's softmax


PROFILES = {
    # a few minutes on 2 CPU cores: a 300-item world, 3 epochs, two seeds, every head
    "quick": Profile(world=SyntheticConfig(n_items=300, n_sessions=4000, seed=0), epochs=3, seeds=(0, 1),
                     dims=(2, 4, 8, 16, 32), experts=4, expert_dim=8, expert_counts=(1, 2, 4, 8),
                     max_contexts=1024, n_bootstrap=500, n_random=1024, tune_trials=8, patience=2, heads=EVERY_HEAD),
    # the capacity study: a world with a dial on the bottleneck (a rank-8 part plus a sparse successor
    # part of weight 2), d around the dial's rank; run on other dials with --data (see figures/README.md)
    "dial": Profile(world=SyntheticConfig(n_items=300, n_sessions=4000, seed=0, low_rank=8, sparse_weight=2.0),
                    epochs=3, seeds=(0, 1), dims=(4, 8, 16), experts=4, expert_dim=8, expert_counts=(4,),
                    max_contexts=1024, n_bootstrap=500, n_random=1024, tune_trials=6, patience=2,
                    capacity_restarts=2, capacity_steps=1500),
    # the paper's: the default 500-item world, 10 epochs (GRU4Rec's), three seeds, 20 trials per head and size
    "full": Profile(world=SyntheticConfig(), epochs=10, seeds=(0, 1, 2), dims=(2, 4, 8, 16, 32, 64), experts=4,
                    expert_dim=16, expert_counts=(1, 2, 4, 8), max_contexts=4096, n_bootstrap=2000, n_random=4096,
                    tune_trials=20, patience=3, capacity_restarts=2, capacity_steps=1500, heads=EVERY_HEAD),
    # a real catalogue of about 10,000 items (Globo.com news: see figures/README.md), in under 6 hours on 2
    # cores with --jobs 2: every head tuned at d = 64 with the same budget (10 trials of up to 2 epochs,
    # patience 1, batches of 128 or 256 and 512 or 2,048 sampled negatives: the fast half of each head's
    # space) and its settings carried to d = 16, 32 and 128; two seeds; the expressive sweep of the d = 16 models;
    # 10,000 bootstrap replicates, so that Holm's p over the comparison's 228 differences (gains: 48) can go
    # below 0.05 (with 1,000 no Holm p could: analysis.stats.p_value_resolution)
    "real": Profile(world=None, epochs=2, seeds=(0, 1), dims=(16, 32, 64, 128), experts=4, expert_dim=64,
                    expert_counts=(4,), max_contexts=2048, n_bootstrap=10_000, n_random=1024, tune_trials=10, patience=1,
                    expressive_ranks=(1, 2, 4, 8, 16, 32, 64, 128), expressive_steps=100, expressive_dims=(16,),
                    tune_dim=64, heads=EVERY_HEAD, space_choices=(("batch_size", (128, 256)), ("n_sample", (512, 2048)))),
}
