"""The two updates of an iteration: the critic on ``(prompt, R)`` pairs, then the policy with the clipped surrogate.

Both go over the batch in mini-batches (one optimizer step each) of micro-batches (forward/backward passes whose
gradients are accumulated). Each micro-batch's loss is weighted so that the accumulated gradient equals the
gradient of the loss over the whole mini-batch: by its share of the mini-batch's tokens for ``token-mean``, by its
share of the sequences for the sequence-mean modes. On several ranks each mini-batch is cut into equal parts, one
per rank; the shares are of the *global* mini-batch and the ranks' gradients are summed before the optimizer step
(:meth:`~sppo_rl.llm.distributed.Distributed.sync_gradients`), so the step is the one a single process takes.

All the math is :mod:`sppo_rl.objectives` (:func:`~sppo_rl.objectives.clipped_policy_loss`,
:func:`~sppo_rl.objectives.kl_penalty`, :func:`~sppo_rl.objectives.aggregate_loss`,
:func:`~sppo_rl.objectives.clipped_value_loss`) and the critic's value head
(:meth:`~sppo_rl.value_heads.ValueHead.loss_from_output`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from sppo_rl.objectives import aggregate_loss, clipped_policy_loss, clipped_value_loss, kl_penalty

from .config import TrainerConfig
from .critic import LMCritic
from .distributed import Distributed
from .models import train_mode
from .rollout import RolloutBatch, chunks, trim_left

__all__ = ["clip_gradients", "update_critic", "update_policy"]

Tensor = torch.Tensor
LogprobFn = Callable[..., tuple[Tensor, Tensor | None]]


def clip_gradients(params: list[nn.Parameter], max_norm: float | None) -> float:
    """Clip the gradients' global norm to ``max_norm`` (``None``: no clipping) and return the norm before."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm is not None else math.inf)
    return float(norm)


def update_critic(
    critic: LMCritic,
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    batch: RolloutBatch,
    config: TrainerConfig,
    generator: torch.Generator,
    dist: Distributed | None = None,
) -> dict[str, float]:
    """Train the critic with its head's loss: on ``(prompt, R)`` pairs, or on per-token returns when the
    estimator is step-level (``batch.returns`` is set); there, with ``config.value_clip_range`` set (the ``"ppo"``
    estimator), with :func:`~sppo_rl.objectives.clipped_value_loss` around the batch's old values instead.

    :param critic: the critic
    :param optimizer: its optimizer
    :param params: its trainable parameters (for gradient clipping)
    :param batch: the iteration's data
    :param config: batch sizes, epochs, clipping
    :param generator: the shuffling generator (shared with the policy update)
    :param dist: the ranks (``None``: one process)
    :return: ``train/value_loss``, ``train/critic_grad_norm`` and, with value clipping, ``train/value_clip_fraction``
    """
    dist = dist or Distributed()
    device = batch.outcomes.device
    critic.head.update_statistics(batch.outcomes)
    n = config.samples_per_prompt
    mb = (config.critic_mini_batch_size or config.mini_batch_size or config.prompts_per_step) * n
    micro = config.critic_micro_batch_size or config.micro_batch_size
    clip = config.value_clip_range if batch.returns is not None else None
    sums = {"loss": 0.0, "weight": 0.0, "clip": 0.0}
    norms = []
    with train_mode(critic.backbone), critic.active():
        for _ in range(config.critic_epochs or config.n_epochs):
            perm = torch.randperm(batch.size, generator=generator).to(device)
            for mini in chunks(perm, mb):
                optimizer.zero_grad(set_to_none=True)
                total_tokens = batch.rollout.response_mask[mini].sum().clamp(min=1)
                for idx in chunks(mini[dist.block(len(mini))], micro):
                    if batch.returns is not None:
                        sub = batch.rollout.select(idx)
                        width = sub.response_mask.shape[1]
                        out = critic.token_outputs(sub.input_ids, sub.attention_mask, sub.n_prompt, width)
                        valid = sub.response_mask.bool()
                        if clip is not None:  # standard PPO: squared error, clipped around the old values
                            if batch.values is None:
                                raise RuntimeError("Value clipping needs the batch's old per-token values")
                            value_loss = clipped_value_loss(
                                out,
                                batch.values[idx, :width].to(out.device),
                                batch.returns[idx, :width].to(out.device),
                                valid.to(out.device, out.dtype),
                                clip_range=clip,
                            )
                            loss = value_loss.loss
                            sums["clip"] += float(value_loss.clip_fraction) * float(valid.sum() / total_tokens)
                        else:
                            loss = critic.head.loss_from_output(out[valid], batch.returns[idx, :width][valid])
                        weight = valid.sum() / total_tokens
                    else:
                        if batch.critic_inputs is None:
                            raise RuntimeError("The critic update needs the critic's encoded prompts")
                        cidx = idx.to(batch.critic_inputs.input_ids.device)
                        ids, mask = trim_left(
                            batch.critic_inputs.input_ids[cidx], batch.critic_inputs.attention_mask[cidx]
                        )
                        out = critic.prompt_outputs(ids, mask)
                        loss = critic.head.loss_from_output(out, batch.outcomes[idx].to(out.device))
                        weight = torch.tensor(len(idx) / len(mini))
                    (loss * weight.to(loss.device)).backward()
                    sums["loss"] += float(loss.detach()) * float(weight)
                    sums["weight"] += float(weight)
                dist.sync_gradients(params)
                norms.append(clip_gradients(params, config.critic_max_grad_norm))
                optimizer.step()
    optimizer.zero_grad(set_to_none=True)  # no gradients held through the rest of the iteration
    sums = dist.sum_values(sums)
    metrics = {
        "train/value_loss": sums["loss"] / (sums["weight"] or 1.0),
        "train/critic_grad_norm": float(np.mean(norms)) if norms else 0.0,
    }
    if clip is not None:
        metrics["train/value_clip_fraction"] = sums["clip"] / (sums["weight"] or 1.0)
    return metrics


def update_policy(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    batch: RolloutBatch,
    config: TrainerConfig,
    generator: torch.Generator,
    logprobs: LogprobFn,
    dist: Distributed | None = None,
) -> dict[str, float]:
    """PPO epochs over mini-batches (one optimizer step each) of micro-batches (accumulated gradients).

    :param model: the policy's model (put in training mode, dropout off, for the passes)
    :param optimizer: the policy optimizer
    :param params: its trainable parameters (for gradient clipping)
    :param batch: the iteration's data (behaviour log-probs, advantages, reference log-probs for KL)
    :param config: batch sizes, epochs, clipping, loss settings
    :param generator: the shuffling generator (shared with the critic update)
    :param logprobs: ``logprobs(rollout) -> (logp (b, t) with gradient, entropy or None)``
    :param dist: the ranks (``None``: one process)
    :return: the weighted means of the loss statistics, and ``train/grad_norm``
    """
    dist = dist or Distributed()
    if batch.advantages is None:
        raise ValueError("The batch has no advantages (RolloutCollector.finish computes them)")
    n = config.samples_per_prompt
    mb = (config.mini_batch_size or config.prompts_per_step) * n
    mask_all = batch.rollout.response_mask
    device = mask_all.device
    if config.mask_truncated_completions:  # DAPO: responses cut at the limit teach the policy nothing
        mask_all = mask_all * (~batch.rollout.truncated).to(mask_all.dtype)[:, None]
    norm_length = config.generation.max_new_tokens
    entropy_bonus = config.entropy_coef > 0
    sums: dict[str, float] = {}
    norms: list[float] = []
    with train_mode(model):
        for _ in range(config.n_epochs):
            perm = torch.randperm(batch.size, generator=generator).to(device)
            for mini in chunks(perm, mb):
                optimizer.zero_grad(set_to_none=True)
                m = mask_all[mini]
                n_tokens = m.sum().clamp(min=1)
                n_seqs = (m.sum(-1) > 0).sum().clamp(min=1)
                for idx in chunks(mini[dist.block(len(mini))], config.micro_batch_size):
                    sub = batch.rollout.select(idx)
                    width = sub.response_mask.shape[1]
                    mask = mask_all[idx, :width].to(torch.float32)
                    logp, entropy = logprobs(sub, with_entropy=entropy_bonus)
                    out = clipped_policy_loss(
                        logp,
                        batch.old_logp[idx, :width],
                        batch.advantages[idx, :width],
                        mask,
                        clip_range=config.clip_range,
                        clip_range_high=config.clip_range_high,
                        dual_clip=config.dual_clip,
                        log_ratio_clamp=config.log_ratio_clamp,
                        loss_agg_mode=config.loss_agg_mode,
                        norm_length=norm_length,
                    )
                    loss = out.loss
                    stats = {
                        "train/policy_gradient_loss": out.loss,
                        "train/clip_fraction": out.clip_fraction,
                        "train/dual_clip_fraction": out.dual_clip_fraction,
                        "train/approx_kl": out.approx_kl,
                        "train/ratio_mean": out.ratio_mean,
                    }
                    if config.kl_coef > 0:
                        if batch.ref_logp is None:
                            raise RuntimeError("kl_coef > 0 needs the reference log-probs of the batch")
                        kl = aggregate_loss(
                            kl_penalty(logp, batch.ref_logp[idx, :width], config.kl_estimator),
                            mask,
                            config.loss_agg_mode,
                            norm_length,
                        )
                        loss = loss + config.kl_coef * kl
                        stats["train/kl_ref"] = kl
                    if entropy is not None:
                        mean_entropy = aggregate_loss(entropy, mask, config.loss_agg_mode, norm_length)
                        loss = loss - config.entropy_coef * mean_entropy
                        stats["train/entropy_loss"] = -mean_entropy
                    if config.loss_agg_mode == "token-mean":
                        weight = mask.sum() / n_tokens
                    else:
                        weight = (mask.sum(-1) > 0).sum() / n_seqs
                    (loss * weight).backward()
                    w = float(weight)
                    sums["_weight"] = sums.get("_weight", 0.0) + w
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + w * float(v.detach())
                dist.sync_gradients(params)
                norms.append(clip_gradients(params, config.max_grad_norm))
                optimizer.step()
    sums = dist.sum_values(sums)
    total_weight = sums.pop("_weight", 0.0)
    metrics = {k: v / max(total_weight, 1e-12) for k, v in sums.items()}
    metrics["train/grad_norm"] = float(np.mean(norms)) if norms else 0.0
    return metrics
