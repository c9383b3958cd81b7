"""torchrun with 2 CPU processes (gloo on localhost): training equals one process, the sharded evaluation and
comparison write the single process's files, resume is exact, and a killed rank ends the job cleanly."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import REPO, TINY_MODEL
from softmax_bottleneck import distributed
from softmax_bottleneck.checkpoint import load_checkpoint

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
TIMINGS = {"threads", "world_size", "seconds", "events_per_second", "eval_events_per_second"}
# rows of a batch of 16 split between the ranks, momentum and dropout on: the replicated GRU step draws
# the single process's dropout masks, and the shared negatives come from the same seed
TRAIN = ["--hidden-dim", "8", "--batch-size", "16", "--n-sample", "32", "--lr", "0.1", "--momentum", "0.3",
         "--dropout-hidden", "0.3", "--json"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def torchrun(module: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(TORCHRUN + ["-m", module, *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          env=_env(), timeout=timeout)


def one_process(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          env=_env(), timeout=180)


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def test_a_batchs_rows_are_shared_out_whole_and_in_order(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    shares = []
    for me in range(3):
        monkeypatch.setattr(distributed, "rank", lambda me=me: me)
        shares.append(distributed.rows_of_rank(8))
    assert [list(range(8))[s] for s in shares] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    # chunk c is scored by rank c mod W, and each rank's records come back in chunk order
    owners = [distributed.owner(c) for c in range(7)]
    assert owners == [0, 1, 2, 0, 1, 2, 0]
    assert distributed.interleave([["c0", "c3", "c6"], ["c1", "c4"], ["c2", "c5"]], owners) == [f"c{c}" for c in range(7)]


@pytest.mark.parametrize("head", ["softmax", "mos"])
def test_two_ranks_train_the_model_one_process_trains(tiny_synthetic, tmp_path, head):
    args = ["--data", tiny_synthetic.path, "--epochs", "1", "--head", head, *TRAIN]
    args += ["--n-experts", "2"] if head == "mos" else []
    alone = one_process("softmax_bottleneck.train", *args, "--out", tmp_path / "one.pt")
    shared = torchrun("softmax_bottleneck.train", *args, "--out", tmp_path / "two.pt")
    assert alone.returncode == 0 and shared.returncode == 0, shared.stderr[-3000:]
    printed = [json.loads(line) for line in shared.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1 and printed[0]["world_size"] == 2  # rank 0 alone prints
    a, b = load_checkpoint(tmp_path / "one.pt"), load_checkpoint(tmp_path / "two.pt")
    assert a["world_size"] == 1 and b["world_size"] == 2
    # float32 sums in another order, over a whole epoch (about 230 steps), amplified by Adagrad's steps:
    # measured 2.3e-6 (softmax) and 1.9e-5 (MoS) at most, on weights of about 0.1 to 0.6, since a step
    # scores each touched item once (before: 6.1e-7 and 3.9e-6 on this data); one step's gradients are
    # the single process's to 1e-13 in float64 (tests/test_train.py), a wrong share would move weights by ~lr
    for name, weights in a["state_dict"].items():
        assert (weights - b["state_dict"][name]).abs().max() <= 1e-4, name
    for one, two in zip(a["metrics"], b["metrics"]):  # the sharded validation: the same metrics, exactly
        assert {k: v for k, v in one.items() if k.startswith("valid_")} == \
               {k: v for k, v in two.items() if k.startswith("valid_")}


def test_torchrun_with_one_process_joins_the_group_and_trains_the_same_bits(tiny_synthetic, tmp_path):
    """World size 1 under torchrun (the GPU check's NCCL run on one GPU) goes through the collectives and
    changes nothing: the plain process's weights, bit for bit."""
    args = ["--data", tiny_synthetic.path, "--epochs", "1", *TRAIN]
    assert one_process("softmax_bottleneck.train", *args, "--out", tmp_path / "plain.pt").returncode == 0
    alone = subprocess.run([*TORCHRUN[:-1], "1", "-m", "softmax_bottleneck.train", *map(str, args), "--out",
                            str(tmp_path / "torchrun.pt")], capture_output=True, text=True, cwd=REPO, env=_env(),
                           timeout=180)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert "torchrun: 1 process(es) in the group (gloo)" in alone.stderr
    plain, ranked = load_checkpoint(tmp_path / "plain.pt"), load_checkpoint(tmp_path / "torchrun.pt")
    assert plain["world_size"] == 1 and ranked["world_size"] == 1
    assert all(torch.equal(plain["state_dict"][k], ranked["state_dict"][k]) for k in plain["state_dict"])


def test_resume_under_torchrun_is_exact(tiny_synthetic, tmp_path):
    args = ["--data", tiny_synthetic.path, *TRAIN]
    assert torchrun("softmax_bottleneck.train", *args, "--epochs", "2", "--out", tmp_path / "whole.pt").returncode == 0
    assert torchrun("softmax_bottleneck.train", *args, "--epochs", "1", "--out", tmp_path / "cut.pt").returncode == 0
    resumed = torchrun("softmax_bottleneck.train", *args, "--epochs", "2", "--out", tmp_path / "cut.pt", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole, cut = load_checkpoint(tmp_path / "whole.pt"), load_checkpoint(tmp_path / "cut.pt")
    for key in ("state_dict", "last_state_dict"):
        assert all(torch.equal(whole[key][name], cut[key][name]) for name in whole[key])


def test_sharded_evaluation_writes_the_single_process_numbers(tiny_checkpoint, tiny_synthetic, tmp_path):
    args = ["--checkpoint", tiny_checkpoint, "--data", tiny_synthetic.path, "--split", "test", "--json",
            "--batch-size", "8"]  # small blocks: many chunks, shared out by turns
    alone = one_process("softmax_bottleneck.evaluate", *args, "--per-event", tmp_path / "one.csv")
    shared = torchrun("softmax_bottleneck.evaluate", *args, "--per-event", tmp_path / "two.csv")
    assert shared.returncode == 0, shared.stderr[-3000:]
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "two.csv").read_bytes()
    one, two = json.loads(alone.stdout), json.loads(shared.stdout)
    assert two["world_size"] == 2 and _without_timings(one) == _without_timings(two)


def test_sharded_comparison_writes_the_single_process_files(twins, tmp_path):
    args = ["--checkpoint", twins / "softmax.pt", twins / "mos.pt", "--data", twins / "data", "--split", "test",
            "--n-bootstrap", "200"]
    assert one_process("analysis.compare", *args, "--out", tmp_path / "one").returncode == 0
    shared = torchrun("analysis.compare", *args, "--out", tmp_path / "two")
    assert shared.returncode == 0, shared.stderr[-3000:]
    for name in ("health.csv", "breakdown.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    # metrics.csv: every column but the evaluation's speed, to the last digit
    one, two = (pd.read_csv(tmp_path / f / "metrics.csv", dtype=str).drop(columns="eval_events_per_second")
                for f in ("one", "two"))
    pd.testing.assert_frame_equal(one, two)
    one, two = (json.loads((tmp_path / f / "compare.json").read_text()) for f in ("one", "two"))
    assert two["world_size"] == 2 and _without_timings(one) == _without_timings(two)


@pytest.fixture(scope="module")
def wide_mos(tmp_path_factory):
    """A MoS model on a 1,100-item world: blocks of several column tiles (TILE_COLUMNS = 512 items) and a Gram
    matrix of two row panels (512 rows each), so that the ranks of a rank report share real work."""
    from softmax_bottleneck.data import save_prepared
    from softmax_bottleneck.synthetic import SyntheticConfig, prepare_synthetic
    from softmax_bottleneck.train import main as train_main

    folder = tmp_path_factory.mktemp("wide")
    save_prepared(prepare_synthetic(SyntheticConfig(n_items=1100, n_sessions=1500, seed=3)), folder / "data")
    assert train_main(["--data", str(folder / "data"), "--head", "mos", "--n-experts", "2", "--hidden-dim", "8",
                       "--epochs", "1", "--n-sample", "64", "--quiet", "--out", str(folder / "mos.pt")]) == 0
    return folder


@pytest.mark.parametrize("engine", ["gram", "direct"])
def test_sharded_rank_report_writes_the_single_process_files(wide_mos, engine, tmp_path):
    """600 contexts × 1,100 items: the Gram engine by column blocks of 700 (a block of two column tiles, shared,
    then one of a single tile), its two row panels one per rank, the truth's Gram too; the direct engine's
    dense matrix in three column tiles; the expressive sweep's fits shared by r."""
    args = ["--checkpoint", wide_mos / "mos.pt", "--data", wide_mos / "data", "--max-contexts", "600",
            "--engine", engine, "--block-size", "700", "--expressive", "2", "4", "8", "--expressive-steps", "5"]
    alone = one_process("analysis.rank", *args, "--out", tmp_path / "one")
    assert alone.returncode == 0, alone.stderr[-3000:]
    shared = torchrun("analysis.rank", *args, "--out", tmp_path / "two")
    assert shared.returncode == 0, shared.stderr[-3000:]
    one, two = (json.loads((tmp_path / f / "rank.json").read_text()) for f in ("one", "two"))
    assert one["engine"].startswith(engine) and two["world_size"] == 2 and one["world_size"] == 1
    assert _without_timings(one) == _without_timings(two)
    for name in ("spectrum.csv", "expressive.csv", "spectrum.png", "expressive.png"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_an_analysis_that_does_not_shard_says_so(tiny_checkpoint, monkeypatch, capsys):
    from analysis.reach import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["--checkpoint", str(tiny_checkpoint)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "one process" in err


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the worker of this rank that torchrun process `parent` started (a child of it)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent and f"RANK={rank}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


def test_a_killed_rank_ends_the_job_and_the_last_checkpoint_stays_whole(tiny_synthetic, tmp_path):
    out = tmp_path / "run.pt"
    job = subprocess.Popen(TORCHRUN + ["-m", "softmax_bottleneck.train", "--data", str(tiny_synthetic.path),
                                       "--epochs", "200", *TINY_MODEL, "--out", str(out)],
                           cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)  # its own process group: a failed test leaves no worker behind
    try:
        deadline = time.monotonic() + 120
        while not out.exists() and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.2)
        assert out.exists(), "no epoch was written"
        victim = _rank_pid(job.pid, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        _, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert job.returncode != 0
    mine = [line for line in err.splitlines() if line.startswith("error: rank 0 stopped")]
    assert len(mine) == 1 and "--resume" in mine[0], err[-3000:]
    checkpoint = load_checkpoint(out)  # whole: its checksums hold
    assert checkpoint["world_size"] == 2 and checkpoint["epoch"] >= 1


STOPPING_SLOWLY = """
import os, signal, sys, time
from softmax_bottleneck import cli, distributed

def stop_slowly(synchronise=True):  # torchrun's SIGTERM comes while this rank leaves the group
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.5)
    leave(synchronise)

leave, distributed.stop = distributed.stop, stop_slowly

def body():
    with distributed.session("cpu"):
        raise RuntimeError("Connection closed by peer")  # what gloo raises when a peer is gone

sys.exit(cli.run_main(body))
"""


def test_torchruns_sigterm_while_a_failed_rank_leaves_does_not_cut_its_line():
    """Once one rank is gone torchrun SIGTERMs the others; a rank already stopping must still say why (in CI the
    line was lost when the SIGTERM came between the failure and the print)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**_env(), "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "TORCHELASTIC_RUN_ID": "test"}
    done = subprocess.run([sys.executable, "-c", STOPPING_SLOWLY], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 130, done.stderr[-2000:]
    assert done.stderr.count("error: rank 0 stopped: another rank of the job is gone") == 1


def test_bad_input_under_torchrun_is_said_once_by_rank_0(tmp_path, monkeypatch, capsys):
    from softmax_bottleneck.train import main

    for rank, lines in (("1", 0), ("0", 1)):
        monkeypatch.setenv("RANK", rank)
        assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run.pt")]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == lines
