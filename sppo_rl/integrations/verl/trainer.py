"""The ``seq_ppo`` trainer: verl's synchronous PPO trainer with SPPO's advantage and critic loss.

Selected with ``trainer.v1.trainer_mode=seq_ppo``. One step runs verl's own pipeline unchanged (rollout,
reward, old log-probs, critic forward, critic update, actor update with PPO's clipped surrogate) except for
two things, both needed because stock verl 0.9.1 has no hook for them:

- :meth:`SeqPPOTrainer._compute_advantage` reads the critic's ``values`` from the TransferQueue and calls
  :func:`~sppo_rl.integrations.verl.estimator.compute_seq_ppo_advantage` with them (verl's dispatcher does not
  pass ``values`` to registered estimators);
- :meth:`SeqPPOTrainer._setup` installs :func:`~sppo_rl.integrations.verl.losses.seq_ppo_value_loss` as the
  critic's loss in place of verl's clipped MSE.
"""

from __future__ import annotations

import logging
from functools import partial

import torch
import transfer_queue as tq
from omegaconf import DictConfig
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl.protocol import DataProto
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch
from verl.trainer.ppo.utils import need_critic
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer
from verl.workers.utils.padding import response_to_nested

from sppo_rl.integrations.verl.estimator import SEQ_PPO, compute_seq_ppo_advantage, sequence_outcomes
from sppo_rl.integrations.verl.losses import seq_ppo_value_loss

__all__ = ["SeqPPOTrainer", "check_seq_ppo_config"]

logger = logging.getLogger(__name__)

_SYNC = "sync"


def check_seq_ppo_config(config: DictConfig) -> None:
    """Raise ``ValueError`` if the verl config cannot run SPPO.

    :param config: the full trainer config (verl's ``ppo_trainer`` plus overrides)
    :raises ValueError: the estimator is not ``seq_ppo``, the critic is off, or a KL penalty is put in the
        reward (it would make the outcome non-binary; use the actor's ``use_kl_loss`` for a KL term instead)
    """
    if config.algorithm.adv_estimator != SEQ_PPO:
        raise ValueError(
            f"trainer.v1.trainer_mode={SEQ_PPO} needs algorithm.adv_estimator={SEQ_PPO}, "
            f"got {config.algorithm.adv_estimator!r}"
        )
    if not need_critic(config):
        raise ValueError(f"{SEQ_PPO} needs the critic: set critic.enable=True")
    if config.algorithm.use_kl_in_reward:
        raise ValueError(
            f"{SEQ_PPO} learns P(success) from the outcome: algorithm.use_kl_in_reward must be False "
            "(for a KL term use actor_rollout_ref.actor.use_kl_loss=True)"
        )


@register_trainer(SEQ_PPO)
class SeqPPOTrainer(PPOTrainerSync):
    """verl's synchronous trainer with SPPO's advantage ``A = R - sigmoid(l(s_p))`` and BCE critic loss.

    verl picks its synchronous code paths (replay buffer, checkpoints, refills) by testing
    ``self.trainer_mode == "sync"``, and its base ``__init__`` sets ``trainer_mode`` from the config
    (``"seq_ppo"``); :attr:`trainer_mode` therefore always reads ``"sync"``, and the settings under
    ``trainer.v1.sync`` apply.

    :param config: the full trainer config, checked with :func:`check_seq_ppo_config`
    """

    def __init__(self, config: DictConfig) -> None:
        check_seq_ppo_config(config)
        super().__init__(config)

    @property
    def trainer_mode(self) -> str:
        """Always ``"sync"``: this is verl's synchronous trainer with two methods replaced."""
        return _SYNC

    @trainer_mode.setter
    def trainer_mode(self, name: str) -> None:
        if name not in (SEQ_PPO, _SYNC):
            raise ValueError(f"SeqPPOTrainer runs as trainer_mode {SEQ_PPO!r}, got {name!r}")

    def _setup(self) -> None:
        """verl's set-up, then SPPO's critic loss in place of the clipped MSE."""
        super()._setup()
        self.critic_wg.set_loss_fn(partial(seq_ppo_value_loss, config=self.config.critic))
        logger.info("seq_ppo: critic loss set to BCE on the last prompt token")

    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        """Read rewards and critic values from the TransferQueue, write SPPO's advantages and returns back.

        :param batch: the step's batch (keys into the TransferQueue partition)
        :param metrics: the step's metrics, updated in place (rollout correction, ``seq_ppo/*``)
        :return: the batch, with ``advantages`` and ``returns`` (``R`` per response token) stored
        """
        # TransferQueue leaves out the fields it does not hold (rollout log-probs exist only if the rollout logs them)
        fields = ["response_mask", "rm_scores", "values", "old_log_probs", "rollout_log_probs"]
        nested = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        nested_mask = nested["response_mask"]  # keeps each response's length
        data = DataProto(batch=nested.to_padded_tensor())

        # decoupled rollout correction, as in verl's trainer (it may mask out rejected tokens)
        rollout_corr_config = self.config.algorithm.get("rollout_correction", None)
        bypass_mode = bool(rollout_corr_config and rollout_corr_config.get("bypass_mode", False))
        rollout_correction = rollout_corr_config is not None and "rollout_log_probs" in data.batch and not bypass_mode
        if rollout_correction:
            data, correction_metrics = compute_rollout_correction_and_add_to_batch(data, rollout_corr_config)
            metrics.update(correction_metrics)

        advantages, returns = compute_seq_ppo_advantage(
            token_level_rewards=data.batch["rm_scores"],
            response_mask=data.batch["response_mask"],
            values=data.batch["values"],
            config=self.config.algorithm,
        )
        metrics.update(
            _critic_metrics(data.batch["values"][:, 0], data.batch["rm_scores"], data.batch["response_mask"])
        )

        output = {"advantages": advantages, "returns": returns}
        if rollout_correction:
            output["response_mask"] = data.batch["response_mask"]
            if "rollout_is_weights" in data.batch:
                output["rollout_is_weights"] = data.batch["rollout_is_weights"]
        output = {k: response_to_nested(v, nested_mask) for k, v in output.items()}
        return tq.kv_batch_put(
            keys=batch.keys, partition_id=batch.partition_id, fields=TensorDict(output, batch_size=len(batch))
        )


def _critic_metrics(logits: torch.Tensor, rewards: torch.Tensor, response_mask: torch.Tensor) -> dict[str, float]:
    """Calibration of the critic on this batch, before its update: mean ``V(s_p)`` and the Brier score."""
    valid = response_mask.sum(dim=-1) > 0
    if not valid.any():
        return {}
    p = torch.sigmoid(logits[valid].to(torch.float32))
    outcomes = sequence_outcomes(rewards, response_mask)[valid]
    return {
        "seq_ppo/value_mean": p.mean().item(),
        "seq_ppo/value_brier": ((p - outcomes) ** 2).mean().item(),
    }
