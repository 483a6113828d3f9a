"""The shared math of sppo-rl: advantage estimators and the clipped policy loss.

Written once, used by both the stable-baselines3 algorithm (:class:`sppo_rl.SPPO`) and the LLM trainer
(:mod:`sppo_rl.llm`). Torch only: no SB3, no transformers.

Shapes used in the docstrings:

- ``B``: number of sequences (episodes or prompt/response pairs) in the batch;
- ``T``: padded sequence length (steps or response tokens);
- ``mask``: ``(B, T)``, 1 on real steps/tokens and 0 on padding.

Sequence-level estimators return one advantage per sequence, shape ``(B,)``; :func:`broadcast_to_steps`
gives it to every step of its sequence. Step-level estimators (GAE) return ``(B, T)``.

Registry (a string picks the estimator, as in verl's ``core_algos``)::

    "sppo"   A = R - V(s0)                                  (R, baselines)
    "grpo"   A = (R - mean_g) / (std_g + eps), unbiased std  (R, group ids)
    "rloo"   A = R - mean of the other samples of the group  (R, group ids)
    "remax"  A = R - R_greedy                                (R, greedy outcomes)
    "none"   A = R                                           (R)
    "gae"    GAE(gamma, lambda) over steps, optionally whitened (rewards, values, mask)

The loss is the PPO clipped surrogate with an asymmetric clip range, an optional dual clip for negative
advantages and a clamp on the log-ratio, aggregated over the batch by one of :data:`LOSS_AGG_MODES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

Tensor = torch.Tensor

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "LOSS_AGG_MODES",
    "PolicyLossOutput",
    "aggregate_loss",
    "broadcast_to_steps",
    "clipped_policy_loss",
    "compute_advantages",
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
]

ADVANTAGE_ESTIMATORS: dict[str, Callable[..., Any]] = {}
"""Name -> estimator function. Add your own with :func:`register_advantage_estimator`."""

#: Estimators that give one advantage per sequence (the others are per step).
SEQUENCE_LEVEL_ESTIMATORS = ("sppo", "grpo", "rloo", "remax", "none")

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
"""How per-step losses become one scalar:

- ``"token-mean"``: mean over every valid step/token of the batch (long sequences weigh more; verl's default
  and the SPPO reference);
- ``"seq-mean-token-mean"``: mean over the steps of each sequence, then mean over sequences (every sequence
  weighs the same; the original GRPO);
- ``"seq-mean-token-sum"``: sum over the steps of each sequence, then mean over sequences.
"""


def register_advantage_estimator(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that registers an advantage estimator under ``name``.

    :param name: the registry key, e.g. ``"my-baseline"``
    :return: the decorator; it returns the function unchanged
    :raises ValueError: if ``name`` is already registered
    """

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in ADVANTAGE_ESTIMATORS and ADVANTAGE_ESTIMATORS[name] is not fn:
            raise ValueError(f"An advantage estimator named {name!r} is already registered")
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return decorator


def get_advantage_estimator(name: str) -> Callable[..., Any]:
    """Look an estimator up by name.

    :param name: a key of :data:`ADVANTAGE_ESTIMATORS`
    :return: the estimator function
    :raises ValueError: naming the known estimators, if ``name`` is unknown
    """
    try:
        return ADVANTAGE_ESTIMATORS[name]
    except KeyError:
        known = ", ".join(repr(k) for k in sorted(ADVANTAGE_ESTIMATORS))
        raise ValueError(f"Unknown advantage estimator {name!r}; known estimators: {known}") from None


def compute_advantages(name: str, **kwargs: Any) -> Any:
    """Call the estimator registered as ``name`` with keyword arguments.

    >>> compute_advantages("sppo", outcomes=torch.tensor([1.0, 0.0]), baselines=torch.tensor([0.25, 0.25]))
    tensor([ 0.7500, -0.2500])
    """
    return get_advantage_estimator(name)(**kwargs)


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


@register_advantage_estimator("sppo")
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


@register_advantage_estimator("grpo")
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


@register_advantage_estimator("rloo")
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


@register_advantage_estimator("remax")
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


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` over positions where ``mask`` is 1 (over ``dim``, or all)."""
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


@register_advantage_estimator("gae")
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


# ---------------------------------------------------------------------------------------------------------
# Clipped policy loss
# ---------------------------------------------------------------------------------------------------------


def aggregate_loss(loss_mat: Tensor, mask: Tensor, loss_agg_mode: str = "token-mean") -> Tensor:
    """Reduce a ``(B, T)`` matrix of per-step losses to a scalar (see :data:`LOSS_AGG_MODES`).

    Sequences without any valid step are left out of the sequence means.

    :param loss_mat: ``(B, T)``
    :param mask: ``(B, T)``
    :param loss_agg_mode: one of :data:`LOSS_AGG_MODES`
    :return: scalar tensor
    """
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
    mask: Tensor,
    clip_range: float = 0.2,
    clip_range_high: float | None = None,
    dual_clip: float | None = None,
    log_ratio_clamp: float | None = 20.0,
    loss_agg_mode: str = "token-mean",
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
    :param mask: ``(B, T)``
    :param clip_range: ``eps_low``
    :param clip_range_high: ``eps_high``; ``None`` means ``clip_range`` (symmetric)
    :param dual_clip: the dual-clip constant ``c`` (> 1, e.g. 3.0), or ``None`` for none
    :param log_ratio_clamp: clamp bound for the log-ratio, or ``None`` for none
    :param loss_agg_mode: one of :data:`LOSS_AGG_MODES`
    :return: :class:`PolicyLossOutput`
    """
    _check_same_shape(log_prob=log_prob, old_log_prob=old_log_prob, advantages=advantages, mask=mask)
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

    loss = aggregate_loss(loss_mat, mask, loss_agg_mode)
    with torch.no_grad():
        m = mask.to(ratio.dtype)
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
