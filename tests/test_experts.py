"""Scripted experts: they solve their task, and their actions are valid robosuite actions."""

from __future__ import annotations

import numpy as np
import pytest

from csil_diag.data.expert_base import ExpertConfig, ScriptedExpert
from csil_diag.data.experts import EXPERTS, make_expert
from csil_diag.envs.tasks import TASKS, RobosuiteTask, make_env
from csil_diag.errors import UserError


@pytest.fixture(scope="module")
def envs():
    """One env per task for the whole module: building one takes ~0.2-2 s."""
    made: dict[str, RobosuiteTask] = {}

    def get(task: str) -> RobosuiteTask:
        if task not in made:
            made[task] = make_env(task)
        return made[task]

    yield get
    for env in made.values():
        env.close()


def run_episode(env: RobosuiteTask, expert: ScriptedExpert, seed: int) -> tuple[bool, np.ndarray]:
    """Roll the expert out on ``seed``; returns (success, actions)."""
    obs = env.reset(seed=seed)
    expert.reset(env, np.random.default_rng(seed))
    actions, done, info = [], False, {"success": False}
    while not done:
        action = expert.act(env, obs)
        actions.append(action)
        obs, _, done, info = env.step(action)
    return bool(info["success"]), np.array(actions)


def assert_valid_actions(actions: np.ndarray) -> None:
    assert actions.ndim == 2 and actions.shape[1] == 7
    assert actions.dtype == np.float64
    assert np.all(np.abs(actions) <= 1.0)
    assert set(np.unique(actions[:, 6])) <= {-1.0, 1.0}


def test_every_task_has_an_expert():
    assert set(EXPERTS) == set(TASKS)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "seeds"), [("lift", (0, 1, 2)), ("can", (0, 1)), ("square", (0, 1)), ("assembly", (0, 1))]
)
def test_expert_succeeds_without_noise(envs, task, seeds):
    env, expert = envs(task), make_expert(task)
    for seed in seeds:
        success, actions = run_episode(env, expert, seed)
        assert success, f"{task} expert failed on seed {seed} (phase {expert.phase})"
        assert len(actions) < env.horizon
        assert_valid_actions(actions)
        assert {-1.0, 1.0} <= set(actions[:, 6])  # it opened and closed the gripper


@pytest.mark.slow
def test_noise_changes_actions_but_lift_still_succeeds(envs):
    env = envs("lift")
    _, clean = run_episode(env, make_expert("lift"), seed=3)
    success, noisy = run_episode(env, make_expert("lift", ExpertConfig(noise=0.1)), seed=3)
    assert success
    assert_valid_actions(noisy)
    assert not np.allclose(clean[:5, :6], noisy[:5, :6])
    np.testing.assert_array_equal(clean[:5, 6], noisy[:5, 6])  # no noise on the gripper


@pytest.mark.slow
def test_same_seed_same_actions(envs):
    env, expert = envs("lift"), make_expert("lift", ExpertConfig(noise=0.2, speed_jitter=0.3))
    first = []
    for _ in range(2):
        obs = env.reset(seed=5)
        expert.reset(env, np.random.default_rng(5))
        actions = []
        for _ in range(15):
            actions.append(expert.act(env, obs))
            obs, *_ = env.step(actions[-1])
        first.append(np.array(actions))
    np.testing.assert_array_equal(first[0], first[1])


def test_unknown_task_raises_user_error():
    with pytest.raises(UserError, match="lift, can, square"):
        make_expert("stack")


@pytest.mark.parametrize("config", [dict(noise=-0.1), dict(speed=0.0), dict(speed_jitter=1.0)])
def test_bad_config_raises_user_error(config):
    with pytest.raises(UserError):
        ExpertConfig(**config)


def test_act_before_reset_is_an_error(envs):
    env = envs("lift")
    obs = env.reset(seed=0)
    with pytest.raises(RuntimeError, match="reset"):
        make_expert("lift").act(env, obs)
