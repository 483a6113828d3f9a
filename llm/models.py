"""The policy: any Hugging Face causal LM (local folder, GGUF file or in-memory) with a peft LoRA adapter.

The reference policy of the optional KL term is the *same* model with its adapter disabled
(``with policy.reference(): ...`` wraps peft's ``disable_adapter()``): no second copy of the weights. Model and
tokenizer files (folders, GGUF checkpoints, export) are :mod:`sppo_rl.llm.model_files`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config import LoraSettings, ModelSpec
from .model_files import ensure_pad_token, load_pretrained_model, load_tokenizer, save_pretrained_model
from .random_init import build_random_model

__all__ = [
    "PolicyModel",
    "autocast_context",
    "decoder_and_head",
    "disable_attention_dropout",
    "enable_activation_checkpointing",
    "load_policy",
    "make_lora_config",
    "resolve_device",
    "resolve_dtype",
    "train_mode",
    "weight_and_compute_dtype",
]

DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None) -> torch.dtype:
    """``"auto"`` -> bfloat16 on a CUDA device that supports it, float32 otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        dev = device or resolve_device("auto")
        if dev.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; choose 'auto' or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def make_lora_config(lora: LoraSettings, task_type: str | None = "CAUSAL_LM") -> Any:
    """A ``peft.LoraConfig`` from :class:`~sppo_rl.llm.config.LoraSettings`."""
    from peft import LoraConfig

    target = lora.target_modules
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=target if isinstance(target, str) else list(target),
        bias=lora.bias,  # type: ignore[arg-type]
        modules_to_save=lora.modules_to_save,
        task_type=task_type,
    )


def weight_and_compute_dtype(dtype: torch.dtype, trains_all_weights: bool) -> tuple[torch.dtype, torch.dtype | None]:
    """Mixed precision: weights that an optimizer updates stay in float32, compute runs in ``dtype``.

    A frozen base (LoRA) is stored in ``dtype`` itself; peft keeps the adapter in float32.

    :param dtype: the requested (compute) dtype
    :param trains_all_weights: the model is trained without an adapter
    :return: ``(weight dtype, autocast dtype or None)``
    """
    if trains_all_weights and dtype in (torch.bfloat16, torch.float16):
        return torch.float32, dtype
    return dtype, None


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` to ``dtype`` on ``device``, or a no-op for ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def train_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Training mode for a gradient pass (so activation checkpointing is active) with every dropout off.

    ``transformers`` only checkpoints layers in training mode; RL fine-tuning wants no dropout (the ratio
    ``pi / pi_old`` must be 1 before the first update). Restores eval mode afterwards.
    """
    module.train()
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    try:
        yield module
    finally:
        module.eval()


def disable_attention_dropout(model: Any) -> None:
    """Set the functional attention dropout of every attention module to 0 (RL fine-tuning uses no dropout)."""
    for m in model.modules():
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0  # type: ignore[assignment]


def enable_activation_checkpointing(model: Any) -> None:
    """Recompute activations in the backward pass (non-reentrant), with the API of any transformers version.

    :param model: a ``PreTrainedModel`` or a ``PeftModel`` around one
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def decoder_and_head(model: Any) -> tuple[Any, Any, float | None]:
    """The transformer trunk, the output head and the final-logit soft-cap of a causal LM (peft-wrapped or not).

    :param model: a ``PreTrainedModel`` (with or without LM head) or a ``PeftModel``
    :return: ``(decoder, lm_head or None, softcap or None)``; ``decoder(input_ids, attention_mask,
        position_ids)`` returns ``last_hidden_state`` ``(B, L, H)``
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    prefix = getattr(base, "base_model_prefix", "model")
    decoder = getattr(base, prefix, None)
    if decoder is None or decoder is base:
        decoder = base.get_decoder() if hasattr(base, "get_decoder") and base.get_decoder() is not None else base
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    softcap = getattr(base.config, "final_logit_softcapping", None)
    return decoder, head, softcap


@dataclass
class PolicyModel:
    """A causal LM with a LoRA adapter, its tokenizer and how to reach its parts.

    :param model: a ``peft.PeftModel`` (or a plain model when trained without LoRA)
    :param tokenizer: its tokenizer (with a pad token)
    :param adapter_name: the policy's adapter (``"default"``)
    :param autocast_dtype: compute dtype of a policy whose float32 weights are all trained (``None``: none)
    """

    model: Any
    tokenizer: Any
    adapter_name: str = "default"
    autocast_dtype: torch.dtype | None = None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed-precision context of a policy trained without adapter (no-op otherwise)."""
        return autocast_context(self.device, self.autocast_dtype)

    @property
    def has_lora(self) -> bool:
        """Whether the model carries a peft adapter."""
        return hasattr(self.model, "peft_config")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        decoder, _, _ = decoder_and_head(self.model)
        return next(decoder.parameters()).dtype

    @property
    def parts(self) -> tuple[Any, Any, float | None]:
        """``(decoder, lm_head, softcap)``, see :func:`decoder_and_head`."""
        decoder, head, softcap = decoder_and_head(self.model)
        if head is None:
            raise ValueError("The policy has no output head (load it with AutoModelForCausalLM)")
        return decoder, head, softcap

    @property
    def eos_token_ids(self) -> list[int]:
        """Every token id that ends a response: the generation config's and the tokenizer's end tokens."""
        ids: list[int] = []
        gen = getattr(self.model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        for value in [eos, self.tokenizer.eos_token_id]:
            if value is None:
                continue
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if int(v) not in ids:
                    ids.append(int(v))
        if not ids:
            raise ValueError("The policy has no end-of-sequence token (tokenizer.eos_token_id is None)")
        return ids

    def use_policy_adapter(self) -> None:
        """Make the policy's adapter the active one (after a shared critic used its own)."""
        if self.has_lora and self.model.active_adapter != self.adapter_name:
            self.model.set_adapter(self.adapter_name)

    @contextlib.contextmanager
    def reference(self) -> Iterator[nn.Module]:
        """Context in which the model is the reference policy: every adapter disabled (the base weights).

        :raises ValueError: the policy has no adapter (there would be no separate reference)
        """
        if not self.has_lora:
            raise ValueError(
                "The KL term's reference policy is the base model with the LoRA adapter disabled; this policy "
                "has no adapter (set policy.lora, or kl_coef=0)"
            )
        with self.model.disable_adapter():
            yield self.model

    def save_pretrained(self, path: str, merge_adapter: bool = True, dtype: torch.dtype | None = None) -> str:
        """Save the policy as an ordinary ``transformers`` model folder with its tokenizer (the adapter merged into
        a copy; see :func:`save_pretrained_model`). Works for policies loaded from GGUF files."""
        return save_pretrained_model(self.model, path, self.tokenizer, self.adapter_name, merge_adapter, dtype)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters of the policy's adapter (or every parameter when there is no adapter)."""
        if not self.has_lora:
            return [p for p in self.model.parameters() if p.requires_grad]
        tag = f".{self.adapter_name}."
        return [p for n, p in self.model.named_parameters() if tag in n or n.endswith(f".{self.adapter_name}")]


def _materialise_random(spec: ModelSpec, tokenizer: Any, dtype: torch.dtype) -> Any:
    if not spec.config:
        raise ValueError("init='random' needs a model config, e.g. {model_type: qwen2, hidden_size: 64, ...}")
    return build_random_model(dict(spec.config), seed=spec.seed, causal_lm=True, dtype=dtype, tokenizer=tokenizer)


def load_policy(
    spec: ModelSpec | str | nn.Module,
    tokenizer: Any = None,
    lora: LoraSettings | str | None = "spec",
    texts: Iterable[str] | None = None,
) -> PolicyModel:
    """Load (or wrap) the policy and attach its LoRA adapter.

    :param spec: a :class:`~sppo_rl.llm.config.ModelSpec`, a local model folder, an in-memory
        ``PreTrainedModel``, or a ``PeftModel`` (used as it is)
    :param tokenizer: a tokenizer object (default: from the spec / folder)
    :param lora: the adapter; ``"spec"`` takes ``spec.lora`` (default :class:`LoraSettings` for a path or model),
        ``None`` trains every weight
    :param texts: tokenizer training texts (for an in-process tokenizer spec)
    :return: a :class:`PolicyModel` in eval mode (no dropout), on its device. With ``dtype`` bfloat16/float16
        and no adapter, the weights are kept in float32 and the forward passes run under autocast (mixed
        precision: optimizer updates of 1e-6 would vanish in bfloat16 weights)
    """
    if isinstance(spec, str):
        spec = ModelSpec(path=spec)
    if isinstance(spec, ModelSpec):
        device = resolve_device(spec.device)
        lora_settings = spec.lora if lora == "spec" else lora
        dtype, autocast_dtype = weight_and_compute_dtype(resolve_dtype(spec.dtype, device), lora_settings is None)
        tok = load_tokenizer(tokenizer if tokenizer is not None else spec.tokenizer, spec.path, texts, spec.gguf_file)
        ensure_pad_token(tok, "policy")
        if spec.init == "random":
            model = _materialise_random(spec, tok, dtype)
        elif spec.init == "pretrained":
            if spec.path is None:
                raise ValueError("policy.path is required for init='pretrained' (a local model folder)")
            model = load_pretrained_model(spec, dtype, causal_lm=True)
        else:
            raise ValueError(f"init must be 'pretrained' or 'random', got {spec.init!r}")
        model = model.to(device)
        checkpointing = spec.gradient_checkpointing
    else:
        model = spec
        if tokenizer is None:
            raise ValueError("An in-memory policy model needs its tokenizer")
        tok = ensure_pad_token(tokenizer, "policy")
        lora_settings = LoraSettings() if lora == "spec" else lora
        checkpointing = False
        autocast_dtype = None
    if not hasattr(model, "peft_config") and lora_settings is not None:
        from peft import get_peft_model

        model = get_peft_model(model, make_lora_config(lora_settings))  # type: ignore[arg-type]
    if checkpointing:
        enable_activation_checkpointing(model)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    disable_attention_dropout(model)
    model.eval()
    return PolicyModel(model=model, tokenizer=tok, autocast_dtype=autocast_dtype)
