"""Checkpoints: round trip, and every kind of bad file refused with one line and no code run."""

import os
import pickle
import signal
import subprocess
import sys

import pytest
import torch

from conftest import REPO, run_cli
from softmax_bottleneck.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from softmax_bottleneck.errors import InputError
from softmax_bottleneck.evaluate import main as evaluate_main


class RunsCode:
    """Unpickling this would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_round_trip_gives_identical_outputs(tiny_checkpoint, tmp_path):
    checkpoint = load_checkpoint(tiny_checkpoint)
    assert checkpoint["epoch"] == 2 and len(checkpoint["metrics"]) == 2
    assert checkpoint["versions"]["torch"] == str(torch.__version__)
    model = model_from_checkpoint(checkpoint)
    copy = save_checkpoint({k: v for k, v in checkpoint.items() if k != "path"}, tmp_path / "copy.pt")
    again = model_from_checkpoint(load_checkpoint(copy))
    items, hidden = torch.tensor([0, 5, 9]), model.init_hidden(3)
    with torch.no_grad():
        torch.testing.assert_close(again.log_probs(again.step(items, hidden)[0]),
                                   model.log_probs(model.step(items, hidden)[0]), rtol=0, atol=0)


def test_only_builtins_and_tensors_go_in(tmp_path):
    with pytest.raises(TypeError):
        save_checkpoint({"model_config": object()}, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def _bad_files(tmp_path, tiny_checkpoint):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "softmax-bottleneck/checkpoint", "payload": RunsCode(marker)}, evil)
    raw = tiny_checkpoint.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint\n")
    (tmp_path / "short-text.pt").write_text("hi\n")  # the restricted unpickler raised KeyError on this
    (tmp_path / "pickle-header.pt").write_bytes(b"\x80\x02")  # and a message-less EOFError on this
    with open(tmp_path / "plain-pickle.pt", "wb") as handle:
        pickle.dump({"a": 1}, handle)
    (tmp_path / "folder.pt").mkdir()
    (tmp_path / "flipped.pt").write_bytes(_flip_inside_largest_member(raw))
    return marker


def _flip_inside_largest_member(raw: bytes, n_bytes: int = 64) -> bytes:
    """The archive with `n_bytes` XOR-ed in the middle of its largest member's data (the weights): still a
    valid zip and a valid pickle, so only the member's CRC-32 can tell."""
    import io
    import struct
    import zipfile

    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length + info.file_size // 2 - n_bytes // 2
    damaged = bytearray(raw)
    for offset in range(start, start + n_bytes):
        damaged[offset] ^= 0x5A
    return bytes(damaged)


CASES = {"missing.pt": "no such checkpoint", "evil.pt": "refused to load: it asks to import", "truncated.pt": "truncated",
         "other.pt": "not a softmax-bottleneck checkpoint", "text.pt": "truncated or not a torch checkpoint",
         "plain-pickle.pt": "not a torch checkpoint", "short-text.pt": "truncated or not a torch checkpoint",
         "pickle-header.pt": "truncated or not a torch checkpoint", "folder.pt": "is a folder, not a checkpoint file",
         "flipped.pt": "fails its checksum"}


def test_long_messages_are_cut_at_a_word_not_inside_one():
    from softmax_bottleneck.checkpoint import _shorten

    text = "PytorchStreamReader failed reading zip archive: failed finding central directory If you"
    assert _shorten(text, 80) == "PytorchStreamReader failed reading zip archive: failed finding central directory …"
    assert _shorten("short", 80) == "short"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_checkpoints_are_refused_without_running_code(tmp_path, tiny_checkpoint, capsys, name):
    marker = _bad_files(tmp_path, tiny_checkpoint)
    with pytest.raises(InputError, match=CASES[name]):
        load_checkpoint(tmp_path / name)
    status, out, err = run_cli(evaluate_main, ["--checkpoint", tmp_path / name], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and CASES[name] in err
    assert not marker.exists()  # the crafted pickle's code never ran


def test_the_crafted_pickle_really_would_run_code(tmp_path, tiny_checkpoint):
    """Guard against a test that cannot fail: unsafe loading of that file does create the marker."""
    marker = _bad_files(tmp_path, tiny_checkpoint)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path, tiny_checkpoint):
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    stale = tmp_path / f".model.pt.tmp-{dead.pid}-0123abcd.pt"
    stale.write_bytes(b"")  # what SIGKILL during torch.save leaves
    mine = tmp_path / f".model.pt.tmp-{os.getpid()}-0123abcd.pt"
    mine.write_bytes(b"")  # a live writer's: kept
    save_checkpoint(load_checkpoint(tiny_checkpoint), tmp_path / "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.pt", mine.name])


KILLED_WRITER = r"""
import contextlib, os, signal, sys
from softmax_bottleneck import checkpoint as module
from softmax_bottleneck.checkpoint import load_checkpoint, save_checkpoint
path = sys.argv[1]
checkpoint = load_checkpoint(path)
real_open = module.atomic_open
@contextlib.contextmanager
def open_then_die_half_way(target):
    with real_open(target) as handle:
        class HalfThenDie:
            def write(self, data):
                data = bytes(data)
                handle.write(data[: len(data) // 2])
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        yield HalfThenDie()
module.atomic_open = open_then_die_half_way
checkpoint["epoch"] = 99
save_checkpoint(checkpoint, path)
"""


def test_killed_while_writing_leaves_the_previous_checkpoint_intact(tmp_path, tiny_checkpoint):
    path = tmp_path / "run.pt"
    path.write_bytes(tiny_checkpoint.read_bytes())
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], cwd=REPO, capture_output=True)
    assert result.returncode == -signal.SIGKILL
    assert list(tmp_path.glob(".run.pt.tmp-*")), "the writer died mid-write of its temporary file"
    assert path.read_bytes() == tiny_checkpoint.read_bytes()
    assert load_checkpoint(path)["epoch"] == 2


def test_checkpoints_on_different_datasets_are_refused_together(twins, tiny_checkpoint, capsys):
    from softmax_bottleneck.checkpoint import load_checkpoints_on_one_dataset
    from softmax_bottleneck.errors import InputError

    checkpoints, dataset = load_checkpoints_on_one_dataset([twins / "softmax.pt", twins / "mos.pt"])
    assert len(checkpoints) == 2 and dataset.n_items == len(checkpoints[0]["item_ids"])
    with pytest.raises(InputError, match="must share one prepared dataset"):
        load_checkpoints_on_one_dataset([twins / "softmax.pt", tiny_checkpoint])


def test_the_loaded_path_is_not_saved_back(tiny_checkpoint, tmp_path):
    checkpoint = load_checkpoint(tiny_checkpoint)
    assert checkpoint.path == str(tiny_checkpoint) and "path" not in checkpoint
    save_checkpoint(checkpoint, tmp_path / "again.pt")
    raw = torch.load(tmp_path / "again.pt", weights_only=True)
    assert set(raw) == set(torch.load(tiny_checkpoint, weights_only=True))
    assert load_checkpoint(tmp_path / "again.pt").path == str(tmp_path / "again.pt")
