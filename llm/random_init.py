"""Random-init models built from a config dict, seeded (no download): tiny test models and benchmark shapes.

A :class:`~sppo_rl.llm.config.ModelSpec` with ``init: random`` and ``config: {model_type: qwen2, ...}`` is built
here; so are the random-init Qwen2 7B / 1.5B shapes of the GPU benchmarks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["build_random_model", "make_config"]


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
