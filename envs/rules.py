"""The success rules (verifiers) of the control suite.

Each rule is a frozen dataclass: its fields are the thresholds, calling it on the
:class:`~sppo_rl.envs.outcome.FinalStep` of an episode returns the outcome, and :attr:`description` says in
words what it checks. The defaults are the thresholds of the paper (arXiv 2604.08865, "Control suite").
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .outcome import FinalStep


def _require_finite(name: str, value: float, *, positive: bool = False) -> None:
    """Raise a clear error for a threshold that is not a finite (positive) number.

    :param name: the parameter's name, for the message.
    :param value: the value to check.
    :param positive: also require ``value > 0``.
    :raises ValueError: if the value is not finite, or not positive when required.
    """
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class CartPoleUpright:
    """Precision CartPole: the pole is still up at the horizon and almost exactly upright.

    Success iff the episode was not terminated (gymnasium's CartPole terminates when ``|theta| > 12`` degrees
    or ``|x| > 2.4``) and the final pole angle (observation index 2) satisfies ``|theta| <= max_angle_deg``.

    :param max_angle_deg: the largest final ``|theta|``, in degrees.
    """

    max_angle_deg: float = 0.5

    def __post_init__(self) -> None:
        """Validate the threshold."""
        _require_finite("max_angle_deg", self.max_angle_deg, positive=True)

    @property
    def description(self) -> str:
        """The rule in words."""
        return f"pole still up at the horizon (no early termination) with final abs(theta) <= {self.max_angle_deg} deg"

    def __call__(self, final: FinalStep[Any], /) -> bool:
        """Judge the last step.

        :param final: the last step of the episode.
        :return: success.
        """
        theta = float(np.asarray(final.observation)[2])
        return (not final.terminated) and abs(theta) <= math.radians(self.max_angle_deg)


@dataclasses.dataclass(frozen=True)
class MountainCarAtFlag:
    """MountainCar: the car reaches the flag, ``x >= goal_position``.

    The suite sets the base env's own goal to the same position, so reaching it terminates the episode
    (``success_on_termination``). The position is compared in float32, the observation's precision.

    :param goal_position: the flag's position.
    """

    goal_position: float = 0.45

    def __post_init__(self) -> None:
        """Validate the threshold."""
        _require_finite("goal_position", self.goal_position)

    @property
    def description(self) -> str:
        """The rule in words."""
        return f"reaches the flag: position x >= {self.goal_position} (the episode terminates there)"

    def __call__(self, final: FinalStep[Any], /) -> bool:
        """Judge the last step.

        :param final: the last step of the episode.
        :return: success.
        """
        position = np.float32(np.asarray(final.observation)[0])
        return bool(position >= np.float32(self.goal_position))


@dataclasses.dataclass(frozen=True)
class HopperForward:
    """Hopper: survives the whole horizon with forward progress.

    Success iff the episode was not terminated (Hopper terminates when it becomes unhealthy, i.e. falls),
    the final state is healthy, and the torso's x position (``data.qpos[0]``, not in the observation by
    default) is greater than ``min_x``.

    :param min_x: the smallest final x position, in metres (the hopper starts near x = 0).
    """

    min_x: float = 1.0

    def __post_init__(self) -> None:
        """Validate the threshold."""
        _require_finite("min_x", self.min_x)

    @property
    def description(self) -> str:
        """The rule in words."""
        return f"survives the whole horizon (never unhealthy) with final torso x > {self.min_x} m"

    def __call__(self, final: FinalStep[Any], /) -> bool:
        """Judge the last step.

        :param final: the last step of the episode.
        :return: success.
        """
        hopper = final.env.unwrapped
        x_position = float(hopper.data.qpos[0])  # type: ignore[attr-defined]
        healthy = bool(hopper.is_healthy)  # type: ignore[attr-defined]
        return (not final.terminated) and healthy and x_position > self.min_x


def _leg_touches_ground(lander_env: Any, leg: int) -> bool:
    """Whether a LunarLander leg touches the ground, read from the Box2D world's contacts.

    The observation's leg flags (indices 6 and 7) are set and cleared by gymnasium's contact listener on
    each begin/end event with one terrain edge; when a leg slides from one edge of the ground onto the next,
    the end event of the first edge clears the flag although the leg still touches the second one, so a
    lander resting on both legs can read ``0, 0``. The world's contact list has no such gap.

    :param lander_env: the unwrapped ``LunarLander``.
    :param leg: 0 or 1.
    :return: whether a touching contact joins that leg and the ground.
    """
    leg_body, ground = lander_env.legs[leg], lander_env.moon
    for contact in lander_env.world.contacts:
        bodies = (contact.fixtureA.body, contact.fixtureB.body)
        if contact.touching and leg_body in bodies and ground in bodies:
            return True
    return False


@dataclasses.dataclass(frozen=True)
class LunarLanderLanded:
    """LunarLander: a stable landing on both legs inside the pad.

    Success iff, on the last step,

    - the lander has not crashed (its body never touched the ground: ``game_over`` is False) and is on
      screen (``|x| < 1``);
    - both legs touch the ground: the observation's leg-contact flag (index 6 or 7) is ``> 0.5``, or the
      Box2D world has a touching contact between that leg and the ground (gymnasium's flags can miss a leg
      that rests on the ground, see :func:`_leg_touches_ground`);
    - it is inside the pad: ``|x| < pad_half_width`` (observation index 0; the flags are at ``|x| = 0.2``);
    - it is at rest: either Box2D put the lander to sleep (gymnasium then terminates the episode, with its
      +100 bonus: this is how a landing normally ends, long before the horizon), or, when the horizon is
      reached first, it is nearly at rest: linear speed ``hypot(vx, vy) <= max_speed`` and
      ``|angular velocity| <= max_angular_speed``, in the observation's units (indices 2, 3 and 5).

    So success is judged when the episode ends: at landing (termination at rest) or at the horizon.

    :param pad_half_width: half the width of the accepted landing zone, in observation units.
    :param max_speed: the largest linear speed that counts as at rest at the horizon.
    :param max_angular_speed: the largest angular velocity that counts as at rest at the horizon.
    """

    pad_half_width: float = 0.4
    max_speed: float = 0.05
    max_angular_speed: float = 0.05

    def __post_init__(self) -> None:
        """Validate the thresholds."""
        _require_finite("pad_half_width", self.pad_half_width, positive=True)
        _require_finite("max_speed", self.max_speed, positive=True)
        _require_finite("max_angular_speed", self.max_angular_speed, positive=True)

    @property
    def description(self) -> str:
        """The rule in words."""
        return (
            f"at rest on both legs (ground contact) inside the pad abs(x) < {self.pad_half_width}, no crash; judged "
            "when the lander comes to rest (gymnasium ends the episode) or at the horizon (then speed <= "
            f"{self.max_speed}, abs(angular velocity) <= {self.max_angular_speed})"
        )

    def __call__(self, final: FinalStep[Any], /) -> bool:
        """Judge the last step.

        :param final: the last step of the episode.
        :return: success.
        """
        lander_env = final.env.unwrapped
        obs = np.asarray(final.observation, dtype=np.float64)
        if bool(lander_env.game_over) or abs(obs[0]) >= 1.0:  # type: ignore[attr-defined]
            return False
        both_legs = all(obs[6 + leg] > 0.5 or _leg_touches_ground(lander_env, leg) for leg in (0, 1))
        on_pad = abs(obs[0]) < self.pad_half_width
        asleep = not bool(lander_env.lander.awake)  # type: ignore[attr-defined]
        nearly_still = math.hypot(obs[2], obs[3]) <= self.max_speed and abs(obs[5]) <= self.max_angular_speed
        return bool(both_legs and on_pad and (asleep or nearly_still))


@dataclasses.dataclass(frozen=True)
class PendulumUpright:
    """Pendulum: upright at the horizon, ``cos(theta) > min_cos`` (observation index 0).

    :param min_cos: the smallest final ``cos(theta)``; 0.8 is about 37 degrees from upright.
    """

    min_cos: float = 0.8

    def __post_init__(self) -> None:
        """Validate the threshold."""
        _require_finite("min_cos", self.min_cos)
        if not -1.0 <= self.min_cos < 1.0:
            raise ValueError(f"min_cos must lie in [-1, 1), got {self.min_cos!r}")

    @property
    def description(self) -> str:
        """The rule in words."""
        return f"upright at the horizon: final cos(theta) > {self.min_cos}"

    def __call__(self, final: FinalStep[Any], /) -> bool:
        """Judge the last step.

        :param final: the last step of the episode.
        :return: success.
        """
        return (not final.terminated) and float(np.asarray(final.observation)[0]) > self.min_cos
