"""softmax-bottleneck: does a single softmax limit what a session-based recommender can express?

The library layer: data preparation, the synthetic world, (later) heads, GRU4Rec, training,
evaluation and checkpoints. It never imports ``analysis``, ``figures`` or plotting libraries.
"""

__version__ = "0.1.0"
