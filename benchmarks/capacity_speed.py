"""Time and quality of analysis.capacity's fit: 1,024 held-out contexts × 500 items at d = 16.

    python benchmarks/capacity_speed.py                    # softmax and MoS K=4 (several minutes on 2 cores)
    python benchmarks/capacity_speed.py --heads mos --repeats 1

A low-rank world with a sparse part (r = 8, s = 2; 500 items) is prepared in a temporary folder.
For each head: the fit as the CLI runs it by default (2 seeded restarts of full-batch Adam, 1,500
cosine-decayed steps each, the first 80 % in float32 and the rest in float64) — its time and KL.
Two baselines in the same run: the same fit all in float64 (time ratio, KL), and L-BFGS
(strong-Wolfe line search) from one seeded start, run for the default fit's wall time (KL ratio;
lower KL is a tighter upper bound on the family's best). Medians over --repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.capacity_fit import fit_head, mean_kl, truth_contexts  # noqa: E402
from softmax_bottleneck.data import load_prepared, save_prepared  # noqa: E402
from softmax_bottleneck.heads import build_head  # noqa: E402
from softmax_bottleneck.config import ModelConfig  # noqa: E402
from softmax_bottleneck.synthetic import SyntheticConfig, prepare_synthetic  # noqa: E402


def lbfgs(config, contexts, seconds: float) -> tuple[float, float]:
    """L-BFGS from a seeded start, stopped after about `seconds`: (KL, seconds used)."""
    generator = torch.Generator().manual_seed(0)
    head = build_head(config.head, config.n_items, config.hidden_dim, config.item_bias, config.n_experts)
    head.reset_parameters(generator)
    head = head.double().train(False)
    free = torch.randn(len(contexts.previous), config.hidden_dim, generator=generator, dtype=torch.float64)
    free.requires_grad_(True)
    log_truth, weights = torch.from_numpy(contexts.log_truth), torch.from_numpy(contexts.weights)
    optimizer = torch.optim.LBFGS([free, *head.parameters()], max_iter=50, history_size=50,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure():
        optimizer.zero_grad()
        loss = mean_kl(log_truth, head.log_probs(free), weights)
        loss.backward()
        return loss

    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        optimizer.step(closure)
    with torch.no_grad():
        return float(mean_kl(log_truth, head.log_probs(free), weights)), time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", nargs="+", default=["softmax", "mos"], choices=("softmax", "mos"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = save_prepared(prepare_synthetic(SyntheticConfig(n_items=500, n_sessions=12_000, low_rank=8,
                                                               sparse_weight=2.0)), Path(folder) / "dial")
        dataset = load_prepared(data)
        contexts = truth_contexts(dataset, "test", 1024, seed=0)
        print(f"{len(contexts.sessions):,} contexts ({len(contexts.previous)} distinct previous items) × "
              f"{dataset.n_items} items, d = 16, {torch.get_num_threads()} threads")
        for head in args.heads:
            config = ModelConfig(head=head, hidden_dim=16, n_items=dataset.n_items)
            fits = [fit_head(config, contexts, seed=0) for _ in range(args.repeats)]
            seconds = statistics.median(f.seconds for f in fits)
            exact = [fit_head(config, contexts, seed=0, float64_share=1.0) for _ in range(args.repeats)]
            exact_seconds = statistics.median(f.seconds for f in exact)
            baseline = [lbfgs(config, contexts, seconds) for _ in range(args.repeats)]
            base_kl = statistics.median(b[0] for b in baseline)
            print(f"{head:8s} fit (2 restarts, float32 then float64): median {seconds:.1f} s, KL {fits[0].kl:.5f}; "
                  f"all float64: {exact_seconds:.1f} s, KL {exact[0].kl:.5f} (time ratio default / float64 "
                  f"{seconds / exact_seconds:.2f}×); L-BFGS in the default's time: KL {base_kl:.5f} "
                  f"(KL ratio L-BFGS / default {base_kl / fits[0].kl:.2f}×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
