"""csil-diag: CSIL-residual training and stationarity diagnostics for HetStat policies on VLA embeddings."""

__version__ = "0.1.0"
