"""The generic outcome wrappers on a tiny deterministic env: horizon, early ends, rewards, info, bad input."""

from __future__ import annotations

import math
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from sppo_rl.envs import (
    CartPolePrecisionShaping,
    CartPoleUpright,
    FinalStep,
    MountainCarEnergyShaping,
    OutcomeWrapper,
    PendulumUpright,
    PendulumUprightShaping,
    ShapedReward,
    SparseOutcomeWrapper,
    Transition,
    find_outcome_wrapper,
)
from sppo_rl.envs.mountain_car import mountain_car_energy


class CountingEnv(gymnasium.Env[np.ndarray, int]):
    """Observation = steps taken; reward 10 per step; optional termination/truncation at a given step.

    :param terminate_at: the step on which the env terminates, or ``None``.
    :param truncate_at: the step on which the env truncates, or ``None``.
    :param report_success: put ``is_success=True`` in every step's info (as some goal-based envs do).
    """

    observation_space = spaces.Box(0.0, 1e6, shape=(1,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def __init__(
        self, terminate_at: int | None = None, truncate_at: int | None = None, report_success: bool = False
    ) -> None:
        self.report_success = report_success
        self.terminate_at = terminate_at
        self.truncate_at = truncate_at
        self.count = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.count = 0
        return np.array([0.0], dtype=np.float32), {"reset": True}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.count += 1
        terminated = self.terminate_at is not None and self.count >= self.terminate_at
        truncated = self.truncate_at is not None and self.count >= self.truncate_at
        info: dict[str, Any] = {"count": self.count}
        if self.report_success:
            info["is_success"] = True
        return np.array([self.count], dtype=np.float32), 10.0, terminated, truncated, info


class RecordingRule:
    """A success rule that records its calls and answers a fixed verdict.

    :param verdict: the answer.
    """

    def __init__(self, verdict: Any = True) -> None:
        self.verdict = verdict
        self.calls: list[FinalStep[Any]] = []

    def __call__(self, final: FinalStep[Any], /) -> Any:
        self.calls.append(final)
        return self.verdict


def rollout(env: gymnasium.Env[Any, Any]) -> tuple[list[float], list[dict[str, Any]], bool, bool]:
    """Reset and step with action 0 until the episode ends.

    :param env: the env.
    :return: rewards, infos, the last ``terminated`` and ``truncated``.
    """
    env.reset(seed=0)
    rewards, infos = [], []
    while True:
        _, reward, terminated, truncated, info = env.step(0)
        rewards.append(reward)
        infos.append(info)
        if terminated or truncated:
            return rewards, infos, terminated, truncated


@pytest.mark.parametrize("verdict", [True, False])
def test_episode_ends_the_task_at_exactly_the_horizon_and_the_rule_judges_it(verdict: bool) -> None:
    rule = RecordingRule(verdict)
    inner = CountingEnv()
    env = SparseOutcomeWrapper(inner, horizon=5, success_rule=rule)
    assert env.horizon_ends_task is True
    rewards, infos, terminated, truncated = rollout(env)
    assert len(rewards) == 5
    assert (terminated, truncated) == (True, False)  # the outcome is final: the horizon is the end of the task
    assert rewards == [0.0, 0.0, 0.0, 0.0, float(verdict)]
    assert all(type(reward) is float for reward in rewards)
    assert all("is_success" not in info for info in infos[:-1])
    assert infos[-1]["is_success"] is verdict
    assert infos[-1]["outcome"] == float(verdict)
    assert infos[-1]["end_reason"] == "horizon"
    assert [info["dense_reward"] for info in infos] == [10.0] * 5
    assert [info["count"] for info in infos] == [1, 2, 3, 4, 5]  # the wrapped env's info is kept
    (final,) = rule.calls
    assert final.elapsed_steps == 5 and final.horizon == 5 and final.at_horizon
    assert not final.terminated and not final.truncated
    assert final.reward == 10.0 and final.info["count"] == 5
    assert float(final.observation[0]) == 5.0
    assert final.env is inner


@pytest.mark.parametrize(
    ("wrapper", "option", "flags"),
    [
        (SparseOutcomeWrapper, None, (True, False)),
        (SparseOutcomeWrapper, True, (True, False)),
        (SparseOutcomeWrapper, False, (False, True)),
        (OutcomeWrapper, None, (False, True)),
        (OutcomeWrapper, False, (False, True)),
        (OutcomeWrapper, True, (True, False)),
    ],
)
def test_horizon_ends_task_chooses_termination_or_truncation_and_nothing_else(
    wrapper: type[OutcomeWrapper[Any, Any]], option: bool | None, flags: tuple[bool, bool]
) -> None:
    env = wrapper(CountingEnv(), horizon=4, success_rule=RecordingRule(True), horizon_ends_task=option)
    rewards, infos, terminated, truncated = rollout(env)
    assert (terminated, truncated) == flags
    assert len(rewards) == 4 and infos[-1]["end_reason"] == "horizon" and infos[-1]["is_success"] is True
    assert rewards[-1] == (1.0 if wrapper is SparseOutcomeWrapper else 10.0)
    # an early termination is a termination either way, and no step before the last one ends anything
    early = wrapper(CountingEnv(terminate_at=2), horizon=4, success_rule=RecordingRule(True), horizon_ends_task=option)
    assert rollout(early)[2:] == (True, False)


def test_horizon_ends_task_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="horizon_ends_task must be a bool"):
        SparseOutcomeWrapper(CountingEnv(), horizon=4, success_rule=RecordingRule(True), horizon_ends_task=1)  # type: ignore[arg-type]


def test_early_termination_is_a_failure_without_asking_the_rule() -> None:
    rule = RecordingRule(True)
    env = SparseOutcomeWrapper(CountingEnv(terminate_at=3), horizon=10, success_rule=rule)
    rewards, infos, terminated, truncated = rollout(env)
    assert rewards == [0.0, 0.0, 0.0]
    assert (terminated, truncated) == (True, False)
    assert infos[-1]["is_success"] is False
    assert infos[-1]["end_reason"] == "terminated"
    assert rule.calls == []


@pytest.mark.parametrize("verdict", [True, False])
def test_success_on_termination_lets_the_rule_judge_the_terminal_state(verdict: bool) -> None:
    rule = RecordingRule(verdict)
    env = SparseOutcomeWrapper(CountingEnv(terminate_at=3), horizon=10, success_rule=rule, success_on_termination=True)
    rewards, infos, terminated, _ = rollout(env)
    assert rewards == [0.0, 0.0, float(verdict)]
    assert terminated and infos[-1]["is_success"] is verdict
    (final,) = rule.calls
    assert final.terminated and not final.at_horizon and final.elapsed_steps == 3


def test_termination_on_the_horizon_step_counts_as_termination() -> None:
    rule = RecordingRule(True)
    env = SparseOutcomeWrapper(CountingEnv(terminate_at=4), horizon=4, success_rule=rule)
    rewards, infos, terminated, truncated = rollout(env)
    assert (terminated, truncated) == (True, False)
    assert rewards[-1] == 0.0 and infos[-1]["end_reason"] == "terminated"
    assert rule.calls == []


def test_inner_truncation_before_the_horizon_ends_the_episode_as_a_failure() -> None:
    rule = RecordingRule(True)
    env = SparseOutcomeWrapper(CountingEnv(truncate_at=2), horizon=10, success_rule=rule)
    rewards, infos, terminated, truncated = rollout(env)
    assert rewards == [0.0, 0.0]
    assert (terminated, truncated) == (False, True)
    assert infos[-1]["is_success"] is False and infos[-1]["end_reason"] == "truncated"
    assert rule.calls == []


def test_the_dense_wrapper_keeps_the_reward_and_reports_the_outcome() -> None:
    env = OutcomeWrapper(CountingEnv(), horizon=3, success_rule=RecordingRule(True))
    rewards, infos, _, truncated = rollout(env)
    assert rewards == [10.0, 10.0, 10.0]
    assert truncated and infos[-1]["is_success"] is True
    assert "is_success" not in infos[0]


def test_the_wrapped_envs_own_is_success_is_replaced_by_the_verdict() -> None:
    rule = RecordingRule(False)
    env = SparseOutcomeWrapper(CountingEnv(report_success=True), horizon=3, success_rule=rule)
    rewards, infos, _, _ = rollout(env)
    assert all("is_success" not in info for info in infos[:-1])
    assert infos[-1]["is_success"] is False and rewards[-1] == 0.0
    assert rule.calls[0].info["is_success"] is True  # the rule sees the wrapped env's own info


def test_numpy_verdicts_become_python_bools() -> None:
    env = SparseOutcomeWrapper(CountingEnv(), horizon=2, success_rule=RecordingRule(np.bool_(True)))
    rewards, infos, _, _ = rollout(env)
    assert infos[-1]["is_success"] is True and rewards[-1] == 1.0


def test_step_after_the_end_or_before_reset_raises_and_reset_restarts() -> None:
    env = SparseOutcomeWrapper(CountingEnv(), horizon=2, success_rule=RecordingRule(True))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    rollout(env)
    assert env.elapsed_steps == 2
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    rewards, _, _, _ = rollout(env)
    assert rewards == [0.0, 1.0]


def test_reset_passes_seed_and_options_through() -> None:
    env = SparseOutcomeWrapper(CountingEnv(), horizon=2, success_rule=RecordingRule(True))
    observation, info = env.reset(seed=3, options={"unused": 1})
    assert info == {"reset": True} and float(observation[0]) == 0.0


@pytest.mark.parametrize("horizon", [0, -3])
def test_horizon_below_one_is_refused(horizon: int) -> None:
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        SparseOutcomeWrapper(CountingEnv(), horizon=horizon, success_rule=RecordingRule())


@pytest.mark.parametrize("horizon", [2.5, "10", True, None])
def test_horizon_that_is_not_an_integer_is_refused(horizon: Any) -> None:
    with pytest.raises(TypeError, match="horizon must be an integer"):
        SparseOutcomeWrapper(CountingEnv(), horizon=horizon, success_rule=RecordingRule())


def test_numpy_integer_horizon_is_accepted() -> None:
    env = SparseOutcomeWrapper(CountingEnv(), horizon=np.int64(3), success_rule=RecordingRule())
    assert env.horizon == 3 and type(env.horizon) is int


def test_a_rule_that_is_not_callable_is_refused() -> None:
    with pytest.raises(TypeError, match="success_rule must be callable"):
        SparseOutcomeWrapper(CountingEnv(), horizon=3, success_rule=0.5)  # type: ignore[arg-type]


def test_a_shorter_inner_time_limit_is_refused_a_longer_one_is_fine() -> None:
    with pytest.raises(ValueError, match="TimeLimit of 50 steps"):
        SparseOutcomeWrapper(gymnasium.make("CartPole-v1", max_episode_steps=50), 200, RecordingRule())
    env = SparseOutcomeWrapper(gymnasium.make("MountainCar-v0", max_episode_steps=10), 10, RecordingRule())
    rewards, infos, _, _ = rollout(env)
    assert len(rewards) == 10 and infos[-1]["end_reason"] == "horizon"


def test_find_outcome_wrapper_through_gymnasium_wrappers() -> None:
    wrapper = SparseOutcomeWrapper(CountingEnv(), horizon=3, success_rule=RecordingRule())
    outer = gymnasium.wrappers.RecordEpisodeStatistics(wrapper)
    assert find_outcome_wrapper(outer) is wrapper
    assert find_outcome_wrapper(CountingEnv()) is None
    assert outer.get_wrapper_attr("horizon") == 3


def test_shaped_reward_sees_the_transition_and_keeps_the_base_reward() -> None:
    seen: list[Transition[Any, Any]] = []

    def shaping(transition: Transition[Any, Any]) -> float:
        seen.append(transition)
        return float(transition.observation[0] - transition.previous_observation[0]) + transition.reward

    env = ShapedReward(CountingEnv(terminate_at=3), shaping)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    rewards, infos, terminated, _ = rollout(env)
    assert rewards == [11.0, 11.0, 11.0] and terminated
    assert [info["base_reward"] for info in infos] == [10.0, 10.0, 10.0]
    assert [float(t.previous_observation[0]) for t in seen] == [0.0, 1.0, 2.0]
    assert [t.terminated for t in seen] == [False, False, True]
    with pytest.raises(TypeError, match="shaping must be callable"):
        ShapedReward(CountingEnv(), "not a function")  # type: ignore[arg-type]


def _transition(previous: list[float], observation: list[float], reward: float) -> Transition[Any, Any]:
    return Transition(np.array(previous), 0, np.array(observation), reward, False, CountingEnv())


def test_cartpole_precision_shaping_pays_one_upright_and_zero_at_twelve_degrees() -> None:
    shaping = CartPolePrecisionShaping()
    assert shaping(_transition([0, 0, 0, 0], [0, 0, 0.0, 0], 1.0)) == pytest.approx(1.0)
    assert shaping(_transition([0, 0, 0, 0], [0, 0, -math.radians(12), 0], 1.0)) == pytest.approx(0.0)
    assert shaping(_transition([0, 0, 0, 0], [0, 0, math.radians(6), 0], 1.0)) == pytest.approx(0.5)


def test_mountain_car_energy_potential_is_zero_in_the_valley_and_one_at_the_flag() -> None:
    shaping = MountainCarEnergyShaping()
    assert shaping.potential(-math.pi / 6, 0.0) == pytest.approx(0.0, abs=1e-12)
    assert shaping.potential(0.45, 0.0) == pytest.approx(1.0)
    # pushing energy in pays; the bonus is a difference of potentials
    gain = shaping(_transition([-0.5, 0.0], [-0.49, 0.01], -1.0))
    expected = -1.0 + 100 * (shaping.potential(-0.49, 0.01) - shaping.potential(-0.5, 0.0))
    assert gain == pytest.approx(expected) and gain > -1.0
    assert mountain_car_energy(0.0, 0.07) == pytest.approx(0.5 * 0.07**2)


def test_mountain_car_energy_bonus_telescopes_over_an_episode() -> None:
    dense = gymnasium.make("DenseMountainCar-v0", horizon=60)
    dense.reset(seed=4)
    shaped_return, base_return = 0.0, 0.0
    observations = []
    for step in range(60):
        observation, reward, _, _, info = dense.step(2 if step % 20 < 10 else 0)
        observations.append(observation)
        shaped_return += reward
        base_return += info["base_reward"]
    shaping = MountainCarEnergyShaping()
    first = gymnasium.make("SparseMountainCar-v0").reset(seed=4)[0]
    potential_gain = shaping.potential(*map(float, observations[-1])) - shaping.potential(*map(float, first))
    assert shaped_return == pytest.approx(base_return + 100 * potential_gain, rel=1e-6, abs=1e-6)


def test_pendulum_upright_bonus_only_in_the_success_region() -> None:
    shaping = PendulumUprightShaping()
    assert shaping(_transition([1, 0, 0], [0.9, 0.43, 0], -1.0)) == pytest.approx(0.0)
    assert shaping(_transition([1, 0, 0], [0.7, 0.71, 0], -1.0)) == pytest.approx(-1.0)


@pytest.mark.parametrize(
    ("factory", "kwargs", "message"),
    [
        (CartPoleUpright, {"max_angle_deg": -1.0}, "max_angle_deg must be > 0"),
        (CartPoleUpright, {"max_angle_deg": math.nan}, "max_angle_deg must be a finite number"),
        (PendulumUpright, {"min_cos": 1.5}, r"min_cos must lie in \[-1, 1\)"),
        (CartPolePrecisionShaping, {"angle_scale_deg": 0.0}, "angle_scale_deg must be a finite number > 0"),
        (MountainCarEnergyShaping, {"scale": -1.0}, "scale must be a finite number >= 0"),
        (PendulumUprightShaping, {"min_cos": -2.0}, r"min_cos must lie in \[-1, 1\)"),
    ],
)
def test_bad_thresholds_are_refused(factory: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)
