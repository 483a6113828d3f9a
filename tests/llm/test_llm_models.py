"""Policy, generation, chunked log-probs, the reference policy, and both kinds of critic."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from sppo_rl.llm.config import GenerationSettings
from sppo_rl.llm.critic import CRITIC_ADAPTER, LMCritic, make_shared_critic
from sppo_rl.llm.generation import generate_rollout
from sppo_rl.llm.logprobs import sequence_logprobs
from sppo_rl.llm.model_files import ensure_pad_token
from sppo_rl.llm.models import load_policy
from sppo_rl.llm.random_init import build_random_model
from sppo_rl.llm.sequences import EncodedPrompts, PromptTooLongError, encode_prompts, left_pad, position_ids_from_mask
from sppo_rl.llm.tiny import TINY_QWEN2
from sppo_rl.llm.tokenizer_training import train_tokenizer

PROMPTS = ["Repeat: 3", "Repeat: 12 hard question", "easy"]


def _encode(policy: Any, texts: list[str] = PROMPTS) -> EncodedPrompts:
    return encode_prompts(policy.tokenizer, texts, max_length=64)


def _full_logprobs(model: Any, input_ids: torch.Tensor, mask: torch.Tensor, n_prompt: int, temperature: float):
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    logits = logits[:, n_prompt - 1 : -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, input_ids[:, n_prompt:, None]).squeeze(-1)


def test_encode_left_pads_and_enforces_the_limit(make_policy: Any) -> None:
    policy = make_policy()
    enc = _encode(policy)
    lengths = [len(policy.tokenizer(t)["input_ids"]) for t in PROMPTS]
    assert enc.lengths.tolist() == lengths
    assert (enc.attention_mask[:, -1] == 1).all()  # left padding: every prompt ends in the last column
    assert (enc.input_ids[enc.attention_mask == 0] == policy.tokenizer.pad_token_id).all()
    with pytest.raises(PromptTooLongError, match="max_prompt_length=2"):
        encode_prompts(policy.tokenizer, PROMPTS, max_length=2)
    cut = encode_prompts(policy.tokenizer, PROMPTS, max_length=2, truncation="left")
    assert cut.input_ids.shape[1] == 2 and cut.n_truncated == sum(n > 2 for n in lengths)
    full = policy.tokenizer(PROMPTS[1])["input_ids"]
    assert cut.input_ids[1].tolist() == full[-2:]  # the *last* tokens are kept
    ids, mask = left_pad([[5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[5, 6], [0, 7]] and mask.tolist() == [[1, 1], [0, 1]]


def test_generation_masks_eos_and_truncation(make_policy: Any) -> None:
    policy = make_policy()
    enc = _encode(policy).repeat_interleave(4)
    settings = GenerationSettings(temperature=1.0, max_new_tokens=6)
    torch.manual_seed(0)
    r = generate_rollout(policy, enc, settings)
    eos = policy.eos_token_ids
    for i in range(r.response_ids.shape[0]):
        n = int(r.response_mask[i].sum())
        tokens = r.response_ids[i, :n].tolist()
        assert all(t not in eos for t in tokens[:-1])  # only the last valid token may be an EOS
        assert bool(r.truncated[i]) == (tokens[-1] not in eos) and n <= 6
        assert (r.response_ids[i, n:] == policy.tokenizer.pad_token_id).all()
    fixed = generate_rollout(
        policy,
        enc,
        GenerationSettings(max_new_tokens=5, suppress_eos=True),
    )
    assert (fixed.response_lengths == 5).all() and fixed.truncated.all()
    static = generate_rollout(
        policy,
        enc,
        GenerationSettings(max_new_tokens=3, batch_size=5, cache_implementation="dynamic"),
    )
    assert static.response_ids.shape[0] == enc.input_ids.shape[0]


def test_recomputed_logprobs_match_generation_and_full_softmax(make_policy: Any) -> None:
    policy = make_policy()
    enc = _encode(policy)
    from transformers import GenerationConfig

    torch.manual_seed(1)
    out = policy.model.generate(
        input_ids=enc.input_ids,
        attention_mask=enc.attention_mask,
        return_dict_in_generate=True,
        output_logits=True,
        generation_config=GenerationConfig(
            do_sample=True,
            temperature=0.7,
            top_k=0,
            max_new_tokens=5,
            pad_token_id=policy.tokenizer.pad_token_id,
            eos_token_id=[-1],
        ),
    )
    seq = out.sequences
    n_prompt = enc.input_ids.shape[1]
    mask = torch.cat([enc.attention_mask, torch.ones_like(seq[:, n_prompt:])], 1)
    gen_lp = torch.stack([torch.log_softmax(lg.float() / 0.7, -1) for lg in out.logits], 1)
    gen_lp = gen_lp.gather(-1, seq[:, n_prompt:, None]).squeeze(-1)
    decoder, head, _ = policy.parts
    resp_mask = torch.ones_like(seq[:, n_prompt:])
    with torch.no_grad():
        chunked, entropy = sequence_logprobs(
            decoder, head, seq, mask, n_prompt, resp_mask, 0.7, chunk_size=4, with_entropy=True
        )
        full = _full_logprobs(policy.model, seq, mask, n_prompt, 0.7)
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked, gen_lp, atol=1e-4, rtol=1e-4)
    assert entropy is not None and (entropy > 0).all()


def test_chunked_logprobs_gradients_do_not_depend_on_chunk_size(make_policy: Any) -> None:
    policy = make_policy()
    enc = _encode(policy)
    ids = torch.cat([enc.input_ids, torch.randint(5, 40, (3, 7))], 1)
    mask = torch.cat([enc.attention_mask, torch.ones(3, 7, dtype=torch.long)], 1)
    resp = torch.ones(3, 7, dtype=torch.long)
    resp[0, 4:] = 0
    decoder, head, _ = policy.parts
    grads = []
    for chunk in (1, 3, 1000):
        policy.model.zero_grad()
        lp, _ = sequence_logprobs(decoder, head, ids, mask, enc.input_ids.shape[1], resp, 1.3, chunk_size=chunk)
        assert (lp[0, 4:] == 0).all()
        lp.sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in policy.trainable_parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])
    torch.testing.assert_close(grads[0], grads[2])


def test_reference_is_the_base_model_with_the_adapter_disabled(make_policy: Any, policy_tokenizer: Any) -> None:
    policy = make_policy(seed=0)
    base = build_random_model(dict(TINY_QWEN2), seed=0, tokenizer=policy_tokenizer)  # same weights, no LoRA
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(0.1)  # move the adapter away from its zero initialisation
    enc = _encode(policy)
    ids = torch.cat([enc.input_ids, torch.randint(5, 40, (3, 4))], 1)
    mask = torch.cat([enc.attention_mask, torch.ones(3, 4, dtype=torch.long)], 1)
    n = enc.input_ids.shape[1]
    with torch.no_grad():
        base_lp = _full_logprobs(base, ids, mask, n, 1.0)
        with policy.reference():
            ref_lp = _full_logprobs(policy.model, ids, mask, n, 1.0)
        pol_lp = _full_logprobs(policy.model, ids, mask, n, 1.0)
    torch.testing.assert_close(ref_lp, base_lp)
    assert (pol_lp - base_lp).abs().max() > 1e-3
    assert sum(1 for _ in policy.model.parameters()) == sum(1 for _ in base.parameters()) + 2 * 15  # no second copy
    no_lora = make_policy(lora=None)
    with pytest.raises(ValueError, match="adapter"), no_lora.reference():
        pass


def test_critic_reads_the_last_prompt_token_with_any_padding(make_critic_model: Any) -> None:
    backbone, tok = make_critic_model()
    critic = LMCritic(backbone, tok)
    messages = [[{"role": "user", "content": t}] for t in PROMPTS]
    enc = critic.encode(messages)
    with torch.no_grad():
        batched = critic.prompt_outputs(enc.input_ids, enc.attention_mask)
        alone = torch.stack(
            [
                critic.prompt_outputs(*(lambda e: (e.input_ids, e.attention_mask))(critic.encode([m])))[0]
                for m in messages
            ]
        )
        # the same prompts, right-padded: the last non-pad index is read
        ids = [enc.input_ids[i][enc.attention_mask[i].bool()].tolist() for i in range(3)]
        width = max(map(len, ids))
        right = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x in ids])
        right_mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
        right_out = critic.prompt_outputs(right, right_mask)
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(right_out, alone, atol=1e-5, rtol=1e-5)
    assert critic.baseline(batched).min() > 0 and critic.baseline(batched).max() < 1
    assert critic.render(messages[0]).startswith("<|im_start|>user")  # the critic's own chat template


def test_shared_critic_is_a_second_adapter_on_the_frozen_base(make_policy: Any) -> None:
    policy = make_policy()
    enc = _encode(policy)
    ids = torch.cat([enc.input_ids, torch.randint(5, 40, (3, 3))], 1)
    mask = torch.cat([enc.attention_mask, torch.ones(3, 3, dtype=torch.long)], 1)
    n = enc.input_ids.shape[1]
    with torch.no_grad():
        before = _full_logprobs(policy.model, ids, mask, n, 1.0)
    n_params = sum(p.numel() for p in policy.model.parameters())
    critic = make_shared_critic(policy)
    assert CRITIC_ADAPTER in policy.model.peft_config and policy.model.active_adapter == "default"
    critic_params = [p for _, p in critic.trainable_named_parameters()]
    assert {id(p) for p in critic_params}.isdisjoint({id(p) for p in policy.trainable_parameters()})
    n_head = sum(p.numel() for p in critic.head.parameters())
    extra = sum(p.numel() for p in policy.model.parameters()) - n_params + n_head
    assert extra == sum(p.numel() for p in critic_params) and extra < 0.5 * n_params
    # train the critic a little: the policy's outputs must not move
    opt = torch.optim.SGD(critic_params, lr=0.5)
    with critic.active():
        assert policy.model.active_adapter == CRITIC_ADAPTER
        for _ in range(3):
            opt.zero_grad()
            out = critic.prompt_outputs(enc.input_ids, enc.attention_mask)
            critic.head.loss_from_output(out, torch.tensor([1.0, 0.0, 1.0])).backward()
            opt.step()
    assert policy.model.active_adapter == "default"
    with torch.no_grad():
        after = _full_logprobs(policy.model, ids, mask, n, 1.0)
    torch.testing.assert_close(before, after)
    assert critic.shared and critic.tokenizer is policy.tokenizer
    with pytest.raises(ValueError, match="LoRA policy"):
        make_shared_critic(make_policy(lora=None))


def test_pad_token_policy(copy_rows: Any) -> None:
    no_pad = train_tokenizer([r["question"] for r in copy_rows], vocab_size=40, pad_token=None)
    assert no_pad.pad_token is None
    with pytest.warns(UserWarning, match="no pad token"):
        ensure_pad_token(no_pad)
    assert no_pad.pad_token_id == no_pad.eos_token_id
    model = build_random_model(dict(TINY_QWEN2), seed=0, tokenizer=no_pad)
    policy = load_policy(model, no_pad)
    enc = encode_prompts(policy.tokenizer, PROMPTS, 64)
    r = generate_rollout(policy, enc, GenerationSettings(max_new_tokens=4))
    assert r.response_ids.shape[0] == 3
    bare = train_tokenizer(["abc"], vocab_size=30, pad_token=None)
    bare.eos_token = None
    with pytest.raises(ValueError, match="neither a pad token nor an end-of-sequence token"):
        ensure_pad_token(bare)


def test_model_specs_mixed_precision_and_checkpointing(copy_rows: Any) -> None:
    """A spec-built policy: bf16 compute with float32 trained weights (no adapter), activation checkpointing on."""
    from sppo_rl.llm.config import LoraSettings, ModelSpec
    from sppo_rl.llm.models import train_mode

    texts = [r["question"] for r in copy_rows]
    spec = ModelSpec(
        init="random",
        config=dict(TINY_QWEN2),
        tokenizer={"train_on": "dataset", "vocab_size": 40},
        dtype="bfloat16",
        device="cpu",
        gradient_checkpointing=True,
        lora=None,
    )
    full = load_policy(spec, texts=texts)
    assert full.autocast_dtype == torch.bfloat16 and next(full.model.parameters()).dtype == torch.float32
    lora = load_policy(ModelSpec(**{**spec.__dict__, "lora": LoraSettings(r=4, alpha=8)}), texts=texts)
    assert lora.autocast_dtype is None and lora.dtype == torch.bfloat16  # frozen base stored in bf16
    assert all(p.dtype == torch.float32 for p in lora.trainable_parameters())  # peft keeps the adapter in fp32
    enc = encode_prompts(full.tokenizer, PROMPTS[:1], 64)
    ids = torch.cat([enc.input_ids, torch.tensor([[5, 6, 7]])], 1)
    mask = torch.ones_like(ids)
    decoder, head, _ = full.parts
    layer = decoder.layers[0]
    with train_mode(full.model), full.autocast():
        assert layer.training and layer.gradient_checkpointing  # checkpointing only acts in training mode
        lp, _ = sequence_logprobs(decoder, head, ids, mask, enc.input_ids.shape[1], torch.ones(1, 3), 1.0)
        lp.sum().backward()
    assert not full.model.training
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in full.trainable_parameters()[:3])
