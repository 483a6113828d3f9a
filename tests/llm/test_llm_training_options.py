"""Training options: learning-rate schedules (and their resume), the critic warm-up, the entropy bonus, masking
truncated responses, and DAPO's soft overlong punishment, each checked against a hand computation."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from sppo_rl.llm.config import GenerationSettings
from sppo_rl.llm.trainer import SPPOTrainer


def parity(prompts: list[str], completions: list[str], **kw: Any) -> list[float]:
    return [float(sum(map(ord, c)) % 2) for c in completions]


def _trainer(make_policy: Any, copy_rows: Any, **kw: Any) -> SPPOTrainer:
    options: dict[str, Any] = {
        "estimator": "grpo",
        "n_samples_per_prompt": 4,
        "prompts_per_step": 4,
        "mini_batch_size": 4,
        "micro_batch_size": 8,
        "learning_rate": 1e-2,
        "critic_learning_rate": 1e-2,
        "generation": GenerationSettings(temperature=1.0, max_new_tokens=6),
        "max_prompt_length": 32,
        "chat_template": False,
        "verbose": 0,
    }
    options.update(kw)
    critic = options.pop("critic", None)
    return SPPOTrainer(make_policy(), copy_rows[:32], parity, critic=critic, **options)


def test_linear_schedule_with_warmup_and_its_resume(make_policy: Any, copy_rows: Any, tmp_path: Any) -> None:
    kw = {"lr_scheduler_type": "linear", "lr_warmup_iterations": 2, "total_iterations": 6}
    trainer = _trainer(make_policy, copy_rows, **kw)
    rates = [trainer.train_iteration()["train/learning_rate"] for _ in range(4)]
    # warm-up from 0 over 2 iterations, then linear decay to 0 at iteration 6
    expected = [0.0, 0.5e-2, 1e-2, 1e-2 * 3 / 4]
    assert rates == pytest.approx(expected)
    trainer.save(str(tmp_path / "ck"))
    resumed = _trainer(make_policy, copy_rows, **kw).load_checkpoint(str(tmp_path / "ck"))
    assert resumed.train_iteration()["train/learning_rate"] == pytest.approx(1e-2 * 2 / 4)


def test_cosine_schedule_and_a_separate_critic_schedule(make_policy: Any, copy_rows: Any) -> None:
    trainer = _trainer(
        make_policy,
        copy_rows,
        estimator="sppo",
        n_samples_per_prompt=1,
        critic="shared",
        lr_scheduler_type="cosine",
        total_iterations=4,
        critic_lr_scheduler_type="constant",
        critic_lr_warmup_iterations=1,
    )
    seen = [trainer.train_iteration() for _ in range(3)]
    cosine = [1e-2 * 0.5 * (1 + math.cos(math.pi * i / 4)) for i in range(3)]
    assert [m["train/learning_rate"] for m in seen] == pytest.approx(cosine)
    assert [m["train/critic_learning_rate"] for m in seen] == pytest.approx([0.0, 1e-2, 1e-2])


def test_bad_schedules_are_named_before_any_model(copy_rows: Any) -> None:
    with pytest.raises(ValueError, match="lr_scheduler_type must be one of"):
        SPPOTrainer("no/such/model", copy_rows, parity, lr_scheduler_type="sawtooth")
    with pytest.raises(ValueError, match=r"decays over the run: set trainer.total_iterations"):
        SPPOTrainer("no/such/model", copy_rows, parity, lr_scheduler_type="cosine")


def test_critic_warmup_updates_only_the_critic(make_policy: Any, copy_rows: Any) -> None:
    trainer = _trainer(
        make_policy, copy_rows, estimator="sppo", n_samples_per_prompt=1, critic="shared", critic_warmup_iterations=2
    )
    policy_before = [p.detach().clone() for p in trainer.policy_params]
    critic_before = [p.detach().clone() for p in trainer.critic_params]
    for _ in range(2):
        metrics = trainer.train_iteration()
        assert metrics["train/critic_warmup"] == 1.0 and "train/policy_gradient_loss" not in metrics
    assert all(torch.equal(a, b) for a, b in zip(policy_before, trainer.policy_params, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, trainer.critic_params, strict=True))
    metrics = trainer.train_iteration()
    assert "train/critic_warmup" not in metrics and "train/policy_gradient_loss" in metrics
    assert any(not torch.equal(a, b) for a, b in zip(policy_before, trainer.policy_params, strict=True))


def test_entropy_bonus_is_the_aggregated_entropy_and_changes_the_update(make_policy: Any, copy_rows: Any) -> None:
    after = {}
    for coef in (0.0, 0.5):
        trainer = _trainer(make_policy, copy_rows, entropy_coef=coef)
        trainer._seed_everything()
        batch = trainer.collect_rollout()
        metrics = trainer.train_policy(batch)
        after[coef] = [p.detach().clone() for p in trainer.policy_params]
        if coef == 0.0:
            assert "train/entropy_loss" not in metrics
        else:
            entropy = -metrics["train/entropy_loss"]
            valid = batch.rollout.response_mask.bool()
            # token-mean of the policy's entropy before the update (one mini-batch: the same weights)
            assert entropy == pytest.approx(float(batch.entropy[valid].mean()), rel=1e-4)
            assert entropy > 0.5  # a random tiny model: high entropy
    assert any(not torch.equal(a, b) for a, b in zip(after[0.0], after[0.5], strict=True))


def test_truncated_responses_can_be_left_out_of_the_loss(make_policy: Any, copy_rows: Any) -> None:
    trainer = _trainer(make_policy, copy_rows, mask_truncated_completions=True)
    trainer._seed_everything()
    batch = trainer.collect_rollout()
    truncated = batch.rollout.truncated
    assert truncated.any() and (~truncated).any()
    # advantages only on the truncated rows: the loss has nothing to learn from
    batch.advantages = batch.advantages * truncated[:, None].float()
    metrics = trainer.train_policy(batch)
    assert metrics["train/grad_norm"] == 0.0
    trainer.config.mask_truncated_completions = False
    assert trainer.train_policy(batch)["train/grad_norm"] > 0.0


def test_soft_overlong_punishment_is_dapos(make_policy: Any, copy_rows: Any) -> None:
    trainer = _trainer(
        make_policy, copy_rows, estimator="none", n_samples_per_prompt=1, overlong_buffer=4, overlong_penalty=0.5
    )
    trainer._seed_everything()
    batch = trainer.collect_rollout()
    lengths = batch.rollout.response_lengths.float()
    # limit 6, buffer 4: no punishment up to 2 tokens, then -0.5 * (L - 2) / 4
    expected = batch.outcomes - 0.5 * ((lengths - 2).clamp(min=0) / 4)
    assert (lengths > 2).any()
    torch.testing.assert_close(batch.advantages[:, 0], expected)
    with pytest.raises(ValueError, match="overlong_buffer"):
        _trainer(make_policy, copy_rows, overlong_buffer=6)
