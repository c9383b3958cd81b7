"""How long each command takes to refuse a bad flag, against a bare ``import torch`` in the same run.

Every command parses and checks its flags before it loads torch, scipy or matplotlib, so a mistake
(or ``--help``) is answered in a fraction of torch's import time. Medians of --repeats fresh
interpreters; run it beside a busy process to see the difference grow.

    python benchmarks/startup.py
    python benchmarks/startup.py --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("softmax_bottleneck.prepare", "softmax_bottleneck.train", "softmax_bottleneck.evaluate",
            "softmax_bottleneck.tune", "analysis.rank", "analysis.compare", "analysis.reach", "analysis.capacity",
            "analysis.tuning", "figures")


def seconds(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        subprocess.run(argv, cwd=REPO, capture_output=True)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch_import = seconds([sys.executable, "-c", "import torch"], args.repeats)
    print(f"baseline: python -c 'import torch'  {torch_import:.2f} s (median of {args.repeats})")
    print(f"{'command':30s} {'bad flag':>9s} {'× torch':>8s}")
    for command in COMMANDS:
        refused = seconds([sys.executable, "-m", command, "--no-such-flag"], args.repeats)
        print(f"{command:30s} {refused:8.2f}s {refused / torch_import:8.2f}")


if __name__ == "__main__":
    main()
