"""Precision CartPole (``CartPole-v1`` dynamics): the pole must be up and almost exactly upright at step ``H``.

The task in one place: its success rule :class:`CartPoleUpright`, the dense reward
:class:`CartPolePrecisionShaping`, the constructor :func:`make_precision_cartpole` (the gymnasium entry point of
``SparsePrecisionCartPole-v0`` and ``DensePrecisionCartPole-v0``) and its suite entry :data:`TASKS`.
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
class CartPoleUpright:
    """Precision CartPole: the pole is still up at the horizon and almost exactly upright.

    Success iff the episode was not terminated (gymnasium's CartPole terminates when ``|theta| > 12`` degrees
    or ``|x| > 2.4``) and the final pole angle (observation index 2) satisfies ``|theta| <= max_angle_deg``.

    :param max_angle_deg: the largest final ``|theta|``, in degrees.
    """

    max_angle_deg: float = 0.5

    def __post_init__(self) -> None:
        """Validate the threshold."""
        require_finite("max_angle_deg", self.max_angle_deg, positive=True)

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


def make_precision_cartpole(
    *,
    horizon: int = 200,
    max_angle_deg: float = 0.5,
    dense: bool = False,
    horizon_ends_task: bool | None = None,
    render_mode: str | None = None,
    **base_kwargs: Any,
) -> gymnasium.Env[Any, Any]:
    """Precision CartPole (``CartPole-v1`` dynamics): the pole must be up and within ``max_angle_deg`` at step ``H``.

    Early termination (``|theta| > 12`` degrees or ``|x| > 2.4``) is a failure. Dense reward:
    :class:`CartPolePrecisionShaping`.

    :param horizon: the horizon ``H``.
    :param max_angle_deg: the largest final ``|theta|``, in degrees.
    :param dense: build the dense counterpart instead of the sparse task.
    :param horizon_ends_task: report the horizon as a termination (``True``) or a truncation (``False``);
        ``None``: a termination for the sparse task, a truncation for the dense counterpart.
    :param render_mode: the render mode of the base env.
    :param base_kwargs: passed to gymnasium's ``CartPoleEnv``.
    :return: the env.
    """
    rule = CartPoleUpright(max_angle_deg=max_angle_deg)
    env = make_base_env("CartPole-v1", render_mode=render_mode, **base_kwargs)
    return wrap_outcome(
        env,
        horizon=horizon,
        success_rule=rule,
        dense=dense,
        shaping=CartPolePrecisionShaping(),
        horizon_ends_task=horizon_ends_task,
    )


#: The suite's entry: ``SparsePrecisionCartPole-v0`` and ``DensePrecisionCartPole-v0``.
TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        id="SparsePrecisionCartPole-v0",
        dense_id="DensePrecisionCartPole-v0",
        name="Precision CartPole",
        paper=True,
        base_id="CartPole-v1",
        factory=make_precision_cartpole,
        horizon=200,
        success_rule=CartPoleUpright(),
        shaping=CartPolePrecisionShaping().description,
        paper_episode_budget=40_000,
        paper_batch_episodes=64,
    ),
)
