"""Sweeps: a grid of ordinary entropy runs sharing demos and settings (thesis Fig. 6.5 and 6.6).

``grid`` makes the cells, ``backends`` runs them (locally or on Ray), ``store`` is the sweep directory (sweep.json,
runs/, summary.parquet) and ``audit`` is `compare`'s parameter audit.
"""

from csil_diag.diag.sweep.audit import AUDIT_FILE, model_regime, write_audit
from csil_diag.diag.sweep.backends import local_pool, run_cell
from csil_diag.diag.sweep.grid import (
    LOWDIM_REFERENCE,
    UNSETTABLE,
    Cell,
    apply_settings,
    compare_cells,
    grid_cells,
    parse_object,
    parse_select,
    parse_set,
    parse_widths,
    random_subset,
    slice_cells,
)
from csil_diag.diag.sweep.store import SUMMARY_FILE, SWEEP_FILE, Sweep, SweepResult

__all__ = [
    "AUDIT_FILE",
    "LOWDIM_REFERENCE",
    "SUMMARY_FILE",
    "SWEEP_FILE",
    "UNSETTABLE",
    "Cell",
    "Sweep",
    "SweepResult",
    "apply_settings",
    "compare_cells",
    "grid_cells",
    "local_pool",
    "model_regime",
    "parse_object",
    "parse_select",
    "parse_set",
    "parse_widths",
    "random_subset",
    "run_cell",
    "slice_cells",
    "write_audit",
]
