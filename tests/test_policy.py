"""HetStat math: activations, tanh-Gaussian log-prob and entropy, composition modes, covariance forms."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from csil_diag.config import HetStatConfig
from csil_diag.policy import tanh_gaussian as tg
from csil_diag.policy.hetstat import (
    HetStat,
    blocked_variance,
    blocks_to_dense,
    dense_to_blocks,
    diagonal_variance,
    full_variance,
    predictive_std,
    upgrade_legacy_factor,
)
from csil_diag.policy.stationary import periodic_relu, sin_cos, stationary_features, triangle, triangle_wave

jax.config.update("jax_enable_x64", False)


def test_periodic_activations_known_values() -> None:
    x = jnp.array([0.0, math.pi / 2, math.pi, 3 * math.pi / 2, 2 * math.pi])
    np.testing.assert_allclose(triangle_wave(x), [0, math.pi / 2, 0, -math.pi / 2, 0], atol=1e-5)
    # periodic ReLU: (tri(x) + tri(x + π/2))·π/4, so π²/8 at π/4 and 0 at −π/4; period 2π
    np.testing.assert_allclose(periodic_relu(jnp.array([math.pi / 4, -math.pi / 4])), [math.pi**2 / 8, 0], atol=1e-5)
    z = jnp.linspace(-7, 7, 101)
    np.testing.assert_allclose(periodic_relu(z), periodic_relu(z + 2 * math.pi), atol=1e-4)
    # triangle is scaled by π/(2√2) to a second moment of π⁴/96 ≈ 1 over a period (like √2·sin)
    grid = jnp.linspace(0, 2 * math.pi, 200001)
    assert abs(float(jnp.mean(triangle(grid) ** 2)) - math.pi**4 / 96) < 1e-3
    np.testing.assert_allclose(sin_cos(jnp.array([0.0])), [1.0])


def test_stationary_features_are_affine_for_small_projections() -> None:
    # Inside |h̃| < π/4 the two phases are π²/8 and πh̃/2, so the variance there is a quadratic form of the input:
    # the reading behind the random-feature skip's separation at its initial lengthscale (docs/results/remedies.md).
    h = jnp.linspace(-0.78, 0.78, 41)[:, None]
    phi = stationary_features(h, jnp.ones((1, 1)), jnp.zeros(1), "periodic_relu") * math.sqrt(2)
    np.testing.assert_allclose(phi[:, 0], math.pi**2 / 8, atol=1e-5)
    np.testing.assert_allclose(phi[:, 1], math.pi * h[:, 0] / 2, atol=1e-5)
    # one step past π/4 the constant phase bends: the affine range ends there
    far = stationary_features(jnp.array([[1.2]]), jnp.ones((1, 1)), jnp.zeros(1), "periodic_relu") * math.sqrt(2)
    assert abs(float(far[0, 0]) - math.pi**2 / 8) > 0.1


@pytest.mark.parametrize(("mu", "std"), [(0.0, 0.5), (1.3, 0.2), (-2.0, 0.8), (3.0, 0.6)])
def test_head_log_prob_matches_numerical_density(mu: float, std: float) -> None:
    # Reference: the derivative of the CDF P(tanh z ≤ a) = Φ((atanh a − μ)/σ), by central differences.
    a = np.linspace(-0.99, 0.99, 41)
    h = 1e-5
    cdf = lambda x: norm.cdf((np.arctanh(x) - mu) / std)
    density = (cdf(a + h) - cdf(a - h)) / (2 * h)
    ours = np.exp(
        np.asarray(tg.log_prob("head", jnp.asarray(a)[:, None], jnp.full((41, 1), mu), jnp.full((41, 1), std)))
    )
    np.testing.assert_allclose(ours, density, rtol=2e-3, atol=1e-6)


def test_log_prob_is_finite_at_the_bounds() -> None:
    lp = tg.log_prob("head", jnp.array([[1.0, -1.0, 0.0]]), jnp.zeros((1, 3)), jnp.full((1, 3), 0.5))
    assert np.isfinite(np.asarray(lp)).all()


@pytest.mark.parametrize("mode", ["head", "residual", "ensemble"])
def test_densities_integrate_to_one(mode: str) -> None:
    base = jnp.array([[0.4]])
    mu, std = jnp.array([[0.3]]), jnp.array([[0.4]])
    lo, hi = ((-1 + 0.4) / 2, (1 + 0.4) / 2) if mode == "ensemble" else (-1.0, 1.0)
    a = jnp.linspace(lo + 1e-6, hi - 1e-6, 400001)[:, None]
    dens = jnp.exp(
        tg.log_prob(
            mode,
            a,
            jnp.broadcast_to(mu, a.shape),
            jnp.broadcast_to(std, a.shape),
            jnp.broadcast_to(base, a.shape),
        )
    )
    assert abs(float(jnp.trapezoid(dens, a[:, 0])) - 1.0) < 2e-3


def test_composition_modes_known_values() -> None:
    mu = jnp.array([[0.0, 0.5, -1.0]])
    base = jnp.array([[0.3, -0.6, 0.9]])
    np.testing.assert_allclose(tg.deterministic_action("head", mu), jnp.tanh(mu), atol=1e-6)
    # residual with μ = 0 reproduces the base action; otherwise it adds in z-space
    np.testing.assert_allclose(tg.deterministic_action("residual", jnp.zeros_like(mu), base), base, atol=1e-6)
    np.testing.assert_allclose(
        tg.deterministic_action("residual", mu, base), jnp.tanh(mu + jnp.arctanh(base)), atol=1e-6
    )
    np.testing.assert_allclose(tg.deterministic_action("ensemble", mu, base), (jnp.tanh(mu) + base) / 2, atol=1e-6)
    std = jnp.full((1, 3), 0.3)
    a = jnp.array([[0.1, -0.2, 0.5]])
    # residual(μ, base) is head with μ + atanh(base)
    np.testing.assert_allclose(
        tg.log_prob("residual", a, mu, std, base),
        tg.log_prob("head", a, mu + jnp.arctanh(base), std),
        rtol=1e-6,
    )
    # ensemble: a = (tanh z + base)/2 → density doubles per dimension
    np.testing.assert_allclose(
        tg.log_prob("ensemble", (a + base) / 2, mu, std, base),
        tg.log_prob("head", a, mu, std) + 3 * math.log(2.0),
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="unknown composition mode"):
        tg.deterministic_action("sum", mu)


@pytest.mark.parametrize(("mu", "std"), [(0.0, 0.3), (1.5, 0.5), (4.0, 0.6)])
def test_entropy_estimate_matches_quadrature(mu: float, std: float) -> None:
    # −∫ q log q over z (q in a-space = N(z)/|tanh'(z)|, so H_a = H_z + E[log(1 − tanh² z)])
    z = np.linspace(mu - 10 * std, mu + 10 * std, 200001)
    pz = norm.pdf(z, mu, std)
    log_jac = np.log1p(-(np.tanh(z) ** 2) + 1e-300)
    exact = norm.entropy(mu, std) + np.trapz(pz * log_jac, z)
    h, h_dim = tg.entropy_estimate(jax.random.key(0), "head", jnp.array([[mu]]), jnp.array([[std]]), None, 20000)
    assert abs(float(h[0]) - exact) < 0.02
    np.testing.assert_allclose(h_dim.sum(-1), h, rtol=1e-6)
    # the pre-squash Gaussian entropy is the closed form
    np.testing.assert_allclose(tg.gaussian_entropy(jnp.array([[std]]))[0], norm.entropy(mu, std), rtol=1e-5)


def test_saturated_mean_drives_entropy_down_but_not_the_std() -> None:
    # the tanh Jacobian, not the variance, makes saturated dims look certain
    std = jnp.array([[0.5, 0.5]])
    _h, h_dim = tg.entropy_estimate(jax.random.key(1), "head", jnp.array([[0.0, 5.0]]), std, None, 4000)
    assert float(h_dim[0, 1]) < float(h_dim[0, 0]) - 3.0


def test_blocked_covariance_equals_dense_factor() -> None:
    rng = np.random.default_rng(0)
    f, a, nb = 64, 3, 4
    b = f // nb
    squares = [jnp.asarray(0.3 * rng.standard_normal((b, a, b)), jnp.float32) for _ in range(nb)]
    below = [jnp.asarray(0.3 * rng.standard_normal((f - (j + 1) * b, a, b)), jnp.float32) for j in range(nb - 1)]
    phi = jnp.asarray(rng.standard_normal((5, f)) / 8, jnp.float32)
    dense = blocks_to_dense(squares, below)
    assert np.all(np.triu(dense, 1) == 0)  # the blocks hold the lower triangle only
    np.testing.assert_allclose(blocked_variance(phi, squares, below), full_variance(phi, dense), rtol=1e-4)
    back = dense_to_blocks(dense, nb)  # the inverse, exactly (the strict upper parts of the squares are never read)
    np.testing.assert_array_equal(blocks_to_dense(*back), dense)
    # zeros are the identity factor: variance = ‖φ‖²
    zeros = [jnp.zeros_like(x) for x in squares], [jnp.zeros_like(x) for x in below]
    np.testing.assert_allclose(
        blocked_variance(phi, *zeros), jnp.sum(phi**2, -1, keepdims=True).repeat(a, 1), rtol=1e-5
    )
    np.testing.assert_allclose(
        diagonal_variance(phi, jnp.zeros((a, f))), jnp.sum(phi**2, -1, keepdims=True).repeat(a, 1), rtol=1e-5
    )


def test_blocked_covariance_step_equals_the_dense_step() -> None:
    """Gradient and one AdamW step on the stored blocks equal those of the dense factor on its lower triangle."""
    import optax

    rng = np.random.default_rng(1)
    f, a, nb = 48, 2, 3
    dense = jnp.asarray(np.tril(0.2 * rng.standard_normal((a, f, f))), jnp.float32)
    blocks = tuple(map(list, dense_to_blocks(np.asarray(dense), nb)))
    phi = jnp.asarray(rng.standard_normal((6, f)) / 6, jnp.float32)
    weight = jnp.asarray(rng.standard_normal((6, a)), jnp.float32)

    def loss_dense(raw):
        return jnp.sum(weight * jnp.log(full_variance(phi, raw)))

    def loss_blocks(blocks):
        return jnp.sum(weight * jnp.log(blocked_variance(phi, *blocks)))

    g_dense, g_blocks = jax.grad(loss_dense)(dense), jax.grad(loss_blocks)(blocks)
    assert np.all(np.triu(np.asarray(g_dense), 1) == 0)  # nothing above the diagonal is trained
    np.testing.assert_allclose(blocks_to_dense(*g_blocks), g_dense, rtol=1e-4, atol=1e-6)
    opt = optax.adamw(1e-2, weight_decay=1e-4)
    new_dense = optax.apply_updates(dense, opt.update(g_dense, opt.init(dense), dense)[0])
    new_blocks = optax.apply_updates(blocks, opt.update(g_blocks, opt.init(blocks), blocks)[0])
    assert np.all(np.triu(np.asarray(new_dense), 1) == 0)
    np.testing.assert_allclose(blocks_to_dense(*new_blocks), new_dense, rtol=1e-5, atol=1e-6)


def test_hetstat_starts_at_the_prior() -> None:
    cfg = HetStatConfig(hidden=(32, 32), bottleneck=8, features=64, covariance_blocks=4)
    model = HetStat(cfg, 7)
    params = model.init(jax.random.key(0), jnp.zeros((1, 5)))
    x = jax.random.normal(jax.random.key(1), (10, 5))
    mu, std = model.apply(params, x)
    assert mu.shape == std.shape == (10, 7)
    np.testing.assert_array_equal(mu, 0.0)  # zero-initialised mean weights
    # identical per dimension (Σ_i = I for all i), bounded by √prior_var
    np.testing.assert_allclose(std, jnp.broadcast_to(std[:, :1], std.shape), rtol=1e-6)
    assert float(std.max()) <= math.sqrt(cfg.prior_variance)
    np.testing.assert_allclose(predictive_std(jnp.array(1e9), 0.75, 1e-5), math.sqrt(0.75), rtol=1e-6)
    for cov in ("full", "diagonal"):
        m = HetStat(HetStatConfig(hidden=(16,), bottleneck=4, features=16, covariance=cov, covariance_blocks=2), 2)
        p = m.init(jax.random.key(0), jnp.zeros((1, 3)))
        assert ("scale_tril_0" in p["params"]) == (cov == "full")


@pytest.fixture(scope="module")
def trained_small_hetstat():
    """A small HetStat after BC on 2-d actions of 3-d inputs in the cube [-1, 1]³."""
    from csil_diag.config import BCConfig
    from csil_diag.policy.bc import init_state, make_train_fn

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2000, 3)).astype(np.float32)
    y = np.tanh(np.stack([np.sin(2 * x[:, 0]) + x[:, 1], np.cos(2 * x[:, 2]) - 0.5], 1))
    y = (y + 0.05 * rng.standard_normal(y.shape)).clip(-1, 1).astype(np.float32)
    cfg = HetStatConfig(hidden=(64, 64), bottleneck=8, features=256, covariance_blocks=4)
    model = HetStat(cfg, 2)
    bc = BCConfig(learning_rate=1e-3, batch_size=128)
    state = init_state(model, bc, jax.random.key(0), 3)
    train = make_train_fn(model, bc)
    first = None
    for i in range(10):
        state, metrics = train(state, jax.random.key(i), jnp.asarray(x), jnp.asarray(y), None, n_steps=100)
        first = first if first is not None else float(metrics["loss"])
    return model, state.params, x, first, float(metrics["loss"])


def test_bc_learns(trained_small_hetstat) -> None:
    _model, _params, _x, first_loss, last_loss = trained_small_hetstat
    assert last_loss < first_loss - 2.0  # the NLL of a fitted, confident policy


def test_stationarity_far_from_the_data_returns_to_the_prior(trained_small_hetstat) -> None:
    """The property the diagnostic is about, in the space the stationary head sees (bottleneck h).

    Far from every training h the features decorrelate from the data's, so the posterior covariance
    has not been shrunk there: the std returns to what the prior (Σ = I) gives for the same features.
    """
    model, params, x, *_ = trained_small_hetstat
    _, std_data, h_data, _ = model.apply(params, jnp.asarray(x[:500]), with_features=True)
    hmin, hmax = np.asarray(h_data).min(0), np.asarray(h_data).max(0)
    rng = np.random.default_rng(1)
    h_far = jnp.asarray(hmax + 5 * (hmax - hmin) * rng.uniform(0.5, 1.5, (500, len(hmin))), jnp.float32)
    _, std_far, _, phi_far = model.apply(params, h_far, method=HetStat.head, with_features=True)
    cfg = model.config
    prior_std = predictive_std(jnp.sum(phi_far**2, -1, keepdims=True), cfg.prior_variance, cfg.min_variance)
    assert float(jnp.mean(std_far / prior_std)) > 0.9
    assert float(jnp.mean(std_data)) < 0.3 * float(jnp.mean(prior_std))


def test_far_inputs_are_more_uncertain_than_the_data(trained_small_hetstat) -> None:
    """In input space the LayerNorm/ELU trunk bounds far inputs into the data's feature range, so the
    std rises well above the data's but stays below the prior (measured ~2×); this is the trunk's
    share of the uncertainty collapse the diagnostics study."""
    model, params, x, *_ = trained_small_hetstat
    _, std_data = model.apply(params, jnp.asarray(x[:500]))
    d = np.random.default_rng(2).standard_normal((500, 3))
    far = (20 * d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)
    _, std_far = model.apply(params, jnp.asarray(far))
    assert float(std_far.mean()) > 1.5 * float(std_data.mean())


def test_checkpoints_in_the_old_factor_layout_load_exactly(tmp_path) -> None:
    """Older runs stored each column block whole, (A, F − j·b, b); they restore into today's layout, params and
    AdamW moments alike, and the model computes the same σ from them."""
    from csil_diag.runs import load_pytree, save_pytree

    cfg = HetStatConfig(hidden=(16,), bottleneck=4, features=16, covariance_blocks=4)
    model = HetStat(cfg, 3)
    params = model.init(jax.random.key(0), jnp.zeros((1, 5)))
    rng = np.random.default_rng(1)
    raw = np.tril(0.3 * rng.standard_normal((3, 16, 16))).astype(np.float32)
    b = 4
    legacy = {k: v for k, v in params["params"].items() if not k.startswith(("scale_tril_", "scale_below_"))}
    legacy |= {f"scale_tril_{j}": raw[:, j * b :, j * b : (j + 1) * b] for j in range(4)}
    save_pytree(tmp_path / "old.msgpack", {"params": {"params": legacy}, "moments": {"mu": {"params": legacy}}})
    target = {"params": params, "moments": {"mu": params}}
    restored = load_pytree(tmp_path / "old.msgpack", target)
    for tree in (restored["params"], restored["moments"]["mu"]):
        inner = tree["params"]
        squares = [inner[f"scale_tril_{j}"] for j in range(4)]
        below = [inner[f"scale_below_{j}"] for j in range(3)]
        np.testing.assert_array_equal(blocks_to_dense(squares, below), raw)
    x = jnp.asarray(rng.standard_normal((6, 5)), jnp.float32)
    phi = model.apply(restored["params"], x, with_features=True)[3]
    _mu, std = model.apply(restored["params"], x)
    expected = predictive_std(full_variance(phi, raw), cfg.prior_variance, cfg.min_variance)
    np.testing.assert_allclose(std, expected, rtol=1e-5)
    today = upgrade_legacy_factor(params)  # today's layout passes through unchanged
    assert jax.tree.structure(today) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, today, params)
