"""SB3's action distributions as plain tensor functions: sampling, log-probabilities and entropies.

SB3 builds a ``torch.distributions`` object for every batch of observations (argument validation, a
``Categorical`` or ``Normal`` per call, a second validation in ``log_prob``). On a small MLP with one environment
that costs about as much as the network itself. The functions here compute the *same* quantities straight from
the actor's output with the formulas ``torch.distributions`` uses, and draw samples through the same random calls
(``torch.multinomial`` on the same probabilities, ``normal_`` noise added to the mean, ``torch.bernoulli``), so a
seeded run draws the very actions SB3's distributions draw. No argument is validated: a non-finite input gives
non-finite outputs (or the error of ``torch.multinomial``), which the caller reports.

One class per SB3 distribution, each with ``sample(output, log_std)`` -> ``(actions, log_prob)`` and
``log_prob_entropy(output, log_std, actions)`` -> ``(log_prob, entropy)``; ``output`` is the actor's
``action_net`` output ``(n, d)`` and ``log_std`` the Gaussian's ``(d,)`` parameter (``None`` for the others).
:func:`fast_distribution` picks the class for an SB3 distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch as th
import torch.nn.functional as F
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
)

__all__ = [
    "FastBernoulli",
    "FastCategorical",
    "FastDiagGaussian",
    "FastDistribution",
    "FastMultiCategorical",
    "fast_distribution",
]

_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


class FastDistribution:
    """Sampling, log-probabilities and entropies of one SB3 action distribution, without distribution objects."""

    def sample(self, output: th.Tensor, log_std: th.Tensor | None) -> tuple[th.Tensor, th.Tensor]:
        """Draw one action per row.

        :param output: the actor's ``action_net`` output ``(n, d)``
        :param log_std: the Gaussian's log standard deviation ``(d,)``, or ``None``
        :return: ``(actions, log_prob)``: actions as SB3's distribution returns them, log-probabilities ``(n,)``
        """
        raise NotImplementedError

    def log_prob_entropy(
        self, output: th.Tensor, log_std: th.Tensor | None, actions: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        """Log-probabilities and entropies of given actions.

        :param output: the actor's ``action_net`` output ``(n, d)``
        :param log_std: the Gaussian's log standard deviation ``(d,)``, or ``None``
        :param actions: ``(n, ...)`` actions as stored (any numeric dtype)
        :return: ``(log_prob, entropy)``, both ``(n,)``
        """
        raise NotImplementedError


def _normalize_logits(logits: th.Tensor) -> th.Tensor:
    # torch.distributions.Categorical's own normalisation (its ``logits`` attribute)
    return logits - logits.logsumexp(dim=-1, keepdim=True)


def _categorical_sample(logits: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    log_pmf = _normalize_logits(logits)
    # Categorical.sample: multinomial with replacement on softmax of the normalised logits
    actions = th.multinomial(F.softmax(log_pmf, dim=-1), 1, True)
    return actions.squeeze(-1), log_pmf.gather(-1, actions).squeeze(-1)


def _categorical_log_prob_entropy(logits: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    log_pmf = _normalize_logits(logits)
    log_prob = log_pmf.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    clamped = th.clamp(log_pmf, min=th.finfo(log_pmf.dtype).min)
    entropy = -(clamped * F.softmax(log_pmf, dim=-1)).sum(-1)
    return log_prob, entropy


class FastCategorical(FastDistribution):
    """``Discrete`` actions: SB3's ``CategoricalDistribution`` (``torch.distributions.Categorical`` on logits)."""

    def sample(self, output: th.Tensor, log_std: th.Tensor | None) -> tuple[th.Tensor, th.Tensor]:
        return _categorical_sample(output)

    def log_prob_entropy(
        self, output: th.Tensor, log_std: th.Tensor | None, actions: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        return _categorical_log_prob_entropy(output, actions.reshape(-1))


class FastMultiCategorical(FastDistribution):
    """``MultiDiscrete`` actions: one categorical per dimension (SB3's ``MultiCategoricalDistribution``).

    :param action_dims: the number of choices of each dimension (``nvec``)
    """

    def __init__(self, action_dims: Sequence[int]) -> None:
        self.action_dims = [int(n) for n in action_dims]

    def sample(self, output: th.Tensor, log_std: th.Tensor | None) -> tuple[th.Tensor, th.Tensor]:
        # one multinomial call per dimension, in order, as SB3's list of Categorical objects
        draws = [_categorical_sample(logits) for logits in th.split(output, self.action_dims, dim=1)]
        actions = th.stack([a for a, _ in draws], dim=1)
        return actions, th.stack([lp for _, lp in draws], dim=1).sum(dim=1)

    def log_prob_entropy(
        self, output: th.Tensor, log_std: th.Tensor | None, actions: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        parts = [
            _categorical_log_prob_entropy(logits, a)
            for logits, a in zip(th.split(output, self.action_dims, dim=1), th.unbind(actions, dim=1), strict=True)
        ]
        return th.stack([lp for lp, _ in parts], dim=1).sum(dim=1), th.stack([h for _, h in parts], dim=1).sum(dim=1)


class FastBernoulli(FastDistribution):
    """``MultiBinary`` actions: independent Bernoullis on logits (SB3's ``BernoulliDistribution``)."""

    def sample(self, output: th.Tensor, log_std: th.Tensor | None) -> tuple[th.Tensor, th.Tensor]:
        actions = th.bernoulli(th.sigmoid(output))
        return actions, -F.binary_cross_entropy_with_logits(output, actions, reduction="none").sum(dim=1)

    def log_prob_entropy(
        self, output: th.Tensor, log_std: th.Tensor | None, actions: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        log_prob = -F.binary_cross_entropy_with_logits(output, actions.to(output.dtype), reduction="none").sum(dim=1)
        entropy = F.binary_cross_entropy_with_logits(output, th.sigmoid(output), reduction="none").sum(dim=1)
        return log_prob, entropy


def _gaussian_log_prob(mean: th.Tensor, std: th.Tensor, actions: th.Tensor) -> th.Tensor:
    # torch.distributions.Normal.log_prob, summed over the action dimensions as SB3 does
    return (-((actions - mean) ** 2) / (2 * std**2) - std.log() - _LOG_SQRT_2PI).sum(dim=1)


class FastDiagGaussian(FastDistribution):
    """``Box`` actions: a diagonal Gaussian with a state-independent ``log_std`` (SB3's
    ``DiagGaussianDistribution``); actions are not clipped here."""

    def sample(self, output: th.Tensor, log_std: th.Tensor | None) -> tuple[th.Tensor, th.Tensor]:
        assert log_std is not None, "a Gaussian policy has a log_std parameter"
        std = th.ones_like(output) * log_std.exp()
        # Normal.rsample: mean + standard normal noise * std
        actions = output + th.empty_like(output).normal_() * std
        return actions, _gaussian_log_prob(output, std, actions)

    def log_prob_entropy(
        self, output: th.Tensor, log_std: th.Tensor | None, actions: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        assert log_std is not None, "a Gaussian policy has a log_std parameter"
        std = th.ones_like(output) * log_std.exp()
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + th.log(std)).sum(dim=1)
        return _gaussian_log_prob(output, std, actions.to(output.dtype)), entropy


def fast_distribution(distribution: Distribution) -> FastDistribution:
    """The :class:`FastDistribution` of an SB3 action distribution.

    :param distribution: the policy's ``action_dist``
    :return: its fast counterpart
    :raises NotImplementedError: for distributions SPPO does not support (gSDE, squashed Gaussians)
    """
    if isinstance(distribution, CategoricalDistribution):
        return FastCategorical()
    if isinstance(distribution, MultiCategoricalDistribution):
        return FastMultiCategorical(distribution.action_dims)
    if isinstance(distribution, BernoulliDistribution):
        return FastBernoulli()
    if type(distribution) is DiagGaussianDistribution:
        return FastDiagGaussian()
    raise NotImplementedError(f"No fast sampling for {type(distribution).__name__}")
