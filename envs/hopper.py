"""Hopper (MuJoCo ``Hopper-v5`` dynamics): survive the whole horizon and end beyond ``min_x`` metres.

The task in one place: its success rule :class:`HopperForward`, the constructor :func:`make_hopper` (the
gymnasium entry point of ``SparseHopper-v0`` and ``DenseHopper-v0``) and its suite entry :data:`TASKS`. The dense
counterpart keeps Hopper-v5's own reward (forward velocity + healthy bonus - control cost), which already leads
to success, so there is no shaping of ours.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium

from .outcome import FinalStep
from .task import TaskSpec, make_base_env, require_finite, wrap_outcome

_HOPPER_REWARD = "Hopper-v5's own reward: forward velocity + 1 healthy bonus per step - 0.001 * sum(a ** 2)"


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
        require_finite("min_x", self.min_x)

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


def make_hopper(
    *,
    horizon: int = 1000,
    min_x: float = 1.0,
    dense: bool = False,
    horizon_ends_task: bool | None = None,
    render_mode: str | None = None,
    **base_kwargs: Any,
) -> gymnasium.Env[Any, Any]:
    """Hopper (MuJoCo ``Hopper-v5`` dynamics): survive the whole horizon and end beyond ``min_x`` metres.

    Falling (gymnasium's unhealthy termination) is a failure. Dense reward: Hopper-v5's own (forward velocity
    + healthy bonus - control cost).

    :param horizon: the horizon ``H``.
    :param min_x: the smallest final torso x position, in metres.
    :param dense: build the dense counterpart instead of the sparse task.
    :param horizon_ends_task: report the horizon as a termination (``True``) or a truncation (``False``);
        ``None``: a termination for the sparse task, a truncation for the dense counterpart.
    :param render_mode: the render mode of the base env.
    :param base_kwargs: passed to gymnasium's ``HopperEnv`` (v5).
    :return: the env.
    """
    rule = HopperForward(min_x=min_x)
    env = make_base_env("Hopper-v5", render_mode=render_mode, **base_kwargs)
    return wrap_outcome(env, horizon=horizon, success_rule=rule, dense=dense, horizon_ends_task=horizon_ends_task)


#: The suite's entry: ``SparseHopper-v0`` and ``DenseHopper-v0``.
TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        id="SparseHopper-v0",
        dense_id="DenseHopper-v0",
        name="Hopper (MuJoCo)",
        paper=True,
        base_id="Hopper-v5",
        factory=make_hopper,
        horizon=1000,
        success_rule=HopperForward(),
        shaping=_HOPPER_REWARD,
        paper_episode_budget=20_000,
        paper_batch_episodes=8,
        requires="mujoco",
    ),
)
