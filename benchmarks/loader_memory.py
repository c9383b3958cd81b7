"""Loader time and peak memory on a MovieLens-25M-sized ratings.csv, against plain pandas.read_csv.

    python benchmarks/loader_memory.py                    # 25M rows (writes a ~650 MB file once)
    python benchmarks/loader_memory.py --rows 2000000     # a quick look

Each reader runs in a fresh subprocess, so its peak resident memory (ru_maxrss) is its own;
"added" is that peak minus the resident memory just before reading (after the imports). The
report gives medians over --repeats runs and the ratios ours / plain pandas, measured in this run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

READERS = {
    "pandas.read_csv (default dtypes)": "import pandas as pd; frame = pd.read_csv(PATH)",
    "softmax_bottleneck loader": ("from softmax_bottleneck.data import load_interactions; "
                                  "frame = load_interactions(PATH, 'movielens', hash_file=False)"),
    "softmax_bottleneck loader + sha256": ("from softmax_bottleneck.data import load_interactions; "
                                           "frame = load_interactions(PATH, 'movielens')"),
}

CHILD = """
import json, resource, sys, time
PATH = sys.argv[1]
import os
import numpy, pandas, softmax_bottleneck.data  # imports are not the reader's memory
with open("/proc/self/statm") as statm:
    rss_before_kb = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024
t0 = time.perf_counter()
{code}
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": seconds, "peak_mb": peak / 1024, "added_mb": (peak - rss_before_kb) / 1024}}))
"""


def write_ratings(path: Path, n_rows: int, seed: int = 0) -> None:
    """A ratings.csv shaped like MovieLens-25M: 162k users, 59k movies, half-star ratings."""
    rng = np.random.default_rng(seed)
    chunk = 5_000_000
    with open(path, "w") as handle:
        handle.write("userId,movieId,rating,timestamp\n")
        for start in range(0, n_rows, chunk):
            n = min(chunk, n_rows - start)
            frame = pd.DataFrame({
                "userId": np.sort(rng.integers(1, 162_542, n)),
                "movieId": rng.zipf(1.3, n) % 209_172 + 1,
                "rating": rng.integers(1, 11, n) / 2,
                "timestamp": rng.integers(789_652_009, 1_574_327_703, n),
            })
            frame.to_csv(handle, header=False, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=25_000_095, help="rows of the generated file (ML-25M: 25,000,095)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--file", type=Path, help="reuse this generated file (written if missing)")
    args = parser.parse_args()
    path = args.file or Path(tempfile.gettempdir()) / f"sb-ratings-{args.rows}.csv"
    if not path.exists():
        t0 = time.perf_counter()
        write_ratings(path, args.rows)
        print(f"wrote {path} ({path.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - t0:.0f}s",
              file=sys.stderr)
    results = {}
    for name, code in READERS.items():
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", CHILD.format(code=code), str(path)], check=True,
                                 capture_output=True, text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        results[name] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    base = results["pandas.read_csv (default dtypes)"]
    print(f"{args.rows:,} rows, {path.stat().st_size / 2**20:,.0f} MiB; medians of {args.repeats} runs")
    print(f"{'reader':38s} {'seconds':>8s} {'peak MiB':>9s} {'added MiB':>10s} {'time ratio':>10s} {'peak ratio':>10s}")
    for name, r in results.items():
        print(f"{name:38s} {r['seconds']:8.2f} {r['peak_mb']:9.0f} {r['added_mb']:10.0f} "
              f"{r['seconds'] / base['seconds']:10.2f} {r['peak_mb'] / base['peak_mb']:10.2f}")


if __name__ == "__main__":
    main()
