"""Every bad input is a clear error when the model is built (or when the bad value first appears), naming it."""

import math
import warnings
from datetime import timedelta

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sppo_rl.envs.toy import LineTargetEnv
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import DummyVecEnv

from sppo_rl import SPPO, OutcomeError
from sppo_rl.objectives import LOSS_AGG_MODES

SMALL = dict(n_steps=16, batch_episodes=4, n_epochs=1, seed=0, policy_kwargs=dict(net_arch=[8]), device="cpu")
NAN, INF = float("nan"), float("inf")


def _env():
    return make_vec_env(LineTargetEnv, n_envs=1, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_grad_norm": -0.5}, ValueError, r"max_grad_norm must be > 0.0, got -0.5"),
        ({"max_grad_norm": NAN}, ValueError, r"max_grad_norm must be a number, got nan"),
        ({"max_grad_norm": 0.0}, ValueError, r"max_grad_norm must be > 0.0"),
        ({"learning_rate": -1e-3}, ValueError, r"learning_rate must be a finite number >= 0.0, got -0.001"),
        ({"learning_rate": NAN}, ValueError, r"learning_rate must be a number, got nan"),
        ({"learning_rate": INF}, ValueError, r"learning_rate must be a finite number"),
        ({"learning_rate": "3e-4"}, TypeError, r"learning_rate must be a number, got '3e-4' \(str\)"),
        ({"critic_learning_rate": -1.0}, ValueError, r"critic_learning_rate must be a finite number >= 0.0"),
        ({"critic_learning_rate": NAN}, ValueError, r"critic_learning_rate must be a number, got nan"),
        ({"learning_rate": lambda p: 1e-3 * p - 1e-4}, ValueError,
         r"learning_rate \(a schedule, at progress 0.0\) must be a finite number >= 0.0, got -0.0001"),
        ({"critic_learning_rate": lambda p: None}, TypeError,
         r"critic_learning_rate \(a schedule, at progress 1.0\) must be a number, got None"),
        ({"learning_rate": lambda p: 1 / 0}, ValueError, r"learning_rate: the schedule raised ZeroDivisionError"),
        ({"n_steps": 32.7}, TypeError, r"n_steps must be an integer, got 32.7 \(float\)"),
        ({"n_steps": 0}, ValueError, r"n_steps must be >= 1, got 0"),
        ({"batch_episodes": 2.5}, TypeError, r"batch_episodes must be an integer, got 2.5"),
        ({"n_epochs": 1.5}, TypeError, r"n_epochs must be an integer"),
        ({"n_episodes": 2.5}, TypeError, r"n_episodes must be an integer"),
        ({"n_episodes": True}, TypeError, r"n_episodes must be an integer, got True \(bool\)"),
        ({"max_episode_steps": 0}, ValueError, r"max_episode_steps must be >= 1"),
        ({"clip_range": -0.2}, ValueError, r"clip_range must be a finite number > 0.0, got -0.2"),
        ({"clip_range": 0.0}, ValueError, r"clip_range must be a finite number > 0.0"),
        ({"clip_range": lambda p: p - 1.5}, ValueError, r"clip_range \(a schedule, at progress 1.0\) must be"),
        ({"clip_range_high": 0.0}, ValueError, r"clip_range_high must be a finite number > 0.0"),
        ({"dual_clip": NAN}, ValueError, r"dual_clip must be a number, got nan"),
        ({"log_ratio_clamp": -1.0}, ValueError, r"log_ratio_clamp must be > 0.0"),
        ({"ent_coef": INF}, ValueError, r"ent_coef must be finite"),
        ({"target_kl": 0.0}, ValueError, r"target_kl must be a finite number > 0.0"),
        ({"normalize_advantage": "yes"}, TypeError, r"normalize_advantage must be True or False"),
        ({"seed": -1}, ValueError, r"seed must be in \[0, 4294967295\], got -1"),
        ({"seed": 1.5}, TypeError, r"seed must be an integer"),
        ({"device": "gpu0"}, ValueError, r"device 'gpu0' is not a torch device"),
        ({"policy_kwargs": [("net_arch", [8])]}, TypeError, r"policy_kwargs must be a dict"),
        ({"advantage_estimator": "nope"}, ValueError, r"Unknown advantage estimator 'nope' \(advantage_estimator\)"),
        ({"advantage_estimator": "ema", "advantage_estimator_kwargs": {"bogus": 1}}, ValueError,
         r"advantage_estimator_kwargs: The 'ema' estimator does not accept"),
        ({"value_head": 3}, TypeError, r"value_head must be a name"),
        ({"stats_window_size": 0}, ValueError, r"stats_window_size must be >= 1"),
    ],
)  # fmt: skip
def test_bad_argument_is_refused_at_construction_naming_it(kwargs, error, match):
    with pytest.raises(error, match=match):
        SPPO("MlpPolicy", _env(), **kwargs)


def test_linear_schedules_to_zero_are_valid_to_the_last_update():
    # 0 is a valid learning rate; a clip range that reached 0 allows no policy change: the critic alone trains
    model = SPPO("MlpPolicy", _env(), learning_rate=LinearSchedule(1e-3, 0.0, 1.0),
                 clip_range=LinearSchedule(0.2, 0.0, 1.0), **SMALL)  # fmt: skip
    actor = [p.detach().clone() for p in model.policy.actor_parameters()]
    critic = [p.detach().clone() for p in model.policy.critic_parameters()]
    model.learn(10)  # one rollout of 20 steps: progress 0 at the update
    assert model.logger.name_to_value["train/clip_range"] == 0.0
    assert all(th.equal(a, p) for a, p in zip(actor, model.policy.actor_parameters(), strict=True))
    assert not all(th.equal(c, p) for c, p in zip(critic, model.policy.critic_parameters(), strict=True))


def test_progress_never_goes_below_zero_when_the_last_rollout_overshoots():
    # episodes of 10 steps and a budget of 15: the rollout finishes its episode, 20 > 15 steps
    seen = []
    model = SPPO("MlpPolicy", _env(), learning_rate=lambda p: seen.append(p) or 1e-3 * p, **SMALL)
    seen.clear()  # the values the construction checked
    model.learn(15)
    assert model.num_timesteps > 15
    assert min(seen) == 0.0 and all(lr >= 0 for lr in (g["lr"] for g in model.policy.optimizer.param_groups))


@pytest.mark.parametrize("total", [-5, 0])
def test_learn_refuses_a_budget_that_trains_nothing(total):
    model = SPPO("MlpPolicy", _env(), **SMALL)
    with pytest.raises(ValueError, match=f"total_timesteps must be >= 1, got {total}"):
        model.learn(total_timesteps=total)
    with pytest.raises(TypeError, match="total_timesteps must be an integer"):
        model.learn(total_timesteps=100.5)


def test_load_checks_the_values_it_sets(tmp_path):
    SPPO("MlpPolicy", _env(), **SMALL).save(tmp_path / "m.zip")
    with pytest.raises(ValueError, match=r"max_grad_norm must be > 0\.0, got -1\.0"):
        SPPO.load(tmp_path / "m.zip", env=_env(), max_grad_norm=-1.0)


# ---- bad values met while training --------------------------------------------------------------------------------


class NanAfter(gym.Wrapper):
    """Returns a NaN observation from the ``at``-th step of its first episode on."""

    def __init__(self, env, at):
        super().__init__(env)
        self.at, self.t = at, 0

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        self.t += 1
        if self.t >= self.at:
            obs = np.full_like(obs, np.nan)
        return obs, r, term, trunc, info


@pytest.mark.parametrize("continuous", [False, True])
def test_nan_observation_names_the_env_and_the_step(continuous):
    # env 1 returns NaN from its 3rd step: the observation the policy reads at step 3 of the rollout
    def make(i):
        return lambda: NanAfter(LineTargetEnv(continuous=continuous), at=3 if i == 1 else 10**9)

    model = SPPO("MlpPolicy", DummyVecEnv([make(0), make(1)]), **SMALL)
    with pytest.raises(ValueError, match=r"Env 1 returned a non-finite observation \(nan\) at step 3 of the rollout"):
        model.learn(32)


def test_nan_observation_in_a_dict_names_the_key():
    class DictNan(gym.Env):
        observation_space = spaces.Dict({"a": spaces.Box(-1, 1, (2,)), "b": spaces.Box(-1, 1, (1,))})
        action_space = spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            self.t = 0
            return {"a": np.zeros(2, np.float32), "b": np.zeros(1, np.float32)}, {}

        def step(self, action):
            self.t += 1
            b = np.full(1, np.inf if self.t == 2 else 0.0, np.float32)
            return {"a": np.zeros(2, np.float32), "b": b}, 0.0, self.t >= 4, False, {}

    model = SPPO("MultiInputPolicy", DummyVecEnv([DictNan]), **SMALL)
    with pytest.raises(ValueError, match=r"Env 0 returned a non-finite observation \(key 'b'\) \(inf\) at step 2"):
        model.learn(16)


def bad_outcome(episode_return, info):
    return "success" if info.get("is_success") else None


@pytest.mark.parametrize(
    ("outcome", "match"),
    [
        (bad_outcome, r"outcome=bad_outcome returned (None \(NoneType\)|'success' \(str\)) for the episode of env 0"),
        (lambda ret, info: [ret], r"outcome=.*<lambda> returned \[[01].0\] \(list\)"),
    ],
)
def test_outcome_callable_returning_a_non_number_names_the_callable_and_the_value(outcome, match):
    model = SPPO("MlpPolicy", _env(), outcome=outcome, value_head="bernoulli", **SMALL)
    with pytest.raises(OutcomeError, match=match):
        model.learn(16)


def test_outcome_callable_may_return_bools_numpy_scalars_and_one_element_tensors():
    for outcome in (lambda r, i: bool(i["is_success"]), lambda r, i: np.float32(r), lambda r, i: th.tensor([r])):
        model = SPPO("MlpPolicy", _env(), outcome=outcome, value_head="bernoulli", **SMALL)
        model.learn(16)
        assert set(np.unique(model.rollout_buffer.outcomes)) <= {0.0, 1.0}


def test_time_limit_before_the_horizon_of_a_sparse_task_is_warned_about():
    import sppo_rl.envs  # noqa: F401  (registers the suite)

    with pytest.warns(UserWarning, match=r"Env 0: a TimeLimit of 10 steps ends every episode before the task's "
                                         r"horizon \(\d+ steps\)"):  # fmt: skip
        SPPO("MlpPolicy", gym.make("SparsePendulum-v0", max_episode_steps=10), **SMALL)
    with pytest.warns(UserWarning, match="a TimeLimit of 4 steps"):  # any env that declares its horizon
        SPPO("MlpPolicy", make_vec_env(LineTargetEnv, n_envs=2, wrapper_class=gym.wrappers.TimeLimit,
                                       wrapper_kwargs={"max_episode_steps": 4}), **SMALL)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as registered (the horizon is the limit), or a longer limit: no warning
        SPPO("MlpPolicy", gym.make("SparsePendulum-v0"), **SMALL)
        SPPO("MlpPolicy", gym.wrappers.TimeLimit(LineTargetEnv(), max_episode_steps=50), **SMALL)


def test_set_env_checks_the_time_limit_too():
    model = SPPO("MlpPolicy", _env(), **SMALL)
    with pytest.warns(UserWarning, match="a TimeLimit of 4 steps"):
        model.set_env(make_vec_env(LineTargetEnv, n_envs=1, wrapper_class=gym.wrappers.TimeLimit,
                                   wrapper_kwargs={"max_episode_steps": 4}))  # fmt: skip


# ---- every combination of constructor arguments: trains one update or names the bad argument ----------------------

NUMBER_JUNK = ["0.1", None, True, [0.1], NAN]
INTEGER_JUNK = [0, -3, 2.5, 8.0, "8", None, False]
BAD_SCHEDULES = [lambda p: -1e-3, lambda p: NAN, lambda p: "x", lambda p: 1 / 0]

VALID = {
    "learning_rate": st.one_of(st.floats(0.0, 1e-2), st.just(lambda p: 1e-3 * p)),
    "critic_learning_rate": st.one_of(st.none(), st.floats(0.0, 1e-2), st.just(lambda p: 1e-3 * p)),
    "n_steps": st.integers(1, 40),
    "n_episodes": st.one_of(st.none(), st.integers(1, 6)),
    "batch_episodes": st.integers(1, 16),
    "n_epochs": st.integers(1, 3),
    "clip_range": st.one_of(st.floats(0.01, 0.5), st.just(lambda p: 0.2 * p + 0.01)),
    "clip_range_high": st.one_of(st.none(), st.floats(0.01, 0.5)),
    "dual_clip": st.one_of(st.none(), st.floats(1.01, 10.0)),
    "log_ratio_clamp": st.one_of(st.none(), st.floats(0.1, 30.0), st.just(INF)),
    "ent_coef": st.floats(-0.01, 0.1),
    "max_grad_norm": st.one_of(st.floats(0.01, 10.0), st.just(INF)),
    "target_kl": st.one_of(st.none(), st.floats(1e-3, 1.0)),
    "normalize_advantage": st.booleans(),
    "loss_agg_mode": st.sampled_from(LOSS_AGG_MODES),
    "advantage_estimator": st.sampled_from(["sppo", "none", "batch_mean", "ema"]),
    "value_head": st.sampled_from(["auto", "bernoulli", "gaussian"]),
    "outcome": st.sampled_from(["auto", "success", "return"]),  # LineTarget's outcome and return are both 0 or 1
    "max_episode_steps": st.integers(10, 1000),  # LineTarget's episodes last 10 steps
    "stats_window_size": st.integers(1, 100),
    "seed": st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    "gamma": st.sampled_from([1.0, 0.99]),  # 0.99 is accepted with a warning
    "use_sde": st.just(False),
}
INVALID = {
    "learning_rate": [-1e-3, INF, *NUMBER_JUNK, *BAD_SCHEDULES],
    "critic_learning_rate": [-1.0, INF, "0.1", True, NAN, *BAD_SCHEDULES],
    "n_steps": INTEGER_JUNK,
    "n_episodes": [x for x in INTEGER_JUNK if x is not None],
    "batch_episodes": INTEGER_JUNK,
    "n_epochs": INTEGER_JUNK,
    "clip_range": [-0.1, 0.0, INF, *NUMBER_JUNK, *BAD_SCHEDULES],
    "clip_range_high": [0.0, -1.0, INF, NAN, "x"],
    "dual_clip": [1.0, 0.5, INF, NAN, "3"],
    "log_ratio_clamp": [0.0, -1.0, NAN, "x"],
    "ent_coef": [INF, -INF, *NUMBER_JUNK],
    "max_grad_norm": [0.0, -0.5, -INF, *NUMBER_JUNK],
    "target_kl": [0.0, -1.0, INF, NAN, "x"],
    "normalize_advantage": ["yes", 1, None],
    "loss_agg_mode": ["mean", 3, None],
    "advantage_estimator": ["grpo", "gae", "nope", None, 3],
    "advantage_estimator_kwargs": [[1], "decay"],
    "value_head": ["beta", 3, None],
    "outcome": ["reward", None, 3],
    "max_episode_steps": INTEGER_JUNK,
    "stats_window_size": INTEGER_JUNK,
    "seed": [-1, 2**32, 1.5, "0"],
    "policy_kwargs": [[1], "dict(net_arch=[8])"],
    "batch_size": [64],
    "use_sde": [True],
}
INVALID_PAIRS = st.sampled_from(sorted(INVALID)).flatmap(lambda k: st.tuples(st.just(k), st.sampled_from(INVALID[k])))


@settings(max_examples=40, deadline=timedelta(seconds=60), derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(
    valid=st.fixed_dictionaries({}, optional=VALID),
    invalid=st.lists(INVALID_PAIRS, max_size=2, unique_by=lambda pair: pair[0]),
)
def test_any_constructor_arguments_train_one_update_or_name_a_bad_one(valid, invalid):
    """Valid arguments in any combination train one update to finite weights; with bad ones among them, the
    constructor raises TypeError or ValueError naming one of the bad ones (never a torch error, never a hang)."""
    bad = dict(invalid)
    arguments = {**SMALL, **valid, **bad}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gamma=0.99 is accepted with a warning
        if bad:
            with pytest.raises((ValueError, TypeError)) as caught:
                SPPO("MlpPolicy", DummyVecEnv([LineTargetEnv]), **arguments)
            assert any(name in str(caught.value) for name in bad), f"{caught.value!r} names none of {sorted(bad)}"
            event("refused")
            return
        event("trained")
        model = SPPO("MlpPolicy", DummyVecEnv([LineTargetEnv]), **arguments)
        model.learn(1)  # one rollout (whole episodes), one update
    assert model._n_updates >= 1
    for name, parameter in model.policy.named_parameters():
        assert th.isfinite(parameter).all(), f"{name} is not finite after one update with {valid}"
    assert math.isfinite(model.logger.name_to_value["train/value_loss"])


def test_diverged_weights_are_named_at_the_next_rollout():
    model = SPPO("MlpPolicy", _env(), learning_rate=1e38, **SMALL)  # valid, but the weights overflow at once
    with pytest.raises(RuntimeError, match=r"The policy's parameter .* is not finite: training diverged"):
        model.learn(200)
