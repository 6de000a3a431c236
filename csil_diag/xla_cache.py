"""Keep the loops that XLA:CPU mis-runs from JAX's persistent compilation cache out of it.

jaxlib 0.5.3's XLA:CPU runs a while loop whose trip count is not a compile-time constant wrongly when the executable
comes from the persistent cache (``JAX_COMPILATION_CACHE_DIR``): a ``fori_loop`` with a traced bound and a matrix
product in its body ran zero times (π0's Euler loop returned its noise), and ``jax.random.beta``'s rejection loops drew
other numbers than a fresh compile (π0's flow-matching times). Loops of a constant length (``lax.scan``, ``fori_loop``
with Python-int bounds) come back right. :func:`install` makes JAX compile every program holding a loop of the first
kind afresh, never reading or writing the cache for it; all other programs still use the cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

_installed = False


def _operations(op: Any) -> Iterator[Any]:
    """Every operation nested in ``op``'s regions, depth first."""
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                yield inner
                yield from _operations(inner)


def unbounded_while_loops(module: Any) -> int:
    """How many ``stablehlo.while`` loops of an MLIR module do not compare their counter with a constant in their
    condition (a traced trip count, or a data-dependent exit)."""
    count = 0
    for op in _operations(module.operation):
        if op.name != "stablehlo.while":
            continue
        cond = op.regions[0].blocks[0]
        predicate = list(cond.operations)[-1].operands[0].owner
        bounded = getattr(predicate, "name", "") == "stablehlo.compare" and any(
            getattr(v.owner, "name", "") == "stablehlo.constant" for v in predicate.operands
        )
        count += not bounded
    return count


def install() -> bool:
    """Route programs with unbounded loops around the persistent cache (idempotent). False when this JAX has no
    ``compile_or_get_cached`` to wrap (another version: nothing is changed)."""
    global _installed
    if _installed:
        return True
    from jax._src import compilation_cache, compiler

    original = getattr(compiler, "compile_or_get_cached", None)
    backend_compile = getattr(compiler, "backend_compile", None)
    if original is None or backend_compile is None:
        return False

    def compile_or_get_cached(
        backend: Any,
        computation: Any,
        devices: Any,
        compile_options: Any,
        host_callbacks: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        cached = compilation_cache.is_cache_used(backend)  # the walk costs nothing when the cache is off
        if cached and backend.platform == "cpu" and unbounded_while_loops(computation):
            return backend_compile(backend, computation, compile_options, host_callbacks)
        return original(backend, computation, devices, compile_options, host_callbacks, *args, **kwargs)

    compiler.compile_or_get_cached = compile_or_get_cached
    _installed = True
    return True
