"""Turn any gymnasium environment into a task with a verifiable, binary outcome.

Two wrappers share one definition of an episode's end and of its outcome:

- :class:`OutcomeWrapper` owns the horizon ``H`` and the success rule, and reports the outcome as
  ``info["is_success"]`` on the last step; it leaves the reward of the wrapped env untouched (this is how
  the dense, expert-training variants of the suite are built). By default it *truncates* at the horizon:
  the dense reward describes a continuing task that the horizon merely cuts short.
- :class:`SparseOutcomeWrapper` does the same and replaces the reward: ``0.0`` on every step and the
  outcome (``1.0`` or ``0.0``) on the last one. By default it *terminates* at the horizon: the outcome is
  decided there and nothing follows it, so the horizon is the end of the task (``horizon_ends_task``).

Both keep the wrapped env's per-step reward in ``info["dense_reward"]`` for diagnostics.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any, Generic, Protocol, SupportsFloat, TypeVar, runtime_checkable

import gymnasium
from gymnasium.utils import RecordConstructorArgs

ObsType = TypeVar("ObsType")
ActType = TypeVar("ActType")

#: ``info`` key of the outcome on the last step of an episode (read by SB3's ``Monitor``, ``EvalCallback`` and
#: ``rollout/success_rate``).
IS_SUCCESS_KEY = "is_success"
#: ``info`` key of the wrapped env's own reward of the step (present on every step).
DENSE_REWARD_KEY = "dense_reward"
#: ``info`` key of the outcome as a float (``1.0`` or ``0.0``), on the last step only.
OUTCOME_KEY = "outcome"
#: ``info`` key saying why the episode ended, on the last step only: ``"horizon"``, ``"terminated"`` or
#: ``"truncated"`` (the wrapped env truncated before the horizon).
END_REASON_KEY = "end_reason"


#: Keys this wrapper sets on the last step only; the wrapped env's own values of them are dropped from the
#: returned ``info`` (they stay visible to the success rule in :attr:`FinalStep.info`).
_LAST_STEP_KEYS = frozenset({IS_SUCCESS_KEY, OUTCOME_KEY, END_REASON_KEY})


@dataclasses.dataclass(frozen=True)
class FinalStep(Generic[ObsType]):
    """Everything a success rule may look at: the last transition of an episode.

    :param observation: the observation returned by the last step.
    :param reward: the wrapped env's own reward of the last step.
    :param terminated: ``True`` when the wrapped env terminated on this step (a fallen pole, a crash, a
        car at the flag); ``False`` when the episode ends at the horizon or by a truncation.
    :param truncated: ``True`` when the wrapped env itself truncated the episode on this step, before the
        horizon.
    :param info: the wrapped env's own ``info`` dict of the last step (as it returned it).
    :param elapsed_steps: the number of steps of the episode, the last one included.
    :param horizon: the horizon ``H`` of the task.
    :param env: the wrapped environment; use ``env.unwrapped`` to read state that is not in the observation
        (e.g. Hopper's x position).
    """

    observation: ObsType
    reward: float
    terminated: bool
    truncated: bool
    info: Mapping[str, Any]
    elapsed_steps: int
    horizon: int
    env: gymnasium.Env[Any, Any]

    @property
    def at_horizon(self) -> bool:
        """``True`` when the episode ran for the whole horizon (``elapsed_steps == horizon``)."""
        return self.elapsed_steps >= self.horizon


@runtime_checkable
class SuccessRule(Protocol):
    """A verifier: maps the last step of an episode to success (``True``) or failure (``False``).

    Any callable with this signature works; the rules of the suite (one in each task module, e.g.
    :class:`~sppo_rl.envs.pendulum.PendulumUpright`) are frozen dataclasses with a human-readable
    :attr:`description` as well.
    """

    def __call__(self, final: FinalStep[Any], /) -> bool:
        """Decide the outcome of an episode from its last step."""
        ...


def _check_horizon(horizon: object) -> int:
    """Validate a horizon: a positive integer.

    :param horizon: the value to check.
    :return: the horizon as an ``int``.
    :raises TypeError: if it is not an integer (``bool`` is refused).
    :raises ValueError: if it is smaller than 1.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral):
        raise TypeError(f"horizon must be an integer, got {horizon!r} ({type(horizon).__name__})")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    return int(horizon)


def _inner_time_limit(env: gymnasium.Env[Any, Any]) -> int | None:
    """The smallest ``max_episode_steps`` of the gymnasium ``TimeLimit`` wrappers inside ``env``, if any.

    :param env: the env to inspect.
    :return: the limit, or ``None`` when ``env`` has no ``TimeLimit`` wrapper.
    """
    limits: list[int] = []
    current: gymnasium.Env[Any, Any] = env
    while isinstance(current, gymnasium.Wrapper):
        if isinstance(current, gymnasium.wrappers.TimeLimit):
            limits.append(current._max_episode_steps)  # gymnasium keeps the limit only in this attribute
        current = current.env
    return min(limits, default=None)


class OutcomeWrapper(
    gymnasium.Wrapper[ObsType, ActType, ObsType, ActType], RecordConstructorArgs, Generic[ObsType, ActType]
):
    """Give an env a fixed horizon and a binary, verifiable outcome; keep its reward.

    An episode ends on the first of:

    - **the horizon**: after exactly ``horizon`` steps the success rule is evaluated on that final state. The
      step is reported as a truncation (``truncated=True``, ``terminated=False``: a time limit cut a task
      that would go on) unless ``horizon_ends_task=True``, which reports it as the end of the task
      (``terminated=True``, ``truncated=False``). The difference matters to algorithms that bootstrap: SB3's
      ``PPO`` adds ``gamma * V(last observation)`` to the reward of a truncated step and nothing to a
      terminated one.
    - **early termination** by the wrapped env (a fallen pole, a crash, a fall, the car at the flag): the
      episode ends there, shorter than the horizon (``terminated=True``). By default this is a *failure*
      (outcome 0, ``is_success`` False) and the success rule is not called. A task whose goal itself ends
      the episode (MountainCar terminates when the car reaches the flag, LunarLander when the lander comes
      to rest) sets ``success_on_termination=True``: the rule is then evaluated on the terminal state too,
      and it decides (the MountainCar rule says yes at the flag; the LunarLander rule says no after a crash).
    - **truncation by the wrapped env** before the horizon: treated exactly like early termination (the
      horizon is the wrapper's, so build the base env without a shorter ``TimeLimit``; the constructor
      refuses one).

    A step on which the horizon is reached and the wrapped env terminates counts as a termination.

    On the last step ``info["is_success"]`` (a ``bool``), ``info["outcome"]`` (``1.0``/``0.0``) and
    ``info["end_reason"]`` (``"horizon"``, ``"terminated"`` or ``"truncated"``) are set, so SB3's ``Monitor``,
    ``EvalCallback`` and ``rollout/success_rate`` report the success rate. Every step carries the wrapped
    env's reward in ``info["dense_reward"]``; the wrapped env's own ``is_success``, ``outcome`` and
    ``end_reason`` keys, if any, are dropped (the rule still sees them in ``FinalStep.info``), so
    ``is_success`` appears on the last step only. Stepping after the episode ended, without ``reset()``,
    raises.

    :param env: the env to wrap; it must not contain a ``TimeLimit`` shorter than ``horizon``.
    :param horizon: the number of steps ``H`` of an episode that is not ended early; an integer >= 1.
    :param success_rule: the verifier, called once per episode with the :class:`FinalStep`.
    :param success_on_termination: evaluate the rule when the wrapped env terminates early (instead of
        counting an early end as a failure).
    :param horizon_ends_task: report the horizon as a termination (``True``) rather than a truncation
        (``False``, the default of this wrapper).
    """

    #: The default of ``horizon_ends_task``: ``False`` here (the dense reward of a task the horizon cuts short).
    HORIZON_ENDS_TASK_DEFAULT: bool = False

    def __init__(
        self,
        env: gymnasium.Env[ObsType, ActType],
        horizon: int,
        success_rule: SuccessRule,
        *,
        success_on_termination: bool = False,
        horizon_ends_task: bool | None = None,
    ) -> None:
        horizon = _check_horizon(horizon)
        if not callable(success_rule):
            raise TypeError(f"success_rule must be callable (FinalStep -> bool), got {success_rule!r}")
        inner_limit = _inner_time_limit(env)
        if inner_limit is not None and inner_limit < horizon:
            raise ValueError(
                f"the wrapped env has a TimeLimit of {inner_limit} steps, shorter than horizon={horizon}: the wrapper "
                "owns the horizon, so build the base env without a shorter limit (e.g. gymnasium.make(..., "
                "max_episode_steps=-1))"
            )
        if horizon_ends_task is None:
            horizon_ends_task = self.HORIZON_ENDS_TASK_DEFAULT
        if not isinstance(horizon_ends_task, bool):
            raise TypeError(f"horizon_ends_task must be a bool, got {horizon_ends_task!r}")
        RecordConstructorArgs.__init__(
            self,
            horizon=horizon,
            success_rule=success_rule,
            success_on_termination=success_on_termination,
            horizon_ends_task=horizon_ends_task,
        )
        gymnasium.Wrapper.__init__(self, env)
        self.horizon: int = horizon
        self.success_rule: SuccessRule = success_rule
        self.success_on_termination: bool = bool(success_on_termination)
        self.horizon_ends_task: bool = horizon_ends_task
        self._elapsed_steps: int = 0
        self._episode_over: bool = True

    @property
    def elapsed_steps(self) -> int:
        """Steps taken in the current episode."""
        return self._elapsed_steps

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        """Reset the wrapped env and the step counter.

        :param seed: the seed of the wrapped env's random generator.
        :param options: passed to the wrapped env's ``reset``.
        :return: the first observation and the wrapped env's info.
        """
        self._elapsed_steps = 0
        self._episode_over = False
        return self.env.reset(seed=seed, options=options)

    def _outcome(self, final: FinalStep[ObsType]) -> bool:
        """The outcome of an episode that ends with ``final``.

        :param final: the last step.
        :return: success.
        """
        ended_early = final.terminated or final.truncated
        if ended_early and not self.success_on_termination:
            return False
        return bool(self.success_rule(final))

    def _reward(self, reward: float, is_last: bool, success: bool) -> float:
        """The reward this wrapper returns for a step; the wrapped env's reward here.

        :param reward: the wrapped env's reward.
        :param is_last: whether the step ends the episode.
        :param success: the outcome (meaningful only when ``is_last``).
        :return: the reward.
        """
        return reward

    def step(self, action: ActType) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the wrapped env, end the episode at the horizon and score the last step.

        :param action: the action.
        :return: ``(observation, reward, terminated, truncated, info)``.
        :raises RuntimeError: when called after the episode ended, before ``reset()``.
        """
        if self._episode_over:
            raise RuntimeError("the episode has ended (or reset() was never called): call reset() before step()")
        observation, reward, terminated, truncated, inner_info = self.env.step(action)
        self._elapsed_steps += 1
        base_reward = float(reward)
        info = {key: value for key, value in inner_info.items() if key not in _LAST_STEP_KEYS}
        info[DENSE_REWARD_KEY] = base_reward

        terminated = bool(terminated)
        inner_truncated = bool(truncated)
        at_horizon = self._elapsed_steps >= self.horizon
        is_last = terminated or inner_truncated or at_horizon
        success = False
        if is_last:
            self._episode_over = True
            final = FinalStep(
                observation=observation,
                reward=base_reward,
                terminated=terminated,
                truncated=inner_truncated and not terminated,
                info=inner_info,
                elapsed_steps=self._elapsed_steps,
                horizon=self.horizon,
                env=self.env,
            )
            success = self._outcome(final)
            info[IS_SUCCESS_KEY] = success
            info[OUTCOME_KEY] = float(success)
            if terminated:
                info[END_REASON_KEY] = "terminated"
            elif inner_truncated and not at_horizon:
                info[END_REASON_KEY] = "truncated"
            else:
                info[END_REASON_KEY] = "horizon"
        ends_at_horizon = at_horizon and not terminated
        truncated_out = (not terminated) and (inner_truncated or at_horizon)
        terminated_out = terminated
        if ends_at_horizon and self.horizon_ends_task:
            terminated_out, truncated_out = True, False
        return observation, self._reward(base_reward, is_last, success), terminated_out, truncated_out, info


class SparseOutcomeWrapper(OutcomeWrapper[ObsType, ActType]):
    """A sparse, verifiable-outcome task: reward 0.0 on every step, the outcome (1.0 or 0.0) on the last one.

    Episode end and outcome are exactly those of :class:`OutcomeWrapper` (read its docstring), but the
    horizon ends the *task* by default (``horizon_ends_task=True``):

    - at the horizon, after exactly ``horizon`` steps, the success rule is evaluated on that final state and
      the step is reported as ``terminated=True`` (``truncated=False``): the outcome is final, nothing
      follows it, and an algorithm that bootstraps from the last state (SB3's ``PPO`` at a truncation) must
      not. ``horizon_ends_task=False`` reports it as a truncation instead;
    - an early termination (a fallen pole, a crash) ends the episode with outcome 0 and ``is_success``
      False, unless ``success_on_termination=True`` lets the rule judge the terminal state (MountainCar:
      reaching the flag terminates and is a success).

    The returned reward sums to the outcome over an episode, so a ``Monitor`` wrapped outside reports an
    episode return of 0 or 1. The wrapped env's reward stays available in ``info["dense_reward"]``.

    :param env: the env to wrap; it must not contain a ``TimeLimit`` shorter than ``horizon``.
    :param horizon: the number of steps ``H`` of an episode that is not ended early; an integer >= 1.
    :param success_rule: the verifier, called once per episode with the :class:`FinalStep`.
    :param success_on_termination: evaluate the rule when the wrapped env terminates early (instead of
        counting an early end as a failure).
    :param horizon_ends_task: report the horizon as a termination (``True``, the default of this wrapper) or
        as a truncation (``False``).
    """

    #: The default of ``horizon_ends_task``: ``True`` here (the outcome is final at the horizon).
    HORIZON_ENDS_TASK_DEFAULT: bool = True

    def _reward(self, reward: float, is_last: bool, success: bool) -> float:
        """``0.0`` before the last step, the outcome on it.

        :param reward: the wrapped env's reward (ignored; kept in ``info["dense_reward"]``).
        :param is_last: whether the step ends the episode.
        :param success: the outcome.
        :return: the sparse reward.
        """
        return float(success) if is_last else 0.0


def find_outcome_wrapper(env: gymnasium.Env[Any, Any]) -> OutcomeWrapper[Any, Any] | None:
    """The outermost :class:`OutcomeWrapper` inside a wrapper stack, e.g. to read a made env's ``horizon``.

    :param env: an env, usually from ``gymnasium.make``.
    :return: the wrapper, or ``None`` when ``env`` has none.
    """
    current: gymnasium.Env[Any, Any] = env
    while isinstance(current, gymnasium.Wrapper):
        if isinstance(current, OutcomeWrapper):
            return current
        current = current.env
    return None
