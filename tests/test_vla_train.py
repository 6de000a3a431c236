"""π0 training: dataset, flow-matching steps, fine-tuning regimes, checkpoints, resume, ``vla diff``, default model."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import h5py
import jax
import numpy as np
import pytest
import typer
from flax import traverse_util
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from csil_diag.cli.vla import vla_app
from csil_diag.errors import UserError
from csil_diag.runs import load_pytree
from csil_diag.vla import adapter, default, diff, pi0
from csil_diag.vla import config as vc
from csil_diag.vla.checkpoint import load_checkpoint
from csil_diag.vla.dataset import (
    DemoFile,
    compute_norm_stats,
    flip_axis_angle,
    load_dataset,
    make_batch,
    parse_demo_files,
    shift_images,
)
from csil_diag.vla.regimes import REGIMES, regime_config
from csil_diag.vla.tokenizer import ByteTokenizer
from csil_diag.vla.train import (
    STATE_FILE,
    TRAIN_FILE,
    TrainConfig,
    TrainJob,
    initial_params,
    partial_dir,
    run_training,
    stacked_batch,
)

# The tiny default's layout (two cameras, byte prompts, 8-d actions) at sizes that compile in seconds.
SMALL = replace(
    adapter.TINY,
    llm=vc.GemmaConfig(width=16, depth=1, mlp_dim=32, num_heads=2, num_kv_heads=1, head_dim=8),
    expert=vc.GemmaConfig(width=8, depth=1, mlp_dim=16, num_heads=2, num_kv_heads=1, head_dim=8),
    siglip=vc.SiglipConfig(width=16, depth=1, mlp_dim=32, num_heads=2, patch_size=(8, 8), image_size=32),
    action_horizon=4,
    max_token_len=24,
)
# One TrainConfig for the pre-training and the `full` / resume runs: they share one compiled step.
FAST = TrainConfig(steps=30, batch_size=8, lr=3e-3, warmup_steps=3, steps_per_call=10, save_every=10, valid_samples=0)
RANK = 2
# With one layer, the LLM's last MLP and final norm only feed prefix outputs that no loss reads: their gradient is
# zero, and their zero-initialised norm scales stay zero under any regime (as in openpi).
UNUSED = {"PaliGemma/llm/layers/pre_ffw_norm/scale", "PaliGemma/llm/final_norm/scale"}


def _flat(params: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(vla_app, name="vla")
    return app


@pytest.fixture(scope="module")
def data(lift_demos: Path) -> tuple[DemoFile, ...]:
    return (DemoFile("lift", lift_demos),)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory, data: tuple[DemoFile, ...]) -> Path:
    out = tmp_path_factory.mktemp("vla") / "base"
    run_training(TrainJob(out, SMALL, data, FAST, command="test pretrain"))
    return out


def _finetune_job(out: Path, base: Path, data: tuple[DemoFile, ...], regime: str) -> TrainJob:
    rank = RANK if regime != "full" else 0
    train = replace(FAST, regime=regime, lora_rank=rank)
    return TrainJob(out, regime_config(SMALL, regime, rank), data, train, base=base, kind="finetune")


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory, pretrained: Path, data: tuple[DemoFile, ...]) -> dict:
    """regime → (output checkpoint, the params it started from)."""
    root = tmp_path_factory.mktemp("finetuned")
    jobs = {regime: _finetune_job(root / regime, pretrained, data, regime) for regime in REGIMES}
    # What run_training starts from (the same LoRA draw).
    starts = {
        r: _flat(initial_params(job, jax.random.key(job.train.seed, impl="unsafe_rbg"))) for r, job in jobs.items()
    }
    with ThreadPoolExecutor(len(jobs)) as pool:  # XLA compiles without the GIL: the regimes compile in parallel
        list(pool.map(run_training, jobs.values()))
    return {regime: (job.out, starts[regime]) for regime, job in jobs.items()}


# ------------------------------------------------------------------------------------------ dataset
def test_dataset_shapes_chunks_and_norm_stats(data: tuple[DemoFile, ...], lift_demos: Path) -> None:
    ds = load_dataset(SMALL, data)
    with h5py.File(lift_demos) as f:
        train = [n.decode() for n in f["mask/train"][()]]
        lengths = [f[f"data/{n}/actions"].shape[0] for n in train]
        first_actions = f[f"data/{train[0]}/actions"][()].astype(np.float32)
    n = sum(lengths)
    assert len(ds) == n and ds.sources[0].demos == len(train) and ds.sources[0].samples == n
    assert {c: (v.shape, v.dtype) for c, v in ds.images.items()} == {
        c: ((n, 32, 32, 3), np.uint8) for c in ("agentview", "wrist")
    }
    assert ds.state.shape == (n, adapter.STATE_DIM) and ds.prompts == ("lift the red cube",)

    # Chunks: the next H actions; past the episode's end the last action repeats (never the next episode's).
    t0 = lengths[0]
    chunks = ds.action_chunks(np.arange(t0))
    assert chunks.shape == (t0, SMALL.action_horizon, 7)
    np.testing.assert_array_equal(chunks[0], first_actions[: SMALL.action_horizon])
    np.testing.assert_array_equal(chunks[-1], np.repeat(first_actions[-1:], SMALL.action_horizon, axis=0))
    np.testing.assert_array_equal(chunks[-2, 1:], np.repeat(first_actions[-1:], SMALL.action_horizon - 1, axis=0))
    assert ds.chunk_index[t0, 0] == t0  # the second demo starts fresh

    stats = compute_norm_stats(ds)
    np.testing.assert_allclose(stats["actions"].mean, ds.actions.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats["state"].std, ds.state.std(0), rtol=1e-5)
    np.testing.assert_allclose(stats["state"].q99, np.quantile(ds.state, 0.99, axis=0), rtol=1e-5)

    obs, actions = make_batch(SMALL, ds, np.arange(5), stats, ByteTokenizer(SMALL.max_token_len))
    assert set(obs.images) == set(SMALL.cameras) and obs.images["base_0_rgb"].shape == (5, 32, 32, 3)
    assert obs.state.shape == (5, SMALL.action_dim) and actions.shape == (5, SMALL.action_horizon, SMALL.action_dim)
    np.testing.assert_allclose(obs.state[:, :8], stats["state"].normalize(ds.state[:5]), rtol=1e-6)
    assert np.all(np.asarray(actions)[..., 7:] == 0)  # zero-padded to action_dim


def test_training_batches_drop_the_camera_the_demos_lack(data: tuple[DemoFile, ...]) -> None:
    """openpi's three cameras on robosuite demos: the right wrist is masked in every batch, so the training batch
    leaves it out, and the flow-matching loss is the masked computation's."""
    model = replace(SMALL, cameras=vc.OPENPI_CAMERAS)
    ds = load_dataset(model, data)
    stats, tokenizer = compute_norm_stats(ds), ByteTokenizer(model.max_token_len)
    config = replace(FAST, steps_per_call=2, batch_size=4)
    obs, _ = stacked_batch(model, ds, config, 0, stats, tokenizer)
    assert list(obs.images) == ["base_0_rgb", "left_wrist_0_rgb"] and obs.images["base_0_rgb"].shape[:2] == (2, 4)
    full, chunk = make_batch(model, ds, np.arange(4), stats, tokenizer)
    assert "right_wrist_0_rgb" in full.images and not np.asarray(full.image_masks["right_wrist_0_rgb"]).any()
    params = pi0.init_params(model, jax.random.key(0, impl="unsafe_rbg"))
    masked = pi0.compute_loss(model, params, jax.random.key(3), full, chunk)
    dropped = pi0.compute_loss(model, params, jax.random.key(3), pi0.drop_masked_cameras(full), chunk)
    np.testing.assert_allclose(dropped, masked, rtol=1e-5, atol=1e-6)


def test_dataset_multitask_and_errors(tmp_path: Path, lift_demos: Path) -> None:
    can = tmp_path / "can.hdf5"
    shutil.copyfile(lift_demos, can)
    with h5py.File(can, "a") as f:  # pretend these are can demos: only the task metadata matters here
        env_args = json.loads(f["data"].attrs["env_args"])
        f["data"].attrs["env_args"] = json.dumps(env_args | {"env_name": "PickPlaceCan", "task": "can"})
    ds = load_dataset(SMALL, parse_demo_files(["lift", "can"], [lift_demos, can]))
    assert ds.prompts == (adapter.prompt_for("lift"), adapter.prompt_for("can"))
    half = len(ds) // 2
    assert ds.prompts_of(np.array([0, half])) == list(ds.prompts)
    assert ds.chunk_index[half:].min() == half  # chunks never cross files

    with pytest.raises(UserError, match="holds lift demos, not can"):
        load_dataset(SMALL, [DemoFile("can", lift_demos)])
    with pytest.raises(UserError, match="one demo file per task"):
        parse_demo_files(["lift", "can"], [lift_demos])
    with h5py.File(can, "a") as f:
        for name in f["data"]:
            del f[f"data/{name}/obs/robot0_eye_in_hand_image"]
    with pytest.raises(UserError, match=r"no wrist camera images.*--cameras agentview,wrist --image-size 32"):
        load_dataset(SMALL, [DemoFile("can", can)])


def test_augmentation_shifts_images_and_keeps_the_rotation() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 10, 10, 3)).astype(np.uint8)
    shifted = shift_images(images, np.random.default_rng(1), 2)
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    for b in range(len(images)):  # every output is one 10×10 window of the edge-padded image
        windows = [padded[b, y : y + 10, x : x + 10] for y in range(5) for x in range(5)]
        assert any(np.array_equal(shifted[b], w) for w in windows)
    assert shifted.dtype == np.uint8 and not np.array_equal(shifted, images)

    state = rng.normal(size=(200, adapter.STATE_DIM)).astype(np.float32)
    axes = state[:, 3:6] / np.linalg.norm(state[:, 3:6], axis=1, keepdims=True)
    state[:, 3:6] = axes * rng.uniform(2.0, np.pi, (200, 1))  # angles near π, as a gripper pointing down
    flipped = flip_axis_angle(state, np.random.default_rng(2), min_angle=2.5)
    changed = np.any(flipped != state, axis=1)
    big = np.linalg.norm(state[:, 3:6], axis=1) > 2.5
    assert not np.any(changed & ~big) and 0.3 < changed[big].mean() < 0.7
    np.testing.assert_array_equal(np.delete(flipped, [3, 4, 5], axis=1), np.delete(state, [3, 4, 5], axis=1))
    before, after = Rotation.from_rotvec(state[:, 3:6]), Rotation.from_rotvec(flipped[:, 3:6])
    np.testing.assert_allclose(before.as_matrix(), after.as_matrix(), atol=1e-5)  # the same rotations


# ------------------------------------------------------------------------------------------ training
def test_pretraining_loss_decreases_and_checkpoint_is_openpi_layout(pretrained: Path, lift_demos: Path) -> None:
    record = json.loads((pretrained / TRAIN_FILE).read_text())
    curve = np.asarray(record["loss"]["curve"])
    assert len(curve) == FAST.steps and curve[-5:].mean() < 0.8 * curve[:5].mean()
    assert record["steps"] == FAST.steps and record["command"] == "test pretrain"
    assert record["identity"]["data"][0]["sha256"] and record["identity"]["train"]["seed"] == 0
    assert {"jax", "flax", "csil-diag"} <= set(record["versions"]) and record["seconds"]["train_steps"] > 0

    assert (pretrained / "params").is_dir() and (pretrained / "assets/csil_diag/norm_stats.json").is_file()
    assert not partial_dir(pretrained).exists()
    ckpt = load_checkpoint(pretrained)
    assert ckpt.config == SMALL and isinstance(ckpt.tokenizer, ByteTokenizer)
    assert set(ckpt.norm_stats) == {"state", "actions"} and ckpt.norm_stats["actions"].q99.shape == (7,)


@pytest.mark.parametrize("regime", ["full", "lora", "lora-frozen-vision"])
def test_regimes_freeze_exactly_the_right_leaves(finetuned: dict, regime: str) -> None:
    out, start = finetuned[regime]
    after = _flat(load_checkpoint(out).params)
    assert set(after) == set(start)
    frozen = {k for k in start if np.array_equal(start[k], after[k])}  # bit-identical after 30 steps

    def expected_frozen(k: str) -> bool:
        if regime == "full" or "lora" in k:
            return False
        return k.startswith("PaliGemma/llm/") or (regime == "lora-frozen-vision" and k.startswith("PaliGemma/img/"))

    assert frozen - UNUSED == {k for k in start if expected_frozen(k)} - UNUSED
    assert all(np.all(start[k] == 0) for k in frozen & UNUSED)  # zero-initialised and without gradient
    if regime != "full":
        assert "PaliGemma/llm/embedder/input_embedding" in frozen
        assert any("lora" in k for k in start) and not any("lora" in k for k in frozen)
    record = json.loads((out / TRAIN_FILE).read_text())
    expected = {k for k in start if expected_frozen(k)}
    assert set(record["frozen_leaves"]) == expected
    assert record["params"]["frozen"] == sum(start[k].size for k in expected)


def test_resume_after_interruption_continues_from_saved_step(
    tmp_path: Path, pretrained: Path, data: tuple[DemoFile, ...]
) -> None:
    out = tmp_path / "resumed"
    job = TrainJob(out, SMALL, data, FAST)
    seen: list[int] = []

    def interrupt(step: int, total: int, loss: float) -> None:
        seen.append(step)
        if step == 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(job, on_progress=interrupt)
    assert not out.exists()
    state = load_pytree(partial_dir(out) / STATE_FILE, None)
    assert int(state["step"]) == 20

    with pytest.raises(UserError, match="other settings"):
        run_training(replace(job, train=replace(FAST, lr=1e-3)))
    seen.clear()
    result = run_training(job, on_progress=lambda step, *_: seen.append(step))
    assert seen == [20, 30] and result.resumed and result.record["resumed_from_step"] == 20
    # Batches and noise depend on (seed, step) only: the resumed run equals the uninterrupted one.
    resumed, straight = _flat(load_checkpoint(out).params), _flat(load_checkpoint(pretrained).params)
    assert all(np.array_equal(resumed[k], straight[k]) for k in straight)
    assert run_training(job).already_done


# ------------------------------------------------------------------------------------------ vla diff
def test_diff_groups_on_a_known_modification(pretrained: Path) -> None:
    base = load_checkpoint(pretrained)
    lora_config = regime_config(SMALL, "lora", RANK)
    flat = dict(traverse_util.flatten_dict(base.params, sep="/"))
    changed = {k: v * 1.1 if k.startswith("PaliGemma/img/") else v for k, v in flat.items()}
    changed["state_proj/bias"] = flat["state_proj/bias"] + 1.0
    q = "PaliGemma/llm/layers/attn/q_einsum_1"  # one adapter on the action expert: ΔW = A·B = rank · 0.01 per entry
    w = np.asarray(flat[f"{q}/w"])
    changed[f"{q}/lora_a"] = np.full((*w.shape[:-1], RANK), 0.1, np.float32)
    changed[f"{q}/lora_b"] = np.full((*w.shape[:-2], RANK, w.shape[-1]), 0.1, np.float32)
    groups = {
        g.group: g for g in diff.param_diff(base.params, traverse_util.unflatten_dict(changed, "/"), SMALL, lora_config)
    }

    assert list(groups) == list(diff.GROUPS)
    assert groups[diff.VISION].relative == pytest.approx(0.1, rel=1e-5)
    assert groups[diff.VISION].changed == groups[diff.VISION].leaves
    for name in (diff.LLM, diff.EXPERT, diff.EMBEDDER):
        assert groups[name].delta == 0 and groups[name].changed == 0
    proj = groups[diff.PROJECTIONS]
    assert proj.changed == 1 and proj.delta == pytest.approx(np.sqrt(flat["state_proj/bias"].size), rel=1e-6)
    lora = groups[diff.LORA]
    assert lora.leaves == 1 and lora.params == changed[f"{q}/lora_a"].size + changed[f"{q}/lora_b"].size
    assert lora.delta == pytest.approx(RANK * 0.01 * np.sqrt(w.size), rel=1e-5)
    assert lora.norm == pytest.approx(np.linalg.norm(w), rel=1e-5)


def test_cli_diff_shows_what_each_regime_changed(finetuned: dict, pretrained: Path) -> None:
    result = CliRunner().invoke(_cli(), ["vla", "diff", str(pretrained), str(finetuned["lora"][0])])
    assert result.exit_code == 0, result.output
    assert all(name.split(" (")[0] in result.output for name in diff.GROUPS)
    base = load_checkpoint(pretrained)
    rows = {}
    for regime, (out, _) in finetuned.items():
        tuned = load_checkpoint(out)
        rows[regime] = {g.group: g for g in diff.param_diff(base.params, tuned.params, base.config, tuned.config)}
    assert rows["full"][diff.LLM].relative > 0 and diff.LORA not in rows["full"]
    assert rows["lora"][diff.LLM].delta == 0 and rows["lora"][diff.EMBEDDER].delta == 0
    assert rows["lora"][diff.VISION].delta > 0 and rows["lora"][diff.LORA].delta > 0
    assert rows["lora-frozen-vision"][diff.VISION].delta == 0 and rows["lora-frozen-vision"][diff.PROJECTIONS].delta > 0


def test_cli_finetune_errors(tmp_path: Path, lift_demos: Path) -> None:
    args = ["vla", "finetune", "--base", str(tmp_path), "--task", "lift", "--demos", str(lift_demos)]
    result = CliRunner().invoke(_cli(), [*args, "--out", str(tmp_path / "x"), "--regime", "partial"])
    assert isinstance(result.exception, UserError) and "--regime must be one of" in str(result.exception)
    result = CliRunner().invoke(_cli(), [*args, "--out", str(tmp_path / "x")])
    assert isinstance(result.exception, UserError) and "no config.json" in str(result.exception)


# ------------------------------------------------------------------------------------------ default model
def test_default_model_dir_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSIL_DIAG_CACHE", str(tmp_path))
    path = default.default_model_path()
    assert path.parent == tmp_path / "models" and path.name == f"pi0-tiny-default-{default.version_hash()}"
    path.mkdir(parents=True)
    (path / TRAIN_FILE).write_text("{}")
    assert default.default_model_dir(progress=False) == path  # found: nothing is built
    # The thesis' slices (pi0[:256]) must fit the default's state site, and the recipe must record that model.
    assert default.DEFAULT_MODEL.expert.width >= 256
    assert default.recipe()["model"]["expert"]["width"] == default.DEFAULT_MODEL.expert.width


def test_expert_width_sets_the_state_site_width() -> None:
    wide = adapter.with_expert_width(adapter.TINY, 1024)
    assert (wide.expert.width, wide.expert.mlp_dim) == (1024, 2048) and wide.llm == adapter.TINY.llm
    assert adapter.with_expert_width(adapter.TINY, 256) == default.DEFAULT_MODEL  # the embedded default's recipe
    with pytest.raises(UserError, match="--expert-width"):
        adapter.with_expert_width(adapter.TINY, 4)
