"""The coherent reward, the critic target and SAC itself, on cases with known answers."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csil_diag.config import CriticConfig, CSILConfig, HetStatConfig
from csil_diag.csil import reward as coherent
from csil_diag.csil.critic import TwinCritic, soft_target
from csil_diag.csil.sac import Learner
from csil_diag.data.buffer import ReplayBuffer, demo_transitions
from csil_diag.policy import tanh_gaussian as tg
from csil_diag.policy.actor import make_act
from csil_diag.policy.hetstat import HetStat

TINY = HetStatConfig(hidden=(32, 32), bottleneck=8, features=32, covariance_blocks=4)
TINY_CRITIC = CriticConfig(hidden=(64, 64), bottleneck=16)


def test_max_log_ratio_is_csils_bound():
    assert coherent.max_log_ratio(1e-5) == pytest.approx(-0.5 * math.log(1e-5) + math.log(2.0))


def test_coherent_reward_known_values():
    # log q = log p (the prior itself): log-ratio 0, so the positive reward is 0 and the negative one −scale·MAX.
    log_p = -7 * math.log(2.0)
    r_pos = coherent.coherent_reward(jnp.array(log_p), 7, 1.0, False, 1e-5)
    r_neg = coherent.coherent_reward(jnp.array(log_p), 7, 0.16, True, 1e-5)
    assert float(r_pos) == pytest.approx(0.0, abs=1e-6)
    assert float(r_neg) == pytest.approx(-0.16 * coherent.max_log_ratio(1e-5), rel=1e-6)
    # App. B: negative and ×0.16 lies in about [−1, 0] for log-ratios between 0 and the bound.
    top = log_p + 7 * coherent.max_log_ratio(1e-5)
    assert float(coherent.coherent_reward(jnp.array(top), 7, 0.16, True, 1e-5)) == pytest.approx(0.0, abs=1e-5)
    assert -1.1 < float(r_neg) < -1.0
    # scaled_log_ratio undoes the shift: α log(q/p)
    assert float(coherent.scaled_log_ratio(r_neg, 0.16, True, 1e-5)) == pytest.approx(0.0, abs=1e-6)


def test_kl_estimate_is_zero_at_zero_and_positive_elsewhere():
    assert float(coherent.kl_estimate(jnp.zeros(5))) == 0.0
    assert float(coherent.kl_estimate(jnp.array([0.5, -0.5, 2.0]))) > 0.0
    # outliers below −5 are clipped inside the exponential only
    assert np.isfinite(float(coherent.kl_estimate(jnp.array([-80.0]))))


def _bc_like_params(key):
    """A HetStat whose mean is fitted to a = 0.5·x on x ∈ [−1, 1] and whose variance is trained down there."""
    from csil_diag.config import BCConfig
    from csil_diag.policy.bc import init_state, make_train_fn

    model = HetStat(TINY, 1)
    x = np.linspace(-1, 1, 256, dtype=np.float32)[:, None]
    a = 0.5 * x
    state = init_state(model, BCConfig(learning_rate=3e-3, batch_size=64), key, 1)
    train = make_train_fn(model, BCConfig(learning_rate=3e-3, batch_size=64))
    state, _ = train(state, key, jnp.asarray(x), jnp.asarray(a), None, n_steps=600)
    return model, state.params


def test_coherent_reward_prefers_expert_actions_and_is_zero_far_from_data():
    model, params = _bc_like_params(jax.random.key(0))
    cfg = CSILConfig(reward_sign="positive", reward_scale=1.0)
    learner = Learner(model, TwinCritic(TINY_CRITIC), cfg, "head", 1, 1e-5)
    x = jnp.array([[0.4], [-0.6]])
    expert = learner.reward(params, x, None, 0.5 * x)
    wrong = learner.reward(params, x, None, -0.5 * x - 0.3)
    assert bool(jnp.all(expert > wrong + 0.2)), (expert, wrong)
    assert bool(jnp.all(expert > 0.0))
    # Away from the data the stationary HetStat returns to its prior (zero mean, Σ = I): there q is close to the
    # uniform p for every action, so the reward is near zero whatever the action (and far below the expert's).
    prior = model.init(jax.random.key(5), jnp.zeros((1, 1)))
    grid = jnp.linspace(-0.95, 0.95, 39)[:, None]
    r_prior = np.asarray(learner.reward(prior, jnp.full((39, 1), 0.4), None, grid))
    assert -0.2 < r_prior.mean() < 0.0  # ≈ −KL(p ‖ q) / d_a: small
    assert np.abs(r_prior[np.abs(np.asarray(grid[:, 0])) <= 0.8]).max() < 0.4
    assert np.abs(r_prior).max() < 0.6 * float(expert.min())


def test_kl_to_the_bc_policy_is_exact_where_actions_saturate():
    """With the actor equal to π_BC the KL penalty is exactly 0, also for samples far in the tanh's tail (the gripper
    at ±1), where log-probs of clipped actions would not cancel."""
    model = HetStat(TINY, 2)
    params = model.init(jax.random.key(0), jnp.zeros((1, 3)))
    params["params"]["loc_weights"] = jnp.full_like(params["params"]["loc_weights"], 3.0)  # tanh(mean) ≈ ±1
    learner = Learner(model, TwinCritic(TINY_CRITIC), CSILConfig(), "residual", 2, 1e-5)
    state = learner.init(jax.random.key(1), 3, True, params)
    x, base = jnp.ones((64, 3)), jnp.full((64, 2), 0.9)
    drawn = learner.sample(state.actor, x, base, jax.random.key(2))
    assert float(jnp.abs(drawn["a"]).max()) > 0.999  # saturated samples are present
    log_ratio = learner._log_ratio(state, x, base, drawn)
    np.testing.assert_array_equal(np.asarray(log_ratio), 0.0)
    z = jnp.array([[4.0, -6.0]])
    assert float(tg.log_ratio_pre_squash(z, z - 0.1, jnp.ones_like(z), z - 0.1, jnp.ones_like(z))[0]) == 0.0
    # The logged KL(π ‖ π_BC) reads exactly 0 on the first update (the actor is π_BC until it steps).
    batch = {"x": x, "action": base, "base": base, "next_x": x, "next_base": base}
    batch |= {"reward": jnp.zeros(64), "discount": jnp.ones(64)}
    one = {k: v[None] for k, v in batch.items()}
    _, metrics = learner.update(state, one, one, jax.random.key(3))
    assert float(metrics["actor_kl_to_bc"]) == 0.0


def test_soft_target_hand_computed():
    r = jnp.array([1.0, -0.5])
    d = jnp.array([1.0, 0.0])  # the second transition ended in success: no bootstrap
    out = soft_target(r, d, 0.9, jnp.array([2.0, 100.0]))
    np.testing.assert_allclose(np.asarray(out), [1.0 + 0.9 * 2.0, -0.5], rtol=1e-6)


def test_critic_pretraining_reaches_the_sarsa_fixed_point():
    """A 3-step chain with constant reward: Q converges to r (1 + γ + γ²) at the start, r at the end."""
    model, params = _bc_like_params(jax.random.key(1))
    cfg = CSILConfig(reward_sign="positive", reward_scale=1.0, critic_pretrain_lr=3e-3, grad_norm_scale=0.0, tau=0.05)
    learner = Learner(model, TwinCritic(TINY_CRITIC), cfg, "head", 1, 1e-5)
    x = np.array([[-0.5], [0.0], [0.5]], np.float32)
    a = 0.5 * x
    demo = demo_transitions(x, a, np.zeros(3, int), np.zeros(3), np.array([0, 0, 1]))
    state = learner.with_pretrain_optimizer(learner.init(jax.random.key(2), 1, False, params))
    r = np.asarray(learner.reward(params, jnp.asarray(x), None, jnp.asarray(a)))
    stacked = {k: jnp.asarray(np.repeat(v[None], 1500, 0)) for k, v in demo.items()}
    state, _ = learner.pretrain_critic(state, stacked)
    q = np.asarray(learner.critic_model.apply(state.critic, jnp.asarray(x), None, jnp.asarray(a)).min(0))
    gamma = cfg.discount
    expected = [r[0] + gamma * (r[1] + gamma * r[2]), r[1] + gamma * r[2], r[2]]
    np.testing.assert_allclose(q, expected, rtol=0.05, atol=0.05)


def point_mass_batch(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """1-d point mass: x' = clip(x + 0.25 a), reward −|x'|; the optimal action moves towards 0."""
    x = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    a = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    nx = np.clip(x + 0.25 * a, -1, 1)
    return {"x": x, "action": a, "reward": -np.abs(nx[:, 0]), "discount": np.ones(n, np.float32), "next_x": nx}


def test_sac_learns_the_point_mass_optimum():
    cfg = CSILConfig(algo="sacfd", discount=0.8, actor_lr=1e-3, critic_lr=1e-3, alpha_init=0.05, batch_size=128)
    learner = Learner(HetStat(TINY, 1), TwinCritic(TINY_CRITIC), cfg, "head", 1, 1e-5)
    state = learner.init(jax.random.key(0), 1, False, None)
    buffer = ReplayBuffer(20000, {"x": 1, "action": 1, "reward": 0, "discount": 0, "next_x": 1})
    rng = np.random.default_rng(0)
    buffer.add(point_mass_batch(rng, 20000))
    probe = jnp.array([[-0.8], [-0.4], [0.4], [0.8]])
    act = make_act(learner.actor_model, "head")
    before = np.asarray(act(state.actor, probe, None, jax.random.key(0), stochastic=False))[:, 0]
    for i in range(60):
        demo = {k: jnp.asarray(v.reshape(25, 26, *v.shape[1:])) for k, v in buffer.sample(rng, 25 * 26).items()}
        online = {k: jnp.asarray(v.reshape(25, 102, *v.shape[1:])) for k, v in buffer.sample(rng, 25 * 102).items()}
        state, metrics = learner.update(state, demo, online, jax.random.key(i))
    after = np.asarray(act(state.actor, probe, None, jax.random.key(0), stochastic=False))[:, 0]
    assert np.allclose(before, 0.0, atol=1e-6)  # a fresh HetStat has zero mean
    assert after[0] > 0.5 and after[1] > 0.3 and after[2] < -0.3 and after[3] < -0.5, after
    assert np.isfinite(float(metrics["critic_loss"]))


def test_replay_buffer_ring_and_save(tmp_path):
    buffer = ReplayBuffer(5, {"x": 2, "reward": 0})
    for i in range(3):
        buffer.add({"x": np.full((3, 2), i, np.float32), "reward": np.full(3, i, np.float32)})
    assert buffer.size == 5 and buffer.cursor == 4
    np.testing.assert_array_equal(buffer.recent(5)["reward"], [1, 1, 2, 2, 2])
    buffer.save(tmp_path / "b.npz")
    again = ReplayBuffer.load(tmp_path / "b.npz", {"x": 2, "reward": 0})
    np.testing.assert_array_equal(again.recent(5)["reward"], buffer.recent(5)["reward"])
    rng1, rng2 = np.random.default_rng(3), np.random.default_rng(3)
    np.testing.assert_array_equal(np.sort(again.sample(rng1, 4)["reward"]), np.sort(buffer.sample(rng2, 4)["reward"]))


def test_demo_transitions_successors_and_terminals():
    x = np.arange(5, dtype=np.float32)[:, None]
    out = demo_transitions(x, x, np.array([0, 0, 0, 1, 1]), np.zeros(5), np.array([0, 0, 1, 0, 0]))
    np.testing.assert_array_equal(out["next_x"][:, 0], [1, 2, 2, 4, 4])
    np.testing.assert_array_equal(out["discount"], [1, 1, 0, 1, 1])


def test_gaussian_kl_known_value_and_zero_on_itself():
    kl = tg.gaussian_kl(jnp.array([0.0, 0.3]), jnp.array([1.0, 0.5]), jnp.array([1.0, 0.3]), jnp.array([2.0, 0.5]))
    np.testing.assert_allclose(np.asarray(kl), [math.log(2.0) + 2.0 / 8.0 - 0.5, 0.0], rtol=1e-6, atol=1e-7)
