"""The speed bench's accounting: parameter counts and the step roofline mean what their names say."""

from __future__ import annotations

import pytest

from csil_diag.benchmarks.speed import adamw_update_ms, bc_param_count, per_iteration_s, step_bound
from csil_diag.config import HetStatConfig


def _analytic_params(width: int, factor: int) -> int:
    """Trunk Dense(1024)+LayerNorm, Dense(1024), Dense(48); 48×512 random weights and 48 log-lengthscales;
    1024×7 mean weights; the covariance factor."""
    trunk = (width * 1024 + 1024) + 2 * 1024 + (1024 * 1024 + 1024) + (1024 * 48 + 48)
    return trunk + 48 * 512 + 48 + 1024 * 7 + factor


def test_parameter_count_is_the_hetstats_own() -> None:
    # full: 16 blocks of 64 per action dim, the 136 on or below the diagonal stored
    assert bc_param_count(HetStatConfig(covariance="full"), 1032) == _analytic_params(1032, 7 * 136 * 64 * 64)
    assert bc_param_count(HetStatConfig(covariance="full"), 1032) == 6_089_824
    assert bc_param_count(HetStatConfig(covariance="diagonal"), 18) == _analytic_params(18, 7 * 1024)


def test_bound_of_a_step_with_a_free_update_is_the_matmul_rate() -> None:
    bound = step_bound(7.35e9, 290.0, 0.0)
    assert bound["bound_ms"] == bound["products_ms_at_matmul_rate"] == pytest.approx(25.34, abs=0.01)
    assert bound["max_fraction_of_matmul_rate_useful"] == 1.0


def test_bound_adds_the_update_after_the_products() -> None:
    bound = step_bound(7.35e9, 290.0, 15.0)
    assert bound["bound_ms"] == pytest.approx(40.34, abs=0.01)
    assert bound["max_fraction_of_matmul_rate_useful"] == pytest.approx(25.34 / 40.34, abs=0.01)


def test_per_iteration_time_cancels_what_a_call_pays_once() -> None:
    assert per_iteration_s(lambda k: 0.005 + 0.002 * k) == pytest.approx(0.002)
    assert per_iteration_s(lambda k: 0.002 * k, 4, 12) == pytest.approx(0.002)


def test_timing_the_adamw_update_leaves_the_callers_params_unchanged() -> None:
    """The timed update is the BC optimizer's own, run on the model's tree without touching the caller's params."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from csil_diag.config import BCConfig
    from csil_diag.policy.hetstat import HetStat

    params = HetStat(HetStatConfig(covariance="diagonal"), 7).init(jax.random.key(0), jnp.zeros((1, 18)))
    before = jax.tree_util.tree_map(np.asarray, params)
    assert np.isfinite(adamw_update_ms(params, BCConfig(), repeats=1))
    jax.tree_util.tree_map(np.testing.assert_array_equal, before, jax.tree_util.tree_map(np.asarray, params))
