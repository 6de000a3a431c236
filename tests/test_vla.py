"""π0 in flax: openpi golden fixture, parameter trees, embedding sites, masking, checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import typer
from flax import traverse_util
from typer.testing import CliRunner

from csil_diag.cli.vla import vla_app
from csil_diag.errors import UserError
from csil_diag.vla import config as vc
from csil_diag.vla import pi0
from csil_diag.vla.bench import random_observation
from csil_diag.vla.checkpoint import (
    NormStats,
    load_checkpoint,
    load_params,
    restore_params,
    save_checkpoint,
    save_params,
)
from csil_diag.vla.fixture import DROPPED, F32_TOL, check_fixture
from csil_diag.vla.lora import frozen_mask
from csil_diag.vla.tokenizer import BOS, ByteTokenizer, SentencePieceTokenizer, tokenize_batch

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
FIXTURE_A = FIXTURES / "openpi_pi0_tiny_a"
PI0_TREE = FIXTURES / "openpi_param_trees" / "pi0.txt"
needs_fixture = pytest.mark.skipif(not FIXTURE_A.is_dir(), reason=f"openpi golden fixture not found at {FIXTURE_A}")

# Small enough to compile in seconds: 16 image tokens per camera, 2 layers.
TINY = vc.Pi0Config(
    llm=vc.GemmaConfig(width=32, depth=2, mlp_dim=64, num_heads=2, num_kv_heads=1, head_dim=8),
    expert=vc.GemmaConfig(width=16, depth=2, mlp_dim=32, num_heads=2, num_kv_heads=1, head_dim=8),
    siglip=vc.SiglipConfig(width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=(14, 14), image_size=56),
    vocab_size=259,
    action_dim=7,
    action_horizon=4,
    max_token_len=12,
    dtype="float32",
)
BATCH = 2


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(vla_app, name="vla")
    return app


def _perturbed(params: dict, seed: int) -> dict:
    """openpi's init zeroes the SigLIP head and norm scales; perturb every leaf so that every input matters.

    numpy draws: per-leaf jax draws would compile one random-bits program per shape (seconds on this CPU).
    """
    rs = np.random.RandomState(seed)
    return jax.tree.map(lambda x: x + 0.1 * rs.standard_normal(x.shape).astype(np.float32), params)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our own checkpoint of TINY in openpi's layout (params + norm stats + tokenizer)."""
    ckpt = tmp_path_factory.mktemp("pi0") / "tiny"
    # unsafe_rbg: the init program compiles ~3x faster on a CPU than with threefry keys.
    params = _perturbed(pi0.init_params(TINY, jax.random.key(0, impl="unsafe_rbg")), seed=1)
    stats = {
        "state": NormStats(np.arange(7, dtype=np.float32), np.ones(7, np.float32), -np.ones(7, np.float32), None),
        "actions": NormStats(np.zeros(7, np.float32), 2 * np.ones(7, np.float32)),
    }
    save_checkpoint(ckpt, TINY, params, norm_stats=stats, tokenizer=ByteTokenizer(TINY.max_token_len))
    return ckpt


def _observation(seed: int = 0) -> pi0.Observation:
    """Camera 0 valid, camera 1 valid for row 0 only, camera 2 masked; prompts: 6 of 12 tokens, cut to 12."""
    obs = random_observation(TINY, BATCH, seed)
    tokenizer = ByteTokenizer(TINY.max_token_len)
    tokens, mask = tokenize_batch(tokenizer, ["lift", "pick up the red cube"])
    cams = TINY.cameras
    masks = {cams[0]: [True, True], cams[1]: [True, False], cams[2]: [False, False]}
    return obs.replace(
        image_masks={c: jnp.asarray(m) for c, m in masks.items()},
        tokenized_prompt=jnp.asarray(tokens),
        tokenized_prompt_mask=jnp.asarray(mask),
    )


def _noise(seed: int) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (BATCH, TINY.action_horizon, TINY.action_dim))


# ------------------------------------------------------------------------------------------ openpi fixture
@pytest.fixture(scope="module")
def fixture_results() -> list:
    return check_fixture(FIXTURE_A, ("float32", "bfloat16"))


@needs_fixture
def test_fixture_matches_openpi(fixture_results: list) -> None:
    failed = [f"{r.key}: {r.max_abs:.2e} > {r.tol:.0e}" for r in fixture_results if not r.passed]
    assert not failed, failed
    tags = {r.key.split("/")[0] for r in fixture_results}
    assert tags == {"f32", "f32_init", "bf16", "bf16params"}
    assert all(r.tol <= F32_TOL for r in fixture_results if r.key.startswith("f32"))
    openpi_path = [r for r in fixture_results if not r.key.endswith(DROPPED)]
    assert len(openpi_path) == sum(
        1 for line in (FIXTURE_A / "golden_keys.txt").read_text().splitlines() if line.split("/")[0] in tags
    )
    dropped = [r for r in fixture_results if r.key.endswith(DROPPED)]
    assert {r.key.split("/")[0] for r in dropped} == {"f32", "bf16"} and len(dropped) == 4


@needs_fixture
def test_cli_check_fixture_exit_codes(fixture_results: list, tmp_path: Path) -> None:
    # Runs after the module fixture has compiled everything, so this costs only the execution.
    result = CliRunner().invoke(_cli(), ["vla", "check-fixture", str(FIXTURE_A), "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "FAIL" not in result.output
    result = CliRunner().invoke(_cli(), ["vla", "check-fixture", str(tmp_path / "absent")])
    assert isinstance(result.exception, UserError)


@needs_fixture
def test_fixture_checkpoint_restores_into_model() -> None:
    config = vc.from_fixture_meta(FIXTURE_A / "meta.json")
    params = load_params(config, FIXTURE_A / "params", dtype="bfloat16")
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("bfloat16")}
    with pytest.raises(UserError, match="do not match the model config"):
        load_params(replace(config, action_horizon=5, action_dim=8), FIXTURE_A / "params")


# ------------------------------------------------------------------------------------------ parameter trees
@pytest.mark.skipif(not PI0_TREE.is_file(), reason=f"openpi parameter tree listing not found at {PI0_TREE}")
def test_params_pi0_base_equals_openpi_tree() -> None:
    result = CliRunner().invoke(_cli(), ["vla", "params", "--preset", "pi0_base"])
    assert result.exit_code == 0
    assert result.output == PI0_TREE.read_text()


def _lora_leaves(prefix: str, suffix: str, width: int, mlp: int, rank: int, depth: int = 18) -> dict:
    """openpi's LoRA leaves for one expert: w (..., in, out) gets lora_a (..., in, r), lora_b (..., r, out)."""
    heads, kv, head_dim = 8, 1, 256
    attn = f"{prefix}/attn"
    return {
        f"{attn}/q_einsum{suffix}/lora_a": (depth, heads, width, rank),
        f"{attn}/q_einsum{suffix}/lora_b": (depth, heads, rank, head_dim),
        f"{attn}/kv_einsum{suffix}/lora_a": (depth, 2, kv, width, rank),
        f"{attn}/kv_einsum{suffix}/lora_b": (depth, 2, kv, rank, head_dim),
        f"{attn}/attn_vec_einsum{suffix}/lora_a": (depth, heads, head_dim, rank),
        f"{attn}/attn_vec_einsum{suffix}/lora_b": (depth, heads, rank, width),
        f"{prefix}/mlp{suffix}/gating_einsum_lora_a": (depth, 2, width, rank),
        f"{prefix}/mlp{suffix}/gating_einsum_lora_b": (depth, 2, rank, mlp),
        f"{prefix}/mlp{suffix}/linear_lora_a": (depth, mlp, rank),
        f"{prefix}/mlp{suffix}/linear_lora_b": (depth, rank, width),
    }


def test_pi0_lora_tree_and_freeze_rule() -> None:
    base = traverse_util.flatten_dict(pi0.abstract_params(vc.preset("pi0_base")), sep="/")
    lora = traverse_util.flatten_dict(pi0.abstract_params(vc.preset("pi0_lora")), sep="/")
    layers = "PaliGemma/llm/layers"
    expected = _lora_leaves(layers, "", 2048, 16384, 16) | _lora_leaves(layers, "_1", 1024, 4096, 32)
    assert {k: v.shape for k, v in lora.items() if k not in base} == expected
    assert all(lora[k].shape == v.shape for k, v in base.items())

    # openpi's pi0_test: LoRA on both experts freezes the 17 LLM base weights; on the LLM alone, its 9.
    frozen = [k for k, v in traverse_util.flatten_dict(frozen_mask(vc.preset("pi0_lora"), lora), sep="/").items() if v]
    assert len(frozen) == 17 and all("llm" in k and "lora" not in k for k in frozen)
    llm_only = replace(vc.preset("pi0_lora"), expert=vc.GEMMA_300M)
    tree = pi0.abstract_params(llm_only)
    assert sum(jax.tree.leaves(frozen_mask(llm_only, tree))) == 9
    assert not any(jax.tree.leaves(frozen_mask(vc.preset("pi0_base"), base)))


def test_fixture_spec_is_not_specialised() -> None:
    """Other sizes, cameras and head layouts (num_kv_heads == num_heads → openpi's fused qkv_einsum)."""
    meta = {
        "spec": {
            "vocab_size": 300,
            "llm": {"width": 48, "depth": 3, "mlp_dim": 96, "num_heads": 4, "num_kv_heads": 4, "head_dim": 8},
            "expert": {
                "width": 24,
                "depth": 3,
                "mlp_dim": 48,
                "num_heads": 4,
                "num_kv_heads": 4,
                "head_dim": 8,
                "lora_configs": {"attn": {"rank": 2, "alpha": 4.0}, "ffn": {"rank": 2, "alpha": 4.0}},
            },
            "siglip": {"width": 32, "depth": 1, "mlp_dim": 64, "num_heads": 2, "patch_size": [14, 14]},
            "action_dim": 7,
            "action_horizon": 3,
            "max_token_len": 8,
            "image_masks": {"base_0_rgb": [True], "left_wrist_0_rgb": [True]},
        }
    }
    config = vc.from_fixture_meta(meta)
    assert config.cameras == ("base_0_rgb", "left_wrist_0_rgb") and config.expert.lora("attn").scaling == 2.0
    tree = traverse_util.flatten_dict(pi0.abstract_params(config), sep="/")
    assert tree["PaliGemma/llm/layers/attn/qkv_einsum/w"].shape == (3, 3, 4, 48, 8)
    assert tree["PaliGemma/llm/layers/attn/qkv_einsum_1/lora_a"].shape == (3, 3, 4, 24, 2)
    assert tree["action_out_proj/kernel"].shape == (24, 7)
    with pytest.raises(UserError, match="share depth"):
        vc.from_fixture_meta({"spec": {**meta["spec"], "expert": {**meta["spec"]["llm"], "depth": 2}}})


# ------------------------------------------------------------------------------------------ inference + sites
def test_restored_model_returns_actions_and_sites_in_one_call(tiny_ckpt: Path) -> None:
    ckpt = load_checkpoint(tiny_ckpt)
    obs = _observation()
    out = pi0.sample_actions(ckpt.config, ckpt.params, obs, noise=_noise(0), num_steps=10)
    assert out.actions.shape == (BATCH, TINY.action_horizon, TINY.action_dim)
    widths = {"state": TINY.expert.width, "actions": TINY.expert.width, "prefix": TINY.llm.width}
    assert {k: v.shape for k, v in out.embeddings.items()} == {k: (BATCH, w) for k, w in widths.items()}
    assert all(np.isfinite(v).all() for v in jax.tree.leaves(out))

    # The state site never sees the action tokens: independent of the noise (and of the number of steps).
    other = pi0.sample_actions(ckpt.config, ckpt.params, obs, rng=jax.random.key(5), num_steps=3)
    np.testing.assert_allclose(other.embeddings["state"], out.embeddings["state"], atol=1e-6)
    np.testing.assert_allclose(other.embeddings["prefix"], out.embeddings["prefix"], atol=1e-6)
    assert np.abs(other.actions - out.actions).max() > 1e-3
    assert np.abs(other.embeddings["actions"] - out.embeddings["actions"]).max() > 1e-4


_CACHED_INFER = """
import numpy as np
from csil_diag.vla import pi0
from csil_diag.vla.bench import random_observation
from csil_diag.vla.checkpoint import load_checkpoint

ckpt = load_checkpoint(sys.argv[3])
noise = np.random.default_rng(0).standard_normal((2, ckpt.config.action_horizon, ckpt.config.action_dim), np.float32)
result = pi0.infer(ckpt.config, ckpt.params, random_observation(ckpt.config, 2, 0), noise, 3)
np.savez(out, actions=result.actions, state=result.embeddings["state"], noise=noise)
"""


@pytest.mark.slow
def test_infer_from_the_persistent_compilation_cache_equals_a_fresh_compile(
    tiny_ckpt: Path, fresh_and_cached: Callable[..., tuple[dict, dict]]
) -> None:
    """jaxlib 0.5.3's XLA:CPU, loading an executable from JAX's persistent cache, ran π0's Euler loop zero times while
    its trip count was a traced argument: the actions came back as the noise and the state embedding as zeros. A user
    with ``JAX_COMPILATION_CACHE_DIR`` set (and this suite, which shares one) got them silently."""
    fresh, cached = fresh_and_cached(_CACHED_INFER, str(tiny_ckpt))
    np.testing.assert_array_equal(cached["actions"], fresh["actions"])
    np.testing.assert_array_equal(cached["state"], fresh["state"])
    assert np.abs(fresh["actions"] - fresh["noise"]).max() > 1e-3  # the loop ran
    assert np.abs(fresh["state"]).max() > 1e-3


def test_masked_inputs_do_not_change_valid_outputs(tiny_ckpt: Path) -> None:
    ckpt = load_checkpoint(tiny_ckpt)
    config, params = ckpt.config, ckpt.params
    prefix_fn = jax.jit(pi0.prefix_pass, static_argnums=0)

    def run(obs: pi0.Observation) -> tuple[np.ndarray, pi0.Pi0Output]:
        return np.asarray(prefix_fn(config, params, obs).out), pi0.infer(config, params, obs, _noise(0), 4)

    obs = _observation()
    ref_prefix, ref = run(obs)
    valid = np.asarray(prefix_fn(config, params, obs).mask)
    cams = config.cameras
    rng = np.random.RandomState(7)
    new_pixels = {c: jnp.asarray(rng.uniform(-1, 1, obs.images[c].shape).astype(np.float32)) for c in cams}
    masked_camera = obs.replace(images={**obs.images, cams[2]: new_pixels[cams[2]]})
    # Row 1's second camera is masked too: only row 1's outputs must stay fixed for that change.
    half_masked = obs.replace(images={**obs.images, cams[1]: obs.images[cams[1]].at[1].set(new_pixels[cams[1]][1])})
    pad = ~np.asarray(obs.tokenized_prompt_mask)
    padded_prompt = obs.replace(tokenized_prompt=jnp.where(pad, 77, obs.tokenized_prompt))
    assert pad.any()

    for changed, rows in ((masked_camera, [0, 1]), (half_masked, [1]), (padded_prompt, [0, 1])):
        prefix, out = run(changed)
        for r in rows:
            np.testing.assert_allclose(prefix[r][valid[r]], ref_prefix[r][valid[r]], atol=1e-6)
            for got, want in (
                (out.actions, ref.actions),
                *((out.embeddings[k], ref.embeddings[k]) for k in ref.embeddings),
            ):
                np.testing.assert_allclose(got[r], want[r], atol=1e-6)

    # Control: a valid camera's pixels do change everything (image tokens are not trivially ignored).
    _, out = run(obs.replace(images={**obs.images, cams[0]: new_pixels[cams[0]]}))
    assert np.abs(out.embeddings["state"] - ref.embeddings["state"]).max() > 1e-4
    assert np.abs(out.actions - ref.actions).max() > 1e-4


def test_dropping_masked_cameras_matches_masking(tiny_ckpt: Path) -> None:
    ckpt = load_checkpoint(tiny_ckpt)
    config, params = ckpt.config, ckpt.params
    cams = config.cameras
    obs = _observation()  # camera 2 masked for the whole batch, camera 1 for row 1 only
    dropped = pi0.drop_masked_cameras(obs)
    assert list(dropped.images) == list(dropped.image_masks) == [cams[0], cams[1]]
    for steps in (1, 4):
        want = pi0.infer(config, params, obs, _noise(0), steps, drop_masked=False)
        got = pi0.infer(config, params, obs, _noise(0), steps)
        # Same values up to float32 summation order (shorter attention rows): a few ulps, not a changed model.
        for a, b in ((got.actions, want.actions), *((got.embeddings[k], want.embeddings[k]) for k in want.embeddings)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # The dropped camera's pixels are not even read.
    garbage = obs.replace(images={**obs.images, cams[2]: jnp.full_like(obs.images[cams[2]], jnp.nan)})
    assert np.isfinite(pi0.infer(config, params, garbage, _noise(0), 2).actions).all()

    # A camera valid for any row of the batch stays; so do all cameras when their masks are traced.
    mixed = obs.replace(image_masks={**obs.image_masks, cams[2]: jnp.array([False, True])})
    assert pi0.drop_masked_cameras(mixed) is mixed
    assert jax.jit(lambda o: len(pi0.drop_masked_cameras(o).images))(obs) == len(cams)
    # Every camera masked: one is kept so the prefix keeps its shape rules.
    none = obs.replace(image_masks={c: jnp.zeros(BATCH, bool) for c in cams})
    assert list(pi0.drop_masked_cameras(none).images) == [cams[0]]


def test_bench_compare_masked_reports_both_paths(tiny_ckpt: Path) -> None:
    from csil_diag.vla.bench import compare_masked, unmasked_cameras

    ckpt = load_checkpoint(tiny_ckpt)
    cams = ckpt.config.cameras
    result = compare_masked(ckpt.config, ckpt.params, cams[:1], batch=2, num_steps=2, rounds=1, repeats=1)
    assert result["prefix_tokens_dropped"] == 2 * ckpt.config.siglip.num_patches
    assert result["ms_masked"] > 0 and result["ms_dropped"] > 0
    assert result["max_abs_diff"] < 1e-5
    assert unmasked_cameras(ckpt.config, f"{cams[0]},{cams[1]}") == cams[:2]
    with pytest.raises(UserError, match="--valid must name cameras"):
        unmasked_cameras(ckpt.config, "right_eye")


# ------------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip(tiny_ckpt: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(tiny_ckpt)
    assert ckpt.config == TINY
    assert ckpt.norm_stats["state"].q99 is None and ckpt.norm_stats["state"].q01.tolist() == [-1.0] * 7
    np.testing.assert_array_equal(ckpt.norm_stats["actions"].std, 2 * np.ones(7))
    assert ckpt.tokenizer == ByteTokenizer(TINY.max_token_len)
    tokens, mask = ckpt.tokenizer.tokenize("pick_up\n")
    assert tokens[0] == BOS and mask.sum() == 1 + len("pick up\n") and tokens[mask.sum() - 1] == 3 + ord("\n")
    assert not tokens[~mask].any()

    # Saving what was restored gives bitwise the same params (our layout = openpi's layout).
    save_checkpoint(tmp_path / "again", ckpt.config, ckpt.params, tokenizer=ckpt.tokenizer)
    again = load_checkpoint(tmp_path / "again")
    for a, b in zip(jax.tree.leaves(ckpt.params), jax.tree.leaves(again.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert again.norm_stats is None

    with pytest.raises(UserError, match="already exists"):
        save_params(tmp_path / "again" / "params", ckpt.params)
    with pytest.raises(UserError, match="no checkpoint directory"):
        load_checkpoint(tmp_path / "absent")
    with pytest.raises(UserError, match="pass its preset"):
        (tmp_path / "openpi_like").mkdir()
        load_checkpoint(tmp_path / "openpi_like")


def test_lora_model_starts_from_base_checkpoint(tiny_ckpt: Path) -> None:
    """A LoRA config restores a base checkpoint (adapters initialised); zero adapters = the base model."""
    lora_config = replace(
        TINY,
        llm=replace(TINY.llm, lora_rank=2, lora_alpha=2.0),
        expert=replace(TINY.expert, lora_rank=4, lora_alpha=8.0),
    )
    params = load_params(lora_config, tiny_ckpt / "params", lora_rng=jax.random.key(3))
    with pytest.raises(UserError, match="missing"):
        load_params(lora_config, tiny_ckpt / "params")
    flat = traverse_util.flatten_dict(params, sep="/")
    zeroed = {k: jnp.zeros_like(v) if k.endswith("lora_b") else v for k, v in flat.items()}
    obs, noise = _observation(), _noise(1)
    base = pi0.infer(TINY, load_checkpoint(tiny_ckpt).params, obs, noise, 2)
    same = pi0.infer(lora_config, traverse_util.unflatten_dict(zeroed, sep="/"), obs, noise, 2)
    adapted = pi0.infer(lora_config, params, obs, noise, 2)
    np.testing.assert_allclose(same.actions, base.actions, atol=1e-5)
    assert np.abs(adapted.actions - base.actions).max() > 1e-6


def test_compute_loss_shape_and_rng(tiny_ckpt: Path) -> None:
    ckpt = load_checkpoint(tiny_ckpt)
    actions = jax.random.uniform(jax.random.key(2), (BATCH, TINY.action_horizon, TINY.action_dim), minval=-1)
    loss = jax.jit(pi0.compute_loss, static_argnums=0)
    a, b = (loss(TINY, ckpt.params, jax.random.key(s), _observation(), actions) for s in (0, 1))
    assert a.shape == (BATCH, TINY.action_horizon) and np.isfinite(a).all() and not np.allclose(a, b)


def test_restore_strips_nnx_value_keys_and_casts(tmp_path: Path) -> None:
    """openpi training saves nnx.State (a trailing "value" key per leaf); released checkpoints do not."""
    kernel = np.arange(6, dtype=np.float32).reshape(2, 3)
    save_params(tmp_path / "params", {"action_in_proj": {"kernel": {"value": kernel}, "bias": {"value": kernel[0]}}})
    params = restore_params(tmp_path / "params", dtype="bfloat16")
    assert params["action_in_proj"]["kernel"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(params["action_in_proj"]["kernel"], np.float32), kernel)
    with pytest.raises(UserError, match="no orbax params checkpoint"):
        restore_params(tmp_path / "absent")


def test_norm_stats_and_tokenizers() -> None:
    stats = NormStats(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0]), np.zeros(3), np.array([4.0, 4.0, 4.0]))
    x = np.array([[3.0, 0.0]])  # fewer dims than the stats: openpi cuts the stats
    np.testing.assert_allclose(stats.normalize(x), [[1.0, -1.0]], atol=1e-5)
    np.testing.assert_allclose(stats.normalize(x, quantiles=True), [[0.5, -1.0]], atol=1e-5)
    for q in (False, True):
        np.testing.assert_allclose(stats.unnormalize(stats.normalize(x, quantiles=q), quantiles=q), x, atol=1e-5)
    tokens, mask = ByteTokenizer(4).tokenize("a long prompt")  # cut to max_len, all valid
    assert tokens.tolist() == [BOS, 3 + ord("a"), 3 + ord(" "), 3 + ord("l")] and mask.all()
    with pytest.raises(UserError, match="sentencepiece"):  # not installed, or no such model file
        SentencePieceTokenizer(Path("/nonexistent/paligemma_tokenizer.model"), 48)
