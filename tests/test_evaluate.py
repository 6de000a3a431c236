"""`csil-diag evaluate`'s statistics: the exact sign test and the paired start-vs-final summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from csil_diag.csil.evaluate import demo_fit, paired_summary, per_seed, sign_test


@pytest.mark.parametrize(
    ("wins", "losses", "p"),
    [(0, 0, 1.0), (3, 3, 1.0), (5, 0, 2 / 32), (0, 5, 2 / 32), (8, 2, 2 * (1 + 10 + 45) / 1024), (1, 0, 1.0)],
)
def test_sign_test_matches_the_binomial_tail(wins: int, losses: int, p: float) -> None:
    assert sign_test(wins, losses) == pytest.approx(p)


def table(start: list[int], final: list[int], seed: int = 0, policy: str = "deterministic") -> pd.DataFrame:
    n = len(start)
    rows = [
        pd.DataFrame(
            {"seed": seed, "at": at, "policy": policy, "episode": np.arange(n), "success": np.bool_(s)}
        ).assign(env_steps=0 if at == "start" else 100)
        for at, s in (("start", start), ("final", final))
    ]
    return pd.concat(rows, ignore_index=True)


def test_identical_start_and_final_read_as_no_difference() -> None:
    same = [1, 0, 1, 1, 0, 0]
    out = paired_summary(table(same, same), "deterministic")
    assert out["start"] == out["final"] == 0.5
    assert (out["final_wins"], out["final_losses"], out["p_value"]) == (0, 0, 1.0)


def test_pairs_are_matched_by_seed_and_episode_not_by_rate() -> None:
    # Equal rates on each seed, but seed 1's final wins every episode its start lost and vice versa.
    frames = pd.concat([table([1, 1, 0, 0], [1, 1, 0, 0], 0), table([1, 1, 0, 0], [0, 0, 1, 1], 1)])
    out = paired_summary(frames, "deterministic")
    assert out["episodes"] == 8 and out["start"] == out["final"] == 0.5
    assert (out["final_wins"], out["final_losses"]) == (2, 2)
    seeds = per_seed(frames, "deterministic")
    assert seeds.set_index("seed")[["start", "final", "env_steps"]].to_dict("index") == {
        0: {"start": 0.5, "final": 0.5, "env_steps": 100},
        1: {"start": 0.5, "final": 0.5, "env_steps": 100},
    }


def test_only_one_side_evaluated_gives_no_paired_test() -> None:
    only_final = table([0, 1], [1, 1])
    only_final = only_final[only_final["at"] == "final"]
    assert "p_value" not in paired_summary(only_final, "deterministic")


def test_demo_fit_is_zero_on_the_expert_and_per_dimension_otherwise() -> None:
    expert = np.tanh(np.random.default_rng(0).standard_normal((20, 7)))
    assert np.array_equal(demo_fit(expert, expert), np.zeros(7))
    off = expert.copy()
    off[:, 6] += 0.5  # only the gripper moved
    assert demo_fit(off, expert) == pytest.approx([0, 0, 0, 0, 0, 0, 0.25])
