"""Fixtures of the LLM tests: tiny random-init models built from configs and tokenizers trained in-process.

Nothing is downloaded: every model is a ``Qwen2Config``/``LlamaConfig`` with a few thousand parameters.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest.importorskip("transformers")
pytest.importorskip("peft")

from sppo_rl.llm.config import LoraSettings
from sppo_rl.llm.data import make_toy_rows
from sppo_rl.llm.models import PolicyModel, load_policy
from sppo_rl.llm.random_init import build_random_model
from sppo_rl.llm.tiny import TINY_QWEN2
from sppo_rl.llm.tokenizer_training import train_tokenizer

TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}
LORA_WITH_HEAD = LoraSettings(
    r=8,
    alpha=16,
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"],
)
"""LoRA on every linear layer *and* the output head: a random model's head must move for it to learn."""


@pytest.fixture(autouse=True)
def _quiet_and_deterministic() -> Any:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*[Tt]imeout is disabled.*")
        yield


@pytest.fixture(scope="session")
def copy_rows() -> list[dict[str, Any]]:
    """128 rows of the copy-digit toy task (digits 0-9)."""
    return make_toy_rows("copy_digit", size=128, seed=0)


@pytest.fixture(scope="session")
def policy_tokenizer(copy_rows: list[dict[str, Any]]) -> Any:
    return train_tokenizer([r["question"] for r in copy_rows] + ["hard easy question"], vocab_size=48)


@pytest.fixture(scope="session")
def critic_tokenizer(copy_rows: list[dict[str, Any]]) -> Any:
    """A different vocabulary from the policy's (smaller, different merges)."""
    return train_tokenizer([r["question"] for r in copy_rows] + ["hard easy question"], vocab_size=38)


@pytest.fixture
def make_policy(policy_tokenizer: Any) -> Callable[..., PolicyModel]:
    """``make_policy(seed=0, lora=LORA_WITH_HEAD, config=None) -> PolicyModel`` (fresh objects every call)."""

    def build(
        seed: int = 0, lora: LoraSettings | None = LORA_WITH_HEAD, config: dict | None = None, tokenizer: Any = None
    ) -> PolicyModel:
        tok = tokenizer if tokenizer is not None else policy_tokenizer
        model = build_random_model(dict(config or TINY_QWEN2), seed=seed, tokenizer=tok)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 100)
            return load_policy(model, tok, lora=lora)

    return build


@pytest.fixture
def make_critic_model(critic_tokenizer: Any) -> Callable[..., Any]:
    """``make_critic_model(seed=1) -> (llama base model, its tokenizer)``."""

    def build(seed: int = 1, config: dict | None = None) -> tuple[Any, Any]:
        model = build_random_model(dict(config or TINY_LLAMA), seed=seed, causal_lm=False, tokenizer=critic_tokenizer)
        return model, critic_tokenizer

    return build
