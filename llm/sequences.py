"""Token sequences of a batch of prompt/response pairs: prompt encoding and the aligned layout of a rollout.

Layout of a batch of ``B`` prompt/response pairs (``P`` prompt columns, ``T`` response columns)::

    prompt_ids   (B, P)  left-padded     prompt_mask   (B, P)
    response_ids (B, T)  right-padded    response_mask (B, T)  1 up to and including the first EOS

:class:`EncodedPrompts` is what a generation engine reads (:mod:`sppo_rl.llm.generation`), :class:`Rollout` what it
returns and what the log-probabilities (:mod:`sppo_rl.llm.logprobs`) and the updates read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "EncodedPrompts",
    "PromptTooLongError",
    "Rollout",
    "encode_prompts",
    "left_pad",
    "position_ids_from_mask",
    "response_mask_after_eos",
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


def response_mask_after_eos(
    response: Tensor, eos_token_ids: Sequence[int], limit: int, ignore_eos: bool = False
) -> tuple[Tensor, Tensor]:
    """Which response tokens count: every token up to and including the first EOS, within ``limit``.

    :param response: ``(B, T)`` sampled token ids
    :param eos_token_ids: tokens that end a response
    :param limit: the response length limit
    :param ignore_eos: treat no token as an EOS (responses sampled with EOS suppressed)
    :return: ``(response_mask (B, T) long, truncated (B,) bool)``; truncated rows have no EOS
    """
    is_eos = torch.zeros_like(response, dtype=torch.bool)
    if not ignore_eos:
        for e in eos_token_ids:
            is_eos |= response == e
    eos_before = torch.cumsum(is_eos.long(), 1) - is_eos.long()
    response_mask = (eos_before == 0).long()
    response_mask[:, limit:] = 0
    return response_mask, ~is_eos.any(1)
