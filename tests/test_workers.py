"""Worker processes die with their parent (SIGKILL, SIGTERM), and SIGTERM of `demos` stops like Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from csil_diag.procs import terminate_as_interrupt

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

START_TIMEOUT = 120.0  # spawning workers and building envs on 2 busy cores
EXIT_TIMEOUT = 30.0  # PR_SET_PDEATHSIG is immediate; the getppid poll within ~1 s


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of ``pid``, or None once it no longer exists."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name, in parentheses, may hold spaces
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has exited, whoever reaps it


def _children(parent: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == parent and _alive(int(entry)):
                pids.append(int(entry))
    return pids


def _workers(parent: int) -> list[int]:
    """The parent's multiprocessing workers (not its resource tracker)."""
    found = []
    for pid in _children(parent):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"--multiprocessing-fork" in cmdline:
            found.append(pid)
    return found


def _wait_for(condition: Callable[[], bool], timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the parent exited ({proc.returncode}) too early:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:.0f} s:\n{log.read_text()}")
        time.sleep(0.2)


def _wait_gone(pids: list[int], timeout: float = EXIT_TIMEOUT) -> list[int]:
    """The pids still alive after ``timeout`` seconds (none, hopefully)."""
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


class Launcher:
    """Starts commands with their output in a file, remembers their children, and kills what is left."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.procs: list[subprocess.Popen] = []
        self.children: set[int] = set()

    def start(self, args: list[str]) -> tuple[subprocess.Popen, Path]:
        log = self.cwd / f"log{len(self.procs)}.txt"
        with log.open("w") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd)
        self.procs.append(proc)
        return proc, log

    def start_with_workers(
        self, args: list[str], ready: Callable[[Path], bool] = lambda log: True
    ) -> tuple[subprocess.Popen, Path, list[int], list[int]]:
        """Start ``args`` and wait for its two workers; returns (process, log, workers, all its children)."""
        proc, log = self.start(args)
        _wait_for(lambda: len(_workers(proc.pid)) == 2 and ready(log), START_TIMEOUT, proc, log)
        workers, children = _workers(proc.pid), _children(proc.pid)  # children: workers + resource tracker
        self.children.update(children)
        assert set(workers) <= set(children)
        return proc, log, workers, children

    def cleanup(self) -> None:
        for proc in self.procs:
            self.children.update(_children(proc.pid))
            proc.kill()
            proc.wait()
        for pid in self.children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path)
    try:
        yield launcher
    finally:
        launcher.cleanup()


def _demos_args(out: Path) -> list[str]:
    cli = [sys.executable, "-m", "csil_diag.cli"]
    return [*cli, "demos", "--task", "lift", "--n", "50", "--workers", "2", "--out", str(out)]


def test_demos_workers_die_with_killed_parent(launcher: Launcher, tmp_path: Path) -> None:
    proc, _, workers, children = launcher.start_with_workers(_demos_args(tmp_path / "x.hdf5"))
    proc.kill()
    proc.wait()
    assert not _wait_gone(workers), f"demos workers {workers} outlived their SIGKILLed parent"
    assert not _wait_gone(children), "the parent's other children (resource tracker) outlived it"


VECTOR_SCRIPT = """
import time
from csil_diag.envs.vector import VectorEnv
venv = VectorEnv("lift", 2, workers=2)
print("ready", flush=True)
time.sleep(600)
"""


def test_vector_env_workers_die_with_killed_parent(launcher: Launcher) -> None:
    proc, _, workers, children = launcher.start_with_workers(
        [sys.executable, "-c", VECTOR_SCRIPT], ready=lambda log: "ready" in log.read_text()
    )
    proc.kill()
    proc.wait()
    assert not _wait_gone(workers), f"VectorEnv workers {workers} outlived their SIGKILLed parent"
    assert not _wait_gone(children)


@pytest.mark.slow
def test_demos_sigterm_stops_like_ctrl_c(launcher: Launcher, tmp_path: Path) -> None:
    out = tmp_path / "x.hdf5"
    proc, log, workers, _ = launcher.start_with_workers(_demos_args(out))
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=90)  # running episodes finish first
    except subprocess.TimeoutExpired:
        pytest.fail(f"`demos` did not stop within 90 s of SIGTERM:\n{log.read_text()}")
    text = log.read_text()
    assert code == 130, text
    assert "interrupted" in text and f"{out}.partial" in text, text
    assert Path(f"{out}.partial").exists() and not out.exists()
    assert not _wait_gone(workers), "demos workers outlived the SIGTERMed parent"


def test_terminate_as_interrupt_raises_and_restores() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), terminate_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler runs as soon as the signal arrives
    assert signal.getsignal(signal.SIGTERM) == before


def test_die_with_parent_exits_if_the_parent_is_already_gone() -> None:
    """A worker whose parent died before it called die_with_parent (it now has another parent) exits at once."""
    script = "from csil_diag.procs import die_with_parent; die_with_parent({pid}); print('alive')"
    gone = subprocess.run([sys.executable, "-c", script.format(pid=os.getpid() + 10**6)], capture_output=True)
    assert gone.returncode == 1 and b"alive" not in gone.stdout
    kept = subprocess.run([sys.executable, "-c", script.format(pid=os.getpid())], capture_output=True, text=True)
    assert kept.returncode == 0 and "alive" in kept.stdout, kept.stderr
