"""The capacity fit behind ``python -m analysis.capacity`` (whose docstring gives the method).

:func:`fit_head` fits a head of a family and size, with a free state per context, to the true
next-item distributions (:func:`truth_contexts`); :func:`capacity` puts the oracle, the fit and
each checkpoint on the same contexts and splits each checkpoint's KL into a capacity gap and a
residual gap; :func:`write_outputs` writes capacity.json, capacity.csv and capacity.png.
The fit's KL is an upper bound on the family's best achievable KL (a fit, not a proof).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from softmax_bottleneck.checkpoint import load_checkpoints_on_one_dataset, model_from_checkpoint
from softmax_bottleneck.cli import check_cutoffs
from softmax_bottleneck.config import IDENTITY, ModelConfig, describe
from softmax_bottleneck.data import load_prepared
from softmax_bottleneck.errors import InputError
from softmax_bottleneck.heads import Head, head_for
from softmax_bottleneck.model import model_label, unique_labels
from softmax_bottleneck.provenance import library_version
from softmax_bottleneck.synthetic import SyntheticWorld

from .engines import numerical_rank
from .logprobs import LogProbMatrix, collect_contexts, sample_contexts, sample_order
from .outputs import write_files

UPPER_BOUND = "an upper bound on the best KL this head family reaches at this size (a fit, not a proof)"


FAMILY = ("head", "hidden_dim", "n_experts", "item_bias")  # what makes a head family and size, for every head
MOL_FAMILY = ("mol_context_components", "mol_item_components", "mol_dim", "mol_temperature")  # and for MoL


def family_fields(config) -> dict:
    """The fields of a model config (dataclass or dict) that define the head family the fit explores."""
    config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    names = FAMILY + (MOL_FAMILY if config["head"] == "mol" else ())
    return {name: config.get(name) for name in names}


def family_config(model_config: dict) -> ModelConfig:
    """The family a trained model belongs to, as a config to fit. Its input embedding does not enter the fit
    (states are free) but is kept, so that the fit carries the model's variant (softmax-dd is not softmax)."""
    embedding = {k: model_config[k] for k in ("embedding", "embedding_dim") if model_config.get(k) is not None}
    return ModelConfig(**family_fields(model_config), **embedding)


def check_family(config: ModelConfig, checkpoint: dict, path) -> None:
    """A checkpoint's gaps are measured against the fit of its own family: refuse one outside it."""
    wanted, got = family_fields(config), family_fields(checkpoint["model_config"])
    differ = [f"{name} {got[name]} (the fit: {wanted[name]})" for name in wanted if got.get(name) != wanted[name]]
    if differ:
        raise InputError(f"{path}: not of the fitted head family ({'; '.join(differ)}); its capacity and residual "
                         "gaps would compare it with another family's fit: fit its own, or leave it out")


@dataclasses.dataclass
class TruthContexts:
    """Sampled held-out contexts of a first-order world, grouped by their previous item."""

    sessions: np.ndarray  # (N,) the sampled contexts, as analysis.logprobs.sample_contexts orders them
    positions: np.ndarray  # (N,)
    previous: np.ndarray  # (m,) the distinct previous items (catalogue indices)
    weights: np.ndarray  # (m,) how many sampled contexts have each
    inverse: np.ndarray  # (N,) row of `previous` for each sampled context
    log_truth: np.ndarray  # (m, n_items) float64 true log p(next | previous), restricted to the catalogue


def teacher_contexts(checkpoint: dict, dataset, split: str, max_contexts: int | None, seed: int,
                     device="cpu") -> TruthContexts:
    """The held-out contexts (sampled as sample_contexts draws them) and a teacher model's distributions on them,
    one row per context, in the place of the truth."""
    from softmax_bottleneck.foreign.adapter import require_every_item

    require_every_item(checkpoint, "a teacher")
    model = model_from_checkpoint(checkpoint, device)
    held_out = dataset.split(split)
    if held_out.n_transitions == 0:
        raise InputError(f"{dataset.path}: the {split} split has no events")
    contexts = sample_contexts(collect_contexts(model, held_out, device=device), max_contexts, seed)
    log_p = LogProbMatrix(model.head, contexts.hidden, name="the teacher", device=device).dense()
    rows = np.arange(len(log_p))
    return TruthContexts(contexts.sessions, contexts.positions, rows, np.ones(len(log_p)), rows, log_p)


def truth_contexts(dataset, split: str, max_contexts: int | None, seed: int) -> TruthContexts:
    """The held-out contexts (a seeded sample, as sample_contexts draws it) and their true distributions."""
    if dataset.world is None:
        raise InputError(f"{dataset.path}: capacity needs a known truth (the synthetic world: "
                         "python -m softmax_bottleneck.prepare --synthetic); this dataset has none: pass {teacher} "
                         "CKPT to fit the heads to a trained model's predictions instead", "teacher")
    held_out = dataset.split(split)
    lengths = np.diff(held_out.offsets)
    sessions = np.repeat(np.arange(held_out.n_sessions), np.maximum(lengths - 1, 0))
    positions = np.concatenate([np.arange(1, n) for n in lengths]) if len(lengths) else np.zeros(0, np.int64)
    if len(sessions) == 0:
        raise InputError(f"{dataset.path}: the {split} split has no events")
    order = sample_order(len(sessions), max_contexts, seed)
    sessions, positions = sessions[order], positions[order]
    previous_items = held_out.items[held_out.offsets[sessions] + positions - 1].astype(np.int64)
    previous, inverse, weights = np.unique(previous_items, return_inverse=True, return_counts=True)
    world = SyntheticWorld.from_arrays(dataset.world)
    catalogue = dataset.item_ids.astype(np.int64)
    log_truth = world.log_probs(catalogue[previous], items=catalogue)
    return TruthContexts(sessions, positions, previous, weights.astype(np.float64), inverse, log_truth)


def mean_kl(log_truth: torch.Tensor, log_model: torch.Tensor, weights: torch.Tensor,
            truth: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_c w_c KL(p_c ‖ q_c) / Σ_c w_c, in float64 (log_truth, log_model: (m, n)); `truth`: exp(log_truth),
    when the caller has it (the fit's loop does, so that it is not recomputed at every step)."""
    truth = log_truth.exp() if truth is None else truth
    return (weights[:, None] * truth * (log_truth - log_model)).sum() / weights.sum()


def expected_metrics(log_truth: np.ndarray, log_model: np.ndarray, weights: np.ndarray, ks) -> dict:
    """Expected Recall@K and MRR@K when the next item is drawn from the truth: the true mass of the
    model's top K, and that mass weighted by 1/rank (top K by torch.topk; ties broken by index)."""
    truth, model = torch.from_numpy(np.exp(log_truth)), torch.from_numpy(log_model)
    top = torch.topk(model, max(ks), dim=1).indices  # (m, K)
    mass = truth.gather(1, top)  # (m, K): true probability of each recommended item
    w = torch.from_numpy(weights) / float(weights.sum())
    out = {}
    for k in ks:
        out[f"expected_recall@{k}"] = float((w[:, None] * mass[:, :k]).sum())
        out[f"expected_mrr@{k}"] = float((w[:, None] * mass[:, :k] / torch.arange(1, k + 1)).sum())
    return out


@dataclasses.dataclass
class CapacityFit:
    head: Head
    states: np.ndarray  # (m, d) fitted head inputs, one per distinct previous item
    kl: float
    restart_kls: list[float]
    seconds: float


WARM_SCALE = 0.2  # a warm-started MoS sees tanh(Q·h) with |Q·h| ≤ this: nearly linear, so it starts as the softmax
WARM_LR = 0.01  # and moves from there more gently than a cold start


def fit_head(config: ModelConfig, contexts: TruthContexts, *, restarts: int = 2, seed: int = 0,
             steps: int = 1500, lr: float = 0.05, float64_share: float = 0.2,
             softmax: CapacityFit | None = None, start: tuple | None = None) -> CapacityFit:
    """The best head of `config`'s family and size for the true distributions: full-batch Adam from
    `restarts` seeded starts; the lowest KL wins (see the module docstring: an upper bound).

    The first steps run in float32 (twice as fast on a CPU), the last `float64_share` of them in
    float64 (parameters and Adam's moments converted in place, the schedule running on), and the KL
    is measured in float64. On 1,024 contexts × 500 items at d = 16 this reached the all-float64
    fit's KL to four digits for softmax and MoS K=4 in 0.6× the time (benchmarks/capacity_speed.py).

    `softmax`: a fitted softmax of the same size, from which a MoS fit starts one more restart. A
    mixture can be the softmax: with W/ε for W, states ε·h/max|h| and every Q_k near the identity,
    tanh(Q_k·h) ≈ Q_k·h and each expert is the softmax (to O(ε²); ε = ``WARM_SCALE``). Cold MoS starts
    can stop far above the softmax's KL (0.072 against 0.016 nats on the dial world at d = 8); from
    the softmax they end below it (0.014), so the MoS bound is never looser than the softmax's.

    `start`: (item weights (n, d), item bias (n,) or None, states (m, d)) of a softmax head to start one more
    restart from (the expressive rank starts at a truncated SVD); that restart keeps its start when the
    polish does not improve on it, so the fit is never worse than the start."""
    if not 0.0 <= float64_share <= 1.0:
        raise ValueError(f"float64_share must be in [0, 1], got {float64_share}")
    if softmax is not None and (config.head != "mos" or softmax.states.shape[1] != config.hidden_dim):
        raise ValueError("a softmax start is for a MoS fit of the same hidden size")
    began = time.perf_counter()
    log_truth = torch.from_numpy(contexts.log_truth)
    weights = torch.from_numpy(contexts.weights)
    switch = steps - round(steps * float64_share)  # the first float64 step
    if start is not None and config.head != "softmax":
        raise ValueError("a given start is for a softmax fit")
    best, kls = None, []
    kinds = ["cold"] * restarts + ["softmax"] * (softmax is not None) + ["given"] * (start is not None)
    for restart, kind in enumerate(kinds):
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, restart]).generate_state(1)[0]))
        head = head_for(config)
        head.reset_parameters(generator)
        head = head.train(False)
        free = torch.randn(len(contexts.previous), config.hidden_dim, generator=generator, dtype=torch.float64)
        if kind == "softmax":  # the start from the softmax
            free = _start_from_softmax(head, softmax, generator)
        elif kind == "given":
            free = _set_softmax(head, *start)
            with torch.no_grad():
                kl = float(mean_kl(log_truth, head.double().log_probs(free), weights))
            if best is None or kl < best[0]:
                best = (kl, copy.deepcopy(head), free.numpy().copy())
        free = free.float().requires_grad_(True)
        head = head.float()
        parameters = [free, *head.parameters()]
        optimizer = torch.optim.Adam(parameters, lr=lr if kind == "cold" else WARM_LR)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        truth, mass = log_truth.float(), weights.float()
        probabilities = truth.exp()
        for step in range(steps):
            if step == switch:
                _to_float64(optimizer)
                truth, mass, probabilities = log_truth, weights, log_truth.exp()
            optimizer.zero_grad()
            mean_kl(truth, head.log_probs(free), mass, probabilities).backward()
            optimizer.step()
            schedule.step()
        _to_float64(optimizer)
        with torch.no_grad():
            states = free.detach()
            kl = float(mean_kl(log_truth, head.log_probs(states), weights))
        kls.append(kl)
        if best is None or kl < best[0]:
            best = (kl, head, states.numpy().copy())
    kl, head, states = best
    return CapacityFit(head, states, kl, kls, time.perf_counter() - began)


def _set_softmax(head: Head, weight: np.ndarray, bias: np.ndarray | None, states: np.ndarray) -> torch.Tensor:
    """Set a softmax head's items to (weight, bias); returns the states (float64) to start from."""
    with torch.no_grad():
        head.item_weight.copy_(torch.from_numpy(weight))
        if head.item_bias is not None:
            head.item_bias.copy_(torch.from_numpy(np.zeros(len(weight)) if bias is None else bias)
                                 .view_as(head.item_bias))
    return torch.from_numpy(np.ascontiguousarray(states, dtype=np.float64))


def _start_from_softmax(head: Head, softmax: CapacityFit, generator: torch.Generator) -> torch.Tensor:
    """Set a MoS head to (nearly) the fitted softmax; returns the states to start from (float64)."""
    states = torch.from_numpy(softmax.states).double()
    scale = float(states.abs().max()) or 1.0
    d, k = head.hidden_dim, head.n_experts
    with torch.no_grad():
        head.item_weight.copy_(softmax.head.item_weight.detach() * (scale / WARM_SCALE))
        if head.item_bias is not None:
            head.item_bias.copy_(softmax.head.item_bias.detach())
        head.prior.weight.zero_()  # equal experts
        noise = 0.05 * torch.randn(k * d, d, generator=generator, dtype=torch.float64)  # to break their symmetry
        head.projection.weight.copy_(torch.eye(d, dtype=torch.float64).repeat(k, 1) + noise)
    return states * (WARM_SCALE / scale)


def _to_float64(optimizer: torch.optim.Optimizer) -> None:
    """Every parameter of `optimizer`, and its state (Adam's moments), converted to float64 in place."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            parameter.grad = None
            parameter.data = parameter.data.double()
            state = optimizer.state.get(parameter, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.is_floating_point() and value.dim():
                    state[key] = value.double()


def _measures(log_truth, log_model, weights, ks, rank: int) -> dict:
    kl = float(mean_kl(torch.from_numpy(log_truth), torch.from_numpy(log_model), torch.from_numpy(weights)))
    return {"kl": kl, **expected_metrics(log_truth, log_model, weights, ks), "rank": rank}


def _checkpoint_row(path, checkpoint, label, dataset, split, contexts, ks, seed, device) -> dict:
    """A trained model's measures on the same sampled contexts (each its own prefix, equally weighted)."""
    model = model_from_checkpoint(checkpoint, device)
    states = sample_contexts(collect_contexts(model, dataset.split(split), device=device), len(contexts.sessions),
                             seed)
    if not (np.array_equal(states.sessions, contexts.sessions) and np.array_equal(states.positions, contexts.positions)):
        raise InputError(f"{path}: its contexts differ from the truth's sample")  # same split, same seed: never
    matrix = LogProbMatrix(model.head, states.hidden, name=f"{checkpoint['model_config']['head']} head of {path}",
                           device=device)
    log_model = matrix.dense()
    config = checkpoint["model_config"]
    ranked = matrix if matrix.has_factors else log_model  # a mixture's rank from the matrix made above, not made again
    return {"model": label, "kind": "trained", "checkpoint": str(path), **describe(config),
            **_measures(contexts.log_truth[contexts.inverse], log_model, np.ones(len(log_model)), ks,
                        numerical_rank(ranked))}


def capacity(config: ModelConfig, *, data: Path | None = None, checkpoints: list[Path] = (), split: str = "test",
             max_contexts: int | None = 1024, seed: int = 0, restarts: int = 2, steps: int = 1500, ks=(20,),
             device="cpu", formats=None, item_map: Path | None = None, allow_other_data: bool = False,
             teacher: Path | None = None) -> dict:
    """Rows oracle | best fit | checkpoints, and the two gaps per checkpoint (see the module docstring).

    `teacher`: a trained model whose predictions stand in for the truth (real data has none): the fit is
    the best head of the family and size for the teacher's next-item distributions, and every
    checkpoint's KL is KL(teacher ‖ model). Its first row is the teacher ("teacher", KL 0)."""
    if teacher is not None:
        loaded, dataset = load_checkpoints_on_one_dataset([teacher, *checkpoints], data, formats, item_map,
                                                          allow_other_data=allow_other_data)
        teacher_checkpoint, loaded = loaded[0], loaded[1:]
    elif checkpoints:
        loaded, dataset = load_checkpoints_on_one_dataset(list(checkpoints), data, formats, item_map,
                                                          allow_other_data=allow_other_data)
    elif data is not None:
        loaded, dataset = [], load_prepared(data)
    else:
        raise InputError("give {data} (a prepared synthetic world) or {checkpoint}", "data", "checkpoint")
    ks = check_cutoffs(ks, dataset.n_items)
    config = dataclasses.replace(config, n_items=dataset.n_items)
    for path, checkpoint in zip(checkpoints, loaded):
        check_family(config, checkpoint, path)
    contexts = (truth_contexts(dataset, split, max_contexts, seed) if teacher is None
                else teacher_contexts(teacher_checkpoint, dataset, split, max_contexts, seed, device))
    softmax = None
    if config.head == "mos":  # a mixture's bound is never looser than the softmax's it contains (see fit_head)
        softmax = fit_head(dataclasses.replace(config, head="softmax", n_experts=1), contexts, restarts=1, seed=seed,
                           steps=steps)
    fit = fit_head(config, contexts, restarts=restarts, seed=seed, steps=steps, softmax=softmax)
    fitted = LogProbMatrix(fit.head, fit.states, name="fitted head")
    fitted_dense = fitted.dense()  # once: its KL, expected metrics and (without a factorisation) its rank
    label = "best-fit " + model_label(config)
    reference = "oracle" if teacher is None else "teacher"
    rows = [{"model": reference, "kind": reference, **_measures(contexts.log_truth, contexts.log_truth, contexts.weights,
                                                              ks, numerical_rank(contexts.log_truth))},
            {"model": label, "kind": "best fit", **describe(config), **_measures(contexts.log_truth, fitted_dense, contexts.weights, ks,
                                                          numerical_rank(fitted if fitted.has_factors else fitted_dense))}]
    labels = unique_labels([c["model_config"] for c in loaded], list(checkpoints))
    for path, checkpoint, name in zip(checkpoints, loaded, labels):
        row = _checkpoint_row(path, checkpoint, name, dataset, split, contexts, ks, seed, device)
        best_kl = rows[1]["kl"]  # the fitted head's KL as every row's is measured (the fit's own differs in the last bits)
        row["capacity_gap"], row["residual_gap"] = best_kl, row["kl"] - best_kl
        rows.append(row)
    world = dataset.meta.get("source", {}).get("config", {})
    summary = {"library_version": library_version(), "threads": torch.get_num_threads(), "data": str(dataset.path),
               "teacher": None if teacher is None else str(teacher),
               "split": split, "seed": seed, "n_contexts": int(len(contexts.sessions)),
               "n_distinct_contexts": int(len(contexts.previous)), "n_items": dataset.n_items, "ks": list(ks),
               "world": {k: world.get(k) for k in ("low_rank", "sparse_weight", "factor_scale", "n_successors")},
               "fit": {**describe(config), "item_bias": config.item_bias, "restarts": restarts, "steps": steps, "optimizer": "adam",
                       "restart_kls": fit.restart_kls, "seconds": round(fit.seconds, 3), "kl_is": UPPER_BOUND,
                       "softmax_start": None if softmax is None else {"kl": softmax.kl,
                                                                      "seconds": round(softmax.seconds, 3)}},
               "rows": rows}
    return summary


def tidy(summary: dict) -> pd.DataFrame:
    """capacity.csv: one row per model × measure."""
    measures = ["kl", "rank", "capacity_gap", "residual_gap"] + [f"expected_{m}@{k}" for m in ("recall", "mrr")
                                                                  for k in summary["ks"]]
    return pd.DataFrame([{"model": r["model"], "kind": r["kind"], "measure": m, "value": r[m]}
                         for r in summary["rows"] for m in measures if m in r])


def write_outputs(out: Path, summary: dict) -> None:
    from . import plots  # matplotlib only when a picture is asked for

    write_files(out, {"capacity.json": lambda f: f.write_text(json.dumps(summary, indent=2) + "\n"),
                      "capacity.csv": lambda f: tidy(summary).to_csv(f, index=False),
                      "capacity.png": lambda f: plots.save(plots.plot_capacity(summary["rows"]).figure, f)})


def sweep_rows(summaries: list[dict], k: int = 20) -> list[dict]:
    """One row per capacity summary (a head × d × K): the fit's KL and expected Recall@k, the trained
    models' (one per seed) mean and spread, and the oracle's expected Recall@k; what the study's figure draws."""
    rows = []
    for summary in summaries:
        fit, oracle = summary["rows"][1], summary["rows"][0]
        trained = [r for r in summary["rows"] if r["kind"] == "trained"]
        kls = np.array([r["kl"] for r in trained], dtype=np.float64)
        recalls = np.array([r[f"expected_recall@{k}"] for r in trained], dtype=np.float64)
        rows.append({**{key: fit[key] for key in IDENTITY},
                     "fit_kl": fit["kl"], f"fit_expected_recall@{k}": fit[f"expected_recall@{k}"],
                     f"oracle_expected_recall@{k}": oracle[f"expected_recall@{k}"], "n_trained": len(trained),
                     "trained_kl_mean": float(kls.mean()) if len(kls) else None,
                     "trained_kl_min": float(kls.min()) if len(kls) else None,
                     "trained_kl_max": float(kls.max()) if len(kls) else None,
                     f"trained_expected_recall@{k}_mean": float(recalls.mean()) if len(recalls) else None,
                     "residual_gap_mean": float(kls.mean() - fit["kl"]) if len(kls) else None,
                     "fit_restarts": summary["fit"]["restarts"], "fit_steps": summary["fit"]["steps"]})
    return rows


def write_sweep(out: Path, summaries: list[dict], k: int = 20) -> None:
    """A sweep of capacity fits (one summary per head × d × K): capacity.json (every summary) and
    capacity_sweep.csv (:func:`sweep_rows`)."""
    write_files(out, {"capacity.json": lambda f: f.write_text(json.dumps({"fits": summaries}, indent=2) + "\n"),
                      "capacity_sweep.csv": lambda f: pd.DataFrame(sweep_rows(summaries, k)).to_csv(f, index=False)})

