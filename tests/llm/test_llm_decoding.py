"""The static-cache decoding engine (``generation.engine: static``) against ``transformers``' ``generate``.

On a CPU only the eager loop runs (CUDA graphs need a GPU; ``benchmarks/llm_step.py --section decode`` checks
them there against ``generate`` with the same greedy test).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from sppo_rl.llm.config import GenerationSettings, TrainerConfig
from sppo_rl.llm.generation import generate_rollout
from sppo_rl.llm.sequences import EncodedPrompts, encode_prompts
from sppo_rl.llm.static_decoding import StaticDecoder, _attention_swapped, last_decode_stats, static_generate

PROMPTS = ["Repeat: 3", "Repeat: 12 hard question easy easy", "easy", "Repeat: 7 7 7 7 7 7"]


def _ragged(policy: Any) -> EncodedPrompts:
    enc = encode_prompts(policy.tokenizer, PROMPTS, max_length=64)
    assert len(set(enc.lengths.tolist())) > 2  # left padding of several widths
    return enc


def _perturb_adapter(policy: Any) -> None:
    """Non-zero LoRA B matrices, so that the adapter changes the outputs."""
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)


@pytest.mark.parametrize(("bucket", "prefill_tokens"), [(0, 16384), (4, 5), (7, 3)])
def test_greedy_static_engine_matches_generate(make_policy: Any, bucket: int, prefill_tokens: int) -> None:
    policy = make_policy()
    _perturb_adapter(policy)
    enc = _ragged(policy)
    eos = policy.eos_token_ids
    for n in (1, 6, 19):
        settings = GenerationSettings(max_new_tokens=n, kv_bucket=bucket)
        ref = generate_rollout(policy, enc, settings, greedy=True)
        tokens = static_generate(
            policy.model, enc.input_ids, enc.attention_mask, settings, eos, policy.tokenizer.pad_token_id, True,
            prefill_tokens=prefill_tokens,
        )  # fmt: skip
        rollout = generate_rollout(policy, enc, dataclasses.replace(settings, engine="static"), greedy=True)
        assert torch.equal(rollout.response_ids, ref.response_ids)
        assert torch.equal(rollout.response_mask, ref.response_mask)
        valid = ref.response_mask.bool()
        assert torch.equal(tokens[:, : valid.shape[1]][valid], ref.response_ids[valid])
    assert policy.model.config._attn_implementation == "sdpa"  # restored


def test_static_engine_without_adapter_and_in_batches(make_policy: Any) -> None:
    policy = make_policy(lora=None)
    enc = _ragged(policy)
    settings = GenerationSettings(max_new_tokens=9, batch_size=3)
    ref = generate_rollout(policy, enc, settings, greedy=True)
    got = generate_rollout(policy, enc, dataclasses.replace(settings, engine="static"), greedy=True)
    assert torch.equal(got.response_ids, ref.response_ids) and torch.equal(got.truncated, ref.truncated)


def test_suppressed_eos_gives_fixed_length(make_policy: Any) -> None:
    policy = make_policy()
    enc = _ragged(policy).repeat_interleave(8)
    settings = GenerationSettings(max_new_tokens=40, temperature=1.5, suppress_eos=True, engine="static")
    r = generate_rollout(policy, enc, settings)
    assert (r.response_lengths == 40).all() and r.truncated.all()
    assert not torch.isin(r.response_ids, torch.tensor(policy.eos_token_ids)).any()
    assert last_decode_stats()["eager_steps"] == 39 and last_decode_stats()["graphs"] == 0  # CPU: no graphs


def test_eos_masks_like_generate_and_stops_early(make_policy: Any) -> None:
    policy = make_policy()
    enc = _ragged(policy).repeat_interleave(6)
    eos = policy.eos_token_ids
    settings = GenerationSettings(max_new_tokens=200, temperature=1.0, engine="static")
    torch.manual_seed(0)
    r = generate_rollout(policy, enc, settings)
    for i in range(r.response_ids.shape[0]):
        n = int(r.response_mask[i].sum())
        tokens = r.response_ids[i, :n].tolist()
        assert all(t not in eos for t in tokens[:-1])
        assert bool(r.truncated[i]) == (tokens[-1] not in eos)
        assert (r.response_ids[i, n:] == policy.tokenizer.pad_token_id).all()
    if not r.truncated.any():  # every row ended: the loop stopped at the next check, not at 200 tokens
        assert r.response_ids.shape[1] < 200


def _one_step_frequencies(policy: Any, settings: GenerationSettings, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    enc = encode_prompts(policy.tokenizer, ["Repeat: 3"], max_length=64).repeat_interleave(n)
    eos = policy.eos_token_ids
    decoder = StaticDecoder(
        policy.model, enc.input_ids, enc.attention_mask, settings, eos, policy.tokenizer.pad_token_id, False, 1
    )
    with _attention_swapped(decoder.config):
        decoder.prefill()
    sampled = decoder.tokens[:, 0]
    with torch.no_grad():
        logits = policy.model(input_ids=enc.input_ids[:1]).logits[0, -1].float()
    return torch.bincount(sampled, minlength=logits.shape[0]).float() / n, logits


def _reference_probs(logits: torch.Tensor, settings: GenerationSettings) -> torch.Tensor:
    logits = logits / settings.temperature
    if settings.top_k:
        kth = logits.topk(settings.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, -torch.inf)
    probs = logits.softmax(-1)
    if settings.top_p < 1:
        p, order = probs.sort(descending=True)
        keep = (p.cumsum(-1) - p) < settings.top_p
        probs = torch.zeros_like(probs).scatter(0, order, p * keep)
        probs = probs / probs.sum()
    return probs


@pytest.mark.parametrize(
    "settings",
    [
        GenerationSettings(temperature=0.7, engine="static"),
        GenerationSettings(temperature=1.0, top_k=5, engine="static"),
        GenerationSettings(temperature=1.3, top_p=0.6, engine="static"),
    ],
)
def test_sampling_draws_from_the_right_distribution(make_policy: Any, settings: GenerationSettings) -> None:
    policy = make_policy()
    torch.manual_seed(0)
    n = 20000
    freq, logits = _one_step_frequencies(policy, settings, n)
    probs = _reference_probs(logits, settings)
    assert (freq[probs == 0] == 0).all()  # nothing outside top-k / top-p
    tol = 4 * torch.sqrt(probs * (1 - probs) / n) + 1e-3
    assert ((freq - probs).abs() <= tol).all(), (freq - probs).abs().max()


def test_trainer_iteration_with_static_engine(make_policy: Any, copy_rows: Any) -> None:
    from sppo_rl.llm import SPPOTrainer

    policy = make_policy()
    trainer = SPPOTrainer(
        policy,
        copy_rows,
        lambda prompts, completions, **kw: [float(c[:1] == "7") for c in completions],
        critic="shared",
        prompts_per_step=8,
        micro_batch_size=4,
        learning_rate=1e-3,
        verbose=0,
        generation=GenerationSettings(temperature=1.0, max_new_tokens=6, engine="static", kv_bucket=4),
    )
    m = trainer.train_iteration()
    assert m["rollout/response_length_mean"] <= 6 and m["time/generation_s"] > 0
    # no gradient is held through the next rollout (the critic's are freed after its update, the policy's when the
    # next iteration starts; they stay readable after train_policy)
    assert all(p.grad is None for p in trainer.critic_params)
    assert any(p.grad is not None for p in trainer.policy_params)
    collect = trainer.collect_rollout
    seen: list[bool] = []

    def checked_collect() -> Any:
        seen.append(all(p.grad is None for p in trainer.policy_params + trainer.critic_params))
        return collect()

    trainer.collect_rollout = checked_collect  # type: ignore[method-assign]
    trainer.train_iteration()
    assert seen == [True]


def test_engine_is_validated() -> None:
    with pytest.raises(ValueError, match=r"generation\.engine"):
        TrainerConfig(generation=GenerationSettings(engine="vllm")).validate()
    with pytest.raises(ValueError, match="kv_bucket"):
        TrainerConfig(generation=GenerationSettings(kv_bucket=-1)).validate()
