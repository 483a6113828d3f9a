"""End-to-end training on CPU: learning a toy task, critic calibration, mixed architectures, checkpoints."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch
from sppo_rl.llm.config import GenerationSettings
from sppo_rl.llm.critic import LMCritic
from sppo_rl.llm.data import PromptDataset
from sppo_rl.llm.rewards import ExactMatchVerifier
from sppo_rl.llm.trainer import SPPOTrainer

GEN = GenerationSettings(temperature=1.0, max_new_tokens=2)


def _copy_trainer(policy: Any, rows: Any, critic: Any = "shared", **kw: Any) -> SPPOTrainer:
    options: dict[str, Any] = {
        "prompts_per_step": 64,
        "mini_batch_size": 64,
        "micro_batch_size": 64,
        "learning_rate": 2e-3,
        "critic_learning_rate": 1e-3,
        "generation": GEN,
        "max_prompt_length": 32,
        "chat_template": False,
    }
    options.update(kw)
    return SPPOTrainer(policy, rows, ExactMatchVerifier(mode="prefix"), critic=critic, verbose=0, **options)


def _mean(history: list[dict[str, float]], key: str) -> float:
    return float(np.mean([m[key] for m in history]))


def test_sppo_learns_the_copy_task(make_policy: Any, copy_rows: Any, make_critic_model: Any) -> None:
    """A tiny random Qwen2 policy with a separate Llama critic (different vocabulary) learns to copy a digit."""
    backbone, ctok = make_critic_model()
    trainer = _copy_trainer(make_policy(), copy_rows, critic=backbone, critic_tokenizer=ctok)
    trainer.learn(n_iterations=130)
    before = _mean(trainer.history[:10], "rollout/reward_mean")
    after = _mean(trainer.history[-10:], "rollout/reward_mean")
    assert before < 0.15
    assert after > before + 0.35, (before, after)
    # the critic follows the policy's success rate
    assert abs(trainer.history[-1]["train/value_mean"] - after) < 0.2
    assert trainer.num_timesteps == 130 * 64 and trainer.iteration == 130


def test_grpo_runs_through_the_same_trainer(make_policy: Any, copy_rows: Any) -> None:
    trainer = _copy_trainer(
        make_policy(),
        copy_rows,
        critic=None,
        estimator="grpo",
        prompts_per_step=8,
        mini_batch_size=4,
        micro_batch_size=16,
    )
    assert trainer.config.samples_per_prompt == 8
    trainer.learn(total_steps=3 * 64)
    assert trainer.iteration == 3 and trainer.num_timesteps == 192
    m = trainer.history[-1]
    for key in (
        "rollout/reward_mean",
        "train/policy_gradient_loss",
        "train/approx_kl",
        "train/clip_fraction",
        "time/tokens_per_second",
        "time/peak_memory_mb",
        "time/generation_s",
        "time/training_s",
    ):
        assert np.isfinite(m[key]), key
    assert "train/value_mean" not in m  # no critic
    # two mini-batches per epoch: the second one sees a moved policy
    assert m["train/approx_kl"] > 0


def _calibration_rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(64):
        hard = i % 2 == 0
        rows.append(
            {
                "question": ("hard question " if hard else "easy ") + str(i % 10),
                "answer": "0",
                "p": 0.2 if hard else 0.8,
            }
        )
    return rows


def test_critic_becomes_calibrated(make_policy: Any, make_critic_model: Any) -> None:
    """Outcomes Bernoulli(0.2) on hard prompts and Bernoulli(0.8) on easy ones: V(prompt) learns both rates."""
    rng = np.random.default_rng(0)

    def coin(prompts: list[str], completions: list[str], p: list[float], **kw: Any) -> list[float]:
        return [float(rng.random() < pi) for pi in p]

    backbone, ctok = make_critic_model()
    rows = _calibration_rows()
    trainer = SPPOTrainer(
        make_policy(),
        rows,
        coin,
        critic=backbone,
        critic_tokenizer=ctok,
        prompts_per_step=64,
        mini_batch_size=32,
        micro_batch_size=64,
        learning_rate=1e-5,
        critic_learning_rate=3e-3,
        critic_epochs=2,
        max_prompt_length=64,
        chat_template=False,
        generation=GenerationSettings(temperature=1.0, max_new_tokens=1),
        verbose=0,
    )
    trainer.learn(n_iterations=40)
    critic = trainer.critic
    assert isinstance(critic, LMCritic)
    with torch.no_grad():
        enc = critic.encode([trainer.dataset.messages(i) for i in range(len(rows))])
        v = critic.baseline(critic.prompt_outputs(enc.input_ids, enc.attention_mask))
    hard = torch.tensor([r["p"] == 0.2 for r in rows])
    assert abs(float(v[hard].mean()) - 0.2) < 0.1, v[hard]
    assert abs(float(v[~hard].mean()) - 0.8) < 0.1, v[~hard]
    assert float(v[hard].max()) < 0.4 and float(v[~hard].min()) > 0.6
    # the logged Brier score approaches the irreducible 0.16 (= p(1 - p) for both kinds)
    assert _mean(trainer.history[-10:], "train/value_brier") < 0.2


def _build_resumable(make_policy: Any, copy_rows: Any, make_critic_model: Any) -> SPPOTrainer:
    torch.manual_seed(123)
    random.seed(123)
    backbone, ctok = make_critic_model()
    return _copy_trainer(
        make_policy(),
        copy_rows,
        critic=backbone,
        critic_tokenizer=ctok,
        prompts_per_step=16,
        mini_batch_size=8,
        micro_batch_size=8,
        n_epochs=2,
        seed=7,
    )


def test_save_resume_evaluate_round_trip(
    tmp_path: Any, make_policy: Any, copy_rows: Any, make_critic_model: Any
) -> None:
    eval_data = PromptDataset(copy_rows[:20])
    full = _build_resumable(make_policy, copy_rows, make_critic_model)
    full.learn(n_iterations=4)

    first = _build_resumable(make_policy, copy_rows, make_critic_model)
    first.learn(n_iterations=2)
    path = first.save(str(tmp_path / "ckpt"))
    for name in (
        "config.json",
        "critic.safetensors",
        "optimizer.pt",
        "rng_state.safetensors",
        "trainer_state.json",
        "policy_adapter/adapter_model.safetensors",
        "policy_adapter/adapter_config.json",
    ):
        assert (tmp_path / "ckpt" / name).exists(), name

    # a fresh process would rebuild the same components; the checkpoint restores the rest
    torch.manual_seed(999)  # unrelated random state: the checkpoint must override it
    backbone, ctok = make_critic_model()
    resumed = SPPOTrainer.load(
        path,
        policy=make_policy(),
        train_data=copy_rows,
        reward=ExactMatchVerifier(mode="prefix"),
        critic=backbone,
        critic_tokenizer=ctok,
        verbose=0,
    )
    assert resumed.iteration == 2 and resumed.num_timesteps == first.num_timesteps
    assert resumed.config == first.config
    resumed.learn(n_iterations=2)

    keys = [
        "rollout/reward_mean",
        "train/policy_gradient_loss",
        "train/value_loss",
        "train/approx_kl",
        "train/clip_fraction",
        "train/value_mean",
    ]
    for a, b in zip(full.history[2:], resumed.history, strict=True):
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    for p, q in zip(full.policy_params, resumed.policy_params, strict=True):
        assert torch.equal(p, q)
    assert full.critic is not None and resumed.critic is not None
    for (_, p), (_, q) in zip(
        full.critic.trainable_named_parameters(), resumed.critic.trainable_named_parameters(), strict=True
    ):
        assert torch.equal(p, q)
    ev_full = full.evaluate(eval_data, k=2)
    ev_resumed = resumed.evaluate(eval_data, k=2)
    assert ev_full == ev_resumed and 0.0 <= ev_full["avg@k"] <= 1.0 and ev_full["n_prompts"] == 20
    # evaluation does not disturb the training random state
    state = torch.get_rng_state()
    full.evaluate(eval_data, k=1)
    assert torch.equal(state, torch.get_rng_state())


def test_resume_refuses_a_different_base(tmp_path: Any, make_policy: Any, copy_rows: Any) -> None:
    trainer = _copy_trainer(make_policy(seed=0), copy_rows, prompts_per_step=8, micro_batch_size=8)
    trainer.learn(n_iterations=1)
    path = trainer.save(str(tmp_path / "ckpt"))
    other = _copy_trainer(make_policy(seed=5), copy_rows, prompts_per_step=8, micro_batch_size=8)
    with pytest.raises(ValueError, match="base weights differ"):
        other.load_checkpoint(path)
    grpo = _copy_trainer(make_policy(seed=0), copy_rows, critic=None, estimator="grpo", prompts_per_step=2)
    with pytest.raises(ValueError, match="estimator"):
        grpo.load_checkpoint(path)


def test_callbacks_logger_and_progress_bar(tmp_path: Any, make_policy: Any, copy_rows: Any) -> None:
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import configure

    class Stop(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.events: list[str] = []

        def _on_training_start(self) -> None:
            self.events.append("start")

        def _on_rollout_end(self) -> None:
            self.events.append("rollout_end")

        def _on_step(self) -> bool:
            self.events.append(f"step{self.num_timesteps}")
            return self.n_calls < 2

        def _on_training_end(self) -> None:
            self.events.append("end")

    seen = []
    cb = Stop()
    trainer = _copy_trainer(
        make_policy(),
        copy_rows,
        prompts_per_step=4,
        micro_batch_size=4,
        logger=configure(str(tmp_path), ["csv", "tensorboard"]),
    )
    trainer.learn(
        n_iterations=5,
        callback=[cb, lambda lo, gl: seen.append(lo["metrics"]["rollout/reward_mean"])],
        progress_bar=True,
    )
    assert trainer.iteration == 2  # the callback stopped training
    assert cb.events == ["start", "rollout_end", "step4", "rollout_end", "step8", "end"]
    assert len(seen) == 2
    csv = (tmp_path / "progress.csv").read_text().splitlines()
    header = csv[0].split(",")
    for key in (
        "rollout/reward_mean",
        "rollout/success_rate",
        "rollout/response_length_mean",
        "rollout/truncation_rate",
        "train/clip_fraction",
        "train/approx_kl",
        "train/value_mean",
        "train/value_brier",
        "time/tokens_per_second",
        "time/generation_s",
        "time/training_s",
        "time/peak_memory_mb",
        "rollout/verifier_failures",
    ):
        assert key in header, key
    assert len(csv) == 3
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.rglob("*"))


def test_trainer_takes_a_prompt_env_and_real_verifiers(make_policy: Any, policy_tokenizer: Any) -> None:
    """PromptEnv as training data (its dataset and verifier), reasoning-gym and boxed-math rewards in the loop."""
    pytest.importorskip("gymnasium")
    from sppo_rl.llm.env import PromptEnv
    from sppo_rl.llm.rewards import BoxedMathVerifier, ReasoningGymVerifier

    opts: dict[str, Any] = {
        "prompts_per_step": 4,
        "micro_batch_size": 4,
        "max_prompt_length": 128,
        "verbose": 0,
        "generation": GenerationSettings(temperature=1.0, max_new_tokens=4),
    }
    env = PromptEnv("reasoning_gym:basic_arithmetic", reward=ReasoningGymVerifier(), tokenizer=policy_tokenizer)
    trainer = SPPOTrainer(make_policy(), env, critic="shared", **opts)
    assert trainer.get_env() is env and trainer.rewards is env.rewards
    trainer.learn(n_iterations=1)
    assert trainer.history[-1]["rollout/no_answer_rate"] == 1.0  # a random model never writes <answer> tags
    rows = [{"question": "1 + 1", "answer": "2"}] * 4
    math = SPPOTrainer(make_policy(), rows, BoxedMathVerifier(), critic="shared", **opts)
    math.learn(n_iterations=1)
    assert math.history[-1]["rollout/verifier_failures"] == 0.0
