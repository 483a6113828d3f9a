"""Held-out evaluation: avg@k (the paper reports Average@16), unbiased pass@k and maj@k, or greedy accuracy.

Each prompt is sampled ``n >= k`` times (``n = k`` by default) and every sample is scored by the reward runner's
verifier. Per prompt, :func:`~sppo_rl.llm.eval_metrics.prompt_metrics` gives avg@k (mean success over the
samples), pass@k (the unbiased estimator of Chen et al., 2021) and maj@k (majority vote over the parsed answers of
the first ``k`` samples, equivalent answers grouped by math-verify for the boxed-math verifier); the result
averages them over prompts. With ``greedy=True`` one argmax response per prompt is scored (``k = n = 1``).
``group_by`` breaks every metric down by one or more dataset columns. Sampling runs under a forked, seeded random
state, so evaluating never changes the training run's random numbers (a run with evaluations gives the same
training numbers as one without) and the same seed gives the same evaluation. The result holds no timings: the
same inputs give the same dictionary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .config import GenerationSettings
from .data import PromptDataset, has_chat_template, render_messages
from .distributed import Distributed
from .eval_metrics import AnswersEqual, math_answers_equal, prompt_metrics, strings_equal
from .generation import GenerationEngine, make_generation_engine
from .models import PolicyModel
from .rewards import BoxedMathVerifier, RewardRunner, completion_id_lists
from .sequences import encode_prompts

__all__ = ["default_answers_equal", "evaluate_policy", "spelled_metrics"]

METRICS = ("avg", "pass", "maj")


def default_answers_equal(rewards: RewardRunner) -> AnswersEqual:
    """How the majority vote groups answers: math-verify equality for a boxed-math verifier, else equal strings.

    :param rewards: the reward runner (its answer verifier decides)
    """
    first = rewards.answer_verifier
    if isinstance(first, BoxedMathVerifier):
        return math_answers_equal(first.timeout_s)
    return strings_equal


def spelled_metrics(values: dict[str, float], k: int) -> dict[str, float]:
    """``{"avg": a, "pass": p, "maj": m}`` as ``{"avg@<k>": a, "pass@<k>": p, "maj@<k>": m}``.

    :param values: the three metrics
    :param k: their k
    """
    return {f"{name}@{k}": values[name] for name in METRICS}


def _columns(group_by: str | Sequence[str] | None) -> list[str]:
    if group_by is None:
        return []
    return [group_by] if isinstance(group_by, str) else list(group_by)


def _breakdown(
    dataset: PromptDataset, columns: list[str], per_prompt: list[dict[str, float]], k: int
) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for column in columns:
        groups: dict[str, list[dict[str, float]]] = {}
        for i, metrics in enumerate(per_prompt):
            groups.setdefault(str(dataset[i].get(column)), []).append(metrics)
        out[column] = {}
        for value in sorted(groups):
            members = groups[value]
            means = {m: sum(p[m] for p in members) / len(members) for m in METRICS}
            out[column][value] = {"n_prompts": len(members), **spelled_metrics(means, k)}
    return out


@torch.no_grad()
def evaluate_policy(
    policy: PolicyModel,
    dataset: PromptDataset,
    rewards: RewardRunner,
    k: int = 4,
    generation: GenerationSettings | None = None,
    max_prompt_length: int = 1024,
    prompt_truncation: str = "error",
    chat_template: bool | str = "auto",
    max_prompts: int | None = None,
    batch_size: int = 64,
    seed: int = 1234,
    engine: GenerationEngine | None = None,
    greedy: bool = False,
    group_by: str | Sequence[str] | None = None,
    n_samples: int = 4,
    n: int | None = None,
    answers_equal: AnswersEqual | None = None,
    dist: Distributed | None = None,
) -> dict[str, Any]:
    """Sample ``n`` (default ``k``) responses per prompt, score them, and report avg@k, pass@k and maj@k.

    :param policy: the policy (its adapter active)
    :param dataset: held-out prompts
    :param rewards: the verifier runner
    :param k: the k of avg@k, pass@k and maj@k
    :param generation: sampling settings (default :class:`~sppo_rl.llm.config.GenerationSettings`)
    :param max_prompt_length: prompt limit in policy tokens
    :param prompt_truncation: ``"error"`` or ``"left"``
    :param chat_template: how prompts are rendered
    :param max_prompts: evaluate the first prompts only
    :param batch_size: prompts per batch (each repeated ``n`` times; ``generation.batch_size`` sequences are
        generated per ``generate`` call)
    :param seed: sampling seed
    :param engine: the generation engine to sample with (a trainer's; default: a new one of
        ``generation.engine``), called with ``generation`` as the settings
    :param greedy: one argmax response per prompt (``k`` and ``n`` must be 1)
    :param group_by: a dataset column, or several; the result gains ``breakdown`` (every metric per value of each
        column) and, for one column, ``per_group`` (avg@k per value)
    :param n_samples: how many (prompt, response, reward, parsed answer) examples to return under ``samples``
    :param n: samples per prompt (``>= k``; default ``k``): pass@k is estimated without bias from all ``n``, avg@k
        averages all ``n``, maj@k votes over the first ``k``
    :param answers_equal: answer equality of the majority vote (default :func:`default_answers_equal`)
    :param dist: several ranks: each evaluates a contiguous block of the prompts and the results are gathered
        (every rank returns the whole result); each batch is sampled under a seed of ``seed`` and its first global
        row, so the draws do not depend on which rank sampled them
    :return: ``{"avg@k", "pass@k", "maj@k", "avg@<k>", "pass@<k>", "maj@<k>" (k spelled, e.g. "avg@16"),
        "accuracy" (= avg@k), "reward_mean", "truncation_rate", "response_length_mean", "response_tokens",
        "n_prompts", "k", "n", "verifier_failures", "per_prompt" (avg@k of each prompt), "samples",
        "breakdown" and "per_group" (with group_by)}``
    :raises ValueError: ``k < 1``, ``n < k``, greedy with ``k`` or ``n`` above 1
    :raises KeyError: a ``group_by`` column that no row has
    """
    n = k if n is None else n
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n < k:
        raise ValueError(f"n (samples per prompt) must be >= k, got n={n}, k={k}")
    if greedy and n != 1:
        raise ValueError(f"greedy evaluation samples one response per prompt: k and n must be 1, got k={k}, n={n}")
    columns = _columns(group_by)
    for column in columns:
        if not any(column in row for row in dataset.rows):
            raise KeyError(f"group_by: no row has a column {column!r} (columns: {sorted(dataset.rows[0])})")
    equal = answers_equal if answers_equal is not None else default_answers_equal(rewards)
    gen = generation or GenerationSettings()
    n_prompts = len(dataset) if max_prompts is None else min(max_prompts, len(dataset))
    use_chat = chat_template is True or (chat_template == "auto" and has_chat_template(policy.tokenizer))
    engine = engine if engine is not None else make_generation_engine(policy, gen)
    device = policy.device
    per_prompt: list[dict[str, float]] = []
    rewards_all: list[float] = []
    truncated = 0.0
    lengths = 0.0
    failures = 0
    samples: list[dict[str, Any]] = []
    dist = dist or Distributed()
    share = -(-n_prompts // dist.world_size)
    first, last = min(dist.rank * share, n_prompts), min((dist.rank + 1) * share, n_prompts)
    for start in range(first, last, batch_size):
        idx = list(range(start, min(start + batch_size, last)))
        texts = [render_messages(dataset.messages(i), policy.tokenizer, chat_template) for i in idx]
        enc = encode_prompts(
            policy.tokenizer,
            texts,
            max_prompt_length,
            prompt_truncation,
            add_special_tokens=not use_chat,
            device=device,
        )
        rollout = engine.generate(enc.repeat_interleave(n), greedy=greedy, settings=gen, seed=seed, first_row=start * n)
        rows = [dataset[i] for i in idx for _ in range(n)]
        prompts = [dataset.reward_prompt(i, t) for i, t in zip(idx, texts, strict=True)]
        ids = completion_id_lists(rollout.response_ids, rollout.response_mask)
        scored = rewards.score([p for p in prompts for _ in range(n)], rollout.texts, rows, ids)
        for j in range(len(idx)):
            block = slice(j * n, (j + 1) * n)
            per_prompt.append(prompt_metrics(scored.success[block], scored.parsed[block], k, equal))
        rewards_all.extend(scored.rewards)
        truncated += float(rollout.truncated.float().sum())
        lengths += float(rollout.response_lengths.float().sum())
        failures += scored.stats.failures
        for j in range(min(n_samples - len(samples), len(idx))):
            samples.append(
                {
                    "prompt": texts[j],
                    "response": rollout.texts[j * n],
                    "reward": scored.rewards[j * n],
                    "parsed": scored.parsed[j * n],
                }
            )
    if dist.active:
        per_prompt = dist.gather_objects(per_prompt)
        rewards_all = dist.gather_objects(rewards_all)
        samples = dist.gather_objects(samples)[:n_samples]
        parts = dist.gather_objects([(truncated, lengths, failures)])
        truncated, lengths = sum(p[0] for p in parts), sum(p[1] for p in parts)
        failures = int(sum(p[2] for p in parts))
    total = max(len(rewards_all), 1)
    count = max(len(per_prompt), 1)
    means = {m: sum(p[m] for p in per_prompt) / count for m in METRICS}
    result: dict[str, Any] = {
        "avg@k": means["avg"],
        "accuracy": means["avg"],
        "pass@k": means["pass"],
        "maj@k": means["maj"],
        **spelled_metrics(means, k),
        "reward_mean": sum(rewards_all) / total,
        "truncation_rate": truncated / total,
        "response_length_mean": lengths / total,
        "response_tokens": int(lengths),
        "verifier_failures": failures,
        "n_prompts": n_prompts,
        "k": k,
        "n": n,
        "per_prompt": [p["avg"] for p in per_prompt],
        "samples": samples,
    }
    if columns:
        result["breakdown"] = _breakdown(dataset, columns, per_prompt, k)
        if len(columns) == 1:
            result["per_group"] = {v: g[f"avg@{k}"] for v, g in result["breakdown"][columns[0]].items()}
    return result
