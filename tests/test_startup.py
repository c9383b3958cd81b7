"""Every command answers --help and bad input before it loads torch, scipy, matplotlib or Optuna.

Under load an import of torch took 11–16 s before the first flag was even read. Each case runs the
command in a fresh interpreter, as ``python -m`` does, and reports which heavy modules it loaded.
"""

import json
import subprocess
import sys

import pytest

from conftest import REPO

HEAVY = ("torch", "scipy", "matplotlib", "optuna")
COMMANDS = ("softmax_bottleneck.prepare", "softmax_bottleneck.train", "softmax_bottleneck.evaluate",
            "softmax_bottleneck.tune", "analysis.rank", "analysis.compare", "analysis.reach", "analysis.capacity",
            "analysis.tuning", "figures")
PROBE = """
import json, runpy, sys
module, argv = sys.argv[1], sys.argv[2:]
sys.argv = [module] + argv
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    status = 0
except SystemExit as stop:
    status = stop.code
print(json.dumps({"status": status, "loaded": [m for m in %r if m in sys.modules]}), file=sys.__stdout__)
""" % (HEAVY,)


def probe(module: str, *argv: str) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", PROBE, module, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.parametrize("module", COMMANDS)
def test_help_and_a_bad_flag_load_nothing_heavy(module):
    shown, _ = probe(module, "--help")
    assert shown == {"status": 0, "loaded": []}
    refused, stderr = probe(module, "--no-such-flag")
    assert refused == {"status": 2, "loaded": []}
    assert stderr.count("\n") == 1 and "error" in stderr  # one line (a missing required flag, or this one)


@pytest.mark.parametrize("module, argv, says", [
    ("softmax_bottleneck.train", ["--data", "nowhere", "--out", "m.pt", "--lr", "-1"], "--lr must be > 0"),
    ("softmax_bottleneck.evaluate", ["--checkpoint", "m.pt", "--batch-size", "0"], "--batch-size must be >= 1"),
    ("analysis.rank", ["--checkpoint", "m.pt", "--max-contexts", "0"], "--max-contexts must be >= 1"),
    ("analysis.compare", ["--checkpoint", "a.pt", "b.pt", "--ci-level", "2"], "--ci-level must be between"),
    ("analysis.reach", ["--checkpoint", "m.pt", "--n-random", "-1"], "--n-random must be >= 0"),
    ("analysis.capacity", ["--head", "softmax", "--hidden-dim", "4", "--n-experts", "3"], "needs --head mos"),
    ("analysis.rank", ["--checkpoint", "m.pt", "--threads", "0"], "--threads must be >= 1"),
])
def test_a_bad_value_is_refused_before_torch_loads(module, argv, says):
    refused, stderr = probe(module, *argv)
    assert refused == {"status": 2, "loaded": []}
    assert says in stderr and "Traceback" not in stderr


def test_a_dataclass_message_names_flags_not_fields():
    from softmax_bottleneck.cli import fields_as_flags

    fields = ["head", "n_experts", "lr", "test_fraction"]
    assert fields_as_flags("lr must be > 0, got -1", fields) == "--lr must be > 0, got -1"
    assert fields_as_flags("test_fraction must be in (0, 0.5)", fields) == "--test-fraction must be in (0, 0.5)"
    # a field inside prose stays a word unless it has an underscore; a flag already written stays one
    assert (fields_as_flags("n_experts=3 needs --head mos (a softmax head has one expert)", fields)
            == "--n-experts=3 needs --head mos (a softmax head has one expert)")


def test_the_rank_contract_still_imports_from_analysis_rank():
    """DESIGN.md's analysis.rank.numerical_rank / singular_values, loaded on first use."""
    import numpy as np

    from analysis import engines, rank

    assert rank.numerical_rank is engines.numerical_rank and rank.singular_values is engines.singular_values
    assert rank.numerical_rank(np.outer(np.arange(1.0, 5.0), np.ones(3))) == 1
    assert set(rank.ENGINES) == set(engines.ENGINES)  # the command's choices are the engines there are
    with pytest.raises(AttributeError):
        rank.no_such_function
