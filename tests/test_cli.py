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


def test_library_errors_name_parameters_and_the_cli_writes_them_as_flags(capsys):
    from softmax_bottleneck.cli import run_main
    from softmax_bottleneck.errors import InputError

    error = InputError("{max_contexts} 9 is more than the 3 contexts; lower {max_contexts}", "max_contexts")
    assert str(error) == "max_contexts 9 is more than the 3 contexts; lower max_contexts"

    def body():
        raise error

    assert run_main(body) == 2
    assert capsys.readouterr().err == "error: --max-contexts 9 is more than the 3 contexts; lower --max-contexts\n"
    assert str(InputError("a {literal} brace stays", "other")) == "a {literal} brace stays"


def test_library_messages_do_not_name_flags():
    import pytest as _pytest

    from analysis.logprobs import Contexts, sample_contexts
    from softmax_bottleneck.errors import InputError
    import numpy as np

    contexts = Contexts(np.zeros((3, 2), np.float32), *(np.zeros(3, np.int64) for _ in range(4)))
    with _pytest.raises(InputError) as raised:
        sample_contexts(contexts, 9, seed=0)
    assert str(raised.value).startswith("max_contexts 9 is more than the 3 contexts") and "--" not in str(raised.value)


BAD_FLOATS = {  # what got through before: a rank of 1,339 for a model capped at 66, rank 0, a world of NaNs
    "rank --tol -1": ("analysis.rank", ["--checkpoint", "{ckpt}", "--tol", "-1"], "--tol must be a finite number >= 0"),
    "rank --tol nan": ("analysis.rank", ["--checkpoint", "{ckpt}", "--tol", "nan"], "--tol must be a finite number"),
    "rank --rtol inf": ("analysis.rank", ["--checkpoint", "{ckpt}", "--rtol", "inf"], "--rtol must be in [0, 1)"),
    "rank --rtol 5": ("analysis.rank", ["--checkpoint", "{ckpt}", "--rtol", "5"], "--rtol must be in [0, 1)"),
    "prepare --zipf-exponent nan": ("softmax_bottleneck.prepare", ["--synthetic", "--out", "{tmp}/w",
                                                                   "--zipf-exponent", "nan"],
                                    "--zipf-exponent must be a finite number, got nan"),
    "train --lr inf": ("softmax_bottleneck.train", ["--data", "{data}", "--out", "{tmp}/m.pt", "--lr", "inf"],
                       "--lr must be a finite number, got inf"),
    "train --momentum 2": ("softmax_bottleneck.train", ["--data", "{data}", "--out", "{tmp}/m.pt", "--momentum", "2"],
                           "--momentum must be in [0, 1), got 2.0"),
    "train --dropout-hidden nan": ("softmax_bottleneck.train", ["--data", "{data}", "--out", "{tmp}/m.pt",
                                                                "--dropout-hidden", "nan"], "must be a finite number"),
    "compare --ci-level nan": ("analysis.compare", ["--checkpoint", "{ckpt}", "{ckpt}", "--ci-level", "nan"],
                               "--ci-level must be between 0 and 1"),
    "tune --timeout nan": ("softmax_bottleneck.tune", ["--data", "{data}", "--head", "softmax", "--n-trials", "1",
                                                       "--timeout", "nan", "--out", "{tmp}/t"], "--timeout must be > 0"),
}


@pytest.mark.parametrize("case", list(BAD_FLOATS))
def test_non_finite_and_out_of_range_floats_are_refused_before_any_work(case, tiny_checkpoint, tiny_synthetic,
                                                                       tmp_path, capsys):
    import importlib

    module, argv, needle = BAD_FLOATS[case]
    fill = {"{ckpt}": str(tiny_checkpoint), "{data}": str(tiny_synthetic.path), "{tmp}": str(tmp_path)}
    argv = [fill.get(a, a.replace("{tmp}", str(tmp_path))) for a in argv]
    status, out, err = run_cli(importlib.import_module(module).main, argv, capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_an_out_folder_error_shows_the_path_typed(tiny_checkpoint, tmp_path, capsys):
    from analysis.rank import main

    (tmp_path / "file").write_text("")
    typed = tmp_path / "file" / "results"
    status, _, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--out", typed], capsys)
    assert status == 2 and f"--out {typed}:" in err and f"{typed}/x" not in err, err
