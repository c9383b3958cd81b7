"""One module per paper figure; ``python -m figures`` builds them all (arrives with the figures issue).

Imports from ``analysis`` and ``softmax_bottleneck``, never the reverse.
"""
