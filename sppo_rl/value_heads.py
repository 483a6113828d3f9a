"""Pluggable sequence-level value heads.

A value head maps the critic's features of a *start state* (the first observation of an episode, or a
prompt) to a prediction of the episode's outcome, and owns two things: the **baseline** used in the
advantage ``A = R - baseline`` and the **loss** that trains it. The critic trunk in front of it can be an
MLP (control) or a language model read at the last prompt token (LLM); the head does not care.

Built-in heads:

- :class:`BernoulliValueHead` (``"bernoulli"``, the default): one logit ``l``, baseline ``sigmoid(l)``,
  loss binary cross-entropy with logits. Outcomes must lie in ``[0, 1]`` (binary success or a soft target).
- :class:`GaussianValueHead` (``"gaussian"``): a real-valued prediction, loss mean squared error. By default
  it learns in a normalised space (running mean and std of the outcomes seen), so episode returns of any
  scale (CartPole's 500, say) train well; the baseline is given back in the outcome's units.
- :class:`RawValueHead` (``"raw"``): the unbounded output is the value itself, loss mean squared error, no
  normalisation: the value model of standard (token-level) PPO, whose loss the LLM trainer clips around the old
  values (:func:`sppo_rl.objectives.clipped_value_loss`).

Writing your own head: subclass :class:`ValueHead` and implement :meth:`~ValueHead.baseline_from_output`,
:meth:`~ValueHead.loss_from_output` and, if your outcomes are restricted, :meth:`~ValueHead.check_outcomes`::

    class HuberValueHead(ValueHead):
        name = "huber"

        def loss_from_output(self, output, outcomes):
            return torch.nn.functional.huber_loss(output, outcomes)

    model = SPPO("MlpPolicy", env, value_head=HuberValueHead)

Select a head by name with :func:`make_value_head` or pass a class or an instance.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor

__all__ = [
    "VALUE_HEADS",
    "BernoulliValueHead",
    "GaussianValueHead",
    "OutcomeError",
    "RawValueHead",
    "ValueHead",
    "make_value_head",
    "resolve_value_head_name",
]


class OutcomeError(ValueError):
    """An outcome that a value head cannot learn from (out of range, NaN, infinite)."""


class ValueHead(nn.Module):
    """Base class: a linear read-out of the critic features plus the outcome model that gives it meaning.

    Subclasses define how the raw output becomes a baseline and how it is trained. All tensors are
    per sequence: ``features`` ``(B, features_dim)``, ``output``/``outcomes``/baselines ``(B,)``.

    :param features_dim: size of the critic features fed to the head
    :param bias: give the linear read-out a bias (the language-model critics have none, as TRL's value models, so
        that they export as ``AutoModelForSequenceClassification`` models)
    """

    name: ClassVar[str] = "custom"
    """Registry name, stored in checkpoints and logs."""

    def __init__(self, features_dim: int, bias: bool = True) -> None:
        super().__init__()
        if features_dim < 1:
            raise ValueError(f"features_dim must be >= 1, got {features_dim}")
        self.features_dim = features_dim
        self.linear = nn.Linear(features_dim, 1, bias=bias)

    def forward(self, features: Tensor) -> Tensor:
        """Raw head output (a logit for the Bernoulli head), shape ``(B,)``."""
        return self.linear(features).squeeze(-1)

    def baseline_from_output(self, output: Tensor) -> Tensor:
        """Turn the raw output ``(B,)`` into the baseline ``V(s0)`` ``(B,)`` in the outcome's units."""
        return output

    def loss_from_output(self, output: Tensor, outcomes: Tensor) -> Tensor:
        """Scalar loss between the raw output ``(B,)`` and the observed outcomes ``(B,)``."""
        raise NotImplementedError

    def baseline(self, features: Tensor) -> Tensor:
        """``V(s0)`` from the critic features: ``(B, features_dim) -> (B,)``."""
        return self.baseline_from_output(self(features))

    def loss(self, features: Tensor, outcomes: Tensor) -> Tensor:
        """Scalar training loss from the critic features and the outcomes."""
        return self.loss_from_output(self(features), outcomes)

    def check_outcomes(self, outcomes: Tensor) -> None:
        """Raise :class:`OutcomeError` if the head cannot learn from these outcomes. Default: finite values."""
        bad = ~torch.isfinite(outcomes)
        if bad.any():
            i = int(torch.nonzero(bad)[0, 0])
            raise OutcomeError(f"Outcome {outcomes[i].item()} of sequence {i} is not finite")

    def update_statistics(self, outcomes: Tensor) -> None:
        """Hook called once per batch of fresh outcomes, before the head is trained on them. Default: none."""

    def extra_repr(self) -> str:
        return f"name={self.name!r}, features_dim={self.features_dim}"


class BernoulliValueHead(ValueHead):
    """Success-probability head: ``V = sigmoid(logit)``, trained with BCE-with-logits.

    ``L = -[R log V + (1 - R) log(1 - V)]``; outcomes may be soft targets in ``[0, 1]``.
    """

    name: ClassVar[str] = "bernoulli"

    def baseline_from_output(self, output: Tensor) -> Tensor:
        return torch.sigmoid(output)

    def loss_from_output(self, output: Tensor, outcomes: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(output, outcomes.to(output.dtype))

    def check_outcomes(self, outcomes: Tensor) -> None:
        super().check_outcomes(outcomes)
        bad = (outcomes < 0) | (outcomes > 1)
        if bad.any():
            i = int(torch.nonzero(bad)[0, 0])
            raise OutcomeError(
                f"The Bernoulli value head needs outcomes in [0, 1] (a success or a probability), got "
                f"{outcomes[i].item():g} for sequence {i}. For real-valued outcomes such as episode returns, "
                "use value_head='gaussian'."
            )


class GaussianValueHead(ValueHead):
    """Real-valued head trained with mean squared error.

    With ``normalize=True`` (default) the linear layer predicts ``(R - mu) / sigma`` where ``mu`` and
    ``sigma`` are running statistics of every outcome seen (kept as buffers, so they are saved and loaded);
    the baseline is ``mu + sigma * output``. This keeps the regression well scaled whatever the return
    scale is.

    :param features_dim: size of the critic features
    :param normalize: learn in the normalised space
    :param min_std: floor on ``sigma``
    :param bias: see :class:`ValueHead`
    """

    name: ClassVar[str] = "gaussian"

    count: Tensor
    mean: Tensor
    m2: Tensor

    def __init__(self, features_dim: int, normalize: bool = True, min_std: float = 1e-2, bias: bool = True) -> None:
        super().__init__(features_dim, bias=bias)
        self.normalize = normalize
        self.min_std = min_std
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("m2", torch.zeros((), dtype=torch.float64))

    @property
    def std(self) -> Tensor:
        """Running standard deviation of the outcomes (1 before any outcome, floored by ``min_std``)."""
        if self.count < 2:
            return torch.ones((), dtype=torch.float64, device=self.mean.device)
        return torch.sqrt(self.m2 / (self.count - 1)).clamp(min=self.min_std)

    def update_statistics(self, outcomes: Tensor) -> None:
        """Merge a batch of outcomes into the running mean/variance (Chan et al. parallel update)."""
        if not self.normalize or outcomes.numel() == 0:
            return
        x = outcomes.detach().to(torch.float64).flatten().to(self.mean.device)
        n_b = float(x.numel())
        mean_b = x.mean()
        m2_b = ((x - mean_b) ** 2).sum()
        n_a = self.count.clone()
        total = n_a + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / total
        self.m2 += m2_b + delta**2 * n_a * n_b / total
        self.count.fill_(total.item())

    def baseline_from_output(self, output: Tensor) -> Tensor:
        if not self.normalize:
            return output
        return (self.mean + self.std * output.to(torch.float64)).to(output.dtype)

    def loss_from_output(self, output: Tensor, outcomes: Tensor) -> Tensor:
        target = outcomes.to(output.dtype)
        if self.normalize:
            target = ((outcomes.to(torch.float64) - self.mean) / self.std).to(output.dtype)
        return F.mse_loss(output, target)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", normalize={self.normalize}"


class RawValueHead(ValueHead):
    """Unbounded value: the raw output is ``V`` in the outcome's units, trained with mean squared error.

    The value model of standard PPO; :func:`sppo_rl.objectives.clipped_value_loss` adds PPO's value clipping, which
    needs outputs in the units of the targets (this head, and the Gaussian head only with ``normalize=False``).
    """

    name: ClassVar[str] = "raw"

    def loss_from_output(self, output: Tensor, outcomes: Tensor) -> Tensor:
        return F.mse_loss(output, outcomes.to(output.dtype))


VALUE_HEADS: dict[str, type[ValueHead]] = {
    BernoulliValueHead.name: BernoulliValueHead,
    GaussianValueHead.name: GaussianValueHead,
    RawValueHead.name: RawValueHead,
}
"""Name -> head class for the built-in heads."""


def resolve_value_head_name(spec: str | type[ValueHead] | ValueHead) -> str:
    """The registry name of a head spec (``"bernoulli"``, a class, or an instance)."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, ValueHead):
        return type(spec).name
    if isinstance(spec, type) and issubclass(spec, ValueHead):
        return spec.name
    raise TypeError(f"value_head must be a name, a ValueHead subclass or instance, got {spec!r}")


def make_value_head(spec: str | type[ValueHead] | ValueHead, features_dim: int, **kwargs: Any) -> ValueHead:
    """Build a value head.

    :param spec: ``"bernoulli"``, ``"gaussian"``, a :class:`ValueHead` subclass (built with
        ``features_dim`` and ``kwargs``), or an instance (returned as it is, after a size check)
    :param features_dim: size of the critic features
    :param kwargs: extra constructor arguments for a name or a class
    :return: the head
    :raises ValueError: unknown name or mismatched instance
    """
    if isinstance(spec, ValueHead):
        if spec.features_dim != features_dim:
            raise ValueError(
                f"The value head instance expects {spec.features_dim} features but the critic gives {features_dim}"
            )
        return spec
    if isinstance(spec, str):
        if spec not in VALUE_HEADS:
            known = ", ".join(repr(k) for k in VALUE_HEADS)
            raise ValueError(f"Unknown value head {spec!r}; choose one of {known}, 'auto', or a ValueHead subclass")
        return VALUE_HEADS[spec](features_dim, **kwargs)
    if isinstance(spec, type) and issubclass(spec, ValueHead):
        return spec(features_dim, **kwargs)
    raise TypeError(f"value_head must be a name, a ValueHead subclass or instance, got {spec!r}")


def brier_score(baselines: Tensor, outcomes: Tensor) -> float:
    """Mean squared error between predicted success probabilities and outcomes (the Brier score)."""
    if baselines.numel() == 0:
        return math.nan
    return float(((baselines.detach().double() - outcomes.detach().double()) ** 2).mean())
