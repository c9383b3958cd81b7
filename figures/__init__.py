"""The paper's figures: one module per figure, each with ``make(results_dir) -> Figure``.

``python -m figures`` runs the study (:mod:`figures.study`) and draws every figure listed in
:mod:`figures.__main__`. Imports from ``analysis`` and ``softmax_bottleneck``, never the reverse.
"""
