"""Epoch selection on validation: the checkpoint holds the best epoch's weights; patience; exact resume; --config."""

import json

import pytest
import torch

from conftest import TINY_MODEL, run_cli
from softmax_bottleneck import training as train_module
from softmax_bottleneck.checkpoint import load_checkpoint
from softmax_bottleneck.train import main


def _train(data, out, *extra):
    return main(["--data", str(data.path), "--out", str(out), *TINY_MODEL, *extra])


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def scripted_curve(monkeypatch):
    """Replace the validation metrics by a scripted curve (the weights still train for real)."""

    real = train_module.validate

    def script(values):
        calls = iter(values)

        def fake(model, dataset, config, device, progress=False):
            stats = real(model, dataset, config, device, progress)
            return {**stats, f"valid_{config.select_metric}": next(calls)}

        monkeypatch.setattr(train_module, "validate", fake)

    return script


def test_checkpoint_holds_the_best_epoch_which_equals_a_run_stopped_there(tmp_path, tiny_synthetic, scripted_curve):
    scripted_curve([0.5, 0.7, 0.6])
    assert _train(tiny_synthetic, tmp_path / "three.pt", "--epochs", "3") == 0
    best = load_checkpoint(tmp_path / "three.pt")
    assert best["best_epoch"] == 2 and best["epoch"] == 3
    assert [m["valid_mrr@20"] for m in best["metrics"]] == [0.5, 0.7, 0.6]  # the whole curve
    assert best["selection"] == {"metric": "mrr@20", "patience": 0, "best_epoch": 2, "best_value": 0.7,
                                 "epochs_trained": 3, "stopped_early": False, "finished": True}
    scripted_curve([0.5, 0.7])
    assert _train(tiny_synthetic, tmp_path / "two.pt", "--epochs", "2") == 0
    stopped = load_checkpoint(tmp_path / "two.pt")
    assert _same(best["state_dict"], stopped["state_dict"])
    assert not _same(best["state_dict"], best["last_state_dict"])  # epoch 3's weights are kept for resume


def test_patience_stops_and_a_resume_past_it_has_nothing_to_do(tmp_path, tiny_synthetic, scripted_curve, capsys):
    scripted_curve([0.5, 0.7, 0.6, 0.65, 0.9])
    assert _train(tiny_synthetic, tmp_path / "p.pt", "--epochs", "5", "--patience", "2") == 0
    checkpoint = load_checkpoint(tmp_path / "p.pt")
    assert checkpoint["epoch"] == 4 and checkpoint["best_epoch"] == 2
    assert checkpoint["selection"]["stopped_early"] and checkpoint["selection"]["finished"]
    before = (tmp_path / "p.pt").read_bytes()
    status, _, err = run_cli(main, ["--data", tiny_synthetic.path, "--out", tmp_path / "p.pt", *TINY_MODEL,
                                    "--epochs", "8", "--patience", "2", "--resume"], capsys)
    assert status == 2 and "nothing to do" in err and "stopped early at epoch 4" in err
    assert (tmp_path / "p.pt").read_bytes() == before


def test_resume_with_selection_is_exact(tmp_path, tiny_synthetic, scripted_curve):
    """Resumed after epoch 2, whose weights are not the best (epoch 1's are): it must go on from epoch 2's."""
    scripted_curve([0.7, 0.5, 0.6])
    assert _train(tiny_synthetic, tmp_path / "whole.pt", "--epochs", "3") == 0
    scripted_curve([0.7, 0.5])
    assert _train(tiny_synthetic, tmp_path / "parts.pt", "--epochs", "2") == 0
    scripted_curve([0.6])
    assert _train(tiny_synthetic, tmp_path / "parts.pt", "--epochs", "3", "--resume") == 0
    whole, parts = load_checkpoint(tmp_path / "whole.pt"), load_checkpoint(tmp_path / "parts.pt")
    assert whole["best_epoch"] == parts["best_epoch"] == 1
    assert _same(whole["state_dict"], parts["state_dict"]) and _same(whole["last_state_dict"], parts["last_state_dict"])
    curve = [{k: v for k, v in m.items() if k.startswith("valid_") or k == "loss"} for m in whole["metrics"]]
    assert curve == [{k: v for k, v in m.items() if k.startswith("valid_") or k == "loss"} for m in parts["metrics"]]


def test_resume_that_adds_no_epoch_is_refused_and_names_the_differing_setting(tmp_path, tiny_synthetic,
                                                                               tiny_checkpoint, capsys):
    path = tmp_path / "c.pt"
    path.write_bytes(tiny_checkpoint.read_bytes())
    status, _, err = run_cli(main, ["--data", tiny_synthetic.path, "--out", path, *TINY_MODEL, "--epochs", "1",
                                    "--resume"], capsys)
    assert status == 2 and "nothing to do" in err and "already holds 2 epochs and --epochs is" in err
    status, _, err = run_cli(main, ["--data", tiny_synthetic.path, "--out", path, *TINY_MODEL, "--epochs", "3",
                                    "--batch-size", "8", "--resume"], capsys)
    assert status == 2 and "batch_size 16 → 8" in err
    status, _, err = run_cli(main, ["--data", tiny_synthetic.path, "--out", tmp_path / "none.pt", *TINY_MODEL,
                                    "--resume"], capsys)
    assert status == 2 and "nothing to resume" in err


def test_config_file_sets_defaults_and_flags_override_it(tmp_path, tiny_synthetic):
    config = {"model_config": {"hidden_dim": 6, "dropout_hidden": 0.1, "n_items": 999},
              "train_config": {"batch_size": 8, "lr": 0.05, "optimizer": "adam", "epochs": 1, "seed": 3}}
    (tmp_path / "best.json").write_text(json.dumps(config))
    assert main(["--data", str(tiny_synthetic.path), "--out", str(tmp_path / "c.pt"), "--config",
                 str(tmp_path / "best.json"), "--seed", "4", "--quiet"]) == 0
    checkpoint = load_checkpoint(tmp_path / "c.pt")
    assert checkpoint["model_config"]["hidden_dim"] == 6 and checkpoint["model_config"]["n_items"] == 50
    assert checkpoint["train_config"]["optimizer"] == "adam" and checkpoint["train_config"]["seed"] == 4


@pytest.mark.parametrize("content, needle", [("{", "not a JSON file"), ('{"model_config": {"width": 3}}', "width"),
                                             ("[1]", "model_config")])
def test_bad_config_file_one_line_exit_2(tmp_path, tiny_synthetic, capsys, content, needle):
    (tmp_path / "bad.json").write_text(content)
    status, _, err = run_cli(main, ["--data", tiny_synthetic.path, "--out", tmp_path / "x.pt", "--config",
                                    tmp_path / "bad.json"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and needle in err
    assert err.startswith(f"error: --config {tmp_path / 'bad.json'}")  # the flag the user typed, not a field
    assert not (tmp_path / "x.pt").exists()


def test_unwritable_out_is_refused_before_training(tmp_path, tiny_synthetic, capsys, monkeypatch):
    monkeypatch.setattr(train_module, "train_epoch", lambda *a, **k: pytest.fail("trained before checking --out"))
    (tmp_path / "file").write_text("")
    for out, needle in ((tmp_path / "file" / "x.pt", "is a file"), (tmp_path, "is a folder"),
                        ("/proc/x/y.pt", "cannot write")):
        status, _, err = run_cli(main, ["--data", tiny_synthetic.path, "--out", out, *TINY_MODEL], capsys)
        assert status == 2 and needle in err, err


@pytest.mark.parametrize("argv, needle", [(["--optimizer", "adam", "--lr", "1e8"], "training diverged"),
                                          (["--select-metric", "auc"], "--select-metric must"),
                                          (["--select-metric", "mrr@5000"], "larger than the catalogue"),
                                          (["--patience", "-1"], "patience")])
def test_bad_selection_settings(tmp_path, tiny_synthetic, capsys, argv, needle):
    status, _, err = run_cli(main, ["--data", tiny_synthetic.path, "--out", tmp_path / "x.pt", *TINY_MODEL, *argv],
                             capsys)
    assert status == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_the_settings_provenance_survives_a_resume(tmp_path, tiny_synthetic):
    from softmax_bottleneck.config import ModelConfig
    from softmax_bottleneck.config import TrainConfig
    from softmax_bottleneck.training import train, tuning_record

    model, config = ModelConfig(hidden_dim=4), TrainConfig(epochs=1, batch_size=16, n_sample=16)
    record = tuning_record({"budget": {"trials": 20}, "value": 0.5, "metric": "mrr@20"}, "best.json")
    train(tiny_synthetic, model, config, tmp_path / "t.pt", progress=False, log=lambda m: None, tuning=record)
    resumed = train(tiny_synthetic, model, TrainConfig(epochs=2, batch_size=16, n_sample=16), tmp_path / "t.pt",
                    resume=True, progress=False, log=lambda m: None)
    assert resumed["epoch"] == 2 and resumed["tuning"] == record == load_checkpoint(tmp_path / "t.pt")["tuning"]
