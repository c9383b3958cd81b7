"""Diagnostics on trained models: log-prob matrices, rank, head comparison, reachability, plots.

Imports from ``softmax_bottleneck`` only; ``figures`` builds on this package. The modules arrive
with the rank, compare and reach issues.
"""
