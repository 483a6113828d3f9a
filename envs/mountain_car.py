"""MountainCar (``MountainCar-v0`` or ``MountainCarContinuous-v0`` dynamics): reach the flag within ``H`` steps.

The task in one place: its success rule :class:`MountainCarAtFlag`, the dense reward
:class:`MountainCarEnergyShaping` (potential-based, on :func:`mountain_car_energy`), the constructor
:func:`make_mountain_car` (the gymnasium entry point of both variants) and its suite entries :data:`TASKS`:
``SparseMountainCar-v0`` (discrete actions, the paper's task) and ``SparseMountainCarContinuous-v0`` (ours), each
with its dense counterpart.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import gymnasium
import numpy as np

from .outcome import FinalStep
from .shaping import Transition
from .task import TaskSpec, make_base_env, require_finite, wrap_outcome

#: MountainCar's gravity term: ``velocity += -GRAVITY * cos(3 x)`` per step (both gymnasium variants).
MOUNTAIN_CAR_GRAVITY = 0.0025


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
        require_finite("goal_position", self.goal_position)

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


def make_mountain_car(
    *,
    horizon: int = 1000,
    goal_position: float = 0.45,
    continuous: bool = False,
    dense: bool = False,
    horizon_ends_task: bool | None = None,
    render_mode: str | None = None,
    **base_kwargs: Any,
) -> gymnasium.Env[Any, Any]:
    """MountainCar (``MountainCar-v0`` or ``MountainCarContinuous-v0`` dynamics): reach the flag at ``goal_position``.

    The base env's own goal is moved to ``goal_position`` (gymnasium's discrete car stops at 0.5 otherwise),
    so reaching it terminates the episode, and that termination is a success. Dense reward:
    :class:`MountainCarEnergyShaping`.

    :param horizon: the horizon ``H``.
    :param goal_position: the flag's position.
    :param continuous: use the continuous-action car.
    :param dense: build the dense counterpart instead of the sparse task.
    :param horizon_ends_task: report the horizon as a termination (``True``) or a truncation (``False``);
        ``None``: a termination for the sparse task, a truncation for the dense counterpart.
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
        horizon_ends_task=horizon_ends_task,
    )


#: The suite's entries: the discrete car (the paper's task) and the continuous one (ours).
TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        id="SparseMountainCar-v0",
        dense_id="DenseMountainCar-v0",
        name="MountainCar",
        paper=True,
        base_id="MountainCar-v0",
        factory=make_mountain_car,
        variant_kwargs={"continuous": False},
        horizon=1000,
        success_rule=MountainCarAtFlag(),
        shaping=MountainCarEnergyShaping().description,
        paper_episode_budget=10_000,
        paper_batch_episodes=8,
    ),
    TaskSpec(
        id="SparseMountainCarContinuous-v0",
        dense_id="DenseMountainCarContinuous-v0",
        name="MountainCar (continuous actions)",
        paper=False,
        base_id="MountainCarContinuous-v0",
        factory=make_mountain_car,
        variant_kwargs={"continuous": True},
        horizon=1000,
        success_rule=MountainCarAtFlag(),
        shaping=MountainCarEnergyShaping().description,
        paper_episode_budget=10_000,
        paper_batch_episodes=8,
    ),
)
