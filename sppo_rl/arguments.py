"""SPPO's constructor arguments: one check per argument, and what PPO's own keywords mean to SPPO.

:func:`check_arguments` is the one validation function of :class:`~sppo_rl.SPPO`: it runs when the model is built
(and on the values given to ``SPPO.load``), so a bad value is refused before anything is trained, by a
``TypeError`` (wrong type) or ``ValueError`` (wrong value) whose message names the argument.
Schedules are called at the start of training (progress 1.0) and, for learning rates, at its end (0.0).

:data:`PPO_KEYWORDS` lists the keywords of SB3's ``PPO`` that SPPO accepts without using them, or refuses, with
the reason; :func:`check_ppo_keywords` applies it (docs/sppo.md, "Coming from PPO", shows the whole mapping).
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch as th

from sppo_rl.buffers import EpisodeRolloutBuffer
from sppo_rl.objectives import ADVANTAGE_ESTIMATORS, LOSS_AGG_MODES, AdvantageEstimator, get_advantage_estimator
from sppo_rl.value_heads import VALUE_HEADS, ValueHead

__all__ = [
    "ARGUMENT_CHECKS",
    "CONTROL_INPUTS",
    "PPO_KEYWORDS",
    "PPOKeyword",
    "check_arguments",
    "check_ppo_keywords",
    "usable_for_control",
]

CONTROL_INPUTS = frozenset({"outcomes", "baselines"})
"""What a control rollout gives an advantage estimator: each episode's outcome and the critic's ``V(s0)``."""

OUTCOME_NAMES = ("auto", "success", "return")


def usable_for_control(estimator: AdvantageEstimator) -> bool:
    """Sequence level, reads only outcomes and ``V(s0)``, one sample per context."""
    return (
        estimator.sequence_level and set(estimator.inputs) <= CONTROL_INPUTS and estimator.min_samples_per_context <= 1
    )


# ---- the checks, one per kind of argument ------------------------------------------------------------------


def _number(name: str, value: Any) -> float:
    """``value`` as a float: a real number that is not a bool nor NaN."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    x = float(value)
    if math.isnan(x):
        raise ValueError(f"{name} must be a number, got nan")
    return x


def _integer(minimum: int, maximum: int | None = None) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
        if int(value) < minimum or (maximum is not None and int(value) > maximum):
            bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            raise ValueError(f"{name} must be {bound}, got {value}")

    return check


def _above(low: float, inclusive: bool = False, finite: bool = True) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        x = _number(name, value)
        if (x < low if inclusive else x <= low) or (finite and math.isinf(x)):
            relation = ">=" if inclusive else ">"
            raise ValueError(f"{name} must be {'a finite number ' if finite else ''}{relation} {low}, got {x}")

    return check


def _finite(name: str, value: Any) -> None:
    if math.isinf(_number(name, value)):
        raise ValueError(f"{name} must be finite, got {value}")


def _schedule_or(check: Callable[[str, Any], None], progresses: tuple[float, ...]) -> Callable[[str, Any], None]:
    """A float checked by ``check``, or a schedule of the remaining progress whose values at ``progresses`` are."""

    def checked(name: str, value: Any) -> None:
        if not callable(value):
            check(name, value)
            return
        for progress in progresses:
            try:
                out = value(progress)
            except Exception as err:
                what = f"{type(err).__name__}: {err}"
                raise ValueError(f"{name}: the schedule raised {what} at progress {progress}") from err
            check(f"{name} (a schedule, at progress {progress})", out)

    return checked


def _optional(check: Callable[[str, Any], None]) -> Callable[[str, Any], None]:
    def checked(name: str, value: Any) -> None:
        if value is not None:
            check(name, value)

    return checked


def _instance(*types: type, what: str) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, types):
            raise TypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")

    return check


def _bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def _one_of(choices: tuple[str, ...]) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if value not in choices:
            raise ValueError(f"Unknown {name} {value!r}; choose one of {', '.join(choices)}")

    return check


def _device(name: str, value: Any) -> None:
    if not isinstance(value, str | th.device):
        raise TypeError(f"{name} must be a string or a torch.device, got {value!r} ({type(value).__name__})")
    if value != "auto":
        try:
            th.device(value)
        except RuntimeError as err:
            raise ValueError(f"{name} {value!r} is not a torch device ('auto', 'cpu', 'cuda', 'cuda:1', ...)") from err


def _value_head(name: str, value: Any) -> None:
    if isinstance(value, str):
        if value != "auto" and value not in VALUE_HEADS:
            known = ", ".join(repr(k) for k in VALUE_HEADS)
            raise ValueError(
                f"Unknown value head {value!r} ({name}); choose one of {known}, 'auto', or a ValueHead subclass"
            )
    elif not (isinstance(value, ValueHead) or (isinstance(value, type) and issubclass(value, ValueHead))):
        raise TypeError(f"{name} must be a name, a ValueHead subclass or instance, got {value!r}")


def _outcome(name: str, value: Any) -> None:
    if not (callable(value) or value in OUTCOME_NAMES):
        raise ValueError(f"{name} must be 'auto', 'success', 'return' or a callable, got {value!r}")


def _advantage_estimator(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be the name of a registered estimator, got {value!r}")
    if value not in ADVANTAGE_ESTIMATORS:
        known = ", ".join(repr(e) for e in sorted(ADVANTAGE_ESTIMATORS))
        raise ValueError(f"Unknown advantage estimator {value!r} ({name}); registered: {known}")
    estimator = get_advantage_estimator(value)
    if not usable_for_control(estimator):
        usable = ", ".join(repr(e.name) for e in ADVANTAGE_ESTIMATORS.values() if usable_for_control(e))
        needs = sorted(set(estimator.inputs) - CONTROL_INPUTS)
        raise ValueError(
            f"{name} {value!r} cannot run on control episodes: it is {estimator.level}-level and needs "
            f"{needs or 'several samples of one context'} (group estimators and greedy baselines need several "
            f"samples of one context: see sppo_rl.llm). Usable here: {usable}"
        )


def _rollout_buffer_class(name: str, value: Any) -> None:
    if not (isinstance(value, type) and issubclass(value, EpisodeRolloutBuffer)):
        raise ValueError(
            f"{name} must be EpisodeRolloutBuffer or a subclass: SPPO stores whole episodes, which SB3's "
            f"step-block buffers cannot hold; got {value!r}"
        )


_mapping = _instance(Mapping, what="a dict")
_rate = _schedule_or(_above(0.0, inclusive=True), progresses=(1.0, 0.0))
_positive = _above(0.0)

ARGUMENT_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "learning_rate": _rate,
    "critic_learning_rate": _optional(_rate),
    "n_steps": _integer(1),
    "n_episodes": _optional(_integer(1)),
    "batch_episodes": _integer(1),
    "n_epochs": _integer(1),
    "clip_range": _schedule_or(_positive, progresses=(1.0,)),
    "clip_range_high": _optional(_positive),
    "dual_clip": _optional(_above(1.0)),
    "log_ratio_clamp": _optional(_above(0.0, finite=False)),
    "ent_coef": _finite,
    "max_grad_norm": _above(0.0, finite=False),  # inf: no clipping; 0 would zero every gradient
    "target_kl": _optional(_positive),
    "normalize_advantage": _bool,
    "loss_agg_mode": _one_of(LOSS_AGG_MODES),
    "advantage_estimator": _advantage_estimator,
    "advantage_estimator_kwargs": _optional(_mapping),
    "value_head": _value_head,
    "outcome": _outcome,
    "max_episode_steps": _integer(1),
    "stats_window_size": _integer(1),
    "tensorboard_log": _optional(_instance(str, os.PathLike, what="a folder path")),
    "policy_kwargs": _optional(_mapping),
    "verbose": _integer(0),
    "seed": _optional(_integer(0, 2**32 - 1)),
    "device": _device,
    "rollout_buffer_class": _optional(_rollout_buffer_class),
    "rollout_buffer_kwargs": _optional(_mapping),
}
"""The check of each argument of :class:`~sppo_rl.SPPO` (name -> ``check(name, value)``)."""


def check_arguments(values: Mapping[str, Any]) -> None:
    """Refuse a bad argument of :class:`~sppo_rl.SPPO`, naming it.

    :param values: argument name -> value; names without a check (the env, the policy, callables of the user)
        are skipped, so any subset can be checked (e.g. the values given to ``SPPO.load``)
    :raises TypeError: an argument of the wrong type
    :raises ValueError: an argument of the right type and a wrong value
    """
    for name, value in values.items():
        check = ARGUMENT_CHECKS.get(name)
        if check is not None:
            check(name, value)
    if "advantage_estimator" in values and values.get("advantage_estimator_kwargs") is not None:
        estimator = get_advantage_estimator(values["advantage_estimator"])
        try:
            estimator.check_options(dict(values["advantage_estimator_kwargs"]))
        except (TypeError, ValueError) as err:
            raise type(err)(f"advantage_estimator_kwargs: {err}") from err


# ---- PPO's keywords -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PPOKeyword:
    """A keyword of SB3's ``PPO`` that SPPO takes only so that a PPO call works unchanged.

    :param neutral: the value that is SPPO's own behaviour (the default; accepted silently)
    :param refuse: refuse any other value (``ValueError``); otherwise accept it with a warning
    :param reason: what SPPO does instead, and what to use
    """

    neutral: Any
    refuse: bool
    reason: str


PPO_KEYWORDS: dict[str, PPOKeyword] = {
    "batch_size": PPOKeyword(
        None, True, "SPPO's minibatches hold whole episodes: use batch_episodes=<episodes per minibatch> instead"
    ),
    "use_sde": PPOKeyword(False, True, "SPPO does not support gSDE; it uses the default Gaussian exploration"),
    "gamma": PPOKeyword(
        1.0, False, "SPPO's outcome is the undiscounted episode outcome R (one advantage R - V(s0) per episode)"
    ),
    "gae_lambda": PPOKeyword(1.0, False, "SPPO has no GAE: every step of an episode gets the episode's R - V(s0)"),
    "vf_coef": PPOKeyword(
        None, False, "SPPO's critic has its own loss and optimizer: set its learning rate with critic_learning_rate"
    ),
    "clip_range_vf": PPOKeyword(
        None, False, "SPPO's critic predicts the outcome from the start observation and its values are not clipped"
    ),
    "sde_sample_freq": PPOKeyword(-1, False, "it applies only to gSDE, which SPPO does not support"),
}
"""PPO's keywords that have no meaning in SPPO (see :func:`check_ppo_keywords`)."""


def check_ppo_keywords(values: Mapping[str, Any]) -> None:
    """Refuse or warn about PPO keywords given a value other than SPPO's own.

    A refused keyword raises ``ValueError`` naming the SPPO equivalent; an ignored one gives a ``UserWarning``,
    which Python shows once per place in the code that builds the model.

    :param values: keyword -> value, for the keywords of :data:`PPO_KEYWORDS`
    :raises ValueError: for a refused keyword
    """
    for name, value in values.items():
        keyword = PPO_KEYWORDS[name]
        if value is None and keyword.neutral is None:
            continue
        if keyword.neutral is not None and not isinstance(value, str) and value == keyword.neutral:
            continue
        if keyword.refuse:
            raise ValueError(f"{name}={value!r} is a PPO argument that SPPO does not take: {keyword.reason}")
        warnings.warn(f"SPPO ignores {name}={value!r}: {keyword.reason}", UserWarning, stacklevel=3)
