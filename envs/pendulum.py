"""Pendulum (``Pendulum-v1`` dynamics): swing up and be upright, ``cos(theta) > min_cos``, at step ``H``.

The task in one place: its success rule :class:`PendulumUpright`, the dense reward
:class:`PendulumUprightShaping`, the constructor :func:`make_pendulum` (the gymnasium entry point of
``SparsePendulum-v0`` and ``DensePendulum-v0``) and its suite entry :data:`TASKS`.
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


@dataclasses.dataclass(frozen=True)
class PendulumUpright:
    """Pendulum: upright at the horizon, ``cos(theta) > min_cos`` (observation index 0).

    :param min_cos: the smallest final ``cos(theta)``; 0.8 is about 37 degrees from upright.
    """

    min_cos: float = 0.8

    def __post_init__(self) -> None:
        """Validate the threshold."""
        require_finite("min_cos", self.min_cos)
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


def make_pendulum(
    *,
    horizon: int = 1000,
    min_cos: float = 0.8,
    dense: bool = False,
    horizon_ends_task: bool | None = None,
    render_mode: str | None = None,
    **base_kwargs: Any,
) -> gymnasium.Env[Any, Any]:
    """Pendulum (``Pendulum-v1`` dynamics): swing up and be upright, ``cos(theta) > min_cos``, at step ``H``.

    Dense reward: :class:`PendulumUprightShaping`.

    :param horizon: the horizon ``H``.
    :param min_cos: the smallest final ``cos(theta)``.
    :param dense: build the dense counterpart instead of the sparse task.
    :param horizon_ends_task: report the horizon as a termination (``True``) or a truncation (``False``);
        ``None``: a termination for the sparse task, a truncation for the dense counterpart.
    :param render_mode: the render mode of the base env.
    :param base_kwargs: passed to gymnasium's ``PendulumEnv`` (e.g. ``g``).
    :return: the env.
    """
    rule = PendulumUpright(min_cos=min_cos)
    env = make_base_env("Pendulum-v1", render_mode=render_mode, **base_kwargs)
    return wrap_outcome(
        env,
        horizon=horizon,
        success_rule=rule,
        dense=dense,
        shaping=PendulumUprightShaping(min_cos=min_cos),
        horizon_ends_task=horizon_ends_task,
    )


#: The suite's entry: ``SparsePendulum-v0`` and ``DensePendulum-v0``.
TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        id="SparsePendulum-v0",
        dense_id="DensePendulum-v0",
        name="Pendulum",
        paper=True,
        base_id="Pendulum-v1",
        factory=make_pendulum,
        horizon=1000,
        success_rule=PendulumUpright(),
        shaping=PendulumUprightShaping().description,
        paper_episode_budget=20_000,
        paper_batch_episodes=16,
    ),
)
