"""The value model: a language-model trunk read at the last prompt token, plus a value head.

``V(prompt)`` (SPPO): the critic re-renders the prompt messages with *its own* tokenizer (and its own chat
template), runs its trunk on the prompt only, and feeds the hidden state of the last non-pad token to a value
head from :mod:`sppo_rl.value_heads` (Bernoulli by default: ``V = sigmoid(logit)``, trained with BCE). It never
sees the response.

Per-token values (the ``"gae"`` estimator, token-level PPO): the critic reads prompt *and* response in the
policy's tokens and gives one value per response position (the state before each token); this needs the policy's
tokenizer (a shared critic, or a separate critic built on the same vocabulary).

Two kinds:

- :class:`LMCritic` over its own model (``AutoModel``, no LM head: a 1.5B critic for a 7B policy in the paper),
  trained in full or through its own LoRA adapter;
- ``critic="shared"`` (:func:`make_shared_critic`): a second LoRA adapter named ``"critic"`` plus a head on the
  policy's frozen base weights (peft multi-adapter: ``add_adapter``/``set_adapter``); almost no extra memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from sppo_rl.value_heads import ValueHead, make_value_head

from .config import CriticSpec, LoraSettings, ModelSpec
from .data import Message, has_chat_template, render_messages
from .distributed import copy_full_into
from .model_files import ensure_pad_token, load_pretrained_model, load_tokenizer
from .models import (
    PolicyModel,
    autocast_context,
    decoder_and_head,
    disable_attention_dropout,
    enable_activation_checkpointing,
    make_lora_config,
    resolve_device,
    resolve_dtype,
    weight_and_compute_dtype,
)
from .random_init import build_random_model
from .sequences import EncodedPrompts, encode_prompts, position_ids_from_mask

__all__ = ["CRITIC_ADAPTER", "LMCritic", "load_critic", "make_shared_critic", "same_vocabulary"]

Tensor = torch.Tensor
CRITIC_ADAPTER = "critic"
"""Name of the shared critic's adapter on the policy model."""


def same_vocabulary(a: Any, b: Any) -> bool:
    """Whether two tokenizers map text to the same ids (same vocabulary)."""
    if a is b:
        return True
    try:
        return a.get_vocab() == b.get_vocab()
    except Exception:
        return False


class LMCritic(nn.Module):
    """A value model: transformer trunk + value head, read at the last prompt token (or at every position).

    :param backbone: a ``transformers`` model (base model, or causal LM whose trunk is used), possibly peft-wrapped
    :param tokenizer: the critic's tokenizer (with a pad token)
    :param value_head: ``"bernoulli"``, ``"gaussian"``, ``"raw"``, a :class:`~sppo_rl.value_heads.ValueHead` class or
        instance
    :param max_prompt_length: prompt limit in critic tokens
    :param prompt_truncation: ``"error"`` or ``"left"``
    :param chat_template: how prompt messages are rendered with the critic's tokenizer
    :param adapter_name: for a shared critic, the peft adapter to activate while the critic runs
    :param autocast_dtype: compute dtype when the trunk's float32 weights are all trained (mixed precision)
    """

    def __init__(
        self,
        backbone: Any,
        tokenizer: Any,
        value_head: str | type[ValueHead] | ValueHead = "bernoulli",
        max_prompt_length: int = 1024,
        prompt_truncation: str = "error",
        chat_template: bool | str = "auto",
        adapter_name: str | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = ensure_pad_token(tokenizer, "critic")
        self.max_prompt_length = max_prompt_length
        self.prompt_truncation = prompt_truncation
        self.chat_template = chat_template
        self.adapter_name = adapter_name
        self.autocast_dtype = autocast_dtype
        decoder, _, _ = decoder_and_head(backbone)
        self._decoder = decoder
        hidden = int(getattr(decoder.config, "hidden_size", 0) or backbone.config.hidden_size)
        device = next(backbone.parameters()).device
        # no bias, as TRL's value models: the critic exports as an AutoModelForSequenceClassification model
        options = {} if isinstance(value_head, ValueHead) else {"bias": False}
        self.head: ValueHead = make_value_head(value_head, hidden, **options).to(device=device)

    @property
    def shared(self) -> bool:
        """Whether this critic is an adapter on the policy's model."""
        return self.adapter_name is not None

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    @contextlib.contextmanager
    def active(self) -> Iterator[LMCritic]:
        """Context in which the critic's weights are the active ones (switches the shared adapter)."""
        if self.adapter_name is None:
            yield self
            return
        model = self.backbone
        previous = model.active_adapter
        model.set_adapter(self.adapter_name)
        try:
            yield self
        finally:
            model.set_adapter(previous)

    # ---- inputs ----------------------------------------------------------------------------------------

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text the critic reads (its own chat template when it has one)."""
        return render_messages(messages, self.tokenizer, self.chat_template)

    def encode(self, messages: Sequence[Sequence[Message]]) -> EncodedPrompts:
        """Render and tokenise prompts with the critic's tokenizer, left-padded.

        :param messages: ``B`` prompts as chat messages
        :return: :class:`~sppo_rl.llm.generation.EncodedPrompts` on the critic's device
        :raises PromptTooLongError: a prompt above ``max_prompt_length`` with ``prompt_truncation="error"``
        """
        use_chat = self.chat_template is True or (self.chat_template == "auto" and has_chat_template(self.tokenizer))
        return encode_prompts(
            self.tokenizer,
            [self.render(m) for m in messages],
            self.max_prompt_length,
            self.prompt_truncation,
            add_special_tokens=not use_chat,
            device=self.device,
            role="critic",
        )

    # ---- outputs ---------------------------------------------------------------------------------------

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``(B, L, H)`` last hidden states of the trunk (positions skip left padding)."""
        device = next(self._decoder.parameters()).device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        with autocast_context(device, self.autocast_dtype):
            out = self._decoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask),
                use_cache=False,
            )
        return out.last_hidden_state

    def prompt_outputs(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Raw head output (a logit for the Bernoulli head) at the last non-pad token of each prompt.

        Works with left or right padding: the index is the last position where ``attention_mask`` is 1.

        :param input_ids: ``(B, L)``
        :param attention_mask: ``(B, L)``
        :return: ``(B,)`` float32
        """
        hidden = self.hidden_states(input_ids, attention_mask)
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (attention_mask.long() * positions).argmax(-1)
        features = hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]
        return self.head(features.float().to(self.device))

    def token_outputs(self, input_ids: Tensor, attention_mask: Tensor, n_prompt: int, n_response: int) -> Tensor:
        """Raw head outputs for the state before each response token (the ``"gae"`` critic).

        :param input_ids: ``(B, P + T)`` prompt then response, in the *policy's* tokens
        :param attention_mask: ``(B, P + T)``
        :param n_prompt: ``P``
        :param n_response: ``T``
        :return: ``(B, T)`` float32
        """
        hidden = self.hidden_states(input_ids, attention_mask)
        return self.head(hidden[:, n_prompt - 1 : n_prompt - 1 + n_response].float().to(self.device))

    def baseline(self, output: Tensor) -> Tensor:
        """``V`` from raw outputs (``sigmoid`` for the Bernoulli head), any shape."""
        return self.head.baseline_from_output(output)

    # ---- parameters ------------------------------------------------------------------------------------

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The parameters the critic optimizer updates: the head, plus the trunk's trainable weights (its
        adapter for a LoRA or shared critic, everything for a fully trained critic)."""
        params = [(f"head.{n}", p) for n, p in self.head.named_parameters()]
        if self.adapter_name is not None:
            tag = f".{self.adapter_name}."
            params += [(f"backbone.{n}", p) for n, p in self.backbone.named_parameters() if tag in n]
        else:
            params += [(f"backbone.{n}", p) for n, p in self.backbone.named_parameters() if p.requires_grad]
        return params

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Trainable weights and the head's buffers (what a checkpoint stores)."""
        state = {n: p.detach() for n, p in self.trainable_named_parameters()}
        state.update({f"head.{n}": b.detach() for n, b in self.head.named_buffers()})
        return state

    def load_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load :meth:`trainable_state_dict` output; every expected key must be present."""
        own: dict[str, Tensor] = dict(self.trainable_named_parameters())
        own.update({f"head.{n}": b for n, b in self.head.named_buffers()})
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"Critic checkpoint does not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for name, tensor in own.items():
            copy_full_into(tensor, state[name])


def make_shared_critic(
    policy: PolicyModel,
    value_head: str | type[ValueHead] | ValueHead = "bernoulli",
    lora: LoraSettings | None = None,
    max_prompt_length: int = 1024,
    prompt_truncation: str = "error",
    chat_template: bool | str = "auto",
) -> LMCritic:
    """A critic that is a second LoRA adapter (``"critic"``) plus a head on the policy's frozen base.

    :param policy: the LoRA policy (its model gains the adapter)
    :param value_head: the head
    :param lora: the critic adapter's settings (default :class:`~sppo_rl.llm.config.LoraSettings`)
    :param max_prompt_length: see :class:`LMCritic`
    :param prompt_truncation: see :class:`LMCritic`
    :param chat_template: see :class:`LMCritic`
    :raises ValueError: the policy has no LoRA adapter
    """
    if not policy.has_lora:
        raise ValueError("critic='shared' needs a LoRA policy: the critic is a second adapter on its frozen base")
    model = policy.model
    if CRITIC_ADAPTER not in model.peft_config:
        model.add_adapter(CRITIC_ADAPTER, make_lora_config(lora or LoraSettings()))
    policy.use_policy_adapter()
    return LMCritic(
        model,
        policy.tokenizer,
        value_head,
        max_prompt_length,
        prompt_truncation,
        chat_template,
        adapter_name=CRITIC_ADAPTER,
        autocast_dtype=policy.autocast_dtype,
    )


def load_critic(
    spec: CriticSpec | str | nn.Module | LMCritic | None,
    policy: PolicyModel,
    max_prompt_length: int = 1024,
    prompt_truncation: str = "error",
    tokenizer: Any = None,
    texts: Iterable[str] | None = None,
    chat_template: bool | str = "auto",
    auto_value_head: str = "bernoulli",
) -> LMCritic | None:
    """Build the critic.

    :param spec: a :class:`~sppo_rl.llm.config.CriticSpec`; ``"shared"``; ``"none"``/``None`` (no critic); a
        local model folder; an in-memory ``transformers`` model (with ``tokenizer``); or an :class:`LMCritic`
    :param policy: the policy (for ``"shared"``, and for the default dtype/device)
    :param max_prompt_length: default prompt limit (the policy's)
    :param prompt_truncation: ``"error"`` or ``"left"``
    :param tokenizer: the tokenizer of an in-memory critic model
    :param texts: training texts for an in-process tokenizer spec
    :param chat_template: the policy's prompt rendering; a shared critic with ``chat_template="auto"`` reads the
        prompt exactly as the policy does (same model, same tokenizer)
    :param auto_value_head: the head that ``value_head="auto"`` (and an in-memory critic model) gets: the estimator's
        (:meth:`~sppo_rl.llm.config.TrainerConfig.critic_value_head`)
    :return: the critic, or ``None``
    """
    if spec is None or isinstance(spec, LMCritic):
        return spec
    if isinstance(spec, str):
        if spec == "none":
            return None
        spec = CriticSpec(mode="shared") if spec == "shared" else CriticSpec(model=ModelSpec(path=spec, lora=None))
    if isinstance(spec, nn.Module):
        if tokenizer is None:
            raise ValueError("An in-memory critic model needs its tokenizer")
        backbone = spec.to(policy.device)
        backbone.requires_grad_(True)
        return LMCritic(backbone.eval(), tokenizer, auto_value_head, max_prompt_length, prompt_truncation)
    limit = spec.max_prompt_length or max_prompt_length
    value_head = auto_value_head if spec.value_head == "auto" else spec.value_head
    if spec.mode == "none":
        return None
    if spec.mode == "shared":
        shared_template = chat_template if spec.chat_template == "auto" else spec.chat_template
        return make_shared_critic(policy, value_head, spec.lora, limit, prompt_truncation, shared_template)
    if spec.mode != "separate":
        raise ValueError(f"critic.mode must be 'separate', 'shared' or 'none', got {spec.mode!r}")
    m = spec.model
    device = resolve_device(m.device)
    dtype, autocast_dtype = weight_and_compute_dtype(resolve_dtype(m.dtype, device), m.lora is None)
    tok = load_tokenizer(tokenizer if tokenizer is not None else m.tokenizer, m.path, texts, m.gguf_file)
    ensure_pad_token(tok, "critic")
    if m.init == "random":
        if not m.config:
            raise ValueError("critic.model.init='random' needs critic.model.config")
        backbone = build_random_model(dict(m.config), seed=m.seed, causal_lm=False, dtype=dtype, tokenizer=tok)
    else:
        if m.path is None:
            raise ValueError("critic.model.path is required for a separate critic (a local model folder)")
        backbone = load_pretrained_model(m, dtype, causal_lm=False)
    backbone = backbone.to(device)
    if m.lora is not None:
        from peft import get_peft_model

        backbone = get_peft_model(backbone, make_lora_config(m.lora, task_type=None))
    else:
        backbone.requires_grad_(True)
    if m.gradient_checkpointing:
        enable_activation_checkpointing(backbone)
    disable_attention_dropout(backbone)
    return LMCritic(
        backbone.eval(),
        tok,
        value_head,
        limit,
        prompt_truncation,
        spec.chat_template,
        autocast_dtype=autocast_dtype,
    )
