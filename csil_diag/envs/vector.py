"""Many envs stepped in lockstep by worker processes, so a policy can act on all of them in one batch.

The policy stays in the calling process (JAX, one batched forward per step); each worker owns a few
envs and only simulates. With one worker per core the physics of different envs runs in parallel.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import traceback
from typing import Any

import numpy as np

from csil_diag.envs.tasks import make_env
from csil_diag.procs import die_with_parent, spawner, unpin


def _worker(conn: Any, task: str, n_envs: int, env_kwargs: dict[str, Any], parent: tuple[int, bool]) -> None:
    die_with_parent(*parent)  # a busy worker would not notice its parent's death through the pipe
    unpin()  # a sweep pins its runs' XLA; their env workers may use every core the run had
    envs = []
    try:
        envs = [make_env(task, **env_kwargs) for _ in range(n_envs)]
        conn.send(("ready", None))
        while True:
            cmd, payload = conn.recv()
            if cmd == "reset":  # payload: {local index: episode seed}
                conn.send(("ok", {i: envs[i].reset(seed=s) for i, s in payload.items()}))
            elif cmd == "step":  # payload: {local index: action}
                out = {}
                for i, action in payload.items():
                    obs, reward, done, info = envs[i].step(action)
                    out[i] = (obs, reward, done, bool(info["success"]))
                conn.send(("ok", out))
            elif cmd == "close":
                break
    except (EOFError, KeyboardInterrupt):
        pass
    except Exception:  # report, don't hang the parent
        conn.send(("error", traceback.format_exc()))
    finally:
        for env in envs:
            env.close()
        conn.close()


class VectorEnv:
    """``n_envs`` copies of a task split across ``workers`` processes (``workers=0``: in-process)."""

    def __init__(
        self,
        task: str,
        n_envs: int,
        *,
        workers: int = 0,
        cameras: tuple[str, ...] = (),
        image_size: int = 84,
        seed: int = 0,
        horizon: int | None = None,
    ) -> None:
        self.n_envs = n_envs
        env_kwargs = {"cameras": cameras, "image_size": image_size, "seed": seed, "horizon": horizon}
        self.workers = min(workers, n_envs)
        self._local = []
        self._procs: list[Any] = []
        self._conns: list[Any] = []
        if self.workers <= 0:
            self._local = [make_env(task, **env_kwargs) for _ in range(n_envs)]
            self._where = [(0, i) for i in range(n_envs)]
            return
        ctx = mp.get_context("spawn")
        parent_info = spawner()
        counts = [n_envs // self.workers + (w < n_envs % self.workers) for w in range(self.workers)]
        # Round robin, so that every worker holds envs of each contiguous range (a joint rollout's groups) and
        # none idles while another steps a whole group.
        self._where = [(i % self.workers, i // self.workers) for i in range(n_envs)]
        for count in counts:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, task, count, env_kwargs, parent_info), daemon=True)
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)
        for conn in self._conns:
            self._receive(conn)

    @staticmethod
    def _receive(conn: Any) -> Any:
        status, payload = conn.recv()
        if status == "error":
            raise RuntimeError(f"env worker failed:\n{payload}")
        return payload

    def _local_call(self, cmd: str, per_env: dict[int, Any]) -> dict[int, Any]:
        envs = self._local
        if cmd == "reset":
            return {i: envs[i].reset(seed=s) for i, s in per_env.items()}
        out = {}
        for i, action in per_env.items():
            obs, reward, done, info = envs[i].step(action)
            out[i] = (obs, reward, done, bool(info["success"]))
        return out

    def _send(self, cmd: str, per_env: dict[int, Any]) -> Any:
        """Send ``per_env`` (global index → payload) to the owning workers; returns what :meth:`_gather` needs."""
        if not self._procs:
            return cmd, per_env  # in-process envs run at gather time
        batches: list[dict[int, Any]] = [{} for _ in self._conns]
        back: list[dict[int, int]] = [{} for _ in self._conns]
        for i, payload in per_env.items():
            w, local = self._where[i]
            batches[w][local] = payload
            back[w][local] = i
        for w, batch in enumerate(batches):
            if batch:
                self._conns[w].send((cmd, batch))
        return back

    def _gather(self, ticket: Any) -> dict[int, Any]:
        if not self._procs:
            return self._local_call(*ticket)
        out = {}
        for w, back in enumerate(ticket):
            if back:
                for local, result in self._receive(self._conns[w]).items():
                    out[back[local]] = result
        return out

    def reset(self, seeds: dict[int, int]) -> dict[int, dict[str, np.ndarray]]:
        """Reset the given envs (global index → episode seed); returns their first observations."""
        return self._gather(self._send("reset", seeds))

    def step(self, actions: dict[int, np.ndarray]) -> dict[int, tuple[dict[str, np.ndarray], float, bool, bool]]:
        """Step the given envs; returns global index → (obs, reward, done, success)."""
        return self.step_wait(self.step_async(actions))

    def step_async(self, actions: dict[int, np.ndarray]) -> Any:
        """Start stepping the given envs (the workers simulate while the caller computes); pass the result to
        :meth:`step_wait`. In-process envs step inside step_wait."""
        return self._send("step", {i: np.asarray(a, np.float64) for i, a in actions.items()})

    def step_wait(self, ticket: Any) -> dict[int, tuple[dict[str, np.ndarray], float, bool, bool]]:
        return self._gather(ticket)

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(("close", None))
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        for env in self._local:
            env.close()
        self._procs, self._conns, self._local = [], [], []

    def __enter__(self) -> VectorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
