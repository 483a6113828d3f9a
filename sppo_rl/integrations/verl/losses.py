"""SPPO's critic loss for verl's critic worker: binary cross-entropy on the last-prompt-token logit.

verl's critic is a token-classification model with one output per token. Its worker calls the loss installed
with ``critic_wg.set_loss_fn(...)`` on every micro-batch as ``loss_fn(model_output, data, dp_group)``:
``model_output["values"]`` holds the outputs over prompt + response tokens (a nested tensor), and ``data``
holds ``returns`` and ``response_mask`` per response token (written by the trainer) plus verl's global-batch
statistics (``dp_size``, ``global_batch_size``).

:func:`seq_ppo_value_loss` reads the output at the last prompt token (``values[:, 0]`` after verl's
``no_padding_2_padding``) as a success logit ``l(s_p)`` and the outcome ``R`` from ``returns``, and returns
``BCEWithLogits(l, R)``, averaged over the responses of the global mini-batch: the critic never sees a
response token's output, so the response does not train it (the paper's ``V(s_p)``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.utils.metric import AggregationType, Metric
from verl.workers.utils.padding import no_padding_2_padding

__all__ = ["seq_ppo_value_loss"]


def seq_ppo_value_loss(
    config: Any, model_output: dict[str, torch.Tensor], data: TensorDict, dp_group: Any = None
) -> tuple[torch.Tensor, dict[str, Any]]:
    """BCE-with-logits between the critic's logit at the last prompt token and the outcome of the response.

    Same calling convention as verl's ``verl.workers.utils.losses.value_loss`` (bind ``config`` with
    ``functools.partial``). Responses without a valid token (verl's synthetic padding samples) are left out.

    :param config: verl's ``CriticConfig`` (unused: the loss has no hyperparameter)
    :param model_output: ``{"values": nested (B, prompt_len + response_len)}`` from the critic's forward pass
    :param data: the micro-batch: ``prompts``, ``responses``, ``returns`` and ``response_mask`` per response
        token, and the non-tensor ``dp_size`` and ``global_batch_size``
    :param dp_group: the data-parallel group (unused: the normalisation uses the global batch size)
    :return: ``(loss, metrics)``; the loss is ``sum_i BCE_i * dp_size / global_batch_size`` (the mean over the
        global mini-batch once verl averages gradients over ranks), or the mean over this micro-batch's
        responses when ``global_batch_size`` is not given
    """
    logits = no_padding_2_padding(model_output["values"], data)[:, 0].to(torch.float32)
    padded = data.select("returns", "response_mask").to_padded_tensor()
    mask = padded["response_mask"].to(torch.float32)
    n_tokens = mask.sum(dim=-1)
    valid = n_tokens > 0
    # R is on every valid token of `returns` (see compute_seq_ppo_advantage); their mean is R
    outcomes = (padded["returns"].to(torch.float32) * mask).sum(dim=-1) / n_tokens.clamp(min=1)

    per_response = F.binary_cross_entropy_with_logits(logits, outcomes, reduction="none") * valid
    dp_size = tu.get_non_tensor_data(data, "dp_size", 1)
    global_batch_size = tu.get_non_tensor_data(data, "global_batch_size", None)
    if global_batch_size is None:
        if dp_size > 1:
            raise ValueError("global_batch_size is required when dp_size > 1")
        loss = per_response.sum() / valid.sum().clamp(min=1)
        aggregation = AggregationType.MEAN
    else:
        loss = per_response.sum() * dp_size / global_batch_size
        # each micro-batch holds a part of the global mean: verl adds them up
        aggregation = AggregationType.SUM

    with torch.no_grad():
        p = torch.sigmoid(logits[valid])
        metrics = {
            "critic/vf_loss": Metric(value=loss.item(), aggregation=aggregation),
            "critic/value_mean": p.mean().item() if p.numel() else float("nan"),
            "critic/value_brier": ((p - outcomes[valid]) ** 2).mean().item() if p.numel() else float("nan"),
        }
    return loss, metrics
