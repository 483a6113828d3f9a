"""The horizon ends a sparse task (``terminated=True``), truncates a dense one, and SB3's PPO does not bootstrap it."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import pytest
import torch as th
from sppo_rl.envs import dense_ids, sparse_ids
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

HORIZON = 3  # too short for any task to end early: no fall, crash, landing or flag within 3 steps


def run_to_horizon(env_id: str, **options: Any) -> tuple[list[float], bool, bool, dict[str, Any]]:
    """Run ``env_id`` (horizon 3, seed 0) with fixed actions to its end.

    :param env_id: a suite id.
    :param options: extra keyword arguments of ``gymnasium.make``.
    :return: the rewards, the last step's ``terminated`` and ``truncated``, and its ``info``.
    """
    env = gymnasium.make(env_id, horizon=HORIZON, **options)
    env.reset(seed=0)
    env.action_space.seed(0)
    rewards: list[float] = []
    while True:
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        rewards.append(float(reward))
        if terminated or truncated:
            env.close()
            return rewards, bool(terminated), bool(truncated), info


@pytest.mark.parametrize("env_id", sparse_ids())
def test_sparse_task_terminates_at_the_horizon_and_truncates_only_when_asked(env_id: str, needs_dynamics) -> None:
    needs_dynamics(env_id)
    rewards, terminated, truncated, info = run_to_horizon(env_id)
    assert len(rewards) == HORIZON and (terminated, truncated) == (True, False)
    assert info["end_reason"] == "horizon"
    kept_rewards, terminated, truncated, kept_info = run_to_horizon(env_id, horizon_ends_task=False)
    assert (terminated, truncated) == (False, True)
    assert kept_rewards == rewards and kept_info["is_success"] is info["is_success"]  # same episode, same outcome


@pytest.mark.parametrize("env_id", dense_ids())
def test_dense_counterpart_truncates_at_the_horizon_unless_asked(env_id: str, needs_dynamics) -> None:
    needs_dynamics(env_id)
    rewards, terminated, truncated, info = run_to_horizon(env_id)
    assert len(rewards) == HORIZON and (terminated, truncated) == (False, True)
    assert info["end_reason"] == "horizon"
    assert run_to_horizon(env_id, horizon_ends_task=True)[1:3] == (True, False)


def ppo_rollout(**options: Any) -> tuple[np.ndarray, np.ndarray]:
    """One rollout of SB3's PPO (gamma = lambda = 1) on SparseMountainCar-v0 with horizon 16, whose critic
    says ``V = 0.5`` everywhere: 2 envs x 32 steps, exactly two episodes each, none reaching the flag.

    :param options: extra keyword arguments of the env.
    :return: the rollout buffer's rewards and returns, ``(32, 2)`` each.
    """
    env = make_vec_env("SparseMountainCar-v0", n_envs=2, seed=0, env_kwargs={"horizon": 16, **options})
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=64, gamma=1.0, gae_lambda=1.0, seed=0, device="cpu")
    with th.no_grad():
        model.policy.value_net.weight.zero_()
        model.policy.value_net.bias.fill_(0.5)
    _, callback = model._setup_learn(64, None)
    callback.on_training_start(locals(), globals())
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=32)
    env.close()
    return model.rollout_buffer.rewards.copy(), model.rollout_buffer.returns.copy()


def test_sb3_ppo_returns_have_no_bootstrap_at_the_horizon() -> None:
    rewards, returns = ppo_rollout()
    # every episode failed (16 steps cannot reach the flag): return 0 at every step, not 0 + V(s_H)
    np.testing.assert_array_equal(rewards, np.zeros((32, 2)))
    np.testing.assert_array_equal(returns, np.zeros((32, 2)))


def test_sb3_ppo_bootstraps_the_horizon_with_truncation_semantics() -> None:
    rewards, returns = ppo_rollout(horizon_ends_task=False)
    # SB3 adds gamma * V(s_H) = 0.5 to the last reward of each truncated episode (steps 16 and 32)
    expected = np.zeros((32, 2))
    expected[[15, 31]] = 0.5
    np.testing.assert_allclose(rewards, expected, atol=1e-6)
    np.testing.assert_allclose(returns, np.full((32, 2), 0.5), atol=1e-6)  # a failed episode scored 0.5, not 0
