"""Run directories written by the previous code layout (82219a0, tests/data/old_layout/README.md) resume and report
with today's code: the same identity, their rows kept, new units added after them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from csil_diag.csil.train_run import TrainRun
from csil_diag.diag.entropy_run import EntropyRun
from csil_diag.report.pdf import build_report
from tests.test_entropy import tiny_config
from tests.test_train import tiny

OLD = Path(__file__).parent / "data" / "old_layout"
pytestmark = pytest.mark.slow


@pytest.fixture
def old(tmp_path: Path) -> Path:
    shutil.copytree(OLD, tmp_path / "old")
    return tmp_path / "old"


def test_an_old_entropy_run_resumes_with_a_new_seed_and_reports(old: Path, tmp_path: Path) -> None:
    demos, out = old / "lift.hdf5", old / "entropy"
    before = pd.read_parquet(out / "entropy.parquet")
    saved = json.loads((out / "config.json").read_text())
    with EntropyRun(tiny_config(demos), out, 1) as run:
        assert run.identity() == saved["identity"]  # today's identity of the same settings is the old one
        assert_frame_equal(run.run(), before)  # every point is there: nothing is recomputed
    with EntropyRun(tiny_config(demos, seeds=(0, 1)), out, 1) as run:
        table = run.run()
    assert sorted(table["seed"].unique()) == [0, 1]
    assert_frame_equal(table[table["seed"] == 0].reset_index(drop=True), before)
    assert len(table[table["seed"] == 1]) == len(before)  # the same points and splits for the new seed
    now = json.loads((out / "config.json").read_text())
    assert now["config"]["seeds"] == [0, 1] and now["identity"] == saved["identity"]
    assert now["created"] == saved["created"]

    summary = build_report([out, old / "train"], tmp_path / "report.pdf")
    assert (tmp_path / "report.pdf").stat().st_size > 10_000 and summary.pages >= 3


def test_an_old_train_run_resumes_with_a_raised_budget(old: Path) -> None:
    demos, out = old / "lift.hdf5", old / "train"
    before = pd.read_parquet(out / "metrics.parquet")
    saved = json.loads((out / "config.json").read_text())
    events: list[str] = []
    with TrainRun(tiny(demos, steps=60), out, 1) as run:
        table = run.run(lambda kind, info: events.append(kind))
    assert "resume" in events and "bc" not in events  # continued from the old checkpoint, no pre-training again
    kept = table[table["segment"] <= before["segment"].max()].reset_index(drop=True)
    assert_frame_equal(kept, before)
    evals = table[table["kind"] == "eval"]
    assert evals["env_steps"].max() >= 60 and len(evals) == len(before[before["kind"] == "eval"]) + 1
    now = json.loads((out / "config.json").read_text())
    assert now["created"] == saved["created"] and now["identity"]["steps"] == 60
