"""Flow-matching training of π0: pre-training from scratch and fine-tuning (its regimes: :mod:`csil_diag.vla.regimes`).

A run is built in ``<out>.partial/`` (``run.json``: what the run is; ``train_state.msgpack``: trainable params,
optimiser state, step, losses — written atomically every ``save_every`` steps and on Ctrl-C) and renamed to
``<out>`` once the checkpoint (openpi layout) and ``train.json`` are complete. Re-running the same command
resumes; batches and noise depend only on (seed, step), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from csil_diag.errors import UserError
from csil_diag.runs import (
    RunDir,
    atomic_write_json,
    file_fingerprint,
    identity_differences,
    load_pytree,
    now_utc,
    read_json_file,
    save_pytree,
    versions,
)
from csil_diag.vla import config as vla_config
from csil_diag.vla import pi0
from csil_diag.vla.checkpoint import check_params, load_checkpoint, save_checkpoint
from csil_diag.vla.config import Pi0Config
from csil_diag.vla.dataset import VLADataset, compute_norm_stats, load_dataset, make_batch
from csil_diag.vla.lora import init_missing_lora
from csil_diag.vla.regimes import Flat, count, merge_params, regime_frozen, split_params, with_lora
from csil_diag.vla.tokenizer import ByteTokenizer, Tokenizer
from csil_diag.vla.towers.module import load_tower_weights, pretrained_tower_params, tower_checksum
from csil_diag.vla.train_config import TrainConfig, TrainJob, TrainResult

STATE_FILE = "train_state.msgpack"
RUN_FILE = "run.json"
TRAIN_FILE = "train.json"

Progress = Callable[[int, int, float], None]  # (step, total steps, mean loss of the last call; NaN before the first)


# ------------------------------------------------------------------------------------------ optimisation
def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=config.lr / (config.warmup_steps + 1),
        peak_value=config.lr,
        warmup_steps=config.warmup_steps,
        decay_steps=config.steps,
        end_value=config.lr * config.end_lr_fraction,
    )
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=1e-8, weight_decay=config.weight_decay),
    )


def _loss(model: Pi0Config, trainable: Flat, frozen: Flat, rng: jax.Array, obs: pi0.Observation, actions) -> jax.Array:
    return jnp.mean(pi0.compute_loss(model, merge_params(trainable, frozen), rng, obs, actions))


@functools.lru_cache(maxsize=16)
def train_steps_fn(model: Pi0Config, config: TrainConfig) -> Callable:
    """Jitted ``steps_per_call`` optimiser steps (lax.scan over stacked batches). Cached, so that runs with the
    same model and settings in one process share the compilation. Noise of step s: fold_in(key(seed), s)."""
    optimizer = make_optimizer(config)
    grad_fn = jax.value_and_grad(functools.partial(_loss, model))

    @jax.jit
    def run(trainable: Flat, opt_state: Any, frozen: Flat, step: jax.Array, obs: pi0.Observation, actions):
        def one(carry: tuple, batch: tuple) -> tuple:
            trainable, opt_state, step = carry
            rng = jax.random.fold_in(jax.random.key(config.seed, impl="unsafe_rbg"), step)  # compiles fast on a CPU
            loss, grads = grad_fn(trainable, frozen, rng, *batch)
            updates, opt_state = optimizer.update(grads, opt_state, trainable)
            return (optax.apply_updates(trainable, updates), opt_state, step + 1), loss

        (trainable, opt_state, _), losses = jax.lax.scan(one, (trainable, opt_state, step), (obs, actions))
        return trainable, opt_state, losses

    return run


@functools.lru_cache(maxsize=4)
def _eval_loss_fn(model: Pi0Config) -> Callable:
    return jax.jit(lambda params, rng, obs, actions: pi0.compute_loss(model, params, rng, obs, actions).mean(axis=-1))


def stacked_batch(
    model: Pi0Config, data: VLADataset, config: TrainConfig, step: int, norm_stats: dict, tokenizer: Tokenizer
) -> tuple[pi0.Observation, jax.Array]:
    """The batches of steps [step, step + steps_per_call) as one :func:`make_batch`, reshaped to (steps, B, …) for
    the scan. Samples and augmentation are drawn from (seed, step) only, so a resumed run sees the same batches."""
    k = config.steps_per_call
    rng = np.random.default_rng([config.seed, step])
    idx = rng.integers(0, len(data), k * config.batch_size)
    obs, actions = make_batch(model, data, idx, norm_stats, tokenizer, augment=config.augment, rng=rng)
    # A camera the demos lack (robosuite has no right wrist) is masked in every batch: dropped, not computed.
    obs = pi0.drop_masked_cameras(obs)
    return jax.tree.map(lambda x: x.reshape(k, -1, *x.shape[1:]), (obs, actions))


def held_out_loss(
    model: Pi0Config, params: dict, data: VLADataset, norm_stats: dict, tokenizer: Tokenizer, config: TrainConfig
) -> float | None:
    """Flow-matching loss on up to ``valid_samples`` held-out samples, with fixed noise (None when there are none)."""
    n = min(len(data), config.valid_samples)
    if n == 0:
        return None
    idx = np.random.default_rng([config.seed, 1]).choice(len(data), n, replace=False)
    fn, losses = _eval_loss_fn(model), []
    for i, start in enumerate(range(0, n, config.batch_size)):
        part = np.resize(idx[start : start + config.batch_size], config.batch_size)  # one shape: one compilation
        obs, actions = make_batch(model, data, part, norm_stats, tokenizer)
        obs = pi0.drop_masked_cameras(obs)
        rng = jax.random.fold_in(jax.random.key(config.seed + 1), i)
        losses.append(np.asarray(fn(params, rng, obs, actions))[: min(config.batch_size, n - start)])
    return float(np.concatenate(losses).mean())


# ------------------------------------------------------------------------------------------ the run directory
def partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def dir_fingerprint(path: Path) -> str:
    """sha256 (16 hex digits) over a directory's relative file names and contents."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path)}:{file_fingerprint(file)}".encode())
    return digest.hexdigest()[:16]


def run_identity(job: TrainJob, data: VLADataset) -> dict[str, Any]:
    """Everything that decides the result; a resumed or re-run job must match it."""
    base = None
    if job.base is not None:
        base = {"path": str(job.base), "params_sha256": dir_fingerprint(job.base / "params")}
    identity = {
        "kind": job.kind,
        "model": vla_config.to_dict(job.model),
        "train": asdict(job.train),
        "base": base,
        "data": [asdict(s) for s in data.sources],
    }
    if job.base is None and job.model.vision != "siglip":  # the packaged weights a new model starts from
        identity["vision"] = {"tower": job.model.vision, "sha256": tower_checksum(job.model.vision)}
    return json.loads(json.dumps(identity, default=str))  # as it reads back from JSON (tuples → lists)


# How identity keys are spelled on the command line, for "other settings" refusals.
OPTION_NAMES = {
    "train.steps": "--steps",
    "train.batch_size": "--batch-size",
    "train.lr": "--lr",
    "train.warmup_steps": "--warmup-steps",
    "train.seed": "--seed",
    "train.steps_per_call": "--steps-per-call",
    "train.save_every": "--save-every",
    "train.regime": "--regime",
    "train.lora_rank": "--lora-rank",
    "train.image_shift": "--image-shift",
    "train.flip_axis_angle": "--flip-axis-angle",
}


def _check_identity(path: Path, identity: dict[str, Any], what: str) -> None:
    saved = read_json_file(path, f"delete {what} to start over, or choose another --out").get("identity", {})
    differ = identity_differences(saved, identity, OPTION_NAMES)
    if differ:
        raise UserError(
            f"{what} was made with other settings: {'; '.join(differ)}; use the same options, "
            "delete it, or choose another --out"
        )


def _open_run_dir(out: Path, identity: dict[str, Any]) -> Path:
    """``<out>.partial``, created, or resumed when its identity matches."""
    work = partial_dir(out)
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {work} ({exc.strerror}); choose another --out") from None
    if (work / RUN_FILE).is_file():
        _check_identity(work / RUN_FILE, identity, str(work))
    else:
        atomic_write_json(work / RUN_FILE, {"identity": identity, "created": now_utc()})
    return work


def _clear_stale_checkpoint(work: Path) -> None:
    """Remove what an interrupted finalisation may have left (save_checkpoint refuses to overwrite)."""
    for name in ("params", "assets", "config.json"):
        target = work / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def initial_params(job: TrainJob, rng: jax.Array) -> dict:
    """Fresh params (pre-training), or the base checkpoint's with new LoRA adapters where the regime adds them."""
    if job.base is None:
        params = pi0.init_params(job.model, rng)
        if job.model.vision != "siglip":
            params = pretrained_tower_params(job.model.vision, params)[0]
        return params
    base = load_checkpoint(job.base)
    if with_lora(base.config, 0) != with_lora(job.model, 0):
        raise UserError(f"{job.base} holds another model size than the one to fine-tune; use its config")
    expected = pi0.abstract_params(job.model)
    params = init_missing_lora(base.params, expected, rng)
    check_params(params, expected, str(job.base))
    return params


# ------------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class TrainState:
    """What ``train_state.msgpack`` holds: enough to continue exactly where a run stopped."""

    step: int
    trainable: Flat
    opt_state: Any
    losses: np.ndarray  # (steps,) float32, filled up to ``step``
    seconds: float  # time spent in training steps, over all sessions

    def _tree(self) -> dict[str, Any]:
        return {**self.__dict__, "step": np.asarray(self.step, np.int64), "seconds": np.asarray(self.seconds)}

    def save(self, path: Path) -> None:
        save_pytree(path, self._tree())

    def restored(self, path: Path) -> TrainState:
        """The state saved at ``path``, read into this (fresh) state's structure."""
        tree = load_pytree(path, self._tree())
        # Device arrays, as a fresh state holds: the same jitted step serves both without recompiling.
        trainable, opt_state = jax.tree.map(jnp.asarray, (tree["trainable"], tree["opt_state"]))
        losses = np.array(tree["losses"], np.float32)
        return TrainState(int(tree["step"]), trainable, opt_state, losses, float(tree["seconds"]))


def _train_loop(
    job: TrainJob,
    data: VLADataset,
    norm_stats: dict,
    tokenizer: Tokenizer,
    frozen: Flat,
    state: TrainState,
    state_path: Path,
    on_progress: Progress | None,
) -> TrainState:
    """Run the remaining steps; save the state every ``save_every`` steps, at the end, and on Ctrl-C."""
    cfg, k = job.train, job.train.steps_per_call
    run = train_steps_fn(job.model, cfg)
    last_saved = state.step
    if on_progress:
        on_progress(state.step, cfg.steps, float("nan"))  # where the bar starts (a resumed run: past 0)
    try:
        while state.step < cfg.steps:
            step = state.step
            obs, actions = stacked_batch(job.model, data, cfg, step, norm_stats, tokenizer)
            call_start = time.perf_counter()
            at = jnp.asarray(step, jnp.int32)
            trainable, opt_state, call_losses = run(state.trainable, state.opt_state, frozen, at, obs, actions)
            losses = state.losses.copy()
            losses[step : step + k] = np.asarray(call_losses)  # blocks until the call is done
            # One assignment per finished call: an interrupt never leaves a half-updated state behind.
            seconds = state.seconds + time.perf_counter() - call_start
            state = TrainState(step + k, trainable, opt_state, losses, seconds)
            if on_progress:
                on_progress(state.step, cfg.steps, float(losses[step : step + k].mean()))
            if state.step - last_saved >= cfg.save_every or state.step == cfg.steps:
                state.save(state_path)
                last_saved = state.step
    except KeyboardInterrupt:
        if state.step > last_saved:
            state.save(state_path)
        raise
    return state


def run_training(
    job: TrainJob, *, on_progress: Progress | None = None, on_status: Callable[[str], None] | None = None
) -> TrainResult:
    """Train (or resume, or find finished) ``job``; returns its :class:`TrainResult`.

    ``on_progress(step, steps, loss)`` is called before the first and after every jitted call; on KeyboardInterrupt
    the train state of the last finished call is saved in ``<out>.partial`` and the interrupt propagates.
    """
    status = on_status or (lambda _: None)
    out, model = Path(job.out), job.model
    status("loading demos")
    load_start = time.perf_counter()
    data = load_dataset(model, job.data, split="train")
    identity = run_identity(job, data)
    if job.base is None and model.vision != "siglip":
        load_tower_weights(model.vision)  # a missing or damaged package is refused before anything is written
    if out.exists():
        if not (out / TRAIN_FILE).is_file():
            raise UserError(f"{out} exists and is not a finished training run; choose another --out")
        _check_identity(out / TRAIN_FILE, identity, str(out))
        return TrainResult(out, model, json.loads((out / TRAIN_FILE).read_text()), already_done=True)
    lock = RunDir(partial_dir(out)).acquire(f"csil-diag vla {job.kind} --out {out}")
    try:
        return _train_in(job, data, identity, _open_run_dir(out, identity), lock, load_start, status, on_progress)
    finally:
        lock.release()


def _train_in(job, data, identity, work: Path, lock: RunDir, load_start: float, status, on_progress) -> TrainResult:
    out, cfg, model = Path(job.out), job.train, job.model
    norm_stats = compute_norm_stats(data)
    tokenizer = ByteTokenizer(model.max_token_len)
    if tokenizer.vocab_size != model.vocab_size:
        raise UserError(f"the byte tokenizer has {tokenizer.vocab_size} ids but the model {model.vocab_size}")
    load_seconds = time.perf_counter() - load_start

    status("initialising the model")
    params = initial_params(job, jax.random.key(cfg.seed, impl="unsafe_rbg"))
    # A pre-trained tower never sees the simulator in pre-training; fine-tuning trains it unless the regime freezes it.
    frozen_flags = regime_frozen(model, params, cfg.regime, train_tower=job.kind == "finetune")
    trainable, frozen = split_params(params, frozen_flags)
    state = TrainState(0, trainable, make_optimizer(cfg).init(trainable), np.zeros(cfg.steps, np.float32), 0.0)
    if (work / STATE_FILE).is_file():
        state = state.restored(work / STATE_FILE)
    resumed_from = state.step

    status("compiling" if state.step < cfg.steps else "finishing")
    started, cpu_started = time.perf_counter(), time.process_time()
    state = _train_loop(job, data, norm_stats, tokenizer, frozen, state, work / STATE_FILE, on_progress)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started

    params = merge_params(state.trainable, frozen)
    valid = None
    if cfg.valid_samples:
        status("held-out loss")
        valid_data = load_dataset(model, job.data, split="valid")
        valid = held_out_loss(model, params, valid_data, norm_stats, tokenizer, cfg)

    status("writing the checkpoint")
    _clear_stale_checkpoint(work)
    save_checkpoint(work, model, params, norm_stats=norm_stats, tokenizer=tokenizer)
    # CPU seconds (all threads) beside wall time: comparable across runs on a shared, busy machine.
    seconds = {
        "train_steps": state.seconds,
        "this_session": wall,
        "this_session_cpu": cpu,
        "loading_data": load_seconds,
    }
    record = train_record(job, identity, frozen_flags, params, state.losses, seconds, valid, resumed_from)
    atomic_write_json(work / TRAIN_FILE, record)
    lock.release(remove_lock_file=True)  # the finished checkpoint carries no lock file
    os.replace(work, out)  # the finished checkpoint appears at once
    return TrainResult(out, model, record, resumed=resumed_from > 0)


# ------------------------------------------------------------------------------------------ records
def train_record(
    job: TrainJob,
    identity: dict[str, Any],
    frozen_flags: dict[str, bool],
    params: dict,
    losses: np.ndarray,
    seconds: dict[str, float],
    valid_loss: float | None,
    resumed_from: int,
) -> dict[str, Any]:
    """train.json: the command, resolved settings, data fingerprints, seeds, versions, losses and times."""
    flat = traverse_util.flatten_dict(params, sep="/")
    frozen_n = sum(math.prod(np.shape(flat[k])) for k, v in frozen_flags.items() if v)
    window = max(1, len(losses) // 20)
    every = max(1, len(losses) // 200)
    return {
        "identity": identity,
        "command": job.command,
        "kind": job.kind,
        "regime": job.train.regime,
        "out": str(job.out),
        "seeds": {
            "train": job.train.seed,
            "batches and augmentation": "default_rng([seed, step])",
            "noise": "fold_in(key(seed), step)",
        },
        "versions": versions(),
        "finished": now_utc(),
        "steps": int(job.train.steps),
        "resumed_from_step": resumed_from,
        "params": {"total": count(params), "trainable": count(params) - frozen_n, "frozen": frozen_n},
        "frozen_leaves": sorted(k for k, v in frozen_flags.items() if v),
        "loss": {
            "first": float(losses[:window].mean()),
            "final": float(losses[-window:].mean()),
            "window_steps": window,
            "valid": valid_loss,
            "curve_every": every,
            "curve": [round(float(x), 5) for x in losses[::every]],
        },
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "steps_per_second": round(job.train.steps / max(seconds["train_steps"], 1e-9), 2),
    }


def summary_rows(result: TrainResult) -> list[tuple[str, str]]:
    """The one-screen summary of a finished run (CLI and default model)."""
    r = result.record
    train, loss, params = r["identity"]["train"], r["loss"], r["params"]
    data = ", ".join(f"{d['task']}: {d['demos']} demos / {d['samples']} states" for d in r["identity"]["data"])
    lora = f", LoRA rank {train['lora_rank']}" if train["lora_rank"] else ""
    sec = r["seconds"]
    cpu = f"this session {sec['this_session']:.0f} s wall, {sec.get('this_session_cpu', 0):.0f} s CPU"
    rows = [
        ("checkpoint", str(result.out)),
        ("kind / regime", f"{r['kind']} / {r['regime']}{lora}"),
        ("params", f"{params['total']:,} total, {params['trainable']:,} trainable, {params['frozen']:,} frozen"),
        ("data", data),
        ("steps", f"{r['steps']} × batch {train['batch_size']}, peak lr {train['lr']:g}, seed {train['seed']}"),
        ("time", f"{sec['train_steps']:.0f} s in training steps ({r['steps_per_second']:.2f} steps/s); {cpu}"),
        ("loss", f"{loss['first']:.4f} → {loss['final']:.4f} (mean of the first / last {loss['window_steps']} steps)"),
    ]
    if loss.get("valid") is not None:
        rows.append(("held-out loss", f"{loss['valid']:.4f} (mask/valid demos, fixed noise)"))
    if r.get("resumed_from_step"):
        rows.append(("resumed", f"from step {r['resumed_from_step']}"))
    if result.already_done:
        rows.append(("note", "already trained with these settings; nothing to do"))
    return rows
