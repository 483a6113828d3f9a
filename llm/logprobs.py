"""Log-probabilities of response tokens under a policy, recomputed by a forward pass of the training model.

The behaviour log-probs ``log pi_old(a_t | ...)`` are *recomputed* with the training model (not taken from the
sampler, which may be another engine or a merged copy), at the sampling temperature. :func:`sequence_logprobs`
evaluates the output head and the log-softmax over chunks of response positions: the ``positions x vocab`` logits
never exist for the whole batch at once, and under autograd every chunk is recomputed in the backward pass
(activation checkpointing), so memory stays bounded for long responses and large vocabularies.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .models import PolicyModel
from .sequences import Rollout, position_ids_from_mask

__all__ = ["policy_logprobs", "sequence_logprobs"]

Tensor = torch.Tensor


def _chunk_logprobs(
    hidden: Tensor, targets: Tensor, head: nn.Module, temperature: float, softcap: float | None, with_entropy: bool
) -> tuple[Tensor, Tensor | None]:
    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    if temperature != 1.0:
        logits = logits / temperature
    log_norm = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets[:, None]).squeeze(-1) - log_norm
    entropy = None
    if with_entropy:
        entropy = log_norm - (torch.softmax(logits, -1) * logits).sum(-1)
    return logp, entropy


def sequence_logprobs(
    decoder: nn.Module,
    head: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    n_prompt: int,
    response_mask: Tensor,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    softcap: float | None = None,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-probabilities (and optionally entropies) of the response tokens, computed in chunks.

    One forward pass of ``decoder`` gives the hidden states; the hidden state before each *valid* response
    token goes through ``head`` and a log-softmax in chunks of ``chunk_size`` positions. With gradients on,
    each chunk is wrapped in activation checkpointing, so only one chunk of logits is alive at a time.

    :param decoder: the transformer trunk (returns ``last_hidden_state``)
    :param head: the output projection to the vocabulary
    :param input_ids: ``(B, P + T)`` prompt then response
    :param attention_mask: ``(B, P + T)``
    :param n_prompt: ``P``
    :param response_mask: ``(B, T)``
    :param temperature: logits are divided by it (the sampling temperature)
    :param chunk_size: positions per chunk
    :param softcap: final-logit soft-cap of the model (``tanh(l / c) * c``), if any
    :param with_entropy: also return the entropy of each position's distribution (with gradient when gradients
        are on: the entropy bonus)
    :return: ``(logp (B, T) float32, entropy (B, T) or None)``, 0 on padding
    """
    n_response = response_mask.shape[1]
    position_ids = position_ids_from_mask(attention_mask)
    hidden = decoder(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    h = hidden[:, n_prompt - 1 : n_prompt - 1 + n_response]
    targets = input_ids[:, n_prompt : n_prompt + n_response]
    valid = response_mask.bool()
    flat_h, flat_t = h[valid], targets[valid]
    logps, ents = [], []
    grad = torch.is_grad_enabled()
    for start in range(0, flat_h.shape[0], chunk_size):
        hs, ts = flat_h[start : start + chunk_size], flat_t[start : start + chunk_size]
        if grad:
            lp, ent = checkpoint(_chunk_logprobs, hs, ts, head, temperature, softcap, with_entropy, use_reentrant=False)
            if ent is not None:
                ents.append(ent)
        else:
            lp, ent = _chunk_logprobs(hs, ts, head, temperature, softcap, with_entropy)
            if ent is not None:
                ents.append(ent)
        logps.append(lp)
    zeros = torch.zeros(response_mask.shape, dtype=torch.float32, device=input_ids.device)
    flat_lp = torch.cat(logps) if logps else zeros[valid]
    logp = zeros.masked_scatter(valid, flat_lp)
    entropy = zeros.masked_scatter(valid, torch.cat(ents)) if with_entropy and ents else None
    return logp, entropy


def policy_logprobs(
    policy: PolicyModel,
    rollout: Rollout,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """:func:`sequence_logprobs` of a rollout under the policy's active weights (in its mixed precision).

    :param policy: the policy
    :param rollout: prompts and responses
    :param temperature: the sampling temperature
    :param chunk_size: response positions per log-softmax chunk
    :param with_entropy: also return the entropies
    :return: ``(logp (B, T), entropy (B, T) or None)``
    """
    decoder, head, softcap = policy.parts
    with policy.autocast():
        return sequence_logprobs(
            decoder,
            head,
            rollout.input_ids,
            rollout.attention_mask,
            rollout.n_prompt,
            rollout.response_mask,
            temperature=temperature,
            chunk_size=chunk_size,
            softcap=softcap,
            with_entropy=with_entropy,
        )
