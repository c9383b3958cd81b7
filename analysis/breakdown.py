"""Where one head gains over another: per-bin metrics over event properties, and the gain grid.

Bins (quantiles over the evaluated events): the target item's training support, the context's
diversity (1 − cosine of the previous and the target item under the baseline's item embeddings)
and the distinct items in the prefix. The grid crosses support and diversity and gives each
group's relative gain over the baseline group in every cell.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .groups import Group
from .stats import quantile_bins


@torch.no_grad()
def event_bins(dataset, split, events: np.ndarray, baseline_model, n_bins: int) -> dict[str, tuple]:
    """{breakdown name: (bin index per event, bin labels)} for support, diversity and distinct items."""
    sessions, positions, targets = events.T
    previous = split.items[split.offsets[sessions] + positions - 1].astype(np.int64)
    embedding = (baseline_model.input_embedding.weight if baseline_model.input_embedding is not None
                 else baseline_model.head.item_weight).detach().double().cpu()
    cosine = torch.nn.functional.cosine_similarity(embedding[previous], embedding[targets], dim=1).numpy()
    distinct = distinct_in_prefix(split, sessions, positions)
    return {"support": quantile_bins(dataset.support[targets], n_bins),
            "diversity": quantile_bins(1.0 - cosine, n_bins),
            "distinct_items": quantile_bins(distinct, n_bins)}


def distinct_in_prefix(split, sessions: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The number of distinct items among each event's prefix (its session's first `position` items): one
    ``np.unique`` per session, a running count of first occurrences, not one ``np.unique`` per event."""
    first_seen = np.zeros(len(split.items), dtype=np.int64)
    for session in np.unique(sessions):
        _, first = np.unique(split.session(session), return_index=True)
        first_seen[split.offsets[session] + first] = 1
    running = np.concatenate([[0], np.cumsum(first_seen)])  # running[i]: first occurrences among items[:i]
    starts = split.offsets[sessions]
    return running[starts + positions] - running[starts]


def _cell(groups: list[Group], inside: np.ndarray, metric: str, k: int, group: Group) -> tuple[float, float | None]:
    """(value, relative gain over the baseline group) of `group` on the events `inside`."""
    base_value = groups[0].event_values(metric, k)[inside].mean() if inside.any() else np.nan
    value = group.event_values(metric, k)[inside].mean() if inside.any() else np.nan
    return float(value), float(value / base_value - 1) if base_value > 0 else None


def breakdown_table(groups: list[Group], bins: dict[str, tuple], k: int, metrics) -> pd.DataFrame:
    """Tidy: breakdown × bin × group × metric, with the value and the relative gain over the baseline."""
    rows = []
    for name, (codes, labels) in bins.items():
        for code, interval in enumerate(labels):
            inside = codes == code
            for metric in metrics:
                for group in groups:
                    value, gain = _cell(groups, inside, metric, k, group)
                    rows.append({"breakdown": name, "bin": str(interval), "bin_index": code,
                                 "n_events": int(inside.sum()), "model": group.label, "metric": metric, "k": k,
                                 "value": value, "relative_gain": gain})
    return pd.DataFrame(rows)


def gain_grid(groups: list[Group], bins: dict[str, tuple], k: int, metrics) -> pd.DataFrame:
    """Tidy: support bin × diversity bin × non-baseline group × metric, with the relative gain."""
    (support_codes, support_labels), (diversity_codes, diversity_labels) = bins["support"], bins["diversity"]
    grid = []
    for s_code, s_bin in enumerate(support_labels):
        for d_code, d_bin in enumerate(diversity_labels):
            inside = (support_codes == s_code) & (diversity_codes == d_code)
            for group in groups[1:]:
                for metric in metrics:
                    value, gain = _cell(groups, inside, metric, k, group)
                    grid.append({"support_bin": str(s_bin), "support_index": s_code, "diversity_bin": str(d_bin),
                                 "diversity_index": d_code, "n_events": int(inside.sum()), "model": group.label,
                                 "metric": metric, "k": k, "value": value, "relative_gain": gain})
    return pd.DataFrame(grid)
