"""Which items can a softmax rank first at all? Certificates over the box of GRU outputs.

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
  ``corner`` aimed at the item, ``random`` points of the box, the smoothed ``search`` or the ``lp``.
- ``unreachable`` by a single rival (``dominated``): ``b_j − b_i > ‖w_j − w_i‖₁`` for some item j.
- ``unreachable`` (``search`` or ``lp``): a dual certificate: weights λ ≥ 0, Σλ = 1 over some items j with
  ``min over the box of Σ λ_j (l_j(h) − l_i(h)) = Σ λ_j (b_j − b_i) − ‖Σ λ_j (w_j − w_i)‖₁ > 0``,
  so at every h some item beats i. The bound is computed in closed form, not taken from the solver.
- ``tie``: the LP's optimum is t* ≈ 0 (within 1e-9 of the largest logit): at best tied for first
  (duplicate rows; or, without an item bias, any item inside the hull: all items tie at h = 0).
- ``undecided``: no verdict (solver trouble).

:func:`certify_top1` runs the stages in that order, each on the items the cheaper ones left.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np
import torch
from scipy.optimize import linprog
from scipy.spatial.distance import cdist

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


def tie_tolerance(weight: np.ndarray, bias: np.ndarray | None = None) -> float:
    """Leads below this are ties: RELATIVE_TOL times the largest |logit| the box allows (at least 1)."""
    return RELATIVE_TOL * max(logit_scale(weight, np.zeros(len(weight)) if bias is None else bias), 1.0)


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
        out += _verify_search(ids.numpy(), weight, bias, best_h.double().numpy(), dual_rivals.numpy(),
                              dual_lam.double().numpy(), tol)
    return out


def _verify_search(items, weight, bias, witnesses, rivals, lams, tol) -> list[tuple]:
    """float64 checks of a chunk's best witness states (one GEMM over the whole catalogue) and, where no
    witness holds, of its best dual candidates."""
    margins = np.empty(len(items))
    step = max(1, (1 << 22) // len(weight))  # rows per GEMM: at most 32 MB of float64 logits
    for first in range(0, len(items), step):
        logits = witnesses[first:first + step] @ weight.T + bias  # (rows, n_items)
        rows, chosen = np.arange(len(logits)), items[first:first + step]
        leads = logits[rows, chosen].copy()
        logits[rows, chosen] = -np.inf
        margins[first:first + step] = leads - logits.max(axis=1)
    out = []
    for row, item in enumerate(items):
        if margins[row] > tol:
            out.append(("reachable", float(margins[row]), witnesses[row]))
            continue
        if lams[row].sum() > 0:
            gap = certificate_gap(int(item), rivals[row], lams[row], weight, bias)
            if gap > tol:
                out.append(("unreachable", -gap, None))
                continue
        out.append((None, float("nan"), witnesses[row]))
    return out


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


class _Verdicts:
    """The per-item verdicts as they are filled in, cheapest stage first."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, tol: float):
        n_items, d = weight.shape
        self.weight, self.bias, self.tol = weight, bias, tol
        self.status = np.full(n_items, "undecided", dtype=object)
        self.method = np.full(n_items, "", dtype=object)
        self.margin = np.full(n_items, np.nan)
        self.witness = np.full((n_items, d), np.nan)

    def pending(self, status: str | None = None) -> np.ndarray:
        """Items not yet reachable (or, given `status`, those with that status)."""
        return np.flatnonzero(self.status != "reachable" if status is None else self.status == status)

    def set(self, item: int, status: str, method: str, margin: float, witness=None) -> None:
        self.status[item], self.method[item], self.margin[item] = status, method, margin
        if witness is not None:
            self.witness[item] = witness

    def record(self, points: np.ndarray, how: str, winners=None, leads=None) -> None:
        """Every item some row of `points` ranks strictly first is reachable, with that row as witness."""
        if winners is None:
            winners, leads = strict_winners(points, self.weight, self.bias)
        for row in np.flatnonzero(leads > self.tol):
            item = winners[row]
            if self.status[item] != "reachable":
                self.set(item, "reachable", how, leads[row], points[row])


def _corner_witnesses(verdicts: _Verdicts, refine_rounds: int) -> np.ndarray:
    """A box corner aimed at each item, then pushed away from whichever item beat it there; returns
    the corners (the later stages start from them)."""
    weight, bias = verdicts.weight, verdicts.bias
    corners = np.where(weight >= 0, 1.0, -1.0)
    winners, leads = strict_winners(corners, weight, bias)
    verdicts.record(corners, "corner", winners, leads)
    for _ in range(refine_rounds):
        pending = verdicts.pending()
        if len(pending) == 0:
            break
        corners[pending] = np.where(weight[pending] - weight[winners[pending]] >= 0, 1.0, -1.0)
        winners[pending], leads[pending] = strict_winners(corners[pending], weight, bias)
        verdicts.record(corners[pending], "corner", winners[pending], leads[pending])
    return corners


def _dominated(verdicts: _Verdicts, n_rivals: int, chunk: int = 2048) -> None:
    """Cheap certificates: one item j beats i everywhere in the box iff b_j − b_i > ‖w_j − w_i‖₁
    (tried against the `n_rivals` items of largest bias)."""
    weight, bias, tol = verdicts.weight, verdicts.bias, verdicts.tol
    pending = verdicts.pending()
    rivals = np.argsort(-bias, kind="stable")[:max(n_rivals, 1)]
    for start in range(0, len(pending), chunk):
        items = pending[start:start + chunk]
        gaps = bias[rivals][None, :] - bias[items][:, None] - cdist(weight[items], weight[rivals], "cityblock")
        gaps[items[:, None] == rivals[None, :]] = -np.inf
        gap = gaps[np.arange(len(items)), gaps.argmax(axis=1)]
        for item, value in zip(items[gap > tol], gap[gap > tol]):
            verdicts.set(item, "unreachable", "dominated", -value)


def _searched(verdicts: _Verdicts, corners: np.ndarray, iterations: int) -> None:
    """The smoothed search's verified witnesses and certificates; its best states replace the corners."""
    pending = verdicts.pending("undecided")
    if not len(pending) or not iterations:
        return
    found = smoothed_search(pending, verdicts.weight, verdicts.bias, corners[pending], iterations=iterations,
                            tol=verdicts.tol)
    for item, (verdict, lead, h) in zip(pending, found):
        if verdict is not None:
            verdicts.set(item, verdict, "search", lead, h)
        elif h is not None:
            corners[item] = h  # the LP starts from the search's best state


def _solved(verdicts: _Verdicts, starts: np.ndarray, progress: bool) -> tuple[int, int]:
    """The LP for every item still undecided: (items, LP solves)."""
    pending = verdicts.pending("undecided")
    iterator = pending
    if progress and len(pending):
        from tqdm import tqdm

        iterator = tqdm(pending, desc="LP certificates", unit="item", file=sys.stderr)
    rounds = 0
    for item in iterator:
        verdict, lead, h, used = solve_top1_lp(int(item), verdicts.weight, verdicts.bias, starts[item],
                                               tol=verdicts.tol)
        rounds += used
        verdicts.set(item, verdict, "lp", lead, h)
    return len(pending), rounds


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
    bias = np.zeros(len(weight)) if bias is None else np.asarray(bias, dtype=np.float64)
    verdicts = _Verdicts(weight, bias, tie_tolerance(weight, bias))
    if known is not None and len(known):
        verdicts.record(np.asarray(known, dtype=np.float64), "context")
    corners = _corner_witnesses(verdicts, refine_rounds)
    if n_random and len(verdicts.pending()):
        verdicts.record(box_states(n_random, weight.shape[1], seed), "random")
    if len(verdicts.pending()):
        _dominated(verdicts, n_rivals)
    _searched(verdicts, corners, search_iterations)
    n_lp, rounds = _solved(verdicts, corners, progress)
    return Top1Reach(verdicts.status, verdicts.method, verdicts.margin, verdicts.witness, n_lp, rounds,
                     time.perf_counter() - began)
