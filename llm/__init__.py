"""Sequence-Level PPO for language models (prompt -> response as a one-step environment), as ``sppo_rl.llm``.

>>> from sppo_rl.llm import SPPOTrainer, PromptDataset, ExactMatchVerifier  # doctest: +SKIP
>>> trainer = SPPOTrainer("path/to/policy", PromptDataset(rows), ExactMatchVerifier(), critic="path/to/critic")
>>> trainer.learn(n_iterations=100, progress_bar=True)  # doctest: +SKIP

Importing this package needs torch only; ``transformers``/``peft`` are imported when models are built, and
gymnasium only for :class:`PromptEnv` (loaded on first access). See ``docs/llm.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import CriticSpec, DistributedSettings, GenerationSettings, LoraSettings, ModelSpec, TrainerConfig
from .data import (
    DatasetFileError,
    DatasetRowError,
    EmptyDatasetError,
    PromptDataset,
    PromptSampler,
    PromptTemplate,
    load_prompt_dataset,
    load_rows,
)
from .rewards import (
    BoxedMathVerifier,
    ExactMatchVerifier,
    FunctionReward,
    ReasoningGymVerifier,
    RewardFailureWarning,
    RewardFunctionError,
    RewardRunner,
    Verifier,
    VerifierResult,
    make_reward,
)
from .run_config import DataSpec, EvalSettings, RewardSpec, RunConfig, TrainSettings
from .sequences import PromptTooLongError

if TYPE_CHECKING:
    from .benchmark_eval import evaluate_math_benchmarks
    from .critic import LMCritic, load_critic, make_shared_critic
    from .env import PromptEnv
    from .evaluation import evaluate_policy
    from .models import PolicyModel, load_policy
    from .trainer import SPPOTrainer, build_trainer

_LAZY = {
    "PromptEnv": ".env",
    "SPPOTrainer": ".trainer",
    "PolicyModel": ".models",
    "load_policy": ".models",
    "LMCritic": ".critic",
    "load_critic": ".critic",
    "make_shared_critic": ".critic",
    "evaluate_policy": ".evaluation",
    "evaluate_math_benchmarks": ".benchmark_eval",
    "build_trainer": ".trainer",
}

__all__ = [
    "BoxedMathVerifier",
    "CriticSpec",
    "DataSpec",
    "DatasetFileError",
    "DatasetRowError",
    "DistributedSettings",
    "EmptyDatasetError",
    "EvalSettings",
    "ExactMatchVerifier",
    "FunctionReward",
    "GenerationSettings",
    "LMCritic",
    "LoraSettings",
    "ModelSpec",
    "PolicyModel",
    "PromptDataset",
    "PromptEnv",
    "PromptSampler",
    "PromptTemplate",
    "PromptTooLongError",
    "ReasoningGymVerifier",
    "RewardFailureWarning",
    "RewardFunctionError",
    "RewardRunner",
    "RewardSpec",
    "RunConfig",
    "SPPOTrainer",
    "TrainSettings",
    "TrainerConfig",
    "Verifier",
    "VerifierResult",
    "build_trainer",
    "evaluate_math_benchmarks",
    "evaluate_policy",
    "load_critic",
    "load_policy",
    "load_prompt_dataset",
    "load_rows",
    "make_reward",
    "make_shared_critic",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
