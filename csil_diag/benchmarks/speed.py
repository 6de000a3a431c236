"""`csil-diag bench`: BC step and SAC update speed against the machine's matmul rate, entropy evaluation, rollouts."""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from csil_diag.config import BCConfig, CriticConfig, CSILConfig, HetStatConfig
from csil_diag.diag.entropy import make_state_evaluator
from csil_diag.envs.tasks import ACTION_DIM
from csil_diag.policy.bc import init_state, make_optimizer, make_train_fn
from csil_diag.policy.hetstat import HetStat


def fastest_time(fn: Callable[[], Any], repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls (after one warm-up call), blocking on JAX results.

    The fastest, not the mean: on a shared machine a neighbour's burst lands on some calls, and the rates here are
    compared with each other (a step against the matmul rate), so each should be what the code can do.
    """
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(m: int, k: int, n: int, repeats: int = 20) -> float:
    """fp32 GFLOP/s of an (m×k)@(k×n) product in jax on this machine."""
    return 2 * m * k * n / fastest_time(matmul_runner(m, k, n), repeats) / 1e9


def matmul_runner(m: int, k: int, n: int) -> Callable[[], jax.Array]:
    """A call of a jitted fp32 (m×k)@(k×n) product on random operands."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((m, k)), jnp.float32)
    b = jnp.asarray(np.random.default_rng(1).standard_normal((k, n)), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    return lambda: f(a, b)


def fastest_against_matmul(
    runs: dict[Any, Callable[[], Any]], rounds: int, m: int = 256, k: int = 1024, n: int = 1024
) -> tuple[dict[Any, float], float]:
    """Seconds of each run's fastest call and the fp32 GFLOP/s of an (m×k)@(k×n) product, timed in ``rounds``
    interleaved rounds (each run once, the product ten times, per round), so a slow spell of the machine hits every
    figure alike."""
    matmul = matmul_runner(m, k, n)
    best = dict.fromkeys(runs, float("inf"))
    best_matmul = float("inf")
    for _ in range(rounds):
        for key, run in runs.items():
            best[key] = min(best[key], fastest_time(run, 1))
        best_matmul = min(best_matmul, fastest_time(matmul, 10))
    return best, 2 * m * k * n / best_matmul / 1e9


def per_iteration_s(timed: Callable[[int], float], few: int = 10, many: int = 30) -> float:
    """Seconds one loop iteration adds: (t(many) − t(few)) / (many − few), so what a call pays once — fresh output
    pages, copying non-donated inputs into the loop's buffers — cancels."""
    return (timed(many) - timed(few)) / (many - few)


def stream_ms(n: int, repeats: int = 5, few: int = 10, many: int = 30) -> float:
    """Milliseconds a pass of the fp32 stream x ← (x + 0.1·y)·0.5 over n elements takes (3 × 4 bytes an element)."""
    x = jnp.ones((n,), jnp.float32)
    y = jnp.full((n,), 2.0, jnp.float32)
    f = jax.jit(lambda x, y, k: jax.lax.fori_loop(0, k, lambda _, x: (x + 0.1 * y) * 0.5, x), static_argnames="k")
    return 1e3 * per_iteration_s(lambda k: fastest_time(lambda: f(x, y, k=k), repeats), few, many)


def stream_gbs(n: int = 32_000_000) -> float:
    """GB/s of :func:`stream_ms` over arrays far larger than the caches (128 MB each): the rate at which an elementwise
    loop over parameters that do not fit in cache can run."""
    return 3 * 4 * n / stream_ms(n) / 1e6


# optax's AdamW compiles, on XLA:CPU, to three elementwise loops per leaf: μ ← (read g, μ; write μ), ν ← (read g, ν;
# write ν), θ ← (read θ, μ, ν; write θ) — ten fp32 passes over the parameters (profiled HLO).
ADAMW_PASSES = 10


def bc_param_count(cfg: HetStatConfig, width: int) -> int:
    """Parameters of the HetStat trained by BC at input width ``width`` (no compilation: shapes only)."""
    model = HetStat(cfg, ACTION_DIM, input_dim=width)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, width), jnp.float32))
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes))


def optimizer_update_ms(params: Any, optimizer: optax.GradientTransformation, repeats: int = 3) -> float:
    """Milliseconds of ``optimizer``'s update alone over ``params`` (constant gradients, updates in one jitted scan as
    inside the BC step; per update, see :func:`per_iteration_s`)."""
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 1e-2), params)

    @functools.partial(jax.jit, static_argnames="steps")
    def run(params, state, steps: int):
        def body(carry, _):
            p, s = carry
            updates, s = optimizer.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        return jax.lax.scan(body, (params, state), None, length=steps)[0]

    state = optimizer.init(params)
    return 1e3 * per_iteration_s(lambda k: fastest_time(lambda: run(params, state, steps=k), repeats), 4, 20)


def adamw_update_ms(params: Any, config: BCConfig, repeats: int = 3) -> float:
    """:func:`optimizer_update_ms` of the BC optimizer (AdamW) that ``config`` makes."""
    return optimizer_update_ms(params, make_optimizer(config), repeats)


def step_bound(useful_flop: float, matmul_gflops: float, update_ms: float) -> dict[str, float]:
    """The fastest a BC step can be if its products ran at the matmul rate and its optimizer update (which runs after
    them) took what it takes alone, and the useful fraction of the matmul rate that allows (1.0 with a free update)."""
    products_ms = 1e3 * useful_flop / (matmul_gflops * 1e9)
    return {
        "products_ms_at_matmul_rate": round(products_ms, 2),
        "bound_ms": round(products_ms + update_ms, 2),
        "max_fraction_of_matmul_rate_useful": round(products_ms / (products_ms + update_ms), 2),
    }


def bc_step_flops(cfg: HetStatConfig, width: int, batch: int) -> dict[str, float]:
    """FLOPs of one BC step: ``useful`` (what is computed) and ``dense`` (one dense F×F factor per dim).

    Dense layers cost 3× their forward pass (forward, weight and input gradients); the variance costs
    2× (forward and the factor's gradient: φ is stop-gradient in the faithful loss).
    """
    sizes = [width, *cfg.hidden, cfg.bottleneck]
    trunk = sum(a * b for a, b in itertools.pairwise(sizes))
    feats = cfg.bottleneck * cfg.features // 2 + cfg.features * ACTION_DIM
    if cfg.covariance == "full":
        b, nb = cfg.features // cfg.covariance_blocks, cfg.covariance_blocks
        var_useful = ACTION_DIM * b * b * nb * (nb + 1) // 2
        var_dense = ACTION_DIM * cfg.features**2
    else:
        var_useful = var_dense = ACTION_DIM * cfg.features
    common = 2 * batch * 3 * (trunk + feats)
    return {"useful": common + 2 * batch * 2 * var_useful, "dense": common + 2 * batch * 2 * var_dense}


def bc_runner(model: HetStat, bc: BCConfig, width: int, steps: int) -> tuple[Callable[[], Any], Any]:
    """A call of ``steps`` BC steps (one jitted scan, the state carried from call to call) on 4096 random states of
    width ``width``, and the initial state."""
    state = init_state(model, bc, jax.random.key(0), width)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4096, width)), jnp.float32)
    y = jnp.asarray(np.tanh(rng.standard_normal((4096, ACTION_DIM))), jnp.float32)
    train = make_train_fn(model, bc)
    holder = {"state": state}

    def run():
        holder["state"], metrics = train(holder["state"], jax.random.key(1), x, y, None, n_steps=steps)
        return metrics

    return run, state


def bc_speed(width: int, covariance: str, batch: int = 256, steps: int = 20, repeats: int = 3) -> dict[str, float]:
    cfg = HetStatConfig(covariance=covariance)
    bc = BCConfig(batch_size=batch)
    run, state = bc_runner(HetStat(cfg, ACTION_DIM), bc, width, steps)
    per_step = fastest_time(run, repeats) / steps
    flops = bc_step_flops(cfg, width, batch)
    n_params = bc_param_count(cfg, width)
    return {
        "ms_per_step": round(1e3 * per_step, 2),
        "parameters": n_params,
        "adamw_gbytes_per_step": round(ADAMW_PASSES * 4 * n_params / 1e9, 3),
        "adamw_update_ms": round(adamw_update_ms(state.params, bc), 2),
        "steps_per_s": round(1 / per_step, 2),
        "useful_gflop_per_step": round(flops["useful"] / 1e9, 2),
        "dense_equiv_gflop_per_step": round(flops["dense"] / 1e9, 2),
        "useful_gflops": round(flops["useful"] / per_step / 1e9, 1),
        "dense_equiv_gflops": round(flops["dense"] / per_step / 1e9, 1),
    }


def _hetstat_forward_macs(cfg: HetStatConfig, width: int) -> int:
    sizes = [width, *cfg.hidden, cfg.bottleneck]
    trunk = sum(a * b for a, b in itertools.pairwise(sizes))
    feats = cfg.bottleneck * cfg.features // 2 + cfg.features * ACTION_DIM
    if cfg.covariance == "full":
        b, nb = cfg.features // cfg.covariance_blocks, cfg.covariance_blocks
        return trunk + feats + ACTION_DIM * b * b * nb * (nb + 1) // 2
    return trunk + feats + ACTION_DIM * cfg.features


def _critic_forward_macs(cfg: CriticConfig, width: int) -> int:
    sizes = [width + ACTION_DIM, *cfg.hidden, cfg.bottleneck, 1]
    return 2 * sum(a * b for a, b in itertools.pairwise(sizes))  # twin


def sac_update_flops(width: int, batch: int, algo: str) -> float:
    """Estimated FLOPs of one update, counted in forward passes over the whole batch (a backward pass = 2):
    csil — HetStat: reward refinement 3, next-action sample 1, π_BC at s′ 1, actor 3, π_BC in the actor loss 2;
    critic: target 1, regression 3, ‖∂Q/∂a‖ on the demo half ≈ 2.5, the actor's Q 2.
    sacfd — HetStat: next action 1, actor 3; critic: target 1, regression 3, actor's Q 2."""
    het = _hetstat_forward_macs(HetStatConfig(), width)
    crit = _critic_forward_macs(CriticConfig(), width)
    passes = (10, 8.5) if algo == "csil" else (4, 6)
    return 2.0 * batch * (passes[0] * het + passes[1] * crit)


def sac_speed(width: int, algo: str, updates: int = 4, repeats: int = 3) -> dict[str, float]:
    """One SAC update (App. B networks; csil: 256 demo + 256 online transitions, sacfd: 256 in all)."""
    from csil_diag.csil.critic import TwinCritic
    from csil_diag.csil.sac import Learner

    cfg = CSILConfig(algo=algo)
    model = HetStat(HetStatConfig(), ACTION_DIM)
    learner = Learner(model, TwinCritic(CriticConfig()), cfg, "head", ACTION_DIM, 1e-5)
    bc = model.init(jax.random.key(0), jnp.zeros((1, width))) if algo == "csil" else None
    state = learner.init(jax.random.key(1), width, False, bc)
    rng = np.random.default_rng(0)
    n_demo = cfg.batch_size if algo == "csil" else round(cfg.demo_ratio * cfg.batch_size)
    n_online = cfg.batch_size if algo == "csil" else cfg.batch_size - n_demo

    def batch(n: int) -> dict[str, jnp.ndarray]:
        x = rng.standard_normal((updates, n, width)).astype(np.float32)
        a = np.tanh(rng.standard_normal((updates, n, ACTION_DIM))).astype(np.float32)
        return {
            "x": jnp.asarray(x),
            "action": jnp.asarray(a),
            "reward": jnp.zeros((updates, n)),
            "discount": jnp.ones((updates, n)),
            "next_x": jnp.asarray(x[:, ::-1]),
        }

    demo, online = batch(n_demo), batch(n_online)
    holder = {"state": state}

    def run():
        holder["state"], metrics = learner.update(holder["state"], demo, online, jax.random.key(2))
        return metrics

    per_update = fastest_time(run, repeats) / updates
    flops = sac_update_flops(width, n_demo + n_online, algo)
    return {
        "ms_per_update": round(1e3 * per_update, 1),
        "updates_per_s": round(1 / per_update, 2),
        "estimated_gflop_per_update": round(flops / 1e9, 2),
        "estimated_gflops": round(flops / per_update / 1e9, 1),
    }


def entropy_speed(width: int = 19, states: int = 8192, k: int = 32) -> dict[str, float]:
    model = HetStat(HetStatConfig(), ACTION_DIM)
    params = model.init(jax.random.key(0), jnp.zeros((1, width)))
    evaluate = make_state_evaluator(model, "head", k)
    x = np.random.default_rng(0).standard_normal((states, width)).astype(np.float32)
    seconds = fastest_time(lambda: evaluate(params, x, None, 0)["entropy"], 3)
    return {"states_per_s": round(states / seconds, 1), "k_samples": k, "states": states}


def rollout_speed(task: str = "lift", steps: int = 300) -> dict[str, float]:
    from csil_diag.benchmarks.envs import env_steps_per_second

    return {
        "no_cameras_steps_per_s": round(env_steps_per_second(task, steps=steps), 1),
        "agentview+wrist_84_steps_per_s": round(env_steps_per_second(task, ("agentview", "wrist"), 84, steps), 1),
    }


def run(quick: bool = False) -> dict[str, Any]:
    widths = (18, 1032) if quick else (18, 1032, 2056)
    out: dict[str, Any] = {
        "device": str(jax.devices()[0]),
        "jax_devices": jax.device_count(),
        "cpu_cores": os.cpu_count(),
    }
    out["matmul_gflops"] = {f"256x{w}x1024": round(matmul_gflops(256, w, 1024), 1) for w in widths} | {
        "256x1024x1024": round(matmul_gflops(256, 1024, 1024), 1),
        "1024x1024x1024": round(matmul_gflops(1024, 1024, 1024), 1),
    }
    out["stream_gbs"] = round(stream_gbs(), 1)
    out["bc_step_batch256"] = {}
    bc = {(cov, w): bc_speed(w, cov, steps=10 if quick else 20) for cov in ("diagonal", "full") for w in widths}
    # Measured again after the steps: the machine's rate is the better of the two (a burst elsewhere lowers one).
    out["matmul_gflops"]["256x1024x1024"] = max(out["matmul_gflops"]["256x1024x1024"], matmul_gflops(256, 1024, 1024))
    peak = out["matmul_gflops"]["256x1024x1024"]
    for cov in ("diagonal", "full"):
        for w in widths:
            result = bc[cov, w]
            result["fraction_of_matmul_rate_dense_equiv"] = round(result["dense_equiv_gflops"] / peak, 2)
            result["fraction_of_matmul_rate_useful"] = round(result["useful_gflops"] / peak, 2)
            result |= step_bound(result["useful_gflop_per_step"] * 1e9, peak, result["adamw_update_ms"])
            out["bc_step_batch256"][f"{cov}_D{w}"] = result
    out["sac_update"] = {}
    for algo in ("csil", "sacfd"):
        for w in (18, 1032):
            result = sac_speed(w, algo, updates=2 if quick else 4)
            result["fraction_of_matmul_rate"] = round(result["estimated_gflops"] / peak, 2)
            out["sac_update"][f"{algo}_D{w}"] = result
    out["entropy_eval"] = entropy_speed(k=32, states=2048 if quick else 8192)
    out["rollouts_lift"] = rollout_speed(steps=100 if quick else 300)
    return out
