"""The GPU check's dry run: every step of benchmarks/gpu_check.sh on the CPU, tiny, with its results under $OUT."""

import os
import subprocess
import sys

from conftest import REPO

STEPS = ("tests", "ddp", "rank", "scale")


def _what_failed(log) -> str:
    """A failed step's telling lines (what a rank said before torchrun's long traceback) and its log's end."""
    if not log.exists():
        return f"\n{log.name}: no log"
    lines = log.read_text().splitlines()
    telling = [line for line in lines if any(w in line for w in ("rror", "terminate", "what()", "stopped", "exitcode"))]
    return f"\n--- {log.name}: telling lines\n" + "\n".join(telling[:30]) + "\n--- its end\n" + "\n".join(lines[-25:])


def test_the_gpu_checks_dry_run_runs_every_step(tmp_path):
    out = tmp_path / "gpu-check"
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=REPO, timeout=600,
                          capture_output=True, text=True,
                          env={**os.environ, "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    summary = (out / "summary.txt").read_text()
    assert done.returncode == 0, summary + "".join(_what_failed(out / f"{step}.log") for step in STEPS
                                                   if f"{step}: exit 0 in" not in summary)
    for step in STEPS:
        assert f"{step}: exit 0 in" in summary
    assert "sharded evaluation = one process's" in (out / "ddp.log").read_text()
    assert "mos" in (out / "rank.log").read_text() and (out / "scale" / "scale.csv").is_file()
    assert "failed steps: 0" in summary
