"""Output heads: hidden states → exact log-probabilities over all items, and the training loss.

Every head owns the output item matrix ``item_weight`` (n_items, d) (GRU4Rec's ``Wy``; with a
constrained embedding it is also the input embedding) and an optional per-item bias.

- ``softmax``: ``log p = log_softmax(h·Wᵀ + b)``. The log-prob matrix over any set of contexts
  factors as ``[H, 1, −lse]·[W, b, 1]ᵀ``: rank ≤ d+1 without bias, d+2 with.
- ``sigsoftmax`` (Kanai et al. 2018): ``log p_i = f(z_i) − logsumexp_j f(z_j)``, ``f(z) = z + log σ(z)``,
  ``z = h·Wᵀ + b``. f is not linear, so there is no rank cap; f is strictly increasing, so every
  ranking of items is the softmax's with the same W and b.
- ``mol`` (Mixture of Logits, Zhai et al. 2023): ``log p_i = φ(h, i) − logsumexp_j φ(h, j)`` with
  ``φ = Σ_p π_p(h, i)·ℓ_p(h, i)``, a gated mixture of P = P_q·P_x dot products of l2-normalised
  context- and item-side embeddings. No rank cap (see ``MixtureOfLogitsHead``).
- ``mos`` (K experts, Yang et al. 2018): ``π = softmax(h·Pᵀ)``, ``h_k = tanh(h·Q_kᵀ)``,
  ``log p = logsumexp_k(log π_k + log_softmax(h_k·Wᵀ + b))``. Mixed in log space (:func:`log_mix`): no eps floor,
  which would manufacture rank.

Sampled training (GRU4Rec): the candidates are the batch's targets followed by shared negative
samples; each row's softmax runs over the candidates with the logQ correction subtracted from
the logits. MoS normalises each expert over the candidates and mixes in log space. A sampled step
with the indexed optimizer reads the item rows it touches from one dense gather and scores each of
them once (:meth:`Head.touched_rows`): the same loss, a dense backward, and each parameter's gradient
handed to the optimizer already summed per row.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable
import torch.nn.functional as F
from torch import nn

from .config import HEADS  # noqa: F401 (the names; build_head below makes them)


def uniform_init_(tensor: torch.Tensor, fan_in: int, fan_out: int, generator: torch.Generator | None) -> None:
    """GRU4Rec's initialisation: U(−σ, σ) with σ = sqrt(6 / (fan_in + fan_out))."""
    sigma = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        tensor.uniform_(-sigma, sigma, generator=generator)


class _TouchedRows(NamedTuple):
    position: torch.Tensor  # (n_items,) long: each touched item's row in `weight` (other entries unset)
    weight: torch.Tensor  # (n_touched, d), a leaf: those rows of item_weight
    bias: torch.Tensor | None  # (n_touched, 1), a leaf, or None
    target_rows: torch.Tensor  # (n_targets,) the targets' rows
    negative_rows: torch.Tensor | None  # (n_negatives,) the negatives' rows, or None
    log_count: torch.Tensor | None  # (n_touched,) log of how often each row was drawn as a negative (−inf: never)


def _set_row_gradient(param: nn.Parameter, rows: torch.Tensor, values: torch.Tensor | None) -> None:
    """param.grad += the sparse gradient whose rows (sorted, unique) hold `values` (marked coalesced: it is)."""
    if values is None:
        return
    grad = torch.sparse_coo_tensor(rows[None], values, param.shape, is_coalesced=True, check_invariants=False)
    param.grad = grad if param.grad is None else param.grad + grad


class Head(nn.Module):
    """The shared interface; subclasses define ``candidate_log_probs``."""

    def __init__(self, n_items: int, hidden_dim: int, item_bias: bool):
        super().__init__()
        self.n_items, self.hidden_dim = n_items, hidden_dim
        self.item_weight = nn.Parameter(torch.empty(n_items, hidden_dim))  # (n_items, d)
        # (n_items, 1) like GRU4Rec's By, so candidate rows can be gathered with sparse gradients
        self.item_bias = nn.Parameter(torch.zeros(n_items, 1)) if item_bias else None
        self.sparse_gradients = False  # set by the trainer for indexed (Adagrad) updates
        self._touched: _TouchedRows | None = None  # set inside touched_rows()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        uniform_init_(self.item_weight, self.n_items, self.hidden_dim, generator)
        if self.item_bias is not None:
            nn.init.zeros_(self.item_bias)

    @contextlib.contextmanager
    def touched_rows(self, targets: torch.Tensor, negatives: torch.Tensor | None = None,
                     inputs: torch.Tensor | None = None):
        """Within it, a sampled training step reads the item rows it touches from one dense gather, and
        scores each of them once.

        The candidates are `targets` followed by the shared `negatives` (as :meth:`loss` takes them);
        `inputs` are the items the GRU reads, when the item matrix is also the input embedding
        (constrained). Inside, the candidate axis of :meth:`candidate_log_probs` is the targets' columns
        followed by every touched item once, its negatives merged into it: their log Q (which depends on
        the item only) subtracted and the log of how often it was drawn added (−inf when it was not).
        The normaliser over the candidates is the same sum, Σ_j exp(s_j − log q_j) = Σ_u m_u·exp(s_u − log q_u),
        so each target's log-probability and the loss are those of the candidates as drawn.

        On leaving without an error, the gathered rows' gradients are added to ``item_weight.grad``
        and ``item_bias.grad`` as sparse gradients already summed per row (coalesced): the weight's over
        the candidates and the inputs, the bias's over the candidates only (the inputs do not read it),
        the rows ``F.embedding(…, sparse=True)`` would give, with the same sums.

        Why: with ``F.embedding(sparse=True)`` every read makes a sparse gradient of one row per
        candidate (2,080 at batch 32 with 2,048 samples); autograd concatenates them and the optimizer
        sorts and sums each parameter's separately (``coalesce``), and a negative drawn twice is scored
        twice. Here the touched rows are found once, in O(n_items) without a sort, the scores are
        computed once per item, and the backward is dense on them.
        """
        device = targets.device
        scored = torch.zeros(self.n_items, dtype=torch.bool, device=device).index_fill_(0, targets, True)
        if negatives is not None:
            scored.index_fill_(0, negatives, True)
        touched = scored if inputs is None else scored.clone().index_fill_(0, inputs, True)
        rows = touched.nonzero().squeeze(1)  # sorted and unique
        position = torch.empty(self.n_items, dtype=torch.long, device=device).index_copy_(
            0, rows, torch.arange(len(rows), device=device))
        weight = self.item_weight.detach().index_select(0, rows).requires_grad_()
        bias = None if self.item_bias is None else self.item_bias.detach().index_select(0, rows).requires_grad_()
        negative_rows = log_count = None
        if negatives is not None:
            negative_rows = position.index_select(0, negatives)
            log_count = torch.bincount(negative_rows, minlength=len(rows)).to(weight.dtype).log_()
        self._touched = _TouchedRows(position, weight, bias, position.index_select(0, targets), negative_rows,
                                     log_count)
        try:
            yield
        finally:
            self._touched = None
        _set_row_gradient(self.item_weight, rows, weight.grad)
        if bias is not None and bias.grad is not None:
            scored_rows = scored.index_select(0, rows).nonzero().squeeze(1)
            if len(scored_rows) < len(rows):  # some rows only inputs read
                _set_row_gradient(self.item_bias, rows.index_select(0, scored_rows), bias.grad.index_select(0, scored_rows))
            else:
                _set_row_gradient(self.item_bias, rows, bias.grad)

    def _item_rows(self, items: torch.Tensor, table: str) -> torch.Tensor:
        """The items' rows (…, width) of ``item_weight`` or ``item_bias`` (table "weight" or "bias"), read
        from the touched rows inside :meth:`touched_rows`."""
        if self._touched is None:
            return F.embedding(items, getattr(self, f"item_{table}"), sparse=self.sparse_gradients)
        rows = getattr(self._touched, table)
        flat = self._touched.position.index_select(0, items.reshape(-1))
        return rows.index_select(0, flat).view(*items.shape, rows.shape[1])

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        """Rows of the item matrix, (…, d); sparse gradients when the optimizer is indexed."""
        return self._item_rows(items, "weight")

    def _output(self, candidates: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None, _TouchedRows | None]:
        """(weights (n, d), bias (n,) or None, touched) of the items to score: all items when `candidates`
        is None; else the candidates' rows, or inside :meth:`touched_rows` the touched rows, each scored
        once, and what :func:`_at_candidates` needs to make the candidate axis of them."""
        if candidates is None:
            return self.item_weight, self.bias, None
        if self._touched is not None:
            bias = None if self._touched.bias is None else self._touched.bias[:, 0]
            return self._touched.weight, bias, self._touched
        weight = self.embed_items(candidates)
        bias = None
        if self.item_bias is not None:
            bias = self._item_rows(candidates, "bias")[:, 0]
        return weight, bias, None

    @property
    def bias(self) -> torch.Tensor | None:
        """The per-item bias as a vector (n_items,), or None."""
        return None if self.item_bias is None else self.item_bias[:, 0]

    def candidate_log_probs(self, hidden: torch.Tensor, candidates: torch.Tensor | None = None,
                            log_q: torch.Tensor | None = None) -> torch.Tensor:
        """log p(candidate | h) normalised over the candidates (all items when None): (batch, n_cand)."""
        raise NotImplementedError

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """Exact log-probabilities over all items: (batch, d) → (batch, n_items)."""
        return self.candidate_log_probs(hidden)

    def scores(self, hidden: torch.Tensor, candidates: torch.Tensor | None = None,
               log_q: torch.Tensor | None = None) -> torch.Tensor:
        """Unnormalised log-scores u with ``log p = u − logsumexp(u)`` over the candidates: (batch, n_cand).

        Every head of that form defines it (the analysis then serves any block of its log-prob matrix
        exactly, with the normaliser computed once); a mixture of normalised experts (MoS) is not of
        that form and has ``expert_factors`` instead."""
        raise NotImplementedError

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor, candidates: torch.Tensor | None = None,
             log_q: torch.Tensor | None = None) -> torch.Tensor:
        """Per-row cross-entropy, (batch,). `targets` index columns of `candidates` (items when None).

        `log_q` (n_cand,) is subtracted from each candidate's logit (sampled-softmax correction).
        """
        log_p = self.candidate_log_probs(hidden, candidates, log_q)
        return -log_p.gather(1, targets[:, None])[:, 0]

    @property
    def rank_cap(self) -> int | None:
        """Analytic bound on the rank of the log-prob matrix, or None when there is none."""
        return None

    def mixture_states(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(log π (batch, K), expert states (batch, K, d)) of a mixture head, None for a single softmax."""
        return None

    def log_probs_and_states(self, hidden: torch.Tensor):
        """(log_probs(hidden), mixture_states(hidden)), the states computed once (evaluation's health needs both)."""
        return self.log_probs(hidden), self.mixture_states(hidden)

    @property
    def scores_per_row(self) -> int:
        """Scores a row's log-probabilities hold at their widest: n_items, times K for a mixture's experts."""
        return self.n_items * getattr(self, "n_experts", 1)

    # The mixture form every head shares, for analysis of big log-prob matrices (analysis.logprobs):
    # log p(i | h) = logsumexp_k(log π_k(h) + s_k(h)·g_i − lse_k(h)), lse_k(h) = logsumexp_i s_k(h)·g_i.
    def item_factors(self) -> torch.Tensor:
        """g_i = [w_i, b_i] (b only with a bias): (n_items, r), r = d or d+1."""
        bias = self.bias
        return self.item_weight if bias is None else torch.cat([self.item_weight, bias[:, None]], dim=1)

    def expert_factors(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log π (batch, K), s (K, batch, r)): expert k's logits are ``s[k] @ item_factors().T``."""
        raise NotImplementedError

    def _with_ones(self, states: torch.Tensor) -> torch.Tensor:
        """[s, 1] when there is a bias (it rides along in the GEMM), else s."""
        if self.item_bias is None:
            return states
        return torch.cat([states, torch.ones_like(states[..., :1])], dim=-1)


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    logits = hidden @ weight.T  # (…, n)
    return logits if bias is None else logits + bias


def _at_candidates(scores: torch.Tensor, touched: _TouchedRows | None, log_q: torch.Tensor | None) -> torch.Tensor:
    """Scores of the rows :meth:`Head._output` gave → the candidate axis, less log Q: the rows themselves,
    or inside :meth:`Head.touched_rows` the targets' columns, then each touched row with its drawn
    negatives merged (log count − log Q; see there)."""
    if touched is None:
        return scores if log_q is None else scores - log_q
    n_targets = len(touched.target_rows)
    targets = scores.index_select(-1, touched.target_rows)
    if log_q is not None:
        targets = targets - log_q[:n_targets]
    if touched.negative_rows is None:
        return targets
    merged = touched.log_count
    if log_q is not None:  # each row's negatives share one log Q (their item's): write it once per row
        row_log_q = torch.zeros_like(merged).index_copy_(0, touched.negative_rows, log_q[n_targets:])
        merged = merged - row_log_q
    return torch.cat([targets, scores + merged], dim=-1)


class _LogMix(torch.autograd.Function):
    """``torch.logsumexp(x, dim=-2)``, the same values (to rounding), with a leaner forward and backward.

    The MoS head mixes its experts in log space over a (…, K, n) tensor. These few in-place passes
    run its forward and backward 1.4× as fast as torch's logsumexp on 1,024 × 4 × 20,000 and 2.2–2.5×
    at 60,000 items, on 2 CPU cores (benchmarks/log_mix_speed.py); half of a float32 step of the
    capacity fit was torch's. Exact: the column maximum is subtracted before exp, as torch does
    (a column of all −inf gives −inf, and its gradient nan, as torch's does)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        top = x.amax(dim=-2, keepdim=True)
        top.masked_fill_(top.isinf(), 0.0)
        out = (x - top).exp_().sum(dim=-2, keepdim=True).log_().add_(top)
        ctx.save_for_backward(x, out)
        return out.squeeze(-2)

    @staticmethod
    @once_differentiable  # the in-place backward has no graph of its own: a second derivative is refused by name
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, out = ctx.saved_tensors
        return (x - out).exp_().mul_(grad.unsqueeze(-2))  # ∂ logsumexp / ∂x_k = exp(x_k − logsumexp)


def log_mix(x: torch.Tensor) -> torch.Tensor:
    """logsumexp over dim −2 (the experts of a (…, K, n) tensor of log π_k + log p_k)."""
    return _LogMix.apply(x)


def softmax_rank_cap(hidden_dim: int, item_bias: bool) -> int:
    """The rank bound of a softmax over h·Wᵀ (+ b): log p = [h, 1, −lse]·[W, b, 1]ᵀ, so d + 2 (d + 1 without b)."""
    return hidden_dim + (2 if item_bias else 1)


class SoftmaxHead(Head):
    """``log_softmax(h·Wᵀ + b)``."""

    def scores(self, hidden, candidates=None, log_q=None):
        weight, bias, touched = self._output(candidates)
        return _at_candidates(_logits(hidden, weight, bias), touched, log_q)

    def candidate_log_probs(self, hidden, candidates=None, log_q=None):
        return torch.log_softmax(self.scores(hidden, candidates, log_q), dim=-1)

    @property
    def rank_cap(self) -> int:
        return softmax_rank_cap(self.hidden_dim, self.item_bias is not None)

    def expert_factors(self, hidden):
        return hidden.new_zeros(len(hidden), 1), self._with_ones(hidden)[None]


class SigsoftmaxHead(Head):
    """Sigsoftmax: ``p_i ∝ exp(z_i)·σ(z_i)`` over ``z = h·Wᵀ + b`` (Kanai et al., NeurIPS 2018).

    ``log p_i = z_i + log σ(z_i) − logsumexp_j(z_j + log σ(z_j))``, with ``logsigmoid`` (``log(sigmoid(z))``
    is −inf below z ≈ −745 in float64, and an eps floor would manufacture rank). The score is not
    linear in h, so the log-prob matrix has no rank cap at softmax cost. Sampled training subtracts
    logQ from the score f(z) = z + log σ(z), the quantity the candidates' softmax normalises.
    """

    def scores(self, hidden, candidates=None, log_q=None):
        weight, bias, touched = self._output(candidates)
        logits = _logits(hidden, weight, bias)
        return _at_candidates(logits + F.logsigmoid(logits), touched, log_q)

    def candidate_log_probs(self, hidden, candidates=None, log_q=None):
        return torch.log_softmax(self.scores(hidden, candidates, log_q), dim=-1)


class MixtureOfLogitsHead(Head):
    """Mixture of Logits (Zhai et al., KDD 2023): one softmax over a gated mixture of dot products.

    With h the GRU output (d) and w_i the item's row of the item matrix (d):

    - context side: P_q embeddings f_q(h) = normalise(A_q·h), item side: P_x embeddings
      g_x(i) = normalise(B_x·w_i), each of size e (``mol_dim``); their P = P_q·P_x dot products,
      divided by the temperature τ, are the component logits ℓ_p(h, i) = ⟨f_q(h), g_x(i)⟩ / τ;
    - the gates π(h, i) = softmax_p(u_p·h + v_p·w_i + (M·ℓ(h, i))_p) are a function of the context,
      of the item and of the component logits themselves (the paper's decomposition, with linear
      maps u, v and M for the small readable default);
    - φ(h, i) = Σ_p π_p(h, i)·ℓ_p(h, i) + b_i, and log p(i | h) = φ(h, i) − logsumexp_j φ(h, j).

    Why no rank cap: φ is not bilinear in (h, w_i), since the gates weight the P dot products
    differently for every (context, item) pair, so the log-prob matrix [φ(c, i) − lse(c)] is not a
    product of a d- and an item-sized factor (for P = 1, π ≡ 1 and φ = ⟨f, g⟩/τ + b: a softmax of rank
    ≤ e+2). Sampled training subtracts logQ from φ. Every part of φ is computed for the candidates
    only, so a sampled step costs O(batch × candidates × P).
    """

    def __init__(self, n_items: int, hidden_dim: int, item_bias: bool, context_components: int = 2,
                 item_components: int = 2, component_dim: int | None = None, temperature: float = 0.05):
        super().__init__(n_items, hidden_dim, item_bias)
        self.context_components, self.item_components = context_components, item_components
        self.component_dim, self.temperature = component_dim or hidden_dim, temperature
        n_pairs = context_components * item_components
        self.context_projection = nn.Linear(hidden_dim, context_components * self.component_dim, bias=False)  # A
        self.item_projection = nn.Linear(hidden_dim, item_components * self.component_dim, bias=False)  # B
        self.context_gate = nn.Linear(hidden_dim, n_pairs)  # u (with the gates' bias)
        self.item_gate = nn.Linear(hidden_dim, n_pairs, bias=False)  # v
        self.logit_gate = nn.Linear(n_pairs, n_pairs, bias=False)  # M

    def reset_parameters(self, generator=None):
        super().reset_parameters(generator)
        for layer in (self.context_projection, self.item_projection, self.context_gate, self.item_gate,
                      self.logit_gate):
            uniform_init_(layer.weight, layer.in_features, layer.out_features, generator)
        nn.init.zeros_(self.context_gate.bias)

    def component_logits(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """ℓ (batch, P, n_cand): the P_q·P_x dot products of the normalised embeddings, over τ.

        The candidates are the last axis throughout, so that every elementwise step and the softmax
        over the P gates run along long contiguous rows (P = 4 as the innermost axis was 3× slower)."""
        e = self.component_dim
        context = F.normalize(self.context_projection(hidden).view(len(hidden), self.context_components, e), dim=-1)
        context = context / self.temperature  # 1/τ on the (batch, P_q, e) side: one pass less over the logits
        item = F.normalize(self.item_projection(items).view(len(items), self.item_components, e), dim=-1)
        flat = item.reshape(-1, e)  # (n_cand·P_x, e)
        logits = (context.reshape(-1, e) @ flat.T).view(len(hidden), self.context_components, len(items),
                                                         self.item_components)
        return logits.permute(0, 1, 3, 2).reshape(len(hidden), -1, len(items))

    def scores(self, hidden, candidates=None, log_q=None):
        weight, bias, touched = self._output(candidates)
        logits = self.component_logits(hidden, weight)  # (batch, P, n)
        gates = (self.context_gate(hidden)[:, :, None] + self.item_gate(weight).T[None]
                 + torch.einsum("pk,bkn->bpn", self.logit_gate.weight, logits))
        score = (torch.softmax(gates, dim=1) * logits).sum(dim=1)
        if bias is not None:
            score = score + bias
        return _at_candidates(score, touched, log_q)

    def candidate_log_probs(self, hidden, candidates=None, log_q=None):
        return torch.log_softmax(self.scores(hidden, candidates, log_q), dim=-1)


class MixtureOfSoftmaxesHead(Head):
    """K softmaxes over tanh projections of h, mixed by a softmax prior, in log space."""

    def __init__(self, n_items: int, hidden_dim: int, item_bias: bool, n_experts: int):
        super().__init__(n_items, hidden_dim, item_bias)
        self.n_experts = n_experts
        self.prior = nn.Linear(hidden_dim, n_experts, bias=False)  # P: (K, d)
        self.projection = nn.Linear(hidden_dim, n_experts * hidden_dim, bias=False)  # Q_1..Q_K stacked

    def reset_parameters(self, generator=None):
        super().reset_parameters(generator)
        uniform_init_(self.prior.weight, self.hidden_dim, self.n_experts, generator)
        for k in range(self.n_experts):
            block = self.projection.weight[k * self.hidden_dim:(k + 1) * self.hidden_dim]
            uniform_init_(block, self.hidden_dim, self.hidden_dim, generator)

    def expert_states(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log π (batch, K), h_k = tanh(Q_k h) (batch, K, d))."""
        log_prior = torch.log_softmax(self.prior(hidden), dim=-1)
        states = torch.tanh(self.projection(hidden)).view(*hidden.shape[:-1], self.n_experts, self.hidden_dim)
        return log_prior, states

    def _expert_log_probs(self, hidden, candidates, log_q, states=None):
        """(log π (batch, K), each expert's log-softmax over the candidates (batch, K, n_cand))."""
        weight, bias, touched = self._output(candidates)
        log_prior, states = self.expert_states(hidden) if states is None else states
        return log_prior, torch.log_softmax(_at_candidates(_logits(states, weight, bias), touched, log_q), dim=-1)

    def candidate_log_probs(self, hidden, candidates=None, log_q=None, states=None):
        log_prior, expert_log_p = self._expert_log_probs(hidden, candidates, log_q, states)
        return log_mix(log_prior[..., None] + expert_log_p)

    def loss(self, hidden, targets, candidates=None, log_q=None):
        """The cross-entropy of the mixture at the target column only: log_mix over the K experts' values at
        the target (training needs no other column's mixture, and mixing all of them was a third of a step
        at 10,000 items)."""
        log_prior, expert_log_p = self._expert_log_probs(hidden, candidates, log_q)
        at_target = expert_log_p.gather(-1, targets[:, None, None].expand(-1, self.n_experts, 1))  # (batch, K, 1)
        return -log_mix(log_prior[..., None] + at_target)[:, 0]

    def mixture_states(self, hidden):
        return self.expert_states(hidden)

    def log_probs_and_states(self, hidden):
        states = self.expert_states(hidden)
        return self.candidate_log_probs(hidden, states=states), states

    def expert_factors(self, hidden):
        log_prior, states = self.expert_states(hidden)
        return log_prior, self._with_ones(states.transpose(0, 1)).contiguous()


def build_head(kind: str, n_items: int, hidden_dim: int, item_bias: bool, n_experts: int = 1, *,
               mol_context_components: int = 2, mol_item_components: int = 2, mol_dim: int | None = None,
               mol_temperature: float = 0.05) -> Head:
    if kind == "softmax":
        return SoftmaxHead(n_items, hidden_dim, item_bias)
    if kind == "mos":
        return MixtureOfSoftmaxesHead(n_items, hidden_dim, item_bias, n_experts)
    if kind == "sigsoftmax":
        return SigsoftmaxHead(n_items, hidden_dim, item_bias)
    if kind == "mol":
        return MixtureOfLogitsHead(n_items, hidden_dim, item_bias, mol_context_components, mol_item_components,
                                   mol_dim, mol_temperature)
    raise ValueError(f"unknown head {kind!r}; expected one of {', '.join(HEADS)}")


def head_for(config) -> Head:
    """The head a ModelConfig describes (every size it names)."""
    return build_head(config.head, config.n_items, config.hidden_dim, config.item_bias, config.n_experts,
                      mol_context_components=config.mol_context_components,
                      mol_item_components=config.mol_item_components, mol_dim=config.mol_dim,
                      mol_temperature=config.mol_temperature)
