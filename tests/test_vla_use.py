"""π0 in use: the batched policy, the demo-embedding cache, `--input pi0…` in the entropy run, `vla eval`.

All on a random-init π0 small enough to compile in seconds, and the 32-px lift demos of conftest.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import h5py
import jax
import numpy as np
import pandas as pd
import pytest

from csil_diag.cli import main
from csil_diag.config import BCConfig, HetStatConfig
from csil_diag.data.robomimic import ALIASES, load_episode, open_demos
from csil_diag.diag.entropy_run import EntropyConfig, EntropyRun, default_mode
from csil_diag.errors import UserError
from csil_diag.features.sources import featurize
from csil_diag.features.spec import InputSpec
from csil_diag.vla import config as vc
from csil_diag.vla import pi0
from csil_diag.vla.checkpoint import NormStats, save_checkpoint
from csil_diag.vla.embed import ensure_embeddings
from csil_diag.vla.evaluate import EvalConfig, evaluate_model, write_result
from csil_diag.vla.policy import ChunkedActor, VLAPolicy
from csil_diag.vla.tokenizer import ByteTokenizer

# 32-px cameras in 8-px patches (16 tokens each), one layer per tower: compiles in a few seconds.
SMALL = vc.Pi0Config(
    llm=vc.GemmaConfig(width=32, depth=1, mlp_dim=64, num_heads=2, num_kv_heads=1, head_dim=8),
    expert=vc.GemmaConfig(width=16, depth=1, mlp_dim=32, num_heads=2, num_kv_heads=1, head_dim=8),
    siglip=vc.SiglipConfig(width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=(8, 8), image_size=32),
    vocab_size=259,
    action_dim=8,
    action_horizon=4,
    max_token_len=16,
    dtype="float32",
    cameras=("base_0_rgb", "left_wrist_0_rgb"),
)
HETSTAT = HetStatConfig(hidden=(32, 32), bottleneck=8, features=64, covariance_blocks=2)
BATCH = 2  # policy / embedding tests; rollouts with one env compile batch 1


def _save_model(path: Path, seed: int) -> Path:
    params = pi0.init_params(SMALL, jax.random.key(seed, impl="unsafe_rbg"))
    stats = {
        "state": NormStats(np.zeros(8, np.float32), np.ones(8, np.float32)),
        "actions": NormStats(np.zeros(8, np.float32), 0.5 * np.ones(8, np.float32)),
    }
    save_checkpoint(path, SMALL, params, norm_stats=stats, tokenizer=ByteTokenizer(SMALL.max_token_len))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    return _save_model(root / "m0", 0), _save_model(root / "m1", 1)


@pytest.fixture(scope="module")
def demos(lift_demos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of conftest's camera demos, so the embedding cache lands in this module's tmp dir."""
    out = tmp_path_factory.mktemp("data") / "lift.hdf5"
    shutil.copy(lift_demos, out)
    return out


@pytest.fixture(scope="module")
def lowdim_demos(demos: Path) -> Path:
    """The same demos with every camera image removed."""
    out = demos.with_name("lowdim.hdf5")
    shutil.copy(demos, out)
    with h5py.File(out, "a") as f:
        for demo in f["data"].values():
            for group in ("obs", "next_obs"):
                for key in [*ALIASES, *ALIASES.values()]:
                    if key in demo[group]:
                        del demo[group][key]
    return out


def _demo_obs(demos: Path, n: int) -> list[dict[str, np.ndarray]]:
    with open_demos(demos) as f:
        ep = load_episode(f, "demo_0")
    return [{k: v[t] for k, v in ep.obs.items()} for t in range(n)]


# ------------------------------------------------------------------------------------------ policy
def test_policy_returns_chunks_and_embeddings(models: tuple[Path, Path], demos: Path) -> None:
    policy = VLAPolicy.load(models[0], batch_size=BATCH)
    obs = _demo_obs(demos, 3)  # 3 rows: one full batch and one padded
    out = policy(obs, "lift", [0, 1, 2])
    assert out.actions.shape == (3, SMALL.action_horizon, 7) and out.embedding.shape == (3, SMALL.expert.width)
    assert np.all(np.abs(out.actions) <= 1.0) and np.all(np.isfinite(out.embedding))
    # Noise is drawn per observation id: the same row gives the same chunk however it is batched.
    alone = policy(obs[2:], "lift", [2])
    np.testing.assert_allclose(alone.actions[0], out.actions[2], atol=1e-5)
    other = policy(obs[2:], "lift", [7])
    assert not np.allclose(other.actions[0], out.actions[2])
    np.testing.assert_allclose(other.embedding, alone.embedding, atol=1e-5)  # the state site ignores noise
    prefix = VLAPolicy.load(models[0], batch_size=BATCH, site="prefix")
    assert prefix.width == SMALL.llm.width and prefix(obs[:1], "lift", [0]).embedding.shape == (1, SMALL.llm.width)
    with pytest.raises(UserError, match="needs the wrist camera"):
        policy([{k: v for k, v in o.items() if k != "wrist"} for o in obs], "lift", [0, 1, 2])
    with pytest.raises(UserError, match="unknown embedding site"):
        VLAPolicy.load(models[0], site="middle")


def test_chunked_actor_replans_every_n_steps(models: tuple[Path, Path], demos: Path) -> None:
    policy = VLAPolicy.load(models[0], batch_size=BATCH)
    obs = _demo_obs(demos, 2)
    actor = ChunkedActor(policy, "lift", replan=2)
    first, emb = actor(obs, [0, 1], [True, True])
    second, emb2 = actor(obs, [0, 1], [False, False])
    assert actor.calls == 1 and first.shape == (2, 7) and emb.shape == (2, SMALL.expert.width)
    chunk = policy(obs, "lift", [0, 1]).actions
    np.testing.assert_allclose(first, chunk[:, 0], atol=1e-5)
    np.testing.assert_allclose(second, chunk[:, 1], atol=1e-5)
    np.testing.assert_array_equal(emb2, emb)  # the last embedding is reused within a chunk
    actor(obs[:1], [0], [False])  # chunk used up: re-query env 0 only
    actor(obs[1:], [1], [True])  # a fresh episode re-queries even mid-chunk
    assert actor.calls == 3 and actor.queries == 4
    with pytest.raises(UserError, match="--replan must be within 1 … 4"):
        ChunkedActor(policy, "lift", replan=5)


# ------------------------------------------------------------------------------------------ embeddings
def test_embedding_cache_is_reused_and_keyed_by_model_and_dataset(
    models: tuple[Path, Path], demos: Path, tmp_path: Path
) -> None:
    policy = VLAPolicy.load(models[0], batch_size=BATCH)
    first = ensure_embeddings(policy, demos)
    assert first.computed and first.path.parent == Path(f"{demos}.embeddings") and first.obs_per_s > 0
    with open_demos(demos) as f:
        lengths = {n: len(f["data"][n]["actions"]) for n in f["data"]}
    assert first.table.demos == sorted(lengths) and first.n_states == sum(lengths.values())
    assert first.table.actions.shape == (first.n_states, 7) and first.width == SMALL.expert.width
    # the cached action of a state is the first action of the VLA's chunk for it
    obs = _demo_obs(demos, 3)
    np.testing.assert_allclose(first.outputs.actions["demo_0"][:3], policy(obs, "lift", [0, 1, 2]).actions[:, 0], 1e-5)

    mtime = first.path.stat().st_mtime_ns
    again = ensure_embeddings(policy, demos)
    assert not again.computed and again.path == first.path and first.path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.table.embeddings, first.table.embeddings)

    other_model = ensure_embeddings(VLAPolicy.load(models[1], batch_size=BATCH), demos)
    assert other_model.computed and other_model.path != first.path
    other_site = ensure_embeddings(VLAPolicy.load(models[0], batch_size=BATCH, site="prefix"), demos)
    assert other_site.computed and other_site.width == SMALL.llm.width and other_site.path != first.path
    changed = tmp_path / "lift.hdf5"
    shutil.copy(demos, changed)
    with h5py.File(changed, "a") as f:
        f["data"].attrs["note"] = "edited"
    other_data = ensure_embeddings(policy, changed)
    assert other_data.computed and other_data.path.name != first.path.name
    assert first.path.exists() and len(list(first.path.parent.iterdir())) == 3


def test_pi0_features_slice_the_model_values() -> None:
    spec = InputSpec.parse("pi0[2:5]+joints")
    obs = {"robot0_joint_pos": np.zeros(7), "robot0_gripper_qpos": np.ones(2)}
    x = featurize(spec, obs, {"pi0": np.arange(16.0)})
    np.testing.assert_array_equal(x, [2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    with pytest.raises(UserError, match="needs the model's values"):
        featurize(spec, obs)
    with pytest.raises(UserError, match="outside pi0's width 16"):
        featurize(InputSpec.parse("pi0[:9999]"), obs, {"pi0": np.zeros(16)})


# ------------------------------------------------------------------------------------------ entropy
def _entropy_config(demos: Path, model: Path, **kw) -> EntropyConfig:
    base = EntropyConfig(
        task="lift",
        input="pi0+joints",
        demos=str(demos),
        steps=2,
        every=1,
        episodes=1,
        eval_episodes=1,
        seeds=(0,),
        k_samples=4,
        bootstrap=20,
        horizon=10,
        hetstat=HETSTAT,
        bc=BCConfig(mode=default_mode("pi0+joints")),
        model=str(model),
    )
    return replace(base, **kw)


def test_entropy_run_with_pi0_input_composes_with_the_vla(
    models: tuple[Path, Path], demos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    run = EntropyRun(_entropy_config(demos, models[0]), out, workers=0)
    table = run.run()
    assert sorted(table.step.unique()) == [0, 1, 2] and set(table.split) == {"train", "valid", "online"}
    assert (table["mode"] == "residual").all() and (table.site == "state").all()
    assert (table.vla_model == run.vla.fingerprint).all()
    assert run.train.x.shape[1] == SMALL.expert.width + 9
    online = table[table.split == "online"]
    assert online.n_states.gt(0).all() and online.entropy.notna().all() and online.auroc_valid.notna().all()
    # At step 0 the HetStat mean is 0, so the residual policy's action is the VLA's own (clipped) action:
    # the demo MSE then measures the cached VLA actions, i.e. the base actions reach the evaluation.
    first = table[(table.step == 0) & (table.split == "train")].iloc[0]
    vla_mse = np.mean((np.clip(run.train.base_actions, -0.999, 0.999) - run.train.actions) ** 2)
    assert first.demo_mse == pytest.approx(vla_mse, rel=1e-4)
    saved = json.loads((out / "config.json").read_text())
    assert saved["identity"]["vla_model"] == run.vla.fingerprint and saved["identity"]["site"] == "state"
    assert saved["vla"]["width"] == SMALL.expert.width
    other = EntropyRun(_entropy_config(demos, models[1]), out, workers=0)
    with other, pytest.raises(UserError, match=r"other settings: --model \(its fingerprint\)"):
        other.run()  # the VLA's fingerprint is known once it is loaded: a finished run still checks it
    again = EntropyRun(_entropy_config(demos, models[0]), out, workers=0)
    pd.testing.assert_frame_equal(again.run(), table)
    assert again.vla is None  # finished: π0 was not loaded


@pytest.mark.slow
def test_side_by_side_rollouts_give_the_numbers_of_separate_ones(
    models: tuple[Path, Path], demos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A point's stochastic and deterministic rollouts share each step's π0 call and env round trip: every number
    must equal the one the two rollouts give one after the other (unequal groups: 2 stochastic, 1 deterministic)."""
    from csil_diag.diag import entropy_run

    infer = VLAPolicy.infer
    calls = {"n": 0}

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        return infer(self, *args, **kwargs)

    ensure_embeddings(VLAPolicy.load(models[0], batch_size=BATCH), demos)  # cached before counting
    monkeypatch.setattr(VLAPolicy, "infer", counted)
    config = _entropy_config(demos, models[0], episodes=2, eval_episodes=1, steps=1, every=1)
    runs = {}
    for joint in (True, False):
        monkeypatch.setattr(entropy_run, "JOINT_ROLLOUT_ENVS", 16 if joint else 0)
        run = EntropyRun(config, tmp_path / str(joint), workers=0)
        assert run.joint_rollouts is joint and run.n_envs == (3 if joint else 2) and run.policy_batch == 2
        start = calls["n"]
        runs[joint] = (run.run(), calls["n"] - start)
    pd.testing.assert_frame_equal(runs[True][0], runs[False][0])
    online = runs[True][0][runs[True][0].split == "online"]
    assert online.n_states.gt(0).all() and online.success_rate.notna().all()
    for name in ("seed0_step00000000.npz", "seed0_step00000001.npz"):
        joint_states, separate_states = (
            np.load(tmp_path / "True" / "features" / name),
            np.load(tmp_path / "False" / "features" / name),
        )
        for key in ("x", "episode", "t", "success"):
            np.testing.assert_array_equal(joint_states[key], separate_states[key])
    # One model call a step for both kinds, instead of one each.
    assert 0 < runs[True][1] < runs[False][1]


def test_lowdim_identity_has_no_vla_fields(lift_demos: Path) -> None:
    config = EntropyConfig(task="lift", input="joints+object", demos=str(lift_demos))
    assert not config.uses_vla and default_mode("joints+object") == "head"
    assert not {"model", "site", "replan"} & set(config.identity())


# ------------------------------------------------------------------------------------------ eval
def test_vla_eval_reports_a_success_rate(models: tuple[Path, Path], tmp_path: Path) -> None:
    config = EvalConfig(task="lift", episodes=2, replan=2, horizon=5, envs=1)
    result = evaluate_model(models[0], config, workers=0)
    assert 0.0 <= result.success_rate <= 1.0 and result.lengths == [5, 5]
    assert result.model_calls == 2 * 3  # 5 steps at replan 2: queries at steps 0, 2, 4 of each episode
    path = write_result(result, tmp_path / "eval" / "lift.json")
    saved = json.loads(path.read_text())
    assert saved["episodes"] == 2 and saved["success_rate"] == result.success_rate and saved["mean_length"] == 5
    assert saved["model"] == result.model and saved["env_steps_per_s"] > 0


# ------------------------------------------------------------------------------------------ CLI
def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run ``csil-diag`` in this process (no interpreter start-up per case): exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["csil-diag", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_cli_embed_prints_throughput_and_reuses(
    models: tuple[Path, Path], demos: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    args = ("embed", "--model", str(models[0]), "--demos", str(demos), "--batch", str(BATCH), "--seed", "3")
    code, out, err = _cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "obs/s at batch 2" in out and "seed3" in out
    code, out, _ = _cli(monkeypatch, capsys, *args)
    assert code == 0 and "reused the cached embeddings" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("vla", "eval", "--task", "lift", "--model", "ABSENT"), "no checkpoint directory"),
        (("embed", "--model", "ABSENT", "--demos", "DEMOS"), "no checkpoint directory"),
        (
            ("embed", "--model", "M0", "--demos", "LOWDIM"),
            "csil-diag demos --task lift --cameras agentview,wrist --image-size 32",
        ),
        (
            ("entropy", "--task", "lift", "--input", "pi0[:9999]+joints", "--model", "M0", "--demos", "DEMOS"),
            "slice pi0[:9999] is outside pi0's width 16",
        ),
        (
            ("entropy", "--task", "lift", "--input", "pi0+joints", "--site", "middle", "--demos", "DEMOS"),
            "--site must be one of",
        ),
        (("entropy", "--task", "lift", "--mode", "sideways", "--demos", "DEMOS"), "mode must be one of"),
    ],
)
def test_cli_errors_are_one_line(
    models: tuple[Path, Path],
    demos: Path,
    lowdim_demos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    args: tuple[str, ...],
    message: str,
) -> None:
    names = {"ABSENT": tmp_path / "absent", "DEMOS": demos, "LOWDIM": lowdim_demos, "M0": models[0]}
    args = tuple(str(names.get(a, a)) for a in args)
    if args[0] == "entropy":
        args = (*args, "--out", str(tmp_path / "run"))
    code, _, err = _cli(monkeypatch, capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ compare (Fig. 6.6)
def test_compare_cells_refuse_a_sliced_spec_across_widths(models: tuple[Path, Path]) -> None:
    from csil_diag.diag.sweep import compare_cells

    cells = compare_cells(list(models), ["a", "b"], "pi0[:8]+joints", [32, 32])
    assert [c.input for c in cells] == ["pi0[:8]+joints"] * 2 and cells[0].columns["model"] == "a"
    with pytest.raises(UserError, match=r"slices π0's embedding but the models' site widths differ \(a 32, b 64\)"):
        compare_cells(list(models), ["a", "b"], "pi0[:8]+joints", [32, 64])
    assert len(compare_cells(list(models), ["a", "b"], "pi0+joints", [32, 64])) == 2  # unsliced: fine
    with pytest.raises(UserError, match=r"model a: slice pi0\[:48\] is outside pi0's width 32"):
        compare_cells(list(models), ["a", "b"], "pi0[:48]+joints", [32, 32])
    with pytest.raises(UserError, match="--labels must name each"):
        compare_cells(list(models), ["a", "a"], "pi0+joints", [32, 32])


@pytest.mark.slow
def test_compare_sweep_with_the_parameter_audit(models: tuple[Path, Path], demos: Path, tmp_path: Path) -> None:
    from csil_diag.diag.sweep import Sweep, compare_cells, write_audit
    from csil_diag.report.pdf import build_report

    out = tmp_path / "cmp"
    cells = compare_cells(list(models), ["m0", "m1"], "pi0+joints", [SMALL.expert.width] * 2)
    sweep = Sweep(out, "compare", replace(_entropy_config(demos, models[0]), model=None), cells, "test")
    write_audit(out, models[0], list(models), ["m0", "m1"])
    result = sweep.run(parallel=2, workers_per_run=0)
    assert not result.failed and set(result.summary.model) == {"m0", "m1"}
    fingerprints = result.summary.groupby("model").vla_model.unique()
    assert fingerprints["m0"][0] != fingerprints["m1"][0]  # each cell really used its own checkpoint
    audit = json.loads((out / "audit.json").read_text())
    assert all(g["delta"] == 0.0 for g in audit["models"]["m0"])  # the base against itself: nothing changed
    assert any(g["relative"] > 0 for g in audit["models"]["m1"])
    report = build_report([out], tmp_path / "r.pdf")
    assert report.pages == 10  # cover, verdict, audit, overlay, H, Σ log σ, separation, per-dim, success, summary
