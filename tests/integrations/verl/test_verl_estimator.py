"""The ``seq_ppo`` estimator: sppo_rl.objectives' SPPO advantage in verl's convention, and verl's dispatcher."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from verl.protocol import DataProto
from verl.trainer.config import AlgoConfig
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories

from sppo_rl.integrations.verl import SEQ_PPO, CriticValuesMissingError, compute_seq_ppo_advantage
from sppo_rl.objectives import broadcast_to_steps, sppo_advantages
from sppo_rl.value_heads import OutcomeError


def _batch(lengths: list[int], outcomes: list[float], width: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded response mask and verl's token-level rewards (the outcome on the last response token)."""
    mask = torch.zeros(len(lengths), width)
    rewards = torch.zeros(len(lengths), width)
    for i, (n, r) in enumerate(zip(lengths, outcomes, strict=True)):
        mask[i, :n] = 1
        if n:
            rewards[i, n - 1] = r
    return mask, rewards


def test_registered_under_seq_ppo_without_taking_sppo() -> None:
    assert SEQ_PPO == "seq_ppo"
    assert core_algos.get_adv_estimator_fn("seq_ppo") is compute_seq_ppo_advantage
    # verl-recipe's "sppo" is Self-Play Preference Optimization: not ours to register
    assert core_algos.ADV_ESTIMATOR_REGISTRY.get("sppo") is not compute_seq_ppo_advantage


def test_advantage_is_outcome_minus_sigmoid_of_last_prompt_token_logit() -> None:
    mask, rewards = _batch([3, 5, 1], [1.0, 0.0, 1.0])
    logits = torch.tensor([0.0, math.log(3.0), -math.log(3.0)])  # V = 0.5, 0.75, 0.25
    values = torch.randn(3, 5)  # only column 0 (the last prompt token) may matter
    values[:, 0] = logits

    advantages, returns = compute_seq_ppo_advantage(token_level_rewards=rewards, response_mask=mask, values=values)

    expected = torch.tensor([0.5, -0.75, 0.75])[:, None] * mask
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, torch.tensor([1.0, 0.0, 1.0])[:, None] * mask)
    assert advantages.dtype == torch.float32


def test_equals_sppo_rl_objectives_on_random_batches() -> None:
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 9, (16,), generator=gen).tolist()
    outcomes = torch.rand(16, generator=gen).round()
    mask, rewards = _batch(lengths, outcomes.tolist(), width=8)
    values = torch.randn(16, 8, generator=gen)

    advantages, _ = compute_seq_ppo_advantage(token_level_rewards=rewards, response_mask=mask, values=values)

    reference = broadcast_to_steps(sppo_advantages(outcomes, torch.sigmoid(values[:, 0])), mask)
    torch.testing.assert_close(advantages, reference)


def test_values_past_the_first_response_token_do_not_matter() -> None:
    mask, rewards = _batch([4, 4], [1.0, 0.0])
    values = torch.zeros(2, 5)
    first, _ = compute_seq_ppo_advantage(token_level_rewards=rewards, response_mask=mask, values=values)
    values[:, 1:] = 7.0
    second, _ = compute_seq_ppo_advantage(token_level_rewards=rewards, response_mask=mask, values=values)
    torch.testing.assert_close(first, second)


def test_padding_samples_get_zero_advantage() -> None:
    # verl's synthetic padding samples: one response token, masked out, no reward
    mask, rewards = _batch([2, 0], [1.0, 0.0])
    advantages, returns = compute_seq_ppo_advantage(
        token_level_rewards=rewards, response_mask=mask, values=torch.full((2, 5), 2.0)
    )
    assert advantages[1].abs().sum() == 0
    assert returns[1].abs().sum() == 0
    assert advantages[0, 0].item() == pytest.approx(1.0 - 1.0 / (1.0 + math.exp(-2.0)))


def test_rejects_outcomes_outside_zero_one() -> None:
    mask, rewards = _batch([2, 2], [1.0, -1.0])
    with pytest.raises(OutcomeError, match=r"outcomes in \[0, 1\].*-1 for response 1"):
        compute_seq_ppo_advantage(token_level_rewards=rewards, response_mask=mask, values=torch.zeros(2, 5))


def test_without_values_says_which_trainer_mode_to_use() -> None:
    mask, rewards = _batch([2], [1.0])
    with pytest.raises(CriticValuesMissingError, match=r"trainer\.v1\.trainer_mode=seq_ppo"):
        compute_seq_ppo_advantage(token_level_rewards=rewards, response_mask=mask)


def test_canary_verl_does_not_pass_values_to_registered_estimators() -> None:
    """The reason SeqPPOTrainer overrides _compute_advantage. When this fails, verl passes the critic's values
    to registered estimators: the override can go (the estimator alone then suffices)."""
    mask, rewards = _batch([3, 2], [1.0, 0.0])
    data = DataProto.from_dict(
        tensors={"token_level_rewards": rewards, "response_mask": mask, "values": torch.zeros(2, 5)},
        non_tensors={"uid": np.array(["a", "b"], dtype=object)},
    )
    try:
        # what verl 0.9.1's v1 trainer calls for any estimator but GRPO
        compute_advantage_for_multi_trajectories(
            data, batch_keys=["a_0_0", "b_0_0"], adv_estimator=SEQ_PPO, num_repeat=1, config=AlgoConfig()
        )
    except CriticValuesMissingError:
        return
    pytest.fail("verl now passes `values` to registered estimators: SeqPPOTrainer._compute_advantage can go")
