"""Flags every tool shares mean the same everywhere: --k (one syntax, default and validation)."""

import pytest

from conftest import run_cli
from analysis import compare, reach
from softmax_bottleneck import evaluate
from softmax_bottleneck.cli import DEFAULT_CUTOFFS

TOOLS = {"evaluate": (evaluate, 1), "compare": (compare, 2), "reach": (reach, 1)}


@pytest.mark.parametrize("tool", list(TOOLS))
def test_the_cutoffs_have_one_syntax_default_and_validation(tool, twins, capsys):
    module, n_checkpoints = TOOLS[tool]
    checkpoints = ["--checkpoint", twins / "softmax.pt"] * n_checkpoints
    parsed = module.build_parser().parse_args([str(a) for a in checkpoints])
    assert tuple(parsed.k) == DEFAULT_CUTOFFS
    assert module.build_parser().parse_args([str(a) for a in checkpoints] + ["--k", "5", "50"]).k == [5, 50]
    for ks, needle in ((["0"], "--k values must be >= 1, got 0"), (["5", "5000"], "--k 5000 is larger than the catalogue")):
        status, _, err = run_cli(module.main, checkpoints + ["--k", *ks], capsys)
        assert status == 2 and needle in err and len(err.strip().splitlines()) == 1, err
