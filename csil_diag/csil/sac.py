"""SAC for CSIL and SACfD: one jitted update does critic, reward refinement, actor and temperature (RL-X style).

Batches are dicts of arrays (the replay buffer stays in numpy outside jit):
    x (B, D), action (B, A), reward (B,), discount (B,) (0 after a success), next_x (B, D),
    base / next_base (B, A) where the mode composes with a VLA action, next_action (B, A) for demo SARSA.

CSIL (CSIL's code, thesis App. B): reward = coherent reward of the refined copy of the BC HetStat; soft value
V(s') = min Q̄(s', a') − β (log π(a'|s') − log π_BC(a'|s')) clipped at the reward's bound / (1 − γ); actor loss
β KL(π ‖ π_BC) − Q on demo and online states (β fixed); critic penalty ‖∂Q/∂a‖ on demos.
SACfD: the task reward, V(s') = min Q̄(s', a') − α log π(a'|s'), α tuned towards entropy −d_a; one mixed batch.
Each critic regresses to the shared target (CSIL's code trains their minimum; we keep SAC's twin regression).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from csil_diag.config import CSILConfig
from csil_diag.csil import reward as coherent
from csil_diag.csil.critic import TwinCritic, action_gradient_norm, soft_target
from csil_diag.policy import tanh_gaussian as tg

Batch = dict[str, jnp.ndarray]


class SACState(struct.PyTreeNode):
    step: jnp.ndarray
    actor: Any
    actor_opt: Any
    critic: Any
    critic_target: Any
    critic_opt: Any
    reward: Any  # csil: the refined copy of the BC HetStat; sacfd: None
    reward_opt: Any
    reference: Any  # csil: the frozen BC HetStat (π_BC); sacfd: None
    log_alpha: jnp.ndarray
    alpha_opt: Any


def concat(a: Batch, b: Batch) -> Batch:
    return {k: jnp.concatenate([a[k], b[k]]) for k in a if k in b}


@dataclass(frozen=True)
class Learner:
    """The networks and the jitted functions of one algorithm and composition mode."""

    actor_model: nn.Module  # HetStat
    critic_model: TwinCritic
    config: CSILConfig
    mode: str  # head | residual | ensemble
    action_dim: int
    min_variance: float

    @property
    def csil(self) -> bool:
        return self.config.algo == "csil"

    # ------------------------------------------------------------------ pieces
    def _opt(self, lr: float) -> optax.GradientTransformation:
        return optax.adamw(lr, weight_decay=self.config.weight_decay)

    def init(self, key: jax.Array, input_dim: int, with_base: bool, bc_params: Any | None) -> SACState:
        """Actor = the BC params (csil) or a fresh HetStat (sacfd: zero mean, the VLA's action in residual mode);
        reward = a separate copy of the BC params; critic fresh."""
        k_actor, k_critic = jax.random.split(key)
        x = jnp.zeros((1, input_dim), jnp.float32)
        a = jnp.zeros((1, self.action_dim), jnp.float32)
        actor = bc_params if (self.csil and bc_params is not None) else self.actor_model.init(k_actor, x)
        critic = self.critic_model.init(k_critic, x, a if with_base else None, a)
        cfg = self.config
        reward = jax.tree_util.tree_map(jnp.array, bc_params) if self.csil else None
        log_alpha = jnp.log(jnp.asarray(cfg.entropy_coefficient if self.csil else cfg.alpha_init, jnp.float32))
        return SACState(
            step=jnp.zeros((), jnp.int32),
            actor=actor,
            actor_opt=self._opt(cfg.actor_lr).init(actor),
            critic=critic,
            critic_target=critic,
            critic_opt=self._opt(cfg.critic_lr).init(critic),
            reward=reward,
            reward_opt=None if reward is None else self._opt(cfg.reward_lr).init(reward),
            reference=bc_params if self.csil else None,
            log_alpha=log_alpha,
            alpha_opt=optax.adam(cfg.alpha_lr).init(log_alpha),
        )

    def log_prob(self, params: Any, x, base, action) -> jnp.ndarray:
        """log q(a|s) of the composed HetStat policy: (B,)."""
        mu, std = self.actor_model.apply(params, x)
        return tg.log_prob(self.mode, action, mu, std, base)

    def gaussian(self, params: Any, x, base) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Mean and std of a HetStat's pre-squash Gaussian, composed with the base action: (B, A), (B, A)."""
        mu, std = self.actor_model.apply(params, x)
        return tg.squash_mean(self.mode, mu, base), std

    def sample(self, params: Any, x, base, key: jax.Array) -> dict[str, jnp.ndarray]:
        """A reparameterised action a (B, A), its log-probability logp (B,), and the pre-squash sample z with the
        Gaussian it came from (mean, std)."""
        mean, std = self.gaussian(params, x, base)
        z = mean + std * jax.random.normal(key, mean.shape, mean.dtype)
        logp = (tg.gaussian_log_prob(z, mean, std) - tg.log_det_squash(self.mode, z)).sum(-1)
        return {"a": tg.squash(self.mode, z, base), "logp": logp, "z": z, "mean": mean, "std": std}

    def reward(self, params: Any, x, base, action) -> jnp.ndarray:
        """The coherent reward of a HetStat's params at (s, a): (B,)."""
        cfg = self.config
        negative = cfg.reward_sign == "negative"
        log_q = self.log_prob(params, x, base, action)
        return coherent.coherent_reward(log_q, self.action_dim, cfg.reward_scale, negative, self.min_variance)

    def _scaled_ratio(self, reward: jnp.ndarray) -> jnp.ndarray:
        cfg = self.config
        return coherent.scaled_log_ratio(reward, cfg.reward_scale, cfg.reward_sign == "negative", self.min_variance)

    def _value_cap(self) -> float:
        cfg = self.config
        bound = coherent.max_reward(cfg.reward_scale, cfg.reward_sign == "negative", self.min_variance)
        return bound / (1.0 - cfg.discount)

    def temperature(self, state: SACState) -> jnp.ndarray:
        return jnp.exp(state.log_alpha) if not self.csil else jnp.asarray(self.config.entropy_coefficient)

    def _log_ratio(self, state: SACState, x, base, sample: dict[str, jnp.ndarray]) -> jnp.ndarray:
        """log π − log π_BC for csil (exact in z: the squash's Jacobian cancels), log π for sacfd: (B,)."""
        if self.csil:
            ref_mean, ref_std = self.gaussian(state.reference, x, base)
            return tg.log_ratio_pre_squash(sample["z"], sample["mean"], sample["std"], ref_mean, ref_std)
        return sample["logp"]

    # ------------------------------------------------------------------ one update
    def _update(self, state: SACState, demo: Batch, online: Batch, key: jax.Array):
        cfg = self.config
        k_next, k_actor = jax.random.split(key)
        batch = concat(demo, online)
        alpha = self.temperature(state)
        metrics: dict[str, jnp.ndarray] = {}

        # Reward (and its refinement on demo vs online transitions).
        if self.csil:
            n_demo = demo["x"].shape[0]

            def reward_loss(r_params):
                r = self.reward(r_params, batch["x"], batch.get("base"), batch["action"])
                loss, kl = coherent.refinement_loss(r[:n_demo], self._scaled_ratio(r[n_demo:]), cfg.kl_scale)
                return loss, (r, kl)

            (r_loss, (r, kl)), r_grads = jax.value_and_grad(reward_loss, has_aux=True)(state.reward)
            reward = jax.lax.stop_gradient(r)
            metrics |= {"reward_demo": r[:n_demo].mean(), "reward_online": r[n_demo:].mean(), "kl_estimate": kl}
            metrics["refinement_loss"] = r_loss
        else:
            reward = batch["reward"]

        # Critic.
        nxt = self.sample(state.actor, batch["next_x"], batch.get("next_base"), k_next)
        next_q = self.critic_model.apply(state.critic_target, batch["next_x"], batch.get("next_base"), nxt["a"]).min(0)
        next_v = next_q - alpha * self._log_ratio(state, batch["next_x"], batch.get("next_base"), nxt)
        if self.csil:
            next_v = jnp.minimum(next_v, self._value_cap())  # the reward's bound caps every return
        target = jax.lax.stop_gradient(soft_target(reward, batch["discount"], cfg.discount, next_v))

        def critic_loss(c_params):
            q = self.critic_model.apply(c_params, batch["x"], batch.get("base"), batch["action"])
            loss = jnp.mean(jnp.square(q - target[None]))
            penalty = jnp.zeros(())
            if self.csil and cfg.grad_norm_scale > 0:
                penalty = action_gradient_norm(self.critic_model, c_params, demo["x"], demo.get("base"), demo["action"])
            return loss + cfg.grad_norm_scale * penalty, (loss, penalty, q.mean())

        (c_loss, (bellman, grad_norm, q_mean)), c_grads = jax.value_and_grad(critic_loss, has_aux=True)(state.critic)
        updates, critic_opt = self._opt(cfg.critic_lr).update(c_grads, state.critic_opt, state.critic)
        critic = optax.apply_updates(state.critic, updates)
        critic_target = optax.incremental_update(critic, state.critic_target, cfg.tau)
        metrics |= {"critic_loss": c_loss, "bellman_error": bellman, "q_mean": q_mean, "target_mean": target.mean()}
        metrics |= {"critic_action_grad_norm": grad_norm}

        # Actor, on every state of the batch, against the updated critic.
        def actor_loss(a_params):
            drawn = self.sample(a_params, batch["x"], batch.get("base"), k_actor)
            q = self.critic_model.apply(critic, batch["x"], batch.get("base"), drawn["a"]).min(0)
            log_ratio = self._log_ratio(state, batch["x"], batch.get("base"), drawn)
            return jnp.mean(alpha * log_ratio - q), (drawn["logp"], jnp.mean(log_ratio))

        (a_loss, (logp, kl_to_bc)), a_grads = jax.value_and_grad(actor_loss, has_aux=True)(state.actor)
        updates, actor_opt = self._opt(cfg.actor_lr).update(a_grads, state.actor_opt, state.actor)
        actor = optax.apply_updates(state.actor, updates)
        metrics |= {"actor_loss": a_loss, "policy_entropy": -logp.mean(), "temperature": alpha}
        if self.csil:  # how far the actor has moved from π_BC (single-sample estimate of KL(π ‖ π_BC), nats)
            metrics["actor_kl_to_bc"] = kl_to_bc

        # Temperature (sacfd): towards entropy −d_a.
        log_alpha, alpha_opt = state.log_alpha, state.alpha_opt
        if not self.csil:
            # d/d log α of log α · (H − H̄) with H̄ = −d_a: α falls while the entropy is above its target.
            alpha_grad = jax.lax.stop_gradient(-logp.mean() + self.action_dim)
            updates, alpha_opt = optax.adam(cfg.alpha_lr).update(alpha_grad, state.alpha_opt)
            log_alpha = optax.apply_updates(state.log_alpha, updates)

        new = state.replace(
            step=state.step + 1,
            actor=actor,
            actor_opt=actor_opt,
            critic=critic,
            critic_target=critic_target,
            critic_opt=critic_opt,
            log_alpha=log_alpha,
            alpha_opt=alpha_opt,
        )
        if self.csil and cfg.refine_reward:
            updates, reward_opt = self._opt(cfg.reward_lr).update(r_grads, state.reward_opt, state.reward)
            new = new.replace(reward=optax.apply_updates(state.reward, updates), reward_opt=reward_opt)
        return new, metrics

    @functools.cached_property
    def update(self):
        """update(state, demo (n, B, …), online (n, B, …), key) → (state, metrics averaged over the n updates)."""

        @jax.jit
        def run(state: SACState, demo: Batch, online: Batch, key: jax.Array):
            def body(carry, inputs):
                d, o, i = inputs
                return self._update(carry, d, o, jax.random.fold_in(key, i))

            n = jax.tree_util.tree_leaves(demo)[0].shape[0]
            state, metrics = jax.lax.scan(body, state, (demo, online, jnp.arange(n)))
            return state, jax.tree_util.tree_map(jnp.mean, metrics)

        return run

    # ------------------------------------------------------------------ critic pre-training
    def _pretrain_step(self, state: SACState, demo: Batch, optimizer: optax.GradientTransformation):
        """SARSA on demonstration (s, a, s′, a′) with the frozen BC reward (Alg. 1's shaped critic)."""
        cfg = self.config
        reward = self.reward(state.reference, demo["x"], demo.get("base"), demo["action"])
        next_args = (demo["next_x"], demo.get("next_base"))
        next_q = self.critic_model.apply(state.critic_target, *next_args, demo["next_action"]).min(0)
        penalty = jnp.zeros_like(next_q)
        if cfg.reference == "prior":  # π = p: the shaping term is α (log q_θ1 − log p) = the unshifted reward
            penalty = self._scaled_ratio(self.reward(state.reference, *next_args, demo["next_action"]))
        target = jax.lax.stop_gradient(soft_target(reward, demo["discount"], cfg.discount, next_q - penalty))

        def loss_fn(c_params):
            q = self.critic_model.apply(c_params, demo["x"], demo.get("base"), demo["action"])
            grad_norm = action_gradient_norm(self.critic_model, c_params, demo["x"], demo.get("base"), demo["action"])
            return jnp.mean(jnp.square(q - target[None])) + cfg.grad_norm_scale * grad_norm, q.mean()

        (loss, q_mean), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.critic)
        updates, opt = optimizer.update(grads, state.critic_opt, state.critic)
        critic = optax.apply_updates(state.critic, updates)
        target_params = optax.incremental_update(critic, state.critic_target, cfg.tau)
        new = state.replace(critic=critic, critic_target=target_params, critic_opt=opt)
        return new, {"pretrain_loss": loss, "q_mean": q_mean, "reward_demo": reward.mean()}

    def pretrain_optimizer(self) -> optax.GradientTransformation:
        return optax.adamw(self.config.critic_pretrain_lr, weight_decay=self.config.weight_decay)

    @functools.cached_property
    def pretrain_critic(self):
        """pretrain(state, demo (n, B, …)) → (state, metrics of the last step); state.critic_opt must hold the
        pre-training optimiser's state (:meth:`with_pretrain_optimizer`)."""
        optimizer = self.pretrain_optimizer()

        @jax.jit
        def run(state: SACState, demo: Batch):
            def body(carry, d):
                return self._pretrain_step(carry, d, optimizer)

            state, metrics = jax.lax.scan(body, state, demo)
            return state, jax.tree_util.tree_map(lambda m: m[-1], metrics)

        return run

    def with_pretrain_optimizer(self, state: SACState) -> SACState:
        return state.replace(critic_opt=self.pretrain_optimizer().init(state.critic))

    def with_rl_optimizer(self, state: SACState) -> SACState:
        """After pre-training: the RL optimiser from scratch, the target equal to the pre-trained critic."""
        return state.replace(critic_opt=self._opt(self.config.critic_lr).init(state.critic), critic_target=state.critic)
