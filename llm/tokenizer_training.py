"""Tokenizers trained in-process on a list of texts (no hub): for tests, the CPU example and benchmarks.

:func:`train_tokenizer` trains a BPE tokenizer with ``tokenizers`` and wraps it as a ``transformers`` fast
tokenizer with pad/eos tokens and a ChatML-style chat template. A :class:`~sppo_rl.llm.config.ModelSpec` asks for
one with ``tokenizer: {train_on: dataset, vocab_size: ...}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["CHATML_TEMPLATE", "SPECIAL_TOKENS", "train_tokenizer"]

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A ChatML chat template (the format of Qwen2 chat models), used by the in-process tokenizers."""

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
