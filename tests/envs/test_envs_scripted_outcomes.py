"""Each success rule against scripted behaviour: a controller that succeeds gets 1, one that fails gets 0."""

from __future__ import annotations

import math
from typing import Any

import gymnasium
import numpy as np
import pytest
from sppo_rl.envs import FinalStep, HopperForward, LunarLanderLanded, find_outcome_wrapper

# ----------------------------------------------------------------------------------------------------------
# Precision CartPole
# ----------------------------------------------------------------------------------------------------------


def cartpole_pd(observation: Any, env: gymnasium.Env[Any, Any]) -> int:
    """A linear state-feedback rule (bang-bang): holds the pole within a few tenths of a degree."""
    x, x_dot, theta, theta_dot = observation
    return int(0.1 * x + 0.2 * x_dot + theta + 0.3 * theta_dot > 0)


def cartpole_deadband() -> Any:
    """Balances, but only corrects when the pole is off by a lot: survives, imprecise at the end."""
    steps = {"n": 0}

    def policy(observation: Any, env: gymnasium.Env[Any, Any]) -> int:
        x, x_dot, theta, theta_dot = observation
        steps["n"] += 1
        signal = 0.1 * x + 0.2 * x_dot + theta + 0.3 * theta_dot
        return int(signal > 0) if abs(signal) > 0.08 else steps["n"] % 2

    return policy


@pytest.mark.parametrize("env_id", ["SparsePrecisionCartPole-v0", "DensePrecisionCartPole-v0"])
def test_cartpole_precise_controller_succeeds(env_id: str, episode_runner, at_horizon) -> None:
    env = gymnasium.make(env_id)
    for seed in range(3):
        episode = episode_runner(env, cartpole_pd, seed)
        assert episode.length == 200 and episode.flags == at_horizon(env_id)
        assert abs(float(episode.observations[-1][2])) <= math.radians(0.5)
        assert episode.final_info["is_success"] is True
        if env_id.startswith("Sparse"):
            assert episode.rewards == [0.0] * 199 + [1.0]


def test_cartpole_falling_pole_is_an_early_failure(episode_runner) -> None:
    episode = episode_runner(gymnasium.make("SparsePrecisionCartPole-v0"), lambda observation, env: 1, seed=0)
    assert episode.terminated and not episode.truncated
    assert episode.length < 200
    assert episode.rewards == [0.0] * episode.length
    assert episode.final_info["is_success"] is False and episode.final_info["end_reason"] == "terminated"


def test_cartpole_pole_up_but_not_precise_is_a_failure(episode_runner) -> None:
    episode = episode_runner(gymnasium.make("SparsePrecisionCartPole-v0"), cartpole_deadband(), seed=0)
    assert episode.length == 200 and episode.flags == (True, False)  # the horizon ends the task
    assert episode.final_info["end_reason"] == "horizon"  # not a fall: the base env did not terminate
    assert abs(float(episode.observations[-1][2])) > math.radians(0.5)
    assert episode.rewards[-1] == 0.0 and episode.final_info["is_success"] is False


def test_cartpole_threshold_override_changes_the_verdict(episode_runner) -> None:
    strict = gymnasium.make("SparsePrecisionCartPole-v0", max_angle_deg=1e-4)
    assert episode_runner(strict, cartpole_pd, seed=0).final_info["is_success"] is False
    loose = gymnasium.make("SparsePrecisionCartPole-v0", max_angle_deg=10.0)
    assert episode_runner(loose, cartpole_deadband(), seed=0).final_info["is_success"] is True


# ----------------------------------------------------------------------------------------------------------
# MountainCar
# ----------------------------------------------------------------------------------------------------------


def mountain_car_pump(observation: Any, env: gymnasium.Env[Any, Any]) -> Any:
    """Energy pumping: push in the direction of the velocity."""
    push = 1.0 if observation[1] >= 0 else -1.0
    if isinstance(env.action_space, gymnasium.spaces.Discrete):
        return 2 if push > 0 else 0
    return np.array([push], dtype=np.float32)


def mountain_car_idle(observation: Any, env: gymnasium.Env[Any, Any]) -> Any:
    """No force at all: the car never leaves the valley."""
    if isinstance(env.action_space, gymnasium.spaces.Discrete):
        return 1
    return np.zeros(1, dtype=np.float32)


CAR_IDS = [
    "SparseMountainCar-v0",
    "SparseMountainCarContinuous-v0",
    "DenseMountainCar-v0",
    "DenseMountainCarContinuous-v0",
]


@pytest.mark.parametrize("env_id", CAR_IDS)
def test_mountain_car_energy_pumping_reaches_the_flag(env_id: str, episode_runner) -> None:
    env = gymnasium.make(env_id)
    assert env.unwrapped.goal_position == 0.45
    episode = episode_runner(env, mountain_car_pump, seed=0)
    assert episode.terminated and episode.length < 1000
    assert float(episode.observations[-1][0]) >= np.float32(0.45)
    assert episode.final_info["is_success"] is True and episode.final_info["end_reason"] == "terminated"
    if env_id.startswith("Sparse"):
        assert episode.rewards == [0.0] * (episode.length - 1) + [1.0]


@pytest.mark.parametrize("env_id", CAR_IDS[:2])
def test_mountain_car_idle_fails_at_the_horizon(env_id: str, episode_runner, at_horizon) -> None:
    episode = episode_runner(gymnasium.make(env_id), mountain_car_idle, seed=0)
    assert episode.length == 1000 and episode.flags == at_horizon(env_id)
    assert episode.rewards == [0.0] * 1000 and episode.final_info["is_success"] is False


def test_mountain_car_goal_override_moves_the_flag(episode_runner) -> None:
    env = gymnasium.make("SparseMountainCar-v0", goal_position=0.0)
    episode = episode_runner(env, mountain_car_pump, seed=0)
    assert episode.final_info["is_success"] is True
    assert 0.0 <= float(episode.observations[-1][0]) < 0.45


# ----------------------------------------------------------------------------------------------------------
# Pendulum
# ----------------------------------------------------------------------------------------------------------


def pendulum_swing_up(observation: Any, env: gymnasium.Env[Any, Any]) -> np.ndarray:
    """Energy pumping until the pendulum is near the top, then a PD rule that balances it."""
    cos_theta, sin_theta, theta_dot = (float(value) for value in observation)
    if cos_theta > 0.85:
        torque = -(12.0 * math.atan2(sin_theta, cos_theta) + 2.5 * theta_dot)
    else:
        energy = 0.5 * theta_dot**2 + 15.0 * cos_theta  # 15 = 3 g / (2 l); 15 at rest upright
        torque = 2.0 * (1.0 if theta_dot >= 0 else -1.0) if energy < 15.0 else 0.0
    return np.array([np.clip(torque, -2.0, 2.0)], dtype=np.float32)


def pendulum_damper(observation: Any, env: gymnasium.Env[Any, Any]) -> np.ndarray:
    """Brakes the swing: settles hanging down."""
    return np.array([np.clip(-2.0 * float(observation[2]), -2.0, 2.0)], dtype=np.float32)


@pytest.mark.parametrize("env_id", ["SparsePendulum-v0", "DensePendulum-v0"])
def test_pendulum_swing_up_and_balance_succeeds(env_id: str, episode_runner, at_horizon) -> None:
    env = gymnasium.make(env_id)
    for seed in range(2):
        episode = episode_runner(env, pendulum_swing_up, seed)
        assert episode.length == 1000 and episode.flags == at_horizon(env_id)
        assert float(episode.observations[-1][0]) > 0.8
        assert episode.final_info["is_success"] is True
        if env_id.startswith("Sparse"):
            assert sum(episode.rewards) == 1.0 and episode.rewards[-1] == 1.0


def test_pendulum_hanging_down_fails(episode_runner) -> None:
    episode = episode_runner(gymnasium.make("SparsePendulum-v0"), pendulum_damper, seed=0)
    assert episode.length == 1000 and float(episode.observations[-1][0]) < 0.8
    assert episode.rewards == [0.0] * 1000 and episode.final_info["is_success"] is False


# ----------------------------------------------------------------------------------------------------------
# LunarLander
# ----------------------------------------------------------------------------------------------------------

LANDER_IDS = ["SparseLunarLander-v0", "SparseLunarLanderContinuous-v0", "DenseLunarLander-v0"]


def lander_heuristic(observation: Any, env: gymnasium.Env[Any, Any]) -> Any:
    """gymnasium's own scripted lander."""
    from gymnasium.envs.box2d.lunar_lander import heuristic

    return heuristic(env, observation)


def lander_idle(observation: Any, env: gymnasium.Env[Any, Any]) -> Any:
    """Engines off: free fall."""
    if isinstance(env.action_space, gymnasium.spaces.Discrete):
        return 0
    return np.zeros(2, dtype=np.float32)


@pytest.mark.parametrize("env_id", LANDER_IDS)
def test_lander_heuristic_lands_at_rest_on_the_pad(env_id: str, episode_runner, needs_dynamics) -> None:
    needs_dynamics(env_id)
    env = gymnasium.make(env_id)
    episode = episode_runner(env, lander_heuristic, seed=1)
    assert episode.terminated and episode.length < 1000
    assert not env.unwrapped.lander.awake and not env.unwrapped.game_over
    assert abs(float(episode.observations[-1][0])) < 0.4
    assert episode.final_info["is_success"] is True
    if env_id.startswith("Sparse"):
        assert episode.rewards == [0.0] * (episode.length - 1) + [1.0]


def test_lander_resting_legs_count_even_when_gymnasium_flags_miss_them(episode_runner, needs_dynamics) -> None:
    needs_dynamics("SparseLunarLander-v0")
    # With seed 0 the heuristic lander comes to rest on the pad with both legs on the ground, while
    # gymnasium's leg-contact flags (observation 6 and 7) read 0: the rule reads Box2D's contacts.
    episode = episode_runner(gymnasium.make("SparseLunarLander-v0"), lander_heuristic, seed=0)
    assert episode.terminated and episode.final_info["is_success"] is True


@pytest.mark.parametrize("env_id", LANDER_IDS)
def test_lander_free_fall_crashes_early_and_fails(env_id: str, episode_runner, needs_dynamics) -> None:
    needs_dynamics(env_id)
    env = gymnasium.make(env_id)
    episode = episode_runner(env, lander_idle, seed=0)
    assert episode.terminated and episode.length < 1000 and env.unwrapped.game_over
    assert episode.final_info["is_success"] is False
    if env_id.startswith("Sparse"):
        assert episode.rewards == [0.0] * episode.length


def test_lander_still_flying_at_the_horizon_fails(episode_runner, needs_dynamics) -> None:
    needs_dynamics("SparseLunarLander-v0")
    episode = episode_runner(gymnasium.make("SparseLunarLander-v0", horizon=50), lander_heuristic, seed=1)
    assert episode.length == 50 and episode.flags == (True, False)
    assert episode.final_info["end_reason"] == "horizon" and episode.final_info["is_success"] is False


def test_lander_rule_on_constructed_final_states(episode_runner, needs_dynamics) -> None:
    needs_dynamics("SparseLunarLander-v0")
    env = gymnasium.make("SparseLunarLander-v0")
    episode = episode_runner(env, lander_heuristic, seed=1)
    rule = LunarLanderLanded()
    landed = np.asarray(episode.observations[-1], dtype=np.float32)

    def judge(observation: np.ndarray, terminated: bool = False) -> bool:
        final = FinalStep(observation, 0.0, terminated, False, {}, 1000, 1000, env)
        return rule(final)

    assert judge(landed, terminated=True)
    lander = env.unwrapped.lander
    lander.awake = True  # judged at the horizon instead: "nearly at rest" from the observation
    assert judge(landed)
    moving = landed.copy()
    moving[2] = 0.2
    assert not judge(moving)
    spinning = landed.copy()
    spinning[5] = 0.2
    assert not judge(spinning)
    off_pad = landed.copy()
    off_pad[0] = 0.5
    assert not judge(off_pad)
    env.unwrapped.game_over = True
    assert not judge(landed)


def test_lander_rule_requires_leg_contact(needs_dynamics) -> None:
    needs_dynamics("SparseLunarLander-v0")
    env = gymnasium.make("SparseLunarLander-v0")
    observation, _ = env.reset(seed=0)  # high above the pad, legs in the air
    hovering = np.asarray(observation).copy()
    hovering[0], hovering[2:6] = 0.0, 0.0
    final = FinalStep(hovering, 0.0, False, False, {}, 1000, 1000, env)
    assert not LunarLanderLanded()(final)
    hovering[6:8] = 1.0  # flags alone are enough (the observation is trusted when it reports contact)
    assert LunarLanderLanded()(FinalStep(hovering, 0.0, False, False, {}, 1000, 1000, env))


# ----------------------------------------------------------------------------------------------------------
# Hopper
# ----------------------------------------------------------------------------------------------------------


def _hopper_final(env: gymnasium.Env[Any, Any], x: float, z: float | None = None, terminated: bool = False) -> bool:
    """Put the hopper's torso at ``x`` (and height ``z``) and judge that state with the suite's rule."""
    hopper = env.unwrapped
    qpos, qvel = hopper.data.qpos.copy(), hopper.data.qvel.copy()
    qpos[0] = x
    if z is not None:
        qpos[1] = z
    hopper.set_state(qpos, qvel)
    final = FinalStep(hopper._get_obs(), 0.0, terminated, False, {}, 1000, 1000, env)
    return HopperForward()(final)


def test_hopper_rule_on_constructed_final_states(needs_dynamics) -> None:
    needs_dynamics("SparseHopper-v0")
    env = gymnasium.make("SparseHopper-v0")
    env.reset(seed=0)
    assert _hopper_final(env, x=1.5)
    assert not _hopper_final(env, x=0.5)
    assert not _hopper_final(env, x=1.0)  # strictly beyond 1 m
    assert not _hopper_final(env, x=1.5, terminated=True)
    assert not _hopper_final(env, x=1.5, z=0.5)  # fallen: unhealthy height


@pytest.mark.parametrize("env_id", ["SparseHopper-v0", "DenseHopper-v0"])
def test_hopper_moved_forward_before_the_last_step_succeeds_at_the_horizon(
    env_id: str, needs_dynamics, at_horizon
) -> None:
    needs_dynamics(env_id)
    env = gymnasium.make(env_id, horizon=3)
    env.reset(seed=0)
    zero = np.zeros(3, dtype=np.float32)
    for _ in range(2):
        _, reward, terminated, truncated, _ = env.step(zero)
        assert (terminated, truncated) == (False, False)
        if env_id.startswith("Sparse"):
            assert reward == 0.0
    hopper = env.unwrapped
    qpos, qvel = hopper.data.qpos.copy(), hopper.data.qvel.copy()
    qpos[0] += 2.0
    hopper.set_state(qpos, qvel)
    _, reward, terminated, truncated, info = env.step(zero)
    assert (terminated, truncated) == at_horizon(env_id) and info["end_reason"] == "horizon"
    assert info["x_position"] > 1.0 and info["is_success"] is True
    if env_id.startswith("Sparse"):
        assert reward == 1.0


def test_hopper_without_progress_fails_at_the_horizon(needs_dynamics, episode_runner) -> None:
    needs_dynamics("SparseHopper-v0")
    env = gymnasium.make("SparseHopper-v0", horizon=5)
    episode = episode_runner(env, lambda observation, env: np.zeros(3, dtype=np.float32), seed=0)
    assert episode.length == 5 and episode.flags == (True, False) and episode.final_info["is_success"] is False


def test_hopper_fall_is_an_early_failure(needs_dynamics, episode_runner) -> None:
    needs_dynamics("SparseHopper-v0")
    env = gymnasium.make("SparseHopper-v0")
    assert find_outcome_wrapper(env).horizon == 1000
    episode = episode_runner(env, lambda observation, env: np.ones(3, dtype=np.float32), seed=0)
    assert episode.terminated and episode.length < 1000
    assert episode.rewards == [0.0] * episode.length and episode.final_info["is_success"] is False
