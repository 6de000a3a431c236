"""Diagnostics: entropy online vs expert, separation metrics, sweeps and projections."""
