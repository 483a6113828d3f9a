"""GPU smoke benchmark of the LLM trainer: bf16 SPPO training steps at the DeepSeek-R1-Distill-Qwen-1.5B shape.

The policy is a random-init Qwen2 model with the 1.5B shape (hidden 1536, 28 layers, 12 heads, 2 KV heads,
intermediate 8960, vocabulary 151936) and a LoRA adapter; the critic is a smaller random-init Qwen2 (the 0.5B
shape by default) with its own, different tokenizer, or ``--critic shared``. No network, no tokenizer files:
byte-level BPE tokenizers are trained in-process (the policy's model keeps the full 151936-token vocabulary;
sampled ids outside the small tokenizer decode to nothing, which does not matter for timing). Responses have a
fixed length (``suppress_eos``), so the numbers are comparable across runs.

Each step goes through the real trainer (:meth:`SPPOTrainer.train_iteration`): generate -> score -> behaviour
log-probs -> critic values -> advantages -> critic update -> policy update. The first step warms up (CUDA
kernels, allocator); the JSON line reports every step and the last one's breakdown::

    python benchmarks/llm_gpu_smoke.py                       # 1.5B policy + 0.5B critic, 2 steps
    python benchmarks/llm_gpu_smoke.py --critic shared --prompts 32 --response-len 1024
    python benchmarks/llm_gpu_smoke.py --tiny --device cpu   # the same code path on a CPU in seconds

Works from a plain checkout (``pip install -e .`` not needed) and without stable-baselines3/gymnasium.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import random
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch
from common import machine_info, write_json

ROOT = Path(__file__).resolve().parents[1]

QWEN2_1P5B = {
    "model_type": "qwen2",
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}
"""DeepSeek-R1-Distill-Qwen-1.5B's shape."""
QWEN2_0P5B = {
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
"""Qwen2.5-0.5B's shape (vocabulary from the critic's tokenizer)."""
TINY_POLICY = {
    **QWEN2_1P5B,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 4096,
}
TINY_CRITIC = {
    **QWEN2_0P5B,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
}


def import_sppo_llm() -> Any:
    """``import sppo_rl.llm``; from a bare checkout, without running ``sppo_rl/__init__.py`` (which needs SB3)."""
    try:
        import sppo_rl.llm as llm

        return llm
    except ImportError:
        pass
    for name in [m for m in sys.modules if m == "sppo_rl" or m.startswith("sppo_rl.")]:
        del sys.modules[name]
    pkg = types.ModuleType("sppo_rl")
    pkg.__path__ = [str(ROOT / "sppo_rl")]
    sys.modules["sppo_rl"] = pkg
    spec = importlib.util.spec_from_file_location(
        "sppo_rl.llm", ROOT / "llm" / "__init__.py", submodule_search_locations=[str(ROOT / "llm")]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sppo_rl.llm"] = module
    spec.loader.exec_module(module)
    return module


def build_model(
    config: dict[str, Any],
    tokenizer: Any,
    device: torch.device,
    dtype: torch.dtype,
    causal_lm: bool,
    seed: int,
    vocab_size: int | None = None,
) -> Any:
    """Random-init model created directly on ``device`` in ``dtype`` (fast even at 1.5B parameters)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    fields = dict(config)
    model_type = fields.pop("model_type")
    fields["vocab_size"] = vocab_size or len(tokenizer)
    fields.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    cfg = AutoConfig.for_model(model_type, **fields)
    cls = AutoModelForCausalLM if causal_lm else AutoModel
    torch.manual_seed(seed)
    with torch.device(device):
        model = cls.from_config(cfg, dtype=dtype)
    return model.eval()


def random_prompts(n: int, words: list[str], rng: random.Random, n_words: int) -> list[dict[str, str]]:
    return [{"question": " ".join(rng.choice(words) for _ in range(n_words)), "answer": str(i % 10)} for i in range(n)]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--critic", default="separate", choices=["separate", "shared"])
    parser.add_argument("--estimator", default="sppo", choices=["sppo", "grpo", "rloo", "remax", "none", "gae"])
    parser.add_argument("--samples-per-prompt", type=int, default=None)
    parser.add_argument("--prompts", type=int, default=16, help="prompts per step")
    parser.add_argument("--prompt-len", type=int, default=256, help="prompt tokens (prompts are cut to this)")
    parser.add_argument("--response-len", type=int, default=512, help="response tokens (EOS suppressed)")
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--generation-batch", type=int, default=None, help="sequences per generate() call")
    parser.add_argument("--lora-r", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=1024, help="log-softmax chunk (positions)")
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--cache-implementation", default=None)
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--steps", type=int, default=2, help="training steps (the first one warms up)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (check the script on a CPU)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    llm = import_sppo_llm()
    from sppo_rl.llm.config import GenerationSettings, LoraSettings
    from sppo_rl.llm.critic import LMCritic
    from sppo_rl.llm.models import enable_activation_checkpointing, load_policy
    from sppo_rl.llm.tokenizer_training import train_tokenizer

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    rng = random.Random(0)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "omega",
        "sum",
        "prove",
        "integer",
        "triangle",
        "x",
        "y",
        "+",
        "=",
        "\\frac{1}{2}",
        "\\boxed{}",
        "Let",
        "find",
        "the",
        "number",
        "of",
    ] + [str(i) for i in range(100)]
    corpus = [" ".join(rng.choice(words) for _ in range(30)) for _ in range(200)]
    policy_tok = train_tokenizer(corpus, vocab_size=1000, byte_level=True)
    critic_tok = train_tokenizer(corpus, vocab_size=700, byte_level=True)  # a different vocabulary

    policy_cfg = TINY_POLICY if args.tiny else QWEN2_1P5B
    critic_cfg = TINY_CRITIC if args.tiny else QWEN2_0P5B
    if not args.tiny:
        policy_cfg = dict(policy_cfg, attn_implementation=args.attn)
        critic_cfg = dict(critic_cfg, attn_implementation=args.attn)
    t0 = time.perf_counter()
    base = build_model(policy_cfg, policy_tok, device, dtype, True, seed=0, vocab_size=policy_cfg["vocab_size"])
    lora = LoraSettings(r=args.lora_r, alpha=2 * args.lora_r, target_modules="all-linear")
    policy = load_policy(base, policy_tok, lora=lora)
    if not args.no_gradient_checkpointing:
        enable_activation_checkpointing(policy.model)
    critic: Any = "shared"
    if args.critic == "separate":
        backbone = build_model(critic_cfg, critic_tok, device, dtype, False, seed=1)
        backbone.requires_grad_(True)
        if not args.no_gradient_checkpointing:
            enable_activation_checkpointing(backbone)
        critic = LMCritic(
            backbone,
            critic_tok,
            "bernoulli",
            max_prompt_length=args.prompt_len,
            prompt_truncation="left",
            chat_template=False,
        )
    build_s = time.perf_counter() - t0

    rows = random_prompts(max(args.prompts * 4, 64), words, rng, n_words=args.prompt_len)

    def coin(prompts: list[str], completions: list[str], **kw: Any) -> list[float]:
        return [float(rng.random() < 0.5) for _ in completions]

    trainer = llm.SPPOTrainer(
        policy,
        rows,
        coin,
        critic=critic,
        estimator=args.estimator,
        n_samples_per_prompt=args.samples_per_prompt,
        prompts_per_step=args.prompts,
        mini_batch_size=args.prompts,
        micro_batch_size=args.micro_batch,
        learning_rate=1e-6,
        critic_learning_rate=5e-6,
        max_prompt_length=args.prompt_len,
        prompt_truncation="left",
        chat_template=False,
        logprob_chunk_size=args.chunk,
        verbose=0,
        generation=GenerationSettings(
            temperature=0.6,
            max_new_tokens=args.response_len,
            suppress_eos=True,
            cache_implementation=args.cache_implementation,
            batch_size=args.generation_batch,
        ),
    )
    steps = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        m = trainer.train_iteration()
        if device.type == "cuda":
            torch.cuda.synchronize()
        steps.append(m)
    last = steps[-1]
    n_params = sum(p.numel() for p in policy.model.parameters())
    result = {
        "benchmark": "llm_gpu_smoke",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "machine": machine_info(),
        "dtype": args.dtype,
        "policy_shape": "tiny" if args.tiny else "DeepSeek-R1-Distill-Qwen-1.5B",
        "policy_params_m": round((n_params - sum(p.numel() for p in policy.trainable_parameters())) / 1e6, 1),
        "lora_params_m": round(sum(p.numel() for p in policy.trainable_parameters()) / 1e6, 2),
        "critic": args.critic if args.critic == "shared" else ("tiny" if args.tiny else "Qwen2-0.5B shape"),
        "critic_trainable_params_m": round(sum(p.numel() for p in trainer.critic_params) / 1e6, 1),
        "estimator": args.estimator,
        "prompts_per_step": args.prompts,
        "sequences_per_step": args.prompts * trainer.config.samples_per_prompt,
        "prompt_len": args.prompt_len,
        "response_len": args.response_len,
        "micro_batch": args.micro_batch,
        "gradient_checkpointing": not args.no_gradient_checkpointing,
        "build_s": round(build_s, 2),
        "step_time_s": [round(m["time/iteration_s"], 3) for m in steps],
        "generation_s": round(last["time/generation_s"], 3),
        "logprob_s": round(last["time/logprob_s"], 3),
        "training_s": round(last["time/training_s"], 3),
        "tokens_per_second": round(last["time/tokens_per_second"], 1),
        "generation_tokens_per_second": round(last["time/generation_tokens_per_second"], 1),
        "peak_memory_gb": round(last["time/peak_memory_mb"] / 1024, 2),
        "peak_memory_gb_all_steps": round(max(m["time/peak_memory_mb"] for m in steps) / 1024, 2),
        "gpu_total_memory_gb": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        if device.type == "cuda"
        else None,
        "response_length_mean": last["rollout/response_length_mean"],
        "policy_gradient_loss": last["train/policy_gradient_loss"],
        "value_loss": last.get("train/value_loss"),
        "grad_norm": last["train/grad_norm"],
    }
    print(json.dumps(result), flush=True)
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
