"""Child processes that die with their parent, and SIGTERM handled like Ctrl-C.

A spawned multiprocessing worker does not notice when its parent is killed: a ProcessPoolExecutor
worker blocks forever on its call queue (it holds the queue's write end itself, so it never sees EOF)
and keeps its env — hundreds of MB — until someone kills it by hand. ``die_with_parent`` is called
first thing in every worker so that SIGKILL, SIGTERM or the OOM killer on the parent takes its workers
along.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
POLL_SECONDS = 1.0


def spawner() -> tuple[int, bool]:
    """``(pid, on main thread)`` of the calling process: the arguments its new workers pass to ``die_with_parent``.

    Call it in the thread that starts the workers.
    """
    return os.getpid(), threading.current_thread() is threading.main_thread()


def die_with_parent(parent_pid: int, main_thread: bool = True) -> None:
    """Make this (worker) process exit as soon as process ``parent_pid`` — the one that started it — dies.

    On Linux the kernel sends SIGKILL at the parent's death (``PR_SET_PDEATHSIG``). That signal fires when
    the *thread* that started the child exits, not the process, so it is only armed when the workers were
    started from the parent's main thread (``main_thread``, see ``spawner``): the main thread lives as
    long as the process, while a worker started from a short-lived thread would be killed with that
    thread. A daemon thread that polls ``os.getppid()`` covers everything else (other OSes, prctl
    failing, workers started from other threads), within about ``POLL_SECONDS``.
    """
    if main_thread and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # no libc / no prctl: the poll thread remains
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl took effect (we were then re-parented, to init or a subreaper).
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="die-with-parent", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(POLL_SECONDS)
        if os.getppid() != parent_pid:
            os._exit(1)  # no cleanup: the parent is gone, nobody is waiting for results


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within this block, SIGTERM raises KeyboardInterrupt (like Ctrl-C), so the usual cleanup runs.

    Schedulers, ``timeout`` and ``kill`` send SIGTERM, whose default action ends the process at once,
    skipping ``finally`` blocks. Only the main thread can install handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        # None: the old handler was not installed from Python; the default is the best we can restore.
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


UNPINNED_CORES = "CSIL_DIAG_UNPINNED_CORES"  # the cores a pinned run's own children (env workers) go back to


def pin_to(cores: tuple[int, ...]) -> None:
    """Confine this process — and so the XLA thread pool it starts later, sized by the cores it may use — to ``cores``.

    XLA's CPU flags do not cap its threads (a 2048² product keeps both cores busy with
    ``--xla_cpu_multi_thread_eigen=false``); the affinity mask does. The cores it had before are kept in the
    environment for :func:`unpin`. No-op where the OS has no affinity call.
    """
    if not hasattr(os, "sched_setaffinity"):
        return
    os.environ.setdefault(UNPINNED_CORES, ",".join(map(str, sorted(os.sched_getaffinity(0)))))
    os.sched_setaffinity(0, cores)


def unpin() -> None:
    """Give a child of a pinned process (an env worker: MuJoCo and the renderer) the cores its run had before."""
    cores = os.environ.get(UNPINNED_CORES)
    if cores and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):  # a core taken away meanwhile: keep the pinned set
            os.sched_setaffinity(0, [int(c) for c in cores.split(",")])


def core_slots(parallel: int, threads: int) -> list[tuple[int, ...]] | None:
    """``parallel`` disjoint sets of ``threads`` cores each from those this process may use; None where they don't fit
    (or the OS cannot pin)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if parallel * threads > len(cores):
        return None
    return [tuple(cores[i * threads : (i + 1) * threads]) for i in range(parallel)]
