"""`csil-diag train`: CSIL (thesis Alg. 1) or SACfD on a robosuite task, composed with π0 in any mode.

Per seed: BC pre-training of the HetStat (csil) → critic pre-training on the demos (csil) → segments of RL, each
``eval_every`` environment steps (the episodes in flight are finished), then an evaluation: the deterministic
policy's success, return and length over fixed episodes, and the online-vs-expert entropy of the current policy
(stochastic episodes vs held-out demo states: the diagnostic of `entropy`, watched during RL).

Run directory::

    config.json            resolved config, normaliser, dataset fingerprint, VLA, versions
    metrics.parquet        every seed's rows (kind: bc | critic_pretrain | train | eval), rebuilt after each segment
    tensorboard/seed<s>/   the same curves as event files, to watch a long run live
    seed<s>/rows/          the rows of each finished segment (the unit of resumption)
    seed<s>/ckpt/          the last finished segment: state.msgpack (all params and optimisers), buffer.npz,
                           progress.json (segment, env steps, updates, episodes) written last
    seed<s>/start_actor.msgpack  the actor RL started from (CSIL: the BC HetStat), for `csil-diag evaluate --at start`
    seed<s>/pretrain/      until segment 0 is saved: the BC or critic pre-training state at most PRETRAIN_SAVE_SECONDS
                           old, with its rows and the demo sampler's state (progress.json, written last)

Every random draw is a function of (seed, segment, counter), so a run killed and resumed from its last segment
gives exactly the numbers of an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from csil_diag.config import BCConfig, CriticConfig, CSILConfig, HetStatConfig
from csil_diag.csil.critic import TwinCritic
from csil_diag.csil.sac import Learner
from csil_diag.csil.seed_trainer import SeedTrainer
from csil_diag.data.buffer import demo_transitions
from csil_diag.data.robomimic import load_episode, open_demos
from csil_diag.diag.entropy import make_state_evaluator
from csil_diag.envs.tasks import ACTION_DIM
from csil_diag.envs.vector import VectorEnv
from csil_diag.errors import UserError
from csil_diag.features.dataset import split_names
from csil_diag.policy.actor import make_act
from csil_diag.policy.hetstat import HetStat
from csil_diag.resumable import (
    ResumableRun,
    check_input,
    check_site,
    check_std_floor,
    load_run_config,
    needs_vla,
    rebuild_parquet,
    run_identity,
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved as config.json; must match on resume, seeds may be added)."""

    KIND: ClassVar[str] = "train"  # its presets in config.PRESETS

    task: str
    input: str
    demos: str
    steps: int = 250_000  # environment steps of RL per seed
    eval_every: int = 25_000
    eval_episodes: int = 25  # deterministic evaluation episodes (success)
    entropy_episodes: int = 10  # stochastic episodes whose states are the online side of the entropy diagnostic
    seeds: tuple[int, ...] = (0,)
    n_envs: int = 4  # envs stepped in lockstep (in worker processes)
    bc_steps: int = 5000  # csil: BC pre-training of the HetStat (App. B)
    buffer_size: int = 1_000_000
    log_every: int = 1000  # updates per train-metrics row
    k_samples: int = 16
    bootstrap: int = 1000
    std_floor: float = 0.01
    horizon: int | None = None
    hetstat: HetStatConfig = field(default_factory=HetStatConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    bc: BCConfig = field(default_factory=BCConfig)  # bc.mode is the composition mode (head | residual | ensemble)
    rl: CSILConfig = field(default_factory=CSILConfig)
    model: str | None = None  # π0 checkpoint (None: the embedded default) where the input or the mode needs one
    site: str = "state"
    replan: int = 1

    def __post_init__(self) -> None:
        check_input(self)
        if self.steps < 1 or self.eval_every < 1:
            raise UserError(f"--steps and --eval-every must be ≥ 1 (got {self.steps}, {self.eval_every})")
        if self.eval_episodes < 1 or self.entropy_episodes < 0 or self.n_envs < 1 or self.k_samples < 1:
            raise UserError("--eval-episodes and --envs must be ≥ 1 (--entropy-episodes ≥ 0)")
        if not self.seeds or any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"--seeds must name distinct non-negative integers such as 0,1,2 (got {list(self.seeds)})")
        if self.bc_steps < 0 or self.buffer_size < 1 or self.log_every < 1 or self.bootstrap < 1:
            raise UserError("--bc-steps ≥ 0, buffer size ≥ 1, log_every ≥ 1")
        check_std_floor(self.std_floor)
        check_site(self.site)
        if self.hetstat.head != "learned":
            raise UserError(
                "head=posterior is a diagnostic remedy of entropy runs; CSIL's reward and actor use the learned head"
            )

    @property
    def mode(self) -> str:
        return self.bc.mode

    @property
    def uses_vla(self) -> bool:
        return needs_vla(self.input, self.mode)

    def identity(self) -> dict[str, Any]:
        return run_identity(self, ("seeds", "model", "demos"))


OPTION_NAMES: dict[str, str] = {
    "task": "--task",
    "input": "--input",
    "steps": "--steps",
    "eval_every": "--eval-every",
    "eval_episodes": "--eval-episodes",
    "entropy_episodes": "--entropy-episodes",
    "n_envs": "--envs",
    "bc_steps": "--bc-steps",
    "site": "--site",
    "replan": "--replan",
    "vla_model": "--model (its fingerprint)",
    "bc.mode": "--mode",
    "bc.learning_rate": "--bc-lr",
    "rl.algo": "--algo",
    "rl.utd": "--utd",
    "rl.reward_sign": "--reward-sign",
    "rl.reward_scale": "--reward-scale",
    "rl.demo_ratio": "--demo-ratio",
    "rl.entropy_coefficient": "--entropy-coefficient",
    "rl.critic_pretrain_steps": "--critic-pretrain-steps",
}


# ------------------------------------------------------------------------------------ the run
class TrainRun(ResumableRun):
    """One training run directory (the checks, lock, inputs, config.json and resume are :class:`ResumableRun`'s);
    :meth:`run` trains every seed's missing segments."""

    KIND: ClassVar[str] = "train"
    COMMAND: ClassVar[str] = "csil-diag train"
    OPTION_NAMES: ClassVar[dict[str, str]] = OPTION_NAMES
    config: TrainConfig

    @property
    def n_envs(self) -> int:
        return self.config.n_envs

    # ------------------------------------------------------------------ inputs
    def _build(self) -> None:
        cfg = self.config
        self.model = HetStat(cfg.hetstat, ACTION_DIM, self.inputs.normalizer.out_width)
        critic = TwinCritic(cfg.critic)
        self.learner = Learner(self.model, critic, cfg.rl, cfg.mode, ACTION_DIM, cfg.hetstat.min_variance)
        self.act = make_act(self.model, cfg.mode)
        self.evaluate_states = make_state_evaluator(self.model, cfg.mode, cfg.k_samples)
        self.demo = self._demo_transitions()

    def _config_record(self) -> dict[str, Any]:
        if self.vla is None:
            return {}
        return {"vla": {"model_dir": self.config.model, "fingerprint": self.vla.fingerprint, "site": self.config.site}}

    def _demo_transitions(self) -> dict[str, np.ndarray]:
        """The training demos as SARSA tuples with the task's reward (sacfd) and success terminals."""
        train = self.inputs.train
        rewards, terminal = [], []
        with open_demos(self.config.demos) as f:
            for name in split_names(f, "train"):
                ep = load_episode(f, name, ())
                done = np.zeros(len(ep), bool)
                done[-1] = bool(ep.dones[-1]) if len(ep.dones) else False
                rewards.append(np.asarray(ep.rewards, np.float32))
                terminal.append(done)
        base = train.base_actions if self.composes else None
        x = self.inputs.normalizer(train.x)
        rewards_, terminal_ = np.concatenate(rewards), np.concatenate(terminal)
        return demo_transitions(x, train.actions, train.episode, rewards_, terminal_, base)

    def _widths(self) -> dict[str, int]:
        d = self.inputs.normalizer.out_width
        widths = {"x": d, "action": ACTION_DIM, "reward": 0, "discount": 0, "next_x": d}
        if self.composes:
            widths |= {"base": ACTION_DIM, "next_base": ACTION_DIM}
        return widths

    def _resume_view(self, saved: dict[str, Any] | None, identity: dict[str, Any]) -> dict[str, Any] | None:
        old_steps = (saved or {}).get("identity", {}).get("steps")
        if old_steps is not None and identity["steps"] > old_steps and old_steps % identity["eval_every"] == 0:
            # A raised budget continues the run exactly: its segments so far end where the longer run's do.
            saved = {**saved, "identity": {**saved["identity"], "steps": identity["steps"]}}
        return saved

    # ------------------------------------------------------------------ files of a seed
    def seed_dir(self, seed: int) -> Path:
        return self.out / f"seed{seed}"

    def progress(self, seed: int) -> dict[str, Any] | None:
        """The last finished segment of a seed (None: nothing finished)."""
        path = self.seed_dir(seed) / "ckpt" / "progress.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError:
            return None  # damaged: the seed starts over (its numbers are a pure function of the seed)

    def rebuild_table(self) -> pd.DataFrame:
        """metrics.parquet from every seed's finished segments."""
        parts = []
        for seed in sorted(self._saved["config"]["seeds"]) if self._saved else self.config.seeds:
            done = self.progress(seed)
            if done is None:
                continue
            for segment in range(done["segment"] + 1):
                path = self.seed_dir(seed) / "rows" / f"segment{segment:05d}.parquet"
                if path.exists():
                    parts.append(path)
        return rebuild_parquet(self.out / "metrics.parquet", parts)

    # ------------------------------------------------------------------ running
    def run_seed(self, venv: VectorEnv, seed: int, on_event: Callable[[str, dict[str, Any]], None]) -> None:
        SeedTrainer(self, venv, seed, on_event).run()


def load_train_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """config.json of a train run directory, with a clear error when it is not one."""
    return load_run_config(run_dir, TrainConfig, "csil-diag train", "train")
