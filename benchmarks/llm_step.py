"""LLM performance on one GPU: SPPO (N = 1) against GRPO (N = 8), critic memory, decoding against its bound.

Random-init models of the real shapes (Qwen2 configs of DeepSeek-R1-Distill-Qwen-7B and -1.5B) in bf16: random
weights cost the same time and memory as trained ones, and nothing is downloaded. Responses have a fixed length
(EOS suppressed), so every comparison is exact. Every training step goes through the library's own trainer
(:meth:`SPPOTrainer.train_iteration`: generate -> score -> log-probs -> critic values -> advantages -> critic
update -> policy update), every decode through :func:`~sppo_rl.llm.generation.generate_rollout`.

Sections (one GPU command each, each well under 10 minutes on an H100)::

    python benchmarks/llm_step.py --section decode --out decode.json          # 3: decode vs the bandwidth bound
    python benchmarks/llm_step.py --section throughput --out throughput.json  # 1, 2 (a, e), 4
    python benchmarks/llm_step.py --section memory --out memory.json          # 2 (b, c, d)
    python benchmarks/llm_step.py --section decode,throughput,memory --tiny --device cpu   # check on a CPU

- ``decode``: decode milliseconds per step at batch 64 (256 prompt tokens) for ``generate()``,
  ``generate(cache_implementation="static")`` and the library's static engine (eager, CUDA graphs,
  ``torch.compile`` + CUDA graphs), without and with the LoRA adapter, at batch 512 and at the 1.5B shape; the
  bound is (bytes of weights read + KV cache read per step) / measured device-to-device copy bandwidth.
- ``throughput``: a 7B LoRA policy; GRPO N = 8 without critic, then SPPO N = 1 with a fully trained 1.5B critic,
  at the same prompts per step; step time split into generation / scoring / log-probs / updates, peak memory;
  then the policy update of 32 sequences under activation checkpointing on/off and several micro-batch sizes.
- ``memory``: SPPO steps of the 7B LoRA policy with a 7B LoRA critic, a 7B fully trained critic and the shared
  critic adapter (an out-of-memory is reported as ``OOM``).

Each section prints a table at the end and writes its JSON to ``--out`` (rewritten after every case, so a cut
run keeps what it measured). Works from a plain checkout, without stable-baselines3 or gymnasium.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, markdown_table, write_json
from llm_gpu_smoke import QWEN2_1P5B, build_model, import_sppo_llm

QWEN2_7B = {
    "model_type": "qwen2",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 131072,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}
"""DeepSeek-R1-Distill-Qwen-7B's shape (7.6 B parameters)."""
TINY_7B = {**QWEN2_7B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
TINY_7B.update(num_key_value_heads=2, vocab_size=4096)
TINY_1P5B = {**QWEN2_1P5B, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
TINY_1P5B.update(num_attention_heads=4, num_key_value_heads=2, vocab_size=4096)

WORDS = ["alpha", "beta", "gamma", "delta", "sum", "prove", "integer", "x", "y", "+", "=", "\\frac{1}{2}", "Let"]
WORDS += ["find", "the", "number", "of"] + [str(i) for i in range(100)]
GB = 2**30
"""Memory is reported in GiB (an "80 GB" H100 has 79.6 GiB)."""


# ------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------


class Run:
    """Results, the JSON file, the time budget, printing."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.perf_counter()
        self.results: dict[str, Any] = {"benchmark": "llm_step", "command": " ".join(sys.argv), "sections": {}}
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def over_budget(self, reserve: float = 0.0) -> bool:
        return self.args.budget_s is not None and self.elapsed() + reserve > self.args.budget_s

    def save(self) -> None:
        if self.args.out:
            write_json(self.args.out, self.results)

    def log(self, *msg: Any) -> None:
        print(f"[{self.elapsed():7.1f}s]", *msg, flush=True)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def timed(self, fn: Any) -> tuple[float, Any]:
        self.sync()
        t = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - t, out

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gb(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / GB if self.cuda else None

    def total_gb(self) -> float | None:
        return torch.cuda.get_device_properties(self.device).total_memory / GB if self.cuda else None

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def environment(run: Run) -> dict[str, Any]:
    import peft
    import transformers

    env = {
        **machine_info(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "dtype": run.args.dtype,
        "tiny": run.args.tiny,
    }
    if run.cuda:
        props = torch.cuda.get_device_properties(run.device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / GB, 2), sms=props.multi_processor_count)
        try:
            import subprocess

            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
        except Exception:
            pass
    return env


def tokenizers(n_rows: int = 200) -> tuple[Any, Any, list[str]]:
    from sppo_rl.llm.tokenizer_training import train_tokenizer

    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(30)) for _ in range(n_rows)]
    return train_tokenizer(corpus, 1000, byte_level=True), train_tokenizer(corpus, 700, byte_level=True), corpus


def prompt_rows(n: int, n_words: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [{"question": " ".join(rng.choice(WORDS) for _ in range(n_words)), "answer": str(i % 10)} for i in range(n)]


def coin(seed: int = 0) -> Any:
    rng = random.Random(seed)

    def reward(prompts: list[str], completions: list[str], **kw: Any) -> list[float]:
        return [float(rng.random() < 0.5) for _ in completions]

    return reward


def shapes(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    if run.args.tiny:
        return TINY_7B, TINY_1P5B
    return dict(QWEN2_7B, attn_implementation="sdpa"), dict(QWEN2_1P5B, attn_implementation="sdpa")


def build(run: Run, cfg: dict[str, Any], tok: Any, causal_lm: bool, dtype: torch.dtype, seed: int) -> Any:
    vocab = cfg.get("vocab_size")
    return build_model(cfg, tok, run.device, dtype, causal_lm, seed=seed, vocab_size=vocab)


def n_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def set_checkpointing(model: Any, on: bool) -> None:
    from sppo_rl.llm.models import enable_activation_checkpointing

    if on:
        enable_activation_checkpointing(model)
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    off = getattr(base, "activation_checkpointing_disable", None) or base.gradient_checkpointing_disable
    off()


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


# ------------------------------------------------------------------------------------------------------------
# section 3: decoding against its bound
# ------------------------------------------------------------------------------------------------------------


def copy_bandwidth(run: Run) -> float | None:
    """Device-to-device copy bandwidth, bytes read + written per second (median of 20 copies of 1 GiB)."""
    if not run.cuda:
        return None
    n = 2**30
    a = torch.empty(n, dtype=torch.uint8, device=run.device).random_()
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    times = []
    for _ in range(20):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    del a, b
    return 2 * n / sorted(times)[len(times) // 2]


def matmul_rate(run: Run) -> float | None:
    """bf16 matrix-product rate, FLOP/s (median of 10 products of 8192 x 8192 x 8192 random matrices)."""
    if not run.cuda:
        return None
    n = 8192
    a = torch.randn(n, n, device=run.device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=run.device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        a @ b
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    del a, b
    return 2 * n**3 / sorted(times)[len(times) // 2]


def weight_bytes_read(model: Any) -> int:
    """Bytes of parameters a decode step reads: all but the input embedding table (only B rows of it are read)."""
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if out is None or out.weight is not emb:
        total -= emb.numel() * emb.element_size()
    return total


def kv_bytes_per_token(cfg: Any, dtype: torch.dtype) -> int:
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * torch.empty(0, dtype=dtype).element_size()


def same_tokens(a: Any, b: Any) -> bool:
    """Equal responses (masks and ids), allowing extra all-padding columns on either side."""
    w = min(a.response_ids.shape[1], b.response_ids.shape[1])
    extra_a, extra_b = a.response_mask[:, w:], b.response_mask[:, w:]
    return (
        torch.equal(a.response_ids[:, :w], b.response_ids[:, :w])
        and torch.equal(a.response_mask[:, :w], b.response_mask[:, :w])
        and not extra_a.any()
        and not extra_b.any()
    )


def decode_case(
    run: Run,
    engine: Any,
    batch: int,
    n_steps: int,
    label: str,
    bw: float | None,
    single: bool = False,
) -> dict[str, Any]:
    """Milliseconds per decode step of a generation engine: (T(n) - T(1)) / (n - 1) after a warm-up call of n tokens.

    With ``single`` (a compiled step, which would recompile for each call) only one call is made and the step
    time is the mean CUDA-graph replay time. The static engine also reports its replay time per step. The bytes
    a step reads are those of the model the engine samples from (the merged copy with ``merge_adapter``).
    """
    from sppo_rl.llm.sequences import encode_prompts

    args = run.args
    tok = engine.policy.tokenizer
    model = engine.sampling_model
    rows = prompt_rows(batch, args.prompt_len)
    enc = encode_prompts(tok, [r["question"] for r in rows], args.prompt_len, "left", device=run.device)

    def gen(n: int) -> Any:
        s = dataclasses.replace(engine.settings, max_new_tokens=n, suppress_eos=True, temperature=0.6)
        return engine.generate(enc, settings=s)

    torch.manual_seed(0)
    t_warm, r = run.timed(lambda: gen(n_steps))
    stats = dict(engine.last_stats)
    t_n = t_1 = None
    if not single:
        t_n, r = run.timed(lambda: gen(n_steps))
        stats = dict(engine.last_stats)
        t_1, _ = run.timed(lambda: gen(1))
    assert int(r.response_lengths.min()) == n_steps
    replay_ms = stats.get("replay_ms_per_step")
    if single:
        if replay_ms is None:
            raise RuntimeError("single-call timing needs CUDA-graph replays")
        step_s = replay_ms / 1e3
    else:
        step_s = (t_n - t_1) / (n_steps - 1)
    cfg = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    w = weight_bytes_read(model)
    kv_tok = kv_bytes_per_token(cfg, torch.bfloat16 if args.dtype == "bfloat16" else torch.float32)
    kv = batch * (enc.input_ids.shape[1] + n_steps / 2) * kv_tok
    bound_s = (w + kv) / bw if bw else None
    emb = model.get_input_embeddings().weight
    flops = 2 * (n_params(model) - emb.numel()) * batch  # matrix products of one decode step (attention aside)
    rate = run.results.get("matmul_tflops")
    flop_bound_s = flops / (rate * 1e12) if rate else None
    out = {
        "case": label,
        "batch": batch,
        "prompt_len": int(enc.input_ids.shape[1]),
        "new_tokens": n_steps,
        "first_call_s": round(t_warm, 2),
        "prefill_s": round(t_1, 4) if t_1 is not None else None,
        "step_ms": round(step_s * 1e3, 3),
        "step_timing": "graph replay mean" if single else "(T(n) - T(1)) / (n - 1)",
        "replay_ms_per_step": round(replay_ms, 3) if replay_ms else None,
        "graphs": stats.get("graphs"),
        "eager_steps": stats.get("eager_steps"),
        "decode_tokens_per_s": round(batch / step_s, 1),
        "weights_gb": round(w / 1e9, 3),
        "kv_read_gb": round(kv / 1e9, 3),
        "bound_ms": round(bound_s * 1e3, 3) if bound_s else None,
        "fraction_of_bound": round(bound_s / step_s, 4) if bound_s else None,
        "flop_bound_ms": round(flop_bound_s * 1e3, 3) if flop_bound_s else None,
        "replay_fraction_of_bound": round(bound_s / (replay_ms / 1e3), 4) if bound_s and replay_ms else None,
        "peak_gib": round(run.peak_gb(), 2) if run.cuda else None,
    }
    run.log(label, json.dumps(out))
    return out


def section_decode(run: Run) -> dict[str, Any]:
    from sppo_rl.llm.config import GenerationSettings, LoraSettings
    from sppo_rl.llm.generation import make_generation_engine
    from sppo_rl.llm.models import load_policy

    args = run.args
    res: dict[str, Any] = {"cases": [], "checks": {}}
    run.results["sections"]["decode"] = res
    bw = copy_bandwidth(run)
    res["copy_bandwidth_tb_s"] = round(bw / 1e12, 3) if bw else None
    rate = matmul_rate(run)
    run.results["matmul_tflops"] = res["matmul_tflops"] = round(rate / 1e12, 1) if rate else None
    run.log("copy bandwidth (read + write) TB/s:", res["copy_bandwidth_tb_s"])
    dtype = getattr(torch, args.dtype)
    big, small = shapes(run)
    tok, _, _ = tokenizers()
    plain = GenerationSettings()
    hf_static = GenerationSettings(cache_implementation="static")
    eager = GenerationSettings(engine="static", cuda_graph=False)
    graph = GenerationSettings(engine="static")
    compiled = GenerationSettings(engine="static", compile=True)
    merged = GenerationSettings(engine="static", merge_adapter=True)
    merged_compiled = GenerationSettings(engine="static", merge_adapter=True, compile=True)
    tiny = args.tiny
    n_plain, n_eager, n_fast = (8, 8, 16) if tiny else (48, 24, 256)
    b1, b8 = args.decode_batch, args.decode_batch * 8

    # exactness on this device: greedy tokens of the static engine (eager and graphs), and of sampling from the
    # merged copy of the adapter, against generate() with the adapter
    from sppo_rl.llm.generation import generate_rollout
    from sppo_rl.llm.sequences import encode_prompts

    check_model = build(run, TINY_7B, tok, True, torch.float32, seed=3)
    check_policy = load_policy(check_model, tok, lora=LoraSettings(r=8, alpha=16))
    with torch.no_grad():  # an adapter that changes the outputs
        for name, p in check_policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    enc = encode_prompts(tok, [r["question"] for r in prompt_rows(8, 40, seed=5)], 64, "left", device=run.device)
    enc.attention_mask[::2, :5] = 0  # ragged left padding
    ref = generate_rollout(check_policy, enc, GenerationSettings(max_new_tokens=40), greedy=True)
    for name, s in [("eager", eager), ("cuda_graph", graph), ("merged_cuda_graph", merged)]:
        s = dataclasses.replace(s, max_new_tokens=40, kv_bucket=16)
        r = generate_rollout(check_policy, enc, s, True)
        res["checks"][f"greedy_equal_{name}"] = same_tokens(r, ref)
    run.log("greedy checks (tiny fp32 model):", res["checks"])
    del check_model, check_policy
    run.save()

    cases: list[tuple[str, Any, int, int, bool, bool]] = [
        ("7B generate()", plain, b1, n_plain, False, False),
        ("7B generate(), batch x8", plain, b8, n_plain, False, False),
        ("7B static engine, eager", eager, b1, n_eager, False, False),
        ("7B static engine, CUDA graphs", graph, b1, n_fast, False, False),
        ("7B static engine, CUDA graphs, batch x8", graph, b8, n_fast, False, False),
        ("7B+LoRA generate()", plain, b1, n_plain, True, False),
        ("7B+LoRA static engine, CUDA graphs", graph, b1, n_fast, True, False),
        ("7B+LoRA static engine, CUDA graphs, batch x8", graph, b8, n_fast, True, False),
        ("7B+LoRA merged, static engine, CUDA graphs", merged, b1, n_fast, True, False),
        ("7B+LoRA merged, static engine, CUDA graphs, batch x8", merged, b8, n_fast, True, False),
    ]
    slow_cases: list[tuple[str, Any, int, int, bool, bool]] = [
        ("7B+LoRA generate(cache_implementation='static')", hf_static, b1, n_fast // 2, True, False),
        ("7B+LoRA static engine, torch.compile + CUDA graphs", compiled, b1, n_fast, True, True),
        ("7B+LoRA merged, static engine, torch.compile + CUDA graphs", merged_compiled, b1, n_fast, True, True),
    ]
    if not run.cuda or args.skip_slow_decode:  # a compiled step only pays off with CUDA graphs
        slow_cases = slow_cases[:1] if not args.skip_slow_decode else []
    if args.cases:  # only the cases whose label contains one of these words
        wanted = [w.strip() for w in args.cases.split(",")]
        cases = [c for c in cases + slow_cases if all(w in c[0] for w in wanted)]
        slow_cases = []
    model = build(run, big, tok, True, dtype, seed=0)
    res["policy_params_b"] = round(n_params(model) / 1e9, 3)
    base = load_policy(model, tok, lora=None)
    lora_policy = None
    engines: dict[tuple[int, bool], Any] = {}
    for label, settings, batch, n, lora, single in cases + slow_cases:
        if run.over_budget(reserve=60):
            res["cases"].append({"case": label, "skipped": "time budget"})
            continue
        if lora and lora_policy is None:
            lora_policy = load_policy(model, tok, lora=LoraSettings(r=args.lora_r, alpha=2 * args.lora_r))
        policy = lora_policy if lora else base
        try:
            run.reset_peak()
            key = (id(settings), lora)
            if key not in engines:  # one engine per set-up (a merged copy is built once)
                engines[key] = make_generation_engine(policy, settings)
            res["cases"].append(decode_case(run, engines[key], batch, n, label, bw, single))
        except Exception as exc:  # keep measuring the other cases
            res["cases"].append({"case": label, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            run.log(label, "failed:", exc)
            run.free()
        run.save()
    del model, base, lora_policy, engines
    run.free()
    # the 1.5B shape: is generate() faster on a model 5x smaller?
    if not run.over_budget(reserve=40) and not args.cases:
        model = build(run, small, tok, True, dtype, seed=1)
        small_policy = load_policy(model, tok, lora=None)
        small_cases = [("1.5B generate()", plain, n_plain), ("1.5B static engine, CUDA graphs", graph, n_fast)]
        for label, settings, n in small_cases:
            try:
                engine = make_generation_engine(small_policy, settings)
                res["cases"].append(decode_case(run, engine, b1, n, label, bw))
            except Exception as exc:
                res["cases"].append({"case": label, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            run.save()
        del model, small_policy
        run.free()
    return res


def print_decode(res: dict[str, Any]) -> None:
    rows = []
    for c in res["cases"]:
        if "step_ms" not in c:
            rows.append([c["case"], None, None, None, None, None, None, c.get("error") or c.get("skipped")])
            continue
        rows.append(
            [
                c["case"],
                c["batch"],
                c["step_ms"],
                c["decode_tokens_per_s"],
                c["bound_ms"],
                c["fraction_of_bound"],
                c.get("flop_bound_ms"),
                f"weights {c['weights_gb']:.2f} GB + KV {c['kv_read_gb']:.2f} GB; peak {c['peak_gib'] or 0:.1f} GiB",
            ]
        )
    print(
        markdown_table(
            f"Decode (copy bandwidth {res.get('copy_bandwidth_tb_s')} TB/s; checks {res.get('checks')})",
            [
                "case",
                "batch",
                "ms/step",
                "tokens/s",
                "bandwidth bound ms",
                "fraction",
                "FLOP bound ms",
                "bytes per step",
            ],
            rows,
        )
    )


# ------------------------------------------------------------------------------------------------------------
# sections 1, 2, 4: training steps
# ------------------------------------------------------------------------------------------------------------


def make_trainer(run: Run, policy: Any, critic: Any, estimator: str, prompts: int, new_tokens: int, **kw: Any) -> Any:
    from sppo_rl.llm import SPPOTrainer
    from sppo_rl.llm.config import GenerationSettings

    args = run.args
    gen = GenerationSettings(
        temperature=0.6,
        max_new_tokens=new_tokens,
        suppress_eos=True,
        engine=args.engine,
        batch_size=args.generation_batch,
        adapter_in_model_dtype=args.adapter_in_model_dtype,
        merge_adapter=args.merge_adapter,
    )
    return SPPOTrainer(
        policy,
        prompt_rows(max(4 * prompts, 64), args.prompt_len),
        coin(),
        critic=critic,
        estimator=estimator,
        prompts_per_step=prompts,
        mini_batch_size=max(1, prompts // 2),
        micro_batch_size=kw.pop("micro_batch_size", args.micro_batch),
        critic_micro_batch_size=args.micro_batch,
        learning_rate=1e-6,
        critic_learning_rate=5e-6,
        max_prompt_length=args.prompt_len,
        prompt_truncation="left",
        chat_template=False,
        logprob_chunk_size=1024,
        verbose=0,
        generation=gen,
        **kw,
    )


def step_record(run: Run, trainer: Any, label: str) -> dict[str, Any]:
    run.sync()
    m = trainer.train_iteration()
    run.sync()
    phases = {
        "generation_peak_gib": m["memory/generation_peak_mb"] / 1024,
        "rollout_peak_gib": m["memory/rollout_peak_mb"] / 1024,
        "critic_update_peak_gib": m["memory/critic_update_peak_mb"] / 1024,
    }
    cfg = trainer.config
    n_seq = cfg.prompts_per_step * cfg.samples_per_prompt
    out = {
        "case": label,
        "estimator": cfg.estimator,
        "samples_per_prompt": cfg.samples_per_prompt,
        "prompts": cfg.prompts_per_step,
        "sequences": n_seq,
        "response_tokens": int(m["rollout/response_length_mean"]),
        "step_s": round(m["time/iteration_s"], 3),
        "generation_s": round(m["time/generation_s"], 3),
        "scoring_s": round(m["time/scoring_s"], 4),
        "logprob_and_values_s": round(m["time/logprob_s"], 3),
        "updates_s": round(m["time/training_s"], 3),
        "prompts_per_s": round(cfg.prompts_per_step / m["time/iteration_s"], 4),
        "response_tokens_per_s": round(m["time/tokens_per_second"], 1),
        "generation_tokens_per_s": round(m["time/generation_tokens_per_second"], 1),
        "peak_gib": round(run.peak_gb(), 2) if run.cuda else None,
        **{k: round(v, 2) for k, v in phases.items()},
    }
    if run.cuda:
        out["peak_pct_of_card"] = round(100 * out["peak_gib"] / run.total_gb(), 1)
    run.log(label, json.dumps(out))
    return out


def build_policy(run: Run, tok: Any, checkpointing: bool = True) -> Any:
    from sppo_rl.llm.config import LoraSettings
    from sppo_rl.llm.models import load_policy

    big, _ = shapes(run)
    model = build(run, big, tok, True, getattr(torch, run.args.dtype), seed=0)
    policy = load_policy(model, tok, lora=LoraSettings(r=run.args.lora_r, alpha=2 * run.args.lora_r))
    if checkpointing:
        set_checkpointing(policy.model, True)
    return policy


def build_critic(run: Run, kind: str, policy: Any, critic_tok: Any) -> Any:
    """``1.5b-full``, ``7b-lora``, ``7b-full`` or ``shared`` (as :func:`sppo_rl.llm.critic.load_critic` builds them)."""
    from peft import get_peft_model
    from sppo_rl.llm.config import LoraSettings
    from sppo_rl.llm.critic import LMCritic, make_shared_critic
    from sppo_rl.llm.models import enable_activation_checkpointing, make_lora_config, weight_and_compute_dtype

    args = run.args
    lora = LoraSettings(r=args.lora_r, alpha=2 * args.lora_r)
    if kind == "shared":
        return make_shared_critic(
            policy, lora=lora, max_prompt_length=args.prompt_len, prompt_truncation="left", chat_template=False
        )
    big, small = shapes(run)
    cfg = small if kind.startswith("1.5b") else big
    full = kind.endswith("full")
    weight_dtype, autocast = weight_and_compute_dtype(getattr(torch, args.dtype), full)
    backbone = build(run, cfg, critic_tok, False, weight_dtype, seed=1)
    if full:
        backbone.requires_grad_(True)
    else:
        backbone = get_peft_model(backbone, make_lora_config(lora, task_type=None))
    enable_activation_checkpointing(backbone)
    return LMCritic(
        backbone.eval(),
        critic_tok,
        "bernoulli",
        max_prompt_length=args.prompt_len,
        prompt_truncation="left",
        chat_template=False,
        autocast_dtype=autocast,
    )


def sub_batch(batch: Any, n: int) -> Any:
    idx = torch.arange(n, device=batch.outcomes.device)
    return dataclasses.replace(
        batch,
        rollout=batch.rollout.select(idx),
        rows=batch.rows[:n],
        group_ids=batch.group_ids[:n],
        outcomes=batch.outcomes[:n],
        success=batch.success[:n],
        old_logp=batch.old_logp[:n],
        ref_logp=None,
        advantages=batch.advantages[:n],
        critic_inputs=None,
        values=None,
        entropy=None,
    )


def section_throughput(run: Run) -> dict[str, Any]:
    args = run.args
    res: dict[str, Any] = {"steps": [], "checkpointing": []}
    run.results["sections"]["throughput"] = res
    tok, critic_tok, _ = tokenizers()
    policy = build_policy(run, tok, checkpointing=args.activation_checkpointing)
    res["activation_checkpointing"] = args.activation_checkpointing
    res["policy_params_b"] = round(n_params(policy.model) / 1e9, 3)
    res["lora_params_m"] = round(sum(p.numel() for p in policy.trainable_parameters()) / 1e6, 1)
    run.log("policy built", res["policy_params_b"], "B params")
    prompts, new = args.prompts, args.response_len
    bw, rate = copy_bandwidth(run), matmul_rate(run)
    res["copy_bandwidth_tb_s"] = round(bw / 1e12, 3) if bw else None
    run.results["matmul_tflops"] = res["matmul_tflops"] = round(rate / 1e12, 1) if rate else None
    run.log("copy TB/s", res["copy_bandwidth_tb_s"], "matmul TFLOP/s", res["matmul_tflops"])

    # warm-up (CUDA/cuBLAS, graph capture) on small shapes; falls back to float32 adapters if that fails
    try:
        warm = make_trainer(run, policy, None, "grpo", max(1, prompts // 8), 16, n_samples_per_prompt=8)
        warm.train_iteration()
    except Exception as exc:
        if not args.adapter_in_model_dtype:
            raise
        res["adapter_in_model_dtype_failed"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        run.log("adapter_in_model_dtype failed, using float32 adapters:", exc)
        args.adapter_in_model_dtype = False
        warm = make_trainer(run, policy, None, "grpo", max(1, prompts // 8), 16, n_samples_per_prompt=8)
        warm.train_iteration()
    res["adapter_in_model_dtype"] = args.adapter_in_model_dtype
    del warm
    run.free()

    # decode speed of the steps' generation set-up (adds to section 3's table)
    from sppo_rl.llm.config import GenerationSettings
    from sppo_rl.llm.generation import make_generation_engine

    res["decode"] = []
    if args.engine == "static":
        gen = GenerationSettings(
            engine="static", adapter_in_model_dtype=args.adapter_in_model_dtype, merge_adapter=args.merge_adapter
        )
        how = "merged adapter" if args.merge_adapter else ("adapter in bf16" if args.adapter_in_model_dtype else "")
        engine = make_generation_engine(policy, gen)
        single = run.cuda
        for batch, n in [
            (args.decode_batch, 256 if not args.tiny else 16),
            (8 * args.decode_batch, 128 if not args.tiny else 16),
        ]:
            label = f"7B+LoRA static engine, CUDA graphs, {how}, batch {batch}"
            try:
                res["decode"].append(decode_case(run, engine, batch, n, label, bw, single))
            except Exception as exc:
                res["decode"].append({"case": label, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            run.save()
        del engine
        run.free()

    # GRPO N = 8, no critic (its peak memory is the "GRPO without critic" row of the memory table)
    if args.grpo_steps > 0:
        grpo_prompts = args.grpo_prompts or prompts
        grpo = make_trainer(run, policy, None, "grpo", grpo_prompts, new, n_samples_per_prompt=8)
        for i in range(args.grpo_steps):
            res["steps"].append(step_record(run, grpo, f"GRPO N=8 (step {i + 1})"))
            run.save()
        del grpo
        run.free()
    if args.sppo_steps <= 0:
        return res

    # SPPO N = 1 with the paper's decoupled 1.5B critic, trained in full
    critic = build_critic(run, "1.5b-full", policy, critic_tok)
    res["critic_params_b"] = round(n_params(critic.backbone) / 1e9, 3)
    warm = make_trainer(run, policy, critic, "sppo", prompts, 16)
    warm.train_iteration()
    del warm
    run.free()
    sppo = make_trainer(run, policy, critic, "sppo", prompts, new)
    for i in range(args.sppo_steps):
        res["steps"].append(step_record(run, sppo, f"SPPO N=1 + 1.5B critic (step {i + 1})"))
        run.save()
    if any(s["estimator"] == "grpo" for s in res["steps"]):
        res.update(step_ratios(res["steps"]))
        run.log("SPPO/GRPO prompts per second:", res["speedup_prompts_per_s"])
    run.save()

    # section 4: activation checkpointing and micro-batches for the policy update (critic resident, as in a step)
    if args.ckpt_sequences > 0:
        batch = sub_batch(sppo.last_batch, min(args.ckpt_sequences, sppo.last_batch.size))
        res["checkpointing"] = checkpointing_runs(run, sppo, policy, batch)
        del batch
    del sppo, critic, policy
    run.free()
    return res


def step_ratios(steps: list[dict[str, Any]]) -> dict[str, float]:
    """SPPO against GRPO from their last steps: prompts per second, generation time and the rest, per prompt.

    Per prompt, so that a GRPO step measured at fewer prompts (``--grpo-prompts``: its sequences would not fit
    one decode batch at the full count anyway) compares with SPPO's full step.
    """
    g = [s for s in steps if s["estimator"] == "grpo"][-1]
    s = [s for s in steps if s["estimator"] == "sppo"][-1]
    train_g = (g["step_s"] - g["generation_s"]) / g["prompts"]
    train_s = (s["step_s"] - s["generation_s"]) / s["prompts"]
    return {
        "speedup_prompts_per_s": round(s["prompts_per_s"] / g["prompts_per_s"], 3),
        "generation_ratio": round((g["generation_s"] / g["prompts"]) / (s["generation_s"] / s["prompts"]), 3),
        "training_ratio": round(train_g / train_s, 3),
    }


def merge_throughput(paths: list[str], out: str | None) -> dict[str, Any]:
    """One throughput result from several runs (for example GRPO and SPPO measured by separate commands)."""
    merged: dict[str, Any] = {"benchmark": "llm_step", "merged_from": [], "sections": {"throughput": {"steps": []}}}
    for path in paths:
        with open(path) as f:
            part = json.load(f)
        thr = part.get("sections", {}).get("throughput", {})
        if "error" in thr:
            raise SystemExit(f"{path}: its throughput section failed ({thr['error']}); nothing to merge")
        merged["merged_from"].append({"file": os.path.basename(path), "command": part.get("command")})
        merged["sections"]["throughput"]["steps"] += thr.get("steps", [])
        merged.setdefault("environment", part.get("environment"))
    steps = merged["sections"]["throughput"]["steps"]
    if not {"grpo", "sppo"} <= {s["estimator"] for s in steps}:
        raise SystemExit(f"--merge needs a GRPO and an SPPO step among {paths}")
    merged["sections"]["throughput"].update(step_ratios(steps))
    if out:
        write_json(out, merged)
    print_throughput(merged["sections"]["throughput"])
    return merged


def checkpointing_runs(run: Run, trainer: Any, policy: Any, batch: Any) -> list[dict[str, Any]]:
    """Time and peak memory of ``trainer.train_policy(batch)`` with activation checkpointing on/off."""
    args = run.args
    rows: list[dict[str, Any]] = []
    settings = [(True, 4), (True, 8), (True, 16), (False, 2), (False, 4), (False, 8)]
    if args.tiny:
        settings = [(True, 2), (False, 2)]
    for on, micro in settings:
        if run.over_budget(reserve=30):
            rows.append({"checkpointing": on, "micro_batch": micro, "skipped": "time budget"})
            continue
        set_checkpointing(policy.model, on)
        trainer.config.micro_batch_size = micro
        run.free()
        run.reset_peak()
        row: dict[str, Any] = {"checkpointing": on, "micro_batch": micro, "sequences": batch.size}
        try:
            t, _ = run.timed(lambda: trainer.train_policy(batch))
            row.update(
                update_s=round(t, 3),
                s_per_sequence=round(t / batch.size, 4),
                peak_gib=round(run.peak_gb(), 2) if run.cuda else None,
            )
        except Exception as exc:
            if not is_oom(exc):
                raise
            row.update(update_s=None, peak_gib="OOM")
            trainer.policy_optimizer.zero_grad(set_to_none=True)
        run.free()
        rows.append(row)
        run.log("checkpointing", json.dumps(row))
        run.save()
    set_checkpointing(policy.model, args.activation_checkpointing)
    trainer.config.micro_batch_size = args.micro_batch
    return rows


def print_throughput(res: dict[str, Any]) -> None:
    if res.get("decode"):
        print_decode({"cases": res["decode"], "copy_bandwidth_tb_s": res.get("copy_bandwidth_tb_s"), "checks": None})
    rows = [
        [
            s["case"],
            s["prompts"],
            s["sequences"],
            s["step_s"],
            s["generation_s"],
            s["logprob_and_values_s"],
            s["updates_s"],
            s["prompts_per_s"],
            s.get("generation_peak_gib"),
            s["peak_gib"],
            s.get("peak_pct_of_card"),
        ]
        for s in res["steps"]
    ]
    print(
        markdown_table(
            f"Step throughput (SPPO / GRPO prompts per second = {res.get('speedup_prompts_per_s')}; generation "
            f"ratio {res.get('generation_ratio')}, training ratio {res.get('training_ratio')})",
            [
                "case",
                "prompts",
                "sequences",
                "step s",
                "generation s",
                "log-probs + values s",
                "updates s",
                "prompts/s",
                "peak after generation GiB",
                "peak GiB",
                "% of card",
            ],
            rows,
        )
    )
    rows = [
        [
            c["checkpointing"],
            c["micro_batch"],
            c.get("sequences"),
            c.get("update_s"),
            c.get("s_per_sequence"),
            c.get("peak_gib") or c.get("skipped"),
        ]
        for c in res.get("checkpointing", [])
    ]
    if rows:
        print(
            markdown_table(
                "Policy update of the 7B LoRA policy (1.5B critic resident)",
                ["checkpointing", "micro-batch", "sequences", "update s", "s per sequence", "peak GiB"],
                rows,
            )
        )


def section_memory(run: Run) -> dict[str, Any]:
    args = run.args
    res: dict[str, Any] = {"cases": []}
    run.results["sections"]["memory"] = res
    tok, critic_tok, _ = tokenizers()
    policy = build_policy(run, tok)
    kinds = args.memory_cases.split(",")
    for kind in kinds:
        if run.over_budget(reserve=45):
            res["cases"].append({"case": kind, "skipped": "time budget"})
            continue
        row: dict[str, Any] = {"case": kind}
        trainer = critic = None
        phase = "build"
        try:
            run.free()
            run.reset_peak()
            critic = build_critic(run, kind, policy, critic_tok)
            row["critic_params_b"] = round(n_params(critic.backbone) / 1e9, 3) if kind != "shared" else None
            row["critic_trainable_m"] = round(sum(p.numel() for _, p in critic.trainable_named_parameters()) / 1e6, 1)
            row["after_build_gib"] = round(torch.cuda.memory_allocated(run.device) / GB, 2) if run.cuda else None
            phase = "step"
            trainer = make_trainer(run, policy, critic, "sppo", args.prompts, args.response_len)
            row.update(step_record(run, trainer, kind))
        except Exception as exc:
            if not is_oom(exc):
                row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                run.log(kind, "failed:", exc)
            else:
                row["peak_gib"] = "OOM"
                row["oom_phase"] = phase
                row["oom_message"] = str(exc).split("\n")[0][:300]
                row["peak_before_oom_gib"] = round(run.peak_gb(), 2) if run.cuda else None
                run.log(kind, "OOM in", phase, row["oom_message"])
        finally:
            if kind == "shared" and hasattr(policy.model, "delete_adapter") and "critic" in policy.model.peft_config:
                policy.use_policy_adapter()
                policy.model.delete_adapter("critic")
            del trainer, critic
            run.free()
        res["cases"].append(row)
        run.save()
    del policy
    run.free()
    return res


def print_memory(res: dict[str, Any], total: float | None) -> None:
    rows = []
    for c in res["cases"]:
        peak = c.get("peak_gib")
        pct = round(100 * peak / total, 1) if isinstance(peak, float) and total else None
        rows.append(
            [
                c["case"],
                c.get("critic_trainable_m"),
                c.get("after_build_gib"),
                c.get("generation_peak_gib"),
                c.get("step_s"),
                peak if peak is not None else c.get("error") or c.get("skipped"),
                pct,
                c.get("peak_before_oom_gib"),
            ]
        )
    print(
        markdown_table(
            "Peak GPU memory of an SPPO step, 7B LoRA policy",
            [
                "critic",
                "critic trainable M",
                "allocated after build GiB",
                "peak after generation GiB",
                "step s",
                "peak GiB",
                "% of card",
                "peak before OOM GiB",
            ],
            rows,
        )
    )


# ------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--section", default="decode", help="comma-separated: decode, throughput, memory")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--tiny", action="store_true", help="tiny shapes and lengths (check the script on a CPU)")
    p.add_argument("--prompts", type=int, default=64, help="prompts per step")
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--response-len", type=int, default=1024)
    p.add_argument("--micro-batch", type=int, default=8, help="sequences per forward/backward pass")
    p.add_argument("--lora-r", type=int, default=64)
    p.add_argument("--engine", default="static", choices=["static", "generate"], help="generation engine of the steps")
    p.add_argument("--generation-batch", type=int, default=None, help="sequences per generation call (default all)")
    p.add_argument(
        "--fp32-adapter-sampling",
        dest="adapter_in_model_dtype",
        action="store_false",
        help="sample with peft's float32 adapters (default: generation.adapter_in_model_dtype=true)",
    )
    p.add_argument(
        "--no-merge-adapter",
        dest="merge_adapter",
        action="store_false",
        help="sample through the LoRA adapter (default: generation.merge_adapter=true, a merged copy for sampling)",
    )
    p.add_argument("--skip-slow-decode", action="store_true", help="skip the generate(static) and compile cases")
    p.add_argument(
        "--cases", default=None, help="decode: only the cases whose label has all these comma-separated words"
    )
    p.add_argument("--grpo-steps", type=int, default=1, help="GRPO steps of the throughput section (0: none)")
    p.add_argument("--sppo-steps", type=int, default=2, help="SPPO steps of the throughput section (0: none)")
    p.add_argument(
        "--grpo-prompts",
        type=int,
        default=None,
        help="prompts of a GRPO step (default --prompts); the ratios are per prompt",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="combine the throughput steps of these result files (GRPO and SPPO run apart) into --out, and stop",
    )
    p.add_argument(
        "--ckpt-sequences", type=int, default=32, help="sequences of the checkpointing measurements (0: skip them)"
    )
    p.add_argument(
        "--no-activation-checkpointing",
        dest="activation_checkpointing",
        action="store_false",
        help="throughput: the policy's steps without activation checkpointing (default on; the critic keeps it)",
    )
    p.add_argument("--memory-cases", default="7b-lora,7b-full,shared")
    p.add_argument("--decode-batch", type=int, default=64)
    p.add_argument("--budget-s", type=float, default=None, help="skip remaining cases after this many seconds")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.merge:
        return merge_throughput(args.merge, args.out)
    if args.tiny:
        args.prompts, args.prompt_len, args.response_len = min(args.prompts, 4), min(args.prompt_len, 16), 12
        args.micro_batch, args.decode_batch, args.ckpt_sequences = 2, min(args.decode_batch, 4), 4
        if args.device == "cuda" and not torch.cuda.is_available():
            args.device = "cpu"
        if args.device == "cpu":
            args.dtype = "float32"
    import_sppo_llm()
    run = Run(args)
    run.results["environment"] = environment(run)
    run.log("environment", json.dumps(run.results["environment"]))
    sections = [s.strip() for s in args.section.split(",") if s.strip()]
    for name in sections:
        fn = {"decode": section_decode, "throughput": section_throughput, "memory": section_memory}[name]
        try:
            fn(run)
        except Exception as exc:
            run.results["sections"].setdefault(name, {})["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
            run.log(name, "failed:", repr(exc))
            import traceback

            traceback.print_exc()
        run.save()
    run.results["elapsed_s"] = round(run.elapsed(), 1)
    run.save()
    print(f"\n## llm_step: {json.dumps(run.results['environment'])}; {run.results['elapsed_s']} s")
    secs = run.results["sections"]
    if "decode" in secs and "cases" in secs["decode"]:
        print_decode(secs["decode"])
    if "throughput" in secs and "steps" in secs["throughput"]:
        print_throughput(secs["throughput"])
    if "memory" in secs and "cases" in secs["memory"]:
        print_memory(secs["memory"], run.total_gb())
    for name, sec in secs.items():
        if "error" in sec:
            print(f"section {name} error: {sec['error']}")
    return run.results


if __name__ == "__main__":
    main()
