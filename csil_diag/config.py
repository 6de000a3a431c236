"""Frozen configuration dataclasses; every size and choice is a field."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from typing import Any

from csil_diag.errors import UserError


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)} (got {value!r})")


def parse_input_transform(text: str) -> tuple[str, int | None]:
    """``none`` | ``pca:K`` | ``whiten`` | ``whiten:K`` → (kind, K or None); a one-line error otherwise."""
    kind, _, k = text.partition(":")
    ok = kind in ("none", "pca", "whiten") and (k.isdigit() and int(k) > 0 if k else kind != "pca")
    if not ok or (kind == "none" and k):
        raise UserError(
            f"input transform must be none, pca:K, whiten or whiten:K with K a positive integer (got {text!r})"
        )
    return kind, int(k) if k else None


@dataclass(frozen=True)
class HetStatConfig:
    """HetStat architecture (thesis App. B)."""

    hidden: tuple[int, ...] = (1024, 1024)
    bottleneck: int = 48
    features: int = 1024
    activation: str = "periodic_relu"  # periodic_relu | triangle | sin_cos
    covariance: str = "full"  # full (faithful) | diagonal (speed studies; labelled in every output)
    covariance_blocks: int = 16  # column blocks storing the full factor's lower triangle (same math)
    log_lengthscale_init: float = -5.0
    prior_variance: float = 0.75
    min_variance: float = 1e-5
    layer_norm: bool = True
    # Remedies for the collapse on wide embeddings (at their defaults a run is the thesis' HetStat, and its identity
    # omits them, so runs made before they existed resume):
    trunk: str = "plain"  # plain | spectral: spectrally normalised layers with residual hidden blocks (SNGP)
    spectral_bound: float = 0.95  # the spectral trunk's bound on each layer's spectral norm
    input_transform: str = "none"  # none | pca:K | whiten | whiten:K, fitted on the training demos' features
    learn_lengthscale: bool = True  # False: the random features' lengthscales stay at log_lengthscale_init
    rf_skip: bool = False  # half the random features read the (transformed) input directly, bypassing the trunk
    # learned | posterior: at every evaluation point the covariance is the Bayesian posterior of the linear head given
    # the training demos' features, plus their pre-squash residual variance as noise (SNGP's last layer), instead of
    # the NLL-fitted one (policy/posterior_head.py)
    head: str = "learned"

    def __post_init__(self) -> None:
        _check_choice("activation", self.activation, ("periodic_relu", "triangle", "sin_cos"))
        _check_choice("covariance", self.covariance, ("full", "diagonal"))
        _check_choice("trunk", self.trunk, ("plain", "spectral"))
        _check_choice("head", self.head, ("learned", "posterior"))
        if self.head == "posterior" and self.covariance != "full":
            raise UserError("head=posterior replaces the full covariance factor: use covariance=full with it")
        parse_input_transform(self.input_transform)
        if not (math.isfinite(self.spectral_bound) and self.spectral_bound > 0):
            raise UserError(f"spectral_bound must be a positive number such as 0.95 (got {self.spectral_bound})")
        if self.rf_skip and self.features % 4:
            raise UserError(
                f"rf_skip splits the features into two sin/cos halves: features must be a multiple of 4 "
                f"(got {self.features})"
            )
        if self.features % 2:
            raise UserError(f"features must be even (got {self.features})")
        if self.features % self.covariance_blocks:
            raise UserError(f"features ({self.features}) must be a multiple of covariance_blocks")


REMEDY_DEFAULTS = {
    "trunk": "plain",
    "spectral_bound": 0.95,
    "input_transform": "none",
    "learn_lengthscale": True,
    "rf_skip": False,
    "head": "learned",
}


def hetstat_identity(config: HetStatConfig) -> dict[str, Any]:
    """The HetStat's part of a run identity: remedy fields only where they differ from the thesis' HetStat."""
    data = asdict(config)
    for key, default in REMEDY_DEFAULTS.items():
        # the bound is part of a spectral trunk's identity even at its default; meaningless without one
        keep = key == "spectral_bound" and config.trunk == "spectral"
        if (data[key] == default and not keep) or (key == "spectral_bound" and config.trunk != "spectral"):
            del data[key]
    return data


def remedy_label(config: HetStatConfig) -> str:
    """The remedies a HetStat uses, for titles and tables ("" for the thesis' HetStat)."""
    parts = []
    if config.trunk != "plain":
        parts.append(f"{config.trunk} trunk" + (f" (≤{config.spectral_bound:g})" if config.trunk == "spectral" else ""))
    if config.input_transform != "none":
        parts.append(f"input {config.input_transform}")
    if not config.learn_lengthscale:
        parts.append(f"fixed lengthscale {config.log_lengthscale_init:g}")
    if config.rf_skip:
        parts.append("random-feature skip")
    if config.head != "learned":
        parts.append(f"{config.head} head")
    return ", ".join(parts)


@dataclass(frozen=True)
class BCConfig:
    """BC pre-training (thesis App. B: lr 1e-4, batch 256, AdamW; 5k steps there)."""

    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 256
    mode: str = "head"  # head | residual | ensemble: how the HetStat composes with a base action

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, ("head", "residual", "ensemble"))
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0) or self.batch_size < 1:
            raise UserError(
                f"--lr must be a positive number and --batch-size ≥ 1 (got {self.learning_rate}, {self.batch_size})"
            )
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UserError(f"weight decay must be a number ≥ 0 (got {self.weight_decay})")


@dataclass(frozen=True)
class CriticConfig:
    """Twin Q networks (thesis App. B): Dense(1024) → LN → ELU → Dense(1024) → ELU → Dense(48) → ELU → Dense(1)."""

    hidden: tuple[int, ...] = (1024, 1024)
    bottleneck: int = 48
    layer_norm: bool = True


@dataclass(frozen=True)
class CSILConfig:
    """RL after BC: coherent reward and its refinement, critic pre-training, SAC (thesis Alg. 1, App. B; CSIL's code).

    ``algo`` csil: the reward is the BC HetStat's coherent reward, refined online; the actor is regularised towards
    the BC policy with a fixed coefficient (CSIL's default). sacfd: the task's sparse reward, demonstrations at
    ``demo_ratio`` of every batch, SAC's automatic temperature, a fresh (zero-mean) HetStat.
    """

    algo: str = "csil"  # csil | sacfd
    discount: float = 0.99
    tau: float = 0.005
    batch_size: int = 256  # csil: this many demo and this many online transitions per update; sacfd: in all
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    reward_lr: float = 1e-3
    weight_decay: float = 1e-4
    utd: int = 1  # updates per environment step
    learning_starts: int = 1000  # online transitions before the first update
    # Coherent reward r = scale·(log q(a|s) − log p(a)) / d_a, minus scale·MAX when negative (App. B: ×0.16, negative).
    reward_sign: str = "negative"  # negative | positive
    reward_scale: float = 0.16
    refine_reward: bool = True
    kl_scale: float = 1.0  # weight of the online KL estimator in the refinement
    grad_norm_scale: float = 1.0  # critic ‖∂Q/∂a‖ penalty on demonstrations (CSIL's code)
    entropy_coefficient: float = 0.01  # csil: fixed weight of KL(π ‖ π_BC)
    critic_pretrain_steps: int = 20000
    critic_pretrain_lr: float = 1e-4
    reference: str = "bc"  # the critic pre-training's reference policy: bc (q_θ1) | prior (uniform p)
    demo_ratio: float = 0.2  # sacfd
    alpha_init: float = 1.0  # sacfd: initial temperature
    alpha_lr: float = 3e-4

    def __post_init__(self) -> None:
        _check_choice("--algo", self.algo, ("csil", "sacfd"))
        _check_choice("reward sign", self.reward_sign, ("negative", "positive"))
        _check_choice("critic reference", self.reference, ("bc", "prior"))
        rates = (self.actor_lr, self.critic_lr, self.reward_lr, self.critic_pretrain_lr, self.alpha_lr)
        if not all(math.isfinite(r) and r > 0 for r in rates):
            raise UserError(f"learning rates must be positive numbers (got {rates})")
        if not (0.0 <= self.discount < 1.0 and 0.0 < self.tau <= 1.0):
            raise UserError(f"discount must be in [0, 1) and tau in (0, 1] (got {self.discount}, {self.tau})")
        if self.batch_size < 2 or self.utd < 1 or self.learning_starts < 0 or self.critic_pretrain_steps < 0:
            raise UserError("batch size ≥ 2, --utd ≥ 1, learning starts ≥ 0 and critic pre-training steps ≥ 0")
        if not (math.isfinite(self.reward_scale) and self.reward_scale > 0):
            raise UserError(f"--reward-scale must be a positive number (got {self.reward_scale})")
        if not 0.0 < self.demo_ratio < 1.0:
            raise UserError(f"--demo-ratio must be in (0, 1) (got {self.demo_ratio})")
        if not (math.isfinite(self.entropy_coefficient) and self.entropy_coefficient >= 0):
            raise UserError(f"--entropy-coefficient must be ≥ 0 (got {self.entropy_coefficient})")


def to_dict(config: Any) -> dict[str, Any]:
    """A config (possibly nested) as plain JSON-able data."""
    return asdict(config)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (possibly nested) frozen config from :func:`to_dict` output; unknown keys are errors."""
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise UserError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    kwargs = {}
    for name, value in data.items():
        ftype = known[name].type
        sub = _CONFIGS.get(ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""))
        if sub is not None and isinstance(value, dict):
            value = from_dict(sub, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


_CONFIGS: dict[str, type] = {
    "HetStatConfig": HetStatConfig,
    "BCConfig": BCConfig,
    "CriticConfig": CriticConfig,
    "CSILConfig": CSILConfig,
}


# ------------------------------------------------------------------------------------------ presets
# The one registry of run presets, by run kind (a run config names its kind in ``KIND``). A value that is a dict
# updates the nested config it names; any other value replaces the field.
_SMALL_NETS = {
    "hetstat": HetStatConfig(hidden=(256, 256), features=256, covariance_blocks=4),
    "critic": CriticConfig(hidden=(256, 256)),
}
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "entropy": {
        # A few minutes on 2 cores: the main job's (scripts/main.sh).
        # Only the last parameters are kept (the full-width HetStat is ~40 MB a checkpoint).
        "quick": {
            "steps": 1000,
            "every": 250,
            "episodes": 4,
            "eval_episodes": 4,
            "seeds": (0,),
            "k_samples": 16,
            "checkpoints": "last",
        },
        # Thesis App. B / §6.3.1: 5k BC steps at lr 1e-4, 25 rollouts per point.
        "thesis": {"steps": 5000, "every": 1000, "episodes": 25, "eval_episodes": 25, "seeds": (0, 1, 2)},
    },
    "train": {
        # Tens of minutes a seed on 2 cores: 256-wide networks (App. B's widths cost ~10× per update on a CPU).
        "quick": {
            "steps": 20_000,
            "eval_every": 5_000,
            "eval_episodes": 10,
            "entropy_episodes": 4,
            "bc_steps": 2_000,
            "buffer_size": 100_000,
            "log_every": 500,
            # App. B's 20k critic pre-training steps stay: with 2k the critic is far from its fixed point when RL
            # starts and the actor follows its noise (measured: BC's 0.5 success fell to 0.1 within 6k steps).
            "rl": {"learning_starts": 1_000},
            **_SMALL_NETS,
        },
        # Thesis §5.2.3 / App. B: 250k steps, evaluations every 25k over 25 episodes, 4 seeds, App. B's networks.
        "thesis": {"steps": 250_000, "eval_every": 25_000, "eval_episodes": 25, "seeds": (0, 1, 2, 3)},
    },
}


def apply_preset(config: Any, preset: str | None) -> Any:
    """``config`` with the named preset of its run kind (``type(config).KIND``) applied; None leaves it as it is."""
    if preset is None:
        return config
    presets = PRESETS[type(config).KIND]
    if preset not in presets:
        raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(presets)}")
    values = {}
    for name, value in presets[preset].items():
        current = getattr(config, name)
        values[name] = replace(current, **value) if isinstance(value, dict) and is_dataclass(current) else value
    return replace(config, **values)
