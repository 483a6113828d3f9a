"""Prompt encoding, batched sampling with left padding, and chunked log-probabilities.

Layout of a batch of ``B`` prompt/response pairs (``P`` prompt columns, ``T`` response columns)::

    prompt_ids   (B, P)  left-padded     prompt_mask   (B, P)
    response_ids (B, T)  right-padded    response_mask (B, T)  1 up to and including the first EOS

The behaviour log-probs ``log pi_old(a_t | ...)`` are *recomputed* with a forward pass of the training model
(not taken from the generation scores), at the sampling temperature, by :func:`sequence_logprobs`, which
evaluates the output head and the log-softmax over chunks of response positions: the ``positions x vocab``
logits never exist for the whole batch at once, and under autograd every chunk is recomputed in the backward
pass (activation checkpointing), so memory stays bounded for long responses and large vocabularies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import GenerationSettings

__all__ = [
    "EncodedPrompts",
    "PromptTooLongError",
    "Rollout",
    "encode_prompts",
    "generate_rollout",
    "left_pad",
    "position_ids_from_mask",
    "sequence_logprobs",
]

Tensor = torch.Tensor


class PromptTooLongError(ValueError):
    """A prompt has more tokens than the prompt limit and truncation was not asked for."""


@dataclass
class EncodedPrompts:
    """Left-padded token ids of a batch of prompts.

    :param input_ids: ``(B, P)``
    :param attention_mask: ``(B, P)``, 0 on the left padding
    :param n_truncated: how many prompts were cut on the left to fit the limit
    """

    input_ids: Tensor
    attention_mask: Tensor
    n_truncated: int = 0

    @property
    def lengths(self) -> Tensor:
        """``(B,)`` number of real tokens of each prompt."""
        return self.attention_mask.sum(-1)

    def repeat_interleave(self, n: int) -> EncodedPrompts:
        """Each prompt ``n`` times in a row (for ``n`` samples per prompt)."""
        return EncodedPrompts(
            self.input_ids.repeat_interleave(n, 0), self.attention_mask.repeat_interleave(n, 0), self.n_truncated
        )


def left_pad(
    sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Left-pad lists of token ids.

    :param sequences: ``B`` lists of ids
    :param pad_id: the pad token id
    :param device: where the tensors go
    :return: ``(input_ids (B, P), attention_mask (B, P))`` with ``P`` the longest length
    """
    width = max((len(s) for s in sequences), default=0)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        if len(s):
            ids[i, width - len(s) :] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


def encode_prompts(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    truncation: str = "error",
    add_special_tokens: bool = True,
    device: torch.device | str = "cpu",
    role: str = "policy",
) -> EncodedPrompts:
    """Tokenise prompt texts and left-pad them, enforcing the prompt limit.

    :param tokenizer: the model's tokenizer (with a pad token)
    :param texts: ``B`` rendered prompts
    :param max_length: prompt limit in tokens
    :param truncation: ``"error"`` raises :class:`PromptTooLongError` for a longer prompt; ``"left"`` keeps its
        last ``max_length`` tokens (counted in ``n_truncated``)
    :param add_special_tokens: let the tokenizer add BOS etc. (``False`` for chat-template text, which already
        has them)
    :param device: where the tensors go
    :param role: ``"policy"`` or ``"critic"``, for the error message
    :return: :class:`EncodedPrompts`
    """
    if truncation not in ("error", "left"):
        raise ValueError(f"truncation must be 'error' or 'left', got {truncation!r}")
    encoded = tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
    out, n_truncated = [], 0
    for i, ids in enumerate(encoded):
        if len(ids) == 0:
            raise ValueError(f"Prompt {i} is empty after tokenisation: {texts[i]!r}")
        if len(ids) > max_length:
            if truncation == "error":
                raise PromptTooLongError(
                    f"A prompt has {len(ids)} {role} tokens, more than max_prompt_length={max_length}; raise the "
                    f"limit or set prompt_truncation='left'. Prompt starts: {texts[i][:80]!r}"
                )
            ids = ids[-max_length:]
            n_truncated += 1
        out.append(ids)
    input_ids, mask = left_pad(out, tokenizer.pad_token_id, device)
    return EncodedPrompts(input_ids, mask, n_truncated)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions that skip left padding: ``cumsum(mask) - 1`` clamped at 0 (what ``generate`` uses)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class Rollout:
    """Prompts and sampled responses, aligned.

    :param prompt_ids: ``(B, P)`` left-padded
    :param prompt_mask: ``(B, P)``
    :param response_ids: ``(B, T)`` right-padded (pad id after the first EOS)
    :param response_mask: ``(B, T)`` 1 on response tokens up to and including the first EOS
    :param truncated: ``(B,)`` bool, the response hit ``max_new_tokens`` without an EOS
    :param texts: ``B`` decoded responses (special tokens skipped)
    """

    prompt_ids: Tensor
    prompt_mask: Tensor
    response_ids: Tensor
    response_mask: Tensor
    truncated: Tensor
    texts: list[str] = field(default_factory=list)

    @property
    def n_prompt(self) -> int:
        return self.prompt_ids.shape[1]

    @property
    def input_ids(self) -> Tensor:
        """``(B, P + T)`` prompt then response."""
        return torch.cat([self.prompt_ids, self.response_ids], 1)

    @property
    def attention_mask(self) -> Tensor:
        """``(B, P + T)``."""
        return torch.cat([self.prompt_mask, self.response_mask.to(self.prompt_mask.dtype)], 1)

    @property
    def response_lengths(self) -> Tensor:
        """``(B,)`` number of response tokens (EOS included)."""
        return self.response_mask.sum(-1)

    def select(self, index: Tensor | Sequence[int]) -> Rollout:
        """Rows ``index``, with the columns that are padding in every selected row removed."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.prompt_ids.device)
        pm, rm = self.prompt_mask[idx], self.response_mask[idx]
        keep_p = pm.any(0).nonzero()
        p0 = int(keep_p[0, 0]) if len(keep_p) else pm.shape[1]
        keep_r = rm.any(0).nonzero()
        t1 = int(keep_r[-1, 0]) + 1 if len(keep_r) else 0
        return Rollout(
            self.prompt_ids[idx][:, p0:],
            pm[:, p0:],
            self.response_ids[idx][:, :t1],
            rm[:, :t1],
            self.truncated[idx],
            [self.texts[i] for i in idx.tolist()] if self.texts else [],
        )


def _generation_config(
    settings: GenerationSettings, eos_ids: list[int], pad_id: int, greedy: bool, max_new_tokens: int
) -> Any:
    from transformers import GenerationConfig

    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "eos_token_id": eos_ids,
        "pad_token_id": pad_id,
        "do_sample": not greedy,
        "use_cache": True,
    }
    if not greedy:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    if settings.suppress_eos:
        kwargs["min_new_tokens"] = max_new_tokens
    if settings.cache_implementation:
        kwargs["cache_implementation"] = settings.cache_implementation
    return GenerationConfig(**kwargs)


@torch.no_grad()
def generate_rollout(
    model: nn.Module,
    tokenizer: Any,
    prompts: EncodedPrompts,
    settings: GenerationSettings,
    eos_token_ids: Sequence[int],
    greedy: bool = False,
    max_new_tokens: int | None = None,
) -> Rollout:
    """Sample one response per prompt row (repeat rows for several samples), in batches, with left padding.

    :param model: the policy (peft or plain ``generate``-capable model), in eval mode
    :param tokenizer: its tokenizer
    :param prompts: ``(B, P)`` encoded prompts
    :param settings: temperature, top-p, top-k, ``max_new_tokens``, ``suppress_eos``, ``cache_implementation``,
        ``batch_size``, ``engine`` (``"static"``: :func:`~sppo_rl.llm.decoding.static_generate`)
    :param eos_token_ids: the tokens that end a response
    :param greedy: argmax decoding (ReMax's baseline sample)
    :param max_new_tokens: overrides ``settings.max_new_tokens``
    :return: a :class:`Rollout`
    """
    limit = max_new_tokens or settings.max_new_tokens
    pad_id = tokenizer.pad_token_id
    config = _generation_config(settings, list(eos_token_ids), pad_id, greedy, limit)
    n = prompts.input_ids.shape[0]
    step = settings.batch_size or n
    pieces: list[Tensor] = []
    for start in range(0, n, step):
        ids = prompts.input_ids[start : start + step]
        mask = prompts.attention_mask[start : start + step]
        nonpad = mask.any(0).nonzero()
        p0 = int(nonpad[0, 0]) if len(nonpad) else 0
        ids, mask = ids[:, p0:], mask[:, p0:]
        if settings.engine == "static":
            from .decoding import static_generate

            pieces.append(static_generate(model, ids, mask, settings, eos_token_ids, pad_id, greedy, limit))
            continue
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        sequences = out if isinstance(out, Tensor) else out.sequences
        pieces.append(sequences[:, ids.shape[1] :])
    width = max(p.shape[1] for p in pieces)
    response = torch.full((n, width), pad_id, dtype=torch.long, device=prompts.input_ids.device)
    row = 0
    for p in pieces:
        response[row : row + p.shape[0], : p.shape[1]] = p
        row += p.shape[0]
    is_eos = torch.zeros_like(response, dtype=torch.bool)
    for e in eos_token_ids:
        is_eos |= response == e
    if settings.suppress_eos and not greedy:
        is_eos[:] = False
    # valid: every token up to and including the first EOS
    eos_before = torch.cumsum(is_eos.long(), 1) - is_eos.long()
    response_mask = (eos_before == 0).long()
    has_eos = is_eos.any(1)
    response_mask[:, limit:] = 0
    truncated = ~has_eos
    response = torch.where(response_mask.bool(), response, torch.full_like(response, pad_id))
    texts = [
        tokenizer.decode(response[i, : int(response_mask[i].sum())].tolist(), skip_special_tokens=True)
        for i in range(n)
    ]
    return Rollout(prompts.input_ids, prompts.attention_mask, response, response_mask, truncated, texts)


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
    :param with_entropy: also return the entropy of each position's distribution (no gradient)
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
            lp, _ = checkpoint(_chunk_logprobs, hs, ts, head, temperature, softcap, False, use_reentrant=False)
            if with_entropy:
                with torch.no_grad():
                    ents.append(_chunk_logprobs(hs, ts, head, temperature, softcap, True)[1])
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
