"""Closed-form checks of what SPPO computes, in the style of SB3's test_gae.py.

A deterministic env whose outcome depends only on the start state, and a critic whose head outputs a
constant logit c: every step of every episode must get A = R - sigmoid(c).
"""

import math

import numpy as np
import pytest
import torch as th
from sppo_rl.envs.toy import StartDeterminedOutcomeEnv
from stable_baselines3.common.env_util import make_vec_env

from sppo_rl import SPPO

LOGIT = 0.7


def _frozen_model(env, **kw):
    kw.setdefault("n_steps", 20)
    model = SPPO(
        "MlpPolicy", env, learning_rate=0.0, critic_learning_rate=0.0, n_epochs=1, batch_episodes=1000, seed=0, **kw
    )
    return model


def _set_constant_logit(model, logit):
    head = model.policy.critic.head
    with th.no_grad():
        head.linear.weight.zero_()
        head.linear.bias.fill_(logit)


@pytest.mark.parametrize("n_envs", [1, 3])
def test_advantage_is_outcome_minus_sigmoid_of_constant_logit_on_every_step(n_envs):
    env = make_vec_env(StartDeterminedOutcomeEnv, n_envs=n_envs, seed=3)
    model = _frozen_model(env, value_head="bernoulli")
    _set_constant_logit(model, LOGIT)
    model.learn(total_timesteps=1)  # exactly one rollout and one update
    buf = model.rollout_buffer
    assert buf.n_episodes >= 20 * n_envs // 5  # episodes are at most 5 steps long
    starts = buf.start_observations[:, 0].astype(int)
    expected_outcomes = np.array([StartDeterminedOutcomeEnv.outcome_of(k) for k in starts])
    np.testing.assert_array_equal(buf.outcomes, expected_outcomes)
    sigmoid = 1.0 / (1.0 + math.exp(-LOGIT))
    np.testing.assert_allclose(buf.advantages, expected_outcomes - sigmoid, rtol=1e-6)

    # every step of an episode carries the episode's advantage; the padding carries nothing
    (batch,) = list(buf.iter_minibatches(batch_episodes=10_000))
    from sppo_rl.objectives import broadcast_to_steps

    per_step = broadcast_to_steps(batch.advantages, batch.mask)
    episode_outcomes = batch.outcomes.numpy()
    for row in range(per_step.shape[0]):
        length = int(batch.mask[row].sum())
        np.testing.assert_allclose(per_step[row, :length].numpy(), episode_outcomes[row] - sigmoid, rtol=1e-6)
        assert th.all(per_step[row, length:] == 0)


def test_episodes_are_whole_contiguous_and_never_cross_rollouts():
    env = make_vec_env(StartDeterminedOutcomeEnv, n_envs=4, seed=1, env_kwargs={"n_starts": 9})
    model = _frozen_model(env, n_steps=7)
    for _ in range(3):
        model.learn(total_timesteps=1, reset_num_timesteps=False)
        buf = model.rollout_buffer
        obs = buf.observations
        total = 0
        for start, length in zip(buf.episode_starts, buf.episode_lengths, strict=True):
            episode = obs[start : start + length]
            k = int(episode[0, 0])
            assert length == k + 1  # the whole episode, no more, no less
            np.testing.assert_array_equal(episode[:, 0], k)  # one episode only
            np.testing.assert_array_equal(episode[:, 1], np.arange(length))  # from its first step, in order
            total += length
        assert total == buf.n_steps_total == len(buf.log_probs)


def test_rollout_waits_for_open_episodes_after_n_steps():
    # n_steps=1: each env's first episode (started before the threshold) must still be completed
    env = make_vec_env(StartDeterminedOutcomeEnv, n_envs=3, seed=5, env_kwargs={"n_starts": 6})
    model = _frozen_model(env, n_steps=1)
    model.learn(total_timesteps=1)
    assert model.rollout_buffer.n_episodes >= 3


def test_n_episodes_mode_collects_at_least_that_many_episodes():
    env = make_vec_env(StartDeterminedOutcomeEnv, n_envs=2, seed=0)
    model = _frozen_model(env, n_episodes=11)
    model.learn(total_timesteps=1)
    assert 11 <= model.rollout_buffer.n_episodes <= 11 + 2
    assert model.num_episodes == model.rollout_buffer.n_episodes


def test_outcome_return_and_gaussian_head_use_summed_reward():
    env = make_vec_env(StartDeterminedOutcomeEnv, n_envs=2, seed=0, env_kwargs={"report_success": False,
                                                                              "outcome_scale": 40.0})  # fmt: skip
    model = _frozen_model(env)
    model.learn(total_timesteps=1)
    assert model.outcome_source == "return" and model.value_head == "gaussian"
    buf = model.rollout_buffer
    starts = buf.start_observations[:, 0].astype(int)
    np.testing.assert_array_equal(buf.outcomes, [40.0 * StartDeterminedOutcomeEnv.outcome_of(k) for k in starts])


def test_outcome_callable():
    env = make_vec_env(StartDeterminedOutcomeEnv, n_envs=1, seed=0)
    model = _frozen_model(env, outcome=lambda ret, info: 1.0 - float(info["is_success"]), value_head="bernoulli")
    model.learn(total_timesteps=1)
    buf = model.rollout_buffer
    starts = buf.start_observations[:, 0].astype(int)
    np.testing.assert_array_equal(buf.outcomes, [1.0 - StartDeterminedOutcomeEnv.outcome_of(k) for k in starts])


def test_advantage_estimator_none_uses_raw_outcome():
    env = make_vec_env(StartDeterminedOutcomeEnv, n_envs=1, seed=0)
    model = _frozen_model(env, advantage_estimator="none")
    model.learn(total_timesteps=1)
    np.testing.assert_array_equal(model.rollout_buffer.advantages, model.rollout_buffer.outcomes)


def test_normalize_advantage_whitens_over_episodes():
    env = make_vec_env(StartDeterminedOutcomeEnv, n_envs=2, seed=0)
    model = _frozen_model(env, normalize_advantage=True, n_steps=50)
    model.learn(total_timesteps=1)
    adv = model.rollout_buffer.advantages
    assert abs(adv.mean()) < 1e-5 and adv.std(ddof=1) == pytest.approx(1.0, rel=1e-4)
