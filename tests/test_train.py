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
    model = GRU4Rec(ModelConfig(n_items=6, hidden_dim=3, dropout_hidden=0.0))
    with torch.no_grad():
        model.head.item_bias.copy_(torch.tensor([0.3, -0.2, 0.1, 0.0, 0.5, -0.4]).view_as(model.head.item_bias))
    support = np.array([10.0, 3.0, 7.0, 1.0, 20.0, 5.0])
    config = TrainConfig(batch_size=2, n_sample=3, sample_alpha=0.5, logq=0.8)
    inputs, state = torch.tensor([1, 3]), torch.tensor([[[0.5, -0.2, 0.9], [-0.7, 0.1, 0.3]]])
    with torch.no_grad():
        output = model.step(inputs, state)[0]  # no dropout: the GRU output the step's loss sees
    targets, negatives = [2, 4], [0, 5, 5]
    losses, new_state = train_step(model, inputs, state, torch.tensor(targets), config, _NoStep(),
                                   _FixedNegatives(negatives), torch.log(torch.tensor(support)))
    torch.testing.assert_close(new_state[0], output)
    weight = model.head.item_weight.detach().double().numpy()
    bias = model.head.item_bias.detach().double().numpy().reshape(-1)
    candidates = targets + negatives
    log_q = [np.log(support[c]) for c in targets] + [0.5 * np.log(support[c]) for c in negatives]
    expected = []
    for row, h in enumerate(output.double().numpy()):
        logits = [h @ weight[c] + bias[c] - 0.8 * q for c, q in zip(candidates, log_q)]
        expected.append(np.log(np.sum(np.exp(logits))) - logits[row])
    np.testing.assert_allclose(losses.detach().double().numpy(), expected, rtol=1e-5)


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("head", ["softmax", "mos", "mol", "sigsoftmax", "softmax-dd"])
def test_train_steps_equal_the_sparse_embedding_steps(head, float64):
    """train_step reads the touched item rows from one gather (GRU4Rec.touched_rows); five steps of it
    (dropout on, momentum on; float64) leave every parameter and the optimizer's state where the plain steps
    leave them: F.embedding(sparse=True) reads and the optimizer's own coalesce. Items the inputs read and
    no candidate does keep their bias and its momentum untouched in both."""
    import copy

    from softmax_bottleneck.model import GRU4Rec
    from softmax_bottleneck.training import NegativeSampler, _make_optimizer, train_step

    config = TrainConfig(batch_size=4, n_sample=6, sample_alpha=0.5, logq=1.0, lr=0.2, momentum=0.3)
    variant = {"mos": dict(head="mos", n_experts=2),
               "softmax-dd": dict(head="softmax", embedding="separate")}.get(head, dict(head=head))
    model = GRU4Rec(ModelConfig(n_items=40, hidden_dim=5, **variant))
    model.reset_parameters(torch.Generator().manual_seed(1))
    twin = copy.deepcopy(model)
    support = np.arange(1.0, 41.0)
    log_support = torch.log(torch.as_tensor(support))
    generator = torch.Generator()
    batches = torch.randint(0, 40, (6, 4), generator=torch.Generator().manual_seed(2))
    final = {}
    for name, net in (("gathered", model), ("plain", twin)):
        optimizer = _make_optimizer(net, config)
        sampler = NegativeSampler(support[:20], config.sample_alpha, config.n_sample, generator.manual_seed(3),
                                  torch.device("cpu"))  # negatives among items 0–19: items 20–39 are read by inputs only
        torch.manual_seed(4)
        state = net.init_hidden(4)
        for inputs, targets in zip(batches[:-1], batches[1:]):
            if name == "gathered":
                _, state = train_step(net, inputs, state.detach(), targets, config, optimizer, sampler, log_support)
                continue
            output, state = net.step(inputs, state.detach())
            candidates = torch.cat([targets, sampler.draw()])
            log_q = torch.cat([log_support[targets], config.sample_alpha * log_support[candidates[4:]]])
            loss = net.head.loss(output, torch.arange(4), candidates, log_q).sum() / config.batch_size
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        final[name] = (net.state_dict(), optimizer)
    (params, optimizer), (twin_params, twin_optimizer) = final["gathered"], final["plain"]
    for key in params:
        torch.testing.assert_close(params[key], twin_params[key], rtol=1e-10, atol=1e-12, msg=lambda m: f"{key}: {m}")
    for param, twin_param in zip(optimizer.param_groups[0]["params"], twin_optimizer.param_groups[0]["params"]):
        for key in ("acc", "mom"):
            torch.testing.assert_close(optimizer.state[param][key], twin_optimizer.state[twin_param][key],
                                       rtol=1e-10, atol=1e-12)
    read_only_by_inputs = [i for i in range(20, 40) if i not in batches[1:].flatten().tolist()
                           and i in batches[:-1].flatten().tolist()]
    assert read_only_by_inputs, "the test needs items that only inputs read"
    bias = model.head.item_bias
    assert torch.equal(optimizer.state[bias]["mom"][read_only_by_inputs], torch.zeros(len(read_only_by_inputs), 1))


def test_alias_table_gives_each_item_its_share_exactly():
    """keep[i]/n of item i's probability comes from its own column, (1 − keep[j])/n from every column j
    whose alias it is: the sum is weights[i] / weights.sum(), zero weights included."""
    from softmax_bottleneck.training import alias_table

    weights = np.random.default_rng(0).pareto(1.2, 500) * (np.arange(500) % 7 != 0)  # a seventh are zero
    keep, alias = alias_table(weights)
    share = keep.numpy() / len(weights)
    np.add.at(share, alias.numpy(), (1 - keep.numpy()) / len(weights))
    np.testing.assert_allclose(share, weights / weights.sum(), rtol=0, atol=1e-15)


def test_negative_sampler_draws_support_to_the_alpha():
    """200 × 2,048 draws over 50 items ∝ support^0.5: Pearson's chi-square against those shares passes
    (and fails against support^0.75); an item of support 0 is never drawn; a reset repeats an epoch's draws."""
    from scipy.stats import chisquare

    from softmax_bottleneck.training import NegativeSampler

    support = np.arange(50.0) ** 2
    sampler = NegativeSampler(support, 0.5, 2048, torch.Generator().manual_seed(7), torch.device("cpu"), block_steps=64)
    draws = torch.cat([sampler.draw() for _ in range(200)])
    counts = torch.bincount(draws, minlength=50).numpy()
    assert counts[0] == 0
    expected = support[1:] ** 0.5 / (support[1:] ** 0.5).sum() * len(draws)
    assert chisquare(counts[1:], expected).pvalue > 0.01
    wrong = support[1:] ** 0.75 / (support[1:] ** 0.75).sum() * len(draws)
    assert chisquare(counts[1:], wrong).pvalue < 1e-6
    generator = torch.Generator().manual_seed(7)
    again = NegativeSampler(support, 0.5, 2048, generator, torch.device("cpu"), block_steps=64)
    assert torch.equal(again.draw(), draws[:2048])


@pytest.mark.parametrize("head", ["softmax", "mos", "mol", "sigsoftmax"])
def test_the_ranks_gradients_sum_to_the_single_process_gradient(head, float64, monkeypatch):
    """Under torchrun each rank takes the loss of its share of a batch's rows over the same merged
    candidates (touched_rows); what sum_gradients adds up is then the single process's gradient, to
    rounding in float64. Emulated here in one process, one share at a time."""
    from softmax_bottleneck import distributed
    from softmax_bottleneck.model import GRU4Rec
    from softmax_bottleneck.training import train_step

    model = GRU4Rec(ModelConfig(n_items=40, hidden_dim=5, head=head, n_experts=2 if head == "mos" else 1,
                                dropout_hidden=0.0))
    model.set_sparse_gradients(True)
    config = TrainConfig(batch_size=6, n_sample=9, sample_alpha=0.5, logq=1.0)
    generator = torch.Generator().manual_seed(0)
    inputs, targets = torch.randint(0, 40, (6,), generator=generator), torch.randint(0, 40, (6,), generator=generator)
    negatives = torch.randint(0, 20, (9,), generator=generator)  # duplicates, and items drawn and also targets
    state = torch.randn(1, 6, 5, generator=generator)
    log_support = torch.log(torch.arange(1.0, 41.0))

    def gradients(share):
        monkeypatch.setattr(distributed, "active", lambda: share is not None)
        monkeypatch.setattr(distributed, "rows_of_rank", lambda n_rows: share)
        model.zero_grad(set_to_none=True)
        train_step(model, inputs, state, targets, config, _NoStep(), _FixedNegatives(negatives.tolist()), log_support)
        return {name: (p.grad.to_dense() if p.grad.is_sparse else p.grad).clone()
                for name, p in model.named_parameters() if p.grad is not None}

    single, first, second = gradients(None), gradients(slice(0, 4)), gradients(slice(4, 6))
    assert set(first) == set(second) == set(single)
    for name in single:
        torch.testing.assert_close(first[name] + second[name], single[name], rtol=1e-10, atol=1e-13, msg=name)
