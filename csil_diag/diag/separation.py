"""How well a score (per-state entropy) separates online from expert states."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score_pos > score_neg) + ½P(tie): the Mann–Whitney AUROC; 0.5 = no separation.

    Here positives are online states and negatives expert states, so AUROC > 0.5 means the policy is
    more uncertain where it has not been shown what to do — the behaviour CSIL's reward relies on.
    """
    positive, negative = np.asarray(positive, float).ravel(), np.asarray(negative, float).ravel()
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([positive, negative]))
    rank_sum = ranks[: len(positive)].sum()
    return float((rank_sum - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative)))


def bootstrap_gap(
    positive: np.ndarray,
    positive_groups: np.ndarray,
    negative: np.ndarray,
    negative_groups: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """mean(positive) − mean(negative) with a 95 % cluster-bootstrap CI.

    States of one episode are strongly correlated, so episodes (groups), not states, are resampled.
    Returns (gap, ci_low, ci_high).
    """
    rng = np.random.default_rng(seed)

    def group_sums(values: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, inverse = np.unique(groups, return_inverse=True)
        return np.bincount(inverse, weights=values), np.bincount(inverse).astype(float)

    ps, pc = group_sums(np.asarray(positive, float), np.asarray(positive_groups))
    ns, nc = group_sums(np.asarray(negative, float), np.asarray(negative_groups))
    gap = ps.sum() / pc.sum() - ns.sum() / nc.sum()
    if len(ps) < 2 or len(ns) < 2:
        return float(gap), float("nan"), float("nan")
    pi = rng.integers(0, len(ps), (n_boot, len(ps)))
    ni = rng.integers(0, len(ns), (n_boot, len(ns)))
    boot = ps[pi].sum(1) / pc[pi].sum(1) - ns[ni].sum(1) / nc[ni].sum(1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return float(gap), float(low), float(high)


def bootstrap_auroc(
    positive: np.ndarray,
    positive_groups: np.ndarray,
    negative: np.ndarray,
    negative_groups: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """95 % cluster-bootstrap CI of :func:`auroc`: episodes (groups) on both sides are resampled, as for the gap.
    (nan, nan) when a side has fewer than two episodes."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    p_eps = [positive[positive_groups == g] for g in np.unique(positive_groups)]
    n_eps = [negative[negative_groups == g] for g in np.unique(negative_groups)]
    if len(p_eps) < 2 or len(n_eps) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng([seed, 0xA0C])  # its own stream: the gap's CI stays what it was
    values = np.empty(n_boot)
    for b in range(n_boot):
        pi, ni = rng.integers(0, len(p_eps), len(p_eps)), rng.integers(0, len(n_eps), len(n_eps))
        values[b] = auroc(np.concatenate([p_eps[i] for i in pi]), np.concatenate([n_eps[i] for i in ni]))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)
