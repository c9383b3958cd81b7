"""Reachability audit: which items can a head never recommend?

A softmax over ``h·Wᵀ + b`` ranks item i first at h iff ``(w_i − w_j)·h + b_i − b_j > 0`` for every
other item j. The head's input is a GRU output, which lies in the box (−1, 1)^d (every GRU state
is a convex mix of tanh values, from a zero start), so item i can be ranked first by *some*
context only if the linear program

    maximise t  subject to  (w_i − w_j)·h + (b_i − b_j) ≥ t  for all j ≠ i,  h ∈ [−1, 1]^d

has t* > 0 (Demeter et al. 2020 call such items unargmaxable; Grivas et al. 2022 used an LP).
The closed box is used: a strict lead at a point of its boundary persists at nearby interior
points, so witnesses on the boundary (corners) are as good as interior ones.
Each item gets one of these verdicts, each checked independently of the LP solver:

- ``reachable``: a witness h in the box where the item's logit beats every other item's, verified
  in float64 on the whole catalogue. Found, cheapest first, by a real held-out ``context``, a box
  ``corner`` aimed at the item, ``random`` points of the box, or the ``lp``.
- ``unreachable`` by a single rival (``dominated``): ``b_j − b_i > ‖w_j − w_i‖₁`` for some item j.
- ``unreachable`` (``lp``): a dual certificate from the LP: weights λ ≥ 0, Σλ = 1 over some items j with
  ``min over the box of Σ λ_j (l_j(h) − l_i(h)) = Σ λ_j (b_j − b_i) − ‖Σ λ_j (w_j − w_i)‖₁ > 0``,
  so at every h some item beats i. The bound is computed in closed form, not taken from the solver.
- ``tie``: the LP's optimum is t* ≈ 0 (within 1e-9 of the largest logit): at best tied for first
  (duplicate rows; or, without an item bias, any item inside the hull: all items tie at h = 0).
- ``undecided``: no verdict (MoS items without a certificate or a mixture witness; solver trouble).

"Reachable" means reachable somewhere in the box; whether the trained GRU ever produces such a
state is what the empirical audit measures: for every held-out context, which items are in the
top k (``--k``, default 1 5 10 20; ties conservative, an item tied at the boundary is out).

Mixture of softmaxes. A mixture can rank first an item that no expert ranks first (see the
tests). But the certificate above does carry over, when the experts share W and b and their
states lie in the box (``tanh(Q_k h)`` does): with λ from the certificate, Jensen's inequality
gives ``exp l_i(h) ≤ e^{−gap} Σ λ_j exp l_j(h)`` at every h in the box, so every expert has
``p_k(i) < Σ λ_j p_k(j)`` and so has the mixture: ``p(i) < Σ λ_j p(j) ≤ max_j p(j)``. MoS items are
therefore ``unreachable`` by the same LP over the shared W, ``reachable`` only by a witness of the
whole mixture (a held-out context or a random head input in the box), and ``undecided`` otherwise.

Example::

    python -m analysis.reach --checkpoint runs/softmax.pt --checkpoint runs/mos.pt --out runs/reach
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linprog
from scipy.spatial.distance import cdist

from softmax_bottleneck import __version__
from softmax_bottleneck.checkpoint import load_checkpoints_on_one_dataset, model_from_checkpoint
from softmax_bottleneck.cli import (DEFAULT_CUTOFFS, ArgumentParser, InputError, add_cutoffs_argument,
                                    add_heldout_arguments, check_cutoffs, check_output_dir, resolve_device, run_main,
                                    set_threads)
from softmax_bottleneck.model import model_label

from .logprobs import LogProbMatrix, collect_contexts, sample_contexts
from .outputs import write_files

DEFAULT_KS = DEFAULT_CUTOFFS
STATUSES = ("reachable", "unreachable", "tie", "undecided")
RELATIVE_TOL = 1e-9  # gaps below this times the largest |logit| possible in the box are ties


@dataclasses.dataclass
class Top1Reach:
    """Per-item top-1 verdicts of a softmax over ``h·Wᵀ + b`` with h in [−1, 1]^d."""

    status: np.ndarray  # (n,) one of STATUSES
    method: np.ndarray  # (n,) how it was decided: context | corner | random | dominated | lp
    margin: np.ndarray  # (n,) > 0: the witness's lead; < 0: minus the certified gap; nan: none
    witness: np.ndarray  # (n, d) a state that ranks the item first (nan rows where none)
    n_lp: int  # items that needed the LP
    lp_rounds: int  # LP solves in all (cutting-plane rounds)
    seconds: float

    def counts(self) -> dict:
        return {s: int((self.status == s).sum()) for s in STATUSES}

    def method_counts(self) -> dict:
        keys = zip(self.status, self.method)
        out: dict[str, int] = {}
        for status, method in keys:
            name = f"{status}:{method}" if method else status
            out[name] = out.get(name, 0) + 1
        return dict(sorted(out.items()))


def logit_scale(weight: np.ndarray, bias: np.ndarray) -> float:
    """The largest |logit| any h in the box can give: max_j ‖w_j‖₁ + |b_j|."""
    return float((np.abs(weight).sum(axis=1) + np.abs(bias)).max()) if len(weight) else 0.0


def box_states(n: int, d: int, seed: int) -> np.ndarray:
    """n seeded states of [−1, 1]^d: half uniform inside the box, half random corners."""
    rng = np.random.default_rng(seed)
    half = n // 2
    return np.concatenate([rng.uniform(-1.0, 1.0, (n - half, d)), rng.choice([-1.0, 1.0], (half, d))])


def strict_winners(points: np.ndarray, weight: np.ndarray, bias: np.ndarray, *, block: int = 2048
                   ) -> tuple[np.ndarray, np.ndarray]:
    """For each row h of `points`: the item with the largest logit and its lead over the runner-up (float64)."""
    winners = np.empty(len(points), dtype=np.int64)
    leads = np.empty(len(points))
    weight_t = np.ascontiguousarray(weight.T)
    for start in range(0, len(points), block):
        logits = points[start:start + block] @ weight_t
        logits += bias
        top = np.argmax(logits, axis=1)
        rows = np.arange(len(top))
        best = logits[rows, top]
        logits[rows, top] = -np.inf
        winners[start:start + block] = top
        leads[start:start + block] = best - logits.max(axis=1) if logits.shape[1] > 1 else np.inf
    return winners, leads


def certificate_gap(item: int, others: np.ndarray, weights: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> float:
    """min over h in the box of Σ λ_j (l_j(h) − l_i(h)), λ = weights normalised; > 0 certifies i unreachable."""
    lam = np.clip(weights, 0.0, None)
    if lam.sum() <= 0:
        return -np.inf
    lam = lam / lam.sum()
    direction = lam @ (weight[others] - weight[item])
    return float(lam @ (bias[others] - bias[item]) - np.abs(direction).sum())


def smoothed_search(items: np.ndarray, weight: np.ndarray, bias: np.ndarray, start: np.ndarray, *,
                    iterations: int = 80, tol: float, chunk: int = 1024, n_rivals: int = 128) -> list[tuple]:
    """Batched search, for each item i, of min over the box of F_i(h) = max_{j≠i} l_j(h) − l_i(h).

    F_i is convex, and its minimum is −t* of the LP. Projected steps on its log-sum-exp smoothing
    (temperature annealed) in float32, against the `n_rivals` items with the largest logits at the
    current state (refreshed every 10 steps from the whole catalogue); along the way, a state with
    F_i < 0 is a witness candidate and the smoothing's softmax weights λ over the rivals a dual
    candidate. Both are verified in float64 (the witness on the whole catalogue; a dual over some
    real items is a certificate as it stands). Returns per item ("reachable", lead, h),
    ("unreachable", −gap, None), or (None, nan, best state) for the LP to settle.
    """
    w32 = torch.from_numpy(weight).float()
    b32 = torch.from_numpy(bias).float()
    scale = float(w32.abs().sum(1).max() + b32.abs().max())
    n_rivals = min(n_rivals, len(weight) - 1)
    out = []
    for first in range(0, len(items), chunk):
        ids = torch.from_numpy(items[first:first + chunk])
        rows = torch.arange(len(ids))
        h = torch.from_numpy(start[first:first + chunk]).float()
        best_h, best_f = h.clone(), torch.full((len(ids),), float("inf"))
        dual_rivals = torch.zeros(len(ids), n_rivals, dtype=torch.long)  # the best dual candidate so far
        dual_lam = torch.zeros(len(ids), n_rivals)
        best_gap = torch.full((len(ids),), -float("inf"))
        for step in range(iterations):
            if step % 10 == 0:
                if step and bool(((best_f < -tol) | (best_gap > tol)).all()):
                    break
                full = h @ w32.T + b32
                full[rows, ids] = -float("inf")
                rivals = torch.topk(full, n_rivals, dim=1).indices  # (p, R)
                w_r, b_r = w32[rivals], b32[rivals]  # (p, R, d), (p, R)
            tau = scale * 0.05 * 0.9 ** step + 1e-6 * scale
            diff = torch.einsum("pd,prd->pr", h, w_r) + b_r - (h * w32[ids]).sum(1, keepdim=True) - b32[ids][:, None]
            f = diff.max(dim=1).values
            better = f < best_f
            best_f = torch.where(better, f, best_f)
            best_h[better] = h[better]
            lam = torch.softmax(diff / tau, dim=1)
            grad = torch.einsum("pr,prd->pd", lam, w_r) - w32[ids]
            gap = (lam * b_r).sum(1) - b32[ids] - grad.abs().sum(1)
            improved = gap > best_gap
            dual_rivals[improved], dual_lam[improved] = rivals[improved], lam[improved]
            best_gap = torch.where(improved, gap, best_gap)
            norm = grad.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)
            h = (h - (0.5 * 0.95 ** step) * grad / norm).clamp_(-1.0, 1.0)
        for row, item in enumerate(ids.tolist()):
            out.append(_verify_search(item, weight, bias, best_h[row].double().numpy(),
                                      (dual_rivals[row].numpy(), dual_lam[row].double().numpy()), tol))
    return out


def _verify_search(item, weight, bias, witness, dual, tol) -> tuple:
    """float64 checks of a search's best witness state and best dual candidate."""
    logits = weight @ witness + bias
    lead = logits[item]
    logits[item] = -np.inf
    if lead - logits.max() > tol:
        return "reachable", float(lead - logits.max()), witness
    if dual[1].sum() > 0:
        gap = certificate_gap(item, dual[0], dual[1], weight, bias)
        if gap > tol:
            return "unreachable", -gap, None
    return None, float("nan"), witness


def solve_top1_lp(item: int, weight: np.ndarray, bias: np.ndarray, start: np.ndarray, *, tol: float,
                  n_cut: int = 64, max_rounds: int = 200) -> tuple[str, float, np.ndarray | None, int]:
    """The LP of the module docstring by cutting planes: (status, margin, witness or None, rounds).

    It starts from the `n_cut` items with the largest logits at `start`, and adds the most violated
    constraints at the relaxed optimum until the optimum is verified on the whole catalogue (a
    witness) or the relaxation already has t* ≤ 0 (then its dual is a certificate for all items).
    """
    n_items, d = weight.shape
    if n_items == 1:
        return "reachable", np.inf, np.zeros(d), 0
    logits = weight @ start + bias
    logits[item] = -np.inf
    active = np.argsort(-logits)[:min(n_cut, n_items - 1)]  # the item itself (−inf) is last
    t_cap = 4.0 * logit_scale(weight, bias) + 1.0
    objective = np.zeros(d + 1)
    objective[-1] = -1.0
    bounds = [(-1.0, 1.0)] * d + [(None, t_cap)]
    for rounds in range(1, max_rounds + 1):
        a_ub = np.hstack([weight[active] - weight[item], np.ones((len(active), 1))])
        b_ub = bias[item] - bias[active]
        result = linprog(objective, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
        if result.status != 0:
            raise RuntimeError(f"LP for item {item} failed: {result.message}")
        h, t = result.x[:d], result.x[d]
        if t <= tol:  # the relaxation's optimum bounds the full LP's
            gap = certificate_gap(item, active, -result.ineqlin.marginals, weight, bias)
            if gap > tol:
                return "unreachable", -gap, None, rounds
        full = weight @ h + bias
        lead = full[item]
        full[item] = -np.inf
        if lead - full.max() > tol:
            return "reachable", float(lead - full.max()), h, rounds
        if t <= tol:  # t* ≈ 0: at best tied for first (e.g. every item ties at h = 0 without a bias)
            return ("tie" if t >= -tol else "undecided"), float(t), None, rounds
        violated = np.flatnonzero(full > lead - t + tol)
        violated = violated[np.argsort(-full[violated])[:n_cut]]
        violated = violated[~np.isin(violated, active)]
        if len(violated) == 0:
            return "undecided", float(lead - full.max()), None, rounds
        active = np.concatenate([active, violated])
    return "undecided", float("nan"), None, max_rounds


def certify_top1(weight, bias=None, *, known: np.ndarray | None = None, n_random: int = 4096,
                 seed: int = 0, refine_rounds: int = 2, n_rivals: int = 512, search_iterations: int = 80,
                 progress: bool = False) -> Top1Reach:
    """Top-1 reachability of every item of a softmax ``h·Wᵀ + b`` over h ∈ [−1, 1]^d.

    Cheapest first: `known` states (real contexts), a box corner aimed at each item (then pushed
    away from the item that beat it there, `refine_rounds` times), `n_random` random box states;
    then single-rival domination against the `n_rivals` items of largest bias; a batched smoothed
    search for witnesses and certificates (:func:`smoothed_search`); the LP for the rest.
    """
    began = time.perf_counter()
    weight = np.asarray(weight, dtype=np.float64)
    n_items, d = weight.shape
    bias = np.zeros(n_items) if bias is None else np.asarray(bias, dtype=np.float64)
    tol = RELATIVE_TOL * max(logit_scale(weight, bias), 1.0)
    status = np.full(n_items, "undecided", dtype=object)
    method = np.full(n_items, "", dtype=object)
    margin = np.full(n_items, np.nan)
    witness = np.full((n_items, d), np.nan)

    def record(points: np.ndarray, how: str, winners=None, leads=None) -> None:
        if winners is None:
            winners, leads = strict_winners(points, weight, bias)
        found = leads > tol
        for row in np.flatnonzero(found):
            item = winners[row]
            if status[item] != "reachable":
                status[item], method[item] = "reachable", how
                margin[item], witness[item] = leads[row], points[row]

    if known is not None and len(known):
        record(np.asarray(known, dtype=np.float64), "context")
    # a corner aimed at each item, then pushed away from whichever item beat it there
    corners = np.where(weight >= 0, 1.0, -1.0)
    winners, leads = strict_winners(corners, weight, bias)
    record(corners, "corner", winners, leads)
    for _ in range(refine_rounds):
        pending = np.flatnonzero(status != "reachable")
        if len(pending) == 0:
            break
        corners[pending] = np.where(weight[pending] - weight[winners[pending]] >= 0, 1.0, -1.0)
        winners[pending], leads[pending] = strict_winners(corners[pending], weight, bias)
        record(corners[pending], "corner", winners[pending], leads[pending])
    if n_random and (status != "reachable").any():
        record(box_states(n_random, d, seed), "random")

    # cheap certificates: one item j beats i everywhere in the box iff b_j − b_i > ‖w_j − w_i‖₁
    pending = np.flatnonzero(status != "reachable")
    if len(pending):
        rivals = np.argsort(-bias, kind="stable")[:max(n_rivals, 1)]
        for start in range(0, len(pending), 2048):
            chunk = pending[start:start + 2048]
            gaps = bias[rivals][None, :] - bias[chunk][:, None] - cdist(weight[chunk], weight[rivals], "cityblock")
            gaps[chunk[:, None] == rivals[None, :]] = -np.inf
            best = gaps.argmax(axis=1)
            gap = gaps[np.arange(len(chunk)), best]
            for item, value in zip(chunk[gap > tol], gap[gap > tol]):
                status[item], method[item], margin[item] = "unreachable", "dominated", -value

    pending = np.flatnonzero(status == "undecided")
    if len(pending) and search_iterations:
        found = smoothed_search(pending, weight, bias, corners[pending], iterations=search_iterations, tol=tol)
        for item, (verdict, lead, h) in zip(pending, found):
            if verdict is not None:
                status[item], method[item], margin[item] = verdict, "search", lead
                if h is not None:
                    witness[item] = h
            elif h is not None:
                corners[item] = h  # the LP starts from the search's best state

    pending = np.flatnonzero(status == "undecided")
    rounds = 0
    iterator = pending
    if progress and len(pending):
        from tqdm import tqdm

        iterator = tqdm(pending, desc="LP certificates", unit="item", file=sys.stderr)
    for item in iterator:
        verdict, lead, h, used = solve_top1_lp(int(item), weight, bias, corners[item], tol=tol)
        rounds += used
        status[item], method[item], margin[item] = verdict, "lp", lead
        if h is not None:
            witness[item] = h
    return Top1Reach(status, method, margin, witness, len(pending), rounds, time.perf_counter() - began)


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

def _label(config: dict, taken: set) -> str:
    label = model_label(config)
    while label in taken:
        label += "'"
    return label


def audit(paths: list[Path], *, data=None, split: str = "test", ks=DEFAULT_KS, max_contexts: int | None = None,
          n_random: int = 4096, seed: int = 0, device="cpu", progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """The per-item table (one row per model and item) and the summary of the module docstring."""
    checkpoints, dataset = load_checkpoints_on_one_dataset(paths, data)
    held_out = dataset.split(split)
    if held_out.n_transitions == 0:
        raise InputError(f"{dataset.path}: the {split} split has no events")
    ks = tuple(check_cutoffs(list(ks), dataset.n_items))
    support = dataset.support
    # 1 = the most frequent training item; ties share the better rank
    support_rank = pd.Series(support).rank(method="min", ascending=False).to_numpy().astype(np.int64)
    frequent = support_rank <= max(1, int(np.ceil(0.1 * dataset.n_items)))
    frames, models, taken = [], [], set()
    for path, checkpoint in zip(paths, checkpoints):
        config = checkpoint["model_config"]
        label = _label(config, taken)
        taken.add(label)
        model = model_from_checkpoint(checkpoint, device)
        contexts = sample_contexts(collect_contexts(model, held_out, device=device), max_contexts, seed)
        began = time.perf_counter()
        matrix = LogProbMatrix(model.head, contexts.hidden, name=f"{config['head']} head of {path}", device=device)
        hits, winners, leads = scan_top_k(matrix, ks)
        scan_seconds = time.perf_counter() - began
        head = model.head
        weight = head.item_weight.detach().double().cpu().numpy()
        bias = None if head.bias is None else head.bias.detach().double().cpu().numpy()
        tol = RELATIVE_TOL * max(logit_scale(weight, np.zeros(len(weight)) if bias is None else bias), 1.0)
        if config["head"] == "softmax":
            reach = certify_top1(weight, bias, known=contexts.hidden, n_random=n_random,
                                 seed=seed, progress=progress)
            status, method, margin = reach.status, reach.method, reach.margin
        else:  # the shared-W certificate for unreachability; mixture witnesses for reachability
            reach = certify_top1(weight, bias, n_random=n_random, seed=seed, progress=progress)
            status = np.where(reach.status == "unreachable", "unreachable", "undecided").astype(object)
            method = np.where(reach.status == "unreachable", reach.method, "").astype(object)
            margin = np.where(reach.status == "unreachable", reach.margin, np.nan)
            for how, states in (("context", contexts.hidden), ("random", box_states(n_random, head.hidden_dim, seed))):
                if len(states) == 0:
                    continue
                _, top, lead = scan_top_k(LogProbMatrix(head, states, device=device), (1,))
                for row in np.flatnonzero(lead > tol):
                    item = top[row]
                    if status[item] == "unreachable":
                        raise AssertionError(f"item {item} has both a certificate and a mixture witness")
                    if status[item] != "reachable":
                        status[item], method[item], margin[item] = "reachable", how, lead[row]
        frame = pd.DataFrame({"model": label, "item": dataset.item_ids, "item_index": np.arange(dataset.n_items),
                              "support": support, "support_rank": support_rank, "status": status,
                              "reachable": pd.array([{"reachable": True, "unreachable": False}.get(s) for s in status],
                                                    dtype="boolean"),
                              "method": method, "margin": margin,
                              **{f"hits@{k}": hits[i] for i, k in enumerate(ks)}})
        frames.append(frame)
        unreachable = frame[frame["status"] == "unreachable"]
        by_frequency = unreachable.sort_values(["support_rank", "item_index"])
        models.append({
            "label": label, "checkpoint": str(path), "model_config": config, "head": config["head"],
            "hidden_dim": config["hidden_dim"],
            "n_experts": config["n_experts"], "item_bias": config["item_bias"], "n_items": dataset.n_items,
            **{k: int(v) for k, v in frame["status"].value_counts().items()},
            "methods": {f"{s}:{m}" if m else s: int(n) for (s, m), n in frame.groupby(["status", "method"]).size().items()},
            "unreachable_items": int(len(unreachable)),
            "unreachable_in_top_decile_support": int(frequent[unreachable["item_index"]].sum()),
            "unreachable_support_median": float(unreachable["support"].median()) if len(unreachable) else None,
            "most_frequent_unreachable": [{"item": str(r.item), "support": int(r.support), "support_rank": int(r.support_rank)}
                                          for r in by_frequency.head(10).itertuples()],
            "coverage": {str(k): float((hits[i] > 0).mean()) for i, k in enumerate(ks)},
            "never_in_top_k_among_top_decile": {str(k): int(((hits[i] == 0) & frequent).sum()) for i, k in enumerate(ks)},
            "lp_items": reach.n_lp, "lp_solves": reach.lp_rounds, "certificate_seconds": round(reach.seconds, 3),
            "scan_seconds": round(scan_seconds, 3),
        })
    table = pd.concat(frames, ignore_index=True)
    summary = {"library_version": __version__, "threads": torch.get_num_threads(), "data": str(dataset.path),
               "split": split,
               "n_contexts": len(contexts), "n_items": dataset.n_items,
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

def _print(summary: dict) -> None:
    ks = summary["ks"]
    print(f"{summary['n_items']:,} items, {summary['n_contexts']:,} {summary['split']} contexts, "
          f"{summary['n_random']:,} random box states")
    print(f"{'model':18s} {'reachable':>9s} {'unreach.':>8s} {'tie':>4s} {'undecided':>9s} {'in top-10% supp.':>16s}  "
          + "  ".join(f"{'cov@' + str(k):>7s}" for k in ks) + "   LP items  time")
    for m in summary["models"]:
        print(f"{m['label']:18s} {m.get('reachable', 0):9d} {m.get('unreachable', 0):8d} {m.get('tie', 0):4d} {m.get('undecided', 0):9d} "
              f"{m['unreachable_in_top_decile_support']:16d}  " + "  ".join(f"{m['coverage'][str(k)]:7.3f}" for k in ks)
              + f"   {m['lp_items']:8d}  {m['certificate_seconds'] + m['scan_seconds']:.1f} s")
    for m in summary["models"]:
        if m["most_frequent_unreachable"]:
            shown = ", ".join(f"{x['item']} (support {x['support']}, #{x['support_rank']})"
                              for x in m["most_frequent_unreachable"][:5])
            print(f"{m['label']}: most frequent unreachable items: {shown}")
    pairs: dict[tuple[str, str], list[str]] = {}
    for diff in summary["differences"]:
        pairs.setdefault((diff["a"], diff["b"]), []).append(f"top-{diff['k']} {diff['only_a']}/{diff['only_b']}")
    for (a, b), parts in pairs.items():
        print(f"items in some context's top k only under {a} / only under {b}: {', '.join(parts)}")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m analysis.reach", description=__doc__)
    parser.add_argument("--checkpoint", type=Path, action="extend", nargs="+", required=True, metavar="CKPT",
                        help="trained models, several per flag or the flag repeated, audited on the same contexts")
    add_cutoffs_argument(parser)  # the empirical top-k audit; the certificate itself is for top-1
    parser.add_argument("--max-contexts", type=int, help="sample this many held-out contexts (default: all)")
    parser.add_argument("--n-random", type=int, default=4096, help="random box states tried before the LP (default: 4096)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the context sample and the random states")
    parser.add_argument("--out", type=Path, help="folder for reach.csv, reach.json, reach.png")
    add_heldout_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        set_threads(args.threads)
        if args.out:
            check_output_dir(args.out, "--out")  # before the work, not after it
        if args.max_contexts is not None and args.max_contexts < 1:
            raise InputError(f"--max-contexts must be >= 1, got {args.max_contexts}")
        if args.n_random < 0:
            raise InputError(f"--n-random must be >= 0, got {args.n_random}")
        ks = check_cutoffs(args.k)
        table, summary = audit(args.checkpoint, data=args.data, split=args.split, ks=ks,
                               max_contexts=args.max_contexts, n_random=args.n_random, seed=args.seed,
                               device=resolve_device(args.device), progress=not args.json)
        if args.out:
            write_outputs(args.out, table, summary)
        if args.json:
            print(json.dumps(summary))
        else:
            _print(summary)
            if args.out:
                print(f"wrote {args.out}/reach.csv, reach.json, reach.png")

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
