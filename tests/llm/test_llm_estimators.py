"""Advantages and losses through the trainer, checked against hand computations (not against sppo_rl.objectives).

Every estimator of the paper's comparison (sppo, grpo, rloo, remax, gae, none) runs on the trainer's one code
path; here each one's per-token advantages are recomputed from the raw outcomes and critic outputs.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from sppo_rl.llm.config import CriticSpec, GenerationSettings
from sppo_rl.llm.rewards import ExactMatchVerifier
from sppo_rl.llm.trainer import SPPOTrainer

from sppo_rl.value_heads import BernoulliValueHead, RawValueHead
from tests.llm.reward_helpers import parity_reward


def _trainer(make_policy: Any, copy_rows: Any, estimator: str, critic: Any = "shared", **kw: Any) -> SPPOTrainer:
    options: dict[str, Any] = {
        "prompts_per_step": 6,
        "mini_batch_size": 6,
        "micro_batch_size": 4,
        "learning_rate": 1e-3,
        "critic_learning_rate": 1e-3,
        "generation": GenerationSettings(temperature=1.0, max_new_tokens=4),
        "max_prompt_length": 32,
        "chat_template": False,
    }
    options.update(kw)
    return SPPOTrainer(
        make_policy(), copy_rows[:24], parity_reward, critic=critic, estimator=estimator, verbose=0, **options
    )


def _assert_broadcast(adv: torch.Tensor, per_seq: torch.Tensor, mask: torch.Tensor) -> None:
    expected = per_seq[:, None].expand_as(adv) * mask
    torch.testing.assert_close(adv, expected.to(adv.dtype), atol=1e-6, rtol=1e-6)
    assert (adv[mask == 0] == 0).all()


def test_sppo_advantage_is_outcome_minus_sigmoid_of_the_prompt_logit(
    make_policy: Any, copy_rows: Any, make_critic_model: Any
) -> None:
    backbone, ctok = make_critic_model()
    trainer = _trainer(make_policy, copy_rows, "sppo", critic=backbone, critic_tokenizer=ctok)
    trainer._seed_everything()
    batch = trainer.collect_rollout()
    mask = batch.rollout.response_mask.float()
    assert (mask.sum(1) < mask.shape[1]).any()  # some padding to check
    # the critic's logit at the last prompt token, recomputed independently from the prompt text
    critic = trainer.critic
    assert critic is not None
    logits = []
    with torch.no_grad():
        for row in batch.rows:
            text = critic.render(trainer.dataset.template.messages(row))
            ids = torch.tensor([ctok(text, add_special_tokens=False)["input_ids"]])
            hidden = backbone(input_ids=ids).last_hidden_state[0, -1]
            logits.append(critic.head.linear(hidden).squeeze())
    v = torch.sigmoid(torch.stack(logits))
    torch.testing.assert_close(batch.values, v, atol=1e-5, rtol=1e-5)
    _assert_broadcast(batch.advantages, batch.outcomes - v, mask)


def _group_view(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.view(-1, n)


def test_grpo_rloo_none_advantages(make_policy: Any, copy_rows: Any) -> None:
    for name, n in (("grpo", 4), ("rloo", 3), ("none", 2)):
        trainer = _trainer(make_policy, copy_rows, name, critic=None, n_samples_per_prompt=n)
        trainer._seed_everything()
        batch = trainer.collect_rollout()
        assert batch.size == 6 * n and batch.group_ids.tolist() == [i for i in range(6) for _ in range(n)]
        r = _group_view(batch.outcomes.double(), n)
        if name == "grpo":
            mean, std = r.mean(1, keepdim=True), r.std(1, keepdim=True)  # unbiased
            expected = (r - mean) / (std + 1e-6)
            assert r.var(1).gt(0).any(), "the test needs groups with mixed outcomes"
        elif name == "rloo":
            expected = (r.sum(1, keepdim=True) - r) / (n - 1)
            expected = r - expected
        else:
            expected = r
        _assert_broadcast(batch.advantages, expected.flatten().float(), batch.rollout.response_mask.float())


def test_remax_subtracts_the_greedy_samples_reward(make_policy: Any, copy_rows: Any) -> None:
    trainer = _trainer(make_policy, copy_rows, "remax", critic=None)
    trainer._seed_everything()
    batch = trainer.collect_rollout()
    assert batch.greedy_outcomes is not None
    # the greedy responses, recomputed by argmax decoding
    from sppo_rl.llm.generation import generate_rollout

    enc = trainer.collector.encode_policy(
        [trainer.collector.render_policy(trainer.dataset.template.messages(r)) for r in batch.rows]
    )
    greedy = generate_rollout(
        trainer.policy,
        enc,
        trainer.config.generation,
        greedy=True,
    )
    expected_greedy = torch.tensor(parity_reward([], greedy.texts))
    torch.testing.assert_close(batch.greedy_outcomes, expected_greedy)
    _assert_broadcast(batch.advantages, batch.outcomes - expected_greedy, batch.rollout.response_mask.float())


@pytest.mark.parametrize("whiten", [False, True])
def test_gae_token_level_ppo(make_policy: Any, copy_rows: Any, whiten: bool) -> None:
    trainer = _trainer(make_policy, copy_rows, "gae", critic="shared", whiten_gae=whiten, prompts_per_step=8)
    trainer._seed_everything()
    batch = trainer.collect_rollout()
    mask = batch.rollout.response_mask.float()
    critic = trainer.critic
    assert critic is not None and batch.values is not None and batch.values.shape == mask.shape
    with torch.no_grad(), critic.active():
        r = batch.rollout
        out = critic.token_outputs(r.input_ids, r.attention_mask, r.n_prompt, mask.shape[1])
    values = torch.sigmoid(out) * mask
    torch.testing.assert_close(batch.values, values, atol=1e-5, rtol=1e-5)
    # gamma = lambda = 1: A_t = R - V_t on every valid token (the "tail effect" setting)
    raw = (batch.outcomes[:, None] - values) * mask
    torch.testing.assert_close(batch.returns, batch.outcomes[:, None] * mask, atol=1e-5, rtol=1e-5)
    if whiten:
        valid = raw[mask.bool()]
        expected = (raw - valid.mean()) / torch.sqrt(valid.var() + 1e-8) * mask
    else:
        expected = raw
    torch.testing.assert_close(batch.advantages, expected, atol=1e-5, rtol=1e-4)
    metrics = trainer.train_policy(batch)
    assert math.isfinite(metrics["train/policy_gradient_loss"])
    assert math.isfinite(trainer.train_critic(batch)["train/value_loss"])


def test_ppo_preset_is_standard_ppo_raw_values_clipped_squared_error_and_warmup(
    make_policy: Any, copy_rows: Any
) -> None:
    trainer = _trainer(make_policy, copy_rows, "ppo", critic="shared", prompts_per_step=8, mini_batch_size=8,
                       micro_batch_size=8)  # fmt: skip
    cfg, critic = trainer.config, trainer.critic
    assert critic is not None and isinstance(critic.head, RawValueHead)
    assert cfg.value_clip_range == 0.5 and cfg.critic_warmup == 50
    unbounded = torch.tensor([-2.0, 3.5])
    assert torch.equal(critic.baseline(unbounded), unbounded)  # no sigmoid: the value itself
    trainer._seed_everything()
    batch = trainer.collect_rollout()
    mask = batch.rollout.response_mask.float()
    with torch.no_grad(), critic.active():
        r = batch.rollout
        out = critic.token_outputs(r.input_ids, r.attention_mask, r.n_prompt, mask.shape[1]).double()
    assert batch.values is not None and batch.returns is not None
    torch.testing.assert_close(batch.values.double(), out * mask, atol=1e-5, rtol=1e-5)
    # pretend the batch was collected by a critic whose values were 1 lower on the first half of the sequences and
    # 0.3 lower on the rest: the first half is clipped (0.5 < 1), the rest is not
    shift = torch.where(torch.arange(len(mask)) < len(mask) // 2, 1.0, 0.3)[:, None]
    old = (out - shift) * mask
    batch.values = old.float()
    target = batch.returns.double()
    clipped = old + (out - old).clamp(-0.5, 0.5)
    per_token = torch.maximum((out - target) ** 2, (clipped - target) ** 2)
    expected = float((per_token * mask).sum() / mask.sum())
    mse = float((((out - target) ** 2) * mask).sum() / mask.sum())
    assert abs(expected - mse) > 1e-3  # the clipping matters on this batch
    metrics = trainer.train_critic(batch)  # one mini-batch, one micro-batch: the loss before the step
    assert metrics["train/value_loss"] == pytest.approx(expected, rel=1e-4)
    first_half = mask[: len(mask) // 2].sum() / mask.sum()
    assert metrics["train/value_clip_fraction"] <= float(first_half) + 1e-6


def test_ppo_warms_the_critic_up_and_gae_stays_the_bce_ablation(make_policy: Any, copy_rows: Any) -> None:
    trainer = _trainer(make_policy, copy_rows, "ppo", critic="shared", critic_warmup_iterations=1)
    assert trainer.config.critic_warmup == 1 and trainer.config.value_clip_range == 0.5
    assert trainer.train_iteration()["train/critic_warmup"] == 1.0
    assert "train/policy_gradient_loss" in trainer.train_iteration()
    gae = _trainer(make_policy, copy_rows, "gae", critic="shared")
    assert gae.critic is not None and isinstance(gae.critic.head, BernoulliValueHead)
    assert gae.config.value_clip_range is None and gae.config.critic_warmup == 0
    assert "train/value_clip_fraction" not in gae.train_iteration()
    unclipped = _trainer(make_policy, copy_rows, "ppo", critic="shared", value_clip=0, critic_warmup_iterations=0)
    assert unclipped.config.value_clip_range is None
    with pytest.raises(ValueError, match="'raw' value head"):
        _trainer(make_policy, copy_rows, "ppo", critic=CriticSpec(mode="shared", value_head="bernoulli"))
    with pytest.raises(ValueError, match="per-token critic"):
        _trainer(make_policy, copy_rows, "sppo", critic="shared", value_clip=0.5)


def test_gae_needs_the_policys_tokens(make_policy: Any, copy_rows: Any, make_critic_model: Any) -> None:
    backbone, ctok = make_critic_model()
    with pytest.raises(ValueError, match="policy's tokenizer"):
        _trainer(make_policy, copy_rows, "gae", critic=backbone, critic_tokenizer=ctok)


def _hand_loss(
    logp: torch.Tensor,
    old: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    eps: float,
    dual: float | None,
    mode: str,
) -> torch.Tensor:
    """The PPO clipped surrogate written out by hand."""
    ratio = torch.exp(logp - old)
    per_token = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - eps, 1 + eps))
    if dual is not None:
        per_token = torch.where(adv < 0, torch.minimum(per_token, -adv * dual), per_token)
    per_token = per_token * mask
    if mode == "token-mean":
        return per_token.sum() / mask.sum()
    seq_len = mask.sum(1)
    if mode == "seq-mean-token-mean":
        return (per_token.sum(1) / seq_len).mean()
    return per_token.sum(1).mean()


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_policy_loss_matches_hand_computation_and_micro_batching(make_policy: Any, copy_rows: Any, mode: str) -> None:
    trainer = _trainer(
        make_policy, copy_rows, "none", critic=None, loss_agg_mode=mode, micro_batch_size=6, n_samples_per_prompt=1
    )
    trainer._seed_everything()
    batch = trainer.collect_rollout()
    mask = batch.rollout.response_mask.float()
    gen = torch.Generator().manual_seed(0)
    # pretend the behaviour policy differed, and use advantages of both signs, so clipping and dual clip act
    batch.old_logp = (batch.old_logp + 0.5 * torch.randn(batch.old_logp.shape, generator=gen)) * mask
    batch.advantages = torch.randn(batch.size, generator=gen)[:, None] * mask
    with torch.no_grad():
        logp, _ = trainer.collector.logprobs(batch.rollout)
    expected = _hand_loss(logp, batch.old_logp, batch.advantages, mask, 0.2, 3.0, mode)

    grads = []
    for micro in (6, 1):
        trainer.config.micro_batch_size = micro
        params = trainer.policy_params
        saved = [p.detach().clone() for p in params]
        trainer.policy_optimizer = torch.optim.SGD(params, lr=0.0)
        metrics = trainer.train_policy(batch)
        grads.append(torch.cat([p.grad.flatten() for p in params]))
        for p, s in zip(params, saved, strict=True):
            assert torch.equal(p, s)
        assert metrics["train/policy_gradient_loss"] == pytest.approx(float(expected), rel=1e-5, abs=1e-6)
    # gradient accumulation over micro-batches gives the gradient of the whole mini-batch
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)
    assert metrics["train/clip_fraction"] > 0


def test_kl_term_uses_the_base_model(make_policy: Any, copy_rows: Any) -> None:
    trainer = _trainer(make_policy, copy_rows, "none", critic=None, kl_coef=0.1, kl_estimator="k3")
    with torch.no_grad():
        for p in trainer.policy_params:
            p.add_(0.05)
    trainer._seed_everything()
    batch = trainer.collect_rollout()
    assert batch.ref_logp is not None
    mask = batch.rollout.response_mask.float()
    with torch.no_grad(), trainer.policy.reference():
        ref, _ = trainer.collector.logprobs(batch.rollout)
    torch.testing.assert_close(batch.ref_logp, ref * mask)
    assert (batch.ref_logp - batch.old_logp).abs().max() > 1e-4
    metrics = trainer.train_policy(batch)
    diff = ref - batch.old_logp
    k3 = ((torch.exp(diff) - diff - 1) * mask).sum() / mask.sum()
    assert metrics["train/kl_ref"] == pytest.approx(float(k3), rel=1e-4)


def test_exact_match_reward_drives_the_trainer(make_policy: Any, copy_rows: Any) -> None:
    # sanity: the built-in verifier is wired through the trainer (rewards equal the verifier's)
    trainer = SPPOTrainer(
        make_policy(),
        copy_rows[:16],
        ExactMatchVerifier(mode="prefix"),
        critic="shared",
        prompts_per_step=8,
        mini_batch_size=8,
        micro_batch_size=8,
        max_prompt_length=32,
        chat_template=False,
        generation=GenerationSettings(temperature=1.0, max_new_tokens=2),
        verbose=0,
    )
    trainer._seed_everything()
    batch = trainer.collect_rollout()
    expected = [
        float(t.strip().startswith(row["answer"])) for t, row in zip(batch.rollout.texts, batch.rows, strict=True)
    ]
    assert batch.outcomes.tolist() == expected
