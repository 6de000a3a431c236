"""Consoles and progress display, shared by every command-line module (and below all of them: imports no CLI).

On a terminal, progress is a rich bar on stderr (description, bar, M/N, status, elapsed, ETA). Without one (a log
file: CI, nohup, a scheduler) the same calls print plain lines instead, such as
``entropy: 3/12 · seed 0: BC step 400 · 1:02 elapsed · ETA 3:05``: at the first update, then at least every
``$CSIL_DIAG_PROGRESS_INTERVAL`` seconds (default :data:`PLAIN_INTERVAL`) — a heartbeat thread repeats the current
state while no update comes, e.g. during a minutes-long evaluation — and once at completion.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.console import Console

console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True)

PLAIN_INTERVAL = 20.0  # seconds between plain progress lines without a terminal
INTERVAL_ENV = "CSIL_DIAG_PROGRESS_INTERVAL"


def plain_interval() -> float:
    """Seconds between plain progress lines: ``$CSIL_DIAG_PROGRESS_INTERVAL`` if a number ≥ 0, else 20."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, ""))
    except ValueError:
        return PLAIN_INTERVAL
    return value if value >= 0 and math.isfinite(value) else PLAIN_INTERVAL


def clock(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on."""
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float
    fields: dict[str, Any]
    added: float
    start: tuple[float, float]  # (time, completed) when added
    first: tuple[float, float] | None = None  # … at the first advance
    last: tuple[float, float] | None = None  # … at the latest advance
    last_line: float | None = None  # when this task's last line was printed
    last_state: tuple | None = None  # what that line showed (besides the times)
    finished: bool = False  # its final line is out

    @property
    def complete(self) -> bool:
        return self.total is not None and self.completed >= self.total

    def state(self) -> tuple:
        return (self.description, self.completed, self.total, self.fields.get("status", ""))


class PlainProgress:
    """The part of :class:`rich.progress.Progress` the commands use (start, stop, add_task, update, ``with``), as
    plain lines on stderr: at a task's first update, then whenever ``interval`` seconds have passed since its last
    line (updates or not: a daemon heartbeat thread), and once when it completes (printed by :meth:`stop` or the
    heartbeat, so that a status set together with the last step shows). ``interval`` 0: a line at every update, no
    heartbeat."""

    def __init__(self, interval: float | None = None, clock_fn: Callable[[], float] = time.monotonic) -> None:
        self.interval = plain_interval() if interval is None else interval
        self._now = clock_fn
        self._tasks: dict[int, _Task] = {}
        self._lock = threading.RLock()
        self._stopped = threading.Event()  # the running heartbeat's (a new one per start)
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- rich.progress.Progress's API
    def __enter__(self) -> PlainProgress:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self.interval <= 0:
                return
            self._stopped = threading.Event()
            self._thread = threading.Thread(
                target=self._heartbeat, args=(self._stopped,), name="csil-diag-progress", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopped.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with self._lock:
            for task in self._tasks.values():
                if task.finished:
                    continue
                if task.complete or (task.last_state is not None and task.state() != task.last_state):
                    self._print(task)

    def add_task(
        self, description: str, start: bool = True, total: float | None = 100.0, completed: float = 0, **fields: Any
    ) -> int:
        with self._lock:
            now = self._now()
            task_id = len(self._tasks)
            self._tasks[task_id] = _Task(description, total, completed, dict(fields), now, (now, completed))
            return task_id

    def update(
        self,
        task_id: int,
        *,
        total: float | None = None,
        completed: float | None = None,
        advance: float | None = None,
        description: str | None = None,
        visible: bool | None = None,
        refresh: bool = False,
        **fields: Any,
    ) -> None:
        with self._lock:
            task = self._tasks[task_id]
            now = self._now()
            if total is not None:
                task.total = total
            if description is not None:
                task.description = description
            if advance is not None:
                completed = task.completed + advance
            if completed is not None and completed != task.completed:
                task.completed = completed
                task.last = (now, completed)
                task.first = task.first or task.last
            task.fields.update(fields)
            if task.finished or task.complete:
                return  # the final line waits for stop() or the heartbeat
            if task.last_line is None or now - task.last_line >= self.interval:
                self._print(task)

    # ---------------------------------------------------------------- internals
    def line(self, task: _Task) -> str:
        """``description: M/N · status · elapsed · ETA`` (or ``· done`` once complete)."""
        now = self._now()
        count = f"{task.completed:g}" + (f"/{task.total:g}" if task.total is not None else "")
        parts = [f"{task.description}: {count}"]
        if task.fields.get("status"):
            parts.append(str(task.fields["status"]))
        parts.append(f"{clock(now - task.added)} elapsed")
        if task.complete:
            parts.append("done")
        elif task.total is not None:
            eta = self._eta(task, now)
            parts.append("ETA ?" if eta is None else f"ETA {clock(eta)}")
        return " · ".join(parts)

    @staticmethod
    def _eta(task: _Task, now: float) -> float | None:
        """Seconds left at the rate between the first and the last advance (leaving out start-up such as
        compilation); from the start while there is only one advance."""
        if task.last is None or task.total is None:
            return None
        (t0, c0), (t1, c1) = task.first if task.first != task.last else task.start, task.last
        if c1 <= c0 or t1 <= t0:
            return None
        rate = (c1 - c0) / (t1 - t0)
        return max(0.0, (task.total - c1) / rate - (now - t1))

    def _print(self, task: _Task) -> None:
        print(self.line(task), file=sys.stderr, flush=True)
        task.last_line = self._now()
        task.last_state = task.state()
        task.finished = task.complete

    def _heartbeat(self, stopped: threading.Event) -> None:
        """Print each unfinished task whose last line is ``interval`` old; sleep until the next one is due (a task
        added or printed meanwhile is due no earlier than that)."""
        while True:
            with self._lock:
                if stopped.is_set():
                    return
                now, wait = self._now(), self.interval
                for task in self._tasks.values():
                    if task.finished:
                        continue
                    due = (task.added if task.last_line is None else task.last_line) + self.interval
                    if now >= due:
                        self._print(task)
                        due = now + self.interval
                    wait = min(wait, due - now)
            stopped.wait(max(wait, 0.01))


def make_progress():
    """A progress display for stderr: rich's bar on a terminal, :class:`PlainProgress` lines otherwise."""
    if not err_console.is_terminal:
        return PlainProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
    )


def count_bar(description: str) -> Callable[[int, int], None]:
    """A progress callback ``(done, total)`` that draws a bar from its first call and removes it when done."""
    progress, bars = make_progress(), {}

    def update(done: int, total: int) -> None:
        if not bars:
            progress.start()
            bars["bar"] = progress.add_task(description, total=total, status="")
        progress.update(bars["bar"], completed=done)
        if done >= total:
            progress.stop()

    return update


@contextmanager
def training_bar(title: str) -> Iterator[tuple]:
    """(on_progress, on_status) callbacks for ``vla.train.run_training``: a bar with the loss and ETA on stderr
    (plain lines without a terminal, as :func:`make_progress`)."""
    progress, bars = make_progress(), {}

    def on_status(text: str) -> None:
        if bars:
            progress.update(bars["bar"], status=text)
        else:
            err_console.print(f"[dim]{title}: {text}…[/dim]")

    def on_progress(step: int, total: int, loss: float) -> None:
        if not bars:
            progress.start()
            bars["bar"] = progress.add_task(title, total=total, completed=step, status="compiling")
        status = "compiling" if math.isnan(loss) else f"loss {loss:.4f}"
        progress.update(bars["bar"], completed=step, status=status)

    try:
        yield on_progress, on_status
    finally:
        progress.stop()


def command_line() -> str:
    """The command as typed (shell-quoted), for the records a run keeps of what produced it."""
    import shlex
    import sys

    return " ".join(shlex.quote(a) for a in ["csil-diag", *sys.argv[1:]])
