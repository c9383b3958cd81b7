"""Hyperparameter search per head with Optuna, as the official GRU4Rec tunes (TPE, MRR@20 on valid).

Examples::

    # a small CPU run on the synthetic world (a few minutes), then its plots
    python -m softmax_bottleneck.prepare --synthetic --out prepared/synthetic
    python -m softmax_bottleneck.tune --data prepared/synthetic --head mos --n-experts 4 --hidden-dim 16 \\
        --n-trials 4 --max-epochs 2 --out tuned/mos
    python -m analysis.tuning --out tuned/mos
    # MovieLens-100K, each head at d=64, 20 trials, two worker processes on this machine
    python -m softmax_bottleneck.tune --data prepared/ml-100k --head softmax --hidden-dim 64 --n-trials 20 \\
        --jobs 2 --out tuned/ml100k-softmax
    # then train the best setting with other seeds
    python -m softmax_bottleneck.train --data prepared/ml-100k --config tuned/ml100k-softmax/best.json \\
        --seed 1 --out runs/softmax-s1.pt

Every trial is one full training with epoch selection on the valid split (``--metric``, the best
epoch's value is the trial's value; ``--patience`` epochs without improvement end it). Optuna's
median pruner stops a trial whose running best falls below the median of earlier trials at the
same epoch. The search space is a small JSON file per head (``softmax_bottleneck/spaces/``; pass
your own with ``--space``): each entry names a ModelConfig/TrainConfig field and gives
``choices``, or ``low``/``high`` (``log``: log scale), or ``by`` (one range per value of an
earlier categorical, e.g. an lr range per optimizer), optionally under ``when`` (only when an
earlier entry has that value, e.g. momentum only for Adagrad).

``--n-trials N`` is the study's total: trials that completed or were pruned (or are running)
count, failed ones do not. A second run of the same command continues the study up to N (more
trials: a larger N). ``--storage`` takes any URL Optuna accepts, so several machines can run the
same command against one study; ``--jobs J`` starts J workers here, each with ``--threads``
torch threads (default 1, as ``train``; J × threads ≤ cores, or the workers slow each other down). Claiming a trial holds a lock beside an SQLite file, so J local workers run exactly
N trials in total. Same ``--seed`` and one worker give the same sequence of trials.

Outputs in ``--out``: ``study.db`` (the default storage), ``trials.csv`` (one row per trial:
parameters, state, best epoch, value), ``importance.csv`` (Optuna's parameter importances),
``best.json`` (the best trial's model and training settings, accepted by ``train --config``; with
the budget spent). The library draws nothing: ``python -m analysis.tuning --out DIR`` draws
``history.png`` and ``importance.png`` from those files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import socket
import sys
import tempfile
import time
import warnings
from pathlib import Path

from .provenance import library_version
from .atomic import atomic_path, process_alive, write_text
from .cli import (ArgumentParser, InputError, add_device_argument, check_output_dir, read_json_file, resolve_device,
                  run_main, set_threads)
from .data import load_prepared
from .config import HEADS, SELECT_METRIC, ModelConfig, TrainConfig
from .errors import TrainingDiverged

SPACES = Path(__file__).with_name("spaces")
FIXED_BY_COMMAND = ("n_items", "head", "n_experts", "epochs", "seed", "select_metric", "patience")
STARTUP_TRIALS = 5  # random trials before TPE models the space (Optuna's default 10 is half of a 20-trial budget)
COUNTED = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")  # trial states that use up --n-trials


# --------------------------------------------------------------------------- the search space

def default_space(head: str) -> Path:
    return SPACES / f"{head}.json"


def _config_fields() -> dict[str, object]:
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    fields.update({f.name: f for f in dataclasses.fields(TrainConfig)})
    return fields


def _check_range(name: str, spec: dict) -> None:
    low, high = spec.get("low"), spec.get("high")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
        raise InputError(f"space entry {name}: needs numbers low < high, got low={low!r} high={high!r}")
    if spec.get("log") and low <= 0:
        raise InputError(f"space entry {name}: a log-scale range needs low > 0, got {low}")
    unknown = set(spec) - {"low", "high", "log", "step", "when"}
    if unknown:
        raise InputError(f"space entry {name}: unknown key(s) {', '.join(sorted(unknown))}")


def restrict_choices(space: dict, choices: dict) -> dict:
    """`space` with the named categoricals narrowed to a subset of their choices (kept in the space's order);
    an entry that only applies ("when") to choices no longer there is dropped. InputError if a name is not a
    categorical of the space or a value is not among its choices."""
    space = json.loads(json.dumps(space))  # a copy
    for name, wanted in choices.items():
        spec = space.get(name)
        if not isinstance(spec, dict) or "choices" not in spec:
            raise InputError(f"--choices {name}: not a categorical of the search space "
                             f"({', '.join(k for k, v in space.items() if 'choices' in v) or 'it has none'})")
        unknown = [v for v in wanted if json.dumps(v) not in set(map(json.dumps, spec["choices"]))]
        if unknown or not wanted:
            raise InputError(f"--choices {name}: {unknown or 'nothing'} not among its choices {spec['choices']}")
        spec["choices"] = [c for c in spec["choices"] if json.dumps(c) in set(map(json.dumps, wanted))]
    for name in list(space):
        for other, wanted in (space[name].get("when") or {}).items():
            left = [v for v in (wanted if isinstance(wanted, list) else [wanted])
                    if json.dumps(v) in set(map(json.dumps, space[other]["choices"]))]
            if not left:
                del space[name]
                break
            if isinstance(wanted, list):
                space[name]["when"][other] = left
    return space


def load_space(path: str | os.PathLike, *, fixed: tuple[str, ...] = ()) -> dict:
    """Read and check a search-space file; entries named in `fixed` are dropped (e.g. hidden_dim)."""
    path = Path(path)
    raw = read_json_file(path, "space")
    if not isinstance(raw, dict):
        raise InputError(f"{{space}} {path}: expected a JSON object of parameter entries", "space")
    space = {k: v for k, v in raw.items() if not k.startswith("_") and k not in fixed}
    if not space:
        raise InputError(f"{{space}} {path}: no parameters to search", "space")
    fields, seen = _config_fields(), {}
    for name, spec in space.items():
        where = f"{{space}} {path}: {name}"
        if name not in fields:
            raise InputError(f"{where}: not a model or training setting", "space")
        if name in FIXED_BY_COMMAND:
            raise InputError(f"{where}: set by the command itself, not searchable", "space")
        if not isinstance(spec, dict):
            raise InputError(f"{where}: expected an object such as {{\"low\": 0, \"high\": 1}}", "space")
        for other, wanted in (spec.get("when") or {}).items():
            if other not in seen or "choices" not in seen[other]:
                raise InputError(f"{where}: 'when' names {other}, which is not an earlier categorical entry", "space")
            wanted = wanted if isinstance(wanted, list) else [wanted]
            if not set(map(json.dumps, wanted)) <= set(map(json.dumps, seen[other]["choices"])):
                raise InputError(f"{where}: 'when' asks {other} for {wanted}, not among its choices", "space")
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise InputError(f"{where}: choices must be a non-empty list", "space")
        elif "by" in spec:
            by = spec["by"]
            if by not in seen or "choices" not in seen[by]:
                raise InputError(f"{where}: 'by' names {by}, which is not an earlier categorical entry", "space")
            for choice in seen[by]["choices"]:
                if str(choice) not in spec:
                    raise InputError(f"{where}: no range for {by}={choice}", "space")
                _check_range(f"{name} ({by}={choice})", spec[str(choice)])
        else:
            _check_range(name, spec)
        seen[name] = spec
    return space


def _suggest_range(trial, param: str, spec: dict, integer: bool):
    if integer and isinstance(spec["low"], int) and isinstance(spec["high"], int):
        return trial.suggest_int(param, spec["low"], spec["high"], log=bool(spec.get("log")),
                                 step=spec.get("step", 1))
    return trial.suggest_float(param, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")),
                               step=spec.get("step"))


def suggest(trial, space: dict) -> dict:
    """One point of the space, as {setting: value}; Optuna parameters are named after the settings
    (``lr_adam``, ``lr_adagrad`` for a ``by`` entry)."""
    fields, values = _config_fields(), {}
    for name, spec in space.items():
        when = spec.get("when") or {}
        if any(values.get(o) not in (w if isinstance(w, list) else [w]) for o, w in when.items()):
            continue
        integer = fields[name].type in ("int", int)
        if "choices" in spec:
            values[name] = trial.suggest_categorical(name, spec["choices"])
        elif "by" in spec:
            values[name] = _suggest_range(trial, f"{name}_{values[spec['by']]}", spec[str(values[spec["by"]])],
                                          integer)
        else:
            values[name] = _suggest_range(trial, name, spec, integer)
    return values


def configs_for(values: dict, model_config: ModelConfig, train_config: TrainConfig
                ) -> tuple[ModelConfig, TrainConfig]:
    model_names = {f.name for f in dataclasses.fields(ModelConfig)}
    try:
        return (dataclasses.replace(model_config, **{k: v for k, v in values.items() if k in model_names}),
                dataclasses.replace(train_config, **{k: v for k, v in values.items() if k not in model_names}))
    except ValueError as err:
        raise InputError(f"a point of the search space is not a valid setting: {err}") from None


# --------------------------------------------------------------------------- the study

@dataclasses.dataclass(frozen=True)
class TuneSettings:
    """What defines a study; a rerun against the same storage must agree on all of it."""

    data: str  # prepared path (informative) …
    fingerprint: str  # … and the content fingerprint that must match
    head: str
    n_experts: int
    hidden_dim: int | None
    metric: str
    max_epochs: int
    patience: int
    seed: int
    space: dict

    def identity(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "data"}

    def base_configs(self, n_items: int) -> tuple[ModelConfig, TrainConfig]:
        model = ModelConfig(n_items=n_items, head=self.head, n_experts=self.n_experts,
                            **({"hidden_dim": self.hidden_dim} if self.hidden_dim else {}))
        config = TrainConfig(epochs=self.max_epochs, seed=self.seed, select_metric=self.metric,
                             patience=self.patience)
        return model, config


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Some regimes for parameter")  # importance on few trials
    return optuna


def open_study(storage: str, name: str, settings: TuneSettings):
    """Create the study, or load it and check that it is the same search; InputError otherwise."""
    optuna = _optuna()
    try:
        with claim_lock(storage, name):  # workers starting together on a new server would race to make its tables
            rdb = optuna.storages.RDBStorage(storage)
            sampler = trial_sampler(settings.seed, 0)  # replaced before every trial (see _claim)
            pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
            study = optuna.create_study(storage=rdb, study_name=name, direction="maximize", sampler=sampler,
                                        pruner=pruner, load_if_exists=True)
            recorded = study.user_attrs.get("settings")
            if recorded is None:
                study.set_user_attr("settings", settings.identity())
                study.set_user_attr("data", settings.data)
    except Exception as err:  # SQLAlchemy raises many kinds: a bad URL, a missing driver, a refused connection
        if isinstance(err, InputError):
            raise
        first = (str(err).splitlines() or [type(err).__name__])[0][:160]
        raise InputError(f"{{storage}} {storage}: cannot open it ({first})", "storage") from None
    if recorded is not None and recorded != settings.identity():
        differ = [k for k in settings.identity() if recorded.get(k) != settings.identity()[k]]
        raise InputError(f"study {name!r} in {storage} was made with other settings ({', '.join(differ)} differ); "
                         "use another --study-name or the same settings")
    return study


@contextlib.contextmanager
def claim_lock(storage: str, study_name: str = ""):
    """Workers claim trials one at a time, so that the study gets exactly its --n-trials: a lock file beside
    an SQLite storage; on PostgreSQL a session advisory lock of the server (workers on other machines
    share it); other servers claim unlocked (a rare race can add a trial)."""
    if storage.startswith("postgresql"):
        with _postgres_lock(storage, study_name):
            yield
        return
    if not storage.startswith("sqlite:///"):
        yield
        return
    lock = Path(storage[len("sqlite:///"):] + ".lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _postgres_lock(storage: str, study_name: str):
    """``pg_advisory_lock`` on a key made from the study's name, held on its own connection."""
    import sqlalchemy

    key = int.from_bytes(hashlib.sha256(f"softmax-bottleneck/{study_name}".encode()).digest()[:8], "big", signed=True)
    engine = sqlalchemy.create_engine(storage, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        engine.dispose()


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def fail_orphans(study) -> int:
    """Mark FAIL the RUNNING trials of dead worker processes of this host (a killed earlier run)."""
    optuna = _optuna()
    host, failed = socket.gethostname(), 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = trial.user_attrs.get("worker", "")
        name, _, pid = owner.rpartition(":")
        if name == host and pid.isdigit() and not process_alive(int(pid)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            failed += 1
    return failed


def fail_running(study) -> int:
    """Mark FAIL every RUNNING trial: for a storage copied from another machine or session, where none runs."""
    optuna = _optuna()
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(running)


def trial_sampler(seed: int, number: int):
    """TPE seeded by (study seed, trial number): workers that start together do not draw the same point,
    and a continued study draws what an uninterrupted one would have."""
    import numpy as np

    optuna = _optuna()
    state = int(np.random.SeedSequence([seed, number]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=state, n_startup_trials=STARTUP_TRIALS)


def _claim(study, storage: str, n_trials: int, seed: int):
    with claim_lock(storage, study.study_name):
        trials = study.get_trials(deepcopy=False)
        if sum(t.state.name in COUNTED for t in trials) >= n_trials:
            return None
        study.sampler = trial_sampler(seed, len(trials))  # the number the next trial gets
        trial = study.ask()
        trial.set_user_attr("worker", _worker_id())
        return trial


def run_trial(trial, dataset, settings: TuneSettings, device, scratch: Path) -> tuple[float | None, str]:
    """Train one point of the space; returns (value, state name) for ``study.tell``."""
    from .training import train  # torch: imported by the worker, not by the command's flag checks

    optuna = _optuna()
    values = suggest(trial, settings.space)
    model_config, train_config = configs_for(values, *settings.base_configs(dataset.n_items))
    trial.set_user_attr("model_config", dataclasses.asdict(model_config))
    trial.set_user_attr("train_config", dataclasses.asdict(train_config))
    best = {"value": None, "epoch": 0, "epochs": 0}

    def on_epoch(stats: dict) -> None:
        value = stats[f"valid_{settings.metric}"]
        if best["value"] is None or value > best["value"]:
            best.update(value=value, epoch=stats["epoch"])
        best["epochs"] = stats["epoch"]
        trial.report(best["value"], stats["epoch"])  # the running best: the trial's value if it stopped now
        last = stats["epoch"] >= train_config.epochs or (
            train_config.patience and stats["epoch"] - best["epoch"] >= train_config.patience)
        if not last and trial.should_prune():  # a trial that ends here anyway is complete, not pruned
            raise optuna.TrialPruned()

    began, state = time.perf_counter(), "COMPLETE"
    path = scratch / f"trial-{trial.number}.pt"
    try:
        train(dataset, model_config, train_config, path, device=device, progress=False, log=lambda m: None,
              on_epoch=on_epoch)
    except optuna.TrialPruned:
        state = "PRUNED"
    except TrainingDiverged:
        state = "PRUNED"
        trial.set_user_attr("diverged", True)
    finally:
        path.unlink(missing_ok=True)
    trial.set_user_attr("best_epoch", best["epoch"])
    trial.set_user_attr("epochs_trained", best["epochs"])
    trial.set_user_attr("seconds", round(time.perf_counter() - began, 2))
    return best["value"], state


def work(storage: str, study_name: str, settings: TuneSettings, n_trials: int, timeout: float | None,
         device: str, threads: int, progress: bool = True) -> int:
    """One worker: claim and run trials until the study has `n_trials` or the time is up; returns trials run."""
    optuna = _optuna()
    set_threads(threads)
    dataset = load_prepared(settings.data)
    study = open_study(storage, study_name, settings)
    began, done = time.perf_counter(), 0
    with tempfile.TemporaryDirectory(prefix="tune-") as scratch:
        while timeout is None or time.perf_counter() - began < timeout:
            trial = _claim(study, storage, n_trials, settings.seed)
            if trial is None:
                break
            try:
                value, state = run_trial(trial, dataset, settings, device, Path(scratch))
            except BaseException:  # an interrupt or a crash: the trial is FAIL, so a rerun does it again
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            if state == "COMPLETE":
                study.tell(trial, value)
            else:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            done += 1
            if progress:
                _progress_line(study, trial.number, state, value)
    return done


def _progress_line(study, number: int, state: str, value: float | None) -> None:
    trial = study.get_trials(deepcopy=False)[number] if number < len(study.get_trials(deepcopy=False)) else None
    attrs = trial.user_attrs if trial is not None else {}
    try:
        best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
    except ValueError:
        best = "no complete trial yet"
    shown = "–" if value is None else f"{value:.4f}"
    print(f"trial {number} {state.lower()}: {shown} (epoch {attrs.get('best_epoch')} of "
          f"{attrs.get('epochs_trained')}, {attrs.get('seconds', 0):.0f} s); {best}", file=sys.stderr, flush=True)


def _spawn_worker(arguments: tuple) -> int:
    return work(*arguments)


def tune(settings: TuneSettings, *, n_trials: int, storage: str, study_name: str, timeout: float | None = None,
         jobs: int = 1, device: str = "cpu", threads: int | None = None, progress: bool = True):
    """Run the search (J local workers); returns the study."""
    study = open_study(storage, study_name, settings)  # bad storage or another study's settings fail here
    fail_orphans(study)
    threads = threads or 1  # as train's default: one thread per GRU4Rec run (benchmarks/threads.py)
    cores = os.cpu_count() or 1
    if jobs * threads > cores:
        print(f"warning: {jobs} workers × {threads} threads > {cores} cores: they will slow each other down",
              file=sys.stderr)
    arguments = (storage, study_name, settings, n_trials, timeout, str(device), threads, progress)
    if jobs == 1:
        work(*arguments)
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            pool.map(_spawn_worker, [arguments] * jobs)
    return open_study(storage, study_name, settings)


# --------------------------------------------------------------------------- outputs

def trials_frame(study):
    """One row per trial: number, state, value, best epoch, epochs trained, seconds, parameters."""
    import pandas as pd

    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        rows.append({"number": trial.number, "state": trial.state.name, "value": trial.value,
                     "best_epoch": attrs.get("best_epoch"), "epochs_trained": attrs.get("epochs_trained"),
                     "seconds": attrs.get("seconds"), "diverged": bool(attrs.get("diverged", False)),
                     **{f"param_{k}": v for k, v in sorted(trial.params.items())}})
    return pd.DataFrame(rows)


def best_record(study, settings: TuneSettings, storage: str, study_name: str) -> dict:
    """best.json: the best trial's settings (``train --config`` takes them) and the budget spent."""
    frame = trials_frame(study)
    states = frame["state"].value_counts().to_dict() if len(frame) else {}
    try:
        best = study.best_trial
    except ValueError:
        raise InputError(f"study {study_name!r} has no complete trial yet; run more trials") from None
    return {"library_version": library_version(), "study_name": study_name, "storage": storage,
            "metric": settings.metric, "value": best.value, "trial": best.number,
            "best_epoch": best.user_attrs.get("best_epoch"), "params": best.params,
            "model_config": best.user_attrs["model_config"], "train_config": best.user_attrs["train_config"],
            "budget": {"trials": int(sum(states.get(s, 0) for s in ("COMPLETE", "PRUNED"))),
                       "complete": int(states.get("COMPLETE", 0)), "pruned": int(states.get("PRUNED", 0)),
                       "failed": int(states.get("FAIL", 0)), "max_epochs": settings.max_epochs,
                       "patience": settings.patience, "trial_seconds": float(frame["seconds"].fillna(0).sum()),
                       "epochs_trained": int(frame["epochs_trained"].fillna(0).sum())},
            "settings": settings.identity() | {"data": settings.data}}


def importance_frame(study):
    """Optuna's parameter importances (its default evaluator) of the complete trials: parameter, importance."""
    import pandas as pd

    optuna = _optuna()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2 or len({json.dumps(t.params, sort_keys=True) for t in complete}) < 2:
        return pd.DataFrame(columns=["parameter", "importance"])
    try:
        importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError):  # e.g. parameters that never varied among the complete trials
        return pd.DataFrame(columns=["parameter", "importance"])
    return pd.DataFrame({"parameter": list(importances), "importance": list(importances.values())})


def write_outputs(out: Path, study, settings: TuneSettings, storage: str, study_name: str) -> dict:
    """trials.csv, importance.csv and best.json (``python -m analysis.tuning`` draws them)."""
    record = best_record(study, settings, storage, study_name)
    for name, frame in (("trials.csv", trials_frame(study)), ("importance.csv", importance_frame(study))):
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False)
    write_text(out / "best.json", json.dumps(record, indent=2) + "\n")
    return record


# --------------------------------------------------------------------------- command line

def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m softmax_bottleneck.tune", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder (valid split picks)")
    parser.add_argument("--head", required=True, help=f"one of {', '.join(HEADS)}")
    parser.add_argument("--n-experts", type=int, metavar="K", help="MoS experts (default 4)")
    parser.add_argument("--hidden-dim", type=int, metavar="D", help="fix the GRU size (else searched)")
    parser.add_argument("--n-trials", type=int, required=True, metavar="N", help="the study's total trials")
    parser.add_argument("--timeout", type=float, metavar="S", help="claim no new trial after S seconds")
    parser.add_argument("--max-epochs", type=int, default=10, metavar="N", help="epochs per trial (default: 10)")
    parser.add_argument("--patience", type=int, default=3, metavar="N",
                        help="end a trial after N epochs without improvement (default: 3; 0: never)")
    parser.add_argument("--metric", default="mrr@20", help="valid metric to maximise (default: mrr@20)")
    parser.add_argument("--space", type=Path, help="search-space JSON (default: softmax_bottleneck/spaces/HEAD.json)")
    parser.add_argument("--choices", action="append", default=[], metavar="NAME=V1,V2",
                        help="narrow a categorical of the space to some of its choices, e.g. batch_size=128,256 "
                             "(repeatable)")
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite:///OUT/study.db)")
    parser.add_argument("--study-name", help="study name in the storage (default: from head, K and d)")
    parser.add_argument("--jobs", type=int, default=1, metavar="J", help="worker processes here (default: 1)")
    parser.add_argument("--threads", type=int, metavar="N", help="torch threads per worker (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler and of every trial's training")
    parser.add_argument("--out", type=Path, required=True, help="folder for study.db, trials.csv, best.json, PNGs")
    parser.add_argument("--json", action="store_true", help="print best.json's content on stdout")
    add_device_argument(parser)
    return parser


def settings_from_args(args) -> TuneSettings:
    if args.head not in HEADS:
        raise InputError(f"--head {args.head}: unknown head; choose from {', '.join(HEADS)}")
    for flag, value, low in (("--n-trials", args.n_trials, 1), ("--jobs", args.jobs, 1),
                             ("--max-epochs", args.max_epochs, 1), ("--patience", args.patience, 0)):
        if value < low:
            raise InputError(f"{flag} must be >= {low}, got {value}")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise InputError(f"--timeout must be > 0, got {args.timeout}")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    if not SELECT_METRIC.match(args.metric):
        raise InputError(f"--metric {args.metric}: expected recall@K, mrr@K or ndcg@K")
    try:
        model = ModelConfig(head=args.head, n_experts=args.n_experts,
                            **({"hidden_dim": args.hidden_dim} if args.hidden_dim is not None else {}))
    except ValueError as err:
        raise InputError(str(err)) from None
    space = restrict_choices(load_space(args.space or default_space(args.head),
                                        fixed=("hidden_dim",) if args.hidden_dim else ()), parse_choices(args.choices))
    dataset = load_prepared(args.data)
    if dataset.splits["valid"].n_transitions == 0:
        raise InputError(f"{args.data}: the valid split has no events to select on")
    return TuneSettings(data=str(Path(dataset.path).resolve()), fingerprint=dataset.fingerprint, head=args.head,
                        n_experts=model.n_experts, hidden_dim=args.hidden_dim, metric=args.metric,
                        max_epochs=args.max_epochs, patience=args.patience, seed=args.seed, space=space)


def parse_choices(flags: list[str]) -> dict:
    """--choices NAME=V1,V2 … as {NAME: [V1, V2]}, each value read as JSON where it can be (128 → 128, adam → "adam")."""
    def value(text: str):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    choices = {}
    for flag in flags:
        name, sep, values = flag.partition("=")
        if not sep or not name or not values:
            raise InputError(f"--choices {flag}: expected NAME=V1,V2 (e.g. batch_size=128,256)")
        choices[name] = [value(v) for v in values.split(",")]
    return choices


def default_study_name(settings: TuneSettings) -> str:
    return (settings.head + (f"-K{settings.n_experts}" if settings.head == "mos" else "")
            + (f"-d{settings.hidden_dim}" if settings.hidden_dim else ""))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        check_output_dir(args.out, "--out")
        settings = settings_from_args(args)
        device = resolve_device(args.device)
        if args.storage is None:  # the study file lives in --out; a server's study needs no folder until the end
            args.out.mkdir(parents=True, exist_ok=True)
        storage = args.storage or f"sqlite:///{(args.out / 'study.db').resolve()}"
        name = args.study_name or default_study_name(settings)
        study = tune(settings, n_trials=args.n_trials, storage=storage, study_name=name, timeout=args.timeout,
                     jobs=args.jobs, device=str(device), threads=args.threads, progress=not args.json)
        record = write_outputs(args.out, study, settings, storage, name)
        if args.json:
            print(json.dumps(record))
        else:
            budget = record["budget"]
            print(f"best valid {settings.metric} {record['value']:.4f} (trial {record['trial']}, epoch "
                  f"{record['best_epoch']}) after {budget['trials']} trials ({budget['complete']} complete, "
                  f"{budget['pruned']} pruned, {budget['trial_seconds']:.0f} s of training); "
                  f"wrote {args.out}/best.json, trials.csv, importance.csv (plots: python -m analysis.tuning "
                  f"--out {args.out})")

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
