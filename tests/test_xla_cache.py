"""The guard that keeps loops XLA:CPU mis-runs from JAX's persistent compilation cache out of it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csil_diag.xla_cache import unbounded_while_loops


def _module(fn: Callable, *args: Any) -> Any:
    return jax.jit(fn).lower(*args).compiler_ir("stablehlo")


def test_unbounded_loops_are_told_from_constant_length_ones() -> None:
    x = jnp.ones((3, 3))
    step = lambda _, c: jnp.tanh(c @ c)
    assert (
        unbounded_while_loops(_module(lambda x: jax.lax.scan(lambda c, _: (step(0, c), None), x, None, 5)[0], x)) == 0
    )
    assert unbounded_while_loops(_module(lambda x: jax.lax.fori_loop(0, 7, step, x), x)) == 0
    assert unbounded_while_loops(_module(lambda x, n: jax.lax.fori_loop(0, n, step, x), x, 3)) == 1
    assert unbounded_while_loops(_module(lambda k: jax.random.beta(k, 1.5, 1.0, (4,)), jax.random.key(0))) >= 1
    assert unbounded_while_loops(_module(lambda x: x + 1, x)) == 0


_PROGRAMS = """
import jax.numpy as jnp
import numpy as np

import csil_diag  # noqa: F401  (installs the guard: jax is imported)

w = jnp.asarray(np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32) / 4)
x = jnp.ones((2, 8), jnp.float32)
loop = jax.jit(lambda x, w, n: jax.lax.fori_loop(0, n, lambda i, h: jnp.tanh(h @ w), x))(x, w, 3)
scan = jax.jit(lambda x, w: jax.lax.scan(lambda h, _: (jnp.tanh(h @ w), None), x, None, 3)[0])(x, w)
beta = jax.jit(lambda k: jax.random.beta(k, 1.5, 1.0, (256,)))(jax.random.key(4))
np.savez(out, loop=loop, scan=scan, beta=beta, w=w)
"""


def test_programs_from_the_persistent_cache_equal_a_fresh_compile(
    fresh_and_cached: Callable[..., tuple[dict, dict]],
) -> None:
    """Without the guard the cached traced-count loop returned its input unchanged and the Beta draws differed."""
    fresh, cached = fresh_and_cached(_PROGRAMS)
    for key in ("loop", "scan", "beta"):
        np.testing.assert_array_equal(cached[key], fresh[key], err_msg=key)
    h = np.ones((2, 8), np.float32)
    for _ in range(3):
        h = np.tanh(h @ fresh["w"])
    np.testing.assert_allclose(cached["loop"], h, atol=1e-5)  # the loop ran its 3 steps
    np.testing.assert_allclose(cached["scan"], h, atol=1e-5)


_COMPILE_ONE = """
import sys
from csil_diag.cache import enable_compilation_cache
where = enable_compilation_cache()
import jax, jax.numpy as jnp
jax.jit(lambda x: jnp.tanh(x @ x).sum())(jnp.ones((8, 8))).block_until_ready()
print(where, jax.config.jax_compilation_cache_dir)
"""


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "default"),  # the CLI's default: <CSIL_DIAG_CACHE>/xla
        ({"CSIL_DIAG_XLA_CACHE": "off"}, None),
        ({"JAX_COMPILATION_CACHE_DIR": "USER"}, "user"),  # a cache the user set is left alone
    ],
)
def test_the_cli_reuses_compiled_programs_unless_told_not_to(tmp_path: Path, env: dict, expected: str | None) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "CSIL_DIAG_XLA"))}
    env = {k: str(tmp_path / "user") if v == "USER" else v for k, v in env.items()}
    run_env = {
        **base,
        **env,
        "CSIL_DIAG_CACHE": str(tmp_path / "root"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    proc = subprocess.run([sys.executable, "-c", _COMPILE_ONE], env=run_env, capture_output=True, text=True, check=True)
    where, used = proc.stdout.split()  # what enable_compilation_cache returned, JAX's cache directory
    written = {d.name for d in tmp_path.rglob("*") if d.is_file() and "-cache" in d.name}
    if expected is None:
        assert where == used == "None" and not written
    else:
        folder = tmp_path / ("root/xla" if expected == "default" else "user")
        assert where == used == str(folder)
        assert any(folder.iterdir()), "nothing was written to the compilation cache"
