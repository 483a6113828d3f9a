"""LunarLander (``LunarLander-v3`` dynamics): land at rest on both legs inside the pad.

The task in one place: its success rule :class:`LunarLanderLanded`, the constructor :func:`make_lunar_lander`
(the gymnasium entry point of both variants) and its suite entries :data:`TASKS`: ``SparseLunarLander-v0``
(discrete actions, the paper's task) and ``SparseLunarLanderContinuous-v0`` (ours), each with its dense
counterpart. The dense counterparts keep LunarLander's own shaping, which already leads to success, so there is
no shaping of ours.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import gymnasium
import numpy as np

from .outcome import FinalStep
from .task import TaskSpec, make_base_env, require_finite, wrap_outcome

_LANDER_REWARD = (
    "LunarLander-v3's own reward: shaping on distance to the pad, speed, tilt and leg contact, engine costs, "
    "-100 for a crash, +100 at rest"
)


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
        require_finite("pad_half_width", self.pad_half_width, positive=True)
        require_finite("max_speed", self.max_speed, positive=True)
        require_finite("max_angular_speed", self.max_angular_speed, positive=True)

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


def make_lunar_lander(
    *,
    horizon: int = 1000,
    pad_half_width: float = 0.4,
    max_speed: float = 0.05,
    max_angular_speed: float = 0.05,
    continuous: bool = False,
    dense: bool = False,
    horizon_ends_task: bool | None = None,
    render_mode: str | None = None,
    **base_kwargs: Any,
) -> gymnasium.Env[Any, Any]:
    """LunarLander (``LunarLander-v3`` dynamics): land at rest on both legs inside the pad.

    The episode ends when the lander comes to rest (success if on both legs inside ``|x| < pad_half_width``),
    crashes or leaves the screen (failure), or at the horizon (success if on both legs in the pad and nearly
    at rest); see :class:`LunarLanderLanded`. Dense reward: LunarLander's own shaping.

    :param horizon: the horizon ``H``.
    :param pad_half_width: half the width of the accepted landing zone, in observation units.
    :param max_speed: the largest linear speed counted as at rest at the horizon (observation units).
    :param max_angular_speed: the largest angular velocity counted as at rest at the horizon.
    :param continuous: use the continuous-action lander.
    :param dense: build the dense counterpart instead of the sparse task.
    :param horizon_ends_task: report the horizon as a termination (``True``) or a truncation (``False``);
        ``None``: a termination for the sparse task, a truncation for the dense counterpart.
    :param render_mode: the render mode of the base env.
    :param base_kwargs: passed to gymnasium's ``LunarLander`` (e.g. ``enable_wind``, ``gravity``).
    :return: the env.
    """
    rule = LunarLanderLanded(pad_half_width=pad_half_width, max_speed=max_speed, max_angular_speed=max_angular_speed)
    env = make_base_env("LunarLander-v3", render_mode=render_mode, continuous=continuous, **base_kwargs)
    return wrap_outcome(
        env,
        horizon=horizon,
        success_rule=rule,
        dense=dense,
        success_on_termination=True,
        horizon_ends_task=horizon_ends_task,
    )


#: The suite's entries: the discrete lander (the paper's task) and the continuous one (ours).
TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        id="SparseLunarLander-v0",
        dense_id="DenseLunarLander-v0",
        name="LunarLander",
        paper=True,
        base_id="LunarLander-v3",
        factory=make_lunar_lander,
        variant_kwargs={"continuous": False},
        horizon=1000,
        success_rule=LunarLanderLanded(),
        shaping=_LANDER_REWARD,
        paper_episode_budget=30_000,
        paper_batch_episodes=16,
        requires="Box2D",
    ),
    TaskSpec(
        id="SparseLunarLanderContinuous-v0",
        dense_id="DenseLunarLanderContinuous-v0",
        name="LunarLander (continuous actions)",
        paper=False,
        base_id="LunarLanderContinuous-v3",
        factory=make_lunar_lander,
        variant_kwargs={"continuous": True},
        horizon=1000,
        success_rule=LunarLanderLanded(),
        shaping=_LANDER_REWARD,
        paper_episode_budget=30_000,
        paper_batch_episodes=16,
        requires="Box2D",
    ),
)
