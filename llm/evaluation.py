"""Held-out evaluation: accuracy avg@k (the paper reports Average@16) and pass@k, or greedy accuracy.

``avg@k`` is the success rate averaged over ``k`` samples of every prompt, then over prompts; ``pass@k`` is
the fraction of prompts with at least one success among the ``k`` samples. With ``greedy=True`` one argmax
response per prompt is scored (``k`` is 1). ``group_by`` breaks the accuracy down by a dataset column.
Sampling runs under a forked, seeded random state, so evaluating never changes the training run's random
numbers (a run with evaluations gives the same training numbers as one without) and the same seed gives the
same evaluation.
"""

from __future__ import annotations

from typing import Any

import torch

from .config import GenerationSettings
from .data import PromptDataset, has_chat_template, render_messages
from .generation import GenerationEngine, make_generation_engine
from .models import PolicyModel
from .rewards import RewardRunner
from .sequences import encode_prompts

__all__ = ["evaluate_policy"]


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
    group_by: str | None = None,
    n_samples: int = 4,
) -> dict[str, Any]:
    """Sample ``k`` responses per prompt and score them.

    :param policy: the policy (its adapter active)
    :param dataset: held-out prompts
    :param rewards: the verifier runner
    :param k: samples per prompt
    :param generation: sampling settings (default :class:`~sppo_rl.llm.config.GenerationSettings`)
    :param max_prompt_length: prompt limit in policy tokens
    :param prompt_truncation: ``"error"`` or ``"left"``
    :param chat_template: how prompts are rendered
    :param max_prompts: evaluate the first prompts only
    :param batch_size: prompts per batch (each repeated ``k`` times; ``generation.batch_size`` sequences are
        generated per ``generate`` call)
    :param seed: sampling seed
    :param engine: the generation engine to sample with (a trainer's; default: a new one of
        ``generation.engine``), called with ``generation`` as the settings
    :param greedy: one argmax response per prompt (``k`` must be 1)
    :param group_by: a dataset column; the result gains ``per_group`` (accuracy per value of the column)
    :param n_samples: how many (prompt, response, reward) examples to return under ``samples``
    :return: ``{"avg@k": float, "pass@k": float, "accuracy": float (= avg@k), "reward_mean": float,
        "truncation_rate": float, "response_length_mean": float, "response_tokens": int, "n_prompts": int,
        "k": int, "verifier_failures": int, "per_prompt": list[float],
        "samples": list[dict], "per_group": dict (with group_by)}``
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if greedy and k != 1:
        raise ValueError(f"greedy evaluation samples one response per prompt: k must be 1, got {k}")
    gen = generation or GenerationSettings()
    n = len(dataset) if max_prompts is None else min(max_prompts, len(dataset))
    use_chat = chat_template is True or (chat_template == "auto" and has_chat_template(policy.tokenizer))
    engine = engine if engine is not None else make_generation_engine(policy, gen)
    device = policy.device
    per_prompt: list[float] = []
    rewards_all: list[float] = []
    truncated = 0.0
    lengths = 0.0
    failures = 0
    any_success: list[bool] = []
    samples: list[dict[str, Any]] = []
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, n, batch_size):
            idx = list(range(start, min(start + batch_size, n)))
            texts = [render_messages(dataset.messages(i), policy.tokenizer, chat_template) for i in idx]
            enc = encode_prompts(
                policy.tokenizer,
                texts,
                max_prompt_length,
                prompt_truncation,
                add_special_tokens=not use_chat,
                device=device,
            )
            rollout = engine.generate(enc.repeat_interleave(k), greedy=greedy, settings=gen)
            rows = [dataset[i] for i in idx for _ in range(k)]
            scored = rewards.score([t for t in texts for _ in range(k)], rollout.texts, rows)
            success = torch.tensor(scored.success, dtype=torch.float32).view(len(idx), k)
            per_prompt.extend(success.mean(1).tolist())
            any_success.extend((success.sum(1) > 0).tolist())
            rewards_all.extend(scored.rewards)
            truncated += float(rollout.truncated.float().sum())
            lengths += float(rollout.response_lengths.float().sum())
            failures += scored.stats.failures
            for j in range(min(n_samples - len(samples), len(idx))):
                samples.append({"prompt": texts[j], "response": rollout.texts[j * k], "reward": scored.rewards[j * k]})
    total = max(len(rewards_all), 1)
    avg = sum(per_prompt) / max(len(per_prompt), 1)
    result: dict[str, Any] = {
        "avg@k": avg,
        "accuracy": avg,
        "pass@k": sum(any_success) / max(len(any_success), 1),
        "reward_mean": sum(rewards_all) / total,
        "truncation_rate": truncated / total,
        "response_length_mean": lengths / total,
        "response_tokens": int(lengths),
        "verifier_failures": failures,
        "n_prompts": n,
        "k": k,
        "per_prompt": per_prompt,
        "samples": samples,
    }
    if group_by is not None:
        groups: dict[str, list[float]] = {}
        for i, p in enumerate(per_prompt):
            groups.setdefault(str(dataset[i].get(group_by)), []).append(p)
        result["per_group"] = {g: sum(v) / len(v) for g, v in groups.items()}
    return result
