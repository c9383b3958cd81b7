"""The study behind the figures: which models to train, and the analyses run on them.

A profile names a grid of GRU4Rec models (softmax and MoS over hidden sizes d, MoS over expert
counts K, seeds) and the analysis settings. :func:`run_study` trains what is missing, runs the rank
report, the head comparison and the reachability audit on the held-out sessions, and leaves
everything the figures read in one results folder::

    results/
      data/                 the synthetic world, prepared (only without --data)
      tuned/LABEL/          best.json, trials.csv, study.db per head × d × K (softmax_bottleneck.tune)
      runs/*.pt             one checkpoint per model, named by a hash of its data and settings

**Every head is trained with settings chosen for it.** Each head × d × K of the profile is tuned
on the valid split (``softmax_bottleneck.tune``: the profile's trial budget, epochs and patience,
seed 0), and each of its seeds is then trained with the best trial's settings and kept at its best
valid epoch. Tuned settings committed in ``figures/tuned/PROFILE/`` are used when they were made
for the same data fingerprint, space and budget (the quick profile ships them, so ``python -m
figures`` does not tune); otherwise the study tunes and caches the result in ``results/tuned/``.
``study.json`` records, for every model, the settings file, its tuning command and its budget.
      rank/                 rank.json, spectrum.csv, spectrum.png     (analysis.rank)
      compare/              metrics.csv, breakdown.csv, compare.json (analysis.compare)
      gains/                gains.csv, breakdown.csv, gains.json: each head against the softmax of its own d
      reach/                reach.csv, reach.json, reach.png         (analysis.reach)
      study.json            the profile, the models and the analyses' cache keys

Caching: a checkpoint is reused when its file holds all the profile's epochs for the same data
fingerprint and settings (a run cut short is resumed, not restarted); an analysis is redone only
when its key changes: the checkpoints it reads, its own settings, and the code (the library
version and a hash of the library and analysis sources, see softmax_bottleneck.provenance). A
second run with nothing changed therefore only redraws.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from softmax_bottleneck import tune as tuner
from softmax_bottleneck.atomic import write_text
from softmax_bottleneck.checkpoint import load_checkpoint
from softmax_bottleneck.cli import set_threads
from softmax_bottleneck.config import ModelConfig, TrainConfig, variant_settings
from softmax_bottleneck.data import PreparedDataset, load_prepared, save_prepared
from softmax_bottleneck.errors import InputError
from softmax_bottleneck.model import model_label
from softmax_bottleneck.provenance import library_version, source_hash
from softmax_bottleneck.synthetic import SyntheticConfig, prepare_synthetic
from softmax_bottleneck.training import train, tuning_record

from .profiles import PROFILES, Profile

TUNED = Path(__file__).with_name("tuned")  # committed tuning results, one folder per profile
REPO = TUNED.parent.parent
# the search spaces of catalogues no larger than the negative sample: the full softmax in training
SMALL_CATALOGUE_SPACES = {"mol": TUNED / "space-full-mol.json", "softmax-dd": TUNED / "space-full-softmax-dd.json"}
SMALL_CATALOGUE_SPACE = TUNED / "space-full-softmax.json"  # every other head's


@dataclasses.dataclass(frozen=True)
class Run:
    """One model of the study: a head variant (config.VARIANTS) at a size, with a seed."""

    variant: str
    hidden_dim: int
    n_experts: int
    seed: int

    @property
    def head(self) -> str:
        return variant_settings(self.variant)["head"]

    @property
    def label(self) -> str:
        return model_label({**variant_settings(self.variant), "hidden_dim": self.hidden_dim,
                            "n_experts": self.n_experts})

    @property
    def slug(self) -> str:
        """File name of the run's variant × d × K (its tuning folder)."""
        return self.variant + (f"-K{self.n_experts}" if self.head == "mos" else "") + f"-d{self.hidden_dim}"

    def tuned_at(self, profile: Profile) -> "Run":
        """The run whose tuning this run's settings come from: itself, or its variant × K at the profile's
        tune_dim (the settings are then carried to this size)."""
        return self if profile.tune_dim is None else dataclasses.replace(self, hidden_dim=profile.tune_dim)

    def configs(self, tuned: dict, dataset: PreparedDataset) -> tuple[ModelConfig, TrainConfig]:
        """The tuned settings of this variant × K (a best.json record) at this run's size, with its seed."""
        model = ModelConfig(**{**tuned["model_config"], "n_items": dataset.n_items, "hidden_dim": self.hidden_dim})
        return model, TrainConfig(**{**tuned["train_config"], "seed": self.seed})


def study_runs(profile: Profile) -> list[Run]:
    """The size sweep of every head (softmax first: the comparison's baseline is a softmax), then the
    expert sweep."""
    runs = [Run(variant, d, profile.experts if variant == "mos" else 1, s)
            for variant in profile.heads for d in profile.dims for s in profile.seeds]
    runs += [Run("mos", profile.expert_dim, k, profile.seeds[0]) for k in profile.expert_counts
             if Run("mos", profile.expert_dim, k, profile.seeds[0]) not in runs]
    return runs


def package_versions() -> dict:
    """Python's and the libraries' versions that the numbers and pictures depend on (study.json)."""
    import platform
    from importlib.metadata import version

    return {"python": platform.python_version(),
            **{name: version(name) for name in ("torch", "numpy", "scipy", "pandas", "matplotlib", "optuna")}}


def machine() -> dict:
    """The CPU the numbers were computed on: torch picks its kernels by instruction set, and a model trained
    for epochs on another CPU can differ beyond the last digits (figures/README.md)."""
    import platform

    import torch

    name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), None) if Path("/proc/cpuinfo").is_file() else None
    return {"cpu": name or platform.processor() or platform.machine(), "architecture": platform.machine(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def ensure_data(results: Path, data: Path | None, profile: Profile, log: Callable[[str], None]) -> PreparedDataset:
    if data is not None:
        return load_prepared(data)
    if profile.world is None:
        raise InputError("this profile is for real data: pass --data, a prepared dataset (e.g. prepared/globo, "
                         "whose prepare command is in the README)")
    folder = results / "data"
    if folder.is_dir():
        dataset = load_prepared(folder)
        recorded = dataset.meta["source"].get("config") or {}
        if SyntheticConfig(**{**dataclasses.asdict(SyntheticConfig()), **recorded}) == profile.world:
            return dataset
        raise InputError(f"{folder} holds another synthetic world than the profile's; use another --results")
    log(f"preparing the synthetic world ({profile.world.n_items} items, {profile.world.n_sessions:,} sessions)")
    return load_prepared(save_prepared(prepare_synthetic(profile.world), folder))


def space_path(run: Run, dataset: PreparedDataset) -> Path:
    """The run's search space: its variant's (softmax_bottleneck/spaces/), or on a catalogue no larger
    than the negative sample the full-softmax one of figures/tuned/."""
    if dataset.n_items > TrainConfig().n_sample:
        return tuner.default_space(run.variant)
    return SMALL_CATALOGUE_SPACES.get(run.variant, SMALL_CATALOGUE_SPACE)


def tune_settings(run: Run, profile: Profile, dataset: PreparedDataset) -> tuner.TuneSettings:
    return tuner.TuneSettings(
        data=str(Path(dataset.path).resolve()), fingerprint=dataset.fingerprint, head=run.head,
        n_experts=run.n_experts, hidden_dim=run.hidden_dim, metric="mrr@20", max_epochs=profile.epochs,
        patience=profile.patience, seed=0,
        space=tuner.restrict_choices(tuner.load_space(space_path(run, dataset), fixed=("hidden_dim",)),
                                     {name: list(values) for name, values in profile.space_choices}))


def tune_command(settings: tuner.TuneSettings, space: Path, n_trials: int, out: str, choices=()) -> str:
    """The command line that makes (or continues) this tuning study (`space`: the file of settings.space, narrowed
    by `choices`, the profile's space_choices)."""
    named = space.resolve() != tuner.default_space(settings.head).resolve()
    return (f"python -m softmax_bottleneck.tune --data {settings.data} --head {settings.head}"
            + (f" --n-experts {settings.n_experts}" if settings.head == "mos" else "")
            + f" --hidden-dim {settings.hidden_dim} --n-trials {n_trials} --max-epochs {settings.max_epochs}"
            + f" --patience {settings.patience} --metric {settings.metric} --seed {settings.seed}"
            + (f" --space {space.resolve().relative_to(REPO)}" if named else "")
            + "".join(f" --choices {name}={','.join(map(str, values))}" for name, values in choices)
            + f" --out {out}")


def _matches(record: dict, settings: tuner.TuneSettings, n_trials: int) -> bool:
    recorded = {k: v for k, v in record.get("settings", {}).items() if k != "data"}
    return recorded == settings.identity() and record.get("budget", {}).get("trials", 0) >= n_trials


def cached_tuning(run: Run, profile: Profile, profile_name: str, dataset: PreparedDataset, results: Path,
                  committed: bool = True) -> tuple[dict, Path] | None:
    """The best.json record of the run's head × d × K if it is committed (unless not `committed`) or cached."""
    settings = tune_settings(run, profile, dataset)
    places = [TUNED / profile_name / f"{run.slug}.json"] if committed else []
    for path in places + [results / "tuned" / run.slug / "best.json"]:
        if path.is_file():
            record = json.loads(path.read_text())
            if _matches(record, settings, profile.tune_trials):
                return record, path
    return None


def ensure_tuned(run: Run, profile: Profile, profile_name: str, dataset: PreparedDataset, results: Path, device,
                 log: Callable[[str], None], committed: bool = True) -> tuple[dict, Path]:
    """The best.json record of the run's head × d × K: committed (unless not `committed`), cached, or tuned now."""
    found = cached_tuning(run, profile, profile_name, dataset, results, committed)
    if found is not None:
        return found
    settings = tune_settings(run, profile, dataset)
    folder = results / "tuned" / run.slug
    log(f"tuning {run.label}: {profile.tune_trials} trials of up to {profile.epochs} epochs")
    began = time.perf_counter()
    storage = f"sqlite:///{(folder / 'study.db').resolve()}"
    folder.mkdir(parents=True, exist_ok=True)
    carried = TUNED / profile_name / f"{run.slug}.partial.db"  # an unfinished tuning, committed by an earlier session
    if committed and carried.is_file() and not (folder / "study.db").exists():
        import shutil

        shutil.copyfile(carried, folder / "study.db")
        # a copied file runs nothing: a trial it holds as RUNNING was cut off, and is done again
        tuner.fail_running(tuner.open_study(storage, run.slug, settings))
        log(f"  continuing the {carried.relative_to(REPO) if carried.is_relative_to(REPO) else carried} trials")
    study = tuner.tune(settings, n_trials=profile.tune_trials, storage=storage, study_name=run.slug, jobs=1,
                       device=str(device), threads=1, progress=False)
    record = tuner.write_outputs(folder, study, settings, storage, run.slug)
    record["command"] = tune_command(settings, space_path(run, dataset), profile.tune_trials, str(folder),
                                     profile.space_choices)
    write_text(folder / "best.json", json.dumps(record, indent=2) + "\n")
    from analysis import tuning as tuning_plots

    tuning_plots.write_plots(folder)
    log(f"  best valid mrr@20 {record['value']:.4f} (trial {record['trial']}) in {time.perf_counter() - began:.0f} s")
    return record, folder / "best.json"


def training_key(dataset: PreparedDataset, model_config: ModelConfig, train_config: TrainConfig) -> str:
    """Cache key of one trained model: its data, its settings, and the code that trains it (the library's
    source hash), so that a change to the training code retrains instead of reusing an older model."""
    return _digest([dataset.fingerprint, dataclasses.asdict(model_config), dataclasses.asdict(train_config),
                    source_hash("softmax_bottleneck")])


def checkpoint_path(run: Run, tuned: tuple[dict, Path], dataset: PreparedDataset, runs_dir: Path) -> Path:
    """Where the run's checkpoint lives: named by its label, seed and training key."""
    model_config, train_config = run.configs(tuned[0], dataset)
    key = training_key(dataset, model_config, train_config)
    return runs_dir / f"{run.label.replace(' ', '_').replace('=', '')}-s{run.seed}-{key[:12]}.pt"


def _finished(path: Path) -> bool:
    return path.exists() and bool((load_checkpoint(path).get("selection") or {}).get("finished"))


def ensure_checkpoint(run: Run, tuned: tuple[dict, Path], dataset: PreparedDataset, runs_dir: Path, device,
                      log: Callable[[str], None]) -> Path:
    """The run's checkpoint, trained (or resumed) with its tuned settings unless a finished one is there."""
    record, tuned_path = tuned
    model_config, train_config = run.configs(record, dataset)
    path = checkpoint_path(run, tuned, dataset, runs_dir)
    resume = False
    if path.exists():
        checkpoint = load_checkpoint(path)
        if (checkpoint.get("selection") or {}).get("finished"):
            return path
        resume = True
    log(f"training {run.label} seed {run.seed} (up to {train_config.epochs} epochs, tuned settings)"
        + (f", resuming after epoch {checkpoint['epoch']}" if resume else ""))
    runs_dir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    done = train(dataset, model_config, train_config, path, device=device, resume=resume, progress=False,
                 log=lambda message: None, tuning=tuning_record(record, tuned_path))
    log(f"  epoch {done['best_epoch']} of {done['epoch']} kept, valid mrr@20 "
        f"{done['selection']['best_value']:.4f}, {time.perf_counter() - began:.0f} s")
    return path


MODEL_COLUMNS = ("variant", "hidden_dim", "n_experts", "seed", "best_epoch", "epochs_trained", "valid_mrr@20",
                 "valid_recall@20")


def model_row(run: Run, checkpoint: dict) -> dict:
    """One trained model as models.csv lists it: what it is, and the valid numbers of its kept epoch."""
    best = checkpoint["metrics"][checkpoint["best_epoch"] - 1]
    return {"variant": run.variant, "hidden_dim": run.hidden_dim, "n_experts": run.n_experts, "seed": run.seed,
            "best_epoch": checkpoint["best_epoch"], "epochs_trained": checkpoint["epoch"],
            "valid_mrr@20": best["valid_mrr@20"], "valid_recall@20": best["valid_recall@20"]}


def write_models_table(path: Path, runs: list[Run], paths: list[Path]) -> None:
    """models.csv: every model of the study, in the order trained (committed for the quick profile, so that a
    fresh run can be checked against it: tests/test_figures.py)."""
    lines = [",".join(MODEL_COLUMNS)]
    for run, checkpoint_path in zip(runs, paths):
        row = model_row(run, load_checkpoint(checkpoint_path))
        lines.append(",".join(f"{row[c]:.17g}" if isinstance(row[c], float) else str(row[c]) for c in MODEL_COLUMNS))
    text = "\n".join(lines) + "\n"
    if not path.is_file() or path.read_text() != text:  # a study with nothing new leaves its files untouched
        write_text(path, text)


def _tuned_summary(record: dict, path: Path) -> dict:
    """What study.json says of a run's settings: where they come from, how they were found, at what budget."""
    return {"file": str(path), "command": record.get("command"), "budget": record["budget"],
            "valid_mrr@20": record["value"], "trial": record["trial"], "params": record["params"]}


def analysis_key(name: str, checkpoints: list[Path], *settings) -> str:
    """Cache key of one analysis: what it reads, its settings, and the code that runs it (library and
    analysis packages), so that a code change redoes it."""
    return _digest([name, [p.name for p in checkpoints], *settings, library_version(),
                    source_hash("softmax_bottleneck", "analysis")])


def _cached(folder: Path, key: str, files: tuple[str, ...]) -> bool:
    marker = folder / "key.txt"
    return marker.is_file() and marker.read_text().strip() == key and all((folder / f).is_file() for f in files)


def size_sweep_by_size(profile: Profile, runs: list[Run], paths: list[Path]) -> dict[int, list[Path]]:
    """{d: checkpoints} of the size sweep at each d that has a softmax and another head: the softmax's seeds
    first (the baseline of analysis.comparison.gains_by_size), then the other heads' (MoS with the sweep's K)."""
    by_size = {}
    for d in profile.dims:
        at_d = [(r, p) for r, p in zip(runs, paths)
                if r.hidden_dim == d and (r.head != "mos" or r.n_experts == profile.experts)]
        ordered = [p for r, p in at_d if r.variant == "softmax"] + [p for r, p in at_d if r.variant != "softmax"]
        if any(r.variant == "softmax" for r, _ in at_d) and any(r.variant != "softmax" for r, _ in at_d):
            by_size[d] = ordered
    return by_size


@contextmanager
def worker_pool(workers: int):
    """A pool of `workers` spawned processes for the study's jobs (tunings, trainings, analyses). On an error
    or Ctrl-C the jobs not yet handed to a worker are cancelled and those running finish, so that each
    caches its work before the study stops."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            yield pool
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _first_seed(profile: Profile, runs: list[Run], paths: list[Path]) -> list[Path]:
    return [p for r, p in zip(runs, paths) if r.seed == profile.seeds[0]]


def _rank(profile: Profile, results: Path, runs: list[Run], paths: list[Path], data: Path, n_contexts: int,
          n_items: int, device) -> None:
    from analysis import rank_report as rank_tool

    ranks = [r for r in profile.expressive_ranks if r <= n_items]
    result, spectra = rank_tool.analyse(_first_seed(profile, runs, paths), data=data, split=profile.split,
                                        max_contexts=n_contexts, seed=0, engine="auto", tol=None, rtol=None,
                                        block_size=2048, device=device,
                                        expressive={"ranks": ranks, "steps": profile.expressive_steps, "seed": 0},
                                        expressive_dims=profile.expressive_dims)
    rank_tool.write_outputs(results / "rank", result, spectra)


def _compared(profile: Profile, runs: list[Run], paths: list[Path]) -> list[Path]:
    """Every checkpoint, the baseline of every difference and of the gain heatmap first: the softmax of the
    expert sweep's size."""
    ordered = sorted(zip(runs, paths), key=lambda rp: (rp[0].variant, rp[0].hidden_dim) != ("softmax", profile.expert_dim))
    return [p for _, p in ordered]


def _compare(profile: Profile, results: Path, runs: list[Run], paths: list[Path], data: Path, n_contexts: int,
             n_items: int, device) -> None:
    from analysis import comparison as compare_tool

    result = compare_tool.compare(_compared(profile, runs, paths), data=data, split=profile.split, ks=(1, 5, 10, 20),
                                  n_bootstrap=profile.n_bootstrap, device=device)
    compare_tool.write_outputs(results / "compare", result)


def _gains(profile: Profile, results: Path, runs: list[Run], paths: list[Path], data: Path, n_contexts: int,
           n_items: int, device) -> None:
    from analysis import comparison as compare_tool

    compare_tool.write_gains(results / "gains", compare_tool.gains_by_size(
        size_sweep_by_size(profile, runs, paths), data=data, split=profile.split, ks=(20,),
        n_bootstrap=profile.n_bootstrap, device=device))


def _reach(profile: Profile, results: Path, runs: list[Run], paths: list[Path], data: Path, n_contexts: int,
           n_items: int, device) -> None:
    from analysis import reachability as reach_tool

    table, summary = reach_tool.audit(_first_seed(profile, runs, paths), data=data, split=profile.split,
                                      n_random=profile.n_random, device=device)
    reach_tool.write_outputs(results / "reach", table, summary)


def _capacity(profile: Profile, results: Path, runs: list[Run], paths: list[Path], data: Path, n_contexts: int,
              n_items: int, device) -> None:
    from analysis import capacity_fit

    groups: dict[tuple, list[Path]] = {}
    for run, path in zip(runs, paths):
        groups.setdefault((run.variant, run.hidden_dim, run.n_experts), []).append(path)
    summaries = []
    for (variant, hidden_dim, n_experts), group in groups.items():
        config = capacity_fit.family_config(load_checkpoint(group[0])["model_config"])  # the models' own family
        summaries.append(capacity_fit.capacity(config, data=data, checkpoints=group, split=profile.split,
                                               max_contexts=n_contexts, seed=0, restarts=profile.capacity_restarts,
                                               steps=profile.capacity_steps, ks=(20,), device=device))
    capacity_fit.write_sweep(results / "capacity", summaries)


ANALYSES = {"rank": _rank, "compare": _compare, "gains": _gains, "reach": _reach, "capacity": _capacity}


def _analysis_job(job: tuple) -> float:
    """One analysis (in this process or a worker: picklable arguments): its files, then its key, last, so
    that a run cut short is redone; returns its seconds."""
    name, key, threads, arguments = job
    set_threads(threads)
    began = time.perf_counter()
    ANALYSES[name](*arguments)
    write_text(arguments[1] / name / "key.txt", key + "\n")
    return time.perf_counter() - began


def run_analyses(profile: Profile, results: Path, runs: list[Run], paths: list[Path], dataset: PreparedDataset,
                 device, log: Callable[[str], None], jobs: int = 1,
                 expected_seconds: dict | None = None) -> tuple[dict, dict, int]:
    """The rank report and the audit of the first seed's models, the comparison of all, each head against
    the softmax of its size, and on the synthetic world the capacity fit of every head × d × K with its
    trained models: ({name: key}, {name: seconds} of those run now, threads each ran with).

    Each analysis is redone only when its key changed. jobs: the cores to use. With one analysis to do it
    gets them all as threads; with several, min(jobs, their number) worker processes share the cores and
    take them longest first (by `expected_seconds`, an earlier run's, else the order above). The
    reachability audit spends most of its time in HiGHS on one core, so beside it the others run at
    little cost. No analysis depends on the others, and each is seeded: the same numbers in any order."""
    first_seed = _first_seed(profile, runs, paths)
    n_contexts = min(profile.max_contexts, dataset.split(profile.split).n_transitions)
    by_size = size_sweep_by_size(profile, runs, paths)
    compared = _compared(profile, runs, paths)
    wanted = {
        "rank": (analysis_key("rank", first_seed, profile.max_contexts, profile.split, profile.expressive_ranks,
                              profile.expressive_steps, profile.expressive_dims),
                 ("rank.json", "spectrum.csv", "expressive.csv"),
                 f"rank report of {len(first_seed)} models (with the expressive rank)"),
        "compare": (analysis_key("compare", compared, profile.n_bootstrap, profile.split),
                    ("metrics.csv", "breakdown.csv", "compare.json"),
                    f"comparing {len(paths)} checkpoints on the {profile.split} split"),
        **({"gains": (analysis_key("gains", [p for d in sorted(by_size) for p in by_size[d]], profile.n_bootstrap,
                                   profile.split),
                      ("gains.csv", "breakdown.csv", "gains.json"),
                      f"every head against the softmax of its size d, at {len(by_size)} sizes")} if by_size else {}),
        "reach": (analysis_key("reach", first_seed, profile.n_random, profile.split), ("reach.csv", "reach.json"),
                  f"reachability audit of {len(first_seed)} models"),
        **({"capacity": (analysis_key("capacity", paths, n_contexts, profile.capacity_restarts,
                                      profile.capacity_steps, profile.split),
                         ("capacity.json", "capacity_sweep.csv"),
                         f"capacity fits of {len({(r.variant, r.hidden_dim, r.n_experts) for r in runs})} "
                         f"head × d × K")}
           if dataset.world is not None else {}),  # the capacity fit needs a known truth
    }
    pending = [name for name, (key, files, _) in wanted.items() if not _cached(results / name, key, files)]
    workers = max(1, min(jobs, len(pending)))
    threads = max(1, jobs // workers)
    if workers > 1:  # the longest first, so that the short ones fill in beside it
        expected = expected_seconds or {}
        pending.sort(key=lambda name: -expected.get(name, 0.0))
    arguments = (profile, results, runs, paths, Path(dataset.path), n_contexts, dataset.n_items, str(device))
    queue = [(name, wanted[name][0], threads, arguments) for name in pending]
    timings: dict[str, float] = {}
    if workers == 1:
        for job in queue:
            log(wanted[job[0]][2])
            timings[job[0]] = _analysis_job(job)
    else:
        with worker_pool(workers) as pool:
            futures = {}
            for job in queue:
                log(wanted[job[0]][2] + " (in a worker)")
                futures[job[0]] = pool.submit(_analysis_job, job)
            for name, future in futures.items():
                timings[name] = future.result()
    return {name: key for name, (key, _, _) in wanted.items()}, timings, threads


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _tune_job(job: tuple, log: Callable[[str], None] = _stderr) -> tuple[dict, Path]:
    """One head × d × K's tuning (in a worker process: picklable arguments, the dataset read from its folder)."""
    run, profile, profile_name, data, results, device, committed = job
    set_threads(1)
    return ensure_tuned(run, profile, profile_name, load_prepared(data), results, device, log, committed)


def _train_job(job: tuple, log: Callable[[str], None] = _stderr) -> Path:
    run, tuned, data, runs_dir, device = job
    set_threads(1)
    return ensure_checkpoint(run, tuned, load_prepared(data), runs_dir, device, log)


def _epoch_seconds(record: dict) -> float:
    """Seconds per epoch of a head's tuning trials (its best.json budget): how long its models will take."""
    budget = record.get("budget", {})
    return budget.get("trial_seconds", 0.0) / max(1, budget.get("epochs_trained", 0))


def tune_and_train(runs: list[Run], profile: Profile, profile_name: str, dataset: PreparedDataset, results: Path,
                   device, log: Callable[[str], None], committed: bool = True, jobs: int = 1) -> dict:
    """Tune each head × K that has no settings yet, then train every model not finished; {slug: tuned}.

    One worker (jobs=1): in this process, every tuning, then every model, in the profile's order.
    Several: one pool of `jobs` processes, one thread each, logging to their stderr. The tunings are
    queued first; a head's models are queued as soon as its settings exist (the longest first:
    the slowest heads' epochs, the largest d), so that a worker trains while a long tuning still runs.
    Every job is one seeded tuning study or one seeded model, so nothing depends on the number of
    workers or on the order; a study stopped half-way resumes from what the finished jobs cached."""
    tuning_runs = list({r.tuned_at(profile).slug: r.tuned_at(profile) for r in runs}.values())
    tuned = {t.slug: cached_tuning(t, profile, profile_name, dataset, results, committed) for t in tuning_runs}
    missing = [t for t in tuning_runs if tuned[t.slug] is None]

    def training(slugs) -> list[tuple]:
        chosen = [r for r in runs if r.tuned_at(profile).slug in slugs]
        return [(r, tuned[r.tuned_at(profile).slug], dataset.path, results / "runs", str(device)) for r in chosen
                if not _finished(checkpoint_path(r, tuned[r.tuned_at(profile).slug], dataset, results / "runs"))]

    def tuning(t: Run) -> tuple:
        return (t, profile, profile_name, dataset.path, results, str(device), committed)

    if jobs <= 1:
        for t in missing:
            tuned[t.slug] = _tune_job(tuning(t), log)
        for job in training(set(tuned)):
            _train_job(job, log)
        return tuned

    def longest_first(queue: list[tuple]) -> list[tuple]:
        return sorted(queue, key=lambda job: (-_epoch_seconds(job[1][0]), -job[0].hidden_dim))

    from concurrent.futures import as_completed

    with worker_pool(jobs) as pool:
        tunings = {pool.submit(_tune_job, tuning(t)): t for t in missing}
        trainings = [pool.submit(_train_job, job)
                     for job in longest_first(training({s for s, found in tuned.items() if found}))]
        for future in as_completed(tunings):
            t = tunings[future]
            tuned[t.slug] = future.result()
            trainings += [pool.submit(_train_job, job) for job in longest_first(training({t.slug}))]
        for future in trainings:
            future.result()
    return tuned


def run_study(profile: str | Profile, results: Path, data: Path | None = None, device="cpu",
              log: Callable[[str], None] = _stderr, committed_tuning: bool = True, jobs: int = 1) -> dict:
    """Tune and train what is missing and run what changed; returns the study record (also in study.json).

    profile: a name in PROFILES, or a Profile (tests use tiny ones). committed_tuning=False ignores
    figures/tuned/ and tunes into results/tuned/ (how the committed files are made). jobs: worker
    processes for the tunings, the trainings and the analyses (one thread each; the same models and numbers for
    any number)."""
    profile_name = profile if isinstance(profile, str) else "custom"
    profile = PROFILES[profile] if isinstance(profile, str) else profile
    results = Path(results)
    dataset = ensure_data(results, data, profile, log)  # bad --data fails before anything is written
    results.mkdir(parents=True, exist_ok=True)
    if dataset.split(profile.split).n_transitions == 0:
        raise InputError(f"{dataset.path}: the {profile.split} split has no events")
    set_threads(1)  # GRU4Rec's small sequential steps: one thread is as fast, and never oversubscribes
    runs = study_runs(profile)
    tuned = tune_and_train(runs, profile, profile_name, dataset, results, device, log, committed_tuning, jobs)
    tuned_for = {r: tuned[r.tuned_at(profile).slug] for r in runs}
    paths = [checkpoint_path(r, tuned_for[r], dataset, results / "runs") for r in runs]
    earlier = json.loads((results / "study.json").read_text()) if (results / "study.json").is_file() else {}
    keys, timings, threads = run_analyses(profile, results, runs, paths, dataset, device, log, jobs,
                                          earlier.get("analysis_seconds"))
    record = {"library_version": library_version(), "versions": package_versions(), "machine": machine(),
              "threads": threads,
              "profile": profile_name, "settings": dataclasses.asdict(profile),
              "data": str(dataset.path), "fingerprint": dataset.fingerprint, "n_items": dataset.n_items,
              "runs": [{**dataclasses.asdict(r), "head": r.head, "label": r.label, "checkpoint": str(p),
                        "tuned": {**_tuned_summary(*tuned_for[r]), "tuned_at_hidden_dim": r.tuned_at(profile).hidden_dim}}
                       for r, p in zip(runs, paths)],
              "analyses": keys}
    write_models_table(results / "models.csv", runs, paths)
    record["analysis_seconds"] = {**earlier.get("analysis_seconds", {}), **{k: round(v, 1) for k, v in timings.items()}}
    write_text(results / "study.json", json.dumps(record, indent=2) + "\n")
    return record
