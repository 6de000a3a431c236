"""Where a sweep's cells run: a local pool of spawned processes sized to the cores, or tasks on a Ray cluster —
through one function, :func:`run_cell`, so a cell's numbers do not depend on the backend."""

from __future__ import annotations

import contextlib
import os
import queue as queue_module
import socket
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from csil_diag.config import from_dict
from csil_diag.diag.entropy_run import EntropyConfig, EntropyRun
from csil_diag.errors import UserError

Job = tuple[str, dict[str, Any], str, int]  # (label, the cell's EntropyConfig as a dict, run directory, env workers)
Report = Callable[[int, dict[str, str]], None]  # (cells still running, refused cells' messages by label)


def _thread_env(threads: int) -> dict[str, str]:
    """XLA's CPU thread pool sized to the run's share of the machine (read at JAX's import, so set in the child)."""
    return {
        "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
        f"intra_op_parallelism_threads={threads}",
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
    }


def run_cell(config: dict[str, Any], out: str, workers: int) -> str | None:
    """Run (or resume) one cell's entropy run; returns None, or the one-line message of a refused run.
    The same function runs in a local worker process and as a Ray task."""
    try:
        with EntropyRun(from_dict(EntropyConfig, config), out, workers) as run:
            run.run()
    except UserError as exc:
        return str(exc)
    return None


def local_pool(parallel: int, threads: int) -> ProcessPoolExecutor:
    """``parallel`` spawned processes, each pinned to its own ``threads`` cores (XLA sizes its pool by them) and
    with XLA, OpenMP and BLAS set for ``threads`` threads. Their env workers are not pinned (see ``procs.unpin``)."""
    from csil_diag.procs import core_slots, spawner

    context = get_context("spawn")
    queue = None
    if slots := core_slots(parallel, threads):
        queue = context.Queue()
        for slot in slots:
            queue.put(slot)
    return ProcessPoolExecutor(
        parallel, mp_context=context, initializer=_child_init, initargs=(spawner(), _thread_env(threads), queue)
    )


def _child_init(parent: tuple[int, bool], env: dict[str, str], slots: Any) -> None:
    from csil_diag.procs import die_with_parent, pin_to

    # Here, not in the parent's environment: the pool spawns its processes at submit time, so a variable set around
    # the pool's construction would already be gone. JAX reads XLA_FLAGS and sizes its thread pool at its first
    # computation, after this. The flags make a local cell compute what a Ray task computes (they change which
    # kernels XLA calls); the pinning is what bounds its threads. Pinning does not change the numbers (tested).
    os.environ.update(env)
    if slots is not None:
        with contextlib.suppress(queue_module.Empty):  # more processes than slots (one replaced): run unpinned
            pin_to(slots.get(timeout=30))
    die_with_parent(*parent)


def run_local(jobs: list[Job], parallel: int, threads: int, on_report: Report) -> dict[str, str]:
    """Cells in a local pool (:func:`local_pool`); the refused ones' messages by label."""
    failed: dict[str, str] = {}
    pool = local_pool(parallel, threads)
    pending: dict[Future, str] = {pool.submit(run_cell, cfg, out, w): label for label, cfg, out, w in jobs}
    try:
        while pending:
            finished, _ = wait(list(pending), timeout=5, return_when=FIRST_COMPLETED)
            for future in finished:
                label = pending.pop(future)
                message = future.result()
                if message:
                    failed[label] = message
            on_report(len(pending), failed)
    except BaseException:
        # Ctrl-C / SIGTERM: stop the runs now (each loses only its point in progress) instead of waiting for them.
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return failed


def run_ray(ray: Any, jobs: list[Job], threads: int, on_report: Report) -> dict[str, str]:
    """Cells as Ray tasks of ``threads`` CPUs each; the refused ones' messages by label."""
    remote = ray.remote(num_cpus=threads)(run_cell).options(runtime_env={"env_vars": _thread_env(threads)})
    refs = {remote.remote(cfg, out, w): label for label, cfg, out, w in jobs}
    failed: dict[str, str] = {}
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=5)
            for ref in ready:
                label = refs.pop(ref)
                message = ray.get(ref)
                if message:
                    failed[label] = message
            on_report(len(refs), failed)
    except BaseException:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    return failed


def cpu_busy_seconds() -> float:
    """Machine-wide busy CPU seconds so far (/proc/stat; 0 where it does not exist)."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def connect_ray(address: str | None) -> Any:
    """ray, initialised against ``address`` (None: a new local instance); unreachable → one line."""
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install 'csil-diag[ray]'") from None
    if address and address not in ("auto", "local") and not address.startswith("ray://"):
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
                pass
        except (OSError, ValueError):
            raise UserError(
                f"cannot reach a Ray cluster at {address}; start one with `ray start --head` or check --address"
            ) from None
    if not ray.is_initialized():
        try:
            ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
        except Exception as exc:  # ray raises ConnectionError, RuntimeError, … for an unusable address
            reason = " ".join(str(exc).split())[:200]
            raise UserError(f"cannot start or join Ray at {address or 'a new local instance'} ({reason})") from None
    return ray
