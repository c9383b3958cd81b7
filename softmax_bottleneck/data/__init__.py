"""Session data: raw loaders, the preprocessing protocol, prepared datasets, session-parallel batches."""

from .iterator import SessionBatch, session_order, session_parallel_batches
from .loaders import FORMATS, Interactions, load_interactions
from .prepared import SPLITS, PreparedDataset, SessionSplit, load_prepared, sample_sessions, save_prepared
from .preprocess import PrepareConfig, prepare

__all__ = [
    "FORMATS", "SPLITS", "Interactions", "PrepareConfig", "PreparedDataset", "SessionBatch", "SessionSplit", "sample_sessions",
    "load_interactions", "load_prepared", "prepare", "save_prepared", "session_order",
    "session_parallel_batches",
]
