"""SPPO as an SB3 algorithm: spaces, vec envs, callbacks, save/load, determinism, learning, bad input."""

import logging

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sppo_rl.envs.toy import LineTargetEnv, StartDeterminedOutcomeEnv
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    FakeImageEnv,
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

from sppo_rl import SPPO, BernoulliValueHead, EpisodeLengthError, GaussianValueHead, OutcomeError, ValueHead
from sppo_rl.policies import SPPOPolicy

SMALL = dict(n_steps=32, batch_episodes=4, n_epochs=2, seed=0, policy_kwargs=dict(net_arch=[16]))


def _actor_vector(model):
    return th.cat([p.detach().flatten().clone() for p in model.policy.actor_parameters()])


def _critic_vector(model):
    return th.cat([p.detach().flatten().clone() for p in model.policy.critic_parameters()])


ENV_FACTORIES = {
    "discrete": lambda: IdentityEnv(4, ep_length=8),
    "box": lambda: IdentityEnvBox(ep_length=8),
    "multidiscrete": lambda: IdentityEnvMultiDiscrete(2, ep_length=8),
    "multibinary": lambda: IdentityEnvMultiBinary(3, ep_length=8),
}


@pytest.mark.parametrize("kind", list(ENV_FACTORIES))
def test_every_action_space_trains_on_whole_episodes(kind):
    env = make_vec_env(ENV_FACTORIES[kind], n_envs=2, seed=0)
    model = SPPO("MlpPolicy", env, **SMALL)
    before_actor, before_critic = _actor_vector(model), _critic_vector(model)
    model.learn(100)
    buf = model.rollout_buffer
    assert np.all(buf.episode_lengths == 8)  # whole episodes only
    assert model.num_timesteps >= 100 and model.num_episodes >= 100 // 8
    assert not th.equal(before_actor, _actor_vector(model))
    assert not th.equal(before_critic, _critic_vector(model))
    action, _ = model.predict(env.observation_space.sample())
    assert model.action_space.contains(action.reshape(model.action_space.shape).astype(model.action_space.dtype))
    # the outcome is the return (IdentityEnv reports no is_success), so auto picked the Gaussian head
    assert model.value_head == "gaussian" and isinstance(model.policy.critic.head, GaussianValueHead)
    assert np.isfinite(model.logger.name_to_value["train/policy_gradient_loss"])


def test_image_observations_with_cnn_policy():
    env = make_vec_env(lambda: FakeImageEnv(screen_height=36, screen_width=36, n_channels=1), n_envs=1, seed=0)
    model = SPPO("CnnPolicy", env, n_steps=16, batch_episodes=2, n_epochs=1, seed=0)
    # actor and critic each have their own CNN
    assert model.policy.features_extractor is not model.policy.critic.features_extractor
    before = _critic_vector(model)
    model.learn(20)
    assert model.rollout_buffer.observations.shape[1:] == (1, 36, 36)  # SB3 transposed to channel-first
    assert not th.equal(before, _critic_vector(model))


def test_dict_observations_with_multi_input_policy():
    env = make_vec_env(lambda: gym.wrappers.TimeLimit(SimpleMultiObsEnv(random_start=True), 20), n_envs=2, seed=0)
    model = SPPO("MultiInputPolicy", env, **SMALL)
    model.learn(64)
    buf = model.rollout_buffer
    assert set(buf.observations) == {"vec", "img"}
    assert buf.start_observations["img"].shape[0] == buf.n_episodes


def test_subproc_vec_env_matches_dummy_vec_env():
    results = []
    for vec_cls in (DummyVecEnv, SubprocVecEnv):
        env = make_vec_env(LineTargetEnv, n_envs=2, seed=0, vec_env_cls=vec_cls)
        model = SPPO("MlpPolicy", env, **SMALL)
        model.learn(64)
        results.append(_actor_vector(model))
        env.close()
    assert th.equal(results[0], results[1])


def test_vec_normalize_observations_and_outcome_uses_raw_rewards():
    env = VecNormalize(
        make_vec_env(
            StartDeterminedOutcomeEnv, n_envs=2, seed=0, env_kwargs={"report_success": False, "outcome_scale": 50.0}
        ),
        norm_obs=True,
        norm_reward=True,
    )
    model = SPPO("MlpPolicy", env, **SMALL)
    model.learn(64)
    buf = model.rollout_buffer
    assert set(np.unique(buf.outcomes)) <= {0.0, 50.0}  # raw returns, not normalised rewards
    assert abs(float(buf.observations[:, 0].mean())) < 3.0  # observations were normalised


def test_callbacks_and_progress_bar(tmp_path):
    env = make_vec_env(LineTargetEnv, n_envs=2, seed=0)
    eval_env = make_vec_env(LineTargetEnv, n_envs=1, seed=1)
    eval_cb = EvalCallback(eval_env, n_eval_episodes=4, eval_freq=20, log_path=str(tmp_path), verbose=0)
    ckpt_cb = CheckpointCallback(save_freq=20, save_path=str(tmp_path / "ckpt"), name_prefix="sppo")
    model = SPPO("MlpPolicy", env, **SMALL)
    model.learn(120, callback=[eval_cb, ckpt_cb], progress_bar=True)
    evaluations = np.load(tmp_path / "evaluations.npz")
    assert len(evaluations["timesteps"]) >= 2 and evaluations["successes"].shape[1] == 4
    checkpoints = sorted((tmp_path / "ckpt").glob("sppo_*_steps.zip"))
    assert len(checkpoints) >= 2
    assert SPPO.load(checkpoints[0]).num_timesteps > 0


def test_logger_keys():
    env = make_vec_env(LineTargetEnv, n_envs=2, seed=0)
    model = SPPO("MlpPolicy", env, **SMALL)
    model.learn(100)
    logged = model.logger.name_to_value
    for key in ("train/policy_gradient_loss", "train/value_loss", "train/approx_kl", "train/clip_fraction",
                "train/entropy_loss", "train/value_mean", "train/advantage_abs_mean", "train/value_brier",
                "train/explained_variance", "train/clip_range"):  # fmt: skip
        assert key in logged, key
    assert 0.0 <= logged["train/value_mean"] <= 1.0 and 0.0 <= logged["train/value_brier"] <= 1.0


def test_rollout_logs_include_episodes_and_success_rate(tmp_path):
    from stable_baselines3.common.logger import configure

    env = make_vec_env(LineTargetEnv, n_envs=2, seed=0)
    model = SPPO("MlpPolicy", env, **SMALL)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(100)
    import csv

    with open(tmp_path / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and "rollout/episodes" in rows[0] and "rollout/success_rate" in rows[0]
    assert int(float(rows[0]["rollout/episodes"])) >= 2 * 32 // 10


# ---- value head selection ------------------------------------------------------------------------------------


def test_auto_value_head_picks_bernoulli_for_success_and_says_so(caplog, capsys):
    env = make_vec_env(LineTargetEnv, n_envs=1, seed=0)
    model = SPPO("MlpPolicy", env, verbose=1, **SMALL)
    assert model.value_head == "auto"
    with caplog.at_level(logging.INFO, logger="sppo_rl"):
        model.learn(20)
    assert model.value_head == "bernoulli" and model.outcome_source == "success"
    assert isinstance(model.policy.critic.head, BernoulliValueHead)
    assert "chose 'bernoulli'" in caplog.text and "chose 'bernoulli'" in capsys.readouterr().out


def test_custom_value_head_class_and_instance(tmp_path):
    class ScaledBernoulli(BernoulliValueHead):
        name = "scaled-bernoulli"

    env = make_vec_env(LineTargetEnv, n_envs=1, seed=0)
    model = SPPO("MlpPolicy", env, value_head=ScaledBernoulli, **SMALL)
    model.learn(20)
    assert type(model.policy.critic.head) is ScaledBernoulli
    model.save(tmp_path / "m.zip")
    assert type(SPPO.load(tmp_path / "m.zip").policy.critic.head).__name__ == "ScaledBernoulli"

    head = GaussianValueHead(16, normalize=False)
    model = SPPO("MlpPolicy", env, value_head=head, **SMALL)
    assert model.policy.critic.head is head


def test_value_head_in_policy_kwargs_conflict():
    env = make_vec_env(LineTargetEnv, n_envs=1, seed=0)
    with pytest.raises(ValueError, match="both as an argument and in policy_kwargs"):
        SPPO("MlpPolicy", env, value_head="bernoulli", policy_kwargs=dict(value_head="gaussian"))


# ---- save / load / determinism -----------------------------------------------------------------------------


def test_save_load_round_trip_and_identical_continuation(tmp_path):
    env = make_vec_env(LineTargetEnv, n_envs=2, seed=0)
    model = SPPO("MlpPolicy", env, **SMALL)
    model.learn(100)
    path = tmp_path / "sppo.zip"
    model.save(path)

    loaded = SPPO.load(path, env=make_vec_env(LineTargetEnv, n_envs=2, seed=0))
    obs = np.random.default_rng(0).random((16, 3), dtype=np.float32)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    with th.no_grad():
        np.testing.assert_allclose(model.policy.predict_values(th.as_tensor(obs)), loaded.policy.predict_values(
            th.as_tensor(obs)))  # fmt: skip
    assert loaded.value_head == "bernoulli" and loaded.outcome_source == "success"
    # the critic optimizer state (Adam moments) is restored
    for a, b in zip(model.policy.critic_optimizer.state.values(), loaded.policy.critic_optimizer.state.values(),
                    strict=True):  # fmt: skip
        assert th.equal(a["exp_avg"], b["exp_avg"])

    # training continues identically from the file
    continued = []
    for _ in range(2):
        m = SPPO.load(path, env=make_vec_env(LineTargetEnv, n_envs=2, seed=0))
        m.set_random_seed(7)
        m.learn(100, reset_num_timesteps=False)
        continued.append((_actor_vector(m), _critic_vector(m), m.num_timesteps))
    assert th.equal(continued[0][0], continued[1][0]) and th.equal(continued[0][1], continued[1][1])
    assert continued[0][2] == continued[1][2] > model.num_timesteps


def test_same_seed_same_numbers_different_seed_different_numbers():
    def run(seed):
        model = SPPO("MlpPolicy", make_vec_env(LineTargetEnv, n_envs=2, seed=seed), **{**SMALL, "seed": seed})
        model.learn(100)
        return _actor_vector(model), model.rollout_buffer.outcomes.copy()

    (a1, o1), (a2, o2), (b, _) = run(3), run(3), run(4)
    assert th.equal(a1, a2) and np.array_equal(o1, o2)
    assert not th.equal(a1, b)


def test_set_parameters_and_actor_transfer_from_ppo():
    env = make_vec_env(LineTargetEnv, n_envs=1, seed=0)
    ppo = PPO("MlpPolicy", env, policy_kwargs=dict(net_arch=[16]), seed=1)
    sppo = SPPO("MlpPolicy", env, **SMALL)
    sppo.policy.load_actor_state_dict(ppo.policy.state_dict())
    obs = np.random.default_rng(0).random((8, 3), dtype=np.float32)
    with th.no_grad():
        p_ppo = ppo.policy.get_distribution(th.as_tensor(obs)).distribution.probs
        p_sppo = sppo.policy.get_distribution(th.as_tensor(obs)).distribution.probs
    assert th.allclose(p_ppo, p_sppo)

    other = SPPO("MlpPolicy", env, **{**SMALL, "seed": 5})
    other.set_parameters(sppo.get_parameters())
    assert th.equal(_actor_vector(other), _actor_vector(sppo)) and th.equal(_critic_vector(other), _critic_vector(sppo))

    wrong = PPO("MlpPolicy", env, policy_kwargs=dict(net_arch=[32]))
    with pytest.raises(ValueError, match="shapes differ"):
        sppo.policy.load_actor_state_dict(wrong.policy.state_dict())


# ---- learning ---------------------------------------------------------------------------------------------


def test_sppo_learns_a_sparse_outcome_task():
    """LineTargetEnv: reward only at the end, success iff the agent ends on the target (random policy ~10%)."""
    env = make_vec_env(LineTargetEnv, n_envs=4, seed=0)
    eval_env = make_vec_env(LineTargetEnv, n_envs=4, seed=100)
    model = SPPO("MlpPolicy", env, n_steps=256, seed=0)

    def success_rate():
        successes = []

        def record(locals_, _globals):
            if locals_["done"]:
                successes.append(locals_["info"]["is_success"])

        evaluate_policy(model, eval_env, n_eval_episodes=200, deterministic=False, callback=record)
        return float(np.mean(successes))

    before = success_rate()
    model.learn(40_000)
    after = success_rate()
    assert before < 0.3
    assert after > 0.8, f"success rate {before:.2f} -> {after:.2f}"


# ---- bad input ----------------------------------------------------------------------------------------------


def test_episode_without_end_raises_with_the_bound_and_the_fix():
    env = make_vec_env(StartDeterminedOutcomeEnv, n_envs=1, env_kwargs={"never_ends": True})
    model = SPPO("MlpPolicy", env, max_episode_steps=50, n_steps=8)
    with pytest.raises(EpisodeLengthError, match=r"max_episode_steps=50.*TimeLimit.*SPPO\(\.\.\., max_episode_steps"):
        model.learn(100)


def test_bernoulli_head_with_out_of_range_outcome_names_value_and_suggests_gaussian():
    env = make_vec_env(StartDeterminedOutcomeEnv, n_envs=1, env_kwargs={"report_success": False,
                                                                       "outcome_scale": 37.5})  # fmt: skip
    model = SPPO("MlpPolicy", env, value_head="bernoulli", n_steps=8, seed=0)
    with pytest.raises(OutcomeError, match=r"Env 0: .*got 37\.5.*value_head='gaussian'"):
        model.learn(100)


def test_non_finite_outcome_names_the_env_index():
    def make(scale):
        return lambda: StartDeterminedOutcomeEnv(n_starts=1, report_success=False, outcome_scale=scale)

    # StartDeterminedOutcomeEnv with n_starts=1 always succeeds: env 2's last reward is NaN
    env = DummyVecEnv([make(1.0), make(1.0), make(float("nan"))])
    model = SPPO("MlpPolicy", env, value_head="gaussian", n_steps=8)
    with pytest.raises(OutcomeError, match=r"Env 2 ended an episode with a non-finite outcome \(nan\)"):
        model.learn(100)


def test_missing_is_success_after_auto_chose_success():
    class Flaky(StartDeterminedOutcomeEnv):
        episodes = 0

        def step(self, action):
            obs, r, term, trunc, info = super().step(action)
            if term:
                Flaky.episodes += 1
                if Flaky.episodes > 2:
                    info.pop("is_success", None)
            return obs, r, term, trunc, info

    model = SPPO("MlpPolicy", make_vec_env(Flaky, n_envs=1), n_steps=30)
    with pytest.raises(OutcomeError, match=r"Env 0 ended an episode without info\['is_success'\]"):
        model.learn(100)


@pytest.mark.parametrize(
    ("space", "what"),
    [
        (spaces.Tuple((spaces.Discrete(2), spaces.Discrete(2))), "action"),
        (spaces.Text(5), "observation"),
    ],
)
def test_unsupported_spaces_are_refused_at_construction(space, what):
    class Env(gym.Env):
        def __init__(self):
            self.observation_space = space if what == "observation" else spaces.Box(-1, 1, (2,))
            self.action_space = space if what == "action" else spaces.Discrete(2)

    with pytest.raises(ValueError, match=f"does not support the {what} space"):
        SPPO("MlpPolicy", Env())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_episodes": 0}, "batch_episodes"),
        ({"loss_agg_mode": "mean"}, "loss_agg_mode"),
        ({"advantage_estimator": "grpo"}, "group estimators"),
        ({"outcome": "reward"}, "outcome must be"),
        ({"dual_clip": 1.0}, "dual_clip"),
        ({"value_head": "beta"}, "Unknown value head"),
        ({"policy_kwargs": {"share_features_extractor": True}}, "decoupled"),
        ({"policy_kwargs": {"use_sde": True}}, "gSDE"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SPPO("MlpPolicy", make_vec_env(LineTargetEnv, n_envs=1), **kwargs)


def test_policy_is_an_sb3_actor_critic_policy():
    model = SPPO("MlpPolicy", make_vec_env(LineTargetEnv, n_envs=1), **SMALL)
    assert isinstance(model.policy, SPPOPolicy)
    obs = th.rand(5, 3)
    actions, values, log_prob = model.policy(obs)
    assert actions.shape == (5,) and values.shape == (5, 1) and log_prob.shape == (5,)
    values2, log_prob2, entropy = model.policy.evaluate_actions(obs, actions)
    assert th.allclose(values, values2) and th.allclose(log_prob, log_prob2) and entropy.shape == (5,)
    assert isinstance(model.policy.critic.head, ValueHead)
