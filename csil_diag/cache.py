"""Where csil-diag keeps what it builds once and reuses: the default π0, its demos, compiled XLA programs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$CSIL_DIAG_CACHE``, default ``~/.cache/csil-diag``."""
    return Path(os.environ.get("CSIL_DIAG_CACHE") or "~/.cache/csil-diag").expanduser()


XLA_CACHE_MAX_BYTES = 4 << 30  # least recently used programs are evicted past this (and writers lock the cache)


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache at ``<cache root>/xla`` for this process and the processes it starts
    (env workers, sweep runs), so a run re-uses what earlier runs compiled (a quick diagnostic point spends tens of
    seconds compiling). Call before JAX is imported. Loops that XLA:CPU mis-runs from the cache are always compiled
    afresh (:mod:`csil_diag.xla_cache`). A cache the user configured is left alone; ``CSIL_DIAG_XLA_CACHE=off`` turns
    it off. Returns the cache directory in use, or None."""
    if os.environ.get("CSIL_DIAG_XLA_CACHE", "").lower() in ("off", "0", "false", "no"):
        return os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache_root() / "xla")
        os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(XLA_CACHE_MAX_BYTES))
        # JAX's default (1 s) would leave most of a run's programs out; tiny ones are not worth a file.
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    from csil_diag.xla_cache import install

    install()
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
