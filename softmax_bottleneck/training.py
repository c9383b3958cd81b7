"""GRU4Rec training with any head: session-parallel mini-batches, sampled softmax with logQ, selection on valid.

The command is ``python -m softmax_bottleneck.train`` (its docstring has the examples and the
protocol); :func:`train` is the same work from Python::

    from softmax_bottleneck.config import ModelConfig, TrainConfig
    from softmax_bottleneck.data import load_prepared
    from softmax_bottleneck.training import train

    dataset = load_prepared("prepared/synthetic")
    checkpoint = train(dataset, ModelConfig(n_items=dataset.n_items, head="mos"), TrainConfig(epochs=2), "runs/mos.pt")

As the official GRU4Rec: session-parallel mini-batches with sessions in order of first event,
one-step truncated backprop, a hidden state zeroed when a new session takes a slot, and
cross-entropy over the batch's targets plus shared negatives drawn ∝ support^alpha, with the logQ
correction (training only). After each epoch: validation metrics and an atomic checkpoint holding
the best validation epoch's weights and, for ``resume``, the last epoch's full state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed
from .atomic import destination_lock
from .checkpoint import load_checkpoint, save_checkpoint
from .config import ModelConfig, TrainConfig
from .data import PreparedDataset, session_parallel_batches
from .errors import InputError, TrainingDiverged
from .evaluation import evaluate_ranks
from .metrics import metric_table
from .model import GRU4Rec, carry_state
from .optim import AdagradMomentum

DIVERGED = 10  # an epoch's loss this many times a uniform guess's: the run has blown up


class NegativeSampler:
    """Shared negatives ∝ support^alpha, drawn in blocks from a seeded generator (GRU4Rec's sample cache).

    By Walker's alias method (Vose's construction): a draw is one uniform item and one uniform coin,
    kept or sent to the item's alias, exact for the weights; a fifth of the time of
    ``torch.multinomial``'s search per sample, which was 6 % of a batch-32 training step."""

    def __init__(self, support: np.ndarray, alpha: float, n_sample: int, generator: torch.Generator,
                 device: torch.device, block_steps: int = 256):
        self.keep, self.alias = alias_table(np.asarray(support, dtype=np.float64) ** alpha)
        self.n_sample, self.generator, self.device, self.block_steps = n_sample, generator, device, block_steps
        self.reset()

    def reset(self) -> None:
        """Forget the drawn block, so an epoch's samples depend only on the generator's state."""
        self._block, self._next = None, 0

    def draw(self) -> torch.Tensor:
        if self._block is None or self._next == len(self._block):
            n = self.n_sample * self.block_steps
            items = torch.randint(len(self.keep), (n,), generator=self.generator)
            coins = torch.rand(n, generator=self.generator, dtype=torch.float64)
            flat = torch.where(coins < self.keep[items], items, self.alias[items])
            self._block, self._next = flat.view(self.block_steps, self.n_sample).to(self.device), 0
        self._next += 1
        return self._block[self._next - 1]


def alias_table(weights: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Walker's alias table of non-negative weights (Vose 1991): (keep (n,) float64, alias (n,) long) such
    that drawing i uniformly, then keeping it with probability keep[i] and otherwise taking alias[i],
    draws i with probability weights[i] / weights.sum()."""
    scaled = weights * (len(weights) / weights.sum())  # mean 1
    keep, alias = np.ones(len(weights)), np.arange(len(weights))
    small = [int(i) for i in np.flatnonzero(scaled < 1.0)]
    large = [int(i) for i in np.flatnonzero(scaled >= 1.0)]
    while small and large:
        short, tall = small.pop(), large.pop()
        keep[short], alias[short] = scaled[short], tall  # short's column: itself, topped up by tall
        scaled[tall] -= 1.0 - scaled[short]
        (small if scaled[tall] < 1.0 else large).append(tall)
    # what is left holds 1 up to rounding: kept whole (keep 1)
    return torch.from_numpy(keep), torch.from_numpy(alias)


def _make_optimizer(model: GRU4Rec, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adagrad":
        model.set_sparse_gradients(not config.full_softmax)
        return AdagradMomentum(model.parameters(), lr=config.lr, momentum=config.momentum)
    model.set_sparse_gradients(False)
    return torch.optim.Adam(model.parameters(), lr=config.lr)


def _rng_state(sampler_generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "sampler": sampler_generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, sampler_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    sampler_generator.set_state(state["sampler"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_step(model: GRU4Rec, inputs: torch.Tensor, hidden: torch.Tensor, targets: torch.Tensor,
               config: TrainConfig, optimizer: torch.optim.Optimizer, sampler: NegativeSampler | None,
               log_support: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """One optimizer step on a batch: the GRU step from `inputs` and the carried `hidden`, the loss over
    the targets and shared negatives (logQ-corrected) or over all items, scaled as GRU4Rec does, and the
    update. Returns (the per-row losses, the new hidden state); the losses are None when a batch has no
    negatives at all, which GRU4Rec skips (the GRU still steps).

    With the indexed optimizer a sampled step reads the item rows it touches from one dense gather and
    scores each once (``GRU4Rec.touched_rows``): the same loss and the same update as sparse embedding
    gradients over every drawn candidate, to rounding.

    Under torchrun each rank takes the loss of its share of the rows (every row's candidates are the
    same: all the batch's targets and the shared negatives) and the gradients are summed over the
    ranks before the update (softmax_bottleneck.distributed); the returned losses are this rank's rows'."""
    n_rows = len(targets)
    rows = distributed.rows_of_rank(n_rows) if distributed.active() else None
    sampled = not config.full_softmax
    if sampled and config.n_sample == 0 and n_rows < 2:
        return None, model.step(inputs, hidden)[1]  # no negatives at all (GRU4Rec stops the epoch here)
    gathered = sampled and model.head.sparse_gradients
    candidates = log_q = negatives = None
    if sampled:
        candidates, log_q = targets, log_support.index_select(0, targets)
        if sampler is not None:
            negatives = sampler.draw()
            if not gathered:  # inside touched_rows the head reads the negatives from there
                candidates = torch.cat([targets, negatives])
            log_q = torch.cat([log_q, log_support.index_select(0, negatives).mul_(config.sample_alpha)])
        if config.logq != 1.0:
            log_q = log_q.mul_(config.logq) if config.logq else None
    with model.touched_rows(inputs, targets, negatives) if gathered else contextlib.nullcontext():
        output, hidden = model.step(inputs, hidden)
        if rows is not None:  # this rank's share (torchrun)
            output, targets = output[rows], targets[rows]
        if sampled:
            columns = torch.arange(n_rows, device=output.device)
            losses = model.head.loss(output, columns if rows is None else columns[rows], candidates, log_q)
        else:
            losses = model.head.loss(output, targets)
        loss = losses.sum() / config.batch_size  # GRU4Rec's scaling: by the configured batch size
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    distributed.sum_gradients(model.parameters())
    optimizer.step()
    return losses, hidden


def train_epoch(model: GRU4Rec, dataset: PreparedDataset, config: TrainConfig, optimizer: torch.optim.Optimizer,
                sampler: NegativeSampler | None, log_support: torch.Tensor, device: torch.device,
                desc: str = "train", progress: bool = True) -> dict:
    """One pass over the training sessions; returns loss per event, events and events/s."""
    model.train()
    split = dataset.splits["train"]
    hidden = model.init_hidden(min(config.batch_size, split.n_sessions), device)
    if sampler is not None:
        sampler.reset()
    total_loss, n_events = 0.0, 0
    start = time.perf_counter()
    bar = tqdm(total=split.n_transitions, unit="ev", desc=desc, disable=not progress or not distributed.is_main(),
               leave=False, mininterval=0.5)
    for batch in session_parallel_batches(split, config.batch_size):
        hidden = carry_state(hidden, batch.keep, batch.reset)
        inputs = torch.from_numpy(batch.inputs).to(device)
        targets = torch.from_numpy(batch.targets).to(device)
        losses, hidden = train_step(model, inputs, hidden, targets, config, optimizer, sampler, log_support)
        if losses is None:
            continue
        total_loss += float(losses.detach().sum())
        n_rows = len(targets)
        n_events += n_rows
        bar.update(n_rows)
    bar.close()
    total_loss = distributed.sum_scalar(total_loss)  # each rank summed its own rows' losses
    seconds = time.perf_counter() - start
    if not math.isfinite(total_loss):
        raise TrainingDiverged(f"training diverged (non-finite loss) in {desc}; lower lr")
    loss = total_loss / max(n_events, 1)
    n_candidates = dataset.n_items if config.full_softmax else config.batch_size + config.n_sample
    uniform = math.log(max(n_candidates, 2))  # the loss of a model that scores every candidate alike
    if loss > DIVERGED * uniform:
        raise TrainingDiverged(f"training diverged in {desc}: loss {loss:.3g} per event, more than {DIVERGED}× a "
                               f"uniform guess's {uniform:.2f}; lower lr")
    return {"loss": loss, "train_events": n_events, "train_seconds": seconds,
            "events_per_second": n_events / seconds}


def validate(model: GRU4Rec, dataset: PreparedDataset, config: TrainConfig, device: torch.device,
             progress: bool = False) -> dict:
    """Validation metrics of one epoch: ``valid_recall@20``, ``valid_mrr@20``, ``valid_ndcg@20`` and the selection metric."""
    ranks = evaluate_ranks(model, dataset.splits["valid"], batch_size=config.eval_batch_size, device=device,
                           progress=progress)
    table = metric_table(ranks.ranks, sorted({20, config.select_cutoff}))
    keep = {f"{name}@20" for name in ("recall", "mrr", "ndcg")} | {config.select_metric}
    return {f"valid_{name}": value for name, value in table.items() if name in keep}


def _copy_state(model: GRU4Rec) -> dict:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@dataclasses.dataclass
class _Selection:
    """The best validation epoch so far and its weights."""

    metric: str
    patience: int
    best_epoch: int = 0
    best_value: float = -math.inf
    state: dict | None = None

    def update(self, epoch: int, value: float, model: GRU4Rec) -> None:
        if value > self.best_value:  # ties keep the earlier epoch
            self.best_epoch, self.best_value, self.state = epoch, value, _copy_state(model)

    def stop(self, epoch: int) -> bool:
        return self.patience > 0 and epoch - self.best_epoch >= self.patience

    def record(self, epoch: int, config: TrainConfig) -> dict:
        stopped = self.stop(epoch)
        return {"metric": self.metric, "patience": self.patience, "best_epoch": self.best_epoch,
                "best_value": self.best_value, "epochs_trained": epoch, "stopped_early": stopped,
                "finished": stopped or epoch >= config.epochs}


def build_training(dataset: PreparedDataset, model_config: ModelConfig, config: TrainConfig,
                   device: torch.device | str = "cpu"):
    """What an epoch needs, seeded: (model, optimizer, negative sampler or None, the sampler's generator,
    log training support for logQ). `model_config.n_items` is set from the data."""
    device = torch.device(device)
    model_config = dataclasses.replace(model_config, n_items=dataset.n_items)
    torch.manual_seed(config.seed)  # dropout draws from the global generator
    model = GRU4Rec(model_config)
    model.reset_parameters(torch.Generator().manual_seed(config.seed))
    model.to(device)
    optimizer = _make_optimizer(model, config)
    sampler_generator = torch.Generator().manual_seed(config.seed + 1)
    sampler = (NegativeSampler(dataset.support, config.sample_alpha, config.n_sample, sampler_generator, device)
               if config.n_sample > 0 and not config.full_softmax else None)
    log_support = torch.log(torch.as_tensor(dataset.support, dtype=torch.float32, device=device))
    return model, optimizer, sampler, sampler_generator, log_support


def train(dataset: PreparedDataset, model_config: ModelConfig, config: TrainConfig, out: Path, *,
          device: torch.device | str = "cpu", resume: bool = False, progress: bool = True,
          log: Callable[[str], None] = print, on_epoch: Callable[[dict], None] | None = None,
          tuning: dict | None = None) -> dict:
    """Train (or resume) and write a checkpoint to `out` after every epoch; returns the last checkpoint.

    The checkpoint's ``state_dict`` is the best validation epoch's (``config.select_metric``);
    ``on_epoch(stats)`` is called after each epoch's checkpoint is written (the tuner prunes there).
    ``tuning``: where the settings come from (:func:`tuning_record` of a best.json), kept in the checkpoint
    so that a comparison can say what budget each head got.
    """
    # 65 lines, on purpose: the epoch loop with its checkpoint, selection and stop rules in one place,
    # in the order they apply after each epoch.
    # under torchrun, rank 0 alone holds the destination and writes it; every rank trains
    with destination_lock(out, "training run") if distributed.is_main() else contextlib.nullcontext():
        return _train(dataset, model_config, config, Path(out), device=torch.device(device), resume=resume,
                      progress=progress, log=log, on_epoch=on_epoch, tuning=tuning)


def _check_room(out: Path, model: GRU4Rec) -> None:
    """Refuse before the first epoch a destination whose disk cannot hold a checkpoint: the weights of the
    best and the last epoch and the optimizer's state, about four times the parameters' bytes."""
    import shutil

    needed = 4 * sum(p.numel() * p.element_size() for p in model.parameters())
    free = shutil.disk_usage(out.parent if out.parent.exists() else Path.cwd()).free
    if free < needed:
        raise InputError(f"{out}: its disk has {free / 2**20:.1f} MiB free and a checkpoint of this model needs about "
                         f"{needed / 2**20:.1f} MiB; free some space or choose another {{out}}", "out")


def _train(dataset, model_config, config, out: Path, *, device, resume, progress, log, on_epoch, tuning) -> dict:
    model_config = dataclasses.replace(model_config, n_items=dataset.n_items)
    if config.select_cutoff > dataset.n_items:
        raise InputError(f"{{select_metric}} {config.select_metric}: K is larger than the catalogue "
                         f"({dataset.n_items} items)", "select_metric")
    model, optimizer, sampler, sampler_generator, log_support = build_training(dataset, model_config, config, device)
    main = distributed.is_main()
    if not main:
        progress, log = False, lambda message: None
    _check_room(out, model)
    history: list[dict] = []
    selection = _Selection(config.select_metric, config.patience)
    start_epoch = 0
    if resume:
        start_epoch, history, selection, recorded = _resume(out, model, optimizer, sampler_generator, dataset,
                                                            model_config, config)
        tuning = tuning or recorded  # a resume without --config keeps the settings' provenance
        log(f"resuming {out} after epoch {start_epoch}")
    elif out.exists():
        raise InputError(f"{out}: exists; pass {{resume}} to continue it or choose another {{out}}", "resume", "out")
    checkpoint = None
    for epoch in range(start_epoch + 1, config.epochs + 1):
        stats = train_epoch(model, dataset, config, optimizer, sampler, log_support, device,
                            desc=f"epoch {epoch}/{config.epochs}", progress=progress)
        stats.update({"epoch": epoch, **validate(model, dataset, config, device, progress)})
        history.append(stats)
        selection.update(epoch, stats[f"valid_{config.select_metric}"], model)
        last = _copy_state(model) if selection.best_epoch != epoch else selection.state
        checkpoint = {
            "model_config": dataclasses.asdict(model_config), "train_config": dataclasses.asdict(config),
            "state_dict": selection.state, "last_state_dict": last, "optimizer": optimizer.state_dict(),
            "rng": _rng_state(sampler_generator), "epoch": epoch, "best_epoch": selection.best_epoch,
            "selection": selection.record(epoch, config), "metrics": history, "threads": torch.get_num_threads(),
            "world_size": distributed.world_size(), "tuning": tuning,
            "item_ids": dataset.item_ids.tolist(),
            "data": {"path": str(Path(dataset.path).resolve()) if dataset.path else None,
                     "fingerprint": dataset.fingerprint},
        }
        if main:
            save_checkpoint(checkpoint, out)
        log(f"epoch {epoch}: loss {stats['loss']:.4f}  {stats['events_per_second']:,.0f} events/s  "
            f"valid recall@20 {stats['valid_recall@20']:.4f}  mrr@20 {stats['valid_mrr@20']:.4f}"
            + ("  (best)" if selection.best_epoch == epoch else f"  (best: epoch {selection.best_epoch})"))
        if on_epoch is not None:
            on_epoch(stats)
        if selection.stop(epoch):
            log(f"stopping: no better valid {config.select_metric} for {config.patience} epochs; "
                f"kept epoch {selection.best_epoch}")
            break
    return checkpoint if checkpoint is not None else load_checkpoint(out)


def _differing(recorded: dict, wanted: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    keys = sorted((set(recorded) | set(wanted)) - set(ignore))
    return [f"{k} {recorded.get(k)!r} → {wanted.get(k)!r}" for k in keys if recorded.get(k) != wanted.get(k)]


def _resume(out: Path, model: GRU4Rec, optimizer, sampler_generator, dataset: PreparedDataset,
            model_config: ModelConfig, config: TrainConfig) -> tuple[int, list[dict], _Selection, dict | None]:
    if not out.exists():
        raise InputError(f"{out}: nothing to resume (no checkpoint there); drop {{resume}} to start a new run", "resume")
    checkpoint = load_checkpoint(out)
    if checkpoint["data"]["fingerprint"] != dataset.fingerprint:
        raise InputError(f"{out}: trained on prepared data {checkpoint['data']['fingerprint'][:19]}, "
                         f"{{data}} has {dataset.fingerprint[:19]}; cannot resume on other data", "data")
    differ = _differing(checkpoint["model_config"], dataclasses.asdict(model_config))
    if differ:
        raise InputError(f"{out}: model settings differ from the checkpoint's ({'; '.join(differ)}); "
                         "resume with the same flags")
    differ = _differing(checkpoint["train_config"], dataclasses.asdict(config), ignore=("epochs",))
    if differ:
        raise InputError(f"{out}: training settings differ from the checkpoint's ({'; '.join(differ)}); "
                         "only epochs may change")
    done = int(checkpoint["epoch"])
    recorded = checkpoint.get("selection") or {}
    if recorded.get("stopped_early"):
        raise InputError(f"{out}: nothing to do: training stopped early at epoch {done} (patience "
                         f"{recorded['patience']}; best epoch {recorded['best_epoch']})")
    if config.epochs <= done:
        raise InputError(f"{out}: nothing to do: it already holds {done} epochs and {{epochs}} is {config.epochs}; "
                         "raise {epochs} to train on", "epochs")
    model.load_state_dict(checkpoint.get("last_state_dict") or checkpoint["state_dict"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    _set_rng_state(checkpoint["rng"], sampler_generator)
    history = list(checkpoint["metrics"])
    selection = _Selection(config.select_metric, config.patience)
    for stats in history:  # the best epoch is the first maximum of the recorded curve
        if stats[f"valid_{config.select_metric}"] > selection.best_value:
            selection.best_epoch, selection.best_value = stats["epoch"], stats[f"valid_{config.select_metric}"]
    selection.state = checkpoint["state_dict"] if selection.best_epoch == checkpoint.get("best_epoch", done) \
        else None
    if selection.state is None:
        raise InputError(f"{out}: damaged checkpoint: its best epoch does not match its validation curve")
    return done, history, selection, checkpoint.get("tuning")


def tuning_record(best: dict, path: str | None = None) -> dict | None:
    """The provenance of settings taken from a tuner's best.json: study, budget, best value; None otherwise."""
    if "budget" not in best:
        return None
    return {"file": None if path is None else str(path), "study_name": best.get("study_name"),
            "metric": best.get("metric"), "value": best.get("value"), "trial": best.get("trial"),
            "budget": best["budget"]}
