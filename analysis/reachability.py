"""The reachability audit behind ``python -m analysis.reach`` (whose docstring gives the method,
including why the softmax certificate carries over to a mixture of softmaxes).

:func:`audit` scans every checkpoint's top k on the same held-out contexts (:func:`scan_top_k`)
and decides each item's top-1 reachability in the box of GRU outputs (:func:`top1_verdicts`, over
:mod:`analysis.argmax`); :func:`write_outputs` writes reach.json, reach.csv and reach.png.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from softmax_bottleneck.checkpoint import load_checkpoints_on_one_dataset, model_from_checkpoint
from softmax_bottleneck.foreign.adapter import foreign_summary, require_box_states, require_every_item
from softmax_bottleneck.cli import DEFAULT_CUTOFFS, check_cutoffs
from softmax_bottleneck.config import describe
from softmax_bottleneck.errors import InputError
from softmax_bottleneck.heads import MixtureOfSoftmaxesHead, SigsoftmaxHead, SoftmaxHead
from softmax_bottleneck.model import unique_labels
from softmax_bottleneck.provenance import library_version

from .argmax import box_states, certify_top1, tie_tolerance
from .logprobs import LogProbMatrix, collect_contexts, sample_contexts
from .outputs import write_files

DEFAULT_KS = DEFAULT_CUTOFFS


def scan_top_k(matrix: LogProbMatrix, ks, *, block: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass over the rows of a log-prob matrix: (hits (len(ks), n_items), winner per row, its lead).

    hits[a, i] counts the rows that have item i in their top ks[a], ties conservative: i is in the top
    k iff fewer than k+1 items score ≥ its score, i.e. its score beats the (k+1)-th largest.
    """
    n_rows, n_items = matrix.shape
    hits = np.zeros((len(ks), n_items), dtype=np.int64)
    winners = np.empty(n_rows, dtype=np.int64)
    leads = np.empty(n_rows)
    for start in range(0, n_rows, block):
        rows = matrix.rows(start, min(start + block, n_rows))
        order = torch.topk(torch.from_numpy(rows), min(max(ks) + 1, n_items), dim=1).values.numpy()
        for index, k in enumerate(ks):
            if k >= n_items:
                hits[index] += len(rows)
                continue
            hits[index] += (rows > order[:, k:k + 1]).sum(axis=0)
        top = np.argmax(rows, axis=1)
        winners[start:start + len(rows)] = top
        leads[start:start + len(rows)] = order[:, 0] - order[:, 1] if n_items > 1 else np.inf
    return hits, winners, leads


# --------------------------------------------------------------------------------------------- audit

def top1_verdicts(head, contexts, *, n_random: int, seed: int, device="cpu", progress: bool = False,
                  context_scan: tuple[np.ndarray, np.ndarray] | None = None):
    """(status, method, margin, Top1Reach) per item of a head, with `contexts` the held-out states.

    `context_scan`: (winner, lead) per context from a :func:`scan_top_k` of the contexts' matrix already made,
    so that a mixture's matrix is not built and scanned a second time.

    Softmax and sigsoftmax: :func:`analysis.argmax.certify_top1` (the same certificate: see below). Mixture
    of logits: witnesses only (status reachable or undecided). A mixture of softmaxes: the shared-W certificate for
    unreachability, and for reachability only witnesses of the whole mixture (a held-out context
    or a random head input in the box), since an item no expert ranks first may still win the mix.
    """
    weight = head.item_weight.detach().double().cpu().numpy()
    bias = None if head.bias is None else head.bias.detach().double().cpu().numpy()
    # Sigsoftmax ranks items by f(z) = z + log σ(z), z = h·Wᵀ + b; f is strictly increasing, so at
    # every h its top item is the softmax's with the same W and b, and so is every verdict.
    if isinstance(head, (SoftmaxHead, SigsoftmaxHead)):  # one softmax over h·Wᵀ + b, or a monotone map of it
        reach = certify_top1(weight, bias, known=contexts.hidden, n_random=n_random, seed=seed, progress=progress)
        return reach.status, reach.method, reach.margin, reach
    if isinstance(head, MixtureOfSoftmaxesHead):  # the shared-W certificate carries over (module docstring)
        reach = certify_top1(weight, bias, n_random=n_random, seed=seed, progress=progress)
        certified = reach.status == "unreachable"
    else:  # Mixture of Logits: its gates depend on the item, and no sound certificate is known: witnesses only
        reach, certified = None, np.zeros(head.n_items, dtype=bool)
    status = np.where(certified, "unreachable", "undecided").astype(object)
    method = np.where(certified, reach.method if reach else "", "").astype(object)
    margin = np.where(certified, reach.margin if reach else np.nan, np.nan)
    tol = tie_tolerance(weight, bias)
    for how, states in (("context", contexts.hidden), ("random", box_states(n_random, head.hidden_dim, seed))):
        if len(states) == 0:
            continue
        if how == "context" and context_scan is not None:
            top, lead = context_scan
        else:
            _, top, lead = scan_top_k(LogProbMatrix(head, states, device=device), (1,))
        for row in np.flatnonzero(lead > tol):
            item = top[row]
            if status[item] == "unreachable":
                raise AssertionError(f"item {item} has both a certificate and a mixture witness")
            if status[item] != "reachable":
                status[item], method[item], margin[item] = "reachable", how, lead[row]
    return status, method, margin, reach


def _support_ranks(dataset) -> tuple[np.ndarray, np.ndarray]:
    """(rank of each item by training support, 1 = most frequent, ties share the better rank; top-decile mask)."""
    rank = pd.Series(dataset.support).rank(method="min", ascending=False).to_numpy().astype(np.int64)
    return rank, rank <= max(1, int(np.ceil(0.1 * dataset.n_items)))


def _item_table(label, dataset, support_rank, status, method, margin, hits, ks) -> pd.DataFrame:
    return pd.DataFrame({"model": label, "item": dataset.item_ids, "item_index": np.arange(dataset.n_items),
                         "support": dataset.support, "support_rank": support_rank, "status": status,
                         "reachable": pd.array([{"reachable": True, "unreachable": False}.get(s) for s in status],
                                               dtype="boolean"),
                         "method": method, "margin": margin, **{f"hits@{k}": hits[i] for i, k in enumerate(ks)}})


def _model_summary(label, path, config, frame, frequent, hits, ks, reach, scan_seconds) -> dict:
    """reach.json's entry for one model: verdict counts, the most frequent unreachable items, coverage."""
    unreachable = frame[frame["status"] == "unreachable"]
    by_frequency = unreachable.sort_values(["support_rank", "item_index"])
    return {
        "label": label, "checkpoint": str(path), "model_config": config, **describe(config),
        "item_bias": config["item_bias"],
        "n_items": len(frame), **{k: int(v) for k, v in frame["status"].value_counts().items()},
        "methods": {f"{s}:{m}" if m else s: int(n) for (s, m), n in frame.groupby(["status", "method"]).size().items()},
        "unreachable_items": int(len(unreachable)),
        # a held-out context is a state the trained GRU produced; a box corner, a random or searched state or an
        # LP point is a state of the box that no session may ever reach: "reachable" then says only "not excluded"
        "reachable_by_a_held_out_context": int(((frame["status"] == "reachable") & (frame["method"] == "context")).sum()),
        "reachable_by_a_box_state_only": int(((frame["status"] == "reachable") & (frame["method"] != "context")).sum()),
        "unreachable_in_top_decile_support": int(frequent[unreachable["item_index"]].sum()),
        "unreachable_support_median": float(unreachable["support"].median()) if len(unreachable) else None,
        "most_frequent_unreachable": [{"item": str(r.item), "support": int(r.support), "support_rank": int(r.support_rank)}
                                      for r in by_frequency.head(10).itertuples()],
        "coverage": {str(k): float((hits[i] > 0).mean()) for i, k in enumerate(ks)},
        "never_in_top_k_among_top_decile": {str(k): int(((hits[i] == 0) & frequent).sum()) for i, k in enumerate(ks)},
        "certificate": None if reach is None else "shared W" if config["head"] == "mos" else "softmax",
        "lp_items": reach and reach.n_lp, "lp_solves": reach and reach.lp_rounds,
        "certificate_seconds": reach and round(reach.seconds, 3),
        "scan_seconds": round(scan_seconds, 3),
    }


def audit(paths: list[Path], *, data=None, split: str = "test", ks=DEFAULT_KS, max_contexts: int | None = None,
          n_random: int = 4096, seed: int = 0, device="cpu", progress: bool = False, formats=None,
          item_map: Path | None = None, allow_other_data: bool = False) -> tuple[pd.DataFrame, dict]:
    """The per-item table (one row per model and item) and the summary of the module docstring."""
    checkpoints, dataset = load_checkpoints_on_one_dataset(paths, data, formats, item_map,
                                                          allow_other_data=allow_other_data)
    held_out = dataset.split(split)
    if held_out.n_transitions == 0:
        raise InputError(f"{dataset.path}: the {split} split has no events")
    ks = tuple(check_cutoffs(list(ks), dataset.n_items))
    support_rank, frequent = _support_ranks(dataset)
    labels = unique_labels([c["model_config"] for c in checkpoints], paths)
    for checkpoint in checkpoints:
        require_every_item(checkpoint, "the reachability audit")
        require_box_states(checkpoint)
    frames, models = [], []
    for path, checkpoint, label in zip(paths, checkpoints, labels):
        config = checkpoint["model_config"]
        model = model_from_checkpoint(checkpoint, device)
        contexts = sample_contexts(collect_contexts(model, held_out, device=device), max_contexts, seed)
        began = time.perf_counter()
        matrix = LogProbMatrix(model.head, contexts.hidden, name=f"{config['head']} head of {path}", device=device)
        hits, winners, leads = scan_top_k(matrix, ks)
        scan_seconds = time.perf_counter() - began
        status, method, margin, reach = top1_verdicts(model.head, contexts, n_random=n_random, seed=seed,
                                                      device=device, progress=progress,
                                                      context_scan=(winners, leads))
        frames.append(_item_table(label, dataset, support_rank, status, method, margin, hits, ks))
        models.append(_model_summary(label, path, config, frames[-1], frequent, hits, ks, reach, scan_seconds))
        if checkpoint.get("foreign"):
            models[-1]["foreign"] = foreign_summary(checkpoint, held_out)
    table = pd.concat(frames, ignore_index=True)
    summary = {"library_version": library_version(), "threads": torch.get_num_threads(), "data": str(dataset.path),
               "split": split, "n_contexts": len(contexts), "n_items": dataset.n_items,
               "ks": list(ks), "seed": seed, "n_random": n_random, "top_decile_support_items": int(frequent.sum()),
               "models": models, "differences": _differences(table, ks)}
    return table, summary


def _differences(table: pd.DataFrame, ks) -> list[dict]:
    """For each pair of models: items in some context's top k under one and in none under the other."""
    labels = list(dict.fromkeys(table["model"]))
    out = []
    for a_index, a in enumerate(labels):
        for b in labels[a_index + 1:]:
            left = table[table["model"] == a].set_index("item_index")
            right = table[table["model"] == b].set_index("item_index")
            for k in ks:
                hit_a, hit_b = left[f"hits@{k}"] > 0, right[f"hits@{k}"] > 0
                out.append({"a": a, "b": b, "k": k, "only_a": int((hit_a & ~hit_b).sum()),
                            "only_b": int((hit_b & ~hit_a).sum()),
                            "only_a_items": [str(x) for x in left.index[hit_a & ~hit_b][:20].map(
                                lambda i: left.at[i, "item"])],
                            "only_b_items": [str(x) for x in right.index[hit_b & ~hit_a][:20].map(
                                lambda i: right.at[i, "item"])]})
    return out


def write_outputs(out: Path, table: pd.DataFrame, summary: dict) -> None:
    """reach.csv, reach.json and reach.png in `out` (each written atomically)."""
    from . import plots  # matplotlib only when pictures are asked for

    write_files(out, {
        "reach.csv": lambda f: table.to_csv(f, index=False),
        "reach.json": lambda f: f.write_text(json.dumps(summary, indent=2) + "\n"),
        "reach.png": lambda f: plots.save(plots.reach_figure(table, k=max(summary["ks"]),
                                                             n_contexts=summary["n_contexts"]), f),
    })


# ----------------------------------------------------------------------------------------------- CLI
