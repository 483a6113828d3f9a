"""The critic side: ``values[:, 0]`` is V(s_p) in verl's padding helpers, and the BCE loss trains only that logit."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from transformers import Qwen2Config, Qwen2ForTokenClassification
from verl.utils import tensordict_utils as tu
from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding, response_from_nested

from sppo_rl.integrations.verl import seq_ppo_value_loss

PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
"""Token ids of three prompts of different lengths."""


def _jagged(rows: list[list[float]] | list[torch.Tensor], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.nested.as_nested_tensor([torch.as_tensor(r, dtype=dtype) for r in rows], layout=torch.jagged)


def _rollout_batch(responses: list[list[int]], prompt_width: int = 4, response_width: int = 3) -> TensorDict:
    """A batch as verl's rollout lays it out: prompts left-padded, responses right-padded (pad id 0)."""
    prompts = torch.zeros(len(PROMPTS), prompt_width, dtype=torch.long)
    response_ids = torch.zeros(len(PROMPTS), response_width, dtype=torch.long)
    attention_mask = torch.zeros(len(PROMPTS), prompt_width + response_width, dtype=torch.long)
    for i, (p, r) in enumerate(zip(PROMPTS, responses, strict=True)):
        prompts[i, prompt_width - len(p) :] = torch.tensor(p)
        response_ids[i, : len(r)] = torch.tensor(r)
        attention_mask[i, prompt_width - len(p) : prompt_width + len(r)] = 1
    position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
    return TensorDict(
        {
            "prompts": prompts,
            "responses": response_ids,
            "input_ids": torch.cat([prompts, response_ids], dim=-1),
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "response_mask": attention_mask[:, prompt_width:],
        },
        batch_size=len(PROMPTS),
    )


@torch.no_grad()
def _critic_values(model: torch.nn.Module, responses: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The critic's output per response token, through verl's own helpers (padded and TransferQueue paths)."""
    data = left_right_2_no_padding(_rollout_batch(responses))
    input_ids, position_ids = data["input_ids"], data["position_ids"]
    # one output per token over prompt + response, as verl's value-model engine returns it (a nested tensor)
    per_token = [
        model(input_ids=ids[None], position_ids=pos[None]).logits[0, :, 0]
        for ids, pos in zip(input_ids.unbind(), position_ids.unbind(), strict=True)
    ]
    values = torch.nested.nested_tensor_from_jagged(torch.cat(per_token), offsets=input_ids.offsets())
    padded = no_padding_2_padding(values, data)  # the critic loss's path
    nested_mask = _jagged([[1] * len(r) for r in responses], dtype=torch.long)
    from_nested = response_from_nested(values, nested_mask).to_padded_tensor(0.0)  # the trainer's path
    return padded, from_nested


def test_values_column_zero_is_the_critic_output_at_the_last_prompt_token(tiny_qwen2_config: Qwen2Config) -> None:
    torch.manual_seed(0)
    model = Qwen2ForTokenClassification(tiny_qwen2_config).eval()
    responses = [[20, 21, 1], [22, 1], [23]]

    padded, from_nested = _critic_values(model, responses)

    with torch.no_grad():
        prompt_only = torch.stack([model(input_ids=torch.tensor([p])).logits[0, -1, 0] for p in PROMPTS])
    torch.testing.assert_close(padded[:, 0], prompt_only, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(from_nested[:, 0], prompt_only, rtol=1e-5, atol=1e-6)
    # and column 1 is the output at the first response token, which sees it
    assert not torch.allclose(padded[:, 1], prompt_only)


def test_values_column_zero_does_not_depend_on_the_response(tiny_qwen2_config: Qwen2Config) -> None:
    torch.manual_seed(0)
    model = Qwen2ForTokenClassification(tiny_qwen2_config).eval()
    first, _ = _critic_values(model, [[20, 21, 1], [22, 1], [23]])
    second, _ = _critic_values(model, [[30, 1], [31, 32, 33], [34, 35]])
    torch.testing.assert_close(first[:, 0], second[:, 0], rtol=1e-5, atol=1e-6)


def _loss_inputs(
    logits_at_prompt_end: list[float], outcomes: list[float], response_lengths: list[int]
) -> tuple[torch.Tensor, dict[str, torch.Tensor], TensorDict]:
    """A critic micro-batch as the worker gets it from the TransferQueue (nested), and a model output."""
    prompt_lengths = [len(p) for p in PROMPTS]
    flat = []
    for n_prompt, n_response, logit in zip(prompt_lengths, response_lengths, logits_at_prompt_end, strict=True):
        row = torch.full((n_prompt + n_response,), 5.0)  # outputs at other tokens: must not matter
        row[n_prompt - 1] = logit
        flat.append(row)
    leaf = torch.cat(flat).requires_grad_(True)
    offsets = torch.tensor([0, *torch.tensor([len(r) for r in flat]).cumsum(0).tolist()])
    values = torch.nested.nested_tensor_from_jagged(leaf, offsets=offsets)
    response_mask = _jagged([[1] * n if r >= 0 else [0] * n for n, r in zip(response_lengths, outcomes, strict=True)])
    data = tu.get_tensordict(
        {
            "prompts": _jagged(PROMPTS, dtype=torch.long),
            "responses": _jagged([[20] * n for n in response_lengths], dtype=torch.long),
            "response_mask": response_mask,
            "returns": _jagged([[max(r, 0.0)] * n for n, r in zip(response_lengths, outcomes, strict=True)]),
        }
    )
    return leaf, {"values": values}, data


def test_loss_is_bce_with_logits_on_the_last_prompt_token() -> None:
    logits, outcomes = [0.3, -1.2, 2.0], [1.0, 0.0, 1.0]
    _, model_output, data = _loss_inputs(logits, outcomes, response_lengths=[3, 2, 4])
    tu.assign_non_tensor(data, dp_size=1, global_batch_size=None)

    loss, metrics = seq_ppo_value_loss(None, model_output, data)

    expected = torch.nn.BCEWithLogitsLoss()(torch.tensor(logits), torch.tensor(outcomes))
    torch.testing.assert_close(loss, expected)
    assert metrics["critic/vf_loss"].aggregate() == pytest.approx(expected.item())
    p = torch.sigmoid(torch.tensor(logits))
    assert metrics["critic/value_mean"] == pytest.approx(p.mean().item())
    assert metrics["critic/value_brier"] == pytest.approx(((p - torch.tensor(outcomes)) ** 2).mean().item())


def test_gradient_flows_only_through_the_last_prompt_token_logit() -> None:
    logits, outcomes = [0.3, -1.2, 2.0], [1.0, 0.0, 1.0]
    leaf, model_output, data = _loss_inputs(logits, outcomes, response_lengths=[3, 2, 4])
    tu.assign_non_tensor(data, dp_size=1, global_batch_size=None)

    seq_ppo_value_loss(None, model_output, data)[0].backward()

    last_prompt_positions = torch.tensor([2, 3 + 3 + 1, 3 + 3 + 2 + 2 + 3])  # prompt_len - 1 in each row
    expected = torch.zeros_like(leaf)
    expected[last_prompt_positions] = (torch.sigmoid(torch.tensor(logits)) - torch.tensor(outcomes)) / 3
    torch.testing.assert_close(leaf.grad, expected)


def test_global_batch_normalisation_and_padding_samples() -> None:
    # the third sample is verl's synthetic padding (response masked out): it adds nothing
    logits, outcomes = [0.3, -1.2, 2.0], [1.0, 0.0, -1.0]
    _, model_output, data = _loss_inputs(logits, outcomes, response_lengths=[3, 2, 1])
    # a micro-batch of rank 0 of 2, in a global mini-batch of 8 samples
    tu.assign_non_tensor(data, dp_size=2, global_batch_size=8)

    loss, metrics = seq_ppo_value_loss(None, model_output, data)

    bce = torch.nn.BCEWithLogitsLoss(reduction="sum")(torch.tensor(logits[:2]), torch.tensor(outcomes[:2]))
    torch.testing.assert_close(loss, bce * 2 / 8)
    assert metrics["critic/vf_loss"].aggregation.value == "sum"


def test_dp_without_global_batch_size_is_refused() -> None:
    _, model_output, data = _loss_inputs([0.0, 0.0, 0.0], [1.0, 0.0, 1.0], response_lengths=[1, 1, 1])
    tu.assign_non_tensor(data, dp_size=2, global_batch_size=None)
    with pytest.raises(ValueError, match="global_batch_size is required"):
        seq_ppo_value_loss(None, model_output, data)
