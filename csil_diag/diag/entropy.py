"""Per-state action entropy of a HetStat policy, and the online-vs-expert comparison of one point."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from csil_diag.diag.separation import auroc, bootstrap_auroc, bootstrap_gap
from csil_diag.policy import tanh_gaussian as tg

StateMetrics = dict[str, np.ndarray]


def make_state_evaluator(
    model: nn.Module, mode: str, k: int, chunk: int = 2048
) -> Callable[[object, np.ndarray, np.ndarray | None, int], StateMetrics]:
    """evaluate(params, x (N, D) normalised, base (N, A) | None, seed) → per-state metrics.

    entropy (N,): H(s) = −E[log q(a|s)] from ``k`` samples (the thesis' measure);
    gaussian_entropy (N,): Σ_i log σ_i + const, the pre-squash entropy (the predictive variance itself);
    entropy_dim (N, A) and std (N, A): per action dimension.
    """

    @jax.jit
    def _chunk(params, x, base, key):
        mu, std = model.apply(params, x)
        h, h_dim = tg.entropy_estimate(key, mode, mu, std, base, k)
        return {"entropy": h, "entropy_dim": h_dim, "std": std, "gaussian_entropy": tg.gaussian_entropy(std)}

    def evaluate(params, x: np.ndarray, base: np.ndarray | None, seed: int) -> StateMetrics:
        n = len(x)
        pieces = []
        key = jax.random.key(seed)
        for start in range(0, n, chunk):
            xs = x[start : start + chunk]
            bs = None if base is None else base[start : start + chunk]
            pad = chunk - len(xs) if n > chunk else 0  # one compiled shape for all full-size calls
            if pad:
                xs = np.concatenate([xs, np.repeat(xs[-1:], pad, 0)])
                bs = None if bs is None else np.concatenate([bs, np.repeat(bs[-1:], pad, 0)])
            out = _chunk(
                params,
                jnp.asarray(xs),
                None if bs is None else jnp.asarray(bs),
                jax.random.fold_in(key, start),
            )
            pieces.append({name: np.asarray(v)[: len(v) - pad] for name, v in out.items()})
        return {name: np.concatenate([p[name] for p in pieces]) for name in pieces[0]}

    return evaluate


def split_summary(metrics: StateMetrics) -> dict[str, float]:
    """Means over the states of one split: entropy, Gaussian entropy, per-dimension entropy and std."""
    row = {
        "n_states": len(metrics["entropy"]),
        "entropy": float(np.mean(metrics["entropy"])),
        "entropy_sd": float(np.std(metrics["entropy"])),
        "gaussian_entropy": float(np.mean(metrics["gaussian_entropy"])),
    }
    for i in range(metrics["std"].shape[1]):
        row[f"entropy_dim{i}"] = float(np.mean(metrics["entropy_dim"][:, i]))
        row[f"std_dim{i}"] = float(np.mean(metrics["std"][:, i]))
    return row


def separation_summary(
    online: StateMetrics,
    online_groups: np.ndarray,
    expert: StateMetrics,
    expert_groups: np.ndarray,
    suffix: str,
    n_boot: int,
    seed: int,
) -> dict[str, float]:
    """AUROC (entropy, Gaussian entropy, per-dim std) and the entropy gap with a 95 % CI."""
    row = {
        f"auroc_{suffix}": auroc(online["entropy"], expert["entropy"]),
        f"auroc_gauss_{suffix}": auroc(online["gaussian_entropy"], expert["gaussian_entropy"]),
    }
    for measure, key in (("", "entropy"), ("gauss_", "gaussian_entropy")):
        low, high = bootstrap_auroc(online[key], online_groups, expert[key], expert_groups, n_boot, seed)
        row |= {f"auroc_{measure}{suffix}_lo": low, f"auroc_{measure}{suffix}_hi": high}
    for i in range(online["std"].shape[1]):
        row[f"auroc_std_dim{i}_{suffix}"] = auroc(online["std"][:, i], expert["std"][:, i])
    gap, low, high = bootstrap_gap(online["entropy"], online_groups, expert["entropy"], expert_groups, n_boot, seed)
    row |= {f"gap_{suffix}": gap, f"gap_{suffix}_lo": low, f"gap_{suffix}_hi": high}
    gap, low, high = bootstrap_gap(
        online["gaussian_entropy"], online_groups, expert["gaussian_entropy"], expert_groups, n_boot, seed
    )
    row |= {f"gap_gauss_{suffix}": gap, f"gap_gauss_{suffix}_lo": low, f"gap_gauss_{suffix}_hi": high}
    return row
