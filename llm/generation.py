"""Generation engines: objects that sample responses for a batch of encoded prompts.

An engine is built once, when the trainer is built, from ``generation.engine`` (a name in
:data:`GENERATION_ENGINES`), and lives for the whole run, so it may own long-lived state (a KV cache, CUDA graphs,
a merged copy of the weights, a connection to an inference server). Its interface::

    engine = make_generation_engine(policy, settings)
    rollout = engine.generate(prompts)            # EncodedPrompts -> Rollout (tokens, masks, texts)
    engine.sync_weights(policy)                   # after every policy update: the sampler sees the new weights

Two engines ship: ``"generate"`` (:class:`TransformersEngine`, ``transformers``' ``generate``) and ``"static"``
(:class:`StaticCacheEngine`, the library's decoding loop over a static KV cache, :mod:`sppo_rl.llm.static_decoding`).
Both sample from the policy's own modules, so their ``sync_weights`` is a no-op, unless
``generation.merge_adapter`` is set: then they sample from a copy of the model with the LoRA adapter folded into
the weights (:class:`MergedAdapterCopy`), which ``sync_weights`` refreshes.

Another backend (vLLM, SGLang, a remote server) plugs in as a subclass registered with
:func:`register_generation_engine` that implements :meth:`GenerationEngine.sample_tokens` (or all of
:meth:`GenerationEngine.generate`) and pushes the new weights in :meth:`GenerationEngine.sync_weights`. Whatever
the engine, the behaviour log-probs are recomputed by the training model (:mod:`sppo_rl.llm.logprobs`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, ClassVar

import torch

from .config import GenerationSettings
from .distributed import generation_seed
from .engine_registry import GENERATION_ENGINES, get_generation_engine, register_generation_engine
from .models import PolicyModel
from .sequences import EncodedPrompts, Rollout, response_mask_after_eos
from .static_decoding import last_decode_stats, static_generate

__all__ = [
    "GENERATION_ENGINES",
    "GenerationEngine",
    "MergedAdapterCopy",
    "StaticCacheEngine",
    "TransformersEngine",
    "generate_rollout",
    "get_generation_engine",
    "make_generation_engine",
    "register_generation_engine",
]

Tensor = torch.Tensor


def make_generation_engine(policy: PolicyModel, settings: GenerationSettings) -> GenerationEngine:
    """Build the engine that ``settings.engine`` names, for ``policy``."""
    engine: GenerationEngine = get_generation_engine(settings.engine)(policy, settings)
    return engine


class MergedAdapterCopy:
    """A copy of a LoRA policy's model with the policy adapter folded into its weights, used only for sampling.

    Each LoRA layer's base weight gets its own tensor in the copy, ``W' = W + scale * B A`` in the model's dtype
    (one rounding of the sum); every other tensor (embeddings, output head unless adapted, norms, biases, modules
    trained in full) is *shared* with the training model, so it is always current. Memory: one extra copy of the
    adapted weights (for ``target_modules: all-linear`` on a 7B model, about 13 GB in bf16), nothing for the rest.

    A copy rather than merging in place and unmerging after sampling: in bf16, ``(W + BA) - BA`` is not ``W``, so
    in-place merging would drift the frozen base weights a little at every step; the copy leaves them untouched.

    :param policy: a LoRA policy (:class:`~sppo_rl.llm.models.PolicyModel`)
    :raises ValueError: the policy has no LoRA adapter, or uses DoRA
    """

    def __init__(self, policy: PolicyModel) -> None:
        from peft.tuners.lora import LoraLayer

        if not policy.has_lora:
            raise ValueError("generation.merge_adapter needs a LoRA policy (there is no adapter to merge)")
        self.adapter = policy.adapter_name
        base = policy.model.get_base_model()
        layers: list[tuple[str, Any]] = [(name, m) for name, m in base.named_modules() if isinstance(m, LoraLayer)]
        for name, layer in layers:
            if layer.use_dora.get(self.adapter, False):
                raise ValueError(f"generation.merge_adapter does not support DoRA (layer {name})")
        own = {id(layer.get_base_layer().weight) for _, layer in layers}
        shared = [t for t in [*base.parameters(), *base.buffers()] if id(t) not in own]
        model = copy.deepcopy(base, {id(t): t for t in shared})
        for name, _ in layers:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, getattr(parent, attr).get_base_layer())
        self.model: Any = model.eval()
        self.pairs = [(layer, model.get_submodule(name)) for name, layer in layers]
        self.n_refreshes = 0
        self.refresh()

    @property
    def merged_bytes(self) -> int:
        """Bytes of the tensors the copy owns (the merged weights)."""
        return sum(target.weight.numel() * target.weight.element_size() for _, target in self.pairs)

    @torch.no_grad()
    def refresh(self) -> None:
        """Fold the adapter's current weights into the copy: ``W' = W + delta`` for every LoRA layer."""
        for layer, target in self.pairs:
            weight = layer.get_base_layer().weight
            if self.adapter in layer.lora_A or self.adapter in getattr(layer, "lora_embedding_A", {}):
                delta = layer.get_delta_weight(self.adapter)
                target.weight.copy_((weight.float() + delta.float()).to(target.weight.dtype))
            else:
                target.weight.copy_(weight)
        self.n_refreshes += 1


class GenerationEngine:
    """Samples one response per prompt row (repeat rows for several samples) and returns a :class:`Rollout`.

    Subclasses implement :meth:`sample_tokens` (the sampler proper); this class batches the prompts
    (``settings.batch_size`` rows per call, left padding trimmed), marks every token after the first EOS as
    padding, and decodes the texts.

    :param policy: the policy it samples from
    :param settings: sampling settings (temperature, top-p, top-k, ``max_new_tokens``, ``batch_size``,
        ``merge_adapter``, ...)
    """

    name: ClassVar[str] = ""

    def __init__(self, policy: PolicyModel, settings: GenerationSettings) -> None:
        self.policy = policy
        self.settings = settings
        self.merged: MergedAdapterCopy | None = MergedAdapterCopy(policy) if settings.merge_adapter else None
        self.last_stats: dict[str, Any] = {}

    @property
    def sampling_model(self) -> Any:
        """The model the sampler runs: the policy's own, or the merged copy."""
        return self.merged.model if self.merged is not None else self.policy.model

    def sync_weights(self, policy: PolicyModel) -> None:
        """Make the sampler see ``policy``'s current weights (refreshes the merged copy; otherwise a no-op).

        :param policy: the policy just updated (the one this engine was built for)
        """
        if policy is not self.policy:
            raise ValueError("sync_weights got another policy than the one this engine was built for")
        if self.merged is not None:
            self.merged.refresh()

    def sample_tokens(
        self, input_ids: Tensor, attention_mask: Tensor, settings: GenerationSettings, greedy: bool, limit: int
    ) -> Tensor:
        """Sample responses for one batch of left-padded prompts.

        :param input_ids: ``(b, p)``
        :param attention_mask: ``(b, p)``
        :param settings: the sampling settings of this call
        :param greedy: argmax decoding
        :param limit: the response length limit
        :return: ``(b, t)`` response token ids, ``t <= limit``; tokens after a row's first EOS are ignored
        """
        raise NotImplementedError

    @contextlib.contextmanager
    def _sampling_context(self) -> Iterator[None]:
        """Active adapter and mixed precision of the policy while sampling from its own modules."""
        self.policy.use_policy_adapter()
        with self.policy.autocast():
            yield

    @torch.no_grad()
    def generate(
        self,
        prompts: EncodedPrompts,
        greedy: bool = False,
        settings: GenerationSettings | None = None,
        max_new_tokens: int | None = None,
        seed: int | None = None,
        first_row: int = 0,
    ) -> Rollout:
        """Sample one response per prompt row.

        :param prompts: ``(B, P)`` encoded prompts (left-padded)
        :param greedy: argmax decoding (ReMax's baseline sample, greedy evaluation)
        :param settings: settings of this call (default: the engine's), e.g. an evaluation temperature
        :param max_new_tokens: overrides ``settings.max_new_tokens``
        :param seed: sample each batch of ``settings.batch_size`` rows under its own seed,
            :func:`~sppo_rl.llm.distributed.generation_seed` ``(seed, 0, first_row + start)``, in a forked random
            state (the global one is left as it was): the responses then depend on the global row of the batch, not
            on the process that samples it (``None``: the global random state)
        :param first_row: the global row of ``prompts``' first row (its offset in a step split over ranks)
        :return: a :class:`Rollout`
        """
        settings = settings or self.settings
        if max_new_tokens is not None:
            settings = replace(settings, max_new_tokens=max_new_tokens)
        limit = settings.max_new_tokens
        tokenizer = self.policy.tokenizer
        pad_id = tokenizer.pad_token_id
        n = prompts.input_ids.shape[0]
        step = settings.batch_size or n
        pieces: list[Tensor] = []
        for start in range(0, n, step):
            ids = prompts.input_ids[start : start + step]
            mask = prompts.attention_mask[start : start + step]
            nonpad = mask.any(0).nonzero()
            p0 = int(nonpad[0, 0]) if len(nonpad) else 0
            with self._sampling_context(), _seeded(seed, first_row + start, ids.device):
                pieces.append(self.sample_tokens(ids[:, p0:], mask[:, p0:], settings, greedy, limit))
        width = max(p.shape[1] for p in pieces)
        response = torch.full((n, width), pad_id, dtype=torch.long, device=prompts.input_ids.device)
        row = 0
        for p in pieces:
            response[row : row + p.shape[0], : p.shape[1]] = p
            row += p.shape[0]
        response_mask, truncated = response_mask_after_eos(
            response, self.policy.eos_token_ids, limit, ignore_eos=settings.suppress_eos and not greedy
        )
        response = torch.where(response_mask.bool(), response, torch.full_like(response, pad_id))
        texts = [
            tokenizer.decode(response[i, : int(response_mask[i].sum())].tolist(), skip_special_tokens=True)
            for i in range(n)
        ]
        return Rollout(prompts.input_ids, prompts.attention_mask, response, response_mask, truncated, texts)


@contextlib.contextmanager
def _seeded(seed: int | None, row: int, device: torch.device) -> Iterator[None]:
    """A forked random state seeded for the batch that starts at global row ``row`` (no-op without a seed)."""
    if seed is None:
        yield
        return
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(generation_seed(seed, 0, row))
        yield


@register_generation_engine("generate")
class TransformersEngine(GenerationEngine):
    """``transformers``' ``generate`` (sampling or greedy, with the model's KV cache)."""

    def _generation_config(self, settings: GenerationSettings, greedy: bool, limit: int) -> Any:
        from transformers import GenerationConfig

        kwargs: dict[str, Any] = {
            "max_new_tokens": limit,
            "eos_token_id": list(self.policy.eos_token_ids),
            "pad_token_id": self.policy.tokenizer.pad_token_id,
            "do_sample": not greedy,
            "use_cache": True,
        }
        if not greedy:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
        if settings.suppress_eos:
            kwargs["min_new_tokens"] = limit
        if settings.cache_implementation:
            kwargs["cache_implementation"] = settings.cache_implementation
        return GenerationConfig(**kwargs)

    def sample_tokens(
        self, input_ids: Tensor, attention_mask: Tensor, settings: GenerationSettings, greedy: bool, limit: int
    ) -> Tensor:
        config = self._generation_config(settings, greedy, limit)
        out = self.sampling_model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
        sequences = out if isinstance(out, Tensor) else out.sequences
        return sequences[:, input_ids.shape[1] :]


@register_generation_engine("static")
class StaticCacheEngine(GenerationEngine):
    """The library's decoding loop over a static KV cache (:mod:`sppo_rl.llm.static_decoding`): on-device
    sampling, grouped-query decode attention, KV buckets, CUDA graphs on a GPU."""

    def sample_tokens(
        self, input_ids: Tensor, attention_mask: Tensor, settings: GenerationSettings, greedy: bool, limit: int
    ) -> Tensor:
        tokens = static_generate(
            self.sampling_model,
            input_ids,
            attention_mask,
            settings,
            self.policy.eos_token_ids,
            self.policy.tokenizer.pad_token_id,
            greedy,
            limit,
        )
        self.last_stats = last_decode_stats()
        return tokens


def generate_rollout(
    policy: PolicyModel,
    prompts: EncodedPrompts,
    settings: GenerationSettings,
    greedy: bool = False,
    max_new_tokens: int | None = None,
) -> Rollout:
    """One-off sampling with a fresh engine of ``settings.engine`` (scripts; a trainer keeps one engine).

    :param policy: the policy
    :param prompts: encoded prompts
    :param settings: sampling settings (and the engine's name)
    :param greedy: argmax decoding
    :param max_new_tokens: overrides ``settings.max_new_tokens``
    """
    return make_generation_engine(policy, settings).generate(prompts, greedy=greedy, max_new_tokens=max_new_tokens)
