"""Every figure from a tiny study (Agg backend), the study's cache, the CLI; the quick profile end to end (slow)."""

import dataclasses
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, run_cli
from figures import study as study_module
from figures.__main__ import FIGURES, draw, main
from figures.profiles import EVERY_HEAD
from figures.study import Profile, run_study, study_runs
from softmax_bottleneck.config import variant_of
from softmax_bottleneck.errors import InputError
from softmax_bottleneck.synthetic import SyntheticConfig

MODULES = [importlib.import_module(f"figures.{name}") for name in FIGURES]

TINY = Profile(world=SyntheticConfig(n_items=40, n_sessions=400, seed=3), epochs=1, seeds=(0, 1), dims=(2, 4),
               experts=2, expert_dim=2, expert_counts=(1, 2), max_contexts=256, n_bootstrap=50, n_random=64,
               tune_trials=2, patience=1, heads=EVERY_HEAD, expressive_ranks=(1, 2, 4), expressive_steps=10)


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    record = run_study(TINY, folder, log=lambda message: None)
    return folder, record


def _copy_results(tiny_results, tmp_path, *names) -> Path:
    import shutil

    folder, _ = tiny_results
    copy = tmp_path / "results"  # a copy of the fixture's study to change freely
    copy.mkdir()
    for name in names:
        (shutil.copytree if (folder / name).is_dir() else shutil.copy)(folder / name, copy / name)
    return copy


def test_study_trains_the_grid_once_and_records_it(tiny_results):
    folder, record = tiny_results
    runs = study_runs(TINY)
    # sizes × heads × seeds, plus the expert sweep's K=1 (K=2 at d=2 is already in the size sweep)
    assert len(runs) == 2 * 5 * 2 + 1 and len(record["runs"]) == len(runs)
    assert {r["label"].split(" ")[0] for r in record["runs"]} == set(EVERY_HEAD)
    assert all(Path(r["checkpoint"]).is_file() for r in record["runs"])
    for sub, files in {"rank": ["rank.json", "spectrum.csv"], "compare": ["metrics.csv", "compare.json"],
                       "reach": ["reach.csv", "reach.json"]}.items():
        assert all((folder / sub / f).stat().st_size > 0 for f in files)


def test_gains_are_each_head_against_the_softmax_of_its_own_size(tiny_results):
    """gains.csv's differences are the main comparison's values minus the same d's softmax, for every head × d."""
    import pandas as pd

    from analysis.stats import holm

    folder, _ = tiny_results
    gains, metrics = pd.read_csv(folder / "gains" / "gains.csv"), pd.read_csv(folder / "compare" / "metrics.csv")
    metrics = metrics[(metrics["k"] == 20) & (metrics["model"] != "oracle")]
    value = {(r["variant"], r["hidden_dim"], r["n_experts"], r["metric"]): r["value"] for r in metrics.to_dict("records")}
    # every head but softmax at each d (MoS with the size sweep's K), three metrics at K = 20
    assert sorted(set(zip(gains["hidden_dim"], gains["variant"]))) == sorted(
        (d, v) for d in TINY.dims for v in EVERY_HEAD if v != "softmax")
    assert len(gains) == len(TINY.dims) * (len(EVERY_HEAD) - 1) * 3 and set(gains["k"]) == {20}
    assert set(gains[gains["head"] == "mos"]["n_experts"]) == {TINY.experts}
    for row in gains.to_dict("records"):
        softmax = value[("softmax", row["hidden_dim"], 1, row["metric"])]
        assert row["baseline_value"] == pytest.approx(softmax, abs=1e-12)
        assert row["value"] == pytest.approx(value[(row["variant"], row["hidden_dim"], row["n_experts"], row["metric"])],
                                             abs=1e-12)
        assert row["diff_vs_baseline"] == pytest.approx(row["value"] - softmax, abs=1e-12)
        assert row["diff_ci_low"] <= row["diff_vs_baseline"] <= row["diff_ci_high"]
        assert row["baseline"].startswith(f"softmax d={row['hidden_dim']}")
    assert gains["p_holm"].tolist() == pytest.approx(holm(gains["p_value"]).tolist())  # one family: the whole table
    # the breakdowns by support etc. are each size's, against that size's softmax
    breakdown = pd.read_csv(folder / "gains" / "breakdown.csv")
    assert sorted(set(breakdown["hidden_dim"])) == list(TINY.dims)
    for d in TINY.dims:
        at_d = breakdown[(breakdown["hidden_dim"] == d) & (breakdown["breakdown"] == "support")]
        assert set(at_d["baseline"]) == {f"softmax d={d}"} and set(at_d["model"]) == {
            m for m in gains[gains["hidden_dim"] == d]["model"]} | {f"softmax d={d}"}
        assert (at_d[at_d["model"] == f"softmax d={d}"]["relative_gain"].dropna() == 0).all()


def test_every_head_is_trained_with_its_own_tuned_settings(tiny_results):
    from softmax_bottleneck.checkpoint import load_checkpoint

    _, record = tiny_results
    files = {}
    for run in record["runs"]:
        tuned = run["tuned"]
        assert tuned["budget"]["trials"] == TINY.tune_trials and tuned["command"].startswith(
            "python -m softmax_bottleneck.tune")
        best = json.loads(Path(tuned["file"]).read_text())
        checkpoint = load_checkpoint(run["checkpoint"])
        assert checkpoint["train_config"] == {**best["train_config"], "seed": run["seed"]}
        assert checkpoint["model_config"] == best["model_config"]
        assert variant_of(checkpoint["model_config"]) == run["variant"]  # softmax-dd: a separate input embedding
        assert checkpoint["tuning"]["budget"] == best["budget"] and checkpoint["selection"]["finished"]
        files.setdefault(run["label"], set()).add(tuned["file"])
    assert all(len(f) == 1 for f in files.values())  # the seeds of a configuration share its settings …
    assert len(set().union(*files.values())) == len(files)  # … and every configuration has its own


def test_committed_tuned_settings_are_used_and_nothing_is_tuned(tiny_results, tmp_path, monkeypatch):
    folder, record = tiny_results
    committed = tmp_path / "tuned" / "custom"
    committed.mkdir(parents=True)
    for best in (folder / "tuned").glob("*/best.json"):
        (committed / f"{best.parent.name}.json").write_bytes(best.read_bytes())
    monkeypatch.setattr(study_module, "TUNED", tmp_path / "tuned")
    monkeypatch.setattr(study_module.tuner, "tune", lambda *a, **k: pytest.fail("tuned although committed"))
    monkeypatch.setattr(study_module, "run_analyses", lambda *a, **k: ({}, {}, 1))  # tuning is what this test is about
    results = _copy_results(tiny_results, tmp_path, "data", "runs")  # the trained models, but no tuned/ folder
    messages = []
    again = run_study(TINY, results, log=messages.append)
    assert not [m for m in messages if m.startswith("tuning")]
    assert {Path(r["tuned"]["file"]).parent for r in again["runs"]} == {committed}


def test_second_run_retrains_and_reanalyses_nothing(tiny_results, monkeypatch):
    folder, _ = tiny_results
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.name != "study.json"}

    def refuse(*args, **kwargs):
        raise AssertionError("the cached study trained again")

    monkeypatch.setattr(study_module, "train", refuse)
    messages = []
    run_study(TINY, folder, log=messages.append)
    assert messages == []
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_a_change_to_the_training_code_retrains_instead_of_reusing_a_model(tiny_results, tmp_path, monkeypatch):
    """Checkpoints trained before MoL's temperature changed were reused by a study: the key holds the code."""
    folder = _copy_results(tiny_results, tmp_path, "data", "runs", "tuned", "study.json")
    real = study_module.source_hash

    class Retrained(Exception):
        pass

    def train(*args, **kwargs):
        raise Retrained

    monkeypatch.setattr(study_module, "train", train)
    monkeypatch.setattr(study_module, "source_hash", lambda *packages: "changed" + real(*packages))
    with pytest.raises(Retrained):
        run_study(TINY, folder, log=lambda message: None)


def test_study_json_records_the_versions_the_numbers_depend_on(tiny_results):
    from importlib.metadata import version

    folder, _ = tiny_results
    recorded = json.loads((folder / "study.json").read_text())["versions"]
    assert recorded["torch"] == version("torch") and recorded["matplotlib"] == version("matplotlib")
    assert {"python", "numpy", "pandas", "scipy", "optuna"} <= set(recorded)
    import torch

    machine = json.loads((folder / "study.json").read_text())["machine"]
    assert machine["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability() and machine["cpu"]


def test_changed_settings_retrain_only_what_changed(tiny_results, tmp_path, monkeypatch):
    folder = _copy_results(tiny_results, tmp_path, "data", "runs", "tuned", "study.json")
    monkeypatch.setattr(study_module, "run_analyses", lambda *a, **k: ({}, {}, 1))  # training is what this test is about
    other = dataclasses.replace(TINY, expert_counts=(1, 2, 3))
    messages = []
    run_study(other, folder, log=messages.append)
    trained = [m for m in messages if m.startswith(("training", "tuning"))]
    assert trained == ["tuning mos d=2 K=3: 2 trials of up to 1 epochs",
                       "training mos d=2 K=3 seed 0 (up to 1 epochs, tuned settings)"]


@pytest.mark.parametrize("module", MODULES, ids=FIGURES)
def test_every_figure_draws_from_tiny_results(tiny_results, tmp_path, module):
    folder, _ = tiny_results
    figure = module.make(folder)
    assert figure.axes and any(ax.has_data() for ax in figure.axes)
    name = module.__name__.rsplit(".", 1)[1]
    written = draw(folder, tmp_path, [name])
    assert [p.name for p in written] == [f"{name}.png", f"{name}.pdf"]
    assert all(p.stat().st_size > 5_000 for p in written)


def test_figures_are_byte_reproducible(tiny_results, tmp_path):
    folder, _ = tiny_results
    first, second = draw(folder, tmp_path / "a", ["spectra"]), draw(folder, tmp_path / "b", ["spectra"])
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_cli_bad_inputs(tmp_path, capsys):
    status, _, err = run_cli(main, ["--only", "nonsense", "--results", tmp_path / "r"], capsys)
    assert status == 2 and "no such figure" in err and not (tmp_path / "r").exists()
    status, _, err = run_cli(main, ["--data", tmp_path / "missing", "--results", tmp_path / "r"], capsys)
    assert status == 2 and "no such prepared dataset" in err and not (tmp_path / "r").exists()
    (tmp_path / "not-prepared").mkdir()
    status, _, err = run_cli(main, ["--data", tmp_path / "not-prepared", "--results", tmp_path / "r"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    (tmp_path / "file").write_text("x")
    status, _, err = run_cli(main, ["--results", tmp_path / "file"], capsys)
    assert status == 2 and "not a folder" in err
    status, _, err = run_cli(main, ["--jobs", "0", "--results", tmp_path / "r"], capsys)
    assert status == 2 and "--jobs 0" in err and not (tmp_path / "r").exists()
    status, _, err = run_cli(main, ["--profile", "real", "--results", tmp_path / "r"], capsys)
    assert status == 2 and "--data" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    status, _, err = run_cli(main, ["--only", "spectra", "--results", tmp_path / "empty"], capsys)
    assert status == 2 and "holds none" in err and str((tmp_path / "empty").resolve()) in err
    assert not (tmp_path / "empty").exists()  # no study started
    for content, needle in (("{}", "not the record of a finished study"), ("{garbage", "unreadable JSON"),
                            ("[]", "not the record of a finished study")):
        (tmp_path / "bad").mkdir(exist_ok=True)
        (tmp_path / "bad" / "study.json").write_text(content)
        status, _, err = run_cli(main, ["--only", "spectra", "--results", tmp_path / "bad"], capsys)
        assert status == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
        assert sorted(p.name for p in (tmp_path / "bad").iterdir()) == ["study.json"]  # nothing trained or drawn


def test_cli_json_lists_the_files(tiny_results, tmp_path, capsys, monkeypatch):
    folder, _ = tiny_results
    monkeypatch.setattr("figures.study.run_study", lambda *a, **k: pytest.fail("--only ran the study"))
    status, out, err = run_cli(main, ["--results", folder, "--out", tmp_path / "f", "--only", "spectra", "--json"],
                               capsys)
    assert status == 0, err
    record = json.loads(out)
    assert record["results"] == str(folder.resolve())
    assert sorted(Path(p).name for p in record["written"]) == ["spectra.pdf", "spectra.png"]


def test_a_figure_without_results_says_what_to_run(tmp_path):
    with pytest.raises(InputError, match="python -m figures"):
        MODULES[0].make(tmp_path)


def test_the_committed_quick_settings_match_the_quick_profile():
    """Else the README's main command would silently tune for minutes: every run has a matching file."""
    from softmax_bottleneck.synthetic import prepare_synthetic

    profile = study_module.PROFILES["quick"]
    dataset = prepare_synthetic(profile.world)
    dataset = dataclasses.replace(dataset, path=REPO / "results" / "quick" / "data")
    for run in study_runs(profile):
        path = study_module.TUNED / "quick" / f"{run.slug}.json"
        record = json.loads(path.read_text())
        assert study_module._matches(record, study_module.tune_settings(run, profile, dataset), profile.tune_trials)
        assert record["command"].startswith("python -m softmax_bottleneck.tune") and record["budget"]["trials"] == 8


def test_the_quick_studys_first_models_reproduce_the_committed_ones(tmp_path):
    """The committed figures and numbers came from the models listed in figures/quick/models.csv: the first
    of them, trained again from scratch with the committed settings, give the committed numbers (checkpoints
    of older code once stood behind committed figures)."""
    import pandas as pd

    from softmax_bottleneck.checkpoint import load_checkpoint

    committed = pd.read_csv(REPO / "figures" / "quick" / "models.csv")
    profile = study_module.PROFILES["quick"]
    runs = study_runs(profile)
    assert [(r.variant, r.hidden_dim, r.n_experts, r.seed) for r in runs] == list(
        committed[["variant", "hidden_dim", "n_experts", "seed"]].itertuples(index=False, name=None))
    results = tmp_path / "results"
    dataset = study_module.ensure_data(results, None, profile, log=lambda m: None)
    for run, expected in zip(runs[:2], committed.to_dict("records")):
        tuned = study_module.ensure_tuned(run, profile, "quick", dataset, results, "cpu", log=lambda m: None)
        path = study_module.ensure_checkpoint(run, tuned, dataset, results / "runs", "cpu", log=lambda m: None)
        row = study_module.model_row(run, load_checkpoint(path))
        assert (row["best_epoch"], row["epochs_trained"]) == (expected["best_epoch"], expected["epochs_trained"])
        for column in ("valid_mrr@20", "valid_recall@20"):
            assert row[column] == pytest.approx(expected[column], rel=1e-9, abs=1e-12), (run, column)


@pytest.mark.slow
def test_quick_profile_end_to_end(tmp_path):
    """The README's main command: the quick profile from nothing, then a second run that only redraws."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "figures", "--results", str(tmp_path / "results")]
    began = time.perf_counter()
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=2400)
    first = time.perf_counter() - began
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tuning" not in done.stderr  # the committed settings were used
    out = tmp_path / "results" / "figures"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.{x}" for name in FIGURES for x in ("png", "pdf"))
    assert str(out) in done.stdout
    # the committed pictures and models are this run's: every PNG but the wall-clock one (cost) byte for byte
    committed = REPO / "figures" / "quick"
    for png in sorted(committed.glob("*.png")):
        if png.name != "cost.png":
            assert (out / png.name).read_bytes() == png.read_bytes(), f"{png.name} differs from a fresh run"
    assert (tmp_path / "results" / "models.csv").read_text() == (committed / "models.csv").read_text()
    began = time.perf_counter()
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "training" not in again.stderr
    assert time.perf_counter() - began < 60, f"redraw took {time.perf_counter() - began:.0f} s (first run {first:.0f} s)"


def test_figures_on_a_dataset_without_a_truth(tiny_synthetic, tmp_path):
    """--data with real-world data: no truth spectrum, no oracle, every figure still drawn."""
    from softmax_bottleneck.data import save_prepared

    plain = save_prepared(dataclasses.replace(tiny_synthetic, world=None,
                                              meta={**tiny_synthetic.meta, "source": {"format": "test"}}),
                          tmp_path / "plain")
    profile = dataclasses.replace(TINY, seeds=(0,), dims=(2,), expert_counts=(2,), tune_trials=1)
    run_study(profile, tmp_path / "results", data=plain, log=lambda m: None)
    drawn = [m for m in MODULES if getattr(m, "available", lambda r: True)(tmp_path / "results")]
    assert [m.__name__ for m in MODULES if m not in drawn] == ["figures.capacity"]  # it needs a known truth
    for module in drawn:  # made, not saved: saving is the same for every figure (see the tests above)
        figure = module.make(tmp_path / "results")
        assert any(ax.has_data() for ax in figure.axes), module.__name__
    written = draw(tmp_path / "results", tmp_path / "figures")
    assert "capacity.png" not in {p.name for p in written} and len(written) == 2 * len(drawn)
    with pytest.raises(InputError, match="--only capacity: this study has no results for it"):
        draw(tmp_path / "results", tmp_path / "figures", ["capacity"])

    assert json.loads((tmp_path / "results" / "rank" / "rank.json").read_text())["truth"] is None


def test_a_code_change_redoes_the_analyses_and_nothing_else(tiny_results, tmp_path, monkeypatch):
    copy = _copy_results(tiny_results, tmp_path, "data", "runs", "tuned", "rank", "compare", "gains", "reach",
                         "capacity", "study.json")
    messages = []
    run_study(TINY, copy, log=messages.append)
    assert messages == []  # the same code: all cached
    real = study_module.source_hash  # a change to the analysis code only (the library's retrains: test above)
    monkeypatch.setattr(study_module, "source_hash",
                        lambda *packages: "another version" if "analysis" in packages else real(*packages))
    run_study(TINY, copy, log=messages.append)
    assert [m.split()[0] for m in messages] == ["rank", "comparing", "every", "reachability", "capacity"]


def test_figures_pick_models_by_the_studys_settings_not_by_counting(tiny_results, tmp_path):
    from figures import results

    copy = _copy_results(tiny_results, tmp_path, "rank", "study.json")
    study = json.loads((copy / "study.json").read_text())
    study["settings"]["experts"] = 1  # one MoS model has K=1, three have K=2: a vote would pick 2
    (copy / "study.json").write_text(json.dumps(study))
    mos = [m for m in results.size_sweep_matrices(copy) if m.get("head") == "mos"]
    assert [m["n_experts"] for m in mos] == [1]


def test_the_gain_heatmap_draws_every_head_at_d_and_says_when_there_is_none(tiny_results, tmp_path):
    from figures import gain_heatmap
    from softmax_bottleneck.errors import InputError

    folder, _ = tiny_results
    titles = [ax.get_title() for ax in gain_heatmap.make(folder).axes if ax.get_title()]
    assert [t.split(" vs ")[0] for t in titles] == ["mos d=2 K=2", "sigsoftmax d=2", "mol d=2 P=2×2", "softmax-dd d=2"]
    copy = _copy_results(tiny_results, tmp_path, "compare", "study.json")
    summary = json.loads((copy / "compare" / "compare.json").read_text())
    summary["models"] = [m for m in summary["models"] if m["label"] == summary["baseline"] or m["hidden_dim"] != 2]
    (copy / "compare" / "compare.json").write_text(json.dumps(summary))
    with pytest.raises(InputError, match="compare/compare.json has no model at d=2 besides the baseline"):
        gain_heatmap.make(copy)



def test_settings_tuned_at_one_size_are_carried_and_workers_train_the_same_models(tmp_path, monkeypatch):
    import torch

    from softmax_bottleneck.checkpoint import load_checkpoint

    monkeypatch.setattr(study_module, "run_analyses", lambda *a, **k: ({}, {}, 1))  # tuning and training are the subject
    carried = dataclasses.replace(TINY, heads=("softmax", "mos"), seeds=(0,), expert_counts=(2,), tune_dim=4)
    alone = run_study(carried, tmp_path / "one", log=lambda message: None)
    workers = run_study(carried, tmp_path / "two", log=lambda message: None, jobs=2)
    # one tuning per head × K, at d = 4, and its settings at both sizes
    assert sorted(p.name for p in (tmp_path / "one" / "tuned").iterdir()) == ["mos-K2-d4", "softmax-d4"]
    for run in alone["runs"]:
        checkpoint = load_checkpoint(run["checkpoint"])
        tuned = json.loads(Path(run["tuned"]["file"]).read_text())
        assert run["tuned"]["tuned_at_hidden_dim"] == 4 and tuned["model_config"]["hidden_dim"] == 4
        assert checkpoint["model_config"]["hidden_dim"] == run["hidden_dim"]
        assert checkpoint["train_config"]["lr"] == tuned["train_config"]["lr"]
    assert {r["hidden_dim"] for r in alone["runs"]} == {2, 4}
    # two worker processes: the same tuned settings and the same weights, bit for bit
    for one, two in zip(alone["runs"], workers["runs"]):
        assert one["tuned"]["params"] == two["tuned"]["params"]
        assert Path(one["checkpoint"]).name == Path(two["checkpoint"]).name
        a, b = load_checkpoint(one["checkpoint"])["state_dict"], load_checkpoint(two["checkpoint"])["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_real_data_profile_asks_for_data(tmp_path):
    with pytest.raises(InputError, match="--data"):
        run_study("real", tmp_path / "results", log=lambda message: None)
    assert not (tmp_path / "results").exists()


def test_an_unfinished_tuning_committed_by_an_earlier_session_is_continued(tmp_path, monkeypatch):
    """A session's machine keeps only the repository: an unfinished tuning is committed as SLUG.partial.db, and
    the next study continues it (a trial it holds as RUNNING, cut off with that machine, is done again)."""
    import socket

    import optuna

    monkeypatch.setattr(study_module, "run_analyses", lambda *a, **k: ({}, {}, 1))  # tuning is what this test is about
    small = dataclasses.replace(TINY, heads=("softmax",), seeds=(0,), dims=(2,), expert_counts=(), tune_trials=3)
    run_study(dataclasses.replace(small, tune_trials=2), tmp_path / "earlier", log=lambda message: None)
    partial = tmp_path / "tuned" / "custom" / "softmax-d2.partial.db"
    partial.parent.mkdir(parents=True)
    partial.write_bytes((tmp_path / "earlier" / "tuned" / "softmax-d2" / "study.db").read_bytes())
    earlier = optuna.load_study(study_name="softmax-d2", storage=f"sqlite:///{partial}")
    cut_off = earlier.ask()  # running when that session ended: its worker looks alive (this process)
    cut_off.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    monkeypatch.setattr(study_module, "TUNED", tmp_path / "tuned")
    messages = []
    record = run_study(small, tmp_path / "now", log=messages.append)
    assert f"  continuing the {partial} trials" in messages
    best = json.loads(Path(record["runs"][0]["tuned"]["file"]).read_text())
    assert best["budget"]["trials"] == 3 and best["budget"]["failed"] == 1
    now = optuna.load_study(study_name="softmax-d2", storage=f"sqlite:///{tmp_path / 'now' / 'tuned' / 'softmax-d2' / 'study.db'}")
    done = [t for t in now.trials if t.state.name != "FAIL"]
    assert [t.params for t in done[:2]] == [t.params for t in earlier.trials[:2]]  # the earlier trials, carried


def test_a_narrowed_space_is_in_the_recorded_tuning_command(tmp_path, monkeypatch, capsys):
    """space_choices (the real profile's) narrow every head's space, and the command best.json records makes that
    very study: run again, it finds its own settings (not "other settings") and its trials all done."""
    import shlex

    from softmax_bottleneck.tune import main as tune_main

    monkeypatch.setattr(study_module, "run_analyses", lambda *a, **k: ({}, {}, 1))  # tuning is what this test is about
    narrowed = dataclasses.replace(TINY, heads=("softmax",), seeds=(0,), dims=(2,), expert_counts=(),
                                   space_choices=(("batch_size", (64, 128)), ("optimizer", ("adam",))))
    record = run_study(narrowed, tmp_path / "r", log=lambda message: None)
    best = json.loads(Path(record["runs"][0]["tuned"]["file"]).read_text())
    assert best["settings"]["space"]["batch_size"] == {"choices": [64, 128]} and "momentum" not in best["settings"]["space"]
    assert best["params"]["batch_size"] in (64, 128) and best["params"]["optimizer"] == "adam"
    argv = shlex.split(best["command"])
    assert argv[:3] == ["python", "-m", "softmax_bottleneck.tune"] and "--choices" in argv
    status, _, err = run_cli(tune_main, argv[3:] + ["--json"], capsys)
    assert status == 0, err
    assert json.loads((tmp_path / "r" / "tuned" / "softmax-d2" / "best.json").read_text())["budget"] == best["budget"]


def test_the_summary_prints_the_studys_numbers_as_tables(tiny_results, capsys, tmp_path):
    import pandas as pd

    from figures.summary import main as summary_main

    folder, _ = tiny_results
    status, out, err = run_cli(summary_main, ["--results", folder], capsys)
    assert status == 0, err
    gains = pd.read_csv(folder / "gains" / "gains.csv")
    row = gains[(gains["variant"] == "mos") & (gains["hidden_dim"] == 4) & (gains["metric"] == "mrr")].iloc[0]
    line = next(line for line in out.splitlines() if line.startswith("| mos K=2 |") and f"{row['value']:.4f}" in line)
    assert f"({row['diff_vs_baseline']:+.4f} [{row['diff_ci_low']:+.4f}, {row['diff_ci_high']:+.4f}]" in line
    # the tiny study's 50 replicates over its differences: the note says how low Holm's p can go
    holm_floor = min(1.0, len(gains) * 2 / 51)
    assert f"no Holm p below {holm_floor:.2g}" in out and f"over the {len(gains)} differences" in out
    reach = json.loads((folder / "reach" / "reach.json").read_text())["models"][0]
    assert f"| {reach['label']} | {reach.get('unreachable', 0):,} | {reach.get('undecided', 0):,} |" in out
    assert "nan" not in out
    rank = json.loads((folder / "rank" / "rank.json").read_text())["models"][0]
    assert f"| {rank['label']} | {rank['rank']} | {rank['rank_cap']} |" in out
    status, _, err = run_cli(summary_main, ["--results", tmp_path / "none"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "study.json is missing" in err


def test_analyses_in_workers_give_the_same_files_longest_first(tiny_results, tmp_path):
    """--jobs 2 runs the analyses in two worker processes (one thread each, as the fixture's one-worker
    study): the same bytes, started in the order of the earlier run's seconds; one analysis left runs here
    with both threads."""
    folder, _ = tiny_results
    copy = _copy_results(tiny_results, tmp_path, "data", "runs", "tuned", "study.json")
    messages = []
    record = run_study(TINY, copy, log=messages.append, jobs=2)
    expected = json.loads((folder / "study.json").read_text())["analysis_seconds"]
    assert [m.split()[0] for m in messages] == [{"rank": "rank", "compare": "comparing", "gains": "every",
                                                 "reach": "reachability", "capacity": "capacity"}[name]
                                                for name in sorted(expected, key=lambda name: -expected[name])]
    assert all(m.endswith("(in a worker)") for m in messages) and record["threads"] == 1
    for name, file in [("rank", "spectrum.csv"), ("rank", "expressive.csv"), ("compare", "breakdown.csv"),
                       ("gains", "gains.csv"), ("reach", "reach.csv"), ("capacity", "capacity_sweep.csv")]:
        assert (copy / name / file).read_bytes() == (folder / name / file).read_bytes(), (name, file)
    timed = ["train_events_per_second", "eval_events_per_second"]  # measured anew, the rest must not move
    pd.testing.assert_frame_equal(pd.read_csv(copy / "compare" / "metrics.csv").drop(columns=timed),
                                  pd.read_csv(folder / "compare" / "metrics.csv").drop(columns=timed), check_exact=True)
    assert record["analyses"] == json.loads((folder / "study.json").read_text())["analyses"]
    (copy / "reach" / "key.txt").unlink()  # a run cut short in the audit
    messages.clear()
    record = run_study(TINY, copy, log=messages.append, jobs=2)
    assert [m.split()[0] for m in messages] == ["reachability"] and "worker" not in messages[0]
    assert record["threads"] == 2
    assert json.loads((copy / "reach" / "reach.json").read_text())["threads"] == 2
