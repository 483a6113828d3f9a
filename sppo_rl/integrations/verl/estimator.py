"""The ``seq_ppo`` advantage estimator, registered in verl's ``core_algos`` registry.

Data path: verl's reward manager writes the outcome ``R`` of each response at its last token
(``token_level_rewards``, ``(B, T)``); verl's critic writes one output per response token (``values``,
``(B, T)``), and ``values[:, 0]`` is the critic's output at the **last prompt token** (verl's padding helpers
take the model output from position ``prompt_len - 1`` on; ``tests/integrations/verl`` checks it). SPPO reads
that output as a success logit ``l(s_p)``, so ``V(s_p) = sigmoid(l)`` and

    A = R - sigmoid(l(s_p))     on every response token (0 on padding),

computed by :func:`sppo_rl.objectives.sppo_advantages` and :func:`sppo_rl.objectives.broadcast_to_steps`.

verl 0.9.1's dispatcher (``verl.trainer.ppo.ray_trainer.compute_advantage``) gives a registered estimator only
``token_level_rewards``, ``response_mask``, ``config`` and ``index``, never ``values``: the trainer
:class:`~sppo_rl.integrations.verl.trainer.SeqPPOTrainer` calls this function itself with the values.
"""

from __future__ import annotations

from typing import Any

import torch
from verl.trainer.ppo import core_algos

from sppo_rl.objectives import broadcast_to_steps, sppo_advantages
from sppo_rl.value_heads import OutcomeError

__all__ = ["SEQ_PPO", "CriticValuesMissingError", "compute_seq_ppo_advantage", "sequence_outcomes"]

SEQ_PPO = "seq_ppo"
"""The name of the estimator and of the trainer mode (verl-recipe's ``sppo`` is Self-Play Preference Optimization)."""


class CriticValuesMissingError(ValueError):
    """The estimator was called without the critic's values (verl's own dispatcher does that)."""


def sequence_outcomes(token_level_rewards: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """The outcome ``R`` of each response: its rewards summed over the valid tokens (verl puts it on the last).

    :param token_level_rewards: ``(B, T)``
    :param response_mask: ``(B, T)``, 1 on response tokens
    :return: ``(B,)`` float32
    :raises OutcomeError: if an outcome of a non-empty response lies outside ``[0, 1]`` (the Bernoulli critic
        learns a success probability: the reward function must score a response 0 or 1, or a soft target)
    """
    mask = response_mask.to(torch.float32)
    outcomes = (token_level_rewards.to(torch.float32) * mask).sum(dim=-1)
    bad = ((outcomes < 0) | (outcomes > 1) | ~torch.isfinite(outcomes)) & (mask.sum(dim=-1) > 0)
    if bad.any():
        i = int(torch.nonzero(bad)[0, 0])
        raise OutcomeError(
            f"seq_ppo needs outcomes in [0, 1] (a success or a probability), got {outcomes[i].item():g} for "
            f"response {i}. Make the reward function return 0 or 1 (verl's gsm8k and MATH scorers do; its DAPO scorer, "
            "for data_source math, math_dapo and aime*, returns -1/+1: map it to 0/1 in a custom reward function)."
        )
    return outcomes


@core_algos.register_adv_est(SEQ_PPO)
def compute_seq_ppo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    values: torch.Tensor | None = None,
    config: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SPPO advantages in verl's estimator convention: ``A = R - sigmoid(values[:, 0])`` on every response token.

    :param token_level_rewards: ``(B, T)`` rewards per response token (the outcome on the last one)
    :param response_mask: ``(B, T)``, 1 on response tokens
    :param values: ``(B, T)`` critic outputs aligned with the response tokens; ``values[:, 0]`` is the success
        logit at the last prompt token. The old critic's (before this step's critic update); no gradient flows.
    :param config: verl's ``AlgoConfig`` (unused: SPPO has no hyperparameter here)
    :param kwargs: what verl's dispatcher passes to every estimator (``index``, ``reward_baselines``), unused
    :return: ``(advantages, returns)``, both ``(B, T)`` and 0 on padding; ``returns`` holds ``R`` on every
        response token (the target of :func:`~sppo_rl.integrations.verl.losses.seq_ppo_value_loss`)
    :raises CriticValuesMissingError: if ``values`` is ``None``
    """
    if values is None:
        raise CriticValuesMissingError(
            "seq_ppo needs the critic's values, which verl's compute_advantage does not pass to registered "
            "estimators: set trainer.v1.trainer_mode=seq_ppo (and critic.enable=True), see docs/verl.md"
        )
    outcomes = sequence_outcomes(token_level_rewards, response_mask)
    baselines = torch.sigmoid(values[:, 0].to(torch.float32))
    advantages = broadcast_to_steps(sppo_advantages(outcomes, baselines), response_mask)
    returns = broadcast_to_steps(outcomes, response_mask)
    return advantages, returns
