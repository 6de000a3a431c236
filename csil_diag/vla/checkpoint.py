"""openpi-layout checkpoints: read openpi's, and write ours in the same layout.

    <ckpt>/params/                          orbax PyTree checkpoint of {"params": <pure dict>} (openpi's layout)
    <ckpt>/assets/<asset_id>/norm_stats.json {"norm_stats": {"state": {mean, std, q01, q99}, "actions": {…}}}
    <ckpt>/config.json                      csil-diag only: the Pi0Config (openpi keeps it in code)
    <ckpt>/assets/<asset_id>/tokenizer.json csil-diag only: the built-in tokenizer (see tokenizer.py)

A restored tree is checked leaf by leaf against the model's ``jax.eval_shape`` tree before use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from csil_diag.errors import UserError
from csil_diag.vla import config as vla_config
from csil_diag.vla.config import Pi0Config
from csil_diag.vla.lora import init_missing_lora
from csil_diag.vla.pi0 import abstract_params
from csil_diag.vla.tokenizer import Tokenizer, load_tokenizer, save_tokenizer

NORM_KEYS = ("mean", "std", "q01", "q99")


@dataclass(frozen=True)
class NormStats:
    """Per-dimension statistics of one array (openpi ``NormStats``); q01 / q99 may be absent."""

    mean: np.ndarray
    std: np.ndarray
    q01: np.ndarray | None = None
    q99: np.ndarray | None = None

    def _stats(self, x: np.ndarray, quantiles: bool) -> tuple[np.ndarray, np.ndarray]:
        """(offset, scale) cut to x's last dim (stats may cover more dims than x, as in openpi)."""
        d = np.shape(x)[-1]
        if not quantiles:
            return self.mean[..., :d], self.std[..., :d] + 1e-6
        if self.q01 is None or self.q99 is None:
            raise UserError("quantile normalisation needs q01 and q99 in norm_stats.json")
        return self.q01[..., :d], self.q99[..., :d] - self.q01[..., :d] + 1e-6

    def normalize(self, x: np.ndarray, *, quantiles: bool = False) -> np.ndarray:
        """openpi's Normalize: z-score (π0) or quantiles → [-1, 1] (π0.5 / π0-FAST)."""
        offset, scale = self._stats(x, quantiles)
        return (x - offset) / scale * 2.0 - 1.0 if quantiles else (x - offset) / scale

    def unnormalize(self, x: np.ndarray, *, quantiles: bool = False) -> np.ndarray:
        """Inverse of :meth:`normalize`."""
        offset, scale = self._stats(x, quantiles)
        return (x + 1.0) / 2.0 * scale + offset if quantiles else x * scale + offset


@dataclass(frozen=True)
class Pi0Checkpoint:
    config: Pi0Config
    params: dict
    norm_stats: dict[str, NormStats] | None
    tokenizer: Tokenizer | None


# ------------------------------------------------------------------------------------------ params
def _flat(tree: dict) -> dict[str, object]:
    return traverse_util.flatten_dict(tree, sep="/")


def _strip_value_keys(params: dict) -> dict:
    """nnx.State saves every leaf under a trailing "value" key; released checkpoints have none."""
    flat = traverse_util.flatten_dict(params)
    if flat and all(k[-1] == "value" for k in flat):
        flat = {k[:-1]: v for k, v in flat.items()}
    return traverse_util.unflatten_dict(flat)


def _item_metadata(checkpointer: ocp.PyTreeCheckpointer, path: Path) -> dict:
    meta = checkpointer.metadata(path)
    meta = getattr(meta, "item_metadata", meta)  # orbax >= 0.12 wraps the tree in StepMetadata
    return dict(meta)


def restore_params(path: Path, *, dtype: str | None = None) -> dict:
    """The pure-dict params of an orbax ``params/`` directory, on the default device, optionally cast."""
    path = Path(path).resolve()
    checkpointer = ocp.PyTreeCheckpointer()
    try:
        item = _item_metadata(checkpointer, path)
    except OSError as exc:
        raise UserError(f"no orbax params checkpoint at {path} ({exc}); expected <ckpt>/params/") from None
    if "params" not in item:
        raise UserError(f"{path} holds no 'params' item (keys: {', '.join(item)})")
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    args = ocp.ArrayRestoreArgs(sharding=sharding, dtype=None if dtype is None else jnp.dtype(dtype))
    restore_args = jax.tree.map(lambda _: args, {"params": item["params"]})
    restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(item=None, restore_args=restore_args))
    return _strip_value_keys(restored["params"])


def check_params(params: dict, expected: dict, source: str) -> None:
    """One-line :class:`UserError` unless ``params`` has exactly ``expected``'s leaves and shapes."""
    got, want = _flat(params), _flat(expected)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = [k for k in sorted(set(got) & set(want)) if tuple(np.shape(got[k])) != tuple(want[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if extra:
        problems.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} of wrong shape (e.g. {k}: {tuple(np.shape(got[k]))} vs {tuple(want[k].shape)})")
    if problems:
        raise UserError(f"params in {source} do not match the model config: {'; '.join(problems)}")


def load_params(
    config: Pi0Config, params_dir: Path, *, dtype: str | None = None, lora_rng: jax.Array | None = None
) -> dict:
    """Restore ``params_dir`` and check it against ``config``'s tree.

    With ``lora_rng``, LoRA leaves the checkpoint lacks (a base checkpoint for a LoRA config) are initialised.
    """
    params = restore_params(params_dir, dtype=dtype)
    expected = abstract_params(config)
    if lora_rng is not None:
        params = init_missing_lora(params, expected, lora_rng)
        if dtype is not None:
            params = jax.tree.map(lambda x: x.astype(dtype), params)
    check_params(params, expected, str(params_dir))
    return params


def save_params(params_dir: Path, params: dict) -> None:
    """Write ``{"params": params}`` as an orbax PyTree checkpoint (what openpi's ``restore_params`` reads)."""
    params_dir = Path(params_dir).resolve()
    if params_dir.exists():
        raise UserError(f"{params_dir} already exists; choose a new checkpoint directory")
    ocp.PyTreeCheckpointer().save(params_dir, {"params": params})


# ------------------------------------------------------------------------------------------ norm stats
def asset_dir(ckpt_dir: Path, asset_id: str | None = None) -> Path | None:
    """``<ckpt>/assets/<asset_id>``; with no id, the only asset directory (None when there is none)."""
    assets = Path(ckpt_dir) / "assets"
    if asset_id is not None:
        if not (assets / asset_id).is_dir():
            raise UserError(f"no asset directory {assets / asset_id}")
        return assets / asset_id
    found = sorted(p for p in assets.iterdir() if p.is_dir()) if assets.is_dir() else []
    if len(found) > 1:
        raise UserError(f"{assets} has several asset ids ({', '.join(p.name for p in found)}); choose one")
    return found[0] if found else None


def load_norm_stats(path: Path) -> dict[str, NormStats]:
    """An openpi ``norm_stats.json``: {"norm_stats": {key: {mean, std, q01, q99}}} (the outer key optional)."""
    data = json.loads(Path(path).read_text())
    data = data.get("norm_stats", data)
    try:
        return {
            key: NormStats(**{k: None if v.get(k) is None else np.asarray(v[k], np.float32) for k in NORM_KEYS})
            for key, v in data.items()
        }
    except (AttributeError, TypeError) as exc:
        raise UserError(f"cannot read norm stats {path}: {exc}") from None


def save_norm_stats(directory: Path, stats: dict[str, NormStats]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    body = {
        key: {k: None if getattr(s, k) is None else np.asarray(getattr(s, k)).tolist() for k in NORM_KEYS}
        for key, s in stats.items()
    }
    (directory / "norm_stats.json").write_text(json.dumps({"norm_stats": body}, indent=2))


# ------------------------------------------------------------------------------------------ whole checkpoints
def save_checkpoint(
    ckpt_dir: Path,
    config: Pi0Config,
    params: dict,
    *,
    norm_stats: dict[str, NormStats] | None = None,
    tokenizer: Tokenizer | None = None,
    asset_id: str = "csil_diag",
) -> None:
    """Our own checkpoint in openpi's layout (plus config.json and the tokenizer)."""
    ckpt_dir = Path(ckpt_dir)
    check_params(params, abstract_params(config), "the params to save")
    save_params(ckpt_dir / "params", params)
    (ckpt_dir / "config.json").write_text(json.dumps(vla_config.to_dict(config), indent=2))
    assets = ckpt_dir / "assets" / asset_id
    assets.mkdir(parents=True, exist_ok=True)
    if norm_stats is not None:
        save_norm_stats(assets, norm_stats)
    if tokenizer is not None:
        save_tokenizer(tokenizer, assets / "tokenizer.json")


def load_config(ckpt_dir: Path) -> Pi0Config:
    """The model config our checkpoints carry (``config.json``), read without touching the params."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise UserError(f"no checkpoint directory at {ckpt_dir}")
    config_path = ckpt_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"{ckpt_dir} has no config.json (an openpi checkpoint?); pass its preset, e.g. pi0_base")
    return vla_config.from_dict(json.loads(config_path.read_text()))


def load_checkpoint(
    ckpt_dir: Path, config: Pi0Config | None = None, *, dtype: str | None = None, asset_id: str | None = None
) -> Pi0Checkpoint:
    """Load params (+ norm stats, tokenizer when present). ``config`` is required for openpi's own checkpoints,
    which do not store one (e.g. ``preset("pi0_base")``); our checkpoints carry ``config.json``."""
    ckpt_dir = Path(ckpt_dir)
    if config is None:
        config = load_config(ckpt_dir)
    elif not ckpt_dir.is_dir():
        raise UserError(f"no checkpoint directory at {ckpt_dir}")
    params = load_params(config, ckpt_dir / "params", dtype=dtype)
    assets = asset_dir(ckpt_dir, asset_id)
    norm_path = None if assets is None else assets / "norm_stats.json"
    tokenizer_path = None if assets is None else assets / "tokenizer.json"
    return Pi0Checkpoint(
        config,
        params,
        load_norm_stats(norm_path) if norm_path is not None and norm_path.is_file() else None,
        load_tokenizer(tokenizer_path) if tokenizer_path is not None and tokenizer_path.is_file() else None,
    )
