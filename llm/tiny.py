"""Tiny models and tokenizers built in-process (no hub): for tests, the CPU example and GPU smoke benchmarks.

- :func:`train_tokenizer` trains a BPE tokenizer with ``tokenizers`` on a list of texts and wraps it as a
  ``transformers`` fast tokenizer with pad/eos tokens and a ChatML-style chat template.
- :func:`build_random_model` builds a random-init causal LM (or a base model without LM head) from a config
  dict such as ``{"model_type": "qwen2", "hidden_size": 64, ...}``, seeded.
- :func:`make_tiny` writes both to a folder (``sppo-llm make-tiny --out DIR``), which then loads like any
  local Hugging Face model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch

__all__ = [
    "CHATML_TEMPLATE",
    "TINY_QWEN2",
    "build_random_model",
    "make_config",
    "make_tiny",
    "train_tokenizer",
]

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A ChatML chat template (the format of Qwen2 chat models), used by the in-process tokenizers."""

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

SPECIAL_TOKENS = ["<|pad|>", "<|endoftext|>", "<|unk|>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 256,
    byte_level: bool = False,
    chat_template: str | None = CHATML_TEMPLATE,
    pad_token: str | None = "<|pad|>",
) -> Any:
    """Train a BPE tokenizer on ``texts`` in-process and wrap it for ``transformers``.

    With ``byte_level=False`` (default) the base alphabet is the characters of ``texts`` (plus the characters
    of the chat template), so a small ``vocab_size`` gives short, dense vocabularies where a random model puts
    real probability on each token; unknown characters map to ``<|unk|>``. With ``byte_level=True`` every string
    is encodable (256 byte symbols, so ``vocab_size`` should exceed 256 + 5).

    :param texts: training texts (prompts and answers)
    :param vocab_size: target vocabulary size, special tokens included
    :param byte_level: byte-level BPE (GPT-2/Qwen style) instead of a character alphabet
    :param chat_template: a Jinja chat template, or ``None`` for none
    :param pad_token: the pad token, or ``None`` to build a tokenizer without one (for tests of that case)
    :return: a ``transformers`` fast tokenizer (``eos_token="<|endoftext|>"``)
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(texts)
    extra = "\n".join(["user", "assistant", "system", " "])
    tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
    if byte_level:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="isolated")
        tok.decoder = decoders.Fuse()
        alphabet = sorted(set("".join([*texts, extra])))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator([*texts, extra], trainer=trainer)
    kwargs: dict[str, Any] = {"eos_token": "<|endoftext|>", "unk_token": "<|unk|>"}
    if pad_token is not None:
        kwargs["pad_token"] = pad_token
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    if chat_template:
        hf.chat_template = chat_template
    return hf


def make_config(config: Mapping[str, Any], tokenizer: Any = None) -> Any:
    """A ``transformers`` config from a dict with ``model_type`` (vocabulary and special ids from ``tokenizer``).

    :param config: ``{"model_type": "qwen2" | "llama" | ..., <config fields>}``
    :param tokenizer: if given, sets ``vocab_size``, ``pad_token_id``, ``eos_token_id`` and ``bos_token_id``
    :return: a ``PretrainedConfig``
    """
    from transformers import AutoConfig

    fields = dict(config)
    model_type = fields.pop("model_type", "qwen2")
    if tokenizer is not None:
        fields["vocab_size"] = len(tokenizer)
        fields["pad_token_id"] = tokenizer.pad_token_id
        fields["eos_token_id"] = tokenizer.eos_token_id
        fields["bos_token_id"] = tokenizer.bos_token_id
    return AutoConfig.for_model(model_type, **fields)


def build_random_model(
    config: Any, seed: int = 0, causal_lm: bool = True, dtype: torch.dtype | None = None, tokenizer: Any = None
) -> Any:
    """A random-init model from a config, seeded without touching the global RNG.

    :param config: a ``PretrainedConfig`` or a dict for :func:`make_config`
    :param seed: initialisation seed (same seed, same weights)
    :param causal_lm: build ``AutoModelForCausalLM`` (with LM head) rather than ``AutoModel``
    :param dtype: parameter dtype (default float32)
    :param tokenizer: passed to :func:`make_config` when ``config`` is a dict
    :return: the model, in eval mode
    """
    from transformers import AutoModel, AutoModelForCausalLM

    if isinstance(config, Mapping):
        config = make_config(config, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cls = AutoModelForCausalLM if causal_lm else AutoModel
        model = cls.from_config(config)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


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
    from .data import make_toy_rows

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
