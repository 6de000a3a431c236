"""Shared fixtures: small datasets made by the tests themselves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pytest

from csil_diag.data.demos import DemoConfig, generate_demos

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _share_compilation_cache() -> None:
    """One persistent XLA cache for the whole test session.

    Tests compile the same tiny programs again and again (every tiny run re-jits its steps); with the cache each is
    compiled once per session, by whichever test process (xdist worker, CLI subprocess) meets it first. The directory
    is made by the first process that loads this file (the xdist controller, whose environment the workers inherit)
    and removed by it at the end, so a run never sees another run's entries.
    """
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="csil-diag-test-xla-")
        os.environ["CSIL_DIAG_TEST_XLA_CACHE_OWNER"] = str(os.getpid())
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    # jax is imported already (it read its flags then), so set them in this process too.
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


_share_compilation_cache()


def pytest_unconfigure(config: pytest.Config) -> None:
    if os.environ.get("CSIL_DIAG_TEST_XLA_CACHE_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def lift_demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three lift demos with both cameras at 32×32 (robomimic layout)."""
    out = tmp_path_factory.mktemp("demos") / "lift.hdf5"
    config = DemoConfig(task="lift", n=3, cameras=("agentview", "wrist"), image_size=32, seed=0, valid_fraction=0.34)
    generate_demos(config, out, workers=1)
    return out


_WITH_A_CACHE = """
import sys
import jax

jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
out = sys.argv[2]
"""


@pytest.fixture
def fresh_and_cached(tmp_path: Path) -> Callable[..., tuple[dict, dict]]:
    """run(script, *args) → (fresh, cached): ``script`` (which sees ``out``, an .npz path to save to, and its own
    arguments from ``sys.argv[3:]``) run in two processes sharing a new persistent XLA cache, the first compiling and
    writing it, the second reading it."""

    def run(script: str, *args: str) -> tuple[dict, dict]:
        cache = tmp_path / "xla"
        outs = []
        for k in range(2):
            out = tmp_path / f"out{k}.npz"
            subprocess.run([sys.executable, "-c", _WITH_A_CACHE + script, str(cache), str(out), *args], check=True)
            outs.append(dict(np.load(out)))
            if k == 0:
                assert any(cache.iterdir()), "the first process wrote nothing to the persistent cache"
        return outs[0], outs[1]

    return run
