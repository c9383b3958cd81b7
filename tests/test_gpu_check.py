"""The GPU check's dry run: every step of benchmarks/gpu_check.sh on the CPU, tiny, with its results under $OUT."""

import os
import subprocess
import sys

from conftest import REPO


def test_the_gpu_checks_dry_run_runs_every_step(tmp_path):
    out = tmp_path / "gpu-check"
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=REPO, timeout=600,
                          capture_output=True, text=True,
                          env={**os.environ, "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    summary = (out / "summary.txt").read_text()
    assert done.returncode == 0, summary + "".join((out / f"{s}.log").read_text()[-2000:]
                                                   for s in ("tests", "ddp", "rank", "scale") if (out / f"{s}.log").exists())
    for step in ("tests", "ddp", "rank", "scale"):
        assert f"{step}: exit 0 in" in summary
    assert "sharded evaluation = one process's" in (out / "ddp.log").read_text()
    assert "mos" in (out / "rank.log").read_text() and (out / "scale" / "scale.csv").is_file()
    assert "failed steps: 0" in summary
