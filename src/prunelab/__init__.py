"""prunelab: reproduce, compare and combine CNN compression papers on one pipeline."""

__version__ = "0.1.0"
