"""Progress without a terminal: plain lines at the first update, every interval (heartbeat included), at the end."""

from __future__ import annotations

import io
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import Progress

from csil_diag import ui
from csil_diag.ui import PlainProgress, count_bar, make_progress, training_bar


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _lines(capsys: pytest.CaptureFixture) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_interval_zero_prints_every_update_with_count_status_and_eta(capsys: pytest.CaptureFixture) -> None:
    clock = FakeClock()
    with PlainProgress(interval=0, clock_fn=clock) as progress:
        bar = progress.add_task("entropy", total=4, status="")
        for i in range(1, 5):
            clock.t += 10
            progress.update(bar, status=f"seed 0: BC step {i}")
            progress.update(bar, completed=i)
        progress.update(bar, status="seed 0: step 4 done")  # after the last step: shown in the final line
    assert _lines(capsys) == [
        "entropy: 0/4 · seed 0: BC step 1 · 0:10 elapsed · ETA ?",
        "entropy: 1/4 · seed 0: BC step 1 · 0:10 elapsed · ETA 0:30",
        "entropy: 1/4 · seed 0: BC step 2 · 0:20 elapsed · ETA 0:20",  # counts down between steps
        "entropy: 2/4 · seed 0: BC step 2 · 0:20 elapsed · ETA 0:20",
        "entropy: 2/4 · seed 0: BC step 3 · 0:30 elapsed · ETA 0:10",
        "entropy: 3/4 · seed 0: BC step 3 · 0:30 elapsed · ETA 0:10",
        "entropy: 3/4 · seed 0: BC step 4 · 0:40 elapsed · ETA 0:00",
        "entropy: 4/4 · seed 0: step 4 done · 0:40 elapsed · done",
    ]


def test_eta_leaves_out_the_start_up_before_the_first_step(capsys: pytest.CaptureFixture) -> None:
    clock = FakeClock()
    progress = PlainProgress(interval=0, clock_fn=clock)
    bar = progress.add_task("pretrain", total=100, completed=0, status="compiling")
    clock.t += 600  # ten minutes of compilation
    progress.update(bar, completed=10)
    clock.t += 10
    progress.update(bar, completed=20)  # 1 step/s from here on
    progress.stop()  # unchanged since the last line: prints nothing
    assert _lines(capsys) == [
        "pretrain: 10/100 · compiling · 10:00 elapsed · ETA 1:30:00",  # from the start: all we know yet
        "pretrain: 20/100 · compiling · 10:10 elapsed · ETA 1:20",  # from the first step on: 1 step/s
    ]


def test_large_interval_prints_only_the_first_and_the_final_line(capsys: pytest.CaptureFixture) -> None:
    clock = FakeClock()
    with PlainProgress(interval=1000, clock_fn=clock) as progress:
        bar = progress.add_task("demos", total=50, status="")
        for i in range(1, 51):
            clock.t += 1
            progress.update(bar, completed=i, status=f"{i} attempts")
    assert _lines(capsys) == [
        "demos: 1/50 · 1 attempts · 0:01 elapsed · ETA 0:49",
        "demos: 50/50 · 50 attempts · 0:50 elapsed · done",
    ]


def test_heartbeat_prints_while_no_update_comes_and_stops_with_the_progress(capsys: pytest.CaptureFixture) -> None:
    progress = PlainProgress(interval=0.2)
    progress.start()
    bar = progress.add_task("evaluate", total=3, status="")
    progress.update(bar, completed=1, status="one long episode")
    time.sleep(0.7)  # no update: the heartbeat repeats the state at 0.2, 0.4, 0.6 s
    lines = _lines(capsys)
    assert len(lines) >= 3, lines
    assert all(line.startswith("evaluate: 1/3 · one long episode · ") and "ETA" in line for line in lines)
    progress.stop()
    assert _lines(capsys) == []  # nothing changed since the last line
    time.sleep(0.5)
    assert _lines(capsys) == []
    assert not any(t.name == "csil-diag-progress" for t in threading.enumerate())


def test_stop_prints_an_unfinished_task_only_if_it_changed(capsys: pytest.CaptureFixture) -> None:
    clock = FakeClock()
    with PlainProgress(interval=1000, clock_fn=clock) as progress:
        progress.add_task("never updated", total=5, status="")  # e.g. a run that fails before its first step
        bar = progress.add_task("interrupted", total=5, status="")
        progress.update(bar, completed=1)
        clock.t += 5
        progress.update(bar, completed=2)
    assert _lines(capsys) == [
        "interrupted: 1/5 · 0:00 elapsed · ETA ?",
        "interrupted: 2/5 · 0:05 elapsed · ETA 0:15",
    ]


def test_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ui.INTERVAL_ENV, "0")
    assert PlainProgress().interval == 0
    monkeypatch.setenv(ui.INTERVAL_ENV, "2.5")
    assert ui.plain_interval() == 2.5
    for junk in ("soon", "-1", "nan"):
        monkeypatch.setenv(ui.INTERVAL_ENV, junk)
        assert ui.plain_interval() == ui.PLAIN_INTERVAL
    monkeypatch.delenv(ui.INTERVAL_ENV)
    assert ui.plain_interval() == ui.PLAIN_INTERVAL == 20


def test_make_progress_is_rich_on_a_terminal_and_plain_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(make_progress(), PlainProgress)  # pytest's stderr is no terminal
    monkeypatch.setattr(ui, "err_console", Console(file=io.StringIO(), force_terminal=True))
    assert isinstance(make_progress(), Progress)


def test_count_bar_and_training_bar_without_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv(ui.INTERVAL_ENV, "1000")
    bar = count_bar("π0 embeddings")
    for done in range(0, 11):
        bar(done, 10)
    assert _lines(capsys) == [
        AnyMatch(r"π0 embeddings: 0/10 · 0:00 elapsed · ETA \?"),
        AnyMatch(r"π0 embeddings: 10/10 · 0:00 elapsed · done"),
    ]
    with training_bar("pretrain") as (on_progress, on_status):
        on_status("loading demos")
        on_progress(0, 30, math.nan)
        for step in (10, 20, 30):
            on_progress(step, 30, 1.0 / step)
        on_status("saving")
    assert _lines(capsys) == [
        "pretrain: loading demos…",
        AnyMatch(r"pretrain: 0/30 · compiling · 0:00 elapsed · ETA \?"),
        AnyMatch(r"pretrain: 30/30 · saving · 0:00 elapsed · done"),
    ]


class AnyMatch:
    """Equal to any string that fully matches the pattern."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and re.fullmatch(self.pattern, other) is not None

    def __repr__(self) -> str:
        return f"AnyMatch({self.pattern!r})"


@pytest.mark.slow
def test_entropy_run_to_a_pipe_prints_progress_lines(lift_demos: Path, tmp_path: Path) -> None:
    """The acceptance check: `entropy` with stderr not a terminal prints plain progress lines as it goes."""
    args = ["entropy", "--task", "lift", "--demos", str(lift_demos), "--out", str(tmp_path / "run")]
    args += ["--steps", "1", "--every", "1", "--episodes", "1", "--eval-episodes", "0", "--seeds", "0"]
    args += ["--k", "2", "--batch-size", "8", "--workers", "1"]
    env = {**os.environ, ui.INTERVAL_ENV: "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "csil_diag.cli", *args], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("entropy: ")]
    assert re.fullmatch(r"entropy: 0/2 · seed 0: evaluating step 0 · \d+:\d\d elapsed · ETA \?", lines[0]), lines
    assert any(re.fullmatch(r"entropy: 1/2 · seed 0: BC step 1 · \d+:\d\d elapsed · ETA \d+:\d\d", x) for x in lines)
    assert re.fullmatch(r"entropy: 2/2 · seed 0: step 1 done · \d+:\d\d elapsed · done", lines[-1]), lines
    assert "━" not in proc.stderr  # no rich bar drawn into the log
    assert "verdict (variance-only measure Σ log σ)" in proc.stdout


def test_a_resumed_training_run_starts_its_bars_at_what_it_restored(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restored work (a finished seed, a pre-training checkpoint) is where the bars start, not an advance: otherwise
    the ETA's rate counts it and reads ~0 (seen in a resumed RL run: ``pre-training: 22000/66000 · ETA 0:00``)."""
    from types import SimpleNamespace

    from csil_diag.cli import train as cli

    clock = FakeClock()
    monkeypatch.setattr(cli, "_progress", lambda: PlainProgress(interval=0, clock_fn=clock))
    config = SimpleNamespace(bc_steps=10, rl=SimpleNamespace(algo="csil", critic_pretrain_steps=90), steps=1000)
    config.seeds = (0, 1)

    def run(on_event) -> str:
        on_event("done", {"seed": 0, "env_steps": 1000})  # seed 0 finished in an earlier session
        on_event("resume_critic", {"seed": 1, "step": 40})
        for step in (50, 60, 70):
            clock.t += 10
            on_event("critic", {"seed": 1, "step": step})
        return "table"

    assert cli._run_train(SimpleNamespace(config=config, run=run), Path("out")) == "table"
    pre = [line for line in _lines(capsys) if line.startswith("pre-training")]
    assert pre == [
        "pre-training: 160/200 · 0:00 elapsed · ETA ?",  # the first step after resuming: no rate yet
        "pre-training: 170/200 · 0:10 elapsed · ETA 0:30",  # 1 step/s, from the steps made now
        "pre-training: 180/200 · 0:20 elapsed · ETA 0:20",
    ]


def test_a_resumed_entropy_run_starts_its_bar_at_the_points_it_has(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from types import SimpleNamespace

    from csil_diag.cli import entropy as cli

    clock = FakeClock()
    monkeypatch.setattr(cli, "_progress", lambda: PlainProgress(interval=0, clock_fn=clock))
    have = {(0, 0), (0, 2)}  # seed 0's points were written by an earlier session
    run = SimpleNamespace(config=SimpleNamespace(points=[0, 2], seeds=(0, 1)))
    run.load = lambda: run
    run.point_path = lambda seed, step: tmp_path / ("have" if (seed, step) in have else "missing")
    (tmp_path / "have").touch()

    def events(on_event) -> str:
        for seed, step in sorted(have):
            on_event("done", seed, step)
        for step in (0, 2):
            clock.t += 30
            on_event("done", 1, step)
        return "table"

    run.run = events
    assert cli._run_entropy(run, tmp_path) == "table"
    lines = _lines(capsys)
    assert lines[0] == "entropy: 2/4 · 0:00 elapsed · ETA ?"
    assert "entropy: 3/4 · seed 1: step 0 done · 0:30 elapsed · ETA 0:30" in lines  # the rate of this session's point
