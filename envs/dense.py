"""Shaped rewards for the dense counterparts of the suite (stage 1 of the paper's protocol: train an expert).

A dense task has the same dynamics, horizon and success rule as its sparse task; only the reward differs.
:class:`ShapedReward` replaces the reward of each step by a shaping function of the transition; the
shapings below are frozen dataclasses with a :attr:`description`. Hopper and LunarLander keep gymnasium's
own reward (forward progress plus a healthy bonus; LunarLander's distance/speed/angle/leg-contact shaping),
which already leads to success, so their dense variants need no wrapper.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Generic, Protocol, SupportsFloat, TypeVar, runtime_checkable

import gymnasium
import numpy as np
from gymnasium.utils import RecordConstructorArgs

ObsType = TypeVar("ObsType")
ActType = TypeVar("ActType")

#: ``info`` key of the base env's own reward, set by :class:`ShapedReward` on every step.
BASE_REWARD_KEY = "base_reward"


@dataclasses.dataclass(frozen=True)
class Transition(Generic[ObsType, ActType]):
    """One step, as seen by a shaping function.

    :param previous_observation: the observation before the step.
    :param action: the action taken.
    :param observation: the observation after the step.
    :param reward: the base env's reward of the step.
    :param terminated: whether the base env terminated on this step.
    :param env: the wrapped env (``env.unwrapped`` for hidden state).
    """

    previous_observation: ObsType
    action: ActType
    observation: ObsType
    reward: float
    terminated: bool
    env: gymnasium.Env[Any, Any]


@runtime_checkable
class RewardShaping(Protocol):
    """Maps a :class:`Transition` to the shaped reward of that step."""

    def __call__(self, transition: Transition[Any, Any], /) -> float:
        """The shaped reward of a step."""
        ...


class ShapedReward(
    gymnasium.Wrapper[ObsType, ActType, ObsType, ActType], RecordConstructorArgs, Generic[ObsType, ActType]
):
    """Replace the reward of every step by ``shaping(transition)``; keep the base reward in ``info["base_reward"]``.

    :param env: the env to wrap.
    :param shaping: the shaping function (see :class:`RewardShaping`).
    """

    def __init__(self, env: gymnasium.Env[ObsType, ActType], shaping: RewardShaping) -> None:
        if not callable(shaping):
            raise TypeError(f"shaping must be callable (Transition -> float), got {shaping!r}")
        RecordConstructorArgs.__init__(self, shaping=shaping)
        gymnasium.Wrapper.__init__(self, env)
        self.shaping: RewardShaping = shaping
        self._previous_observation: ObsType | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        """Reset the wrapped env and remember the first observation.

        :param seed: the seed of the wrapped env's random generator.
        :param options: passed to the wrapped env's ``reset``.
        :return: the first observation and the wrapped env's info.
        """
        observation, info = self.env.reset(seed=seed, options=options)
        self._previous_observation = observation
        return observation, info

    def step(self, action: ActType) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the wrapped env and shape the reward.

        :param action: the action.
        :return: ``(observation, shaped reward, terminated, truncated, info)``.
        """
        if self._previous_observation is None:
            raise RuntimeError("call reset() before step()")
        observation, reward, terminated, truncated, info = self.env.step(action)
        transition = Transition(
            previous_observation=self._previous_observation,
            action=action,
            observation=observation,
            reward=float(reward),
            terminated=bool(terminated),
            env=self.env,
        )
        shaped = float(self.shaping(transition))
        self._previous_observation = observation
        info = dict(info)
        info[BASE_REWARD_KEY] = float(reward)
        return observation, shaped, terminated, truncated, info


@dataclasses.dataclass(frozen=True)
class CartPolePrecisionShaping:
    """CartPole's +1 per step alive minus a precision penalty ``|theta| / angle_scale_deg``.

    The reward is 1 when the pole is exactly upright and falls linearly to 0 at ``angle_scale_deg`` (12
    degrees, the termination angle), so the expert is paid for holding the pole still, not merely up.

    :param angle_scale_deg: the angle, in degrees, at which the step's reward reaches 0.
    """

    angle_scale_deg: float = 12.0

    def __post_init__(self) -> None:
        """Validate the scale."""
        if not (math.isfinite(self.angle_scale_deg) and self.angle_scale_deg > 0):
            raise ValueError(f"angle_scale_deg must be a finite number > 0, got {self.angle_scale_deg!r}")

    @property
    def description(self) -> str:
        """The shaping in words."""
        return f"precision bonus: 1 - abs(theta) / {self.angle_scale_deg} deg per step alive (CartPole's +1 per step)"

    def __call__(self, transition: Transition[Any, Any], /) -> float:
        """The shaped reward of a step.

        :param transition: the step.
        :return: ``reward - |theta| / angle_scale``.
        """
        theta = float(np.asarray(transition.observation)[2])
        return transition.reward - abs(theta) / math.radians(self.angle_scale_deg)


#: MountainCar's gravity term: ``velocity += -GRAVITY * cos(3 x)`` per step (both gymnasium variants).
MOUNTAIN_CAR_GRAVITY = 0.0025


def mountain_car_energy(position: float, velocity: float) -> float:
    """Mechanical energy of MountainCar's car per unit mass, in the env's step units.

    The dynamics ``velocity += -g cos(3 x)`` derive from the potential ``U(x) = g sin(3 x) / 3``; the kinetic
    energy is ``velocity ** 2 / 2``.

    :param position: x.
    :param velocity: x velocity (per step).
    :return: ``velocity ** 2 / 2 + g sin(3 x) / 3``.
    """
    return 0.5 * velocity * velocity + MOUNTAIN_CAR_GRAVITY * math.sin(3.0 * position) / 3.0


@dataclasses.dataclass(frozen=True)
class MountainCarEnergyShaping:
    """MountainCar's reward plus a potential-based energy bonus ``scale * (Phi(s') - Phi(s))``.

    ``Phi`` is the car's mechanical energy normalised to 0 at rest in the valley and 1 at rest at the flag,
    so pumping energy (pushing in the direction of the velocity) is paid at once. Being a difference of
    potentials, the bonus telescopes over an episode (at most ``scale * (Phi(end) - Phi(start))``): it cannot
    be farmed by swinging forever, and it keeps the optimal policies of the base reward (Ng et al., 1999).

    :param scale: the weight of the energy bonus.
    :param goal_position: the flag's position, where ``Phi`` at rest is 1.
    """

    scale: float = 100.0
    goal_position: float = 0.45

    def __post_init__(self) -> None:
        """Validate the parameters."""
        if not (math.isfinite(self.scale) and self.scale >= 0):
            raise ValueError(f"scale must be a finite number >= 0, got {self.scale!r}")
        if not math.isfinite(self.goal_position):
            raise ValueError(f"goal_position must be a finite number, got {self.goal_position!r}")

    @property
    def description(self) -> str:
        """The shaping in words."""
        return (
            f"energy bonus: base reward + {self.scale} * (Phi(s') - Phi(s)), Phi = mechanical energy, 0 at rest in "
            "the valley, 1 at rest at the flag (potential-based)"
        )

    def potential(self, position: float, velocity: float) -> float:
        """The normalised energy ``Phi``.

        :param position: x.
        :param velocity: x velocity.
        :return: ``Phi(x, v)``.
        """
        bottom = -MOUNTAIN_CAR_GRAVITY / 3.0
        top = mountain_car_energy(self.goal_position, 0.0)
        return (mountain_car_energy(position, velocity) - bottom) / (top - bottom)

    def __call__(self, transition: Transition[Any, Any], /) -> float:
        """The shaped reward of a step.

        :param transition: the step.
        :return: ``reward + scale * (Phi(s') - Phi(s))``.
        """
        before = np.asarray(transition.previous_observation, dtype=np.float64)
        after = np.asarray(transition.observation, dtype=np.float64)
        gain = self.potential(after[0], after[1]) - self.potential(before[0], before[1])
        return transition.reward + self.scale * gain


@dataclasses.dataclass(frozen=True)
class PendulumUprightShaping:
    """Pendulum's reward plus an upright bonus: ``+bonus`` on every step with ``cos(theta) > min_cos``.

    Pendulum's own reward ``-(theta^2 + 0.1 theta_dot^2 + 0.001 u^2)`` already pulls towards upright; the
    bonus pays for *being* in the success region, so the expert learns to stay there until the horizon.

    :param bonus: the reward added on an upright step.
    :param min_cos: the upright region, ``cos(theta) > min_cos`` (the success rule's threshold).
    """

    bonus: float = 1.0
    min_cos: float = 0.8

    def __post_init__(self) -> None:
        """Validate the parameters."""
        if not math.isfinite(self.bonus):
            raise ValueError(f"bonus must be a finite number, got {self.bonus!r}")
        if not -1.0 <= self.min_cos < 1.0:
            raise ValueError(f"min_cos must lie in [-1, 1), got {self.min_cos!r}")

    @property
    def description(self) -> str:
        """The shaping in words."""
        return f"upright bonus: Pendulum's reward + {self.bonus} on each step with cos(theta) > {self.min_cos}"

    def __call__(self, transition: Transition[Any, Any], /) -> float:
        """The shaped reward of a step.

        :param transition: the step.
        :return: ``reward + bonus * [cos(theta) > min_cos]``.
        """
        upright = float(np.asarray(transition.observation)[0]) > self.min_cos
        return transition.reward + (self.bonus if upright else 0.0)
