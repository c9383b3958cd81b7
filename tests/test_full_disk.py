"""A full disk: one line and exit status 2 from every command that writes, no half-written file, no
temporary left behind, and a complete earlier result kept whole (tested on a small tmpfs)."""

import contextlib
import re
import subprocess
from pathlib import Path

import pytest

from conftest import TINY_MODEL, run_cli


@pytest.fixture
def disk(tmp_path):
    """A 1 MiB tmpfs at tmp_path/disk (skipped where this process may not mount), with `fill()` to use up
    what is left of it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.decode().strip() or 'not root'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path) -> None:
    """Use up every free byte of `mount`."""
    with open(mount / "filler", "ab", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp-" in p.name)


def one_line_full(status, err):
    """Exit 2 and one error line, the last thing written (after any progress bar's \\r-redrawn line)."""
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    assert status == 2 and lines[-1].startswith("error: ") and "No space left on device" in lines[-1], err
    assert sum(line.startswith("error") for line in lines) == 1 and "Traceback" not in err


def test_train_on_a_full_disk_is_one_line_and_leaves_nothing(disk, tiny_synthetic, capsys):
    from softmax_bottleneck.train import main

    fill(disk)
    status, _, err = run_cli(main, ["--data", tiny_synthetic.path, "--out", disk / "m.pt", *TINY_MODEL,
                                    "--epochs", "1"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "MiB free and a checkpoint" in err, err
    assert not (disk / "m.pt").exists() and temporaries(disk) == []  # refused before the first epoch


def test_a_disk_that_fills_during_training_is_one_line_and_keeps_the_last_checkpoint(disk, tiny_synthetic,
                                                                                     monkeypatch, capsys):
    from softmax_bottleneck import training
    from softmax_bottleneck.train import main

    status, _, err = run_cli(main, ["--data", tiny_synthetic.path, "--out", disk / "m.pt", *TINY_MODEL,
                                    "--epochs", "1"], capsys)
    assert status == 0, err
    before = (disk / "m.pt").read_bytes()
    monkeypatch.setattr(training, "_check_room", lambda out, model: None)  # the disk fills after the check
    fill(disk)
    status, _, err = run_cli(main, ["--data", tiny_synthetic.path, "--out", disk / "m.pt", *TINY_MODEL,
                                    "--epochs", "2", "--resume"], capsys)
    one_line_full(status, err)
    assert str(disk / "m.pt") in err and (disk / "m.pt").read_bytes() == before and temporaries(disk) == []


def test_a_rerun_into_a_full_disk_keeps_the_earlier_result_whole(disk, tiny_checkpoint, capsys):
    from analysis.rank import main

    out = disk / "rank"
    status, _, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--out", out, "--max-contexts", "200"], capsys)
    assert status == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"rank.json", "spectrum.csv", "spectrum.png"}
    fill(disk)
    status, _, err = run_cli(main, ["--checkpoint", tiny_checkpoint, "--out", out, "--max-contexts", "100"], capsys)
    one_line_full(status, err)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old consistent result, whole
    assert temporaries(disk) == []


def test_evaluate_compare_and_prepare_on_a_full_disk(disk, tiny_checkpoint, capsys):
    from analysis.compare import main as compare_main
    from softmax_bottleneck.evaluate import main as evaluate_main
    from softmax_bottleneck.prepare import main as prepare_main

    fill(disk)
    status, _, err = run_cli(evaluate_main, ["--checkpoint", tiny_checkpoint, "--per-event", disk / "r.csv"], capsys)
    one_line_full(status, err)
    status, _, err = run_cli(compare_main, ["--checkpoint", tiny_checkpoint, tiny_checkpoint, "--n-bootstrap", "100",
                                            "--out", disk / "c"], capsys)
    one_line_full(status, err)
    status, _, err = run_cli(prepare_main, ["--synthetic", "--n-items", "50", "--n-sessions", "300",
                                            "--out", disk / "w", "--quiet"], capsys)
    one_line_full(status, err)
    assert sorted(p.name for p in disk.iterdir() if not p.name.startswith(".")) in (["filler"], ["c", "filler"])
    assert temporaries(disk) == [] and not any((disk / "c").iterdir() if (disk / "c").exists() else [])
