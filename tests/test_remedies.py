"""HetStat remedies for the collapse: spectral trunk, input transforms, fixed lengthscales, random-feature skip,
posterior head."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_entropy import TINY, tiny_config

from csil_diag.config import REMEDY_DEFAULTS, HetStatConfig, hetstat_identity, parse_input_transform, remedy_label
from csil_diag.diag.entropy_run import EntropyRun
from csil_diag.diag.run_states import open_run
from csil_diag.errors import UserError
from csil_diag.features.normalize import PROJECTION_FILE, Normalizer, fit_projection
from csil_diag.policy.hetstat import HetStat, Trunk, spectral_norm_estimate, spectral_trunk_lipschitz_bound
from csil_diag.policy.posterior_head import fit_posterior_head, posterior_model, posterior_variance

SMALL = HetStatConfig(hidden=(48, 48), bottleneck=8, features=32, covariance_blocks=2)


def _scaled(params, factor: float):
    """Every kernel × factor: a trunk after training that pushed its weights up."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x * factor if "kernel" in jax.tree_util.keystr(path) else x, params
    )


def _lipschitz(trunk: Trunk, params, d: int, n: int = 64) -> float:
    """The largest Jacobian spectral norm over random inputs (a lower bound on the Lipschitz constant)."""
    xs = jax.random.normal(jax.random.key(1), (n, d)) * 3.0
    jac = jax.vmap(jax.jacfwd(lambda x: trunk.apply(params, x[None])[0]))(xs)  # (n, out, d)
    return float(np.max(np.linalg.svd(np.asarray(jac), compute_uv=False)))


def test_spectral_norm_estimate_matches_svd():
    w = jax.random.normal(jax.random.key(0), (48, 48)) @ jnp.diag(jnp.linspace(0.2, 3.0, 48))
    exact = np.linalg.svd(np.asarray(w), compute_uv=False)[0]
    assert exact * 0.99 <= float(spectral_norm_estimate(w)) <= exact * (1 + 1e-5)  # from below, within 1 %


def test_spectral_trunk_bounds_the_lipschitz_constant():
    d = 12
    bound = spectral_trunk_lipschitz_bound(replace(SMALL, trunk="spectral"))
    assert bound == pytest.approx(0.95 * 1.95 * 0.95)  # first layer, one residual block, bottleneck
    for trunk_kind in ("plain", "spectral"):
        trunk = Trunk(replace(SMALL, trunk=trunk_kind))
        params = _scaled(trunk.init(jax.random.key(0), jnp.zeros((1, d))), 5.0)
        measured = _lipschitz(trunk, params, d)
        if trunk_kind == "spectral":
            assert measured <= bound * 1.01, measured
        else:  # the same weights without the normalisation: far above the bound, so the check above can fail
            assert measured > 3 * bound, measured


@pytest.mark.parametrize("transform", ["pca:3", "whiten", "whiten:3"])
def test_projection_fitted_on_the_given_states(transform):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 5.0
    norm = Normalizer.fit(x, floor=0.01, transform=transform)
    kind, k = parse_input_transform(transform)
    z = norm(x)
    assert z.shape == (500, k or 6) and norm.out_width == (k or 6)
    cov = np.cov(z.T)
    if kind == "pca":  # orthonormal directions, variances sorted
        np.testing.assert_allclose(norm.projection.T @ norm.projection, np.eye(3), atol=1e-5)
        assert np.all(np.diff(np.diag(cov)) <= 1e-6)
    else:  # whitened: unit covariance on the fitting states
        np.testing.assert_allclose(cov, np.eye(k or 6), atol=1e-3)
    # a function of the data alone: refitting gives the same matrix (signs fixed)
    np.testing.assert_allclose(fit_projection((x - norm.mean) / norm.std, transform), norm.projection, atol=1e-6)


@pytest.mark.parametrize("text", ["pca", "pca:0", "none:3", "whiten:x", "zca"])
def test_bad_input_transform_is_a_user_error(text):
    with pytest.raises(UserError, match="input transform must be"):
        HetStatConfig(input_transform=text)


def test_pca_wider_than_the_input_is_refused():
    with pytest.raises(UserError, match="only 4 dimensions"):
        Normalizer.fit(np.random.default_rng(0).normal(size=(20, 4)), 0.01, "pca:8")


def test_fixed_lengthscale_is_not_a_parameter_and_skip_reads_the_input():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 10)), jnp.float32)
    fixed = HetStat(replace(SMALL, learn_lengthscale=False), 7, 10)
    params = fixed.init(jax.random.key(0), x)
    assert "log_lengthscales" not in params["params"]
    skip = HetStat(replace(SMALL, rf_skip=True), 7, 10)
    params = skip.init(jax.random.key(0), x)
    assert params["params"]["skip_random_weights"].shape == (10, SMALL.features // 4)
    # the features keep their total size, and the skip half reads the input itself
    _, _, _, phi = skip.apply(params, x, with_features=True)
    assert phi.shape == (5, SMALL.features)
    x2 = x.at[:, 0].add(1000.0)
    _, _, _, phi2 = skip.apply(params, x2, with_features=True)
    half = SMALL.features // 2
    assert float(jnp.max(jnp.abs(phi2[:, half:] - phi[:, half:]))) > 0.0


def test_posterior_variance_is_the_bayesian_linear_heads():
    rng = np.random.default_rng(0)
    phi = rng.standard_normal((50, 6))
    phi[:, 5] = 0.0  # a direction no training state has
    query = rng.standard_normal((7, 6))
    s2 = 0.3
    # The weight-space form against the function-space (GP) form of the same posterior.
    kernel = np.linalg.inv(s2 * np.eye(50) + phi @ phi.T)
    gp = np.sum(query**2, 1) - np.einsum("qn,nm,mq->q", query @ phi.T, kernel, phi @ query.T)
    np.testing.assert_allclose(posterior_variance(phi, query, s2), gp, rtol=1e-9)
    np.testing.assert_allclose(posterior_variance(phi, np.eye(6)[5:], s2), [1.0], rtol=1e-12)  # the prior, untouched
    assert posterior_variance(phi, phi, s2).max() < s2  # a state's own observation caps its variance at the noise


def test_posterior_head_keeps_the_mean_and_gives_the_posterior_predictive_std():
    model = HetStat(SMALL, 7)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 5)).astype(np.float32)
    actions = np.tanh(rng.standard_normal((300, 7))).astype(np.float32)
    params = _scaled(model.init(jax.random.key(0), jnp.zeros((1, 5))), 3.0)
    params = {"params": {**params["params"], "loc_weights": jnp.asarray(rng.standard_normal((32, 7)) * 0.1)}}
    fitted, s2 = fit_posterior_head(model, params, x, actions, None, "head")
    post = posterior_model(model)
    query = (rng.standard_normal((20, 5)) * 3).astype(np.float32)
    mu, std, _, phi = post.apply(fitted, jnp.asarray(query), with_features=True)
    mu0, _ = model.apply(params, jnp.asarray(query))
    np.testing.assert_array_equal(np.asarray(mu), np.asarray(mu0))  # the mean and the trunk are BC's
    mu_train = np.asarray(model.apply(params, jnp.asarray(x))[0], np.float64)
    residual = np.arctanh(np.clip(actions, -0.999, 0.999)) - mu_train  # before the squash, per dimension
    np.testing.assert_allclose(s2, np.mean(residual**2, axis=0), rtol=1e-5)
    _, _, _, phi_train = post.apply(fitted, jnp.asarray(x), with_features=True)
    for i in range(7):
        variance = posterior_variance(np.asarray(phi_train), np.asarray(phi), s2[i]) + s2[i]  # epistemic + noise
        expected = np.sqrt(SMALL.prior_variance) * np.tanh(np.sqrt(SMALL.min_variance + variance))
        np.testing.assert_allclose(np.asarray(std)[:, i], expected, rtol=2e-5)


def test_posterior_head_needs_the_full_covariance_and_stays_out_of_rl():
    with pytest.raises(UserError, match="covariance=full"):
        HetStatConfig(head="posterior", covariance="diagonal")
    with pytest.raises(UserError, match="head must be one of"):
        HetStatConfig(head="laplace")
    from csil_diag.csil.train_run import TrainConfig

    with pytest.raises(UserError, match="diagnostic remedy of entropy runs"):
        TrainConfig(task="lift", input="joints+object", demos="d.hdf5", hetstat=HetStatConfig(head="posterior"))


def test_identity_omits_remedies_at_their_defaults():
    identity = hetstat_identity(HetStatConfig())
    assert not set(REMEDY_DEFAULTS) & set(identity)
    assert remedy_label(HetStatConfig()) == ""
    spectral = HetStatConfig(
        trunk="spectral", input_transform="pca:64", rf_skip=True, learn_lengthscale=False, head="posterior"
    )
    assert {"trunk", "spectral_bound", "input_transform", "rf_skip", "learn_lengthscale", "head"} <= set(
        hetstat_identity(spectral)
    )
    assert remedy_label(spectral) == (
        "spectral trunk (≤0.95), input pca:64, fixed lengthscale -5, random-feature skip, posterior head"
    )


@pytest.fixture(scope="module")
def pca_run(lift_demos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("remedies") / "pca"
    hetstat = replace(TINY, input_transform="pca:5", trunk="spectral", rf_skip=True, head="posterior")
    config = tiny_config(lift_demos, hetstat=hetstat)
    EntropyRun(config, out, workers=0).run()
    return out


def test_pca_run_stores_its_transform_fitted_on_training_demos(pca_run: Path):
    meta = json.loads((pca_run / "config.json").read_text())
    assert meta["normalizer"]["transform"] == "pca:5" and meta["model_input_width"] == 5
    assert meta["identity"]["hetstat"]["input_transform"] == "pca:5"
    with np.load(pca_run / PROJECTION_FILE) as f:
        stored = f["projection"]
    run = open_run(pca_run)
    np.testing.assert_array_equal(run.normalizer.projection, stored)
    # fitted on the training split only: refitting on train + held-out states gives another matrix
    train, valid = run.inputs.train.x, run.inputs.valid.x
    z_train = (train - run.normalizer.mean) / run.normalizer.std
    np.testing.assert_allclose(fit_projection(z_train, "pca:5"), stored, atol=1e-5)
    both = Normalizer.fit(np.concatenate([train, valid]), 0.01, "pca:5")
    assert not np.allclose(both.projection, stored, atol=1e-3)


@pytest.mark.parametrize(
    ("change", "option"),
    [
        ({"trunk": "plain"}, "--trunk"),
        ({"input_transform": "pca:4"}, "--input-transform"),
        ({"rf_skip": False}, "--rf-skip"),
        ({"learn_lengthscale": False}, "--learn-lengthscale/--fixed-lengthscale"),
        ({"log_lengthscale_init": -3.0}, "--lengthscale-init"),
        ({"spectral_bound": 0.5}, "--spectral-bound"),
        ({"head": "learned"}, "--head"),
    ],
)
def test_resume_refuses_a_changed_remedy(pca_run: Path, lift_demos: Path, change: dict, option: str):
    saved = json.loads((pca_run / "config.json").read_text())["config"]["hetstat"]
    as_run = {"input_transform": saved["input_transform"], "trunk": "spectral", "rf_skip": True, "head": "posterior"}
    hetstat = replace(TINY, **(as_run | change))
    with pytest.raises(UserError, match=option):
        EntropyRun(tiny_config(lift_demos, hetstat=hetstat), pca_run, workers=0)


def test_a_posterior_head_run_evaluates_with_the_posterior(pca_run: Path):
    """The run's Σ log σ AUROC is the posterior head's: the trunk probe (which refits it from the checkpoint) reads the
    run's own number in its head row, and the head and posterior rows coincide."""
    import pandas as pd

    from csil_diag.diag.trunk_probe import HEAD, POSTERIOR, probe_run

    frame, _ = probe_run(pca_run)
    table = pd.read_parquet(pca_run / "entropy.parquet")
    last = int(table.step.max())
    logged = table[(table.split == "online") & (table.step == last)].auroc_gauss_valid.iloc[0]
    rows = frame[frame.step == last].set_index("space")
    assert rows.loc[HEAD, "auroc"] == pytest.approx(logged, abs=1e-9)
    assert rows.loc[POSTERIOR, "auroc"] == pytest.approx(rows.loc[HEAD, "auroc"], abs=1e-9)
    assert rows.loc[HEAD, "online_distance"] == pytest.approx(rows.loc[POSTERIOR, "online_distance"], rel=1e-6)


def test_runs_from_before_the_remedies_still_resume(lift_demos: Path, tmp_path: Path):
    """A config.json written before the remedy fields existed (its identity lacks them) resumes unchanged."""
    out = tmp_path / "old"
    run = EntropyRun(tiny_config(lift_demos), out, workers=0)
    run.load()
    run.close()
    meta = json.loads((out / "config.json").read_text())
    for key in REMEDY_DEFAULTS:
        meta["config"]["hetstat"].pop(key)
        assert key not in meta["identity"]["hetstat"]
    (out / "config.json").write_text(json.dumps(meta))
    EntropyRun(tiny_config(lift_demos), out, workers=0).close()  # no refusal
    with pytest.raises(UserError, match="--trunk"):
        EntropyRun(tiny_config(lift_demos, hetstat=replace(TINY, trunk="spectral")), out, workers=0)
