"""The Optuna tuner: seeded, exact trial counts with parallel workers, resumable studies, best.json → train, bad input."""

import json

import optuna
import pandas as pd
import pytest

from conftest import run_cli
from softmax_bottleneck.checkpoint import load_checkpoint
from softmax_bottleneck.train import main as train_main
from softmax_bottleneck.tune import load_space, main

SPACE = {"batch_size": {"choices": [16, 32]},
         "n_sample": {"choices": [16]},
         "optimizer": {"choices": ["adagrad", "adam"]},
         "lr": {"by": "optimizer", "adagrad": {"low": 0.02, "high": 0.2, "log": True},
                "adam": {"low": 0.001, "high": 0.05, "log": True}},
         "momentum": {"when": {"optimizer": "adagrad"}, "low": 0.0, "high": 0.5},
         "dropout_hidden": {"low": 0.0, "high": 0.5}}


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory):
    """Smaller than conftest's: a trial is a fraction of a second."""
    from softmax_bottleneck.data import save_prepared
    from softmax_bottleneck.synthetic import SyntheticConfig, prepare_synthetic

    dataset = prepare_synthetic(SyntheticConfig(n_items=30, n_sessions=240, mean_session_length=5, seed=2))
    save_prepared(dataset, tmp_path_factory.mktemp("tune-data") / "tiny")
    return dataset


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(SPACE))
    return path


def _argv(data, space, out, *extra):
    return ["--data", data.path, "--head", "softmax", "--hidden-dim", "8", "--max-epochs", "1", "--space", space,
            "--out", out, *extra]


def _tune(capsys, data, space, out, *extra):
    status, stdout, err = run_cli(main, _argv(data, space, out, *extra), capsys)
    assert status == 0, err
    return pd.read_csv(out / "trials.csv")


def _trials(out, name="softmax-d8"):
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")
    return study.get_trials(deepcopy=False)


def _params(frame):
    return frame.filter(like="param_").round(12).astype(object).where(frame.filter(like="param_").notna(), None).to_dict("records")


def test_same_seed_one_worker_same_trials_and_outputs(tmp_path, tiny_synthetic, space, capsys):
    first = _tune(capsys, tiny_synthetic, space, tmp_path / "a", "--n-trials", "3")
    second = _tune(capsys, tiny_synthetic, space, tmp_path / "b", "--n-trials", "3")
    other = _tune(capsys, tiny_synthetic, space, tmp_path / "c", "--n-trials", "3", "--seed", "1")
    assert _params(first) == _params(second) and first["value"].tolist() == second["value"].tolist()
    assert _params(first) != _params(other)
    for name in ("trials.csv", "best.json", "importance.csv"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    best = json.loads((tmp_path / "a" / "best.json").read_text())
    assert best["budget"]["trials"] == 3 and best["value"] == first["value"].max()
    assert best["train_config"]["epochs"] == 1 and best["model_config"]["hidden_dim"] == 8


def test_two_workers_run_exactly_n_trials(tmp_path, tiny_synthetic, space, capsys):
    _tune(capsys, tiny_synthetic, space, tmp_path / "j", "--n-trials", "5", "--jobs", "2")
    trials = _trials(tmp_path / "j")
    assert sorted(t.number for t in trials) == [0, 1, 2, 3, 4]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2  # both processes took trials
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 5  # no point trained twice


def test_a_rerun_continues_the_study(tmp_path, tiny_synthetic, space, capsys):
    first = _tune(capsys, tiny_synthetic, space, tmp_path / "r", "--n-trials", "2")
    again = _tune(capsys, tiny_synthetic, space, tmp_path / "r", "--n-trials", "2")  # already there: nothing to run
    assert len(again) == 2 and _params(again) == _params(first)
    more = _tune(capsys, tiny_synthetic, space, tmp_path / "r", "--n-trials", "4")
    assert len(more) == 4 and _params(more)[:2] == _params(first)
    uninterrupted = _tune(capsys, tiny_synthetic, space, tmp_path / "u", "--n-trials", "4")
    assert _params(uninterrupted) == _params(more)


def test_train_with_best_json_reproduces_the_best_trial(tmp_path, tiny_synthetic, space, capsys):
    _tune(capsys, tiny_synthetic, space, tmp_path / "t", "--n-trials", "3", "--max-epochs", "2")
    best = json.loads((tmp_path / "t" / "best.json").read_text())
    assert train_main(["--data", str(tiny_synthetic.path), "--out", str(tmp_path / "best.pt"), "--config",
                       str(tmp_path / "t" / "best.json"), "--quiet"]) == 0
    checkpoint = load_checkpoint(tmp_path / "best.pt")
    assert checkpoint["selection"]["best_value"] == best["value"]
    assert checkpoint["best_epoch"] == best["best_epoch"]


def test_the_space_file_is_checked(tmp_path):
    for content, needle in [("", "not a JSON file"), ("{}", "no parameters"), ('{"width": {"choices": [1]}}', "width"),
                            ('{"lr": {"low": 1, "high": 0}}', "low < high"),
                            ('{"lr": {"low": 0, "high": 1, "log": true}}', "low > 0"),
                            ('{"seed": {"choices": [1, 2]}}', "not searchable"),
                            ('{"lr": {"by": "optimizer", "adam": {"low": 0.1, "high": 1}}}', "earlier categorical"),
                            ('{"optimizer": {"choices": ["adam", "adagrad"]}, "lr": {"by": "optimizer", '
                             '"adam": {"low": 0.1, "high": 1}}}', "no range for optimizer=adagrad")]:
        path = tmp_path / "s.json"
        path.write_text(content)
        with pytest.raises(Exception, match=needle):
            load_space(path)
    assert "hidden_dim" not in load_space("softmax_bottleneck/spaces/softmax.json", fixed=("hidden_dim",))


def test_choices_narrow_the_space_and_every_trial_keeps_to_them(tmp_path, tiny_synthetic, space, capsys):
    from softmax_bottleneck.tune import restrict_choices

    frame = _tune(capsys, tiny_synthetic, space, tmp_path / "t", "--n-trials", "4", "--choices", "optimizer=adam",
                  "--choices", "batch_size=32")
    assert set(frame["param_optimizer"]) == {"adam"} and set(frame["param_batch_size"]) == {32}
    assert "param_momentum" not in frame  # momentum applies to Adagrad only: gone with it
    settings = json.loads((tmp_path / "t" / "best.json").read_text())["settings"]["space"]
    assert settings["optimizer"] == {"choices": ["adam"]} and "momentum" not in settings
    # the space's order is kept whatever the flag's order, so the same choices make the same study
    both = restrict_choices(SPACE, {"batch_size": [32, 16]})
    assert both["batch_size"] == {"choices": [16, 32]} and both == SPACE


@pytest.fixture(scope="module")
def existing(tmp_path_factory, tiny_synthetic):
    """A study with two trials, shared by the bad-input cases (each checks that it still has two)."""
    folder = tmp_path_factory.mktemp("existing")
    (folder / "space.json").write_text(json.dumps(SPACE))
    assert main([str(a) for a in _argv(tiny_synthetic, folder / "space.json", folder / "e", "--n-trials", "2",
                                       "--json")]) == 0
    return folder / "e"


def _bad(tmp_path, space):
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**SPACE, "dropout_hidden": {"low": 0.0, "high": 0.3}}))
    return {
        "unknown head": (["--head", "sparsemax"], "unknown head"),
        "empty space": (["--space", empty], "no parameters"),
        "malformed space": (["--space", tmp_path / "nope.json"], "no such file"),
        "storage": (["--storage", "sqlite:////proc/no/such/dir.db"], "cannot open"),
        "driver": (["--storage", "nosuchdb://host/x"], "cannot open"),
        "other space": (["--space", other], "other settings (space"),
        "other head": (["--head", "mos", "--study-name", "softmax-d8"], "other settings (head, n_experts"),
        "jobs": (["--jobs", "0"], "--jobs must be >= 1"),
        "trials": (["--n-trials", "0"], "--n-trials must be >= 1"),
        "choices value": (["--choices", "batch_size=64"], "[64] not among its choices [16, 32]"),
        "choices name": (["--choices", "lr=0.1"], "--choices lr: not a categorical"),
        "choices form": (["--choices", "batch_size"], "expected NAME=V1,V2"),
    }


@pytest.mark.parametrize("case", ["unknown head", "empty space", "malformed space", "storage", "driver",
                                  "other space", "other head", "jobs", "trials", "choices value", "choices name",
                                  "choices form"])
def test_bad_input_one_line_exit_2_and_the_study_keeps_its_trials(existing, tiny_synthetic, space, capsys, case):
    extra, needle = _bad(existing.parent, space)[case]
    before = (existing / "trials.csv").read_bytes()
    argv = _argv(tiny_synthetic, space, existing, "--n-trials", "3") + [str(a) for a in extra]
    status, _, err = run_cli(main, argv, capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert len(_trials(existing)) == 2 and (existing / "trials.csv").read_bytes() == before


def test_a_killed_workers_trial_is_failed_and_run_again(tmp_path, tiny_synthetic, space, capsys):
    import socket

    from softmax_bottleneck.tune import open_study, settings_from_args, build_parser

    out = tmp_path / "k"
    out.mkdir()
    args = build_parser().parse_args([str(a) for a in _argv(tiny_synthetic, space, out, "--n-trials", "2")])
    study = open_study(f"sqlite:///{out / 'study.db'}", "softmax-d8", settings_from_args(args))
    orphan = study.ask()  # as a worker that was killed mid-trial leaves it: RUNNING for ever
    orphan.set_user_attr("worker", f"{socket.gethostname()}:{2 ** 22 + 12345}")  # above pid_max: no such process
    frame = _tune(capsys, tiny_synthetic, space, out, "--n-trials", "2")
    assert frame["state"].tolist() == ["FAIL", "COMPLETE", "COMPLETE"]


def test_analysis_tuning_draws_the_history_and_the_importances(tmp_path, tiny_synthetic, space, capsys):
    from analysis.tuning import main as plots_main

    status, _, err = run_cli(plots_main, ["--out", tmp_path / "none"], capsys)
    assert status == 2 and "run python -m softmax_bottleneck.tune" in err
    frame = _tune(capsys, tiny_synthetic, space, tmp_path / "p", "--n-trials", "3")
    importance = pd.read_csv(tmp_path / "p" / "importance.csv")
    assert set(importance["parameter"]) <= {c[len("param_"):] for c in frame.columns if c.startswith("param_")}
    assert abs(importance["importance"].sum() - 1) < 1e-9
    status, out, err = run_cli(plots_main, ["--out", tmp_path / "p"], capsys)
    assert status == 0, err
    assert (tmp_path / "p" / "history.png").stat().st_size > 0 and (tmp_path / "p" / "importance.png").stat().st_size > 0
    import shutil

    for name, content, needle in (("trials.csv", "a,b\n1,2\n", "no column number, state, value"),
                                  ("trials.csv", '"\n', "not a tuner's table"),
                                  ("importance.csv", "parameter,importance\nlr,high\n", "column must hold numbers"),
                                  ("best.json", "{", "unreadable JSON"), ("best.json", "[1]", "no metric")):
        broken = tmp_path / f"broken-{name}-{len(content)}"
        shutil.copytree(tmp_path / "p", broken)
        (broken / name).write_text(content)
        status, _, err = run_cli(plots_main, ["--out", broken], capsys)
        assert status == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


def test_a_trial_that_ends_anyway_is_complete_not_pruned(tmp_path, tiny_synthetic, space, capsys, monkeypatch):
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: True)  # a pruner that always says stop
    last = _tune(capsys, tiny_synthetic, space, tmp_path / "last", "--n-trials", "2", "--max-epochs", "1")
    assert last["state"].tolist() == ["COMPLETE", "COMPLETE"]
    status, _, err = run_cli(main, _argv(tiny_synthetic, space, tmp_path / "early", "--n-trials", "2",
                                         "--max-epochs", "2"), capsys)
    assert status == 2 and "no complete trial yet" in err  # all pruned after epoch 1: nothing to recommend
    early = _trials(tmp_path / "early")
    assert [t.state.name for t in early] == ["PRUNED", "PRUNED"]
    assert [t.user_attrs["epochs_trained"] for t in early] == [1, 1]


def test_an_unreachable_storage_is_one_line_and_leaves_no_out_folder(tmp_path, tiny_synthetic, space, capsys):
    status, _, err = run_cli(main, _argv(tiny_synthetic, space, tmp_path / "never", "--n-trials", "1", "--storage",
                                         "postgresql://nobody@127.0.0.1:1/studies"), capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "cannot open it" in err, err
    assert not (tmp_path / "never").exists()
