"""The trained critic as an artifact: a ``transformers`` sequence-classification model with one label.

``AutoModelForSequenceClassification.from_pretrained(folder)`` then gives, for a prompt rendered as the critic
reads it (its own chat template), the logit of the prompt's chance of success: ``sigmoid(logits[:, 0])`` is the
critic's ``V(prompt)``. The model reads the hidden state of the last non-pad token, as the critic does; its
tokenizer is saved with right padding, so that batches keep the positions the critic used.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch

from sppo_rl.value_heads import BernoulliValueHead

from .critic import CRITIC_ADAPTER, LMCritic
from .distributed import full_tensor
from .models import decoder_and_head

__all__ = ["export_critic"]


def _plain_trunk(critic: LMCritic) -> Any:
    """A copy of the critic's trunk without any adapter (the critic's own adapter merged into it)."""
    backbone = copy.deepcopy(critic.backbone)
    if hasattr(backbone, "peft_config"):
        names = [CRITIC_ADAPTER] if critic.shared else None
        backbone = backbone.merge_and_unload(adapter_names=names)
    trunk, _, _ = decoder_and_head(backbone)
    return trunk


def export_critic(critic: LMCritic, path: str, dtype: torch.dtype | None = None) -> str:
    """Write ``critic`` as a sequence-classification model folder (weights, config, tokenizer).

    :param critic: a critic with a Bernoulli head (separate, LoRA or shared)
    :param path: destination folder
    :param dtype: cast the saved weights (default: as they are)
    :return: ``path``
    :raises ValueError: a head other than the Bernoulli one (its output is not a logit), or a head with a bias
    """
    from transformers import AutoModelForSequenceClassification

    head = critic.head
    if not isinstance(head, BernoulliValueHead):
        raise ValueError(
            f"only a Bernoulli critic exports as a sequence-classification model (its output is a logit); this "
            f"critic's head is {type(head).__name__}"
        )
    if head.linear.bias is not None:
        raise ValueError("the critic's head has a bias, which a sequence-classification score layer cannot hold")
    trunk = _plain_trunk(critic)
    config = copy.deepcopy(trunk.config)
    config.num_labels = 1
    config.id2label = {0: "success_logit"}
    config.label2id = {"success_logit": 0}
    config.problem_type = "regression"
    config.pad_token_id = critic.tokenizer.pad_token_id
    config.architectures = None
    model = AutoModelForSequenceClassification.from_config(config)
    prefix = model.base_model_prefix
    state = {k: full_tensor(v) for k, v in trunk.state_dict().items()}
    missing, unexpected = getattr(model, prefix).load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"the critic's trunk does not fit {type(model).__name__}: {missing[:3]} {unexpected[:3]}")
    with torch.no_grad():
        model.score.weight.copy_(full_tensor(head.linear.weight).to(model.score.weight.dtype))
    if dtype is not None:
        model = model.to(dtype)
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer = copy.deepcopy(critic.tokenizer)
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(path)
    return path
