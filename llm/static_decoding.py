"""A decoding loop over a static KV cache: the ``"static"`` generation engine (``generation.engine: static``).

``transformers``' ``generate`` pays Python and launch overhead for every token and synchronises the host with the
device after every token (its stopping check), so at a 7B shape and batch 64 a decode step costs about 90 ms
although moving the weights and the KV cache takes about 5 ms. This loop keeps everything on the device:

- one ``transformers.StaticCache`` of ``prompt + max_new_tokens`` positions, allocated once per call;
- the prompt is prefilled in chunks (at most :data:`PREFILL_TOKENS` tokens per forward pass);
- each decode step runs the model's own trunk and output head with an explicit boolean attention mask (built on
  the device from a position counter), samples on the device (temperature, top-k, top-p, EOS suppression;
  exponential-race sampling, an exact draw from the categorical distribution), writes the token into an output
  buffer and advances its counters in place: no host synchronisation, so a whole step can be captured as a CUDA
  graph and replayed;
- decode attention folds the query heads of a key/value head into the query-length axis (grouped-query attention
  without ``repeat_kv`` copies of the cache) and reads the cache only up to the next multiple of ``kv_bucket``
  positions (one CUDA graph per bucket); the prefill uses ``transformers``' SDPA attention;
- with EOS allowed, the host checks every :data:`CHECK_EVERY` steps whether every row has finished.

Tokens after a row's first EOS are produced but ignored: :func:`~sppo_rl.llm.generation.generate_rollout` masks
everything after the first EOS, as it does for ``generate``. The draws are exact samples of the same distribution
as ``generate`` (``temperature``, ``top_k``, ``top_p``), from a different random stream.

Requires ``transformers >= 5`` (the attention-interface registry, dict attention masks, and a ``StaticCache`` that
tracks its own write position) and a model whose layers all use full attention (no sliding windows).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import GenerationSettings

__all__ = [
    "ATTENTION_NAME",
    "CHECK_EVERY",
    "PREFILL_TOKENS",
    "StaticDecoder",
    "last_decode_stats",
    "static_generate",
]

Tensor = torch.Tensor
ATTENTION_NAME = "sppo_static"
"""Name under which the decode attention is registered in ``transformers``' ``AttentionInterface``."""
PREFILL_TOKENS = 16384
"""Prompt tokens (rows x positions) per prefill forward pass."""
CHECK_EVERY = 32
"""With EOS allowed, the host checks every this many steps whether every row has finished."""
MIN_GRAPH_STEPS = 4
"""A KV bucket with fewer remaining steps than this runs eagerly instead of being captured."""


class _KVWindow:
    """How many cache positions the attention reads (set by the decoder before each forward pass)."""

    length: int | None = None


_WINDOW = _KVWindow()


def _static_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """Attention over the first ``_WINDOW.length`` cache positions.

    Decode (one query position) with grouped-query attention: the ``G`` query heads of each key/value head are
    folded into the query-length axis, so SDPA reads each cached key/value once (no ``repeat_kv`` copy). Several
    query positions (prefill): ``transformers``' SDPA attention.
    """
    n = _WINDOW.length
    if n is not None:
        key, value = key[:, :, :n], value[:, :, :n]
        if attention_mask is not None:
            attention_mask = attention_mask[..., :n]
    b, h, q_len, d = query.shape
    h_kv = key.shape[1]
    if q_len == 1 and h != h_kv:
        q = query.reshape(b, h_kv, h // h_kv, d)
        out = F.scaled_dot_product_attention(q, key, value, attn_mask=attention_mask, scale=scaling)
        return out.reshape(b, h, 1, d).transpose(1, 2), None
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    kwargs.pop("is_causal", None)
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=0.0, scaling=scaling, is_causal=False, **kwargs
    )


_REGISTERED = False


def _register_attention() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    try:
        from transformers import AttentionInterface
    except ImportError as exc:  # pragma: no cover - transformers < 4.48
        raise ImportError("generation.engine='static' needs transformers >= 5") from exc
    AttentionInterface.register(ATTENTION_NAME, _static_attention)
    _REGISTERED = True


@contextlib.contextmanager
def _attention_swapped(config: Any) -> Iterator[None]:
    """The model's attention is :func:`_static_attention` inside the context (restored afterwards)."""
    _register_attention()
    previous = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
        _WINDOW.length = None


@contextlib.contextmanager
def _adapter_in_model_dtype(model: Any, settings: GenerationSettings, decoder: StaticDecoder) -> Iterator[None]:
    """With ``settings.adapter_in_model_dtype`` and a peft model in bf16/fp16: the adapters (float32 weights) run
    in the base dtype (autocast without weight cache, so CUDA graphs can capture it; peft's input casting off)."""
    dtype = decoder.head.weight.dtype
    if not (settings.adapter_in_model_dtype and hasattr(model, "peft_config") and dtype != torch.float32):
        yield
        return
    from peft.helpers import disable_input_dtype_casting

    with (
        disable_input_dtype_casting(model),
        torch.autocast(decoder.device.type, dtype=dtype, cache_enabled=False),
    ):
        yield


def _layer_types(config: Any) -> list[str]:
    cfg = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    types = getattr(cfg, "layer_types", None) or ["full_attention"]
    unsupported = sorted(set(types) - {"full_attention"})
    if unsupported or getattr(cfg, "use_sliding_window", False):
        found = unsupported or "a sliding window"
        raise NotImplementedError(f"generation.engine='static' supports full-attention layers only, found {found}")
    return sorted(set(types))


def _autocast_on(device: torch.device) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device.type))
    except TypeError:  # torch < 2.4
        return bool(torch.is_autocast_enabled())


class StaticDecoder:
    """Sample ``max_new_tokens`` tokens for a batch of left-padded prompts over a static KV cache.

    :param model: a causal LM (``PreTrainedModel`` or a peft model around one), in eval mode
    :param input_ids: ``(B, P)`` left-padded prompts
    :param attention_mask: ``(B, P)``
    :param settings: sampling settings (``temperature``, ``top_k``, ``top_p``, ``suppress_eos``, ``cuda_graph``,
        ``compile``, ``kv_bucket``)
    :param eos_token_ids: tokens that end a response
    :param pad_token_id: fills the output buffer
    :param greedy: argmax decoding
    :param max_new_tokens: response length limit
    :param prefill_tokens: prompt tokens per prefill forward pass
    """

    def __init__(
        self,
        model: Any,
        input_ids: Tensor,
        attention_mask: Tensor,
        settings: GenerationSettings,
        eos_token_ids: Sequence[int],
        pad_token_id: int,
        greedy: bool,
        max_new_tokens: int,
        prefill_tokens: int = PREFILL_TOKENS,
    ) -> None:
        from transformers import StaticCache

        from .models import decoder_and_head

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.config = base.config
        self.mask_keys = _layer_types(self.config)
        self.decoder, head, self.softcap = decoder_and_head(model)
        if head is None:
            raise ValueError("generation.engine='static' needs a causal LM with an output head")
        self.head = head
        self.settings = settings
        self.greedy = greedy
        self.prefill_tokens = prefill_tokens
        b, p = input_ids.shape
        self.n_prompt = p
        self.max_new_tokens = max_new_tokens
        self.length = p + max_new_tokens
        device = input_ids.device
        self.device = device
        self.input_ids = input_ids
        self.prompt_mask = attention_mask
        self.cache = StaticCache(config=self.config, max_cache_len=self.length)
        self.key_valid = torch.ones((b, self.length), dtype=torch.bool, device=device)
        self.key_valid[:, :p] = attention_mask.bool()
        self.positions = torch.arange(self.length, device=device)
        self.eos = torch.tensor(sorted({int(e) for e in eos_token_ids}), dtype=torch.long, device=device)
        # decode state, updated in place by every step
        self.tokens = torch.full((b, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
        self.last = torch.zeros((b, 1), dtype=torch.long, device=device)
        self.pos = attention_mask.long().sum(-1, keepdim=True)  # position of the first response token
        self.cur = torch.tensor(p, dtype=torch.long, device=device)  # cache slot of the token fed next
        self.out_index = torch.ones(1, dtype=torch.long, device=device)  # column of the token sampled next
        self.finished = torch.zeros(b, dtype=torch.bool, device=device)
        use_graph = settings.cuda_graph and device.type == "cuda" and not _autocast_on(device)
        self.use_graph = use_graph
        self.step_fn = torch.compile(self._step, dynamic=False) if settings.compile else self._step
        self.graphs: dict[int, Any] = {}
        self.pool: Any = None
        self.n_generated = 0
        self.n_captured = 0
        self.n_eager = 0
        self.replays: list[tuple[Any, Any, int]] = []  # (start event, end event, replays) per replay run

    # ---- pieces ----------------------------------------------------------------------------------------

    def _masks(self, allowed: Tensor) -> dict[str, Tensor]:
        return {k: allowed for k in self.mask_keys}

    def _sample(self, logits: Tensor) -> Tensor:
        logits = logits.float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        if self.settings.suppress_eos:
            logits = logits.index_fill(1, self.eos, -math.inf)
        if self.greedy:
            return logits.argmax(-1)
        s = self.settings
        if s.temperature != 1.0:
            logits = logits / s.temperature
        if s.top_k and s.top_k > 0:
            kth = logits.topk(min(s.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, -math.inf)
        if s.top_p < 1.0:
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            probs = sorted_logits.softmax(-1)
            before = probs.cumsum(-1) - probs  # mass of the more likely tokens
            remove = before >= s.top_p
            remove[:, 0] = False
            logits = logits.scatter(1, order, sorted_logits.masked_fill(remove, -math.inf))
        probs = logits.softmax(-1)
        race = torch.empty_like(probs).exponential_()
        return (probs / race).argmax(-1)

    def _hidden(self, ids: Tensor, allowed: Tensor, position_ids: Tensor) -> Tensor:
        out = self.decoder(
            input_ids=ids,
            attention_mask=self._masks(allowed),
            position_ids=position_ids,
            past_key_values=self.cache,
            use_cache=True,
        )
        return out.last_hidden_state[:, -1]

    def _step(self) -> None:
        """One decode step: feed ``last`` at slot ``cur``, sample the next token, advance the counters."""
        n = _WINDOW.length or self.length
        allowed = (self.key_valid[:, :n] & (self.positions[:n] <= self.cur))[:, None, None, :]
        nxt = self._sample(self.head(self._hidden(self.last, allowed, self.pos)))
        self.tokens.index_copy_(1, self.out_index, nxt[:, None])
        self.finished |= torch.isin(nxt, self.eos)
        self.last.copy_(nxt[:, None])
        self.pos.add_(1)
        self.cur.add_(1)
        self.out_index.add_(1)

    def _window(self, step: int) -> int:
        """KV positions read by decode step ``step`` (1-based): the bucket that holds slot ``P + step - 1``."""
        need = self.n_prompt + step
        bucket = self.settings.kv_bucket
        if not bucket:
            return self.length
        return min(self.length, -(-need // bucket) * bucket)

    # ---- phases ----------------------------------------------------------------------------------------

    def prefill(self) -> None:
        """Run the prompt through the model in chunks and sample the first response token."""
        b, p = self.input_ids.shape
        chunk = max(1, min(p, self.prefill_tokens // max(b, 1)))
        position_ids = (self.prompt_mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = None
        for s in range(0, p, chunk):
            e = min(p, s + chunk)
            q = self.positions[s:e, None]
            k = self.positions[None, :e]
            # causal over real prompt tokens; a padding query sees only itself (no fully masked rows)
            allowed = (self.key_valid[:, None, :e] & (k <= q)) | (k == q)
            _WINDOW.length = e
            hidden = self._hidden(self.input_ids[:, s:e], allowed[:, None], position_ids[:, s:e])
        assert hidden is not None
        first = self._sample(self.head(hidden))
        self.tokens[:, 0] = first
        self.last.copy_(first[:, None])
        self.finished |= torch.isin(first, self.eos)
        self.n_generated = 1

    def _run_eager(self, window: int) -> None:
        _WINDOW.length = window
        self.step_fn()
        self.n_eager += 1

    def _capture(self, window: int) -> Any:
        """Warm up with one real step on a side stream, then capture the step for ``window`` (not run)."""
        _WINDOW.length = window
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.step_fn()
        torch.cuda.current_stream().wait_stream(stream)
        self.n_eager += 1
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self.step_fn()
        self.n_captured += 1
        return graph

    def decode(self) -> None:
        """Sample the remaining ``max_new_tokens - 1`` tokens (stops early once every row has an EOS)."""
        total = self.max_new_tokens
        step = 1
        check = not self.settings.suppress_eos
        while step < total:
            if check and step % CHECK_EVERY == 0 and bool(self.finished.all()):
                break
            window = self._window(step)
            if not self.use_graph:
                self._run_eager(window)
                step += 1
                continue
            # steps left in this bucket (and before the next host check)
            end = total
            if self.settings.kv_bucket:
                end = min(end, window - self.n_prompt + 1)
            if check:
                end = min(end, (step // CHECK_EVERY + 1) * CHECK_EVERY)
            if window not in self.graphs:
                if end - step < MIN_GRAPH_STEPS:
                    self._run_eager(window)
                    step += 1
                    continue
                self.graphs[window] = self._capture(window)  # its warm-up ran one real step
                step += 1
            graph = self.graphs[window]
            if step < end:
                start_event = torch.cuda.Event(enable_timing=True)
                end_event = torch.cuda.Event(enable_timing=True)
                start_event.record()
                count = end - step
                for _ in range(count):
                    graph.replay()
                end_event.record()
                self.replays.append((start_event, end_event, count))
                step = end
        self.n_generated = step

    def stats(self) -> dict[str, Any]:
        """Graphs captured, eager steps, graph replays and their mean time (synchronises with the device)."""
        replays = sum(c for _, _, c in self.replays)
        replay_s = 0.0
        if self.replays:
            torch.cuda.synchronize(self.device)
            replay_s = sum(a.elapsed_time(b) for a, b, _ in self.replays) / 1e3
        return {
            "graphs": self.n_captured,
            "eager_steps": self.n_eager,
            "replays": replays,
            "replay_ms_per_step": 1e3 * replay_s / replays if replays else None,
        }

    def release(self) -> None:
        """Drop the cache and the graphs (their memory returns to the allocator)."""
        self.graphs.clear()
        self.pool = None
        self.cache = None  # type: ignore[assignment]
        self.step_fn = None  # type: ignore[assignment]  # breaks the self -> bound method cycle


@torch.no_grad()
def static_generate(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    settings: GenerationSettings,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    greedy: bool = False,
    max_new_tokens: int | None = None,
    prefill_tokens: int = PREFILL_TOKENS,
) -> Tensor:
    """Sample responses with :class:`StaticDecoder`.

    :return: ``(B, T)`` response token ids, ``T <= max_new_tokens`` (less when every row ended early); tokens after
        a row's first EOS are arbitrary (the caller masks them)
    """
    limit = max_new_tokens or settings.max_new_tokens
    decoder = StaticDecoder(
        model, input_ids, attention_mask, settings, eos_token_ids, pad_token_id, greedy, limit, prefill_tokens
    )
    try:
        with _attention_swapped(decoder.config), _adapter_in_model_dtype(model, settings, decoder):
            decoder.prefill()
            decoder.decode()
        _LAST_STATS.clear()
        _LAST_STATS.update(decoder.stats())
        return decoder.tokens[:, : decoder.n_generated].clone()
    finally:
        decoder.release()


_LAST_STATS: dict[str, Any] = {}


def last_decode_stats() -> dict[str, Any]:
    """:meth:`StaticDecoder.stats` of the last :func:`static_generate` call (for benchmarks)."""
    return dict(_LAST_STATS)
