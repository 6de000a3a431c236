"""`csil-diag entropy` end to end on a tiny config: table contents, resume, interruption, report."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from csil_diag.config import HetStatConfig
from csil_diag.diag.entropy_run import EntropyConfig, EntropyRun
from csil_diag.diag.separation import auroc, bootstrap_gap
from csil_diag.errors import UserError
from csil_diag.report.pdf import build_report

TINY = HetStatConfig(hidden=(32, 32), bottleneck=8, features=64, covariance_blocks=2)


def tiny_config(demos: Path, **kw) -> EntropyConfig:
    base = EntropyConfig(
        task="lift",
        input="joints+object",
        demos=str(demos),
        steps=4,
        every=2,
        episodes=2,
        eval_episodes=1,
        seeds=(0,),
        k_samples=4,
        bootstrap=50,
        horizon=15,
        hetstat=TINY,
    )
    return replace(base, **kw)


def test_auroc_and_gap_known_values() -> None:
    assert auroc([2, 3], [0, 1]) == 1.0 and auroc([0, 1], [2, 3]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5
    assert auroc([0, 2], [1]) == 0.5
    gap, lo, hi = bootstrap_gap([3.0, 3.0, 5.0, 5.0], [0, 0, 1, 1], [1.0, 1.0], [0, 1], n_boot=200)
    assert gap == 3.0 and lo <= gap <= hi and lo >= 2.0 - 1e-9


@pytest.fixture(scope="module")
def tiny_run(lift_demos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    EntropyRun(tiny_config(lift_demos), out, workers=0).run()
    return out


def test_run_writes_a_self_describing_directory(tiny_run: Path) -> None:
    table = pd.read_parquet(tiny_run / "entropy.parquet")
    assert sorted(table.step.unique()) == [0, 2, 4]
    assert len(table) == 3 * 3 and set(table.split) == {"train", "valid", "online"}
    online = table[table.split == "online"]
    for col in (
        "auroc_valid",
        "auroc_train",
        "gap_valid",
        "gap_train_lo",
        "gap_train_hi",
        "success_rate",
        "gaussian_entropy",
        "std_dim6",
        "entropy_dim0",
        "auroc_std_dim0_valid",
    ):
        assert col in online and online[col].notna().all(), col
    assert online.gap_valid_lo.isna().all()  # one held-out demo: no cluster bootstrap possible
    assert (table.covariance == "full").all() and (table.k_samples == 4).all()
    assert online.n_states.gt(0).all()
    # per-dimension entropies add up to the entropy
    dims = table[[f"entropy_dim{i}" for i in range(7)]].sum(axis=1)
    assert ((dims - table.entropy).abs() < 1e-3).all()
    assert (tiny_run / "config.json").exists()
    assert sorted(p.name for p in (tiny_run / "checkpoints" / "seed0").iterdir()) == [
        "params_00000000.msgpack",
        "params_00000002.msgpack",
        "params_00000004.msgpack",
        "state.msgpack",
    ]
    states = pd.read_parquet(tiny_run / "states" / "seed0_step00000004.parquet")
    assert set(states.split) == {"train", "valid", "online"}


def test_rerun_resumes_and_adds_seeds(lift_demos: Path, tiny_run: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in (tiny_run / "points").iterdir()}
    EntropyRun(tiny_config(lift_demos, seeds=(0, 1)), tiny_run, workers=0).run()
    after = {p.name: p.stat().st_mtime_ns for p in (tiny_run / "points").iterdir()}
    assert all(after[name] == mtime for name, mtime in before.items())  # nothing recomputed
    assert len(after) == 6
    with pytest.raises(UserError, match="other settings"):
        EntropyRun(tiny_config(lift_demos, k_samples=8), tiny_run, workers=0)


def test_a_finished_run_reruns_without_loading_its_inputs(
    lift_demos: Path, tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class LoadedError(Exception):
        pass

    def load(self: EntropyRun) -> EntropyRun:
        raise LoadedError

    reference = pd.read_parquet(tiny_run / "entropy.parquet")
    monkeypatch.setattr(EntropyRun, "load", load)
    events: list[tuple] = []
    table = EntropyRun(tiny_config(lift_demos), tiny_run, workers=0).run(lambda *e: events.append(e))
    pd.testing.assert_frame_equal(table, reference)
    assert events == [("done", 0, step) for step in (0, 2, 4)]
    # one point missing: the run loads (to recompute it)
    partial = tmp_path / "partial"
    shutil.copytree(tiny_run, partial)
    (partial / "points" / "seed0_step00000002.parquet").unlink()
    with pytest.raises(LoadedError):
        EntropyRun(tiny_config(lift_demos), partial, workers=0).run()


def test_interrupted_run_resumes_to_the_same_numbers(lift_demos: Path, tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "interrupted"

    def stop_at_second_evaluation(event: str, seed: int, step: int) -> None:
        if event == "evaluate" and step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        EntropyRun(tiny_config(lift_demos), out, workers=0).run(stop_at_second_evaluation)
    assert [p.name for p in (out / "points").iterdir()] == ["seed0_step00000000.parquet"]
    resumed = EntropyRun(tiny_config(lift_demos), out, workers=0).run()
    reference = pd.read_parquet(tiny_run / "entropy.parquet")
    reference = reference[reference.seed == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(resumed.reset_index(drop=True), reference, check_exact=False, rtol=1e-5)


def test_without_the_initial_point_the_later_points_are_unchanged(
    lift_demos: Path, tiny_run: Path, tmp_path: Path
) -> None:
    """--no-initial-point skips step 0's evaluation only: training and every later point are the same numbers."""
    assert replace(tiny_config(lift_demos), steps=1000, every=1000, initial_point=False).points == [1000]
    assert replace(tiny_config(lift_demos), steps=1000, every=250, initial_point=False).points == [250, 500, 750, 1000]
    assert "initial_point" not in tiny_config(lift_demos).identity()  # older runs keep their identity
    table = EntropyRun(tiny_config(lift_demos, initial_point=False), tmp_path / "later", workers=0).run()
    reference = pd.read_parquet(tiny_run / "entropy.parquet")
    reference = reference[(reference.seed == 0) & (reference.step > 0)].reset_index(drop=True)
    assert sorted(table.step.unique()) == [2, 4] and set(table.columns) == set(reference.columns)
    table = table[reference.columns].reset_index(drop=True)  # step 0's rows put the BC columns last
    pd.testing.assert_frame_equal(table, reference, check_exact=False, rtol=1e-5)
    with pytest.raises(UserError, match=r"--initial-point/--no-initial-point False \(the run has None\)"):
        EntropyRun(tiny_config(lift_demos, initial_point=False), tiny_run, workers=0)


def test_report_from_a_tiny_run(tiny_run: Path, tmp_path: Path) -> None:
    summary = build_report([tiny_run], tmp_path / "r" / "stationarity.pdf")
    assert summary.pdf.exists() and summary.pdf.read_bytes().startswith(b"%PDF")
    assert summary.pages == 9 and len(summary.pngs) == 6
    assert all(p.exists() and p.stat().st_size > 10_000 for p in summary.pngs)
    with pytest.raises(UserError, match="not a csil-diag run directory"):
        build_report([tmp_path], tmp_path / "x.pdf")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("entropy", "--task", "lift", "--input", "pi0+joints", "--model", "x", "--demos", "DEMOS", "--out", "o"),
            "no checkpoint directory",
        ),
        (
            ("entropy", "--task", "lift", "--input", "object[:99]", "--demos", "DEMOS", "--out", "o"),
            "outside object's width 10",
        ),
        (
            ("entropy", "--task", "can", "--demos", "DEMOS", "--out", "o"),
            "holds lift demos but --task is can",
        ),
        (
            ("entropy", "--task", "lift", "--demos", "DEMOS", "--out", "o", "--preset", "huge"),
            "unknown preset",
        ),
        (
            ("entropy", "--task", "lift", "--demos", "DEMOS", "--out", "o", "--covariance", "banded"),
            "covariance must be",
        ),
        (("report", "NOTARUN"), "not a csil-diag run directory"),
    ],
)
def test_cli_errors_are_one_line(lift_demos: Path, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    args = tuple(str(lift_demos) if a == "DEMOS" else str(tmp_path) if a == "NOTARUN" else a for a in args)
    proc = subprocess.run([sys.executable, "-m", "csil_diag.cli", *args], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_phase_timing_breaks_a_run_down_without_changing_it(lift_demos: Path, tiny_run: Path, tmp_path: Path) -> None:
    from csil_diag.phases import phase, timing

    with phase("nothing installed"):  # no timer: a no-op
        pass
    with timing() as timer:
        EntropyRun(tiny_config(lift_demos), tmp_path / "timed", workers=0).run()
    for name in ("bc_train", "expert_states", "rollouts", "online_states"):  # the two rollouts side by side
        assert timer.seconds[name] > 0, name
    assert timer.calls["rollout/env_step"] == timer.calls["rollout/policy"] > 0
    assert timer.seconds["rollout/policy/hetstat"] <= timer.seconds["rollout/policy"]
    assert "nothing installed" not in timer.seconds
    timed = pd.read_parquet(tmp_path / "timed" / "entropy.parquet")
    untimed = pd.read_parquet(tiny_run / "entropy.parquet")  # other tests may have added seeds to it
    pd.testing.assert_frame_equal(timed, untimed[untimed.seed == 0].reset_index(drop=True))


_ENTROPY_RUN = """
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[4])
from test_entropy import tiny_config
from csil_diag.diag.entropy_run import EntropyRun

table = EntropyRun(tiny_config(Path(sys.argv[3])), Path(out).with_suffix(""), workers=0).run()
np.savez(out, **{c: table[c].to_numpy() for c in table.select_dtypes("number").columns})
"""


@pytest.mark.slow
def test_a_run_from_the_persistent_compilation_cache_equals_a_fresh_compile(lift_demos: Path, fresh_and_cached) -> None:
    """The CLI turns JAX's persistent compilation cache on by default: a whole run (BC, evaluation, rollouts) read from
    it must give the numbers of a fresh compile."""
    fresh, cached = fresh_and_cached(_ENTROPY_RUN, str(lift_demos), str(Path(__file__).parent))
    assert fresh.keys() == cached.keys() and len(fresh) > 10
    for column in fresh:
        if column != "seconds":
            np.testing.assert_array_equal(cached[column], fresh[column], err_msg=column)
