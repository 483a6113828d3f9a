"""Shaped rewards for the dense counterparts of the suite (stage 1 of the paper's protocol: train an expert).

A dense task has the same dynamics, horizon and success rule as its sparse task; only the reward differs.
:class:`ShapedReward` replaces the reward of each step by a shaping function of the :class:`Transition`
(any :class:`RewardShaping`); each task's own shaping lives in its task module (e.g.
:class:`~sppo_rl.envs.pendulum.PendulumUprightShaping`), as a frozen dataclass with a ``description``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Generic, Protocol, SupportsFloat, TypeVar, runtime_checkable

import gymnasium
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
