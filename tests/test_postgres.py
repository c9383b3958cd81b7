"""Tuning against a real PostgreSQL server, started by the test on this machine (loopback only).

Skipped, with the reason, where the server's programs (Debian's ``postgresql``: initdb, pg_ctl) or the
driver (psycopg) are missing; ``.ci/run`` installs both.
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

SPACE = '{"optimizer": {"choices": ["adagrad"]}, "lr": {"low": 0.05, "high": 0.3, "log": true}, ' \
        '"batch_size": {"choices": [16, 32]}, "n_sample": {"choices": [0, 16]}}'


def _program(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A throwaway PostgreSQL server on 127.0.0.1 (trust authentication, its own data folder), stopped at the
    end; yields the SQLAlchemy URL of an empty database."""
    pytest.importorskip("psycopg", reason="the PostgreSQL driver psycopg is not installed (pip install 'psycopg[binary]')")
    initdb, pg_ctl = _program("initdb"), _program("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL's server programs are not installed (apt-get install postgresql)")
    root = tmp_path_factory.mktemp("postgres")
    run_as: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: as the postgres user Debian's package makes
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
        os.chmod(root, 0o755)
        for parent in root.parents:  # the server user must reach its data folder
            if str(parent).startswith(str(tmp_path_factory.getbasetemp().parent)):
                os.chmod(parent, os.stat(parent).st_mode | 0o711)
        shutil.chown(root, account.pw_uid, account.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    subprocess.run(run_as + [initdb, "-D", str(data), "-A", "trust", "-U", "tester", "--no-sync"], check=True,
                   capture_output=True)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(run_as + [pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
                   check=True, capture_output=True)
    try:
        subprocess.run(run_as + [_program("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(port), "-U",
                                 "tester", "studies"], check=True, capture_output=True)
        yield f"postgresql://tester@127.0.0.1:{port}/studies"
    finally:
        subprocess.run(run_as + [pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)


def test_two_workers_on_one_postgres_study_run_exactly_n_trials(postgres, tiny_synthetic, tmp_path):
    """The same command on two "machines" (two processes here), one study on the server: N trials in all."""
    import optuna

    space = tmp_path / "space.json"
    space.write_text(SPACE)
    command = [sys.executable, "-m", "softmax_bottleneck.tune", "--data", str(tiny_synthetic.path), "--head",
               "softmax", "--hidden-dim", "8", "--max-epochs", "1", "--space", str(space), "--n-trials", "6",
               "--storage", postgres, "--study-name", "shared"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [subprocess.Popen(command + ["--out", str(tmp_path / f"worker{i}")], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    began = time.perf_counter()
    outputs = [w.communicate(timeout=300) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-800:] for o in outputs]
    trials = optuna.load_study(study_name="shared", storage=postgres).get_trials(deepcopy=False)
    counted = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 6 and sorted(t.number for t in trials) == list(range(len(trials)))
    assert len({t.user_attrs["worker"] for t in counted}) == 2, "both workers took trials"
    assert time.perf_counter() - began < 300
    # each worker's folder has the shared study's results
    assert all((tmp_path / f"worker{i}" / "best.json").is_file() for i in range(2))


def test_the_claim_lock_is_held_on_the_server(postgres):
    """Workers on other machines share no lock file: the claim is serialised by the server's advisory lock
    (without it two workers can both see N − 1 trials and both start one)."""
    import threading

    from softmax_bottleneck.tune import claim_lock

    events = []
    held, released = threading.Event(), threading.Event()

    def first():
        with claim_lock(postgres, "shared"):
            events.append("first in")
            held.set()
            released.wait(timeout=30)
            time.sleep(0.3)
            events.append("first out")

    def second():
        held.wait(timeout=30)
        released.set()
        with claim_lock(postgres, "shared"):
            events.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert events == ["first in", "first out", "second in"]
    with claim_lock(postgres, "another study"), claim_lock(postgres, "shared"):  # one lock per study
        pass
