"""Build datasets, rewards and a trainer from a :class:`~sppo_rl.llm.config.RunConfig` (what the CLI does)."""

from __future__ import annotations

import os
from typing import Any

from .config import DataSpec, RewardSpec, RunConfig
from .data import PromptDataset, load_rows
from .rewards import RewardRunner, make_reward
from .trainer import SPPOTrainer

__all__ = ["build_dataset", "build_rewards", "build_trainer"]


def build_dataset(spec: DataSpec, name: str = "prompts") -> PromptDataset:
    """Load the rows of ``spec`` and wrap them in a :class:`~sppo_rl.llm.data.PromptDataset`.

    :param spec: the data section of a run config
    :param name: a label
    :raises ValueError: no source
    """
    if spec.source is None:
        raise ValueError(f"The {name} data section needs a source (a file, 'reasoning_gym:<task>' or 'toy:<task>')")
    options = {k: v for k, v in {"size": spec.size, "seed": spec.seed}.items() if v is not None}
    rows = load_rows(spec.source, **options)
    if spec.max_rows is not None:
        rows = rows[: spec.max_rows]
    return PromptDataset(rows, spec.template, spec.prompt_column, spec.answer_column, spec.system, name)


def build_rewards(spec: RewardSpec, answer_column: str | None = None) -> RewardRunner:
    """The verifier of ``spec`` in a :class:`~sppo_rl.llm.rewards.RewardRunner`.

    :param spec: the reward section of a run config
    :param answer_column: the dataset's answer column (given to the built-in verifiers that take one)
    """
    options = dict(spec.options)
    if answer_column is not None and spec.name in ("boxed_math", "math", "exact_match"):
        options.setdefault("answer_column", answer_column)
    return RewardRunner(make_reward(spec.name, **options), timeout_s=spec.timeout_s)


def _saved_tokenizer(checkpoint: str | None, folder: str, spec: Any) -> Any:
    """Reuse a checkpoint's tokenizer when the spec trains one in-process (so a resume sees the same ids)."""
    if checkpoint is None or not isinstance(spec, dict):
        return None
    path = os.path.join(checkpoint, folder)
    if not os.path.isdir(path):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def build_trainer(
    config: RunConfig, checkpoint: str | None = None, verbose: int = 1, logger: Any = None
) -> SPPOTrainer:
    """Build every component of a run and the trainer (the state of ``checkpoint`` is *not* loaded here; call
    :meth:`~sppo_rl.llm.trainer.SPPOTrainer.load_checkpoint`).

    :param config: the run configuration
    :param checkpoint: a checkpoint folder whose saved in-process tokenizers should be reused
    :param verbose: 0 silences stdout logging
    :param logger: an SB3 logger (default: SB3 ``configure(output_dir, train.logger)``)
    :return: the trainer
    """
    dataset = build_dataset(config.data, "train")
    eval_dataset = build_dataset(config.eval_data, "eval") if config.eval_data is not None else None
    rewards = build_rewards(config.reward, config.data.answer_column)
    tokenizer = _saved_tokenizer(checkpoint, "tokenizer", config.policy.tokenizer)
    critic_tokenizer = None
    if config.critic.mode == "separate":
        critic_tokenizer = _saved_tokenizer(checkpoint, "critic_tokenizer", config.critic.model.tokenizer)
    if logger is None:
        from .monitor import make_logger

        logger = make_logger(config.output_dir, list(config.train.logger), verbose)
    return SPPOTrainer(
        policy=config.policy,
        train_data=dataset,
        reward=rewards,
        critic=config.critic,
        config=config.trainer,
        eval_data=eval_dataset,
        tokenizer=tokenizer,
        critic_tokenizer=critic_tokenizer,
        logger=logger,
        verbose=verbose,
        run_config=config,
    )
