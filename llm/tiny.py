"""A tiny local model folder for CPU runs (``sppo-llm make-tiny --out DIR``): a random-init causal LM and an
in-process-trained tokenizer with a chat template, which then load like any local Hugging Face model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from .data import make_toy_rows
from .random_init import build_random_model
from .tokenizer_training import train_tokenizer

__all__ = ["TINY_QWEN2", "make_tiny"]

TINY_QWEN2: dict[str, Any] = {
    "model_type": "qwen2",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}
"""A tiny Qwen2 shape (about 0.1 M parameters plus the embeddings) that trains on a CPU in seconds."""


def make_tiny(
    out_dir: str,
    texts: Iterable[str] | None = None,
    config: Mapping[str, Any] | None = None,
    vocab_size: int = 64,
    seed: int = 0,
    byte_level: bool = False,
) -> str:
    """Write a tiny random-init causal LM and an in-process-trained tokenizer (with chat template) to a folder.

    :param out_dir: destination folder (created)
    :param texts: tokenizer training texts (default: the ``copy_digit`` toy task rendered with the chat template)
    :param config: model config dict (default :data:`TINY_QWEN2`)
    :param vocab_size: tokenizer vocabulary size
    :param seed: weight initialisation seed
    :param byte_level: byte-level tokenizer
    :return: ``out_dir``
    """
    if texts is None:
        rows = make_toy_rows("copy_digit", size=200, seed=seed)
        texts = [r["question"] for r in rows] + [r["answer"] for r in rows]
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size, byte_level=byte_level)
    model = build_random_model(dict(config or TINY_QWEN2), seed=seed, tokenizer=tokenizer)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
