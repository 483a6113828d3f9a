"""Bad inputs give clear, documented errors (or documented, counted behaviour), never silent wrong results."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from sppo_rl.llm.config import GenerationSettings, TrainerConfig
from sppo_rl.llm.data import EmptyDatasetError
from sppo_rl.llm.models import load_policy
from sppo_rl.llm.random_init import build_random_model
from sppo_rl.llm.rewards import ExactMatchVerifier
from sppo_rl.llm.run_config import RunConfig
from sppo_rl.llm.sequences import PromptTooLongError
from sppo_rl.llm.tiny import TINY_QWEN2
from sppo_rl.llm.tokenizer_training import train_tokenizer
from sppo_rl.llm.trainer import SPPOTrainer

from sppo_rl.value_heads import OutcomeError

LONG = [{"question": "Repeat: " + " ".join(["7"] * 40), "answer": "7"}, {"question": "Repeat: 3", "answer": "3"}]
OPTS: dict[str, Any] = {
    "prompts_per_step": 2,
    "micro_batch_size": 2,
    "chat_template": False,
    "verbose": 0,
    "generation": GenerationSettings(temperature=1.0, max_new_tokens=3),
}


def test_prompt_longer_than_the_limit(make_policy: Any) -> None:
    with pytest.raises(PromptTooLongError, match="max_prompt_length=16"):
        SPPOTrainer(make_policy(), LONG, ExactMatchVerifier(), critic="shared", max_prompt_length=16, **OPTS)
    trainer = SPPOTrainer(
        make_policy(),
        LONG,
        ExactMatchVerifier(),
        critic="shared",
        max_prompt_length=16,
        prompt_truncation="left",
        shuffle=False,
        **OPTS,
    )
    metrics = trainer.learn(n_iterations=1).history[-1]
    assert metrics["rollout/prompts_truncated"] == 1.0  # counted for the policy
    assert metrics["rollout/critic_prompts_truncated"] == 1.0  # and for the (shared) critic
    assert metrics["rollout/prompt_length_mean"] <= 16


def test_critic_prompt_limit_is_checked_too(make_policy: Any, make_critic_model: Any) -> None:
    backbone, ctok = make_critic_model()
    rows = [{"question": "Repeat: 7 7 7 7 7 7", "answer": "7"}]
    policy = make_policy()
    n_policy = len(policy.tokenizer("Repeat: 7 7 7 7 7 7")["input_ids"])
    with pytest.raises(PromptTooLongError, match="critic tokens"):
        # the critic renders with its own chat template: more tokens than the policy's plain prompt
        SPPOTrainer(
            policy,
            rows,
            ExactMatchVerifier(),
            critic=backbone,
            critic_tokenizer=ctok,
            max_prompt_length=n_policy,
            **OPTS,
        )


def test_empty_dataset(make_policy: Any, tmp_path: Any) -> None:
    with pytest.raises(EmptyDatasetError):
        SPPOTrainer(make_policy(), [], ExactMatchVerifier(), critic="shared", **OPTS)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(EmptyDatasetError):
        SPPOTrainer(make_policy(), str(empty), ExactMatchVerifier(), critic="shared", **OPTS)


def test_tokenizer_without_pad_token_uses_eos_with_a_warning(copy_rows: Any) -> None:
    tok = train_tokenizer([r["question"] for r in copy_rows], vocab_size=40, pad_token=None)
    model = build_random_model(dict(TINY_QWEN2), seed=0, tokenizer=tok)
    with pytest.warns(UserWarning, match="no pad token"):
        policy = load_policy(model, tok)
    trainer = SPPOTrainer(policy, copy_rows[:4], ExactMatchVerifier(mode="prefix"), critic="shared", **OPTS)
    trainer.learn(n_iterations=1)
    assert trainer.history[-1]["rollout/response_length_mean"] >= 1


def test_reward_outside_unit_interval_with_bernoulli_head(make_policy: Any, copy_rows: Any) -> None:
    def score_out_of_range(prompts: list[str], completions: list[str], **kw: Any) -> list[float]:
        return [37.5] * len(prompts)

    trainer = SPPOTrainer(make_policy(), copy_rows[:4], score_out_of_range, critic="shared", **OPTS)
    before = [p.detach().clone() for p in trainer.policy_params]
    with pytest.raises(OutcomeError, match="Bernoulli value head needs outcomes in \\[0, 1\\]"):
        trainer.learn(n_iterations=1)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.policy_params, strict=True))  # nothing updated
    # the Gaussian head accepts real-valued outcomes
    from sppo_rl.llm.config import CriticSpec

    gaussian = SPPOTrainer(
        make_policy(),
        copy_rows[:4],
        score_out_of_range,
        critic=CriticSpec(mode="shared", value_head="gaussian"),
        **OPTS,
    )
    gaussian.learn(n_iterations=2)
    assert gaussian.history[-1]["rollout/reward_mean"] == 37.5


def test_response_cut_at_max_length_is_counted_and_scored(make_policy: Any, copy_rows: Any) -> None:
    def contains_seven(prompts: list[str], completions: list[str], **kw: Any) -> list[float]:
        return [float("7" in c) for c in completions]

    trainer = SPPOTrainer(
        make_policy(),
        copy_rows[:8],
        contains_seven,
        critic="shared",
        prompts_per_step=8,
        micro_batch_size=8,
        chat_template=False,
        verbose=0,
        generation=GenerationSettings(temperature=1.0, max_new_tokens=3, suppress_eos=True),
    )
    trainer._seed_everything()
    batch = trainer.collect_rollout()
    assert batch.rollout.truncated.all() and (batch.rollout.response_lengths == 3).all()
    assert batch.outcomes.tolist() == [float("7" in t) for t in batch.rollout.texts]  # the verifier decides
    metrics = batch.metrics()
    assert metrics["rollout/truncation_rate"] == 1.0


def test_missing_critic_and_bad_settings(make_policy: Any, copy_rows: Any) -> None:
    with pytest.raises(ValueError, match="needs a critic"):
        SPPOTrainer(make_policy(), copy_rows, ExactMatchVerifier(), critic=None, **OPTS)
    with pytest.raises(ValueError, match="LoRA policy"):
        SPPOTrainer(
            make_policy(lora=None), copy_rows, ExactMatchVerifier(), critic=None, estimator="none", kl_coef=0.1, **OPTS
        )
    with pytest.raises(ValueError, match="Unknown estimator"):
        SPPOTrainer(make_policy(), copy_rows, ExactMatchVerifier(), critic="shared", estimator="ppo2", **OPTS)
    with pytest.raises(ValueError, match="groups"):
        TrainerConfig(estimator="grpo", n_samples_per_prompt=1).validate()
    with pytest.raises(ValueError, match="No reward"):
        SPPOTrainer(make_policy(), copy_rows, None, critic="shared", **OPTS)
    with pytest.raises(ValueError, match="Unknown TrainerConfig keys \\['learning_rat'\\]"):
        RunConfig.from_dict({"trainer": {"learning_rat": 1.0}})
