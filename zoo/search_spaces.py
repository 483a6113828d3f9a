"""Optuna search spaces for ``sppo-zoo tune``, encoded the rl-baselines3-zoo way.

- learning rates (and the entropy coefficient) are log-uniform;
- rollout and minibatch sizes are powers of two, searched through their exponent (``log2_n_steps``...);
- networks are named sizes (``tiny``, ``small``, ``medium``) and activations named functions (``tanh``, ``relu``),
  turned into a ``policy_kwargs`` string such as ``dict(net_arch=[64, 64], activation_fn=nn.Tanh)``.

A search space is a function ``(trial, context) -> dict`` that returns hyperparameters in the YAML format of
``zoo/hyperparams/<algo>.yml`` (so the best trial can be written back as a YAML entry). Hyperparameters given on
the command line with ``-params key:value`` are fixed: they are never searched (:class:`ParamSampler` skips them).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from .errors import ZooError

__all__ = [
    "ACTIVATIONS",
    "NET_ARCHS",
    "ParamSampler",
    "SearchContext",
    "SearchSpace",
    "load_search_space",
    "sample_ppo_params",
    "sample_sppo_params",
]

NET_ARCHS: dict[str, list[int]] = {"tiny": [64], "small": [64, 64], "medium": [256, 256]}
"""Named network sizes: hidden layers of the actor and of the critic."""

ACTIVATIONS: dict[str, str] = {"tanh": "nn.Tanh", "relu": "nn.ReLU"}
"""Named activation functions, as they are written in ``policy_kwargs``."""


@dataclass(frozen=True)
class SearchContext:
    """What a search space may need to know about the tuning run.

    :param env_id: the environment id
    :param n_envs: environments stepped in parallel (bounds PPO's minibatch by ``n_steps * n_envs``)
    :param reports_success: whether the env reports ``info["is_success"]`` at the end of its episodes
    :param entry: the YAML entry the trials start from (with ``-params`` applied), raw values
    :param fixed: keys given with ``-params``: never searched
    """

    env_id: str
    n_envs: int
    reports_success: bool
    entry: Mapping[str, Any] = field(default_factory=dict)
    fixed: frozenset[str] = frozenset()


SearchSpace = Callable[[optuna.Trial, SearchContext], dict[str, Any]]


class ParamSampler:
    """Suggest hyperparameters into :attr:`params`, leaving out those fixed on the command line.

    :param trial: the Optuna trial
    :param context: the tuning context (its ``fixed`` keys are skipped)
    """

    def __init__(self, trial: optuna.Trial, context: SearchContext) -> None:
        self.trial = trial
        self.context = context
        self.params: dict[str, Any] = {}

    def free(self, key: str) -> bool:
        """Whether ``key`` may be searched (it was not fixed with ``-params``)."""
        return key not in self.context.fixed

    def value(self, key: str, default: Any = None) -> Any:
        """The value ``key`` will have: sampled, else from the entry (or ``-params``), else ``default``."""
        if key in self.params:
            return self.params[key]
        return self.context.entry.get(key, default)

    def log_float(self, key: str, low: float, high: float) -> None:
        """A float drawn log-uniformly in ``[low, high]``."""
        if self.free(key):
            self.params[key] = self.trial.suggest_float(key, low, high, log=True)

    def uniform(self, key: str, low: float, high: float) -> None:
        """A float drawn uniformly in ``[low, high]``."""
        if self.free(key):
            self.params[key] = self.trial.suggest_float(key, low, high)

    def categorical(self, key: str, choices: Sequence[Any]) -> None:
        """One of ``choices`` (numbers, strings, booleans or ``None``)."""
        if self.free(key):
            self.params[key] = self.trial.suggest_categorical(key, list(choices))

    def power_of_two(self, key: str, low_exp: int, high_exp: int) -> None:
        """``2 ** k`` for an integer ``k`` in ``[low_exp, high_exp]`` (the Optuna parameter is ``log2_<key>``)."""
        if self.free(key):
            self.params[key] = 2 ** self.trial.suggest_int(f"log2_{key}", low_exp, high_exp)

    def network(self) -> None:
        """A named network size and activation, written as a ``policy_kwargs`` string."""
        if self.free("policy_kwargs"):
            arch = self.trial.suggest_categorical("net_arch", list(NET_ARCHS))
            activation = self.trial.suggest_categorical("activation_fn", list(ACTIVATIONS))
            self.params["policy_kwargs"] = f"dict(net_arch={NET_ARCHS[arch]}, activation_fn={ACTIVATIONS[activation]})"


def sample_sppo_params(trial: optuna.Trial, context: SearchContext) -> dict[str, Any]:
    """The SPPO search space.

    Actor and critic learning rates (log-uniform), whole episodes per minibatch (``batch_episodes``, a power of
    two, at most ``n_episodes``), epochs, clip range, an asymmetric upper clip (``clip_range_high`` =
    ``clip_range`` + 0, 0.08 or 0.2), dual clip on or off, the loss aggregation mode, the value head (Bernoulli
    only when the episodes report ``is_success`` and the outcome is not forced to the return), advantage
    whitening, entropy bonus, gradient clipping, network size and activation.

    ``n_episodes`` (episodes per update, the paper's batch of trajectories) is kept from the YAML entry; it is
    searched (8 to 64) only when the entry has neither ``n_episodes`` nor ``n_steps``.

    :param trial: the Optuna trial
    :param context: the tuning context
    :return: hyperparameters in the YAML format
    """
    s = ParamSampler(trial, context)
    s.log_float("learning_rate", 1e-5, 1e-2)
    s.log_float("critic_learning_rate", 1e-5, 1e-2)
    if "n_episodes" not in context.entry and "n_steps" not in context.entry:
        s.power_of_two("n_episodes", 3, 6)
    s.power_of_two("batch_episodes", 0, 5)
    n_episodes = s.value("n_episodes")
    if "batch_episodes" in s.params and n_episodes is not None:
        s.params["batch_episodes"] = min(s.params["batch_episodes"], int(n_episodes))
    s.categorical("n_epochs", [1, 3, 5, 10, 20])
    s.categorical("clip_range", [0.1, 0.2, 0.3])
    if s.free("clip_range_high"):
        delta = trial.suggest_categorical("clip_range_high_delta", [0.0, 0.08, 0.2])
        clip_range = s.value("clip_range", 0.2)
        s.params["clip_range_high"] = None if delta == 0.0 else round(float(clip_range) + delta, 4)
    if s.free("dual_clip"):
        s.params["dual_clip"] = 3.0 if trial.suggest_categorical("use_dual_clip", [True, False]) else None
    s.categorical("loss_agg_mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
    success_outcome = context.reports_success and s.value("outcome", "auto") in ("auto", "success")
    if success_outcome:
        s.categorical("value_head", ["bernoulli", "gaussian"])
    s.categorical("normalize_advantage", [False, True])
    s.log_float("ent_coef", 1e-8, 1e-2)
    s.categorical("max_grad_norm", [0.3, 0.5, 1.0, 2.0, 5.0])
    s.network()
    return s.params


def sample_ppo_params(trial: optuna.Trial, context: SearchContext) -> dict[str, Any]:
    """The PPO search space (as rl-baselines3-zoo's, trimmed).

    Rollout length ``n_steps`` and ``batch_size`` (powers of two; the minibatch is capped at
    ``n_steps * n_envs``), discount, GAE lambda, learning rate (log-uniform), entropy coefficient
    (log-uniform), clip range, epochs, gradient clipping, value coefficient, network size and activation.

    :param trial: the Optuna trial
    :param context: the tuning context
    :return: hyperparameters in the YAML format
    """
    s = ParamSampler(trial, context)
    s.power_of_two("n_steps", 3, 11)
    s.power_of_two("batch_size", 3, 9)
    rollout = int(s.value("n_steps", 2048)) * context.n_envs
    if "batch_size" in s.params and s.params["batch_size"] > rollout:
        s.params["batch_size"] = rollout
    s.categorical("gamma", [0.95, 0.98, 0.99, 0.995, 0.999, 1.0])
    s.categorical("gae_lambda", [0.8, 0.9, 0.92, 0.95, 0.98, 0.99, 1.0])
    s.log_float("learning_rate", 1e-5, 1e-2)
    s.log_float("ent_coef", 1e-8, 1e-1)
    s.categorical("clip_range", [0.1, 0.2, 0.3, 0.4])
    s.categorical("n_epochs", [1, 5, 10, 20])
    s.categorical("max_grad_norm", [0.3, 0.5, 0.7, 1.0, 2.0, 5.0])
    s.uniform("vf_coef", 0.0, 1.0)
    s.network()
    return s.params


def load_search_space(reference: str) -> SearchSpace:
    """Import a search space given as ``module:function`` (for ``tune --search-space``).

    :param reference: ``"package.module:function"``
    :return: the function
    :raises ZooError: if it cannot be imported or is not callable
    """
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise ZooError(f"--search-space must look like 'module:function', got {reference!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ZooError(f"--search-space {reference!r}: cannot import {module_name!r} ({err})") from err
    function = getattr(module, attr, None)
    if not callable(function):
        raise ZooError(f"--search-space {reference!r}: {module_name!r} has no function {attr!r}")
    return function
