"""The shared math of sppo-rl: advantage estimators and the clipped policy loss.

Written once, used by both the stable-baselines3 algorithm (:class:`sppo_rl.SPPO`) and the LLM trainer
(:mod:`sppo_rl.llm`). Torch only: no SB3, no transformers.

Shapes used in the docstrings:

- ``B``: number of sequences (episodes or prompt/response pairs) in the batch;
- ``T``: padded sequence length (steps or response tokens);
- ``mask``: ``(B, T)``, 1 on real steps/tokens and 0 on padding.

**The estimator registry.** An estimator is registered once, with what it *is*: its level (one advantage per
sequence, or one per step), the inputs it needs, its default number of samples per context, and whether it
keeps state across updates. Every caller (``SPPO`` on the control side, ``SPPOTrainer`` on the LLM side) asks the
registry what to compute and passes it by keyword; nobody lists estimator names. The built-in ones::

    name        level     inputs                          samples  advantage
    "sppo"      sequence  outcomes, baselines             1        R - V(s0)
    "none"      sequence  outcomes                        1        R
    "batch_mean" sequence outcomes                        1        R - mean_batch(R)  (optionally whitened;
                                                                   REINFORCE++'s baseline)
    "ema"       sequence  outcomes                        1        R - EMA of the outcomes of past updates
    "grpo"      sequence  outcomes, group_ids             8        (R - mean_g) / (std_g + eps), unbiased std
    "dr_grpo"   sequence  outcomes, group_ids             8        R - mean_g (Dr. GRPO; pair it with
                                                                   loss_agg_mode="seq-mean-token-sum-norm")
    "rloo"      sequence  outcomes, group_ids             5        R - mean of the other samples of the group
    "remax"     sequence  outcomes, greedy_outcomes       1        R - R_greedy
    "gae"       step      rewards, values, mask           1        GAE(gamma, lambda), optionally whitened
    "ppo"       step      rewards, values, mask           1        the same GAE, under the name of the paper's
                                                                   standard PPO (the LLM trainer pairs it with a raw
                                                                   value head, :func:`clipped_value_loss` and a
                                                                   critic warm-up)

Sequence-level estimators return one advantage per sequence, shape ``(B,)``; :func:`broadcast_to_steps` gives it
to every step of its sequence. Step-level estimators return ``(advantages, returns)``, both ``(B, T)``.

Adding one is a decorated function in any module; its defaults describe the common case (sequence level, only
the outcomes, no critic, one sample per context)::

    @register_advantage_estimator("my-baseline")
    def my_baseline(outcomes, **kwargs):
        return outcomes - outcomes.mean()

after which ``SPPO("MlpPolicy", env, advantage_estimator="my-baseline")`` and
``SPPOTrainer(..., estimator="my-baseline")`` train with it.

The loss is the PPO clipped surrogate with an asymmetric clip range, an optional dual clip for negative
advantages and a clamp on the log-ratio, aggregated over the batch by one of :data:`LOSS_AGG_MODES`. A per-step
critic is trained with :func:`clipped_value_loss` (squared error, PPO's value clipping around the old values).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

Tensor = torch.Tensor

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "ESTIMATOR_INPUTS",
    "LOSS_AGG_MODES",
    "AdvantageEstimator",
    "EMABaseline",
    "PolicyLossOutput",
    "ValueLossOutput",
    "aggregate_loss",
    "batch_mean_advantages",
    "broadcast_to_steps",
    "clipped_policy_loss",
    "clipped_value_loss",
    "compute_advantages",
    "dr_grpo_advantages",
    "gae_advantages",
    "get_advantage_estimator",
    "grpo_advantages",
    "kl_penalty",
    "masked_mean",
    "masked_whiten",
    "outcome_advantages",
    "register_advantage_estimator",
    "remax_advantages",
    "rloo_advantages",
    "sppo_advantages",
    "whiten_advantages",
]

ESTIMATOR_INPUTS: dict[str, str] = {
    "outcomes": "(B,) outcome R of each sequence",
    "baselines": "(B,) V(s0): the start-state critic's prediction before this update (no gradient)",
    "group_ids": "(B,) the context (prompt) each sequence was sampled from; equal ids form a group",
    "greedy_outcomes": "(B,) outcome of a greedy (argmax) sequence from the same context",
    "rewards": "(B, T) per-step rewards (an outcome is the reward of the last valid step)",
    "values": "(B, T) per-step values from a per-step critic before this update",
    "mask": "(B, T) 1 on valid steps",
}
"""Every input an estimator may declare, and what it is. A caller computes only what the estimator declares."""

ESTIMATOR_LEVELS = ("sequence", "step")

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
"""How per-step losses become one scalar:

- ``"token-mean"``: mean over every valid step/token of the batch (long sequences weigh more; verl's default
  and the SPPO reference);
- ``"seq-mean-token-mean"``: mean over the steps of each sequence, then mean over sequences (every sequence
  weighs the same; the original GRPO);
- ``"seq-mean-token-sum"``: sum over the steps of each sequence, then mean over sequences;
- ``"seq-mean-token-sum-norm"``: sum over the steps of each sequence divided by a *constant* length (the
  ``norm_length`` argument: the response limit on the LLM side; default the padded width ``T``), then mean over
  sequences (Dr. GRPO's normaliser; verl's mode of the same name).
"""


@dataclass(frozen=True)
class AdvantageEstimator:
    """A registered advantage estimator and what it declares about itself.

    :param name: the registry key
    :param fn: a function ``fn(**inputs, **options) -> advantages``, or, for a stateful estimator, a class whose
        constructor takes the options and whose instances are called with the inputs (and may offer
        ``state_dict()`` / ``load_state_dict(state)`` so that checkpoints keep their state)
    :param level: ``"sequence"`` (returns ``(B,)``) or ``"step"`` (returns ``(advantages, returns)``, ``(B, T)``)
    :param inputs: the keys of :data:`ESTIMATOR_INPUTS` it needs; it receives exactly these
    :param samples_per_context: default number of samples drawn per context (prompt)
    :param min_samples_per_context: fewest samples per context it works with (2 for group estimators)
    :param stateful: ``fn`` is a class, instantiated once per trainer by :meth:`build`
    """

    name: str
    fn: Callable[..., Any]
    level: str = "sequence"
    inputs: tuple[str, ...] = ("outcomes",)
    samples_per_context: int = 1
    min_samples_per_context: int = 1
    stateful: bool = False

    @property
    def needs_critic(self) -> bool:
        """Whether it reads a critic's output (start-state ``baselines`` or per-step ``values``)."""
        return "baselines" in self.inputs or "values" in self.inputs

    @property
    def sequence_level(self) -> bool:
        """One advantage per sequence (broadcast to its steps)."""
        return self.level == "sequence"

    def option_names(self) -> set[str] | None:
        """The options (keyword arguments that are not inputs) it accepts; ``None`` when it takes ``**kwargs``."""
        params = inspect.signature(self.fn).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        return names - set(self.inputs) if not self.stateful else names

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming the options it does not accept.

        :param options: options a user asked for explicitly (e.g. ``estimator_kwargs``)
        """
        accepted = self.option_names()
        if accepted is None:
            return
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise ValueError(
                f"The {self.name!r} estimator does not accept the option(s) {unknown}; it accepts "
                f"{sorted(accepted) or 'none'}"
            )

    def build(self, options: Mapping[str, Any] | None = None, strict: bool = False) -> Callable[..., Any]:
        """A callable ``f(**inputs) -> advantages`` with ``options`` bound.

        Options it does not accept are dropped (a caller passes its generic settings, e.g. ``gamma``, to any
        estimator), unless ``strict``. A stateful estimator is instantiated here: keep the result for the whole run.

        :param options: keyword options (``eps``, ``gamma``, ``whiten``, ...)
        :param strict: raise on options it does not accept
        """
        options = dict(options or {})
        if strict:
            self.check_options(options)
        accepted = self.option_names()
        if accepted is not None:
            options = {k: v for k, v in options.items() if k in accepted}
        if self.stateful:
            return self.fn(**options)
        return functools.partial(self.fn, **options) if options else self.fn

    def select_inputs(self, available: Mapping[str, Any]) -> dict[str, Any]:
        """The inputs it declares, taken from ``available``.

        :raises ValueError: a declared input is missing (or ``None``)
        """
        missing = [k for k in self.inputs if available.get(k) is None]
        if missing:
            raise ValueError(f"The {self.name!r} estimator needs the input(s) {missing}; got {sorted(available)}")
        return {k: available[k] for k in self.inputs}


ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {}
"""Name -> :class:`AdvantageEstimator`. Add your own with :func:`register_advantage_estimator`."""


def register_advantage_estimator(
    name: str,
    *,
    level: str = "sequence",
    inputs: Iterable[str] = ("outcomes",),
    samples_per_context: int = 1,
    min_samples_per_context: int | None = None,
) -> Callable[[Any], Any]:
    """Decorator that registers an advantage estimator (a function, or a class for a stateful one) under ``name``.

    The defaults describe the common case: one advantage per sequence, computed from the outcomes alone, no
    critic, one sample per context::

        @register_advantage_estimator("my-baseline")
        def my_baseline(outcomes, **kwargs):
            return outcomes - outcomes.mean()

    :param name: the registry key, e.g. ``"my-baseline"``
    :param level: ``"sequence"`` or ``"step"``
    :param inputs: what it needs, keys of :data:`ESTIMATOR_INPUTS` (``"baselines"`` or ``"values"`` make the
        callers provide a critic)
    :param samples_per_context: default samples per context (prompt) on the LLM side
    :param min_samples_per_context: fewest samples per context it accepts (default: 2 with ``"group_ids"``, else 1)
    :return: the decorator; it returns its argument unchanged
    :raises ValueError: ``name`` is already registered to another function, an unknown input or level
    """
    inputs = tuple(inputs)
    unknown = sorted(set(inputs) - set(ESTIMATOR_INPUTS))
    if unknown:
        raise ValueError(f"Unknown estimator input(s) {unknown}; known inputs: {sorted(ESTIMATOR_INPUTS)}")
    if level not in ESTIMATOR_LEVELS:
        raise ValueError(f"level must be one of {ESTIMATOR_LEVELS}, got {level!r}")
    if "outcomes" not in inputs and "rewards" not in inputs:
        raise ValueError(f"Estimator {name!r} must read 'outcomes' or 'rewards'")
    minimum = min_samples_per_context if min_samples_per_context is not None else (2 if "group_ids" in inputs else 1)
    if samples_per_context < minimum:
        raise ValueError(f"samples_per_context ({samples_per_context}) is below min_samples_per_context ({minimum})")

    def decorator(fn: Any) -> Any:
        existing = ADVANTAGE_ESTIMATORS.get(name)
        if existing is not None and existing.fn is not fn:
            raise ValueError(f"An advantage estimator named {name!r} is already registered")
        ADVANTAGE_ESTIMATORS[name] = AdvantageEstimator(
            name=name,
            fn=fn,
            level=level,
            inputs=inputs,
            samples_per_context=samples_per_context,
            min_samples_per_context=minimum,
            stateful=inspect.isclass(fn),
        )
        return fn

    return decorator


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    """Look an estimator up by name.

    :param name: a key of :data:`ADVANTAGE_ESTIMATORS`
    :return: the :class:`AdvantageEstimator`
    :raises ValueError: naming the known estimators, if ``name`` is unknown
    """
    try:
        return ADVANTAGE_ESTIMATORS[name]
    except (KeyError, TypeError):
        known = ", ".join(repr(k) for k in sorted(ADVANTAGE_ESTIMATORS))
        raise ValueError(f"Unknown advantage estimator {name!r}; known estimators: {known}") from None


def compute_advantages(name: str, **kwargs: Any) -> Any:
    """Call the estimator registered as ``name``: its declared inputs and its options, by keyword.

    >>> compute_advantages("sppo", outcomes=torch.tensor([1.0, 0.0]), baselines=torch.tensor([0.25, 0.25]))
    tensor([ 0.7500, -0.2500])

    :param name: the registry key
    :param kwargs: the declared inputs, plus options (e.g. ``eps=1e-6`` for ``"grpo"``), checked strictly
    :return: what the estimator returns
    """
    est = get_advantage_estimator(name)
    options = {k: v for k, v in kwargs.items() if k not in est.inputs}
    return est.build(options, strict=True)(**est.select_inputs(kwargs))


def whiten_advantages(advantages: Tensor, mask: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """Whiten advantages over the batch: ``(A - mean) / sqrt(var + eps)``, unbiased variance.

    One function for both sides (``SPPO(normalize_advantage=True)``, ``TrainerConfig.normalize_advantages``).

    :param advantages: ``(B,)`` per-sequence or ``(B, T)`` per-step advantages
    :param mask: ``(B, T)`` valid steps for per-step advantages (``None``: every entry counts)
    :param eps: added to the variance
    :return: the same shape; padding stays 0
    """
    if advantages.dim() == 1:
        return masked_whiten(advantages[:, None], torch.ones_like(advantages[:, None]), eps=eps)[:, 0]
    return masked_whiten(advantages, torch.ones_like(advantages) if mask is None else mask, eps=eps)


def _check_1d(name: str, x: Tensor) -> Tensor:
    if x.dim() != 1:
        raise ValueError(f"{name} must have shape (B,), got {tuple(x.shape)}")
    return x


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"Shapes must match: {shapes}")


# ---------------------------------------------------------------------------------------------------------
# Sequence-level estimators: one advantage per sequence, shape (B,)
# ---------------------------------------------------------------------------------------------------------


@register_advantage_estimator("sppo", inputs=("outcomes", "baselines"))
def sppo_advantages(outcomes: Tensor, baselines: Tensor) -> Tensor:
    """SPPO: ``A = R - V(s0)``, the outcome minus the critic's prediction from the start state.

    The baseline must come from the critic *before* this update and carries no gradient (it is detached
    here). No normalisation (the reference does none).

    :param outcomes: ``(B,)`` outcome ``R`` of each sequence
    :param baselines: ``(B,)`` ``V(s0)`` of each sequence (for the Bernoulli head, ``sigmoid(logit)``)
    :return: ``(B,)`` advantages
    """
    _check_1d("outcomes", outcomes)
    _check_same_shape(outcomes=outcomes, baselines=baselines)
    return outcomes - baselines.detach().to(outcomes.dtype)


@register_advantage_estimator("none")
def outcome_advantages(outcomes: Tensor) -> Tensor:
    """No baseline: ``A = R`` (REINFORCE with the raw outcome).

    :param outcomes: ``(B,)``
    :return: ``(B,)`` a copy of ``outcomes``
    """
    return _check_1d("outcomes", outcomes).clone()


@register_advantage_estimator("batch_mean")
def batch_mean_advantages(outcomes: Tensor, whiten: bool = False, eps: float = 1e-8) -> Tensor:
    """Batch-mean baseline: ``A = R - mean(R)`` over the batch (REINFORCE++'s baseline); optionally whitened.

    The baseline comes from the same batch, so no critic and no state; with ``whiten=True`` the result is divided
    by the batch's standard deviation too, ``(R - mean) / sqrt(var + eps)`` (unbiased variance), as REINFORCE++'s
    global normalisation. A batch whose outcomes all agree gets ``A = 0``.

    :param outcomes: ``(B,)``
    :param whiten: divide by the batch standard deviation
    :param eps: added to the variance when whitening
    :return: ``(B,)`` advantages
    """
    _check_1d("outcomes", outcomes)
    if whiten:
        return whiten_advantages(outcomes, eps=eps)
    return outcomes - outcomes.mean()


@register_advantage_estimator("ema")
class EMABaseline:
    """Moving-average baseline: ``A = R - b``, with ``b`` an exponential moving average of past updates' outcomes.

    ``b`` is the baseline *before* this batch: after computing the advantages it becomes
    ``decay * b + (1 - decay) * mean(R)``. The first batch has no past; its baseline is its own mean. The state
    (``b`` and the number of updates) is saved in checkpoints through :meth:`state_dict`.

    :param decay: weight of the past in the average (0: the previous batch's mean only)
    """

    def __init__(self, decay: float = 0.9) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.baseline: float | None = None
        self.updates = 0

    def __call__(self, outcomes: Tensor) -> Tensor:
        """``(B,)`` advantages of a batch of outcomes; then the average moves."""
        _check_1d("outcomes", outcomes)
        batch_mean = float(outcomes.double().mean()) if outcomes.numel() else 0.0
        baseline = batch_mean if self.baseline is None else self.baseline
        advantages = outcomes - torch.as_tensor(baseline, dtype=outcomes.dtype, device=outcomes.device)
        if outcomes.numel():
            self.baseline = (
                batch_mean if self.baseline is None else self.decay * self.baseline + (1.0 - self.decay) * batch_mean
            )
            self.updates += 1
        return advantages

    def state_dict(self) -> dict[str, Any]:
        """The average and the number of updates it has seen."""
        return {"baseline": self.baseline, "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.baseline = None if state["baseline"] is None else float(state["baseline"])
        self.updates = int(state["updates"])


def _group_index(group_ids: Tensor | Any, n: int, device: torch.device) -> tuple[Tensor, int]:
    """Map arbitrary group labels to ``0..G-1``. Returns (index (B,), G)."""
    ids = torch.as_tensor(group_ids, device=device)
    if ids.dim() != 1 or ids.shape[0] != n:
        raise ValueError(f"group_ids must have shape ({n},), got {tuple(ids.shape)}")
    _, index = torch.unique(ids, return_inverse=True)
    return index, int(index.max().item()) + 1 if n > 0 else 0


def _group_stats(outcomes: Tensor, group_ids: Tensor | Any) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample group size, group mean and unbiased group variance (0 for groups of one). Shapes (B,)."""
    index, n_groups = _group_index(group_ids, outcomes.shape[0], outcomes.device)
    x = outcomes.to(torch.float64)
    count = torch.zeros(n_groups, dtype=torch.float64, device=x.device).index_add_(0, index, torch.ones_like(x))
    total = torch.zeros(n_groups, dtype=torch.float64, device=x.device).index_add_(0, index, x)
    mean = total / count
    dev2 = (x - mean[index]) ** 2
    ss = torch.zeros(n_groups, dtype=torch.float64, device=x.device).index_add_(0, index, dev2)
    var = torch.where(count > 1, ss / (count - 1).clamp(min=1), torch.zeros_like(ss))
    return count[index], mean[index], var[index]


@register_advantage_estimator("grpo", inputs=("outcomes", "group_ids"), samples_per_context=8)
def grpo_advantages(
    outcomes: Tensor, group_ids: Tensor | Any, eps: float = 1e-6, normalize_by_std: bool = True
) -> Tensor:
    """GRPO: ``A_i = (R_i - mean_g) / (std_g + eps)`` over the samples of the same prompt.

    ``std_g`` is the *unbiased* standard deviation (divides by ``n - 1``, as ``torch.std`` and verl). A group
    of one sample gets ``A = R`` exactly (verl uses mean 0 and std 1 there). A group whose samples all agree
    gets ``A = 0``. With ``normalize_by_std=False`` the result is ``R_i - mean_g`` (Dr. GRPO).

    :param outcomes: ``(B,)`` outcome of each sample
    :param group_ids: ``(B,)`` labels (ints, or anything ``torch.unique`` accepts); equal labels form a group
    :param eps: added to the std
    :param normalize_by_std: divide by the group std
    :return: ``(B,)`` advantages, in the dtype of ``outcomes``
    """
    _check_1d("outcomes", outcomes)
    count, mean, var = _group_stats(outcomes, group_ids)
    x = outcomes.to(torch.float64)
    centred = x - mean
    adv = centred / (var.sqrt() + eps) if normalize_by_std else centred
    adv = torch.where(count > 1, adv, x)
    return adv.to(outcomes.dtype)


@register_advantage_estimator("dr_grpo", inputs=("outcomes", "group_ids"), samples_per_context=8)
def dr_grpo_advantages(outcomes: Tensor, group_ids: Tensor | Any) -> Tensor:
    """Dr. GRPO (Liu et al., 2025): ``A_i = R_i - mean_g``, GRPO without the division by the group std.

    Pair it with ``loss_agg_mode="seq-mean-token-sum-norm"`` (a constant length normaliser instead of each
    response's own length), the paper's second change. A group of one sample gets ``A = R`` (as ``"grpo"``).

    :param outcomes: ``(B,)``
    :param group_ids: ``(B,)`` group labels
    :return: ``(B,)`` advantages
    """
    return grpo_advantages(outcomes, group_ids, normalize_by_std=False)


@register_advantage_estimator("rloo", inputs=("outcomes", "group_ids"), samples_per_context=5)
def rloo_advantages(outcomes: Tensor, group_ids: Tensor | Any) -> Tensor:
    """RLOO: ``A_i = R_i - mean_{j != i} R_j = n / (n - 1) * (R_i - mean_g)``.

    A group of one sample has no other sample to compare with and gets ``A = R`` (as verl).

    :param outcomes: ``(B,)``
    :param group_ids: ``(B,)`` group labels
    :return: ``(B,)`` advantages
    """
    _check_1d("outcomes", outcomes)
    count, mean, _ = _group_stats(outcomes, group_ids)
    x = outcomes.to(torch.float64)
    adv = count / (count - 1).clamp(min=1) * (x - mean)
    adv = torch.where(count > 1, adv, x)
    return adv.to(outcomes.dtype)


@register_advantage_estimator("remax", inputs=("outcomes", "greedy_outcomes"))
def remax_advantages(outcomes: Tensor, greedy_outcomes: Tensor) -> Tensor:
    """ReMax: ``A = R - R_greedy``, where ``R_greedy`` scores a greedy (argmax) sample of the same prompt.

    :param outcomes: ``(B,)`` outcome of the sampled sequence
    :param greedy_outcomes: ``(B,)`` outcome of the greedy sequence for the same context
    :return: ``(B,)`` advantages
    """
    _check_1d("outcomes", outcomes)
    _check_same_shape(outcomes=outcomes, greedy_outcomes=greedy_outcomes)
    return outcomes - greedy_outcomes.to(outcomes.dtype)


def broadcast_to_steps(advantages: Tensor, mask: Tensor) -> Tensor:
    """Give each sequence's scalar advantage to every valid step of it; padding gets 0.

    :param advantages: ``(B,)``
    :param mask: ``(B, T)``
    :return: ``(B, T)``
    """
    _check_1d("advantages", advantages)
    if mask.dim() != 2 or mask.shape[0] != advantages.shape[0]:
        raise ValueError(f"mask must have shape ({advantages.shape[0]}, T), got {tuple(mask.shape)}")
    return advantages[:, None] * mask.to(advantages.dtype)


# ---------------------------------------------------------------------------------------------------------
# Step-level estimator: GAE (token-level PPO)
# ---------------------------------------------------------------------------------------------------------


def masked_mean(values: Tensor, mask: Tensor | None, dim: int | None = None) -> Tensor:
    """Mean of ``values`` over positions where ``mask`` is 1 (over ``dim``, or all); ``mask=None``: every position."""
    if mask is None:
        return values.mean() if dim is None else values.mean(dim)
    m = mask.to(values.dtype)
    if dim is None:
        return (values * m).sum() / m.sum().clamp(min=1)
    return (values * m).sum(dim) / m.sum(dim).clamp(min=1)


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Whiten over the valid positions: ``(x - mean) / sqrt(var + eps)``, var unbiased. Padding becomes 0.

    :param values: ``(B, T)``
    :param mask: ``(B, T)``
    :param shift_mean: subtract the mean (if False, the mean is added back after scaling, as verl)
    :param eps: added to the variance
    :return: ``(B, T)``
    """
    m = mask.to(values.dtype)
    n = m.sum()
    mean = (values * m).sum() / n.clamp(min=1)
    var = (((values - mean) ** 2) * m).sum() / (n - 1).clamp(min=1)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * m


@register_advantage_estimator("gae", level="step", inputs=("rewards", "values", "mask"))
def gae_advantages(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    gamma: float = 1.0,
    lam: float = 1.0,
    whiten: bool = True,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over the valid steps of each sequence (token-level PPO).

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` with ``V`` past the last valid step taken as 0 (the sequence
    ends there), ``A_t = delta_t + gamma * lam * A_{t+1}``; returns ``A_t + V_t``. With
    ``gamma = lam = 1`` this is ``A_t = G_t - V_t`` (the "tail effect" setting of the paper). Valid steps
    must form a contiguous prefix of each row (right padding).

    :param rewards: ``(B, T)`` per-step rewards (an outcome is the reward of the last valid step)
    :param values: ``(B, T)`` per-step critic values
    :param mask: ``(B, T)``
    :param gamma: discount
    :param lam: GAE lambda
    :param whiten: whiten the advantages over the batch (verl's token-level PPO does)
    :return: ``(advantages, returns)``, both ``(B, T)``, 0 on padding
    """
    _check_same_shape(rewards=rewards, values=values, mask=mask)
    m = mask.to(rewards.dtype)
    values = values.detach().to(rewards.dtype) * m
    rewards = rewards * m
    n_steps = rewards.shape[1]
    next_value = torch.zeros_like(rewards[:, 0])
    next_adv = torch.zeros_like(rewards[:, 0])
    adv_reversed = []
    for t in reversed(range(n_steps)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = (delta + gamma * lam * next_adv) * m[:, t]
        adv_reversed.append(adv_t)
        # a padded step passes nothing back to the step before it
        next_value = values[:, t]
        next_adv = adv_t
    advantages = torch.stack(adv_reversed[::-1], dim=1)
    returns = (advantages + values) * m
    if whiten:
        advantages = masked_whiten(advantages, mask)
    return advantages, returns


register_advantage_estimator("ppo", level="step", inputs=("rewards", "values", "mask"))(gae_advantages)


# ---------------------------------------------------------------------------------------------------------
# Value loss of a per-step critic (token-level PPO)
# ---------------------------------------------------------------------------------------------------------


@dataclass
class ValueLossOutput:
    """What :func:`clipped_value_loss` returns: the loss (with gradient) and a detached statistic."""

    loss: Tensor
    """Scalar loss to minimise."""
    clip_fraction: Tensor
    """Fraction of valid steps where the clipped prediction has the larger error (the clipped branch is active)."""


def clipped_value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_range: float | None = 0.5,
    loss_agg_mode: str = "token-mean",
    norm_length: int | None = None,
) -> ValueLossOutput:
    """Squared error of a raw (unbounded) value prediction, with PPO's value clipping.

    Per step, with ``c = clip_range``: ``v_clip = old + clip(v - old, -c, c)`` and
    ``l_t = max((v - G)^2, (v_clip - G)^2)``: the prediction may not move further than ``c`` from the value it had
    when the batch was collected unless that lowers neither error. ``clip_range=None`` gives the plain squared error
    ``(v - G)^2``; aggregated by ``loss_agg_mode``, ``"token-mean"`` is then the mean squared error. (verl multiplies
    the same loss by 0.5; under Adam a constant factor changes nothing but the effect of gradient clipping.)

    :param values: ``(B, T)`` current predictions (with gradient)
    :param old_values: ``(B, T)`` predictions of the critic that collected the batch (no gradient)
    :param returns: ``(B, T)`` targets ``G_t`` (GAE's returns: ``A_t + V_t``)
    :param mask: ``(B, T)``
    :param clip_range: ``c`` (the paper's standard PPO: 0.5), or ``None`` for no clipping
    :param loss_agg_mode: one of :data:`LOSS_AGG_MODES`
    :param norm_length: the constant length of ``"seq-mean-token-sum-norm"`` (see :func:`aggregate_loss`)
    :return: :class:`ValueLossOutput`
    """
    _check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    if clip_range is not None and clip_range <= 0:
        raise ValueError(f"clip_range must be > 0 or None, got {clip_range}")
    returns = returns.detach().to(values.dtype)
    error = (values - returns) ** 2
    clipped = torch.zeros_like(error, dtype=torch.bool)
    if clip_range is not None:
        old = old_values.detach().to(values.dtype)
        error_clipped = (old + torch.clamp(values - old, -clip_range, clip_range) - returns) ** 2
        clipped = error_clipped > error
        error = torch.maximum(error, error_clipped)
    loss = aggregate_loss(error, mask, loss_agg_mode, norm_length)
    with torch.no_grad():
        return ValueLossOutput(loss=loss, clip_fraction=masked_mean(clipped.to(values.dtype), mask))


# ---------------------------------------------------------------------------------------------------------
# Clipped policy loss
# ---------------------------------------------------------------------------------------------------------


def aggregate_loss(
    loss_mat: Tensor, mask: Tensor | None, loss_agg_mode: str = "token-mean", norm_length: int | None = None
) -> Tensor:
    """Reduce a ``(B, T)`` matrix of per-step losses to a scalar (see :data:`LOSS_AGG_MODES`).

    Sequences without any valid step are left out of the sequence means.

    :param loss_mat: ``(B, T)``
    :param mask: ``(B, T)``, or ``None`` when every position is valid (e.g. a flat ``(1, n)`` row of steps for
        ``"token-mean"``, which needs no padding)
    :param loss_agg_mode: one of :data:`LOSS_AGG_MODES`
    :param norm_length: the constant length of ``"seq-mean-token-sum-norm"`` (``None``: ``T``); keep it fixed over
        a run (e.g. the response limit), so that micro-batches of different widths agree
    :return: scalar tensor
    """
    if mask is None:
        if loss_agg_mode == "token-mean":
            return loss_mat.mean()
        mask = torch.ones_like(loss_mat)
    m = mask.to(loss_mat.dtype)
    if loss_agg_mode == "token-mean":
        return (loss_mat * m).sum() / m.sum().clamp(min=1)
    seq_len = m.sum(dim=-1)
    seq_sum = (loss_mat * m).sum(dim=-1)
    nonempty = (seq_len > 0).to(loss_mat.dtype)
    n_seq = nonempty.sum().clamp(min=1)
    if loss_agg_mode == "seq-mean-token-mean":
        return (seq_sum / seq_len.clamp(min=1) * nonempty).sum() / n_seq
    if loss_agg_mode == "seq-mean-token-sum":
        return (seq_sum * nonempty).sum() / n_seq
    if loss_agg_mode == "seq-mean-token-sum-norm":
        length = mask.shape[-1] if norm_length is None else norm_length
        if length < 1:
            raise ValueError(f"norm_length must be >= 1, got {length}")
        return (seq_sum * nonempty).sum() / (n_seq * length)
    raise ValueError(f"Unknown loss_agg_mode {loss_agg_mode!r}; choose one of {', '.join(LOSS_AGG_MODES)}")


@dataclass
class PolicyLossOutput:
    """What :func:`clipped_policy_loss` returns: the loss (with gradient) and detached statistics."""

    loss: Tensor
    """Scalar loss to minimise."""
    clip_fraction: Tensor
    """Fraction of valid steps where the clipped branch of the surrogate is the active one."""
    dual_clip_fraction: Tensor
    """Fraction of valid steps where the dual clip (negative advantages) is active."""
    approx_kl: Tensor
    """``mean((r - 1) - log r)`` over valid steps: the non-negative k3 estimate of KL(old || new), as SB3."""
    ratio_mean: Tensor
    """Mean probability ratio over valid steps."""


def clipped_policy_loss(
    log_prob: Tensor,
    old_log_prob: Tensor,
    advantages: Tensor,
    mask: Tensor | None,
    clip_range: float = 0.2,
    clip_range_high: float | None = None,
    dual_clip: float | None = None,
    log_ratio_clamp: float | None = 20.0,
    loss_agg_mode: str = "token-mean",
    norm_length: int | None = None,
) -> PolicyLossOutput:
    """PPO clipped surrogate with per-step ratios ``r_t = exp(log_prob - old_log_prob)``.

    Per step: ``l_t = max(-A_t r_t, -A_t clip(r_t, 1 - eps_low, 1 + eps_high))``; with ``dual_clip = c``
    (> 1), steps with ``A_t < 0`` use ``min(l_t, -A_t c)`` so that a huge ratio cannot make the loss
    unbounded. The log-ratio is clamped to ``[-log_ratio_clamp, log_ratio_clamp]`` before the exponential
    (numerical safety). The per-step losses are aggregated by ``loss_agg_mode``.

    :param log_prob: ``(B, T)`` log-probabilities under the current policy (with gradient)
    :param old_log_prob: ``(B, T)`` log-probabilities under the behaviour policy
    :param advantages: ``(B, T)`` per-step advantages (a sequence-level one broadcast with
        :func:`broadcast_to_steps`)
    :param mask: ``(B, T)``, or ``None`` when every position is valid (no padding)
    :param clip_range: ``eps_low``
    :param clip_range_high: ``eps_high``; ``None`` means ``clip_range`` (symmetric)
    :param dual_clip: the dual-clip constant ``c`` (> 1, e.g. 3.0), or ``None`` for none
    :param log_ratio_clamp: clamp bound for the log-ratio, or ``None`` for none
    :param loss_agg_mode: one of :data:`LOSS_AGG_MODES`
    :param norm_length: the constant length of ``"seq-mean-token-sum-norm"`` (see :func:`aggregate_loss`)
    :return: :class:`PolicyLossOutput`
    """
    shapes = dict(log_prob=log_prob, old_log_prob=old_log_prob, advantages=advantages)
    _check_same_shape(**shapes, **({} if mask is None else {"mask": mask}))
    if clip_range <= 0:
        raise ValueError(f"clip_range must be > 0, got {clip_range}")
    eps_high = clip_range if clip_range_high is None else clip_range_high
    if eps_high <= 0:
        raise ValueError(f"clip_range_high must be > 0, got {eps_high}")
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1.0 (e.g. 3.0) or None, got {dual_clip}")
    if loss_agg_mode not in LOSS_AGG_MODES:
        raise ValueError(f"Unknown loss_agg_mode {loss_agg_mode!r}; choose one of {', '.join(LOSS_AGG_MODES)}")

    advantages = advantages.detach()
    log_ratio = log_prob - old_log_prob.detach()
    if log_ratio_clamp is not None:
        log_ratio = torch.clamp(log_ratio, -log_ratio_clamp, log_ratio_clamp)
    ratio = torch.exp(log_ratio)

    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + eps_high)
    loss_mat = torch.maximum(loss_unclipped, loss_clipped)
    clipped = loss_clipped > loss_unclipped
    dual = torch.zeros_like(clipped)
    if dual_clip is not None:
        loss_dual = -advantages * dual_clip
        dual = (advantages < 0) & (loss_mat > loss_dual)
        loss_mat = torch.where(advantages < 0, torch.minimum(loss_mat, loss_dual), loss_mat)

    loss = aggregate_loss(loss_mat, mask, loss_agg_mode, norm_length)
    with torch.no_grad():
        m = None if mask is None else mask.to(ratio.dtype)
        approx_kl = masked_mean((ratio - 1.0) - log_ratio, m)
        return PolicyLossOutput(
            loss=loss,
            clip_fraction=masked_mean(clipped.to(ratio.dtype), m),
            dual_clip_fraction=masked_mean(dual.to(ratio.dtype), m),
            approx_kl=approx_kl,
            ratio_mean=masked_mean(ratio, m),
        )


def kl_penalty(log_prob: Tensor, ref_log_prob: Tensor, kind: str = "k3") -> Tensor:
    """Per-step KL estimate between the current policy and a reference policy, from sampled tokens.

    - ``"k1"``: ``log p - log p_ref`` (unbiased, can be negative);
    - ``"k3"``: ``exp(log p_ref - log p) - (log p_ref - log p) - 1`` (non-negative, low variance; GRPO's).

    :param log_prob: ``(B, T)`` current policy log-probs of the sampled tokens
    :param ref_log_prob: ``(B, T)`` reference policy log-probs of the same tokens
    :param kind: ``"k1"`` or ``"k3"``
    :return: ``(B, T)``; aggregate with :func:`aggregate_loss`
    """
    _check_same_shape(log_prob=log_prob, ref_log_prob=ref_log_prob)
    if kind == "k1":
        return log_prob - ref_log_prob
    if kind == "k3":
        diff = torch.clamp(ref_log_prob - log_prob, -20.0, 20.0)
        return torch.exp(diff) - diff - 1.0
    raise ValueError(f"Unknown KL estimator {kind!r}; choose 'k1' or 'k3'")
