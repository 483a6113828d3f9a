"""The ``seq_ppo`` trainer: Hydra composes the shipped recipe, verl builds the trainer, and its advantage step
reads and writes a real TransferQueue on a local Ray."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transfer_queue as tq
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDict
from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.trainer.ppo.v1 import PPOTrainerSync, get_trainer_cls
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
from verl.utils.config import validate_config
from verl.workers.utils.losses import value_loss

from sppo_rl.integrations.verl import SeqPPOTrainer, check_seq_ppo_config, seq_ppo_value_loss


def test_recipe_composes_to_the_papers_settings(seq_ppo_config: DictConfig) -> None:
    cfg = seq_ppo_config
    assert cfg.algorithm.adv_estimator == "seq_ppo"
    assert cfg.trainer.v1.trainer_mode == "seq_ppo"
    assert cfg.critic.enable is True
    assert cfg.algorithm.use_kl_in_reward is False
    actor = cfg.actor_rollout_ref.actor
    assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.clip_ratio_c) == (0.2, 0.2, 3.0)
    assert actor.loss_agg_mode == "token-mean"
    assert (actor.use_kl_loss, actor.entropy_coeff, actor.ppo_epochs) == (False, 0, 1)
    assert (actor.optim.lr, cfg.critic.optim.lr) == (1e-6, 5e-6)
    assert cfg.actor_rollout_ref.rollout.n == 1
    assert cfg.actor_rollout_ref.rollout.temperature == 0.6
    assert (cfg.data.train_batch_size, cfg.data.max_response_length) == (256, 8192)


def test_recipe_names_the_papers_models(shipped_recipe: DictConfig) -> None:
    cfg = shipped_recipe
    assert cfg.actor_rollout_ref.model.path == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert cfg.critic.model.path == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"


def test_verl_validates_the_config_and_builds_the_trainer(seq_ppo_config: DictConfig) -> None:
    cfg = seq_ppo_config.copy()
    # what verl's main_ppo does before Ray starts, then what its TaskRunner does
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    trainer_cls = get_trainer_cls(cfg.trainer.v1.trainer_mode)
    trainer = trainer_cls(config=cfg)

    assert trainer_cls is SeqPPOTrainer
    assert trainer.use_critic and not trainer.use_reference_policy
    # verl's synchronous paths are chosen by the string "sync"
    assert trainer.trainer_mode == "sync"
    assert type(trainer.replay_buffer) is ReplayBuffer
    assert trainer.parameter_sync_step == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algorithm.adv_estimator=gae", "needs algorithm.adv_estimator=seq_ppo"),
        ("critic.enable=False", "critic.enable=True"),
        ("algorithm.use_kl_in_reward=True", "use_kl_in_reward must be False"),
    ],
)
def test_config_that_cannot_run_sppo_is_refused(seq_ppo_config: DictConfig, override: str, message: str) -> None:
    key, value = override.split("=")
    cfg = seq_ppo_config.copy()
    OmegaConf.update(cfg, key, {"True": True, "False": False}.get(value, value))
    with pytest.raises(ValueError, match=message):
        check_seq_ppo_config(cfg)
    with pytest.raises(ValueError, match=message):
        SeqPPOTrainer(cfg)


def test_setup_installs_the_bce_loss_on_the_critic_after_verls_own(
    seq_ppo_config: DictConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = []

    class CriticGroup:
        def set_loss_fn(self, loss_fn: object) -> None:
            installed.append(loss_fn)

    def verls_setup(self: PPOTrainerSync) -> None:  # stands for verl's _setup, which starts GPU workers
        self.critic_wg = CriticGroup()
        self.critic_wg.set_loss_fn(value_loss)

    monkeypatch.setattr(PPOTrainerSync, "_setup", verls_setup)
    SeqPPOTrainer(seq_ppo_config.copy())._setup()

    assert installed[0] is value_loss
    assert installed[-1].func is seq_ppo_value_loss
    # it travels to the critic workers by reference (Ray pickles it)
    assert pickle.loads(pickle.dumps(installed[-1])).func is seq_ppo_value_loss


def _nested(rows: list[list[float]]) -> torch.Tensor:
    return torch.nested.as_nested_tensor([torch.tensor(r, dtype=torch.float32) for r in rows], layout=torch.jagged)


def test_advantages_from_a_transfer_queue_on_local_ray(local_ray: None, seq_ppo_config: DictConfig) -> None:
    trainer = SeqPPOTrainer(seq_ppo_config.copy())
    lengths = [3, 2, 4]
    outcomes = [1.0, 0.0, 1.0]
    logits = [0.0, math.log(3.0), -math.log(3.0)]  # V(s_p) = 0.5, 0.75, 0.25
    keys = ["p0_0_0", "p1_0_0", "p2_0_0"]
    # what the rollout, the reward loop, the actor and the critic have put in the queue by this point
    log_probs = _nested([[-1.0] * n for n in lengths])
    fields = TensorDict(
        {
            "prompts": torch.nested.as_nested_tensor([torch.tensor([5, 6, 7])] * 3, layout=torch.jagged),
            "responses": torch.nested.as_nested_tensor([torch.full((n,), 9) for n in lengths], layout=torch.jagged),
            "response_mask": torch.nested.as_nested_tensor(
                [torch.ones(n, dtype=torch.long) for n in lengths], layout=torch.jagged
            ),
            "rm_scores": _nested([[0.0] * (n - 1) + [r] for n, r in zip(lengths, outcomes, strict=True)]),
            "values": _nested([[logit] + [4.0] * (n - 1) for n, logit in zip(lengths, logits, strict=True)]),
            "old_log_probs": log_probs,
            "rollout_log_probs": log_probs,
        },
        batch_size=3,
    )
    tags = [{"seq_len": 3 + n} for n in lengths]
    batch = tq.kv_batch_put(keys=keys, partition_id="train", fields=fields, tags=tags)
    # and verl's synthetic padding, added as the trainer's batch balancing does it
    batch = upsample_batch_to_divisible_size(batch, batch_multiple=4, eos_token_id=1)

    metrics: dict = {}
    batch = trainer._compute_advantage(batch, metrics)

    out = tq.kv_batch_get(keys=batch.keys, partition_id="train", select_fields=["advantages", "returns"])
    advantages = out["advantages"].to_padded_tensor(-9.0)
    returns = out["returns"].to_padded_tensor(-9.0)
    expected_advantages = [[0.5] * 3, [-0.75] * 2, [0.75] * 4]
    for i, n in enumerate(lengths):
        torch.testing.assert_close(advantages[i, :n], torch.tensor(expected_advantages[i]))
        torch.testing.assert_close(returns[i, :n], torch.full((n,), outcomes[i]))
        assert (advantages[i, n:] == -9.0).all()  # each row keeps its response's length
    torch.testing.assert_close(advantages[3, :1], torch.zeros(1))  # the padding sample
    assert metrics["seq_ppo/value_mean"] == pytest.approx(0.5)
    assert metrics["seq_ppo/value_brier"] == pytest.approx((0.25 + 0.5625 + 0.5625) / 3)
    assert any(k.startswith("rollout_corr/") for k in metrics)  # verl's decoupled correction ran


def test_example_script_composes_through_verls_own_cli(tmp_path: Path) -> None:
    # Hydra's `--cfg job` prints the config that verl's main_ppo would train with, and stops there
    script = Path(__file__).parents[3] / "examples" / "verl" / "run_seq_ppo_7b.sh"
    env = {**os.environ, "PYTHON": sys.executable, "TRAIN_FILES": str(tmp_path / "train.parquet")}
    result = subprocess.run(
        ["bash", str(script), "--cfg", "job"], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    cfg = OmegaConf.create(result.stdout)
    assert cfg.algorithm.adv_estimator == "seq_ppo"
    assert cfg.trainer.v1.trainer_mode == "seq_ppo"
    assert cfg.critic.enable is True
    assert cfg.critic.model.path == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
    assert cfg.actor_rollout_ref.model.path == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert (cfg.actor_rollout_ref.rollout.name, cfg.actor_rollout_ref.rollout.n) == ("vllm", 1)
    assert cfg.data.train_files == str(tmp_path / "train.parquet")
