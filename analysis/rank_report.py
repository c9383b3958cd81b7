"""The rank report behind ``python -m analysis.rank`` (whose docstring gives the method and examples).

:func:`analyse` builds the float64 log-prob matrix of each checkpoint on the same held-out
contexts (and the truth's, on the synthetic world), gets its singular values from
:mod:`analysis.engines` and summarises them (:func:`rank_report`, :func:`summarize`);
:func:`write_outputs` writes rank.json, spectrum.csv and spectrum.png.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from softmax_bottleneck.checkpoint import load_checkpoints_on_one_dataset, model_from_checkpoint
from softmax_bottleneck.foreign.adapter import foreign_summary, require_every_item
from softmax_bottleneck.config import describe
from softmax_bottleneck.errors import InputError
from softmax_bottleneck.heads import softmax_rank_cap
from softmax_bottleneck.model import unique_labels
from softmax_bottleneck.provenance import library_version
from softmax_bottleneck.synthetic import SyntheticWorld

from .engines import as_source, compute_spectra
from .logprobs import LogProbMatrix, collect_contexts, distinct_prefixes, sample_contexts
from .outputs import write_files
from .sharded import shared
from .spectrum import Spectrum, count_above, rank_threshold

SWEEP = tuple(10.0 ** -k for k in range(1, 15))  # relative thresholds 1e-1 … 1e-14


def effective_rank(values: np.ndarray) -> float:
    """Roy & Vetterli (2007): exp of the entropy of the normalised singular values.

    >>> round(effective_rank(np.array([1.0, 1.0, 1.0, 0.0])), 12), effective_rank(np.array([5.0, 0.0]))
    (3.0, 1.0)
    """
    positive = values[values > 0]
    weights = positive / positive.sum() if len(positive) else positive
    return float(np.exp(-(weights * np.log(weights)).sum())) if len(weights) else 0.0


def abundance(matrix) -> dict:
    """How many directions a matrix spreads over: Information Abundance ‖σ‖₁ / ‖σ‖∞ (Guo et al., ICML 2024, "On
    the Embedding Collapse When Scaling up Recommendation Models") and the effective rank, against its width.

    >>> abundance(np.diag([4.0, 2.0, 2.0]))["information_abundance"]
    2.0
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    values = np.linalg.svd(matrix, compute_uv=False)
    return {"information_abundance": float(values.sum() / values[0]) if len(values) and values[0] > 0 else 0.0,
            "effective_rank": effective_rank(values), "width": int(min(matrix.shape))}


def embedding_report(head, hidden: np.ndarray) -> dict:
    """Collapse, told apart from the cap: the abundance of the item output matrix W and of the contexts' hidden
    states (and, for a mixture, of each expert's projection Q_k and states tanh(Q_k h)). A softmax whose W spans
    few directions is limited by what training made of it, not by the d+2 cap."""
    report = {"item_matrix": abundance(head.item_weight.detach().double().cpu().numpy()),
              "hidden_states": abundance(hidden)}
    mixture = head.mixture_states(torch.from_numpy(np.asarray(hidden)).to(head.item_weight))
    if mixture is not None:
        d = head.hidden_dim
        projection = head.projection.weight.detach().double().cpu().numpy()
        states = mixture[1].detach().double().cpu().numpy()  # (N, K, d)
        report["experts"] = [{"projection": abundance(projection[k * d:(k + 1) * d]),
                              "states": abundance(states[:, k])} for k in range(states.shape[1])]
    return report


def summarize(spectrum: Spectrum, cap: int | None, reference_cap: int | None, tol=None, rtol=None) -> dict:
    """Rank and the numbers around it for one spectrum."""
    values = spectrum.values
    threshold = rank_threshold(values, spectrum.shape, tol, rtol)
    energy = values ** 2
    beyond = reference_cap if cap is None else cap
    return {
        "rank": count_above(values, threshold),
        "threshold": threshold,
        "sigma_max": float(values[0]) if len(values) else 0.0,
        "sweep": {f"{r:.0e}": count_above(values, values[0] * r) for r in SWEEP} if len(values) else {},
        "effective_rank": effective_rank(values),
        "stable_rank": float(energy.sum() / energy[0]) if len(values) and energy[0] > 0 else 0.0,
        "energy_beyond_cap": float(energy[beyond:].sum() / energy.sum()) if beyond and energy.sum() > 0 else None,
        "engine": spectrum.engine,
        "refined_values": spectrum.refined,
    }


def context_steps(n_contexts: int) -> list[int]:
    """64, 128, … below `n_contexts`, then `n_contexts` itself."""
    steps, n = [], 64
    while n < n_contexts:
        steps.append(n)
        n *= 2
    return steps + [n_contexts]


def rank_report(matrix, *, cap: int | None = None, reference_cap: int | None = None, engine: str = "auto",
                tol: float | None = None, rtol: float | None = None, block_size: int = 2048,
                timings: dict | None = None) -> tuple[dict, dict]:
    """(report, spectra): the summary of the full and the row-centred matrix, and rank as N grows.

    `timings` (if given) receives the seconds per step; they stay out of the report, which is
    reproducible to the byte."""
    source = shared(as_source(matrix))  # under torchrun, every rank computes a share of each block
    n_rows, n_cols = source.shape
    steps = context_steps(n_rows)
    spectra = compute_spectra(source, steps, engine, block_size, timings)
    full, centred = spectra[(False, n_rows)], spectra[(True, n_rows)]
    report = {"n_contexts": n_rows, "n_items": n_cols, "rank_cap": cap,
              **summarize(full, cap, reference_cap, tol, rtol),
              "centred": summarize(centred, cap, reference_cap, tol, rtol),
              "rank_vs_n": [{"n": n, "rank": summarize(spectra[(False, n)], cap, reference_cap, tol, rtol)["rank"],
                             "centred_rank": summarize(spectra[(True, n)], cap, reference_cap, tol, rtol)["rank"]}
                            for n in steps]}
    return report, {"model": full.values, "centred": centred.values}


# ----------------------------------------------------------------------------------------------- CLI

def _reference_cap(config: dict) -> int:
    """What a softmax of the model's size would be capped at: where "energy beyond the cap" is measured."""
    return softmax_rank_cap(config["hidden_dim"], config["item_bias"])


def analyse(checkpoint_paths: list[Path], *, data: Path | None, split: str, max_contexts: int | None, seed: int,
            engine: str, tol: float | None, rtol: float | None, block_size: int, device, formats=None,
            item_map: Path | None = None, allow_other_data: bool = False, expressive: dict | None = None,
            expressive_dims: tuple[int, ...] | None = None) -> tuple[dict, list]:
    """Rank reports for several checkpoints on the same contexts (and the truth, on the synthetic world).

    `expressive`: keyword arguments of :func:`analysis.expressive.expressive_sweep` (its "ranks" among them):
    each model's expressive rank on the same contexts, in its report's "expressive" (only the models of
    hidden size in `expressive_dims`, when given)."""
    checkpoints, dataset = load_checkpoints_on_one_dataset(checkpoint_paths, data, formats, item_map,
                                                          allow_other_data=allow_other_data)
    held_out = dataset.split(split)
    models, spectra, key = [], [], None
    labels = unique_labels([c["model_config"] for c in checkpoints], checkpoint_paths)
    for checkpoint in checkpoints:
        require_every_item(checkpoint, "the rank report")
    for path, checkpoint, label in zip(checkpoint_paths, checkpoints, labels):
        model = model_from_checkpoint(checkpoint, device)
        contexts = collect_contexts(model, held_out, device=device)
        default_n = None if max_contexts is None and len(contexts) <= 4096 else (max_contexts or 4096)
        contexts = sample_contexts(contexts, default_n, seed)
        if key is not None and not np.array_equal(key, contexts.key()):
            raise InputError(f"{path}: its contexts differ from the first checkpoint's")
        key = contexts.key()
        config = checkpoint["model_config"]
        # under torchrun, every rank computes a share of each block (of the spectra and of the expressive sweep)
        matrix = shared(LogProbMatrix(model.head, contexts.hidden, name=f"{config['head']} head of {path}",
                                      device=device))
        report, values = rank_report(matrix, cap=model.head.rank_cap, reference_cap=_reference_cap(config),
                                     engine=engine, tol=tol, rtol=rtol, block_size=block_size)
        models.append({"label": label, "checkpoint": str(path), **describe(config),
                       "item_bias": config["item_bias"], **report,
                       "embedding": None if checkpoint.get("foreign") else embedding_report(model.head, contexts.hidden)})
        if expressive is not None and (expressive_dims is None or config["hidden_dim"] in expressive_dims):
            from .expressive import expressive_sweep

            models[-1]["expressive"] = expressive_sweep(matrix.dense(), **expressive)
        if checkpoint.get("foreign"):
            models[-1]["foreign"] = foreign_summary(checkpoint, held_out)
        spectra.append((label, values, model.head.rank_cap))
    from softmax_bottleneck import distributed

    result = {"library_version": library_version(), "threads": torch.get_num_threads(),
              "world_size": distributed.world_size(), "split": split, "seed": seed,
              "n_contexts": len(key),
              # the prefixes that differ: no rank on these contexts can exceed it (short sessions repeat prefixes)
              "n_distinct_contexts": distinct_prefixes(contexts, held_out),
              "n_items": dataset.n_items,
              "data": str(dataset.path), "models": models, "truth": None}
    if dataset.world is not None:
        world = SyntheticWorld.from_arrays(dataset.world)
        catalogue = dataset.item_ids.astype(np.int64)
        truth = world.log_probs(catalogue[contexts.previous_items], items=catalogue)  # (N, n_items)
        report, values = rank_report(truth, engine="auto" if engine == "factored" else engine, tol=tol, rtol=rtol,
                                     reference_cap=_reference_cap(checkpoints[0]["model_config"]))
        result["truth"] = {"label": "truth", **report}
        spectra.append(("truth", values, None))
    return result, spectra


def write_outputs(out: Path, result: dict, spectra: list) -> None:
    from . import plots  # matplotlib only when a picture is asked for

    swept = [m for m in result["models"] if m.get("expressive")]
    rows = [pd.DataFrame({"matrix": label, "centred": variant == "centred", "index": np.arange(1, len(v) + 1),
                          "singular_value": v})
            for label, by_variant, _ in spectra for variant, v in by_variant.items()]
    write_files(out, {
        "rank.json": lambda f: f.write_text(json.dumps(result, indent=2) + "\n"),
        "spectrum.csv": lambda f: pd.concat(rows, ignore_index=True).to_csv(f, index=False),
        "spectrum.png": lambda f: plots.save(plots.plot_spectra(
            [(label, by_variant["model"], cap) for label, by_variant, cap in spectra]).figure, f),
        **({"expressive.csv": lambda f: expressive_table(result).to_csv(f, index=False),
            "expressive.png": lambda f: plots.save(plots.plot_expressive(
                swept, eps=swept[0]["expressive"]["eps"], bar=swept[0]["expressive"]["min_overlap"]), f)}
           if swept else {}),
    })


def expressive_table(result: dict) -> pd.DataFrame:
    """expressive.csv: model × r, with the SVD start's and the fit's KL (upper bounds) and top-k overlap."""
    return pd.DataFrame([{"model": m["label"], "head": m["head"], "variant": m["variant"], "hidden_dim": m["hidden_dim"],
                          "n_experts": m["n_experts"], "expressive_rank": m["expressive"]["expressive_rank"], **row}
                         for m in result["models"] if m.get("expressive") for row in m["expressive"]["sweep"]])
