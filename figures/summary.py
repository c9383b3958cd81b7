"""The study's numbers as Markdown tables, read from its results folder (nothing is computed again).

    python -m figures.summary --results results/real-globo > summary.md

Four tables: each head's Recall@20 and MRR@20 against the softmax of its own d, with the paired 95 %
interval and Holm's p (gains/gains.csv); the numerical rank, the row-centred rank and the expressive
rank of each first-seed model with the Information Abundance of its item matrix and hidden states
(rank/rank.json); the items each model can never rank first, with the kind of certificate
(reach/reach.json); and each head's relative Recall@20 gain over the same d's softmax by the target's
training support (gains/breakdown.csv, descriptive).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from softmax_bottleneck.cli import ArgumentParser, run_main

from . import results


def _table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    return "\n".join([header, rule] + ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)])


def gains_table(results_dir, metric: str) -> str:
    gains = results.gains(results_dir)
    gains = gains[(gains["metric"] == metric) & (gains["k"] == 20)]
    cells = gains.assign(cell=[f"{r.value:.4f} ({r.diff_vs_baseline:+.4f} [{r.diff_ci_low:+.4f}, {r.diff_ci_high:+.4f}]"
                               f", p_holm {r.p_holm:.3f})" for r in gains.itertuples()])
    softmax = gains.drop_duplicates("hidden_dim").set_index("hidden_dim")["baseline_value"]
    wide = cells.pivot(index="model", columns="hidden_dim", values="cell")
    wide.index = [" ".join(w for w in label.split() if not w.startswith("d=")) for label in wide.index]
    wide = wide.groupby(level=0).first()  # one row per head (its models at every d)
    top = pd.DataFrame([{d: f"{v:.4f}" for d, v in softmax.items()}], index=["softmax"])
    out = pd.concat([top, wide]).reset_index().rename(columns={"index": f"{metric}@20"})
    return _table(out.rename(columns={d: f"d = {d}" for d in softmax.index}))


def rank_table(results_dir) -> str:
    rows = []
    for m in results.rank(results_dir)["models"]:
        expressive = (m.get("expressive") or {}).get("expressive_rank")
        embedding = m.get("embedding") or {}
        rows.append({"model": m["label"], "rank": m["rank"], "cap": m["rank_cap"] if m["rank_cap"] else "none",
                     "centred rank": m["centred"]["rank"],
                     "expressive rank (upper bound)": "—" if m.get("expressive") is None else (expressive or "> swept"),
                     "IA of W": f"{embedding['item_matrix']['information_abundance']:.2f}" if embedding else "—",
                     "IA of hidden states": f"{embedding['hidden_states']['information_abundance']:.2f}" if embedding
                     else "—"})
    return _table(pd.DataFrame(rows))


def reach_table(results_dir) -> str:
    report = results.reach(results_dir)
    # reach.json leaves out a status no item has: none never first, none undecided
    rows = [{"model": m["label"], "never first": f"{m.get('unreachable', 0):,}", "undecided": f"{m.get('undecided', 0):,}",
             "certificate": m.get("certificate") or "none (witnesses only)", "never first, in the top support decile":
             f"{m.get('unreachable_in_top_decile_support', 0):,}"} for m in report["models"]]
    return _table(pd.DataFrame(rows)) + f"\n\n(of {report['n_items']:,} items)"


def support_table(results_dir) -> str:
    frame = pd.read_csv(Path(results_dir) / "gains" / "breakdown.csv")
    frame = frame[(frame["breakdown"] == "support") & (frame["metric"] == "recall") & (frame["model"] != frame["baseline"])]
    wide = frame.assign(cell=[f"{g:+.1%}" if pd.notna(g) else "—" for g in frame["relative_gain"]]).pivot(
        index="model", columns="bin", values="cell")
    order = frame.drop_duplicates("bin").sort_values("bin_index")["bin"]
    return _table(wide[list(order)].reset_index().rename(columns={"model": "Recall@20 gain by target support"}))


def gains_note(results_dir) -> str:
    """One paragraph under the gains tables: what was resampled, Holm's family, and how low its p can go."""
    from analysis.stats import p_value_resolution

    s = results.gains_summary(results_dir)
    resolution = p_value_resolution(results.gains(results_dir)["p_method"], s["n_bootstrap"], s["n_sessions"],
                                    s["ci_level"])
    note = (f"Each cell: the head's value (its difference to the softmax of the same d [paired {s['ci_level']:.0%} "
            f"interval], Holm's p). {s['split']} split, {s['n_events']:,} events in {s['n_sessions']:,} sessions, "
            f"{s['n_bootstrap']:,} {s['resample']} bootstrap replicates (seeds, then sessions), ties "
            f"{s['ties']}; {s['multiplicity']}.")
    if resolution.get("holm_floor") is not None:
        note += (f" With these replicates no p is below {resolution['p_floor']:.2g} and no Holm p below "
                 f"{resolution['holm_floor']:.2g}.")
    return note


def summary(results_dir) -> str:
    parts = []
    if results.has_gains(results_dir):
        parts += ["## Against the softmax of the same d", gains_note(results_dir), gains_table(results_dir, "recall"),
                  gains_table(results_dir, "mrr"), "## By target support (relative Recall@20 gain)",
                  support_table(results_dir)]
    parts += ["## Rank", rank_table(results_dir), "## Never ranked first", reach_table(results_dir)]
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m figures.summary", description=__doc__)
    parser.add_argument("--results", type=Path, required=True, help="a study's results folder (python -m figures)")
    args = parser.parse_args(argv)

    def body() -> None:
        results.study(args.results)  # a folder that is not a finished study fails here, in one line
        sys.stdout.write(summary(args.results))

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
