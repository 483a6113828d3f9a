"""Constructors of the suite's environments: one function per task, used as gymnasium entry points.

Every constructor builds gymnasium's own environment for the dynamics *without* its ``TimeLimit``
(``max_episode_steps=-1``), so the horizon is exactly the ``horizon`` argument, owned by the outcome wrapper;
``dense=False`` gives the sparse task (:class:`~sppo_rl.envs.outcome.SparseOutcomeWrapper`), ``dense=True``
its dense counterpart (same dynamics, horizon and success rule; a shaped reward and
:class:`~sppo_rl.envs.outcome.OutcomeWrapper`). Horizons and thresholds are keyword arguments, so
``gymnasium.make("SparsePendulum-v0", horizon=500, min_cos=0.9)`` works; other keyword arguments go to the
base env's constructor (e.g. ``enable_wind=True`` for LunarLander).
"""

from __future__ import annotations

from typing import Any

import gymnasium

from .dense import (
    CartPolePrecisionShaping,
    MountainCarEnergyShaping,
    PendulumUprightShaping,
    RewardShaping,
    ShapedReward,
)
from .outcome import OutcomeWrapper, SparseOutcomeWrapper, SuccessRule
from .rules import CartPoleUpright, HopperForward, LunarLanderLanded, MountainCarAtFlag, PendulumUpright


def make_base_env(base_id: str, render_mode: str | None = None, **base_kwargs: Any) -> gymnasium.Env[Any, Any]:
    """Build a gymnasium env without its registered ``TimeLimit`` and without the passive env checker.

    :param base_id: a gymnasium id, e.g. ``"CartPole-v1"``.
    :param render_mode: the render mode, or ``None``.
    :param base_kwargs: keyword arguments of the env's constructor.
    :return: the env (wrapped only in gymnasium's ``OrderEnforcing``).
    """
    return gymnasium.make(
        base_id, max_episode_steps=-1, disable_env_checker=True, render_mode=render_mode, **base_kwargs
    )


def wrap_outcome(
    env: gymnasium.Env[Any, Any],
    *,
    horizon: int,
    success_rule: SuccessRule,
    dense: bool,
    shaping: RewardShaping | None = None,
    success_on_termination: bool = False,
) -> gymnasium.Env[Any, Any]:
    """Wrap a base env into the sparse task, or into its dense counterpart.

    :param env: the base env (no ``TimeLimit`` shorter than ``horizon``).
    :param horizon: the horizon ``H``.
    :param success_rule: the verifier.
    :param dense: ``False`` for the sparse task, ``True`` for the dense counterpart.
    :param shaping: the dense reward's shaping; ``None`` keeps the base env's reward. Ignored when sparse.
    :param success_on_termination: let the rule judge an early termination (see
        :class:`~sppo_rl.envs.outcome.OutcomeWrapper`).
    :return: the wrapped env.
    """
    if not dense:
        return SparseOutcomeWrapper(env, horizon, success_rule, success_on_termination=success_on_termination)
    if shaping is not None:
        env = ShapedReward(env, shaping)
    return OutcomeWrapper(env, horizon, success_rule, success_on_termination=success_on_termination)


def make_precision_cartpole(
    *,
    horizon: int = 200,
    max_angle_deg: float = 0.5,
    dense: bool = False,
    render_mode: str | None = None,
    **base_kwargs: Any,
) -> gymnasium.Env[Any, Any]:
    """Precision CartPole (``CartPole-v1`` dynamics): the pole must be up and within ``max_angle_deg`` at step ``H``.

    Early termination (``|theta| > 12`` degrees or ``|x| > 2.4``) is a failure. Dense reward:
    :class:`~sppo_rl.envs.dense.CartPolePrecisionShaping`.

    :param horizon: the horizon ``H``.
    :param max_angle_deg: the largest final ``|theta|``, in degrees.
    :param dense: build the dense counterpart instead of the sparse task.
    :param render_mode: the render mode of the base env.
    :param base_kwargs: passed to gymnasium's ``CartPoleEnv``.
    :return: the env.
    """
    rule = CartPoleUpright(max_angle_deg=max_angle_deg)
    env = make_base_env("CartPole-v1", render_mode=render_mode, **base_kwargs)
    return wrap_outcome(env, horizon=horizon, success_rule=rule, dense=dense, shaping=CartPolePrecisionShaping())


def make_mountain_car(
    *,
    horizon: int = 1000,
    goal_position: float = 0.45,
    continuous: bool = False,
    dense: bool = False,
    render_mode: str | None = None,
    **base_kwargs: Any,
) -> gymnasium.Env[Any, Any]:
    """MountainCar (``MountainCar-v0`` or ``MountainCarContinuous-v0`` dynamics): reach the flag at ``goal_position``.

    The base env's own goal is moved to ``goal_position`` (gymnasium's discrete car stops at 0.5 otherwise),
    so reaching it terminates the episode, and that termination is a success. Dense reward:
    :class:`~sppo_rl.envs.dense.MountainCarEnergyShaping`.

    :param horizon: the horizon ``H``.
    :param goal_position: the flag's position.
    :param continuous: use the continuous-action car.
    :param dense: build the dense counterpart instead of the sparse task.
    :param render_mode: the render mode of the base env.
    :param base_kwargs: passed to gymnasium's MountainCar env (e.g. ``goal_velocity``).
    :return: the env.
    """
    rule = MountainCarAtFlag(goal_position=goal_position)
    base_id = "MountainCarContinuous-v0" if continuous else "MountainCar-v0"
    env = make_base_env(base_id, render_mode=render_mode, **base_kwargs)
    env.unwrapped.goal_position = goal_position  # type: ignore[attr-defined]
    return wrap_outcome(
        env,
        horizon=horizon,
        success_rule=rule,
        dense=dense,
        shaping=MountainCarEnergyShaping(goal_position=goal_position),
        success_on_termination=True,
    )


def make_hopper(
    *, horizon: int = 1000, min_x: float = 1.0, dense: bool = False, render_mode: str | None = None, **base_kwargs: Any
) -> gymnasium.Env[Any, Any]:
    """Hopper (MuJoCo ``Hopper-v5`` dynamics): survive the whole horizon and end beyond ``min_x`` metres.

    Falling (gymnasium's unhealthy termination) is a failure. Dense reward: Hopper-v5's own (forward velocity
    + healthy bonus - control cost).

    :param horizon: the horizon ``H``.
    :param min_x: the smallest final torso x position, in metres.
    :param dense: build the dense counterpart instead of the sparse task.
    :param render_mode: the render mode of the base env.
    :param base_kwargs: passed to gymnasium's ``HopperEnv`` (v5).
    :return: the env.
    """
    rule = HopperForward(min_x=min_x)
    env = make_base_env("Hopper-v5", render_mode=render_mode, **base_kwargs)
    return wrap_outcome(env, horizon=horizon, success_rule=rule, dense=dense)


def make_lunar_lander(
    *,
    horizon: int = 1000,
    pad_half_width: float = 0.4,
    max_speed: float = 0.05,
    max_angular_speed: float = 0.05,
    continuous: bool = False,
    dense: bool = False,
    render_mode: str | None = None,
    **base_kwargs: Any,
) -> gymnasium.Env[Any, Any]:
    """LunarLander (``LunarLander-v3`` dynamics): land at rest on both legs inside the pad.

    The episode ends when the lander comes to rest (success if on both legs inside ``|x| < pad_half_width``),
    crashes or leaves the screen (failure), or at the horizon (success if on both legs in the pad and nearly
    at rest); see :class:`~sppo_rl.envs.rules.LunarLanderLanded`. Dense reward: LunarLander's own shaping.

    :param horizon: the horizon ``H``.
    :param pad_half_width: half the width of the accepted landing zone, in observation units.
    :param max_speed: the largest linear speed counted as at rest at the horizon (observation units).
    :param max_angular_speed: the largest angular velocity counted as at rest at the horizon.
    :param continuous: use the continuous-action lander.
    :param dense: build the dense counterpart instead of the sparse task.
    :param render_mode: the render mode of the base env.
    :param base_kwargs: passed to gymnasium's ``LunarLander`` (e.g. ``enable_wind``, ``gravity``).
    :return: the env.
    """
    rule = LunarLanderLanded(pad_half_width=pad_half_width, max_speed=max_speed, max_angular_speed=max_angular_speed)
    env = make_base_env("LunarLander-v3", render_mode=render_mode, continuous=continuous, **base_kwargs)
    return wrap_outcome(env, horizon=horizon, success_rule=rule, dense=dense, success_on_termination=True)


def make_pendulum(
    *,
    horizon: int = 1000,
    min_cos: float = 0.8,
    dense: bool = False,
    render_mode: str | None = None,
    **base_kwargs: Any,
) -> gymnasium.Env[Any, Any]:
    """Pendulum (``Pendulum-v1`` dynamics): swing up and be upright, ``cos(theta) > min_cos``, at step ``H``.

    Dense reward: :class:`~sppo_rl.envs.dense.PendulumUprightShaping`.

    :param horizon: the horizon ``H``.
    :param min_cos: the smallest final ``cos(theta)``.
    :param dense: build the dense counterpart instead of the sparse task.
    :param render_mode: the render mode of the base env.
    :param base_kwargs: passed to gymnasium's ``PendulumEnv`` (e.g. ``g``).
    :return: the env.
    """
    rule = PendulumUpright(min_cos=min_cos)
    env = make_base_env("Pendulum-v1", render_mode=render_mode, **base_kwargs)
    return wrap_outcome(
        env, horizon=horizon, success_rule=rule, dense=dense, shaping=PendulumUprightShaping(min_cos=min_cos)
    )
