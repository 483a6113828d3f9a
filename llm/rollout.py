"""Rollout collection: one batch of prompts -> responses, outcomes, behaviour log-probs, critic values, advantages.

The data path of one collection (the order of the paper)::

    prompts -> encode (policy tokens) -> generate (the engine) -> score (the reward runner)
            -> behaviour log-probs (forward pass of the training model, no grad)
            -> critic V(prompt) from the critic *before* its update (no grad)
            -> [several ranks: gather the ranks' blocks into the global batch]
            -> advantages (the estimator, on the global batch)

What is computed depends on what the advantage estimator declares (:mod:`sppo_rl.objectives`): start-state values
(``baselines``) from the prompt critic, per-token ``values`` from a per-token critic, ``greedy_outcomes`` from one
greedy sample per prompt, ``group_ids`` for the samples of one prompt. No estimator name appears here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sppo_rl.objectives import AdvantageEstimator, broadcast_to_steps, masked_mean, whiten_advantages
from sppo_rl.value_heads import brier_score

from .config import TrainerConfig
from .critic import LMCritic
from .data import PromptDataset, has_chat_template, render_messages
from .distributed import Distributed, generation_seed
from .generation import GenerationEngine
from .logprobs import policy_logprobs
from .memory import peak_memory_mb
from .models import PolicyModel
from .rewards import RewardRunner, ScoredBatch, completion_id_lists
from .sequences import EncodedPrompts, Rollout, encode_prompts

__all__ = ["RolloutBatch", "RolloutCollector", "chunks", "trim_left"]

Tensor = torch.Tensor


@dataclass
class RolloutBatch:
    """One iteration's data, ``B = prompts x samples`` sequences.

    :param rollout: prompts and responses (:class:`~sppo_rl.llm.sequences.Rollout`)
    :param rows: ``B`` dataset rows
    :param prompts: ``B`` rendered prompt texts (as the policy read them)
    :param group_ids: ``(B,)`` index of each sequence's prompt in the iteration
    :param outcomes: ``(B,)`` outcomes ``R`` (the reward runner's: by default the weighted sum of the rewards)
    :param success: ``(B,)`` bool
    :param old_logp: ``(B, T)`` behaviour log-probs
    :param ref_logp: ``(B, T)`` reference log-probs (``None`` without KL)
    :param advantages: ``(B, T)`` per-token advantages, 0 on padding
    :param critic_inputs: the critic's encoded prompts ``(B, Lc)`` (``None`` without a prompt critic)
    :param values: ``(B,)`` or ``(B, T)`` critic baselines before the update (``None`` without critic)
    :param returns: ``(B, T)`` value targets of the per-token critic (step-level estimators)
    :param greedy_outcomes: ``(B,)`` rewards of the greedy samples (estimators that declare them)
    :param scored: the verifier output
    :param entropy: ``(B, T)`` entropy of the policy at each response position
    :param prompts_truncated: prompts cut on the left to fit the policy's limit
    :param critic_prompts_truncated: prompts cut on the left to fit the critic's limit
    :param timings: seconds spent generating, scoring and computing log-probs/values/advantages (the slowest rank's)
    :param generation_peak_mb: peak memory at the end of generation (see
        :func:`~sppo_rl.llm.memory.peak_memory_mb`)
    """

    rollout: Rollout
    rows: list[dict[str, Any]]
    prompts: list[str]
    group_ids: Tensor
    outcomes: Tensor
    success: Tensor
    old_logp: Tensor
    ref_logp: Tensor | None
    advantages: Tensor | None
    critic_inputs: EncodedPrompts | None
    values: Tensor | None
    returns: Tensor | None
    greedy_outcomes: Tensor | None
    scored: ScoredBatch
    entropy: Tensor | None = None
    prompts_truncated: int = 0
    critic_prompts_truncated: int = 0
    timings: tuple[float, float, float] = (0.0, 0.0, 0.0)
    generation_peak_mb: float = 0.0

    @property
    def size(self) -> int:
        return int(self.outcomes.shape[0])

    def gather(self, dist: Distributed, pad_id: int, critic_pad_id: int = 0) -> RolloutBatch:
        """The global batch: every rank's block, in rank order, padded to common widths (identity in one process).

        :param dist: the ranks
        :param pad_id: the policy's pad token (left padding of prompts, right padding of responses)
        :param critic_pad_id: the critic's pad token
        """
        if not dist.active:
            return self
        r = self.rollout

        def opt(t: Tensor | None, pad_dim: int | None = 1) -> Tensor | None:
            return None if t is None else dist.gather_padded(t, pad_dim)

        rollout = Rollout(
            dist.gather_padded(r.prompt_ids, 1, pad_id, left=True),
            dist.gather_padded(r.prompt_mask, 1, 0, left=True),
            dist.gather_padded(r.response_ids, 1, pad_id),
            dist.gather_padded(r.response_mask, 1, 0),
            dist.gather_padded(r.truncated.to(torch.uint8)).bool(),
            dist.gather_objects(r.texts),
        )
        critic_inputs = None
        if self.critic_inputs is not None:
            c = self.critic_inputs
            critic_inputs = EncodedPrompts(
                dist.gather_padded(c.input_ids, 1, critic_pad_id, left=True),
                dist.gather_padded(c.attention_mask, 1, 0, left=True),
                int(sum(dist.gather_objects([c.n_truncated]))),
            )
        values = self.values
        if values is not None:
            values = dist.gather_padded(values, 1 if values.dim() == 2 else None)
        scored = merge_scored(dist.gather_objects([self.scored]))
        timings = dist.gather_objects([self.timings])
        return RolloutBatch(
            rollout=rollout,
            rows=dist.gather_objects(self.rows),
            prompts=dist.gather_objects(self.prompts),
            group_ids=dist.gather_padded(self.group_ids, None),
            outcomes=dist.gather_padded(self.outcomes, None),
            success=dist.gather_padded(self.success.to(torch.uint8), None).bool(),
            old_logp=dist.gather_padded(self.old_logp, 1),
            ref_logp=opt(self.ref_logp),
            advantages=opt(self.advantages),
            critic_inputs=critic_inputs,
            values=values,
            returns=opt(self.returns),
            greedy_outcomes=opt(self.greedy_outcomes, None),
            scored=scored,
            entropy=opt(self.entropy),
            prompts_truncated=int(sum(dist.gather_objects([self.prompts_truncated]))),
            critic_prompts_truncated=critic_inputs.n_truncated if critic_inputs is not None else 0,
            timings=(max(t[0] for t in timings), max(t[1] for t in timings), max(t[2] for t in timings)),
            generation_peak_mb=max(dist.gather_objects([self.generation_peak_mb])),
        )

    def completion_records(self, n: int) -> list[dict[str, Any]]:
        """The first ``n`` sequences as records: prompt, response, outcome, success, critic value, advantage."""
        records = []
        for i in range(min(n, self.size)):
            value = None
            if self.values is not None:
                value = float(self.values[i] if self.values.dim() == 1 else self.values[i, 0])
            records.append(
                {
                    "prompt": self.prompts[i],
                    "response": self.rollout.texts[i],
                    "outcome": float(self.outcomes[i]),
                    "success": bool(self.success[i]),
                    "value": value,
                    "advantage": float(self.advantages[i, 0]) if self.advantages is not None else None,
                }
            )
        return records

    def metrics(self) -> dict[str, float]:
        """The ``rollout/*`` and ``train/value*``/``train/advantage*`` metrics of this batch."""
        if self.advantages is None:
            raise ValueError("The batch has no advantages yet (RolloutCollector.finish computes them)")
        r = self.rollout
        mask = r.response_mask.to(torch.float32)
        lengths = r.response_lengths.to(torch.float32)
        st = self.scored.stats
        metrics = {
            "rollout/reward_mean": float(self.outcomes.mean()),
            "rollout/success_rate": float(self.success.float().mean()),
            "rollout/response_length_mean": float(lengths.mean()),
            "rollout/response_length_max": float(lengths.max()),
            "rollout/truncation_rate": float(r.truncated.float().mean()),
            "rollout/prompt_length_mean": float(r.prompt_mask.sum(-1).float().mean()),
            "rollout/prompts_truncated": float(self.prompts_truncated),
            "rollout/critic_prompts_truncated": float(self.critic_prompts_truncated),
            "rollout/verifier_failures": float(st.failures),
            "rollout/verifier_errors": float(st.errors),
            "rollout/verifier_timeouts": float(st.timeouts),
            "rollout/no_answer_rate": st.no_answer / max(st.n, 1),
            **self.scored.metrics(),
            "train/advantage_mean": float(masked_mean(self.advantages, mask)),
            "train/advantage_abs_mean": float(masked_mean(self.advantages.abs(), mask)),
        }
        if self.entropy is not None:
            metrics["rollout/entropy"] = float(masked_mean(self.entropy, mask))
        if self.values is not None:
            if self.values.dim() == 1:
                metrics["train/value_mean"] = float(self.values.mean())
                metrics["train/value_brier"] = brier_score(self.values, self.outcomes)
            else:
                metrics["train/value_mean"] = float(masked_mean(self.values, mask))
                metrics["train/value_brier"] = brier_score(self.values[:, 0], self.outcomes)
        if self.greedy_outcomes is not None:
            metrics["rollout/greedy_reward_mean"] = float(self.greedy_outcomes.mean())
        return metrics


def merge_scored(parts: list[ScoredBatch]) -> ScoredBatch:
    """One :class:`~sppo_rl.llm.rewards.ScoredBatch` from the ranks' (lists concatenated, counts summed)."""
    return ScoredBatch.concat(parts)


def chunks(index: Tensor, size: int) -> list[Tensor]:
    """``index`` cut into consecutive pieces of ``size`` (the last may be shorter)."""
    return [index[i : i + size] for i in range(0, index.shape[0], size)]


def trim_left(input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Drop the columns that are left padding in every row."""
    keep = attention_mask.any(0).nonzero()
    start = int(keep[0, 0]) if len(keep) else 0
    return input_ids[:, start:], attention_mask[:, start:]


class RolloutCollector:
    """Collects one :class:`RolloutBatch` for a list of prompt indices.

    :param policy: the policy
    :param critic: the critic, or ``None``
    :param engine: the generation engine
    :param rewards: the reward runner
    :param dataset: the training prompts
    :param config: the trainer's configuration
    :param estimator: the registered advantage estimator (what it declares decides what is computed)
    :param advantage_fn: the estimator built with its options (:meth:`AdvantageEstimator.build`)
    """

    def __init__(
        self,
        policy: PolicyModel,
        critic: LMCritic | None,
        engine: GenerationEngine,
        rewards: RewardRunner,
        dataset: PromptDataset,
        config: TrainerConfig,
        estimator: AdvantageEstimator,
        advantage_fn: Callable[..., Any],
    ) -> None:
        self.policy = policy
        self.critic = critic
        self.engine = engine
        self.rewards = rewards
        self.dataset = dataset
        self.config = config
        self.estimator = estimator
        self.advantage_fn = advantage_fn
        if critic is not None:
            rewards.check_critic(critic.head)  # e.g. several rewards summing above 1 with the Bernoulli head

    # ---- prompts -----------------------------------------------------------------------------------------

    def render_policy(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt text the policy reads (its chat template when configured)."""
        return render_messages(messages, self.policy.tokenizer, self.config.chat_template)

    def encode_policy(self, texts: Sequence[str]) -> EncodedPrompts:
        """Tokenise rendered prompts with the policy's tokenizer, left-padded, within ``max_prompt_length``."""
        cfg = self.config
        ct = cfg.chat_template
        use_chat = ct is True or (ct == "auto" and has_chat_template(self.policy.tokenizer))
        return encode_prompts(
            self.policy.tokenizer,
            texts,
            cfg.max_prompt_length,
            cfg.prompt_truncation,
            add_special_tokens=not use_chat,
            device=self.policy.device,
        )

    @property
    def reads_prompt_values(self) -> bool:
        """Whether the critic is read at the prompt (every estimator but a per-token one)."""
        return self.critic is not None and "values" not in self.estimator.inputs

    def check_prompt_lengths(self, dataset: PromptDataset) -> None:
        """Raise :class:`~sppo_rl.llm.sequences.PromptTooLongError` now if a prompt exceeds a limit (policy or
        critic) and truncation is off, rather than in the middle of training."""
        step = 256
        for start in range(0, len(dataset), step):
            idx = list(range(start, min(start + step, len(dataset))))
            self.encode_policy([self.render_policy(dataset.messages(i)) for i in idx])
            if self.critic is not None and self.reads_prompt_values:
                self.critic.encode([dataset.messages(i) for i in idx])

    # ---- model passes ------------------------------------------------------------------------------------

    def logprobs(self, rollout: Rollout, with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
        """Log-probs (and entropies) of a rollout under the policy's current weights, with gradient if enabled."""
        cfg = self.config
        return policy_logprobs(
            self.policy, rollout, cfg.generation.temperature, cfg.logprob_chunk_size, with_entropy=with_entropy
        )

    @torch.no_grad()
    def batched_logprobs(self, rollout: Rollout, reference: bool = False) -> tuple[Tensor, Tensor]:
        """``(B, T)`` log-probs and entropies in micro-batches, no gradient (``reference``: adapter disabled)."""
        shape = rollout.response_mask.shape
        device = self.policy.device
        logp = torch.zeros(shape, dtype=torch.float32, device=device)
        entropy = torch.zeros(shape, dtype=torch.float32, device=device)
        for idx in chunks(torch.arange(shape[0], device=device), self.config.micro_batch_size):
            sub = rollout.select(idx)
            width = sub.response_mask.shape[1]
            if reference:
                with self.policy.reference():
                    lp, _ = self.logprobs(sub)
            else:
                lp, ent = self.logprobs(sub, with_entropy=True)
                entropy[idx, :width] = ent if ent is not None else 0.0
            logp[idx, :width] = lp
        return logp, entropy

    @torch.no_grad()
    def prompt_values(self, inputs: EncodedPrompts) -> Tensor:
        """``(B,)`` baselines ``V(prompt)`` from the current (pre-update) critic."""
        critic = self._critic()
        device = self.policy.device
        out = torch.zeros(inputs.input_ids.shape[0], dtype=torch.float32, device=device)
        index = torch.arange(out.shape[0], device=inputs.input_ids.device)
        with critic.active():
            for idx in chunks(index, self.config.critic_micro_batch_size or self.config.micro_batch_size):
                ids, mask = trim_left(inputs.input_ids[idx], inputs.attention_mask[idx])
                out[idx.to(device)] = critic.prompt_outputs(ids, mask).to(device)
        return critic.baseline(out)

    @torch.no_grad()
    def token_values(self, rollout: Rollout) -> Tensor:
        """``(B, T)`` per-token baselines from the current critic (0 on padding)."""
        critic = self._critic()
        mask = rollout.response_mask
        device = self.policy.device
        values = torch.zeros(mask.shape, dtype=torch.float32, device=device)
        with critic.active():
            for idx in chunks(
                torch.arange(mask.shape[0], device=device),
                self.config.critic_micro_batch_size or self.config.micro_batch_size,
            ):
                sub = rollout.select(idx)
                width = sub.response_mask.shape[1]
                out = critic.token_outputs(sub.input_ids, sub.attention_mask, sub.n_prompt, width)
                values[idx, :width] = critic.baseline(out) * sub.response_mask
        return values

    def _critic(self) -> LMCritic:
        if self.critic is None:
            raise RuntimeError(f"The {self.estimator.name!r} estimator reads a critic, and this trainer has none")
        return self.critic

    # ---- one collection ----------------------------------------------------------------------------------

    def collect(self, indices: Sequence[int], iteration: int = 0, first_prompt: int = 0) -> RolloutBatch:
        """Sample, score, and compute the behaviour log-probs and old critic values of the prompts ``indices``.

        The advantages are left to :meth:`finish`, which runs on the global batch (all ranks' prompts).

        :param indices: dataset rows, one per prompt; each is sampled ``samples_per_prompt`` times in a row
        :param iteration: the training iteration (part of the sampling seed)
        :param first_prompt: the position of ``indices[0]`` among the step's prompts (its rank's offset): group
            ids and sampling seeds are global
        """
        cfg = self.config
        est = self.estimator
        n = cfg.samples_per_prompt
        device = self.policy.device
        t0 = time.perf_counter()
        messages = [self.dataset.messages(i) for i in indices]
        prompt_texts = [self.render_policy(m) for m in messages]
        prompts = self.encode_policy(prompt_texts)
        seed = generation_seed(cfg.seed, iteration, 0)
        rollout = self.engine.generate(prompts.repeat_interleave(n), seed=seed, first_row=first_prompt * n)
        greedy = None
        if "greedy_outcomes" in est.inputs:
            greedy = self.engine.generate(prompts, greedy=True, seed=seed, first_row=first_prompt)
        t_gen = time.perf_counter() - t0
        generation_peak_mb = peak_memory_mb(device)

        rows = [self.dataset[i] for i in indices for _ in range(n)]
        reward_prompts = [self.dataset.reward_prompt(i, t) for i, t in zip(indices, prompt_texts, strict=True)]
        ids = completion_id_lists(rollout.response_ids, rollout.response_mask)
        scored = self.rewards.score([p for p in reward_prompts for _ in range(n)], rollout.texts, rows, ids)
        outcomes = torch.tensor(scored.outcomes, dtype=torch.float32, device=device)
        success = torch.tensor(scored.success, dtype=torch.bool, device=device)
        greedy_outcomes = None
        if greedy is not None:
            g_ids = completion_id_lists(greedy.response_ids, greedy.response_mask)
            g = self.rewards.score(reward_prompts, greedy.texts, [self.dataset[i] for i in indices], g_ids)
            greedy_outcomes = torch.tensor(g.outcomes, dtype=torch.float32, device=device).repeat_interleave(n)
        if self.critic is not None:
            self.rewards.check_outcomes(outcomes, self.critic.head)  # an undeclared reward outside [0, 1], ...
        t_score = time.perf_counter() - t0 - t_gen

        old_logp, entropy = self.batched_logprobs(rollout)
        ref_logp = self.batched_logprobs(rollout, reference=True)[0] if cfg.kl_coef > 0 else None

        critic_inputs, values = None, None
        if "values" in est.inputs:
            values = self.token_values(rollout)
        elif self.critic is not None:
            critic_inputs = self.critic.encode(messages).repeat_interleave(n)
            values = self.prompt_values(critic_inputs)
        timings = (t_gen, t_score, time.perf_counter() - t0 - t_gen - t_score)
        return RolloutBatch(
            rollout=rollout,
            rows=rows,
            prompts=[t for t in prompt_texts for _ in range(n)],
            group_ids=torch.arange(first_prompt, first_prompt + len(indices), device=device).repeat_interleave(n),
            outcomes=outcomes,
            success=success,
            old_logp=old_logp,
            ref_logp=ref_logp,
            advantages=None,
            critic_inputs=critic_inputs,
            values=values,
            returns=None,
            greedy_outcomes=greedy_outcomes,
            scored=scored,
            entropy=entropy,
            prompts_truncated=prompts.n_truncated,
            critic_prompts_truncated=critic_inputs.n_truncated if critic_inputs is not None else 0,
            timings=timings,
            generation_peak_mb=generation_peak_mb,
        )

    def overlong_penalty(self, rollout: Rollout) -> Tensor:
        """``(B,)`` DAPO's soft overlong punishment, 0 down to ``-overlong_penalty`` over the last
        ``overlong_buffer`` tokens of the limit (zeros when ``overlong_buffer`` is 0)."""
        cfg = self.config
        lengths = rollout.response_lengths.to(torch.float32)
        if cfg.overlong_buffer <= 0:
            return torch.zeros_like(lengths)
        start = cfg.generation.max_new_tokens - cfg.overlong_buffer
        return -cfg.overlong_penalty * ((lengths - start).clamp(min=0) / cfg.overlong_buffer).clamp(max=1.0)

    def finish(self, batch: RolloutBatch) -> RolloutBatch:
        """The batch with its per-token advantages (and the per-token critic's returns), from what the estimator
        declares; on several ranks this runs on the gathered global batch, identically on every rank.

        :param batch: a collected (and gathered) batch without advantages
        """
        t0 = time.perf_counter()
        rollout = batch.rollout
        mask = rollout.response_mask.to(torch.float32)
        available: dict[str, Any] = {
            "outcomes": batch.outcomes + self.overlong_penalty(rollout),
            "group_ids": batch.group_ids,
            "greedy_outcomes": batch.greedy_outcomes,
            "mask": mask,
        }
        if "values" in self.estimator.inputs:
            available["values"] = batch.values
            available["rewards"] = _outcome_on_last_token(available["outcomes"], rollout)
        elif batch.values is not None:
            available["baselines"] = batch.values
        out = self.advantage_fn(**self.estimator.select_inputs(available))
        returns = None
        if self.estimator.sequence_level:
            if self.config.normalize_advantages:
                out = whiten_advantages(out)
            advantages = broadcast_to_steps(out, mask)
        else:
            advantages, returns = out
        t_gen, t_score, t_rest = batch.timings
        return dataclasses.replace(
            batch,
            advantages=advantages,
            returns=returns,
            timings=(t_gen, t_score, t_rest + time.perf_counter() - t0),
        )


def _outcome_on_last_token(outcomes: Tensor, rollout: Rollout) -> Tensor:
    """``(B, T)`` per-token rewards: each response's outcome on its last valid token, 0 elsewhere."""
    mask = rollout.response_mask.to(torch.float32)
    rewards = torch.zeros_like(mask)
    last = (rollout.response_lengths - 1).clamp(min=0)
    rewards[torch.arange(mask.shape[0], device=mask.device), last] = outcomes
    return rewards
