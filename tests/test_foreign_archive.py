"""The restricted reader of foreign torch archives: data comes back, code never runs."""

import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from softmax_bottleneck.errors import InputError
from softmax_bottleneck.foreign.archive import load_restricted, pickle_globals


class _Payload:
    """Unpickling this runs `touch MARKER` (what a malicious checkpoint would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _archive(path, payload, protocol=2):
    torch.save(payload, path, pickle_protocol=protocol)
    return path


def test_a_plain_state_dict_comes_back_exactly_at_either_protocol(tmp_path):
    state = {"weight": torch.randn(5, 3), "ids": torch.arange(4), "flags": torch.tensor([True, False])}
    for protocol in (2, 4):  # 4: RecBole's, which weights_only=True cannot read at all
        loaded = load_restricted(_archive(tmp_path / f"p{protocol}.pth", {"state_dict": state, "epoch": 3}, protocol))
        assert loaded["epoch"] == 3 and all(torch.equal(loaded["state_dict"][k], v) for k, v in state.items())


def test_a_view_shares_its_storage_as_torch_saved_it(tmp_path):
    base = torch.arange(12.0)
    loaded = load_restricted(_archive(tmp_path / "v.pth", {"a": base, "b": base[3:9].view(2, 3)}))
    assert torch.equal(loaded["b"], base[3:9].view(2, 3)) and loaded["b"].untyped_storage().data_ptr() == \
        loaded["a"].untyped_storage().data_ptr()


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_file_that_would_run_a_command_is_refused_and_the_command_does_not_run(tmp_path, protocol):
    marker = tmp_path / "ran"
    path = _archive(tmp_path / "evil.pth", {"state_dict": {}, "config": _Payload(marker)}, protocol)
    assert "posix.system" in pickle_globals(zipfile.ZipFile(path).read("evil/data.pkl"))
    with pytest.raises(InputError, match="refused to load: it asks to import posix.system"):
        load_restricted(path, allowed=("recbole.config.configurator.Config",))
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the naive load: the payload is live
    assert marker.exists()


def test_allowed_foreign_classes_become_inert_records(tmp_path):
    class Config:  # stands for a framework's class: pickled by reference to this test module
        def __init__(self):
            self.final_config_dict = {"MAX_ITEM_LIST_LENGTH": 50}

    Config.__module__, Config.__qualname__ = "tests_fake_framework", "Config"
    import sys
    import types

    sys.modules["tests_fake_framework"] = types.SimpleNamespace(Config=Config)
    try:
        path = _archive(tmp_path / "c.pth", {"config": Config(), "state_dict": {"w": torch.ones(2)}}, 4)
    finally:
        del sys.modules["tests_fake_framework"]
    with pytest.raises(InputError, match="tests_fake_framework.Config"):
        load_restricted(path)
    loaded = load_restricted(path, allowed=("tests_fake_framework.Config",))
    assert loaded["config"].qualname == "tests_fake_framework.Config"
    assert loaded["config"].attribute("final_config_dict") == {"MAX_ITEM_LIST_LENGTH": 50}


def test_truncated_and_non_archives_give_one_line(tmp_path):
    path = _archive(tmp_path / "ok.pth", {"w": torch.randn(100, 10)})
    data = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pth").write_text("hello")
    for name in ("cut.pth", "text.pth", "missing.pth"):
        with pytest.raises(InputError) as caught:
            load_restricted(tmp_path / name)
        assert "\n" not in str(caught.value) and name in str(caught.value)
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(InputError, match="not a torch checkpoint archive"):
        load_restricted(tmp_path / "raw.pkl")


FIXTURES = Path(__file__).with_name("data") / "foreign"


def test_the_official_gru4rec_file_reads_as_the_official_code_reads_it():
    """official-gru4rec.pt was written by the official code; the reference by its own (trusted) load."""
    from softmax_bottleneck.foreign.official import read_official

    reference = torch.load(FIXTURES / "official-gru4rec.reference.pt", weights_only=True)
    model = read_official(FIXTURES / "official-gru4rec.pt")
    assert sorted(model.parameters) == sorted(reference["state_dict"])
    assert all(torch.equal(model.parameters[k], v) for k, v in reference["state_dict"].items())
    assert list(model.item_ids) == reference["item_ids"]
    assert model.settings["layers"] == [16] and model.settings["constrained_embedding"] is True


def test_the_official_file_names_its_classes_and_is_refused_without_them():
    data = zipfile.ZipFile(FIXTURES / "official-gru4rec.pt").read("official-gru4rec/data.pkl")
    assert {"gru4rec_pytorch.GRU4Rec", "__builtin__.getattr", "pandas.core.series.Series"} <= set(pickle_globals(data))
    with pytest.raises(InputError, match="asks to import gru4rec_pytorch.GRU4Rec"):
        load_restricted(FIXTURES / "official-gru4rec.pt")


@pytest.mark.parametrize("name", ["gru4rec", "sasrec"])
def test_recbole_checkpoints_read_as_recbole_reads_them(name):
    """recbole-*.pth were written by RecBole 1.2.1; the references by RecBole's own (trusted) load."""
    from softmax_bottleneck.foreign.recbole import read_recbole

    reference = torch.load(FIXTURES / f"recbole-{name}.reference.pt", weights_only=True)
    # what every RecBole user meets: torch's safe loader cannot read protocol 4
    with pytest.raises(pickle.UnpicklingError), pytest.warns(UserWarning, match="protocol 4"):
        torch.load(FIXTURES / f"recbole-{name}.pth", weights_only=True)
    model = read_recbole(FIXTURES / f"recbole-{name}.pth")
    assert model.model == {"gru4rec": "GRU4Rec", "sasrec": "SASRec"}[name]
    assert sorted(model.state_dict) == sorted(reference["state_dict"])
    assert all(torch.equal(model.state_dict[k], v) for k, v in reference["state_dict"].items())
    assert model.settings["MAX_ITEM_LIST_LENGTH"] == reference["max_len"] and model.settings["embedding_size"] == 16


@pytest.mark.parametrize("name", ["gru4rec", "sasrec"])
def test_the_replay_gives_recboles_own_full_sort_scores(name):
    from softmax_bottleneck.foreign import recbole

    reference = torch.load(FIXTURES / f"recbole-{name}.reference.pt", weights_only=True)
    model = recbole.read_recbole(FIXTURES / f"recbole-{name}.pth")
    replay = recbole.gru4rec_states if name == "gru4rec" else recbole.sasrec_states
    states = replay(model, reference["item_seq"], reference["item_seq_len"])
    scores = states @ model.state_dict["item_embedding.weight"].T  # tied items, no output bias
    torch.testing.assert_close(scores, reference["scores"], rtol=0, atol=1e-5)
    with pytest.raises(InputError, match="replays RecBole"):
        (recbole.sasrec_states if name == "gru4rec" else recbole.gru4rec_states)(model, reference["item_seq"],
                                                                                 reference["item_seq_len"])


def test_the_official_model_as_a_native_gru4rec_scores_as_the_official_forward():
    """official-gru4rec.reference.pt holds the official forward's scores of 5 sessions' first 10 steps."""
    from softmax_bottleneck.foreign.official import native_model, read_official
    from softmax_bottleneck.model import GRU4Rec

    reference = torch.load(FIXTURES / "official-gru4rec.reference.pt", weights_only=True)
    official = read_official(FIXTURES / "official-gru4rec.pt")
    config, state = native_model(official)
    model = GRU4Rec(config)
    model.load_state_dict(state)
    model.eval()
    row = {item: i for i, item in enumerate(official.item_ids)}
    scores = []
    with torch.no_grad():
        for session in reference["sessions"]:
            hidden = model.init_hidden(1)
            for item in session[:-1]:
                output, hidden = model.step(torch.tensor([row[item]]), hidden)
                scores.append(model.head.scores(output)[0])
    torch.testing.assert_close(torch.stack(scores), reference["scores"], rtol=0, atol=1e-5)
    assert config.head == "softmax" and config.hidden_dim == 16 and config.embedding == "constrained"


def test_a_recbole_checkpoint_of_another_model_is_refused_by_name():
    """recbole-bert4rec.pth was written by RecBole 1.2.1 (make_recbole.py)."""
    from softmax_bottleneck.foreign.recbole import read_recbole

    with pytest.raises(InputError, match="a RecBole BERT4Rec checkpoint; supported: GRU4Rec, SASRec"):
        read_recbole(FIXTURES / "recbole-bert4rec.pth")


class _Storage:
    """A persistent reference to storage KEY of NUMEL float32s, as torch's pickler writes one."""

    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class _Call:
    """Pickles as a call of FUNCTION(*ARGS): what a crafted archive can ask for."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _crafted(path, payload, storages=None, *, byteorder="little", compress=False):
    """A torch-style zip written by hand: x/data.pkl, x/data/KEY for each storage, x/byteorder."""
    import io

    buffer = io.BytesIO()

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
            return None

    Pickler(buffer, protocol=2).dump(payload)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x/data.pkl", buffer.getvalue())
        if byteorder is not None:
            archive.writestr("x/byteorder", byteorder)
        for key, raw in (storages or {}).items():
            archive.writestr(zipfile.ZipInfo(f"x/data/{key}"), raw,
                             compress_type=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
    return path


def _tensor(storage, size):
    import collections

    return _Call(torch._utils._rebuild_tensor_v2, storage, 0, size, (1,), False, collections.OrderedDict())


def test_a_hand_written_archive_reads_like_torchs(tmp_path):
    values = torch.arange(4, dtype=torch.float32)
    path = _crafted(tmp_path / "ok.pt", {"w": _tensor(_Storage("0", 4), (4,))}, {"0": values.numpy().tobytes()})
    assert torch.equal(load_restricted(path)["w"], values)


def test_a_tensor_larger_than_its_storage_is_one_line_not_a_traceback(tmp_path):
    # torch: "Trying to resize storage that is not resizable" (a RuntimeError, exit 1 before)
    path = _crafted(tmp_path / "resize.pt", {"w": _tensor(_Storage("0", 4), (1000,))}, {"0": bytes(16)})
    with pytest.raises(InputError, match=r"resize\.pt: unreadable checkpoint pickle \(RuntimeError") as caught:
        load_restricted(path, allowed=("recbole.config.configurator.Config",))
    assert "\n" not in str(caught.value)


def test_numpy_allocations_the_pickle_asks_for_are_refused(tmp_path):
    import numpy as np

    from softmax_bottleneck.foreign.archive import _reconstruct

    direct = _crafted(tmp_path / "direct.pt", {"a": _Call(np.ndarray, (1 << 40,))})  # 8 TiB of float64
    with pytest.raises(InputError, match="calls numpy.ndarray directly"):
        load_restricted(direct)
    huge = _crafted(tmp_path / "huge.pt", {"a": _Call(_reconstruct, np.ndarray, (1 << 40,), b"b")})
    with pytest.raises(InputError, match="an array of 1,099,511,627,776 elements"):
        load_restricted(huge)
    fine = _crafted(tmp_path / "fine.pt", {"a": np.arange(5.0)})  # how numpy pickles an array: still read
    assert load_restricted(fine)["a"].tolist() == [0, 1, 2, 3, 4]


def test_a_storage_member_is_checked_against_its_header_before_it_is_read(tmp_path):
    import tracemalloc

    # 64 MiB of zeros compressed to a few KB, under a header that says 4 floats: never decompressed
    path = _crafted(tmp_path / "bomb.pt", {"w": _tensor(_Storage("0", 4), (4,))}, {"0": bytes(64 << 20)},
                    compress=True)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="holds 67,108,864 bytes compressed, its tensor header says 16"):
            load_restricted(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    larger = _crafted(tmp_path / "larger.pt", {"w": _tensor(_Storage("0", 4), (4,))}, {"0": bytes(32)})
    with pytest.raises(InputError, match="holds 32 bytes, its tensor header says 16"):
        load_restricted(larger)


def test_a_big_endian_archive_is_refused(tmp_path):
    values = torch.arange(4, dtype=torch.float32)
    path = _crafted(tmp_path / "big.pt", {"w": _tensor(_Storage("0", 4), (4,))},
                    {"0": values.numpy().astype(">f4").tobytes()}, byteorder="big")
    with pytest.raises(InputError, match="'big'-endian"):
        load_restricted(path)
