from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ML100K = REPO.parent / "shared" / "data" / "ml-100k" / "ml-100k.inter"


@pytest.fixture
def ml100k_path() -> Path:
    if not ML100K.is_file():
        pytest.skip(f"MovieLens-100K sample not found at {ML100K} (see shared/data/ml-100k/README.md)")
    return ML100K


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run_cli(main, argv, capsys):
    """Call a CLI main(argv); return (exit status, stdout, stderr) of that call alone."""
    capsys.readouterr()  # drop what earlier calls printed
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse errors
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A small prepared synthetic world on disk (seconds to build)."""
    from softmax_bottleneck.data import save_prepared
    from softmax_bottleneck.synthetic import SyntheticConfig, prepare_synthetic

    dataset = prepare_synthetic(SyntheticConfig(n_items=50, n_sessions=800, mean_session_length=6, seed=7))
    save_prepared(dataset, tmp_path_factory.mktemp("data") / "tiny")
    return dataset


TINY_MODEL = ["--hidden-dim", "8", "--batch-size", "16", "--n-sample", "32", "--lr", "0.1", "--quiet"]


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_synthetic, tmp_path_factory):
    """A softmax checkpoint trained 2 epochs on `tiny_synthetic`."""
    from softmax_bottleneck.train import main

    path = tmp_path_factory.mktemp("runs") / "softmax.pt"
    assert main(["--data", str(tiny_synthetic.path), "--out", str(path), "--epochs", "2", *TINY_MODEL]) == 0
    return path


@pytest.fixture(scope="session")
def twins(tmp_path_factory):
    """A softmax and a MoS model (K=8) of the same hidden size (d=4) on a small synthetic world."""
    from softmax_bottleneck.data import save_prepared
    from softmax_bottleneck.synthetic import SyntheticConfig, prepare_synthetic
    from softmax_bottleneck.train import main as train_main

    folder = tmp_path_factory.mktemp("twins")
    dataset = prepare_synthetic(SyntheticConfig(n_items=80, n_sessions=1200, seed=4))
    save_prepared(dataset, folder / "data")
    common = ["--data", str(folder / "data"), "--hidden-dim", "4", "--epochs", "2", "--full-softmax",
              "--optimizer", "adam", "--lr", "0.01", "--dropout-hidden", "0", "--quiet"]
    assert train_main(common + ["--out", str(folder / "softmax.pt")]) == 0
    assert train_main(common + ["--out", str(folder / "mos.pt"), "--head", "mos", "--n-experts", "8"]) == 0
    return folder


@pytest.fixture(scope="session")
def new_heads(twins):
    """A sigsoftmax and a mixture-of-logits model, trained as the twins were, on their world."""
    from softmax_bottleneck.train import main as train_main

    common = ["--data", str(twins / "data"), "--hidden-dim", "4", "--epochs", "2", "--full-softmax",
              "--optimizer", "adam", "--lr", "0.01", "--dropout-hidden", "0", "--quiet"]
    for head in ("sigsoftmax", "mol"):
        assert train_main(common + ["--out", str(twins / f"{head}.pt"), "--head", head]) == 0
    return twins


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests that call the library directly run on one thread, as every command does by default: the suite
    then keeps its pace beside other work (on all cores it took 53 minutes under a load of 5–9)."""
    import torch

    torch.set_num_threads(1)
