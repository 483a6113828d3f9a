"""Every registered id: gymnasium's and SB3's env checkers, the sparse reward structure, determinism, Monitor."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from sppo_rl.envs import dense_ids, is_dense, sparse_ids, suite_ids
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

ALL_IDS = suite_ids()


def random_policy(seed: int):
    """A uniformly random policy with its own seeded action stream."""
    generator: dict[str, Any] = {}

    def policy(observation: Any, env: gymnasium.Env[Any, Any]) -> Any:
        if "space" not in generator:
            generator["space"] = env.action_space
            env.action_space.seed(seed)
        return env.action_space.sample()

    return policy


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_gymnasium_and_sb3_env_checkers_pass(env_id: str, needs_dynamics) -> None:
    needs_dynamics(env_id)
    env = gymnasium.make(env_id)
    with warnings.catch_warnings():
        # Advice that concerns the wrapped dynamics, not the suite: checking a wrapped env, unbounded
        # CartPole/Hopper observations, Pendulum's [-2, 2] torque.
        warnings.filterwarnings("ignore", message=".*different from the unwrapped version.*")
        warnings.filterwarnings("ignore", message=".*Box observation space (minimum|maximum) value is .*infinity.*")
        warnings.filterwarnings("ignore", message=".*symmetric and normalized.*")
        gymnasium_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)
    env.close()


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_reward_is_zero_until_the_last_step_which_pays_the_outcome(env_id: str, needs_dynamics, episode_runner) -> None:
    needs_dynamics(env_id)
    env = gymnasium.make(env_id, horizon=300) if "Precision" not in env_id else gymnasium.make(env_id)
    for seed in range(3):
        episode = episode_runner(env, random_policy(seed), seed)
        last = episode.final_info
        assert isinstance(last["is_success"], bool)
        assert all("is_success" not in info for info in episode.infos[:-1])
        assert all("dense_reward" in info for info in episode.infos)
        assert episode.length <= 300
        if not is_dense(env_id):
            assert all(reward == 0.0 for reward in episode.rewards[:-1])
            assert episode.rewards[-1] == float(last["is_success"])
        else:
            assert episode.rewards == [info["dense_reward"] for info in episode.infos]
    env.close()


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_same_seed_and_actions_give_the_same_trajectory(env_id: str, needs_dynamics, episode_runner) -> None:
    needs_dynamics(env_id)
    env = gymnasium.make(env_id)
    first = episode_runner(env, random_policy(7), seed=11)
    second = episode_runner(env, random_policy(7), seed=11)
    assert first.length == second.length
    for a, b in zip(first.observations, second.observations, strict=True):
        np.testing.assert_array_equal(a, b)
    assert first.rewards == second.rewards
    assert [info["dense_reward"] for info in first.infos] == [info["dense_reward"] for info in second.infos]
    assert (first.terminated, first.truncated) == (second.terminated, second.truncated)
    assert first.final_info["is_success"] == second.final_info["is_success"]
    other = episode_runner(env, random_policy(7), seed=12)
    assert not np.array_equal(other.observations[0], first.observations[0])
    env.close()


def pump(observation: Any, env: gymnasium.Env[Any, Any]) -> int:
    """MountainCar energy pumping: push in the direction of the velocity."""
    return 2 if observation[1] >= 0 else 0


@pytest.mark.parametrize(("policy", "expected"), [(pump, 1.0), (lambda observation, env: 1, 0.0)])
def test_monitor_outside_reports_the_sparse_return(policy, expected: float) -> None:
    env = Monitor(gymnasium.make("SparseMountainCar-v0"), info_keywords=("is_success",))
    observation, _ = env.reset(seed=0)
    while True:
        observation, _, terminated, truncated, info = env.step(policy(observation, env))
        if terminated or truncated:
            break
    assert env.get_episode_rewards() == [expected]
    assert info["episode"]["r"] == expected
    assert info["is_success"] is bool(expected)
    dense = Monitor(gymnasium.make("DenseMountainCar-v0"))
    observation, _ = dense.reset(seed=0)
    while True:
        observation, _, terminated, truncated, dense_info = dense.step(policy(observation, dense))
        if terminated or truncated:
            break
    assert dense_info["is_success"] is bool(expected)
    assert dense.get_episode_rewards()[0] not in (0.0, 1.0)


@pytest.mark.parametrize(("options", "truncation"), [({}, False), ({"horizon_ends_task": False}, True)])
def test_sb3_vec_env_sees_the_end_of_the_task_at_the_horizon_and_the_outcome(
    options: dict[str, bool], truncation: bool
) -> None:
    venv = DummyVecEnv([lambda: Monitor(gymnasium.make("SparsePendulum-v0", horizon=5, **options))])
    venv.seed(0)
    venv.reset()
    for step in range(5):
        _, rewards, dones, infos = venv.step(np.zeros((1, 1), dtype=np.float32))
        assert dones[0] == (step == 4)
    # SB3 bootstraps from terminal_observation only when TimeLimit.truncated is True
    assert infos[0]["TimeLimit.truncated"] is truncation
    assert "is_success" in infos[0] and "terminal_observation" in infos[0]
    assert rewards[0] == float(infos[0]["is_success"]) == infos[0]["episode"]["r"]


@pytest.mark.parametrize("env_id", [i for i in sparse_ids() if "Hopper" not in i])
def test_rgb_array_rendering_works(env_id: str, needs_dynamics) -> None:
    needs_dynamics(env_id)
    pytest.importorskip("pygame", reason="rendering needs pygame")
    env = gymnasium.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3
    env.close()


def test_dense_ids_and_sparse_ids_share_dynamics(episode_runner, needs_dynamics) -> None:
    for sparse_id, dense_id in zip(sparse_ids(), dense_ids(), strict=True):
        needs_dynamics(sparse_id)
        sparse = episode_runner(gymnasium.make(sparse_id, horizon=50), random_policy(3), seed=5)
        dense = episode_runner(gymnasium.make(dense_id, horizon=50), random_policy(3), seed=5)
        assert sparse.length == dense.length, sparse_id
        for a, b in zip(sparse.observations, dense.observations, strict=True):
            np.testing.assert_array_equal(a, b)
        assert sparse.final_info["is_success"] == dense.final_info["is_success"]
