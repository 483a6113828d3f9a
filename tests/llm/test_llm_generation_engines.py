"""Generation engines as objects: the registry, a user's own engine, and sampling from a merged copy of the adapter.

The merged copy (``generation.merge_adapter``) folds ``W + scale * B A`` into a copy of each adapted weight; it must
sample the same tokens as the training model with its adapter, give the same log-probabilities, be refreshed after
every policy update, and share every tensor that LoRA does not change.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from sppo_rl.llm.config import GenerationSettings, LoraSettings, TrainerConfig
from sppo_rl.llm.engine_registry import GENERATION_ENGINES, register_generation_engine
from sppo_rl.llm.generation import (
    GenerationEngine,
    MergedAdapterCopy,
    TransformersEngine,
    generate_rollout,
    make_generation_engine,
)
from sppo_rl.llm.logprobs import sequence_logprobs
from sppo_rl.llm.models import decoder_and_head
from sppo_rl.llm.sequences import encode_prompts
from sppo_rl.llm.trainer import SPPOTrainer

PROMPTS = ["Repeat: 3", "Repeat: 12 hard question easy easy", "easy", "Repeat: 7 7 7 7 7 7"]


def _perturbed(make_policy: Any) -> Any:
    """A policy whose adapter changes the outputs (non-zero LoRA B matrices)."""
    policy = make_policy()
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return policy


def _logprobs(model: Any, rollout: Any, temperature: float) -> torch.Tensor:
    decoder, head, softcap = decoder_and_head(model)
    with torch.no_grad():
        logp, _ = sequence_logprobs(
            decoder,
            head,
            rollout.input_ids,
            rollout.attention_mask,
            rollout.n_prompt,
            rollout.response_mask,
            temperature=temperature,
            softcap=softcap,
        )
    return logp


@pytest.mark.parametrize("engine", ["generate", "static"])
def test_merged_sampling_gives_the_tokens_and_logprobs_of_the_adapter(make_policy: Any, engine: str) -> None:
    policy = _perturbed(make_policy)
    enc = encode_prompts(policy.tokenizer, PROMPTS, max_length=64).repeat_interleave(3)
    plain = GenerationSettings(max_new_tokens=12, temperature=1.0, engine=engine)
    merged = dataclasses.replace(plain, merge_adapter=True)
    # greedy
    ref = generate_rollout(policy, enc, plain, greedy=True)
    got = generate_rollout(policy, enc, merged, greedy=True)
    assert torch.equal(got.response_ids, ref.response_ids) and torch.equal(got.response_mask, ref.response_mask)
    # sampled with a fixed seed
    torch.manual_seed(7)
    ref = generate_rollout(policy, enc, plain)
    torch.manual_seed(7)
    engine_obj = make_generation_engine(policy, merged)
    got = engine_obj.generate(enc)
    assert torch.equal(got.response_ids, ref.response_ids)
    assert len(set(map(str, ref.response_ids.tolist()))) > 3  # real samples, not one repeated sequence
    # the log-probs of the sampled tokens: merged copy == training model with its adapter
    lp_train = _logprobs(policy.model, ref, 1.0)
    lp_merged = _logprobs(engine_obj.sampling_model, ref, 1.0)
    torch.testing.assert_close(lp_merged, lp_train, rtol=1e-5, atol=1e-5)
    # and the adapter matters: without it the log-probs differ
    with policy.reference():
        lp_base = _logprobs(policy.model, ref, 1.0)
    assert (lp_base - lp_train).abs().max() > 1e-3


def test_the_merged_copy_owns_only_the_adapted_weights(make_policy: Any) -> None:
    policy = _perturbed(make_policy)
    copy = MergedAdapterCopy(policy)
    own = {id(target.weight) for _, target in copy.pairs}
    base = policy.model.get_base_model()
    shared = {id(p) for p in base.parameters()}
    copy_params = list(copy.model.parameters())
    assert len(own) == len(copy.pairs) > 0 and not (own & shared)
    assert all(id(p) in shared for p in copy_params if id(p) not in own)  # embeddings, norms: the same tensors
    assert copy.merged_bytes == sum(t.weight.numel() * t.weight.element_size() for _, t in copy.pairs)
    assert not any("lora" in name for name, _ in copy.model.named_parameters())
    # W' = W + delta, checked by hand on one layer
    layer, target = copy.pairs[0]
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    expected = layer.get_base_layer().weight + (b @ a) * layer.scaling["default"]
    torch.testing.assert_close(target.weight, expected)


def test_merge_needs_a_lora_policy(make_policy: Any) -> None:
    with pytest.raises(ValueError, match="merge_adapter needs a LoRA policy"):
        make_generation_engine(make_policy(lora=None), GenerationSettings(merge_adapter=True))


def test_the_trainer_refreshes_the_merged_copy_after_every_update(make_policy: Any, copy_rows: Any) -> None:
    lora = LoraSettings(r=8, alpha=16, target_modules=["q_proj", "v_proj", "lm_head"])
    trainer = SPPOTrainer(
        make_policy(lora=lora),
        copy_rows[:32],
        lambda prompts, completions, **kw: [float(sum(map(ord, c)) % 2) for c in completions],
        estimator="grpo",
        n_samples_per_prompt=2,
        prompts_per_step=4,
        micro_batch_size=8,
        learning_rate=1e-2,
        generation=GenerationSettings(temperature=1.0, max_new_tokens=3, merge_adapter=True),
        max_prompt_length=32,
        chat_template=False,
        verbose=0,
    )
    merged = trainer.engine.merged
    assert merged is not None and merged.n_refreshes == 1

    def stale() -> float:
        gaps = [
            (target.weight - layer.get_base_layer().weight - layer.get_delta_weight("default")).abs().max()
            for layer, target in merged.pairs
        ]
        return float(max(gaps))

    for i in range(2):
        before = [p.detach().clone() for p in trainer.policy_params]
        trainer.train_iteration()
        assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy_params, strict=True))  # it moved
        assert merged.n_refreshes == i + 2 and stale() < 1e-6


def test_an_unknown_engine_is_refused_before_any_model_is_built() -> None:
    with pytest.raises(ValueError, match=r"generation\.engine must be a registered engine \(generate, static"):
        TrainerConfig(generation=GenerationSettings(engine="vllm")).validate()


def test_a_registered_engine_is_chosen_by_name(make_policy: Any, copy_rows: Any) -> None:
    """The extension point of docs/llm.md: a subclass with ``sample_tokens``, registered under a name."""
    calls: list[int] = []

    @register_generation_engine("test-counting")
    class CountingEngine(TransformersEngine):
        def sample_tokens(self, input_ids: Any, attention_mask: Any, settings: Any, greedy: bool, limit: int) -> Any:
            calls.append(int(input_ids.shape[0]))
            return super().sample_tokens(input_ids, attention_mask, settings, greedy, limit)

    try:
        trainer = SPPOTrainer(
            make_policy(),
            copy_rows[:16],
            lambda prompts, completions, **kw: [1.0] * len(completions),
            estimator="none",
            prompts_per_step=4,
            micro_batch_size=4,
            generation=GenerationSettings(max_new_tokens=2, engine="test-counting"),
            max_prompt_length=32,
            chat_template=False,
            verbose=0,
        )
        assert isinstance(trainer.engine, CountingEngine) and isinstance(trainer.engine, GenerationEngine)
        trainer.train_iteration()
        trainer.evaluate(copy_rows[:3], k=2)
        assert calls == [4, 6]
    finally:
        GENERATION_ENGINES.pop("test-counting", None)


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_generation_engine("static")(TransformersEngine)
