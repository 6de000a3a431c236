"""One seed of a `csil-diag train` run: BC pre-training of the HetStat (csil) → critic pre-training on the demos
(csil) → segments of RL, each ``eval_every`` environment steps and ending in an evaluation and a checkpoint.

Every random draw is a function of (seed, segment, counter), so a seed killed and resumed from its last segment gives
exactly the numbers of an uninterrupted one; pre-training is saved at most every PRETRAIN_SAVE_SECONDS.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from csil_diag.csil.sac import SACState
from csil_diag.data.buffer import ReplayBuffer
from csil_diag.diag.entropy import separation_summary, split_summary
from csil_diag.envs.rollouts import episode_seeds, run_episodes
from csil_diag.envs.vector import VectorEnv
from csil_diag.errors import UserError
from csil_diag.policy.actor import RolloutActor
from csil_diag.policy.bc import init_state, make_train_fn
from csil_diag.runs import atomic_write_json, atomic_write_parquet, load_pytree, now_utc, save_pytree

if TYPE_CHECKING:
    from csil_diag.resumable import ResumableRun as TrainRun  # the train run (its own module imports this one)

BC_CHUNK = 250  # BC steps per jitted call
PRETRAIN_CHUNK = 250  # critic pre-training steps per jitted call (one metrics row each)
START_ACTOR = "start_actor.msgpack"  # per seed: the actor RL starts from (the BC HetStat for CSIL)
PRETRAIN_SAVE_SECONDS = 60.0  # pre-training checkpoints at most this often: a kill loses at most this much of it
EVAL_SALT, TRAIN_SALT = 0xE7A1, 0x7A1  # episode seeds of evaluations and of training episodes


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
        return self.run_.rollout_actor(self.run_.act, self.cfg.n_envs, vla_noise)

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
        self.run_.rebuild_table()
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
