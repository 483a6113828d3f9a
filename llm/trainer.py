"""``SPPOTrainer``: Sequence-Level PPO (and the paper's baselines) for a LoRA language-model policy.

One iteration (the order of the paper)::

    prompts -> generate (policy, sampling) -> score (verifier) -> behaviour log-probs (forward pass)
            -> critic V(prompt) from the critic *before* its update (no grad) -> advantages
            -> critic update (its value head's loss, BCE by default) -> policy update (clipped surrogate)

All the math is :mod:`sppo_rl.objectives` (advantage estimators, :func:`~sppo_rl.objectives.broadcast_to_steps`,
:func:`~sppo_rl.objectives.clipped_policy_loss`, :func:`~sppo_rl.objectives.kl_penalty`,
:func:`~sppo_rl.objectives.aggregate_loss`) and :mod:`sppo_rl.value_heads` (critic losses and baselines); this
module only moves tensors. The estimators share one code path:

=========  ==================  ====================================================================
estimator  samples per prompt  advantage on every response token
=========  ==================  ====================================================================
sppo       1                   ``R - sigmoid(logit(prompt))`` (decoupled prompt-only critic)
grpo       8                   ``(R - mean_g) / (std_g + eps)``
rloo       5                   ``R - mean of the other samples``
remax      1 (+1 greedy)       ``R - R_greedy``
none       1                   ``R``
gae        1                   GAE(gamma, lambda) with a per-token critic (token-level PPO), whitened
=========  ==================  ====================================================================

The API follows stable-baselines3: ``learn(total_steps | n_iterations, callback=..., progress_bar=...)``, an SB3
``Logger`` (``trainer.logger``), SB3 callbacks, ``save``/``load``; a *step* is one prompt/response pair (one
step of :class:`~sppo_rl.llm.env.PromptEnv`), so ``num_timesteps`` counts sampled responses.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from sppo_rl.objectives import (
    SEQUENCE_LEVEL_ESTIMATORS,
    aggregate_loss,
    broadcast_to_steps,
    clipped_policy_loss,
    compute_advantages,
    kl_penalty,
    masked_mean,
    masked_whiten,
)
from sppo_rl.value_heads import brier_score

from .config import CriticSpec, GenerationSettings, ModelSpec, RunConfig, TrainerConfig, to_dict
from .critic import LMCritic, load_critic, same_vocabulary
from .data import PromptDataset, PromptSampler, has_chat_template, load_prompt_dataset
from .generation import EncodedPrompts, Rollout, encode_prompts, generate_rollout, sequence_logprobs
from .models import PolicyModel, load_policy, train_mode
from .monitor import make_callback, make_logger, peak_memory_mb, reset_peak_memory
from .rewards import RewardRunner, ScoredBatch, Verifier

__all__ = ["RolloutBatch", "SPPOTrainer"]

Tensor = torch.Tensor
CRITIC_ESTIMATORS = ("sppo", "gae")
"""Estimators whose advantage needs the critic."""


@dataclass
class RolloutBatch:
    """One iteration's data, ``B = prompts x samples`` sequences.

    :param rollout: prompts and responses (:class:`~sppo_rl.llm.generation.Rollout`)
    :param rows: ``B`` dataset rows
    :param group_ids: ``(B,)`` index of each sequence's prompt in the iteration
    :param outcomes: ``(B,)`` rewards ``R``
    :param success: ``(B,)`` bool
    :param old_logp: ``(B, T)`` behaviour log-probs
    :param ref_logp: ``(B, T)`` reference log-probs (``None`` without KL)
    :param advantages: ``(B, T)`` per-token advantages, 0 on padding
    :param critic_inputs: the critic's encoded prompts ``(B, Lc)`` (``None`` without a prompt critic)
    :param values: ``(B,)`` or ``(B, T)`` critic baselines before the update (``None`` without critic)
    :param returns: ``(B, T)`` value targets of the per-token critic (``gae``)
    :param greedy_outcomes: ``(B,)`` rewards of the greedy samples (``remax``)
    :param scored: the verifier output
    :param entropy: ``(B, T)`` entropy of the policy at each response position
    :param prompts_truncated: prompts cut on the left to fit the policy's limit
    :param critic_prompts_truncated: prompts cut on the left to fit the critic's limit
    """

    rollout: Rollout
    rows: list[dict[str, Any]]
    group_ids: Tensor
    outcomes: Tensor
    success: Tensor
    old_logp: Tensor
    ref_logp: Tensor | None
    advantages: Tensor
    critic_inputs: EncodedPrompts | None
    values: Tensor | None
    returns: Tensor | None
    greedy_outcomes: Tensor | None
    scored: ScoredBatch
    entropy: Tensor | None = None
    prompts_truncated: int = 0
    critic_prompts_truncated: int = 0

    @property
    def size(self) -> int:
        return int(self.outcomes.shape[0])


def _chunks(index: Tensor, size: int) -> list[Tensor]:
    return [index[i : i + size] for i in range(0, index.shape[0], size)]


class SPPOTrainer:
    """Sequence-Level PPO trainer for a LoRA language-model policy with a decoupled critic.

    :param policy: a :class:`~sppo_rl.llm.models.PolicyModel`, a :class:`~sppo_rl.llm.config.ModelSpec`, a local
        model folder, or an in-memory causal LM (then pass ``tokenizer``); LoRA is attached unless it has one
    :param train_data: a :class:`~sppo_rl.llm.data.PromptDataset`, a :class:`~sppo_rl.llm.env.PromptEnv` (its
        dataset and verifier are used), or any source of :func:`~sppo_rl.llm.data.load_rows`
    :param reward: a verifier, a TRL-style reward function, a list of them, or a
        :class:`~sppo_rl.llm.rewards.RewardRunner` (default: the environment's)
    :param critic: an :class:`~sppo_rl.llm.critic.LMCritic`, a :class:`~sppo_rl.llm.config.CriticSpec`,
        ``"shared"``, a local model folder, an in-memory model (then pass ``critic_tokenizer``), or ``None``
        (estimators without critic only)
    :param config: :class:`~sppo_rl.llm.config.TrainerConfig`; keyword ``overrides`` replace its fields
    :param eval_data: held-out prompts for :meth:`evaluate`
    :param tokenizer: the tokenizer of an in-memory policy
    :param critic_tokenizer: the tokenizer of an in-memory critic model
    :param reward_timeout_s: verifier timeout when ``reward`` is not a runner
    :param logger: an SB3 ``Logger`` (default: one built from ``log_dir``/``logger_formats``/``verbose``)
    :param log_dir: folder of the file loggers
    :param logger_formats: SB3 formats, e.g. ``["stdout", "csv", "tensorboard"]``
    :param verbose: 0 silences stdout logging
    :param run_config: the :class:`~sppo_rl.llm.config.RunConfig` this trainer was built from (stored in
        checkpoints so that :meth:`load` can rebuild it)
    :param overrides: :class:`~sppo_rl.llm.config.TrainerConfig` fields
    """

    def __init__(
        self,
        policy: PolicyModel | ModelSpec | str | nn.Module,
        train_data: Any,
        reward: Verifier | RewardRunner | Any = None,
        critic: LMCritic | CriticSpec | str | nn.Module | None = None,
        config: TrainerConfig | None = None,
        *,
        eval_data: Any = None,
        tokenizer: Any = None,
        critic_tokenizer: Any = None,
        reward_timeout_s: float | None = 10.0,
        logger: Any = None,
        log_dir: str | None = None,
        logger_formats: list[str] | None = None,
        verbose: int = 1,
        run_config: RunConfig | None = None,
        **overrides: Any,
    ) -> None:
        cfg = replace(config or TrainerConfig(), **overrides)
        if isinstance(cfg.generation, dict):
            cfg.generation = GenerationSettings(**cfg.generation)
        cfg.validate()
        self.config = cfg
        self.run_config = run_config
        self.verbose = verbose

        # data and rewards
        env = train_data if hasattr(train_data, "rewards") and hasattr(train_data, "dataset") else None
        self.env = env
        self.dataset: PromptDataset = env.dataset if env is not None else load_prompt_dataset(train_data)
        self.eval_dataset: PromptDataset | None = load_prompt_dataset(eval_data) if eval_data is not None else None
        if reward is None:
            if env is None:
                raise ValueError("No reward: pass reward=... (a verifier or a reward function) or a PromptEnv")
            self.rewards: RewardRunner = env.rewards
        elif isinstance(reward, RewardRunner):
            self.rewards = reward
        else:
            self.rewards = RewardRunner(reward, timeout_s=reward_timeout_s)

        # models (seeded: a LoRA adapter's initial weights come from the global random state)
        _seed_global(cfg.seed)
        texts = _TokenizerTexts(self.dataset)
        self.policy = policy if isinstance(policy, PolicyModel) else load_policy(policy, tokenizer, texts=texts)
        self.critic: LMCritic | None = load_critic(
            critic,
            self.policy,
            cfg.max_prompt_length,
            cfg.prompt_truncation,
            critic_tokenizer,
            texts,
            cfg.chat_template,
        )
        self._check_components()

        # optimisers
        self.policy_params = self.policy.trainable_parameters()
        if not self.policy_params:
            raise ValueError("The policy has no trainable parameters")
        self.policy_optimizer = torch.optim.AdamW(
            self.policy_params,
            lr=cfg.learning_rate,
            betas=tuple(cfg.adam_betas),
            eps=cfg.adam_eps,
            weight_decay=cfg.weight_decay,
        )
        self.critic_optimizer: torch.optim.Optimizer | None = None
        self.critic_params: list[nn.Parameter] = []
        if self.critic is not None:
            self.critic_params = [p for _, p in self.critic.trainable_named_parameters()]
            self.critic_optimizer = torch.optim.AdamW(
                self.critic_params,
                lr=cfg.critic_learning_rate,
                betas=tuple(cfg.adam_betas),
                eps=cfg.adam_eps,
                weight_decay=cfg.critic_weight_decay,
            )

        # state
        self.sampler = PromptSampler(len(self.dataset), seed=cfg.seed, shuffle=cfg.shuffle)
        self.shuffle_generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.num_timesteps = 0
        self.iteration = 0
        self.last_metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self._seeded = False
        self.logger = logger if logger is not None else make_logger(log_dir, logger_formats, verbose)

    # ------------------------------------------------------------------------------------------------------
    # set-up checks
    # ------------------------------------------------------------------------------------------------------

    def _check_components(self) -> None:
        cfg = self.config
        if cfg.estimator in CRITIC_ESTIMATORS and self.critic is None:
            raise ValueError(
                f"The {cfg.estimator!r} estimator needs a critic: pass critic='shared', a critic model folder, or "
                "a CriticSpec (the paper's decoupled critic)"
            )
        critic = self.critic
        if (
            cfg.estimator == "gae"
            and critic is not None
            and not critic.shared
            and not same_vocabulary(critic.tokenizer, self.policy.tokenizer)
        ):
            raise ValueError(
                "The 'gae' estimator (token-level PPO) reads a value at every response token, in the policy's "
                "tokens: use critic='shared' or a critic with the policy's tokenizer"
            )
        if cfg.kl_coef > 0 and not self.policy.has_lora:
            raise ValueError(
                "kl_coef > 0 needs a LoRA policy: the reference is the base model with the adapter disabled"
            )
        if cfg.prompt_truncation == "error":
            self.check_prompt_lengths(self.dataset)

    def check_prompt_lengths(self, dataset: PromptDataset) -> None:
        """Raise :class:`~sppo_rl.llm.generation.PromptTooLongError` now if a prompt exceeds a limit (policy or
        critic) and truncation is off, rather than in the middle of training."""
        step = 256
        for start in range(0, len(dataset), step):
            idx = list(range(start, min(start + step, len(dataset))))
            self._encode_policy([self._render_policy(dataset.messages(i)) for i in idx])
            if self.critic is not None and self.config.estimator != "gae":
                self.critic.encode([dataset.messages(i) for i in idx])

    # ------------------------------------------------------------------------------------------------------
    # helpers
    # ------------------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.policy.device

    def get_env(self) -> Any:
        """The :class:`~sppo_rl.llm.env.PromptEnv` given as training data, if any (SB3 callbacks call this)."""
        return self.env

    def set_logger(self, logger: Any) -> None:
        """Replace the logger (SB3 ``set_logger``)."""
        self.logger = logger

    def _use_chat(self) -> bool:
        ct = self.config.chat_template
        return ct is True or (ct == "auto" and has_chat_template(self.policy.tokenizer))

    def _render_policy(self, messages: Sequence[dict[str, str]]) -> str:
        from .data import render_messages

        return render_messages(messages, self.policy.tokenizer, self.config.chat_template)

    def _encode_policy(self, texts: Sequence[str]) -> EncodedPrompts:
        """Tokenise rendered prompts with the policy's tokenizer, left-padded, within ``max_prompt_length``."""
        cfg = self.config
        return encode_prompts(
            self.policy.tokenizer,
            texts,
            cfg.max_prompt_length,
            cfg.prompt_truncation,
            add_special_tokens=not self._use_chat(),
            device=self.device,
        )

    def _logprobs(self, rollout: Rollout, with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
        decoder, head, softcap = self.policy.parts
        with self.policy.autocast():
            return sequence_logprobs(
                decoder,
                head,
                rollout.input_ids,
                rollout.attention_mask,
                rollout.n_prompt,
                rollout.response_mask,
                temperature=self.config.generation.temperature,
                chunk_size=self.config.logprob_chunk_size,
                softcap=softcap,
                with_entropy=with_entropy,
            )

    @torch.no_grad()
    def _batched_logprobs(self, rollout: Rollout, reference: bool = False) -> tuple[Tensor, Tensor]:
        """``(B, T)`` log-probs and entropies in micro-batches, no gradient."""
        shape = rollout.response_mask.shape
        logp = torch.zeros(shape, dtype=torch.float32, device=self.device)
        entropy = torch.zeros(shape, dtype=torch.float32, device=self.device)
        index = torch.arange(shape[0], device=self.device)
        for idx in _chunks(index, self.config.micro_batch_size):
            sub = rollout.select(idx)
            width = sub.response_mask.shape[1]
            if reference:
                with self.policy.reference():
                    lp, _ = self._logprobs(sub)
            else:
                lp, ent = self._logprobs(sub, with_entropy=True)
                entropy[idx, :width] = ent if ent is not None else 0.0
            logp[idx, :width] = lp
        return logp, entropy

    def _seed_everything(self) -> None:
        """Seed Python, NumPy and torch once, at the first iteration (a resumed run restores them instead)."""
        if self._seeded:
            return
        _seed_global(self.config.seed)
        self._seeded = True

    # ------------------------------------------------------------------------------------------------------
    # one iteration: rollout
    # ------------------------------------------------------------------------------------------------------

    def collect_rollout(self) -> RolloutBatch:
        """Sample, score, and compute log-probs, old critic values and advantages for one batch of prompts."""
        cfg = self.config
        n = cfg.samples_per_prompt
        t0 = time.perf_counter()
        indices = self.sampler.next(cfg.prompts_per_step)
        messages = [self.dataset.messages(i) for i in indices]
        prompt_texts = [self._render_policy(m) for m in messages]
        prompts = self._encode_policy(prompt_texts)
        repeated = prompts.repeat_interleave(n)
        self.policy.use_policy_adapter()
        greedy = None
        with self.policy.autocast():
            rollout = generate_rollout(
                self.policy.model, self.policy.tokenizer, repeated, cfg.generation, self.policy.eos_token_ids
            )
            if cfg.estimator == "remax":
                greedy = generate_rollout(
                    self.policy.model,
                    self.policy.tokenizer,
                    prompts,
                    cfg.generation,
                    self.policy.eos_token_ids,
                    greedy=True,
                )
        t_gen = time.perf_counter() - t0

        rows = [self.dataset[i] for i in indices for _ in range(n)]
        texts_rep = [t for t in prompt_texts for _ in range(n)]
        scored = self.rewards.score(texts_rep, rollout.texts, rows)
        outcomes = torch.tensor(scored.rewards, dtype=torch.float32, device=self.device)
        success = torch.tensor(scored.success, dtype=torch.bool, device=self.device)
        greedy_outcomes = None
        if greedy is not None:
            g = self.rewards.score(prompt_texts, greedy.texts, [self.dataset[i] for i in indices])
            greedy_outcomes = torch.tensor(g.rewards, dtype=torch.float32, device=self.device).repeat_interleave(n)
        if self.critic is not None:
            self.critic.head.check_outcomes(outcomes)  # e.g. a reward outside [0, 1] with the Bernoulli head
        t_score = time.perf_counter() - t0 - t_gen

        old_logp, entropy = self._batched_logprobs(rollout)
        ref_logp = self._batched_logprobs(rollout, reference=True)[0] if cfg.kl_coef > 0 else None

        mask = rollout.response_mask.to(torch.float32)
        group_ids = torch.arange(len(indices), device=self.device).repeat_interleave(n)
        critic_inputs, values, returns = None, None, None
        if cfg.estimator == "gae":
            assert self.critic is not None
            values = self._critic_token_values(rollout)
            token_rewards = torch.zeros_like(mask)
            last = (rollout.response_lengths - 1).clamp(min=0)
            token_rewards[torch.arange(mask.shape[0]), last] = outcomes
            advantages, returns = compute_advantages(
                "gae",
                rewards=token_rewards,
                values=values,
                mask=mask,
                gamma=cfg.gamma,
                lam=cfg.gae_lambda,
                whiten=cfg.whiten_gae,
            )
        else:
            if self.critic is not None:
                critic_inputs = self.critic.encode(messages).repeat_interleave(n)
                values = self._critic_prompt_values(critic_inputs)
            seq_adv = self._sequence_advantages(outcomes, values, group_ids, greedy_outcomes)
            if cfg.normalize_advantages:
                seq_adv = masked_whiten(seq_adv[:, None], torch.ones_like(seq_adv[:, None]))[:, 0]
            advantages = broadcast_to_steps(seq_adv, mask)
        self._rollout_time = (t_gen, t_score, time.perf_counter() - t0 - t_gen - t_score)
        return RolloutBatch(
            rollout=rollout,
            rows=rows,
            group_ids=group_ids,
            outcomes=outcomes,
            success=success,
            old_logp=old_logp,
            ref_logp=ref_logp,
            advantages=advantages,
            critic_inputs=critic_inputs,
            values=values,
            returns=returns,
            greedy_outcomes=greedy_outcomes,
            scored=scored,
            entropy=entropy,
            prompts_truncated=prompts.n_truncated,
            critic_prompts_truncated=critic_inputs.n_truncated if critic_inputs is not None else 0,
        )

    def _sequence_advantages(
        self, outcomes: Tensor, values: Tensor | None, group_ids: Tensor, greedy_outcomes: Tensor | None
    ) -> Tensor:
        cfg = self.config
        name = cfg.estimator
        if name not in SEQUENCE_LEVEL_ESTIMATORS:
            raise ValueError(f"{name!r} is not a sequence-level estimator")
        if name == "sppo":
            assert values is not None
            return compute_advantages("sppo", outcomes=outcomes, baselines=values)
        if name == "grpo":
            return compute_advantages(
                "grpo",
                outcomes=outcomes,
                group_ids=group_ids,
                eps=cfg.grpo_eps,
                normalize_by_std=cfg.grpo_normalize_by_std,
            )
        if name == "rloo":
            return compute_advantages("rloo", outcomes=outcomes, group_ids=group_ids)
        if name == "remax":
            return compute_advantages("remax", outcomes=outcomes, greedy_outcomes=greedy_outcomes)
        return compute_advantages(name, outcomes=outcomes)

    @torch.no_grad()
    def _critic_prompt_values(self, inputs: EncodedPrompts) -> Tensor:
        """``(B,)`` baselines ``V(prompt)`` from the current (pre-update) critic."""
        assert self.critic is not None
        out = torch.zeros(inputs.input_ids.shape[0], dtype=torch.float32, device=self.device)
        index = torch.arange(out.shape[0], device=inputs.input_ids.device)
        with self.critic.active():
            for idx in _chunks(index, self.config.critic_micro_batch_size or self.config.micro_batch_size):
                ids, mask = _trim_left(inputs.input_ids[idx], inputs.attention_mask[idx])
                out[idx.to(self.device)] = self.critic.prompt_outputs(ids, mask).to(self.device)
        return self.critic.baseline(out)

    @torch.no_grad()
    def _critic_token_values(self, rollout: Rollout) -> Tensor:
        """``(B, T)`` per-token baselines from the current critic (0 on padding)."""
        assert self.critic is not None
        mask = rollout.response_mask
        values = torch.zeros(mask.shape, dtype=torch.float32, device=self.device)
        index = torch.arange(mask.shape[0], device=self.device)
        with self.critic.active():
            for idx in _chunks(index, self.config.critic_micro_batch_size or self.config.micro_batch_size):
                sub = rollout.select(idx)
                width = sub.response_mask.shape[1]
                out = self.critic.token_outputs(sub.input_ids, sub.attention_mask, sub.n_prompt, width)
                values[idx, :width] = self.critic.baseline(out) * sub.response_mask
        return values

    # ------------------------------------------------------------------------------------------------------
    # one iteration: updates
    # ------------------------------------------------------------------------------------------------------

    def train_critic(self, batch: RolloutBatch) -> dict[str, float]:
        """Update the critic on ``(prompt, R)`` pairs (or per-token returns for ``gae``) with its head's loss."""
        if self.critic is None or self.critic_optimizer is None:
            return {}
        cfg = self.config
        critic = self.critic
        critic.head.update_statistics(batch.outcomes)
        n = cfg.samples_per_prompt
        mb = (cfg.critic_mini_batch_size or cfg.mini_batch_size or cfg.prompts_per_step) * n
        micro = cfg.critic_micro_batch_size or cfg.micro_batch_size
        losses, norms, weights = [], [], []
        with train_mode(critic.backbone), critic.active():
            for _ in range(cfg.critic_epochs or cfg.n_epochs):
                perm = torch.randperm(batch.size, generator=self.shuffle_generator).to(self.device)
                for mini in _chunks(perm, mb):
                    self.critic_optimizer.zero_grad(set_to_none=True)
                    total_tokens = batch.rollout.response_mask[mini].sum().clamp(min=1)
                    for idx in _chunks(mini, micro):
                        if cfg.estimator == "gae":
                            sub = batch.rollout.select(idx)
                            width = sub.response_mask.shape[1]
                            out = critic.token_outputs(sub.input_ids, sub.attention_mask, sub.n_prompt, width)
                            valid = sub.response_mask.bool()
                            assert batch.returns is not None
                            loss = critic.head.loss_from_output(out[valid], batch.returns[idx, :width][valid])
                            weight = valid.sum() / total_tokens
                        else:
                            assert batch.critic_inputs is not None
                            cidx = idx.to(batch.critic_inputs.input_ids.device)
                            ids, mask = _trim_left(
                                batch.critic_inputs.input_ids[cidx], batch.critic_inputs.attention_mask[cidx]
                            )
                            out = critic.prompt_outputs(ids, mask)
                            loss = critic.head.loss_from_output(out, batch.outcomes[idx].to(out.device))
                            weight = torch.tensor(len(idx) / len(mini))
                        (loss * weight.to(loss.device)).backward()
                        losses.append(float(loss.detach()))
                        weights.append(float(weight))
                    norms.append(self._clip(self.critic_params, cfg.critic_max_grad_norm))
                    self.critic_optimizer.step()
        self.critic_optimizer.zero_grad(set_to_none=True)  # no gradients held through the rest of the iteration
        total_w = sum(weights) or 1.0
        return {
            "train/value_loss": sum(x * w for x, w in zip(losses, weights, strict=True)) / total_w,
            "train/critic_grad_norm": float(np.mean(norms)) if norms else 0.0,
        }

    @staticmethod
    def _clip(params: list[nn.Parameter], max_norm: float | None) -> float:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm is not None else math.inf)
        return float(norm)

    def train_policy(self, batch: RolloutBatch) -> dict[str, float]:
        """PPO epochs over mini-batches (one optimizer step each) of micro-batches (accumulated gradients)."""
        cfg = self.config
        n = cfg.samples_per_prompt
        mb = (cfg.mini_batch_size or cfg.prompts_per_step) * n
        mask_all = batch.rollout.response_mask
        self.policy.use_policy_adapter()
        sums: dict[str, float] = {}
        norms: list[float] = []
        with train_mode(self.policy.model):
            self._policy_epochs(batch, mb, mask_all, sums, norms)
        total_weight = sums.pop("_weight", 0.0)
        metrics = {k: v / max(total_weight, 1e-12) for k, v in sums.items()}
        metrics["train/grad_norm"] = float(np.mean(norms)) if norms else 0.0
        return metrics

    def _policy_epochs(
        self, batch: RolloutBatch, mb: int, mask_all: Tensor, sums: dict[str, float], norms: list[float]
    ) -> None:
        cfg = self.config
        for _ in range(cfg.n_epochs):
            perm = torch.randperm(batch.size, generator=self.shuffle_generator).to(self.device)
            for mini in _chunks(perm, mb):
                self.policy_optimizer.zero_grad(set_to_none=True)
                m = mask_all[mini]
                n_tokens = m.sum().clamp(min=1)
                n_seqs = (m.sum(-1) > 0).sum().clamp(min=1)
                for idx in _chunks(mini, cfg.micro_batch_size):
                    sub = batch.rollout.select(idx)
                    width = sub.response_mask.shape[1]
                    mask = sub.response_mask.to(torch.float32)
                    logp, _ = self._logprobs(sub)
                    out = clipped_policy_loss(
                        logp,
                        batch.old_logp[idx, :width],
                        batch.advantages[idx, :width],
                        mask,
                        clip_range=cfg.clip_range,
                        clip_range_high=cfg.clip_range_high,
                        dual_clip=cfg.dual_clip,
                        log_ratio_clamp=cfg.log_ratio_clamp,
                        loss_agg_mode=cfg.loss_agg_mode,
                    )
                    loss = out.loss
                    stats = {
                        "train/policy_gradient_loss": out.loss,
                        "train/clip_fraction": out.clip_fraction,
                        "train/dual_clip_fraction": out.dual_clip_fraction,
                        "train/approx_kl": out.approx_kl,
                        "train/ratio_mean": out.ratio_mean,
                    }
                    if cfg.kl_coef > 0:
                        assert batch.ref_logp is not None
                        kl = aggregate_loss(
                            kl_penalty(logp, batch.ref_logp[idx, :width], cfg.kl_estimator), mask, cfg.loss_agg_mode
                        )
                        loss = loss + cfg.kl_coef * kl
                        stats["train/kl_ref"] = kl
                    if cfg.loss_agg_mode == "token-mean":
                        weight = mask.sum() / n_tokens
                    else:
                        weight = (mask.sum(-1) > 0).sum() / n_seqs
                    (loss * weight).backward()
                    w = float(weight)
                    sums["_weight"] = sums.get("_weight", 0.0) + w
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + w * float(v.detach())
                norms.append(self._clip(self.policy_params, cfg.max_grad_norm))
                self.policy_optimizer.step()

    # ------------------------------------------------------------------------------------------------------
    # the loop
    # ------------------------------------------------------------------------------------------------------

    def train_iteration(self) -> dict[str, float]:
        """Run one full iteration (rollout, critic update, policy update) and return its metrics."""
        self._seed_everything()
        self.policy_optimizer.zero_grad(set_to_none=True)  # the last update's gradients are not kept through a rollout
        reset_peak_memory()
        t0 = time.perf_counter()
        batch = self.collect_rollout()
        t_rollout = time.perf_counter() - t0
        metrics = self._rollout_metrics(batch)
        t1 = time.perf_counter()
        metrics.update(self.train_critic(batch))
        metrics.update(self.train_policy(batch))
        t_train = time.perf_counter() - t1
        self.num_timesteps += batch.size
        self.iteration += 1
        t_gen, t_score, t_logp = self._rollout_time
        elapsed = time.perf_counter() - t0
        n_tokens = float(batch.rollout.response_mask.sum())
        metrics.update(
            {
                "train/learning_rate": self.policy_optimizer.param_groups[0]["lr"],
                "time/iterations": float(self.iteration),
                "time/total_timesteps": float(self.num_timesteps),
                "time/generation_s": t_gen,
                "time/scoring_s": t_score,
                "time/logprob_s": t_logp,
                "time/rollout_s": t_rollout,
                "time/training_s": t_train,
                "time/iteration_s": elapsed,
                "time/tokens_per_second": n_tokens / max(elapsed, 1e-9),
                "time/generation_tokens_per_second": n_tokens / max(t_gen, 1e-9),
                "time/peak_memory_mb": peak_memory_mb(self.device),
            }
        )
        if self.critic_optimizer is not None:
            metrics["train/critic_learning_rate"] = self.critic_optimizer.param_groups[0]["lr"]
        self.last_metrics = metrics
        self.history.append(metrics)
        self._last_batch = batch
        return metrics

    def _rollout_metrics(self, batch: RolloutBatch) -> dict[str, float]:
        r = batch.rollout
        mask = r.response_mask.to(torch.float32)
        lengths = r.response_lengths.to(torch.float32)
        st = batch.scored.stats
        metrics = {
            "rollout/reward_mean": float(batch.outcomes.mean()),
            "rollout/success_rate": float(batch.success.float().mean()),
            "rollout/response_length_mean": float(lengths.mean()),
            "rollout/response_length_max": float(lengths.max()),
            "rollout/truncation_rate": float(r.truncated.float().mean()),
            "rollout/prompt_length_mean": float(r.prompt_mask.sum(-1).float().mean()),
            "rollout/prompts_truncated": float(batch.prompts_truncated),
            "rollout/critic_prompts_truncated": float(batch.critic_prompts_truncated),
            "rollout/verifier_failures": float(st.failures),
            "rollout/verifier_errors": float(st.errors),
            "rollout/verifier_timeouts": float(st.timeouts),
            "rollout/no_answer_rate": st.no_answer / max(st.n, 1),
            "train/advantage_mean": float(masked_mean(batch.advantages, mask)),
            "train/advantage_abs_mean": float(masked_mean(batch.advantages.abs(), mask)),
        }
        if batch.entropy is not None:
            metrics["rollout/entropy"] = float(masked_mean(batch.entropy, mask))
        if batch.values is not None:
            if batch.values.dim() == 1:
                metrics["train/value_mean"] = float(batch.values.mean())
                metrics["train/value_brier"] = brier_score(batch.values, batch.outcomes)
            else:
                metrics["train/value_mean"] = float(masked_mean(batch.values, mask))
                first = batch.values[:, 0]
                metrics["train/value_brier"] = brier_score(first, batch.outcomes)
        if batch.greedy_outcomes is not None:
            metrics["rollout/greedy_reward_mean"] = float(batch.greedy_outcomes.mean())
        return metrics

    def learn(
        self,
        total_steps: int | None = None,
        *,
        n_iterations: int | None = None,
        callback: Any = None,
        log_interval: int = 1,
        progress_bar: bool = False,
        total_timesteps: int | None = None,
        eval_interval: int | None = None,
        save_interval: int | None = None,
        save_dir: str | None = None,
    ) -> SPPOTrainer:
        """Train for ``total_steps`` more responses or ``n_iterations`` more iterations (SB3's ``learn``).

        :param total_steps: responses to sample (rounded up to whole iterations of
            ``prompts_per_step x samples_per_prompt``); ``total_timesteps`` is an alias
        :param n_iterations: iterations to run (wins over ``total_steps``)
        :param callback: SB3 callback(s) or ``fn(locals, globals) -> bool``; returning ``False`` stops training
        :param log_interval: dump the logger every this many iterations
        :param progress_bar: show a ``tqdm`` progress bar (in responses)
        :param eval_interval: evaluate on ``eval_data`` every this many iterations (logged as ``eval/*``)
        :param save_interval: save a checkpoint to ``save_dir/checkpoint-<iteration>`` every this many iterations
        :param save_dir: checkpoint folder for ``save_interval``
        :return: ``self``
        """
        total_steps = total_steps if total_steps is not None else total_timesteps
        per_iter = self.config.prompts_per_step * self.config.samples_per_prompt
        if n_iterations is None:
            if total_steps is None:
                raise ValueError("learn() needs total_steps or n_iterations")
            n_iterations = math.ceil(total_steps / per_iter)
        if n_iterations < 0:
            raise ValueError(f"n_iterations must be >= 0, got {n_iterations}")
        cb = make_callback(callback)
        cb.init_callback(self)
        cb.on_training_start(locals(), globals())
        bar = None
        if progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_iterations * per_iter, unit="resp", dynamic_ncols=True)
        start = time.perf_counter()
        start_steps = self.num_timesteps
        try:
            for _ in range(n_iterations):
                cb.on_rollout_start()
                metrics = self.train_iteration()
                cb.update_locals({"metrics": metrics, "batch": self._last_batch})
                cb.on_rollout_end()
                if eval_interval and self.eval_dataset is not None and self.iteration % eval_interval == 0:
                    metrics.update({f"eval/{k}": v for k, v in self.evaluate().items() if isinstance(v, float)})
                elapsed = time.perf_counter() - start
                metrics["time/time_elapsed"] = elapsed
                metrics["time/fps"] = (self.num_timesteps - start_steps) / max(elapsed, 1e-9)
                if bar is not None:
                    bar.update(per_iter)
                    bar.set_postfix(reward=f"{metrics['rollout/reward_mean']:.3f}")
                if log_interval and self.iteration % log_interval == 0:
                    for k, v in metrics.items():
                        self.logger.record(k, v)
                    self.logger.dump(step=self.num_timesteps)
                if save_interval and save_dir and self.iteration % save_interval == 0:
                    self.save(f"{save_dir}/checkpoint-{self.iteration}")
                if not cb.on_step():
                    break
        finally:
            if bar is not None:
                bar.close()
        cb.on_training_end()
        return self

    # ------------------------------------------------------------------------------------------------------
    # evaluation and checkpoints
    # ------------------------------------------------------------------------------------------------------

    def evaluate(
        self,
        dataset: Any = None,
        k: int | None = None,
        temperature: float | None = None,
        max_new_tokens: int | None = None,
        max_prompts: int | None = None,
        batch_size: int | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Accuracy avg@k on held-out prompts (see :func:`~sppo_rl.llm.evaluation.evaluate_policy`).

        Defaults come from ``run_config.eval`` when the trainer was built from a run config.
        """
        from .evaluation import evaluate_policy

        data = load_prompt_dataset(dataset) if dataset is not None else self.eval_dataset
        if data is None:
            raise ValueError("No evaluation data: pass a dataset or eval_data=... to the trainer")
        ev = self.run_config.eval if self.run_config is not None else None
        train_gen = self.config.generation
        gen = replace(
            train_gen,
            temperature=temperature or (ev.temperature if ev and ev.temperature else train_gen.temperature),
            max_new_tokens=max_new_tokens
            or (ev.max_new_tokens if ev and ev.max_new_tokens else train_gen.max_new_tokens),
        )
        return evaluate_policy(
            self.policy,
            data,
            self.rewards,
            k=k or (ev.k if ev else 4),
            generation=gen,
            max_prompt_length=self.config.max_prompt_length,
            prompt_truncation=self.config.prompt_truncation,
            chat_template=self.config.chat_template,
            max_prompts=max_prompts or (ev.max_prompts if ev else None),
            batch_size=batch_size or (ev.batch_size if ev else 64),
            seed=seed if seed is not None else (ev.seed if ev else 1234),
        )

    def save(self, path: str) -> str:
        """Save adapter, critic, optimizers, RNG and counters to folder ``path`` (see
        :mod:`sppo_rl.llm.checkpoint`)."""
        from .checkpoint import save_checkpoint

        return save_checkpoint(self, path)

    def load_checkpoint(self, path: str) -> SPPOTrainer:
        """Restore a checkpoint into this (identically built) trainer."""
        from .checkpoint import load_checkpoint

        load_checkpoint(self, path)
        return self

    @classmethod
    def load(cls, path: str, **components: Any) -> SPPOTrainer:
        """Rebuild a trainer from a checkpoint and restore its state.

        Without ``components`` the trainer is rebuilt from the run config stored in the checkpoint (trainers made
        by :func:`~sppo_rl.llm.builder.build_trainer` / the CLI). Otherwise pass what the constructor needs
        (``policy``, ``train_data``, ``reward``, ``critic``, ...) built exactly as before; the stored
        :class:`~sppo_rl.llm.config.TrainerConfig` is used unless ``config`` is given.
        """
        from .checkpoint import read_checkpoint_config

        saved = read_checkpoint_config(path)
        if not components:
            if saved.get("run_config") is None:
                raise ValueError(
                    f"{path} has no run config (the trainer was built in code): pass the components to "
                    "SPPOTrainer.load(path, policy=..., train_data=..., reward=..., critic=...)"
                )
            from .builder import build_trainer

            trainer = build_trainer(RunConfig.from_dict(saved["run_config"]), checkpoint=path)
        else:
            from .config import from_dict

            components.setdefault("config", from_dict(TrainerConfig, saved["trainer_config"]))
            trainer = cls(**components)
        return trainer.load_checkpoint(path)

    def config_dict(self) -> dict[str, Any]:
        """The trainer configuration as a plain dict."""
        return to_dict(self.config)


class _TokenizerTexts:
    """The training prompts' message contents and answers, read lazily (only an in-process tokenizer needs them)."""

    def __init__(self, dataset: PromptDataset) -> None:
        self.dataset = dataset

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self.dataset)):
            for m in self.dataset.messages(i):
                yield m["content"]
            answer = self.dataset[i].get(self.dataset.answer_column)
            if answer is not None:
                yield str(answer)


def _seed_global(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _trim_left(input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    keep = attention_mask.any(0).nonzero()
    start = int(keep[0, 0]) if len(keep) else 0
    return input_ids[:, start:], attention_mask[:, start:]
