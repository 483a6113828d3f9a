"""What every task of the suite is made of: its suite entry (:class:`TaskSpec`) and the building blocks of its
constructor (:func:`make_base_env`, :func:`wrap_outcome`, :func:`require_finite` for the rules' thresholds).

A task module (``cartpole.py``, ``mountain_car.py``, ...) holds one task: its success rule, its dense shaping,
its constructor (the gymnasium entry point) and ``TASKS``, its :class:`TaskSpec` entries; :mod:`.suite` puts
them together. Every constructor builds gymnasium's own environment for the dynamics *without* its
``TimeLimit`` (``max_episode_steps=-1``), so the horizon is exactly the ``horizon`` argument, owned by the
outcome wrapper; ``dense=False`` gives the sparse task (:class:`~sppo_rl.envs.outcome.SparseOutcomeWrapper`),
``dense=True`` its dense counterpart (same dynamics, horizon and success rule; a shaped reward and
:class:`~sppo_rl.envs.outcome.OutcomeWrapper`). The sparse task *terminates* at the horizon (its outcome is
final), the dense counterpart *truncates* there (a time limit on a continuing task); every constructor takes
``horizon_ends_task`` to choose otherwise. Horizons and thresholds are keyword arguments, so
``gymnasium.make("SparsePendulum-v0", horizon=500, min_cos=0.9)`` works; other keyword arguments go to the
base env's constructor (e.g. ``enable_wind=True`` for LunarLander).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import gymnasium

from .outcome import OutcomeWrapper, SparseOutcomeWrapper, SuccessRule
from .shaping import RewardShaping, ShapedReward


class UnknownTaskError(KeyError):
    """An id that is not in the suite."""

    def __str__(self) -> str:
        """The message, without the quotes ``KeyError`` puts around it."""
        return str(self.args[0]) if self.args else ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """One task of the suite: a sparse id, its dense counterpart, and what they are.

    :param id: the gymnasium id of the sparse task.
    :param dense_id: the gymnasium id of the dense counterpart (same dynamics, horizon and success rule).
    :param name: the task's name in the paper.
    :param paper: whether this is one of the paper's five tasks (for MountainCar and LunarLander, the discrete
        variant); ``False`` for the variants the suite adds (the continuous-action ones).
    :param base_id: the gymnasium id whose dynamics the task uses.
    :param factory: the constructor (the function of the task's module); its defaults are the suite's.
    :param variant_kwargs: fixed keyword arguments of ``factory`` for this id (e.g. ``continuous=True``); kept
        as a read-only mapping.
    :param horizon: the horizon ``H`` (the default of ``factory``).
    :param success_rule: the default success rule (its :attr:`description` is the rule's text).
    :param shaping: the dense counterpart's reward, in words.
    :param paper_episode_budget: episodes of RL fine-tuning shown in the paper's plots.
    :param paper_batch_episodes: whole trajectories per update in the paper.
    :param requires: the Python module the dynamics need (``"Box2D"``, ``"mujoco"``), or ``None``.
    """

    id: str
    dense_id: str
    name: str
    paper: bool
    base_id: str
    factory: Callable[..., gymnasium.Env[Any, Any]]
    variant_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    horizon: int
    success_rule: SuccessRule
    shaping: str
    paper_episode_budget: int
    paper_batch_episodes: int
    requires: str | None = None

    def __post_init__(self) -> None:
        """Make :attr:`variant_kwargs` a read-only copy."""
        object.__setattr__(self, "variant_kwargs", MappingProxyType(dict(self.variant_kwargs)))

    @property
    def entry_point(self) -> str:
        """The gymnasium entry point string of :attr:`factory`."""
        return f"{self.factory.__module__}:{self.factory.__name__}"

    @property
    def success(self) -> str:
        """The success rule in words."""
        description = getattr(self.success_rule, "description", None)
        return str(description) if description is not None else repr(self.success_rule)

    def registration_kwargs(self, dense: bool) -> dict[str, Any]:
        """The keyword arguments registered with gymnasium for the sparse or the dense id.

        :param dense: ``True`` for :attr:`dense_id`, ``False`` for :attr:`id`.
        :return: the keyword arguments of :attr:`factory`.
        """
        return {**self.variant_kwargs, "dense": dense}


def require_finite(name: str, value: float, *, positive: bool = False) -> None:
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
    horizon_ends_task: bool | None = None,
) -> gymnasium.Env[Any, Any]:
    """Wrap a base env into the sparse task, or into its dense counterpart.

    :param env: the base env (no ``TimeLimit`` shorter than ``horizon``).
    :param horizon: the horizon ``H``.
    :param success_rule: the verifier.
    :param dense: ``False`` for the sparse task, ``True`` for the dense counterpart.
    :param shaping: the dense reward's shaping; ``None`` keeps the base env's reward. Ignored when sparse.
    :param success_on_termination: let the rule judge an early termination (see
        :class:`~sppo_rl.envs.outcome.OutcomeWrapper`).
    :param horizon_ends_task: report the horizon as a termination (``True``) or a truncation (``False``);
        ``None``: the wrapper's default, a termination for the sparse task (its outcome is final) and a
        truncation for the dense counterpart (a time limit on a continuing task).
    :return: the wrapped env.
    """
    if not dense:
        return SparseOutcomeWrapper(
            env,
            horizon,
            success_rule,
            success_on_termination=success_on_termination,
            horizon_ends_task=horizon_ends_task,
        )
    if shaping is not None:
        env = ShapedReward(env, shaping)
    return OutcomeWrapper(
        env,
        horizon,
        success_rule,
        success_on_termination=success_on_termination,
        horizon_ends_task=horizon_ends_task,
    )
