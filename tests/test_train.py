"""Training: determinism, resume = uninterrupted, bad input, and MoS beating softmax where it should."""


import numpy as np
import pytest
import torch

from conftest import TINY_MODEL, run_cli
from softmax_bottleneck.checkpoint import load_checkpoint, model_from_checkpoint
from softmax_bottleneck.data import save_prepared
from softmax_bottleneck.evaluation import evaluate_ranks
from softmax_bottleneck.config import ModelConfig
from softmax_bottleneck.synthetic import SyntheticConfig, prepare_synthetic
from softmax_bottleneck.config import TrainConfig
from softmax_bottleneck.train import main
from softmax_bottleneck.training import train


def _train(tiny_synthetic, out, *extra):
    return main(["--data", str(tiny_synthetic.path), "--out", str(out), *TINY_MODEL, *extra])


def _weights(path):
    return load_checkpoint(path)["state_dict"]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_records_everything(tiny_checkpoint, tiny_synthetic):
    checkpoint = load_checkpoint(tiny_checkpoint)
    assert checkpoint["model_config"]["hidden_dim"] == 8 and checkpoint["train_config"]["n_sample"] == 32
    assert checkpoint["data"]["fingerprint"] == tiny_synthetic.fingerprint
    assert checkpoint["item_ids"] == tiny_synthetic.item_ids.tolist()
    for epoch in checkpoint["metrics"]:
        assert epoch["events_per_second"] > 0 and 0 <= epoch["valid_recall@20"] <= 1
        assert epoch["train_events"] == tiny_synthetic.splits["train"].n_transitions


def test_training_learns_beyond_popularity(tiny_checkpoint, tiny_synthetic):
    model = model_from_checkpoint(load_checkpoint(tiny_checkpoint))
    ranks = evaluate_ranks(model, tiny_synthetic.splits["valid"]).ranks
    support = tiny_synthetic.support
    split = tiny_synthetic.splits["valid"]
    targets = np.concatenate([split.session(s)[1:] for s in range(split.n_sessions)])
    popularity_ranks = (support[None, :] >= support[targets][:, None]).sum(axis=1)
    assert np.mean(ranks <= 5) > np.mean(popularity_ranks <= 5) + 0.1


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, tiny_synthetic, tiny_checkpoint):
    assert _train(tiny_synthetic, tmp_path / "again.pt", "--epochs", "2") == 0
    assert _same(_weights(tmp_path / "again.pt"), _weights(tiny_checkpoint))
    assert _train(tiny_synthetic, tmp_path / "other.pt", "--epochs", "2", "--seed", "1") == 0
    assert not _same(_weights(tmp_path / "other.pt"), _weights(tiny_checkpoint))


def test_resume_gives_the_uninterrupted_weights(tmp_path, tiny_synthetic, tiny_checkpoint):
    assert _train(tiny_synthetic, tmp_path / "r.pt", "--epochs", "1") == 0
    assert load_checkpoint(tmp_path / "r.pt")["epoch"] == 1
    assert _train(tiny_synthetic, tmp_path / "r.pt", "--epochs", "2", "--resume") == 0
    resumed = load_checkpoint(tmp_path / "r.pt")
    assert resumed["epoch"] == 2 and len(resumed["metrics"]) == 2
    assert _same(resumed["state_dict"], _weights(tiny_checkpoint))


@pytest.mark.parametrize("extra", [["--full-softmax"], ["--optimizer", "adam", "--lr", "0.01"],
                                   ["--head", "mos", "--n-experts", "3"], ["--n-sample", "0"],
                                   ["--embedding", "separate", "--no-item-bias", "--n-layers", "2"]])
def test_training_variants_run(tmp_path, tiny_synthetic, extra):
    assert _train(tiny_synthetic, tmp_path / "v.pt", "--epochs", "1", *extra) == 0
    checkpoint = load_checkpoint(tmp_path / "v.pt")
    assert np.isfinite(checkpoint["metrics"][0]["loss"])
    model_from_checkpoint(checkpoint)


BAD = {
    "zero experts": (["--head", "mos", "--n-experts", "0"], "--n-experts"),
    "zero dim": (["--hidden-dim", "0"], "--hidden-dim"),
    "dropout one": (["--dropout-hidden", "1.0"], "--dropout-hidden"),
    "negative dropout": (["--dropout-embedding", "-0.5"], "--dropout-embedding"),
    "cuda without gpu": (["--device", "cuda"], "CUDA") if not torch.cuda.is_available() else
    (["--device", "tpu"], "not a device"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_invalid_settings_one_line_exit_2(tmp_path, tiny_synthetic, capsys, case):
    argv, needle = BAD[case]
    status, _, err = run_cli(main, ["--data", tiny_synthetic.path, "--out", tmp_path / "x.pt", "--quiet", *argv],
                             capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and needle in err
    assert not (tmp_path / "x.pt").exists()


def test_existing_checkpoint_is_not_overwritten_without_resume(tmp_path, tiny_synthetic, tiny_checkpoint, capsys):
    path = tmp_path / "keep.pt"
    path.write_bytes(tiny_checkpoint.read_bytes())
    status, _, err = run_cli(main, ["--data", tiny_synthetic.path, "--out", path, *TINY_MODEL], capsys)
    assert status == 2 and "--resume" in err
    assert path.read_bytes() == tiny_checkpoint.read_bytes()
    status, _, err = run_cli(main, ["--data", tiny_synthetic.path, "--out", path, *TINY_MODEL, "--lr", "0.3",
                                    "--epochs", "3", "--resume"], capsys)
    assert status == 2 and "settings differ" in err
    assert path.read_bytes() == tiny_checkpoint.read_bytes()


def test_a_second_run_on_the_same_out_is_refused_while_the_first_holds_it(tmp_path, tiny_synthetic, capsys):
    from softmax_bottleneck.atomic import destination_lock

    path = tmp_path / "busy.pt"
    with destination_lock(path):  # what a first `train --out busy.pt` holds until it ends
        status, _, err = run_cli(main, ["--data", tiny_synthetic.path, "--out", path, *TINY_MODEL], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "another training run is writing it" in err
    assert not path.exists()
    status, _, err = run_cli(main, ["--data", tiny_synthetic.path, "--out", path, *TINY_MODEL, "--epochs", "1"], capsys)
    assert status == 0 and path.exists()  # the lock ends with the run that held it


def test_ctrl_c_says_how_to_go_on(tmp_path, tiny_synthetic, tiny_checkpoint, capsys, monkeypatch):
    from softmax_bottleneck import training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted)
    status, _, err = run_cli(main, ["--data", tiny_synthetic.path, "--out", tmp_path / "new.pt", *TINY_MODEL], capsys)
    assert status == 130 and "no epoch finished" in err
    path = tmp_path / "old.pt"
    path.write_bytes(tiny_checkpoint.read_bytes())
    status, _, err = run_cli(main, ["--data", tiny_synthetic.path, "--out", path, *TINY_MODEL, "--resume"], capsys)
    assert status == 130 and "--resume" in err and "holds the last finished epoch" in err


def test_missing_data_folder(tmp_path, capsys):
    status, _, err = run_cli(main, ["--data", tmp_path / "nope", "--out", tmp_path / "x.pt"], capsys)
    assert status == 2 and "no such prepared dataset" in err


def test_mos_beats_softmax_of_the_same_size_on_synthetic_log_likelihood(tmp_path):
    """The synthetic truth has rank ≈ n_items; a softmax with d=4 is capped at 6, MoS is not."""
    dataset = prepare_synthetic(SyntheticConfig(n_items=60, n_sessions=1500, seed=0))
    save_prepared(dataset, tmp_path / "w")
    config = TrainConfig(epochs=4, full_softmax=True, optimizer="adam", lr=0.01, seed=0)
    log_likelihood = {}
    for head, experts in (("softmax", None), ("mos", 8)):
        checkpoint = train(dataset, ModelConfig(head=head, n_experts=experts, hidden_dim=4, dropout_hidden=0.0),
                           config, tmp_path / f"{head}.pt", progress=False, log=lambda m: None)
        model = model_from_checkpoint(checkpoint)
        log_likelihood[head] = evaluate_ranks(model, dataset.splits["valid"]).log_likelihood
    assert log_likelihood["mos"] > log_likelihood["softmax"] + 0.05, log_likelihood


class _FixedNegatives:
    """A sampler stand-in that always returns the same shared negatives."""

    def __init__(self, negatives):
        self.negatives = torch.tensor(negatives)

    def draw(self):
        return self.negatives


class _NoStep:
    def zero_grad(self, set_to_none=True):
        pass

    def step(self):
        pass


def test_train_step_loss_matches_a_hand_computed_sampled_softmax_with_logq():
    """Targets are in-batch candidates (log Q = log support), negatives are drawn ∝ support^alpha
    (log Q = alpha·log support); each row's loss is −log softmax over the candidates of h·w + b − logq·log Q."""
    from softmax_bottleneck.model import GRU4Rec
    from softmax_bottleneck.training import train_step

    torch.manual_seed(0)
    model = GRU4Rec(ModelConfig(n_items=6, hidden_dim=3))
    with torch.no_grad():
        model.head.item_bias.copy_(torch.tensor([0.3, -0.2, 0.1, 0.0, 0.5, -0.4]).view_as(model.head.item_bias))
    support = np.array([10.0, 3.0, 7.0, 1.0, 20.0, 5.0])
    config = TrainConfig(batch_size=2, n_sample=3, sample_alpha=0.5, logq=0.8)
    hidden = torch.tensor([[0.5, -0.2, 0.9], [-0.7, 0.1, 0.3]])
    targets, negatives = [2, 4], [0, 5, 5]
    losses = train_step(model, hidden, torch.tensor(targets), config, _NoStep(), _FixedNegatives(negatives),
                         torch.log(torch.tensor(support)))
    weight = model.head.item_weight.detach().double().numpy()
    bias = model.head.item_bias.detach().double().numpy().reshape(-1)
    candidates = targets + negatives
    log_q = [np.log(support[c]) for c in targets] + [0.5 * np.log(support[c]) for c in negatives]
    expected = []
    for row, h in enumerate(hidden.double().numpy()):
        logits = [h @ weight[c] + bias[c] - 0.8 * q for c, q in zip(candidates, log_q)]
        expected.append(np.log(np.sum(np.exp(logits))) - logits[row])
    np.testing.assert_allclose(losses.detach().double().numpy(), expected, rtol=1e-5)
