"""Building a run's parts from what the user gives: datasets, rewards, and the policy and critic models.

:class:`~sppo_rl.llm.trainer.SPPOTrainer` accepts objects, specs (:mod:`sppo_rl.llm.config`) or paths for each
part; this module turns any of them into the objects the trainer works with. It imports nothing of the trainer or
its checkpoints, so that the trainer, its checkpoints and the command line import in one direction only.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from torch import nn

from .config import CriticSpec, ModelSpec, TrainerConfig
from .critic import LMCritic, load_critic
from .data import PromptDataset, load_prompt_dataset, load_rows
from .models import PolicyModel, load_policy
from .rewards import RewardRunner, make_reward
from .run_config import DataSpec, RewardSpec

__all__ = [
    "DatasetTexts",
    "build_dataset",
    "build_models",
    "build_rewards",
    "import_user_modules",
    "resolve_rewards",
    "resolve_train_data",
    "reward_options",
    "saved_tokenizer",
]


def import_user_modules(modules: Sequence[str]) -> None:
    """Import the modules a run config names (``imports``), with the working folder on the import path.

    :param modules: module names, e.g. ``["my_estimators"]``
    :raises ImportError: naming the module and the working folder
    """
    cwd = os.getcwd()
    if modules and cwd not in sys.path:
        sys.path.insert(0, cwd)
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"imports: cannot import {name!r} (working folder {cwd}): {exc}") from exc


def build_dataset(spec: DataSpec, name: str = "prompts") -> PromptDataset:
    """Load the rows of ``spec`` and wrap them in a :class:`~sppo_rl.llm.data.PromptDataset`.

    :param spec: the data section of a run config
    :param name: a label
    :raises ValueError: no source
    """
    if spec.source is None:
        raise ValueError(f"The {name} data section needs a source (a file, 'reasoning_gym:<task>' or 'toy:<task>')")
    options: dict[str, Any] = {k: v for k, v in {"size": spec.size, "seed": spec.seed}.items() if v is not None}
    rows = load_rows(spec.source, **options)
    if spec.max_rows is not None:
        rows = rows[: spec.max_rows]
    return PromptDataset(rows, spec.template, spec.prompt_column, spec.answer_column, spec.system, name)


def build_rewards(spec: RewardSpec, answer_column: str | None = None) -> RewardRunner:
    """The reward functions of ``spec`` in a :class:`~sppo_rl.llm.rewards.RewardRunner`.

    :param spec: the reward section of a run config
    :param answer_column: the dataset's answer column (given to the built-in verifiers that take one)
    :raises ValueError: no reward, or ``options`` that do not match the rewards
    """
    names = [spec.name] if isinstance(spec.name, str) else list(spec.name)
    if not names:
        raise ValueError("reward.name: give at least one reward (a built-in name or 'module:function')")
    options = reward_options(spec)
    for name, opts in zip(names, options, strict=True):
        if answer_column is not None and name in ("boxed_math", "math", "exact_match"):
            opts.setdefault("answer_column", answer_column)
    return RewardRunner(
        [make_reward(name, **opts) for name, opts in zip(names, options, strict=True)],
        spec.weights,
        outcome=spec.outcome,
        timeout_s=spec.timeout_s,
        workers=spec.workers,
        max_failure_rate=spec.max_failure_rate,
    )


def reward_options(spec: RewardSpec) -> list[dict[str, Any]]:
    """The options of each reward of ``spec``: ``options`` itself for one reward (or ``{name: options}``), a
    mapping name -> options for several.

    :raises ValueError: with several rewards, an ``options`` key that names none of them
    """
    names = [spec.name] if isinstance(spec.name, str) else list(spec.name)
    options = dict(spec.options or {})
    if len(names) == 1:
        nested = set(options) == {names[0]} and isinstance(options[names[0]], dict)
        return [dict(options[names[0]]) if nested else options]
    unknown = sorted(set(options) - set(names))
    if unknown or not all(isinstance(v, dict) for v in options.values()):
        raise ValueError(
            f"reward.options: with several rewards, options maps a reward's name to its options, e.g. "
            f"{{{names[0]}: {{...}}}}; got keys {sorted(options)} for rewards {names}"
        )
    return [dict(options.get(name, {})) for name in names]


def saved_tokenizer(checkpoint: str | None, folder: str, spec: Any) -> Any:
    """A checkpoint's saved tokenizer when ``spec`` trains one in-process (so that a resume sees the same ids).

    :param checkpoint: a checkpoint folder, or ``None``
    :param folder: ``"tokenizer"`` or ``"critic_tokenizer"``
    :param spec: the model spec's ``tokenizer`` entry
    :return: the tokenizer, or ``None`` (build it from the spec)
    """
    if checkpoint is None or not isinstance(spec, dict):
        return None
    path = os.path.join(checkpoint, folder)
    if not os.path.isdir(path):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def resolve_train_data(train_data: Any) -> tuple[Any, PromptDataset]:
    """``(env or None, dataset)`` of the trainer's ``train_data``: a :class:`~sppo_rl.llm.env.PromptEnv` (its
    dataset), a :class:`~sppo_rl.llm.data.PromptDataset`, or any source of :func:`~sppo_rl.llm.data.load_rows`."""
    if hasattr(train_data, "rewards") and hasattr(train_data, "dataset"):
        return train_data, train_data.dataset
    return None, load_prompt_dataset(train_data)


def resolve_rewards(
    reward: Any,
    env: Any,
    timeout_s: float | None,
    *,
    weights: Sequence[float] | None = None,
    outcome: str | float | None = None,
) -> RewardRunner:
    """The reward runner of the trainer's ``reward`` argument (default: the environment's).

    :param reward: a verifier, a TRL-style reward function, a list of them, a runner, or ``None``
    :param env: the :class:`~sppo_rl.llm.env.PromptEnv` given as training data, or ``None``
    :param timeout_s: seconds per call when ``reward`` is not a runner
    :param weights: one weight per function when ``reward`` is not a runner (TRL's ``reward_weights``)
    :param outcome: what the critic learns when ``reward`` is not a runner (see
        :class:`~sppo_rl.llm.rewards.RewardRunner`)
    :raises ValueError: no reward at all
    """
    if (reward is None or isinstance(reward, RewardRunner)) and (weights is not None or outcome is not None):
        where = "the RewardRunner given as reward" if reward is not None else "the PromptEnv's rewards"
        raise ValueError(f"reward_weights and reward_outcome apply to reward functions; set them on {where} instead")
    if reward is None:
        if env is None:
            raise ValueError("No reward: pass reward=... (a verifier or a reward function) or a PromptEnv")
        runner: RewardRunner = env.rewards
        return runner
    if isinstance(reward, RewardRunner):
        return reward
    return RewardRunner(reward, weights, outcome=outcome, timeout_s=timeout_s)


class DatasetTexts:
    """The prompts' message contents and answers of a dataset, read lazily (an in-process tokenizer trains on
    them; other tokenizers never read them)."""

    def __init__(self, dataset: PromptDataset) -> None:
        self.dataset = dataset

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self.dataset)):
            for m in self.dataset.messages(i):
                yield m["content"]
            answer = self.dataset[i].get(self.dataset.answer_column)
            if answer is not None:
                yield str(answer)


def build_models(
    policy: PolicyModel | ModelSpec | str | nn.Module,
    critic: LMCritic | CriticSpec | str | nn.Module | None,
    config: TrainerConfig,
    dataset: PromptDataset,
    tokenizer: Any = None,
    critic_tokenizer: Any = None,
) -> tuple[PolicyModel, LMCritic | None]:
    """The policy (LoRA attached unless it has one) and the critic, from objects, specs or paths.

    The caller seeds the global random state first: a LoRA adapter's initial weights come from it.

    :param policy: a policy object, a :class:`~sppo_rl.llm.config.ModelSpec`, a folder, or an in-memory model
    :param critic: a critic object, a :class:`~sppo_rl.llm.config.CriticSpec`, ``"shared"``, a folder, an
        in-memory model, or ``None``
    :param config: the trainer's configuration (prompt limits and rendering)
    :param dataset: the training prompts (texts for in-process tokenizers)
    :param tokenizer: the tokenizer of an in-memory policy (or a checkpoint's saved one)
    :param critic_tokenizer: the tokenizer of an in-memory critic (or a checkpoint's saved one)
    """
    texts = DatasetTexts(dataset)
    policy_model = policy if isinstance(policy, PolicyModel) else load_policy(policy, tokenizer, texts=texts)
    critic_model = load_critic(
        critic,
        policy_model,
        config.max_prompt_length,
        config.prompt_truncation,
        critic_tokenizer,
        texts,
        config.chat_template,
        auto_value_head=config.critic_value_head("auto"),
    )
    if critic_model is not None and config.value_clip_range is not None and critic_model.head.name != "raw":
        raise ValueError(
            f"value_clip needs a critic with the 'raw' value head (an unbounded value, as standard PPO's); this "
            f"critic's head is {critic_model.head.name!r}"
        )
    return policy_model, critic_model
