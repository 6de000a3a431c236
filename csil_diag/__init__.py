"""csil-diag: CSIL-residual training and stationarity diagnostics for HetStat policies on VLA embeddings."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# JAX's persistent compilation cache mis-runs some loops on a CPU (xla_cache.py): guard them whenever the cache can be
# on, without importing JAX for commands that never use it.
if "jax" in _sys.modules or _os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    from csil_diag.xla_cache import install as _install_xla_cache_guard

    _install_xla_cache_guard()
