"""Transitions in numpy: the online replay buffer and the demonstrations as SARSA tuples.

Fields (all float32): x (D), action (A), reward, discount (0 after a success, else 1), next_x (D), and, where the
policy composes with a VLA action, base / next_base (A). Demonstrations add next_action (A) for critic pre-training.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from csil_diag.errors import UserError
from csil_diag.runs import atomic_write_bytes

Arrays = dict[str, np.ndarray]


class ReplayBuffer:
    """A ring buffer of transitions; sampled with an explicit numpy Generator so a run is reproducible."""

    def __init__(self, capacity: int, widths: dict[str, int]) -> None:
        """``widths``: field → per-transition width (0 for a scalar field)."""
        if capacity < 1:
            raise UserError(f"the replay buffer needs a capacity ≥ 1 (got {capacity})")
        self.capacity = int(capacity)
        self.widths = dict(widths)
        self.data = {k: np.zeros((self.capacity, w) if w else (self.capacity,), np.float32) for k, w in widths.items()}
        self.size = 0
        self.cursor = 0

    def add(self, batch: Arrays) -> None:
        """Append n transitions (every field, leading axis n); the oldest are overwritten when full."""
        n = len(batch["x"])
        idx = (self.cursor + np.arange(n)) % self.capacity
        for key, store in self.data.items():
            store[idx] = batch[key]
        self.cursor = int((self.cursor + n) % self.capacity)
        self.size = int(min(self.size + n, self.capacity))

    def sample(self, rng: np.random.Generator, n: int) -> Arrays:
        idx = rng.integers(0, self.size, n)
        return {k: v[idx] for k, v in self.data.items()}

    def recent(self, n: int) -> Arrays:
        """The last n transitions added, oldest first."""
        n = min(n, self.size)
        idx = (self.cursor - n + np.arange(n)) % self.capacity
        return {k: v[idx] for k, v in self.data.items()}

    def save(self, path: str | os.PathLike) -> None:
        """Atomically, only the filled part."""
        out = io.BytesIO()
        filled = self.recent(self.size)
        np.savez(out, capacity=self.capacity, cursor=self.cursor, **filled)
        atomic_write_bytes(path, out.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike, widths: dict[str, int]) -> ReplayBuffer:
        path = Path(path)
        try:
            with np.load(path) as f:
                buffer = cls(int(f["capacity"]), widths)
                filled = {k: f[k] for k in widths}
        except (OSError, KeyError, ValueError) as exc:
            reason = type(exc).__name__
            raise UserError(f"replay buffer {path} is unreadable ({reason}); delete the run's checkpoints") from None
        buffer.add(filled)
        return buffer


def demo_transitions(
    x: np.ndarray,
    actions: np.ndarray,
    episode: np.ndarray,
    rewards: np.ndarray,
    terminal: np.ndarray,
    base: np.ndarray | None = None,
) -> Arrays:
    """SARSA tuples from demo states in episode order: x (N, D), actions (N, A), episode (N,) ids, rewards (N,),
    terminal (N,) (the step that ended a demo in success). The successor of each state is the next state of its demo;
    a demo's last step has discount 0 if it ended in success, else (truncated) it bootstraps from itself."""
    nxt = np.arange(len(x)) + 1
    last = np.r_[episode[1:] != episode[:-1], True]
    nxt[last] = np.flatnonzero(last)
    out = {
        "x": x,
        "action": actions,
        "reward": rewards.astype(np.float32),
        "discount": (1.0 - terminal.astype(np.float32)).astype(np.float32),
        "next_x": x[nxt],
        "next_action": actions[nxt],
    }
    if base is not None:
        out |= {"base": base, "next_base": base[nxt]}
    return {k: np.asarray(v, np.float32) for k, v in out.items()}
