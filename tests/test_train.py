"""`csil-diag train`: a tiny CSIL / SACfD run end to end, resume to identical numbers, π0 modes, bad input."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from csil_diag.cli import main
from csil_diag.config import BCConfig, CriticConfig, CSILConfig, HetStatConfig
from csil_diag.csil.train_run import TrainConfig, TrainRun
from csil_diag.errors import UserError

TINY = HetStatConfig(hidden=(32, 32), bottleneck=8, features=32, covariance_blocks=4)
TIMING = ("segment_seconds", "env_steps_per_second")


def tiny(demos: Path, **kw) -> TrainConfig:
    base = TrainConfig(
        task="lift",
        input="joints+object",
        demos=str(demos),
        steps=40,
        eval_every=20,
        eval_episodes=1,
        entropy_episodes=1,
        n_envs=2,
        bc_steps=20,
        buffer_size=1000,
        log_every=8,
        k_samples=4,
        bootstrap=20,
        horizon=10,
        hetstat=TINY,
        critic=CriticConfig(hidden=(32, 32), bottleneck=8),
        rl=CSILConfig(batch_size=16, learning_starts=8, critic_pretrain_steps=20),
    )
    return replace(base, **kw)


def numeric(table: pd.DataFrame) -> pd.DataFrame:
    table = table.drop(columns=[c for c in TIMING if c in table])
    table = table.sort_values(["seed", "segment", "kind"], kind="stable")
    return table.select_dtypes("number").reset_index(drop=True)


@pytest.fixture(scope="module")
def csil_run(lift_demos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("train") / "csil"
    with TrainRun(tiny(lift_demos), out) as run:
        table = run.run()
    return out, table


@pytest.mark.slow
def test_csil_run_writes_every_stage(csil_run: tuple[Path, pd.DataFrame]) -> None:
    out, table = csil_run
    assert set(table.kind) == {"bc", "critic_pretrain", "train", "eval"}
    evals = table[table.kind == "eval"].sort_values("env_steps")
    assert evals.env_steps.iloc[0] == 0 and evals.env_steps.iloc[-1] >= 40  # BC start, then ≥ the budget
    assert evals.updates.iloc[-1] > 0 and (evals.updates.diff().dropna() >= 0).all()
    train = table[table.kind == "train"]
    # The coherent reward is negative (App. B), demos score higher than the policy's own online actions on average.
    assert (train.reward_demo < 0).all() and (train.reward_online < 0).all()
    assert np.isfinite(train[["critic_loss", "actor_loss", "kl_estimate", "q_mean"]].to_numpy()).all()
    assert (train.kl_estimate >= 0).all()
    for col in ("online_entropy", "valid_entropy", "online_gaussian_entropy", "auroc_gauss_valid", "success_rate"):
        assert evals[col].notna().all(), col
    saved = json.loads((out / "config.json").read_text())
    assert saved["kind"] == "train" and saved["config"]["rl"]["algo"] == "csil"
    assert list((out / "tensorboard" / "seed0").glob("events.out.tfevents.*"))
    progress = json.loads((out / "seed0" / "ckpt" / "progress.json").read_text())
    assert progress["env_steps"] == int(evals.env_steps.iloc[-1]) and progress["updates"] == int(evals.updates.iloc[-1])


def test_report_pages_from_a_train_run(csil_run: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    from csil_diag.report.pdf import build_report

    out, _ = csil_run
    summary = build_report([out], tmp_path / "rl.pdf")
    assert summary.pdf.exists() and summary.pages == 4
    assert sorted(p.name for p in summary.pngs) == ["rl_rl_entropy.png", "rl_rl_reward.png", "rl_rl_success.png"]


@pytest.mark.slow
def test_a_killed_run_resumes_to_identical_numbers(lift_demos: Path, tmp_path: Path, csil_run) -> None:
    _, uninterrupted = csil_run
    out = tmp_path / "killed"

    def stop(event: str, info: dict) -> None:
        if event == "evaluate" and info["segment"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), TrainRun(tiny(lift_demos), out) as run:
        run.run(stop)
    assert json.loads((out / "seed0" / "ckpt" / "progress.json").read_text())["segment"] == 1
    with TrainRun(tiny(lift_demos), out) as run:
        resumed = run.run()
    pd.testing.assert_frame_equal(numeric(resumed), numeric(uninterrupted))


@pytest.mark.slow
def test_a_run_killed_in_pretraining_resumes_where_it_stopped(lift_demos: Path, tmp_path: Path, monkeypatch) -> None:
    from csil_diag.csil import seed_trainer as train_run

    monkeypatch.setattr(train_run, "BC_CHUNK", 5)
    monkeypatch.setattr(train_run, "PRETRAIN_CHUNK", 5)
    monkeypatch.setattr(train_run, "PRETRAIN_SAVE_SECONDS", 0.0)  # a checkpoint after every chunk
    config = tiny(lift_demos, steps=20)  # pre-training, the BC start's evaluation, one RL segment
    with TrainRun(config, tmp_path / "whole") as run:
        whole = run.run()
    out = tmp_path / "killed"
    events: list[tuple[str, int]] = []

    def stop_at(name: str, step: int):
        def on_event(event: str, info: dict) -> None:
            events.append((event, info.get("step", -1)))
            if event == name and info["step"] == step:
                raise KeyboardInterrupt

        return on_event

    for phase in ("bc", "critic"):
        events.clear()
        with pytest.raises(KeyboardInterrupt), TrainRun(config, out) as run:
            run.run(stop_at(phase, 10))
        saved = json.loads((out / "seed0" / "pretrain" / "progress.json").read_text())
        assert (saved["phase"], saved["step"]) == (phase, 10)
    # The second run went on from BC step 10 (no BC step redone) and stopped in critic pre-training.
    assert events[0] == ("resume_bc", 10) and [s for e, s in events if e == "bc"] == [15, 20]
    events.clear()
    with TrainRun(config, out) as run:
        resumed = run.run(stop_at("never", 0))
    assert events[0] == ("resume_critic", 10) and [s for e, s in events if e == "critic"] == [15, 20]
    assert not (out / "seed0" / "pretrain").exists()  # segment 0's checkpoint superseded it
    pd.testing.assert_frame_equal(numeric(resumed), numeric(whole))


def test_rerun_of_a_finished_run_does_nothing_and_changed_settings_are_refused(lift_demos: Path, csil_run) -> None:
    out, table = csil_run
    rows = out / "seed0" / "rows"
    before = {p.name: p.stat().st_mtime_ns for p in rows.iterdir()}
    with TrainRun(tiny(lift_demos), out) as run:
        again = run.run()
    assert {p.name: p.stat().st_mtime_ns for p in rows.iterdir()} == before
    pd.testing.assert_frame_equal(numeric(again), numeric(table))
    with pytest.raises(UserError, match=r"--utd 2 \(the run has 1\)"):
        TrainRun(tiny(lift_demos, rl=replace(tiny(lift_demos).rl, utd=2)), out)


@pytest.mark.slow
def test_a_raised_step_budget_continues_a_run_exactly(lift_demos: Path, csil_run, tmp_path: Path) -> None:
    src, _ = csil_run  # steps 40, evaluations every 20
    out = tmp_path / "extended"
    shutil.copytree(src, out)
    with TrainRun(tiny(lift_demos, steps=60), out) as run:
        extended = run.run()
    with TrainRun(tiny(lift_demos, steps=60), tmp_path / "fresh") as run:
        fresh = run.run()
    pd.testing.assert_frame_equal(numeric(extended), numeric(fresh))
    assert json.loads((out / "config.json").read_text())["config"]["steps"] == 60
    with pytest.raises(UserError, match=r"--steps 30 \(the run has 60\)"):  # lowering it is another run
        TrainRun(tiny(lift_demos, steps=30), out)
    with TrainRun(tiny(lift_demos, steps=50), tmp_path / "odd") as run:  # its last segment was cut at 50
        run.run()
    with pytest.raises(UserError, match=r"--steps 60 \(the run has 50\)"):
        TrainRun(tiny(lift_demos, steps=60), tmp_path / "odd")


def test_sacfd_uses_the_task_reward_and_no_pretraining(lift_demos: Path, tmp_path: Path) -> None:
    config = tiny(lift_demos, rl=CSILConfig(algo="sacfd", batch_size=16, learning_starts=8), steps=20)
    with TrainRun(config, tmp_path / "sacfd") as run:
        table = run.run()
    assert set(table.kind) == {"train", "eval"}
    train = table[table.kind == "train"]
    assert "reward_demo" not in train or train.reward_demo.isna().all()
    assert np.isfinite(train.temperature).all() and (train.temperature > 0).all()
    # Its start actor, re-made from the seed for runs that did not save it, is the saved one: same episodes, same fit.
    from csil_diag.csil.evaluate import evaluate_run
    from csil_diag.csil.seed_trainer import START_ACTOR

    saved, saved_fit = evaluate_run(tmp_path / "sacfd", 2, ("start",))
    (tmp_path / "sacfd" / "seed0" / START_ACTOR).unlink()
    for name in ("evaluation.parquet", "evaluation_fit.parquet"):
        (tmp_path / "sacfd" / name).unlink()
    remade, remade_fit = evaluate_run(tmp_path / "sacfd", 2, ("start",))
    pd.testing.assert_frame_equal(remade, saved)
    pd.testing.assert_frame_equal(remade_fit, saved_fit)


@pytest.mark.slow
def test_residual_and_ensemble_modes_compose_with_pi0(lift_demos: Path, tmp_path: Path) -> None:
    from test_vla_use import _save_model

    demos = tmp_path / "lift.hdf5"
    shutil.copy(lift_demos, demos)  # the embedding cache lands beside the dataset
    model = _save_model(tmp_path / "pi0", 0)
    for mode in ("residual", "ensemble"):
        config = tiny(demos, input="pi0+joints", model=str(model), bc=BCConfig(mode=mode), steps=10, horizon=6)
        with TrainRun(config, tmp_path / mode) as run:
            table = run.run()
            assert run.demo["base"].shape == run.demo["action"].shape  # π0's action stored with every demo step
        evals = table[table.kind == "eval"]
        assert (evals["mode"] == mode).all() and evals.online_entropy.notna().all()
        assert evals.vla_success_rate.notna().sum() == 1  # π0 alone, measured once at the start
        train = table[table.kind == "train"]
        assert np.isfinite(train[["critic_loss", "reward_online", "reward_demo"]].to_numpy()).all()


def _cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["csil-diag", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "0"], "--steps and --eval-every must be ≥ 1"),
        (["--algo", "dqn"], "--algo must be one of csil, sacfd"),
        (["--task", "can"], "holds lift demos but --task is can"),
        (["--input", "pi0+joints", "--model", "/nonexistent/pi0"], "no checkpoint directory at /nonexistent/pi0"),
        (["--mode", "sideways"], "mode must be one of head, residual, ensemble"),
        (["--entropy-coefficient", "-1"], "--entropy-coefficient must be ≥ 0"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    extra: list[str], message: str, lift_demos: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    out = tmp_path / "run"
    args = ["train", "--task", "lift", "--demos", str(lift_demos), "--out", str(out), "--preset", "quick", *extra]
    code, err = _cli(args, monkeypatch, capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_seeds_that_evaluate_at_different_steps_aggregate_into_one_point_per_evaluation() -> None:
    from csil_diag.diag.aggregate import align_seeds, curves

    # Evaluations wait for episodes in flight: seed 0 at 0 / 6436 / 11141, seed 1 at 0 / 6447, seed 2 at 0 / 6400.
    evals = pd.DataFrame(
        {
            "run": "csil",
            "seed": [0, 0, 0, 1, 1, 2, 2],
            "env_steps": [0, 6436, 11141, 0, 6447, 0, 6400],
            "success_rate": [0.5, 0.6, 0.6, 0.4, 0.3, 0.3, 0.0],
        }
    )
    raw = curves(evals, "success_rate", by=("run",))
    assert raw.n.tolist() == [3, 1, 1, 1, 1]  # the defect: one seed per point after the first
    aligned = align_seeds(evals)
    stats = curves(aligned, "success_rate", by=("run",))
    assert stats.env_steps.tolist() == [0, 6428, 11141] and stats.n.tolist() == [3, 3, 1]
    assert stats.iqm.iloc[1] == pytest.approx(0.3)  # IQM of {0.6, 0.3, 0.0}
    assert sorted(aligned.env_steps_seed) == sorted(evals.env_steps)  # each seed's own step is kept


@pytest.mark.slow
def test_evaluate_reruns_start_and_final_on_fresh_episodes_and_remakes_bc_identically(
    csil_run: tuple[Path, pd.DataFrame], lift_demos: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from flax import serialization

    from csil_diag.csil.evaluate import evaluate_run
    from csil_diag.csil.seed_trainer import START_ACTOR, SeedTrainer
    from csil_diag.csil.train_run import load_train_config

    src, _ = csil_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    saved_start = (out / "seed0" / START_ACTOR).read_bytes()
    table, fits = evaluate_run(out, 3, ("start", "final"), ("deterministic",))
    assert len(fits) == 2 * 7 and (fits.mse >= 0).all() and set(fits["at"]) == {"start", "final"}
    assert (fits[fits["at"] == "start"].kl_to_start == 0).all() and (fits[fits["at"] == "final"].kl_to_start > 0).any()
    assert len(table) == 6 and set(table["at"]) == {"start", "final"}
    assert (table[table["at"] == "final"].env_steps >= 40).all() and (
        table[table["at"] == "start"].env_steps == 0
    ).all()
    from csil_diag.report.rl import load_train_run, summary_lines

    summary = "\n".join(summary_lines([load_train_run(out)]))
    assert "re-evaluated (deterministic, 3 fresh episodes a seed, start → final): 0: " in summary
    written = (out / "evaluation.parquet").stat().st_mtime_ns
    evaluate_run(out, 3, ("start", "final"), ("deterministic",))  # nothing to do: the file is not rewritten
    assert (out / "evaluation.parquet").stat().st_mtime_ns == written
    with TrainRun(tiny(lift_demos, steps=60), out) as run:  # extended: another final actor, whose rows are redone
        run.run()
    again, again_fits = evaluate_run(out, 3, ("start", "final"), ("deterministic",))
    assert (again[again["at"] == "final"].env_steps >= 60).all() and len(again) == 6
    pd.testing.assert_frame_equal(
        again[again["at"] == "start"].reset_index(drop=True), table[table["at"] == "start"].reset_index(drop=True)
    )
    assert (again_fits[again_fits["at"] == "final"].env_steps >= 60).all() and len(again_fits) == 14

    # A run made before the start actor was saved: BC is re-made from the seed, checked against the recorded BC row.
    (out / "seed0" / START_ACTOR).unlink()
    with TrainRun(load_train_config(out)["config_obj"], out) as run:
        run.load()
        params, bc_row = SeedTrainer(run, None, 0, lambda *a: None).start_actor()
    assert bc_row is not None and bc_row["kind"] == "bc"
    saved = serialization.from_bytes(params, saved_start)
    assert all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, params, saved)))
    (out / "evaluation.parquet").unlink()
    (out / "evaluation_fit.parquet").unlink()
    remade, remade_fits = evaluate_run(out, 3, ("start",), ("deterministic",))
    pd.testing.assert_frame_equal(remade.reset_index(drop=True), table[table["at"] == "start"].reset_index(drop=True))
    assert np.array_equal(remade_fits.mse, fits[fits["at"] == "start"].mse)
    metrics = pd.read_parquet(out / "metrics.parquet")
    metrics.loc[metrics.kind == "bc", "loss"] += 1.0
    metrics.to_parquet(out / "metrics.parquet")
    (out / "evaluation.parquet").unlink()
    code, err = _cli(["evaluate", str(out), "--episodes", "2", "--at", "start"], monkeypatch, capsys)
    assert code == 2 and "BC re-made from the seed ends at loss" in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--at", "middle"], "--at takes a comma-separated subset of start, final"),
        (["--episodes", "0"], "--episodes must be ≥ 1"),
    ],
)
def test_evaluate_bad_input_is_one_line(args, message, csil_run, tmp_path: Path, monkeypatch, capsys) -> None:
    code, err = _cli(["evaluate", str(csil_run[0]), *args], monkeypatch, capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    code, err = _cli(["evaluate", str(tmp_path / "nothing")], monkeypatch, capsys)
    assert code == 2 and "not a csil-diag run directory" in err and err.count("\n") == 1, err
