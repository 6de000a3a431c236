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
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from csil_diag.config import BCConfig, CriticConfig, CSILConfig, HetStatConfig, from_dict, hetstat_identity
from csil_diag.csil.critic import TwinCritic
from csil_diag.csil.sac import Learner, SACState
from csil_diag.data.buffer import ReplayBuffer, demo_transitions
from csil_diag.data.robomimic import load_episode, open_demos, validate_demos
from csil_diag.diag.entropy import make_state_evaluator, separation_summary, split_summary
from csil_diag.envs.rollouts import episode_seeds, run_episodes
from csil_diag.envs.tasks import ACTION_DIM, task_spec
from csil_diag.envs.vector import VectorEnv
from csil_diag.errors import UserError
from csil_diag.features.dataset import check_demos_for_task, split_names
from csil_diag.features.sources import check_sources, check_widths, model_sources, required_keys
from csil_diag.features.spec import InputSpec
from csil_diag.inputs import VLA_STATE_KEYS, RunInputs, load_inputs, load_vla
from csil_diag.policy.actor import RolloutActor, make_act
from csil_diag.policy.bc import init_state, make_train_fn
from csil_diag.policy.hetstat import HetStat
from csil_diag.runs import (
    RunDir,
    atomic_write_json,
    atomic_write_parquet,
    check_resume,
    file_fingerprint,
    load_pytree,
    now_utc,
    read_json_file,
    read_saved_config,
    save_pytree,
    versions,
)

if TYPE_CHECKING:
    from csil_diag.vla.policy import VLAPolicy

BC_CHUNK = 250  # BC steps per jitted call
PRETRAIN_CHUNK = 250  # critic pre-training steps per jitted call (one metrics row each)
START_ACTOR = "start_actor.msgpack"  # per seed: the actor RL starts from (the BC HetStat for CSIL)
PRETRAIN_SAVE_SECONDS = 60.0  # pre-training checkpoints at most this often: a kill loses at most this much of it
EVAL_SALT, TRAIN_SALT = 0xE7A1, 0x7A1  # episode seeds of evaluations and of training episodes


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
        task_spec(self.task)
        spec = InputSpec.parse(self.input)
        check_sources(spec)
        object.__setattr__(self, "input", str(spec))
        if self.steps < 1 or self.eval_every < 1:
            raise UserError(f"--steps and --eval-every must be ≥ 1 (got {self.steps}, {self.eval_every})")
        if self.eval_episodes < 1 or self.entropy_episodes < 0 or self.n_envs < 1 or self.k_samples < 1:
            raise UserError("--eval-episodes and --envs must be ≥ 1 (--entropy-episodes ≥ 0)")
        if not self.seeds or any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"--seeds must name distinct non-negative integers such as 0,1,2 (got {list(self.seeds)})")
        if self.bc_steps < 0 or self.buffer_size < 1 or self.log_every < 1 or self.bootstrap < 1:
            raise UserError("--bc-steps ≥ 0, buffer size ≥ 1, log_every ≥ 1")
        if not (math.isfinite(self.std_floor) and self.std_floor > 0):
            raise UserError(f"--std-floor must be a positive number (got {self.std_floor})")
        from csil_diag.vla.pi0 import EMBEDDING_SITES

        if self.site not in EMBEDDING_SITES:
            raise UserError(f"--site must be one of {', '.join(EMBEDDING_SITES)} (got {self.site!r})")
        if self.hetstat.head != "learned":
            raise UserError(
                "head=posterior is a diagnostic remedy of entropy runs; CSIL's reward and actor use the learned head"
            )

    @property
    def mode(self) -> str:
        return self.bc.mode

    @property
    def uses_vla(self) -> bool:
        return bool(model_sources(InputSpec.parse(self.input))) or self.mode != "head"

    def identity(self) -> dict[str, Any]:
        data = asdict(self)
        data["hetstat"] = hetstat_identity(self.hetstat)  # remedies only where used
        for key in ("seeds", "model", "demos"):  # seeds may be added; model and demos are identified by fingerprints
            data.pop(key)
        if not self.uses_vla:
            data.pop("site")
            data.pop("replan")
        return json.loads(json.dumps(data))


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
class TrainRun:
    """One training run directory. The constructor checks and locks; :meth:`load` reads the inputs; :meth:`run`
    trains every seed's missing segments."""

    def __init__(self, config: TrainConfig, out: str | os.PathLike, workers: int = 0) -> None:
        self.config = config
        self.out = Path(out)
        self.workers = workers
        self.spec = InputSpec.parse(config.input)
        self.run_dir = RunDir(self.out).check()
        check_demos_for_task(config.demos, config.task)
        keys = required_keys(self.spec) + (VLA_STATE_KEYS if config.uses_vla else ())
        validate_demos(config.demos, tuple(dict.fromkeys(keys)), ("train", "valid"), ACTION_DIM)
        if config.uses_vla and config.model is not None:
            from csil_diag.vla.embed import SOURCE
            from csil_diag.vla.policy import checkpoint_site_width

            check_widths(self.spec, {SOURCE: checkpoint_site_width(config.model, config.site)})
        self.vla: VLAPolicy | None = None
        self.inputs: RunInputs | None = None
        self._saved = read_saved_config(self.out)
        self._check_resume(self.config.identity())
        self.run_dir.acquire(f"csil-diag train --out {self.out}")

    def close(self) -> None:
        self.run_dir.release()

    def __enter__(self) -> TrainRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ inputs
    def load(self, on_embed: Callable[[int, int], None] | None = None) -> TrainRun:
        if self.inputs is not None:
            return self
        cfg = self.config
        vla = None
        if cfg.uses_vla:
            vla = load_vla(cfg.model, cfg.site, cfg.n_envs, self.spec, cfg.demos, on_embed)
            self.config = cfg = replace(cfg, model=vla[2])
            self.vla = vla[0]
        self.inputs = load_inputs(cfg.demos, self.spec, cfg.std_floor, vla, cfg.hetstat.input_transform)
        self.composes = cfg.mode != "head"
        self.model = HetStat(cfg.hetstat, ACTION_DIM, self.inputs.normalizer.out_width)
        critic = TwinCritic(cfg.critic)
        self.learner = Learner(self.model, critic, cfg.rl, cfg.mode, ACTION_DIM, cfg.hetstat.min_variance)
        self.act = make_act(self.model, cfg.mode)
        self.evaluate_states = make_state_evaluator(self.model, cfg.mode, cfg.k_samples)
        self.demo = self._demo_transitions()
        self._write_config()
        return self

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

    # ------------------------------------------------------------------ config.json and identity
    def identity(self) -> dict[str, Any]:
        identity = self.config.identity()
        if self.vla is not None:
            identity["vla_model"] = self.vla.fingerprint
        return identity

    def _check_resume(self, identity: dict[str, Any]) -> None:
        saved = self._saved
        old_steps = (saved or {}).get("identity", {}).get("steps")
        if old_steps is not None and identity["steps"] > old_steps and old_steps % identity["eval_every"] == 0:
            # A raised budget continues the run exactly: its segments so far end where the longer run's do.
            saved = {**saved, "identity": {**saved["identity"], "steps": identity["steps"]}}
        check_resume(self.out, saved, identity, OPTION_NAMES)

    def _write_config(self) -> None:
        cfg = self.config
        saved = {
            "kind": "train",
            "config": asdict(cfg),
            "identity": self.identity(),
            "input_width": int(self.inputs.train.x.shape[1]),
            "model_input_width": self.inputs.normalizer.out_width,
            "normalizer": self.inputs.normalizer.to_dict(),
            "demos": {
                "path": str(cfg.demos),
                "fingerprint": file_fingerprint(cfg.demos),
                "train_demos": len(self.inputs.train.demos),
                "valid_demos": len(self.inputs.valid.demos),
                "train_states": len(self.inputs.train.x),
            },
            "versions": versions(),
        }
        if self.vla is not None:
            saved["vla"] = {"model_dir": cfg.model, "fingerprint": self.vla.fingerprint, "site": cfg.site}
        if self._saved is not None:
            self._check_resume(saved["identity"])
            if self._saved.get("demos", {}).get("fingerprint") != saved["demos"]["fingerprint"]:
                raise UserError(f"{cfg.demos} changed since {self.out} was started; use another --out")
            saved["config"]["seeds"] = sorted(set(self._saved["config"]["seeds"]) | set(cfg.seeds))
            saved["created"] = self._saved.get("created", now_utc())
        else:
            saved["created"] = now_utc()
        saved["updated"] = now_utc()
        self.inputs.normalizer.save_projection(self.out)
        atomic_write_json(self.out / "config.json", saved)
        self._saved = saved

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

    def rebuild_metrics(self) -> pd.DataFrame:
        frames = []
        for seed in sorted(self._saved["config"]["seeds"]) if self._saved else self.config.seeds:
            done = self.progress(seed)
            if done is None:
                continue
            for segment in range(done["segment"] + 1):
                path = self.seed_dir(seed) / "rows" / f"segment{segment:05d}.parquet"
                if path.exists():
                    frames.append(pd.read_parquet(path))
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        atomic_write_parquet(self.out / "metrics.parquet", table)
        return table

    # ------------------------------------------------------------------ running
    def run(self, on_event: Callable[[str, dict[str, Any]], None] = lambda *a: None) -> pd.DataFrame:
        """Train every seed's missing segments; the run directory stays locked until they are written."""
        if not self.run_dir.held:
            self.run_dir.acquire(f"csil-diag train --out {self.out}")
        try:
            self.load()
            cameras = {} if self.vla is None else {"cameras": self.vla.cameras, "image_size": self.vla.image_size}
            cfg = self.config
            with VectorEnv(cfg.task, cfg.n_envs, workers=self.workers, seed=0, horizon=cfg.horizon, **cameras) as venv:
                for seed in self.config.seeds:
                    SeedTrainer(self, venv, seed, on_event).run()
            return self.rebuild_metrics()
        finally:
            self.run_dir.release()


class SeedTrainer:
    """One seed: pre-training, then RL segment by segment, each ending in an evaluation and a checkpoint."""

    def __init__(self, run: TrainRun, venv: VectorEnv, seed: int, on_event: Callable[[str, dict[str, Any]], None]):
        self.run_ = run
        self.cfg = run.config
        self.venv = venv
        self.seed = seed
        self.on_event = on_event
        self.dir = run.seed_dir(seed)
        self.learner = run.learner
        self.writer = None
        self._saved_at = time.monotonic()  # when pre-training state was last saved (or the seed began)

    # ------------------------------------------------------------------ checkpoint
    def _save(self, segment: int, state: SACState, buffer: ReplayBuffer, counters: dict[str, int]) -> None:
        """state and buffer first, progress.json last: a kill in between leaves the previous segment's progress,
        whose rows and counters are then recomputed exactly."""
        ckpt = self.dir / "ckpt"
        save_pytree(ckpt / "state.msgpack", state)
        buffer.save(ckpt / "buffer.npz")
        atomic_write_json(ckpt / "progress.json", {"segment": segment, **counters, "written": now_utc()})

    def _load(self, template: SACState) -> tuple[int, SACState, ReplayBuffer, dict[str, int]] | None:
        done = self.run_.progress(self.seed)
        if done is None:
            return None
        ckpt = self.dir / "ckpt"
        try:
            state = load_pytree(ckpt / "state.msgpack", template)
            buffer = ReplayBuffer.load(ckpt / "buffer.npz", self.run_._widths())
        except UserError:
            return None
        if int(state.step) != done["updates"] or buffer.size != min(done["transitions"], buffer.capacity):
            return None  # killed between the state and progress writes: the seed's segments are recomputed
        counters = {k: int(done[k]) for k in ("env_steps", "updates", "episodes", "transitions", "iterations")}
        return int(done["segment"]), state, buffer, counters

    def _write_rows(self, segment: int, rows: list[dict[str, Any]]) -> None:
        frame = pd.DataFrame(rows).assign(seed=self.seed, segment=segment, algo=self.cfg.rl.algo, mode=self.cfg.mode)
        atomic_write_parquet(self.dir / "rows" / f"segment{segment:05d}.parquet", frame)
        if self.writer is not None:
            for row in rows:
                step = row.get("pretrain_step", row.get("env_steps", 0))
                for key, value in row.items():
                    scalar = isinstance(value, int | float) and math.isfinite(value)
                    if scalar and key not in ("env_steps", "pretrain_step"):
                        self.writer.add_scalar(f"{row['kind']}/{key}", value, step)
            self.writer.flush()

    # ------------------------------------------------------------------ the seed
    def run(self) -> None:
        cfg = self.cfg
        resumed = self._load(self._template())
        if resumed is not None and resumed[3]["env_steps"] >= cfg.steps:
            self.on_event("done", {"seed": self.seed, "env_steps": resumed[3]["env_steps"]})
            return
        # Segments past the checkpoint are recomputed: drop their rows (a kill may have left some).
        first = 0 if resumed is None else resumed[0] + 1
        for path in (self.dir / "rows").glob("segment*.parquet"):
            if int(path.stem.removeprefix("segment")) >= first:
                path.unlink()
        from tensorboardX import SummaryWriter

        purge = None if resumed is None else max(resumed[3]["env_steps"], 1)
        self.writer = SummaryWriter(str(self.run_.out / "tensorboard" / f"seed{self.seed}"), purge_step=purge)
        try:
            if resumed is None:
                state, buffer, counters, rows = self._pretrain()
                save_pytree(self.dir / START_ACTOR, state.actor)  # what `csil-diag evaluate --at start` runs
                self._evaluate_and_save(0, state, buffer, counters, rows, {})
                shutil.rmtree(self.dir / "pretrain", ignore_errors=True)  # segment 0's checkpoint supersedes it
                segment = 1
            else:
                segment, state, buffer, counters = resumed
                shutil.rmtree(self.dir / "pretrain", ignore_errors=True)  # left by a kill right after segment 0
                self.on_event("resume", {"seed": self.seed, **counters})
                segment += 1
            while counters["env_steps"] < cfg.steps:
                state, rows, summary = self._segment(segment, state, buffer, counters)
                self._evaluate_and_save(segment, state, buffer, counters, rows, summary)
                segment += 1
        finally:
            self.writer.close()

    def _template(self) -> SACState:
        d = self.run_.inputs.normalizer.out_width
        bc = self.run_.model.init(jax.random.key(0), jnp.zeros((1, d))) if self.cfg.rl.algo == "csil" else None
        return self.learner.init(jax.random.key(0), d, self.run_.composes, bc)

    # ------------------------------------------------------------------ pre-training
    def _pretrain(self) -> tuple[SACState, ReplayBuffer, dict[str, int], list[dict[str, Any]]]:
        cfg, inputs = self.cfg, self.run_.inputs
        d = inputs.normalizer.out_width
        saved = self._load_pretrain()
        rows: list[dict[str, Any]] = []
        if saved is not None and saved["phase"] == "critic":
            state, rows = saved["state"], saved["rows"]
        else:
            bc_params = None
            if cfg.rl.algo == "csil":
                bc_params, rows = self._bc(saved)
            state = self.learner.init(jax.random.key(self.seed), d, self.run_.composes, bc_params)
        if cfg.rl.algo == "csil" and cfg.rl.critic_pretrain_steps:
            state, rows = self._critic_pretrain(state, rows, saved)
        counters = {"env_steps": 0, "updates": 0, "episodes": 0, "transitions": 0, "iterations": 0}
        return state, ReplayBuffer(cfg.buffer_size, self.run_._widths()), counters, rows

    def _save_pretrain(
        self, phase: str, step: int, state: Any, rows: list[dict[str, Any]], rng: np.random.Generator | None = None
    ) -> None:
        """The pre-training state (state file first, progress.json naming it last, then older files removed)."""
        folder = self.dir / "pretrain"
        name = f"{phase}{step:08d}.msgpack"
        save_pytree(folder / name, state)
        # rows as (key, value) pairs: the JSON writer sorts keys, and the table's columns keep their order
        progress = {"phase": phase, "step": step, "state": name, "written": now_utc()}
        progress["rows"] = [list(map(list, row.items())) for row in rows]
        progress["rng"] = None if rng is None else rng.bit_generator.state
        atomic_write_json(folder / "progress.json", progress)
        for old in folder.glob("*.msgpack"):
            if old.name != name:
                old.unlink()
        self._saved_at = time.monotonic()

    def _pretrain_due(self) -> bool:
        return time.monotonic() - self._saved_at >= PRETRAIN_SAVE_SECONDS

    def _load_pretrain(self) -> dict[str, Any] | None:
        """The saved pre-training state restored into its template (None: nothing usable saved; it starts over)."""
        folder = self.dir / "pretrain"
        try:
            saved = json.loads((folder / "progress.json").read_text())
        except (OSError, ValueError):
            return None
        cfg, d = self.cfg, self.run_.inputs.normalizer.out_width
        if saved.get("phase") == "bc":
            template = init_state(self.run_.model, cfg.bc, jax.random.key(self.seed), d)
        else:
            template = self.learner.with_pretrain_optimizer(self._template())
        try:
            saved["state"] = load_pytree(folder / str(saved.get("state")), template)
            saved["rows"] = [dict(pairs) for pairs in saved["rows"]]
        except (UserError, KeyError, TypeError, ValueError):
            return None
        self.on_event(f"resume_{saved['phase']}", {"seed": self.seed, "step": saved["step"]})
        return saved

    def _bc(self, saved: dict[str, Any] | None) -> tuple[Any, list[dict[str, Any]]]:
        cfg, inputs = self.cfg, self.run_.inputs
        train = make_train_fn(self.run_.model, cfg.bc)
        x = jnp.asarray(inputs.normalizer(inputs.train.x))
        a = jnp.asarray(inputs.train.actions)
        base = jnp.asarray(inputs.train.base_actions) if self.run_.composes else None

        def row(metrics: dict[str, float]) -> list[dict[str, Any]]:
            return [{"kind": "bc", "env_steps": 0, "bc_steps": cfg.bc_steps, **metrics}]

        metrics: dict[str, float] = {}
        if saved is not None:  # phase "bc": its row holds the last chunk's metrics
            state = saved["state"]
            metrics = {k: v for k, v in saved["rows"][0].items() if k not in row({})[0]}
        else:
            state = init_state(self.run_.model, cfg.bc, jax.random.key(self.seed), int(x.shape[1]))
        while int(state.step) < cfg.bc_steps:
            n = min(BC_CHUNK, cfg.bc_steps - int(state.step))
            key = jax.random.fold_in(jax.random.key(self.seed), int(state.step))
            state, out = train(state, key, x, a, base, n_steps=n)
            metrics = {k: float(v) for k, v in out.items()}
            if not math.isfinite(metrics["loss"]):
                raise UserError(f"BC loss became {metrics['loss']} (seed {self.seed}); lower --bc-lr")
            if self._pretrain_due() and int(state.step) < cfg.bc_steps:
                self._save_pretrain("bc", int(state.step), state, row(metrics))
            self.on_event("bc", {"seed": self.seed, "step": int(state.step), "total": cfg.bc_steps})
        return state.params, row(metrics)

    def _critic_pretrain(
        self, state: SACState, rows: list[dict[str, Any]], saved: dict[str, Any] | None
    ) -> tuple[SACState, list[dict[str, Any]]]:
        cfg = self.cfg
        rng = np.random.default_rng([self.seed, 0xC217])
        if saved is not None and saved["phase"] == "critic":
            rng.bit_generator.state = saved["rng"]
            done = int(saved["step"])
        else:
            state, done = self.learner.with_pretrain_optimizer(state), 0
            self._save_pretrain("critic", 0, state, rows, rng)  # BC's result is kept from here on
        rows = list(rows)
        while done < cfg.rl.critic_pretrain_steps:
            n = min(PRETRAIN_CHUNK, cfg.rl.critic_pretrain_steps - done)
            idx = rng.integers(0, len(self.run_.demo["x"]), (n, cfg.rl.batch_size))
            batch = {k: jnp.asarray(v[idx]) for k, v in self.run_.demo.items()}
            state, metrics = self.learner.pretrain_critic(state, batch)
            done += n
            row = {"kind": "critic_pretrain", "env_steps": 0, "pretrain_step": done}
            rows.append(row | {k: float(v) for k, v in metrics.items()})
            if not math.isfinite(rows[-1]["pretrain_loss"]):
                raise UserError(f"critic pre-training diverged (seed {self.seed}); lower the critic pre-training lr")
            if self._pretrain_due() and done < cfg.rl.critic_pretrain_steps:
                self._save_pretrain("critic", done, state, rows, rng)
            self.on_event("critic", {"seed": self.seed, "step": done, "total": cfg.rl.critic_pretrain_steps})
        return self.learner.with_rl_optimizer(state), rows

    # ------------------------------------------------------------------ RL
    def _rollout_actor(self, vla_noise: int) -> RolloutActor:
        vla_actor = None
        if self.run_.vla is not None:
            from csil_diag.vla.policy import ChunkedActor

            vla_actor = ChunkedActor(self.run_.vla, self.cfg.task, self.cfg.replan, vla_noise)
        return RolloutActor(
            self.run_.act, self.run_.spec, self.run_.inputs.normalizer, self.run_.composes, self.cfg.n_envs, vla_actor
        )

    def _noise_id(self, segment: int, salt: int) -> int:
        # π0's sampling noise: a stream of 2^15 queries per (seed, segment, use), ids < 2^32.
        return (int(np.random.SeedSequence([self.seed, segment, salt]).generate_state(1)[0]) % 2**17) << 15

    def _sample_batches(self, rng: np.random.Generator, buffer: ReplayBuffer, n: int):
        rl, demo = self.cfg.rl, self.run_.demo
        n_demo = rl.batch_size if rl.algo == "csil" else max(1, round(rl.demo_ratio * rl.batch_size))
        n_online = rl.batch_size if rl.algo == "csil" else rl.batch_size - n_demo
        idx = rng.integers(0, len(demo["x"]), (n, n_demo))
        d = {k: jnp.asarray(v[idx]) for k, v in demo.items() if k in buffer.data}
        online = buffer.sample(rng, n * n_online)
        o = {k: jnp.asarray(v.reshape(n, n_online, *v.shape[1:])) for k, v in online.items()}
        return d, o

    def _segment(
        self, segment: int, state: SACState, buffer: ReplayBuffer, counters: dict[str, int]
    ) -> tuple[SACState, list[dict[str, Any]], dict[str, float]]:
        """Collect until the segment's env-step budget (episodes in flight are finished), updating as we go."""
        cfg = self.cfg
        venv, normalize = self.venv, self.run_.inputs.normalizer
        # The next multiple of eval_every (episodes in flight at the last one are finished, so a segment can overshoot).
        budget = min((counters["env_steps"] // cfg.eval_every + 1) * cfg.eval_every, cfg.steps)
        steps_before = counters["env_steps"]
        rng = np.random.default_rng([self.seed, segment, 0x5A3])
        rollout = self._rollout_actor(self._noise_id(segment, 1))
        act_key = jax.random.fold_in(jax.random.key(self.seed), 0xAC7)
        upd_key = jax.random.fold_in(jax.random.key(self.seed), 0x0DD)
        running: dict[int, int] = {}
        obs: dict[int, dict[str, np.ndarray]] = {}
        fresh: set[int] = set()
        pending: dict[int, dict[str, Any]] = {}
        episodes: list[dict[str, Any]] = []
        stats: dict[int, dict[str, float]] = {}
        train_rows: list[dict[str, Any]] = []
        accum: list[dict[str, float]] = []
        t0 = time.perf_counter()

        def start(env_ids: list[int]) -> None:
            if counters["env_steps"] >= budget:
                return
            seeds = {}
            for i in env_ids:
                e = counters["episodes"]
                counters["episodes"] += 1
                seeds[i] = episode_seeds(self.seed, 1, TRAIN_SALT, first=e)[0]
                running[i] = e
                stats[i] = {"return": 0.0, "length": 0, "success": 0.0}
            obs.update(venv.reset(seeds))
            fresh.update(seeds)

        def finish(transitions: list[dict[str, Any]], raw: np.ndarray, base: np.ndarray | None) -> None:
            """Complete transitions with their successor's features and add them to the buffer."""
            if not transitions:
                return
            nx = normalize(raw)
            batch = {k: np.stack([t[k] for t in transitions]) for k in transitions[0]}
            batch["next_x"] = nx
            if self.run_.composes:
                batch["next_base"] = base
            buffer.add(batch)
            counters["transitions"] += len(transitions)

        start(list(range(venv.n_envs)))
        while running:
            ids = sorted(running)
            raw, vla_actions = rollout.features([obs[i] for i in ids], ids, [i in fresh for i in ids])
            fresh.clear()
            waiting = [k for k, i in enumerate(ids) if i in pending]
            finish(
                [pending.pop(ids[k]) for k in waiting],
                raw[waiting],
                None if vla_actions is None else vla_actions[waiting],
            )
            key = jax.random.fold_in(act_key, counters["iterations"])
            counters["iterations"] += 1
            actions = rollout.actions(state.actor, raw, vla_actions, key, stochastic=True)
            ticket = venv.step_async({i: actions[k] for k, i in enumerate(ids)})
            # Updates run while the workers simulate; they see every transition up to the previous step.
            if buffer.size >= max(cfg.rl.learning_starts, 1):
                n = cfg.rl.utd * len(ids)
                demo_b, online_b = self._sample_batches(rng, buffer, n)
                key = jax.random.fold_in(upd_key, counters["updates"])
                state, metrics = self.learner.update(state, demo_b, online_b, key)
                counters["updates"] += n
                accum.append({k: float(v) for k, v in metrics.items()} | {"n": n})
                if sum(m["n"] for m in accum) >= cfg.log_every:
                    train_rows.append(self._train_row(accum, counters))
                    accum = []
            results = venv.step_wait(ticket)
            ended = []
            x = normalize(raw)
            for k, i in enumerate(ids):
                next_obs, reward, done, success = results[i]
                counters["env_steps"] += 1
                s = stats[i]
                s["return"] += reward
                s["length"] += 1
                s["success"] = max(s["success"], float(success))
                transition = {"x": x[k], "action": actions[k], "reward": np.float32(reward)}
                transition["discount"] = np.float32(0.0 if success else 1.0)
                if self.run_.composes:
                    transition["base"] = vla_actions[k]
                pending[i] = transition
                obs[i] = next_obs
                if done:
                    ended.append(i)
            if ended:  # the last observation of each ended episode completes its transition
                raw_end, base_end = rollout.features([obs[i] for i in ended], ended, [False] * len(ended))
                finish([pending.pop(i) for i in ended], raw_end, base_end)
                for i in ended:
                    episodes.append({"episode": running.pop(i), **stats.pop(i)})
                start(ended)
            self.on_event("step", {"seed": self.seed, "env_steps": counters["env_steps"], "total": cfg.steps})
        if accum:
            train_rows.append(self._train_row(accum, counters))
        seconds = time.perf_counter() - t0
        done = pd.DataFrame(episodes)
        summary = {
            "train_episodes": len(done),
            "train_success": float(done["success"].mean()) if len(done) else float("nan"),
            "train_return": float(done["return"].mean()) if len(done) else float("nan"),
            "segment_seconds": seconds,
            "env_steps_per_second": (counters["env_steps"] - steps_before) / max(seconds, 1e-9),
        }
        return state, train_rows, summary

    def _train_row(self, accum: list[dict[str, float]], counters: dict[str, int]) -> dict[str, Any]:
        total = sum(m["n"] for m in accum)
        keys = [k for k in accum[0] if k != "n"]
        row = {k: sum(m[k] * m["n"] for m in accum) / total for k in keys}
        if not all(math.isfinite(v) for v in row.values()):
            raise UserError(
                f"RL diverged at {counters['env_steps']} env steps (seed {self.seed}): a loss became NaN; "
                "lower the learning rates or --utd"
            )
        return {"kind": "train", "env_steps": counters["env_steps"], "updates": counters["updates"], **row}

    # ------------------------------------------------------------------ evaluation
    def _evaluate_and_save(
        self,
        segment: int,
        state: SACState,
        buffer: ReplayBuffer,
        counters: dict[str, int],
        rows: list[dict[str, Any]],
        summary: dict[str, float],
    ) -> None:
        """The evaluation row (with the segment's training summary) after ``rows``; then rows, checkpoint, table."""
        cfg = self.cfg
        self.on_event("evaluate", {"seed": self.seed, "segment": segment, "env_steps": counters["env_steps"]})
        row = {"kind": "eval", "env_steps": counters["env_steps"], "updates": counters["updates"]}
        row |= {"episodes": counters["episodes"], **summary}
        det = run_episodes(
            self.venv,
            self._rollout_actor(self._noise_id(segment, 2)).policy(state.actor, False, self.seed),
            episode_seeds(self.seed, cfg.eval_episodes, EVAL_SALT),
        )
        row |= {"success_rate": det.success_rate, "mean_length": float(det.lengths.mean())}
        if segment == 0 and self.run_.vla is not None:
            row["vla_success_rate"] = self._vla_alone()
        row |= self._entropy(segment, state)
        rows = [*rows, row]
        self._write_rows(segment, rows)
        self._save(segment, state, buffer, counters)
        self.run_.rebuild_metrics()
        self.on_event("evaluated", {"seed": self.seed, "segment": segment, **row})

    # ------------------------------------------------------------------ re-evaluation (`csil-diag evaluate`)
    def final_actor(self) -> tuple[Any, int]:
        """The last checkpoint's actor params and its env steps."""
        resumed = self._load(self._template())
        if resumed is None:
            raise UserError(f"seed {self.seed}: no readable checkpoint in {self.dir / 'ckpt'}")
        return resumed[1].actor, resumed[3]["env_steps"]

    def start_actor(self) -> tuple[Any, dict[str, Any] | None]:
        """The actor RL started from: the saved one or, for runs made before it was saved, re-made from the seed
        (CSIL: BC again, returned with its last row to check against the run's; SACfD: the fresh actor, row None)."""
        template = self._template().actor
        path = self.dir / START_ACTOR
        if path.exists():
            return load_pytree(path, template), None
        d = self.run_.inputs.normalizer.out_width
        if self.cfg.rl.algo != "csil":  # the fresh actor is a pure function of the seed: nothing to check
            return self.learner.init(jax.random.key(self.seed), d, self.run_.composes, None).actor, None
        params, rows = self._bc(None)
        return params, rows[-1]

    def reevaluate(
        self, actor: Any, stochastic: bool, episodes: int, salt: int, on_event: Callable[[str, dict[str, Any]], None]
    ):
        """``episodes`` episodes of an actor on seeds of ``salt`` (π0's noise and the policy's key fixed by them)."""
        seeds = episode_seeds(self.seed, episodes, salt)
        key_seed = int(np.random.SeedSequence([self.seed, salt, int(stochastic)]).generate_state(1)[0])
        policy = self._rollout_actor(self._noise_id(0, salt)).policy(actor, stochastic, key_seed)
        return run_episodes(self.venv, policy, seeds, lambda done, steps: on_event("episodes", {"done": done}))

    def _vla_alone(self) -> float:
        """π0's own success on the evaluation episodes (its chunked actions, no HetStat): the baseline of the modes."""
        rollout = self._rollout_actor(self._noise_id(0, 4))

        def policy(obs_list, envs, fresh):
            raw, vla_actions = rollout.features(obs_list, envs, fresh)
            return vla_actions, raw, vla_actions

        seeds = episode_seeds(self.seed, self.cfg.eval_episodes, EVAL_SALT)
        return run_episodes(self.venv, policy, seeds).success_rate

    def _entropy(self, segment: int, state: SACState) -> dict[str, float]:
        """Online (stochastic episodes of the current policy) vs held-out expert entropy of the actor."""
        cfg, inputs = self.cfg, self.run_.inputs
        if not cfg.entropy_episodes:
            return {}
        eval_seed = int(np.random.SeedSequence([self.seed, segment, 0xE47]).generate_state(1)[0])
        online = run_episodes(
            self.venv,
            self._rollout_actor(self._noise_id(segment, 3)).policy(state.actor, True, eval_seed),
            episode_seeds(self.seed, cfg.entropy_episodes, EVAL_SALT),
        )
        normalize = inputs.normalizer
        online_base = online.base_actions if self.run_.composes else None
        valid_base = inputs.valid.base_actions if self.run_.composes else None
        m_online = self.run_.evaluate_states(state.actor, normalize(online.features), online_base, eval_seed)
        m_valid = self.run_.evaluate_states(state.actor, normalize(inputs.valid.x), valid_base, eval_seed + 1)
        out = {f"online_{k}": v for k, v in split_summary(m_online).items() if not k.startswith("n_")}
        out |= {f"valid_{k}": v for k, v in split_summary(m_valid).items() if not k.startswith("n_")}
        out |= separation_summary(
            m_online, online.episode, m_valid, inputs.valid.episode, "valid", cfg.bootstrap, eval_seed
        )
        out["stochastic_success_rate"] = online.success_rate
        return {k: float(v) for k, v in out.items()}


def load_train_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """config.json of a train run directory, with a clear error when it is not one."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise UserError(f"{run_dir} is not a csil-diag run directory (no config.json); run `csil-diag train` first")
    data = read_json_file(path, "the run directory is damaged; rerun `csil-diag train` into another --out")
    if data.get("kind") != "train":
        raise UserError(f"{run_dir} is not a `csil-diag train` run (it is a {data.get('kind')} run)")
    data["config_obj"] = from_dict(TrainConfig, data["config"])
    return data
