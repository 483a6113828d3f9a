"""``SPPOTrainer``: Sequence-Level PPO (and the paper's baselines) for a LoRA language-model policy.

The trainer is the loop; its parts live in their own modules:

- :mod:`sppo_rl.llm.loading` turns specs, paths or objects into the dataset, rewards, policy and critic;
- :mod:`sppo_rl.llm.generation` samples responses (an engine object built once, with ``sync_weights``);
- :mod:`sppo_rl.llm.rollout` collects one batch: generate, score, behaviour log-probs, critic values, advantages;
- :mod:`sppo_rl.llm.updates` updates the critic, then the policy;
- :mod:`sppo_rl.llm.checkpoint` saves and restores everything needed to resume exactly.

One iteration (the order of the paper)::

    prompts -> generate (policy, sampling) -> score (verifier) -> behaviour log-probs (forward pass)
            -> critic V(prompt) from the critic *before* its update (no grad) -> advantages
            -> critic update (its value head's loss, BCE by default) -> policy update (clipped surrogate)
            -> engine.sync_weights(policy)

All the math is :mod:`sppo_rl.objectives` and :mod:`sppo_rl.value_heads`. The estimator is any name of the
registry (:data:`sppo_rl.objectives.ADVANTAGE_ESTIMATORS`): what it declares (inputs, samples per prompt, critic)
decides what is sampled and computed. The built-in ones: ``sppo`` (1 sample, ``R - sigmoid(logit(prompt))``),
``grpo`` (8), ``dr_grpo`` (8), ``rloo`` (5), ``remax`` (1 + 1 greedy), ``none``, ``batch_mean``, ``ema`` (1 each)
and ``gae`` (token-level PPO with a per-token critic).

The API follows stable-baselines3: ``learn(total_steps | n_iterations, callback=..., progress_bar=...)``, an SB3
``Logger`` (``trainer.logger``), SB3 callbacks, ``save``/``load``; a *step* is one prompt/response pair (one
step of :class:`~sppo_rl.llm.env.PromptEnv`), so ``num_timesteps`` counts sampled responses.
"""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.logger import Logger
from torch import nn

from sppo_rl.objectives import get_advantage_estimator

from .checkpoint import load_checkpoint, read_checkpoint_config, resolve_checkpoint, save_checkpoint
from .config import CriticSpec, DistributedSettings, GenerationSettings, ModelSpec, TrainerConfig, from_dict, to_dict
from .critic import LMCritic, same_vocabulary
from .data import PromptDataset, PromptSampler, load_prompt_dataset
from .distributed import Distributed
from .evaluation import evaluate_policy
from .generation import make_generation_engine
from .loading import (
    build_dataset,
    build_models,
    build_rewards,
    import_user_modules,
    resolve_rewards,
    resolve_train_data,
    saved_tokenizer,
)
from .memory import peak_memory_mb, reset_peak_memory
from .models import PolicyModel
from .monitor import make_callback
from .rewards import RewardRunner, Verifier
from .rollout import RolloutBatch, RolloutCollector
from .run_config import RunConfig
from .run_logs import RunLog, make_run_log
from .schedules import check_schedule, make_schedule
from .updates import update_critic, update_policy

__all__ = ["SPPOTrainer", "build_trainer"]


_LATEST_PREFIXES = ("time/iterations", "time/total_timesteps", "time/time_elapsed", "time/fps", "eval/")
_LATEST_KEYS = ("train/learning_rate", "train/critic_learning_rate")


def aggregate_log_window(window: Sequence[dict[str, float]]) -> dict[str, float]:
    """One logged row from the metrics of the iterations since the previous row.

    A metric is averaged over the iterations that report it, except peaks and extremes (``memory/*``,
    ``time/peak_memory_mb``, ``*_max``, ``*_min``), which take the maximum or minimum, and counters, clocks,
    learning rates and ``eval/*`` values, which take the latest.

    :param window: each iteration's metrics, oldest first
    :return: the row
    """
    row: dict[str, float] = {}
    keys = dict.fromkeys(k for m in window for k in m)
    for key in keys:
        values = [float(m[key]) for m in window if key in m]
        if key.startswith(_LATEST_PREFIXES) or key in _LATEST_KEYS:
            row[key] = values[-1]
        elif key.startswith("memory/") or key == "time/peak_memory_mb" or key.endswith("_max"):
            row[key] = max(values)
        elif key.endswith("_min"):
            row[key] = min(values)
        else:
            row[key] = sum(values) / len(values)
    return row


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
    :param reward_timeout_s: seconds a reward call on one worker's slice of the batch may take when ``reward`` is
        not a runner (a stuck call is killed)
    :param reward_weights: one weight per reward function (TRL's ``reward_weights``) when ``reward`` is not a runner
    :param reward_outcome: what the critic learns with several rewards or rewards outside [0, 1]: a function's name,
        a threshold on the weighted sum, or ``None`` for the sum (see :class:`~sppo_rl.llm.rewards.RewardRunner`)
    :param logger: an SB3 ``Logger`` (default: one built from ``log_dir``/``logger_formats``/``verbose``)
    :param log_dir: folder of the file loggers
    :param logger_formats: local outputs (:data:`sppo_rl.llm.run_logs.FORMATS`), e.g. ``["compact", "csv"]``
        (default ``["stdout"]``, SB3's table, when verbose)
    :param report_to: trackers, e.g. ``["wandb"]`` (:data:`sppo_rl.llm.run_logs.TRACKERS`)
    :param project: the trackers' project
    :param run_name: the trackers' run name
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
        reward_timeout_s: float | None = 30.0,
        reward_weights: Sequence[float] | None = None,
        reward_outcome: str | float | None = None,
        logger: Any = None,
        log_dir: str | None = None,
        logger_formats: list[str] | None = None,
        report_to: Sequence[str] = (),
        project: str = "sppo-rl",
        run_name: str | None = None,
        verbose: int = 1,
        run_config: RunConfig | None = None,
        **overrides: Any,
    ) -> None:
        cfg = replace(config or TrainerConfig(), **overrides)
        if isinstance(cfg.generation, dict):
            cfg.generation = GenerationSettings(**cfg.generation)
        if isinstance(cfg.distributed, dict):
            cfg.distributed = DistributedSettings(**cfg.distributed)
        cfg.validate()
        self.config = cfg
        self.run_config = run_config
        self.estimator = get_advantage_estimator(cfg.estimator)
        # several processes (torchrun / accelerate launch): checked before any model is built
        self.dist = Distributed.from_environment(cfg.distributed)
        self.dist.check_divides(
            prompts_per_step=cfg.prompts_per_step,
            mini_batch_size=cfg.mini_batch_size,
            critic_mini_batch_size=cfg.critic_mini_batch_size,
        )
        self.verbose = verbose if self.dist.is_main else 0
        check_schedule(cfg.lr_scheduler_type, cfg.lr_warmup_iterations, cfg.total_iterations, "lr_scheduler_type")
        check_schedule(*cfg.critic_schedule, cfg.total_iterations, "critic_lr_scheduler_type")

        # data and rewards
        self.env, self.dataset = resolve_train_data(train_data)
        self.eval_dataset: PromptDataset | None = load_prompt_dataset(eval_data) if eval_data is not None else None
        self.rewards = resolve_rewards(
            reward, self.env, reward_timeout_s, weights=reward_weights, outcome=reward_outcome
        )

        # models (seeded: a LoRA adapter's initial weights come from the global random state)
        _seed_global(cfg.seed)
        self.policy, self.critic = build_models(policy, critic, cfg, self.dataset, tokenizer, critic_tokenizer)
        self._check_components()
        self._shard_models()  # FSDP: before the optimizers, which then hold the shards

        # optimisers
        self.policy_params = self.policy.trainable_parameters()
        if not self.policy_params:
            raise ValueError("The policy has no trainable parameters")
        betas = (float(cfg.adam_betas[0]), float(cfg.adam_betas[1]))
        self.policy_optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            self.policy_params,
            lr=cfg.learning_rate,
            betas=betas,
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
                betas=betas,
                eps=cfg.adam_eps,
                weight_decay=cfg.critic_weight_decay,
            )

        self.policy_schedule = make_schedule(
            self.policy_optimizer, cfg.lr_scheduler_type, cfg.lr_warmup_iterations, cfg.total_iterations
        )
        self.critic_schedule = None
        if self.critic_optimizer is not None:
            self.critic_schedule = make_schedule(self.critic_optimizer, *cfg.critic_schedule, cfg.total_iterations)

        # the parts of an iteration
        self.engine = make_generation_engine(self.policy, cfg.generation)
        self.advantage_fn = self.estimator.build(cfg.estimator_options())
        self.collector = RolloutCollector(
            self.policy, self.critic, self.engine, self.rewards, self.dataset, cfg, self.estimator, self.advantage_fn
        )
        if cfg.prompt_truncation == "error":
            self.collector.check_prompt_lengths(self.dataset)

        # state
        self.sampler = PromptSampler(len(self.dataset), seed=cfg.seed, shuffle=cfg.shuffle)
        self.shuffle_generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.num_timesteps = 0
        self.iteration = 0
        self.last_metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.last_batch: RolloutBatch | None = None
        self._seeded = False
        if not self.dist.is_main:  # one voice: only rank 0 prints and writes logs
            self.run_log = RunLog(Logger(folder=None, output_formats=[]))
        elif logger is not None:
            self.run_log = RunLog(logger, folder=logger.get_dir())
        else:
            formats = logger_formats if logger_formats is not None else (["stdout"] if verbose else [])
            config_record = run_config.to_dict() if run_config is not None else to_dict(cfg)
            self.run_log = make_run_log(log_dir, formats, report_to, verbose, project, run_name, config_record)
        self.logger = self.run_log.logger

    # ------------------------------------------------------------------------------------------------------
    # construction from a run config or a checkpoint
    # ------------------------------------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        config: RunConfig | str | os.PathLike[str],
        checkpoint: str | None = None,
        verbose: int = 1,
        logger: Any = None,
    ) -> SPPOTrainer:
        """Build every component of a run and the trainer (what ``sppo-llm train`` does). The state of
        ``checkpoint`` is *not* loaded here (call :meth:`load_checkpoint`); only its saved in-process tokenizers
        are reused, so that token ids match.

        :param config: the run configuration, or the path of its YAML file (as ``sppo-llm train`` reads it)
        :param checkpoint: a checkpoint folder whose saved in-process tokenizers should be reused
        :param verbose: 0 silences stdout logging
        :param logger: an SB3 logger (default: SB3 ``configure(output_dir, train.logger)``)
        """
        if not isinstance(config, RunConfig):
            config = RunConfig.from_yaml(os.fspath(config))
        import_user_modules(config.imports)
        dataset = build_dataset(config.data, "train")
        eval_dataset = build_dataset(config.eval_data, "eval") if config.eval_data is not None else None
        rewards = build_rewards(config.reward, config.data.answer_column)
        tokenizer = saved_tokenizer(checkpoint, "tokenizer", config.policy.tokenizer)
        critic_tokenizer = None
        if config.critic.mode == "separate":
            critic_tokenizer = saved_tokenizer(checkpoint, "critic_tokenizer", config.critic.model.tokenizer)
        return cls(
            policy=config.policy,
            train_data=dataset,
            reward=rewards,
            critic=config.critic,
            config=config.trainer,
            eval_data=eval_dataset,
            tokenizer=tokenizer,
            critic_tokenizer=critic_tokenizer,
            logger=logger,
            log_dir=config.output_dir,
            logger_formats=list(config.train.logger),
            report_to=list(config.train.report_to),
            project=config.train.project,
            run_name=config.train.run_name,
            verbose=verbose,
            run_config=config,
        )

    @classmethod
    def from_pretrained(cls, path: str, verbose: int = 1) -> SPPOTrainer:
        """Rebuild a trainer and its state from a run folder (its ``final`` checkpoint, else its newest complete one)
        or a checkpoint folder, from the run config saved in it: one argument, nothing else to pass.

        :param path: ``runs/x``, ``runs/x/final`` or ``runs/x/checkpoints/checkpoint-100``
        :param verbose: 0 silences stdout logging
        :raises FileNotFoundError: no checkpoint there
        :raises ValueError: a checkpoint of a trainer built in code (no run config): use :meth:`load` with the parts
        """
        checkpoint = resolve_checkpoint(path)
        saved = read_checkpoint_config(checkpoint)
        if saved.get("run_config") is None:
            raise ValueError(
                f"{checkpoint} has no run config (the trainer was built in code): use SPPOTrainer.load(path, "
                "policy=..., train_data=..., reward=..., critic=...)"
            )
        config = RunConfig.from_dict(saved["run_config"])
        config.train.logger, config.train.report_to = [], []  # a reload writes no logs (train with --resume for that)
        trainer = cls.from_config(config, checkpoint=checkpoint, verbose=verbose)
        return trainer.load_checkpoint(checkpoint)

    @classmethod
    def load(cls, path: str, **components: Any) -> SPPOTrainer:
        """Rebuild a trainer from a checkpoint and restore its state.

        Without ``components`` the trainer is rebuilt from the run config stored in the checkpoint (trainers made
        by :meth:`from_config` / the CLI). Otherwise pass what the constructor needs (``policy``, ``train_data``,
        ``reward``, ``critic``, ...) built exactly as before; the stored
        :class:`~sppo_rl.llm.config.TrainerConfig` is used unless ``config`` is given.
        """
        saved = read_checkpoint_config(path)
        if not components:
            if saved.get("run_config") is None:
                raise ValueError(
                    f"{path} has no run config (the trainer was built in code): pass the components to "
                    "SPPOTrainer.load(path, policy=..., train_data=..., reward=..., critic=...)"
                )
            trainer = cls.from_config(RunConfig.from_dict(saved["run_config"]), checkpoint=path)
        else:
            components.setdefault("config", from_dict(TrainerConfig, saved["trainer_config"]))
            trainer = cls(**components)
        return trainer.load_checkpoint(path)

    # ------------------------------------------------------------------------------------------------------
    # set-up checks
    # ------------------------------------------------------------------------------------------------------

    def _check_components(self) -> None:
        cfg = self.config
        if self.estimator.needs_critic and self.critic is None:
            raise ValueError(
                f"The {cfg.estimator!r} estimator needs a critic: pass critic='shared', a critic model folder, or "
                "a CriticSpec (the paper's decoupled critic)"
            )
        critic = self.critic
        if (
            "values" in self.estimator.inputs
            and critic is not None
            and not critic.shared
            and not same_vocabulary(critic.tokenizer, self.policy.tokenizer)
        ):
            raise ValueError(
                f"The {cfg.estimator!r} estimator (token-level) reads a value at every response token, in the "
                "policy's tokens: use critic='shared' or a critic with the policy's tokenizer"
            )
        if cfg.kl_coef > 0 and not self.policy.has_lora:
            raise ValueError(
                "kl_coef > 0 needs a LoRA policy: the reference is the base model with the adapter disabled"
            )

    def _shard_models(self) -> None:
        """``distributed.strategy: fsdp``: shard the models trained in full (LoRA models stay replicated)."""
        if self.dist.strategy != "fsdp" or not self.dist.active:
            return
        critic = self.critic
        if critic is not None and not critic.shared and not hasattr(critic.backbone, "peft_config"):
            self.dist.shard(critic.backbone, "critic")
            self.dist.shard(critic.head, "critic value head", layers=False)
        if not self.policy.has_lora:
            decoder, head, _ = self.policy.parts
            self.dist.shard(decoder, "policy")
            self.dist.shard(head, "policy output head", layers=False)

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

    def _seed_everything(self) -> None:
        """Seed Python, NumPy and torch once, at the first iteration (a resumed run restores them instead)."""
        if self._seeded:
            return
        _seed_global(self.config.seed)
        self._seeded = True

    # ------------------------------------------------------------------------------------------------------
    # one iteration
    # ------------------------------------------------------------------------------------------------------

    def collect_rollout(self) -> RolloutBatch:
        """Sample, score, and compute log-probs, old critic values and advantages for the next prompts.

        On several ranks each rank collects its block of the step's prompts, the blocks are gathered, and the
        advantages are computed on the global batch (every rank returns the same batch).
        """
        indices = self.sampler.next(self.config.prompts_per_step)
        block = self.dist.block(len(indices))
        local = self.collector.collect(indices[block], iteration=self.iteration, first_prompt=block.start)
        critic_pad = self.critic.tokenizer.pad_token_id if self.critic is not None else 0
        batch = local.gather(self.dist, self.policy.tokenizer.pad_token_id, critic_pad)
        return self.collector.finish(batch)

    def train_critic(self, batch: RolloutBatch) -> dict[str, float]:
        """Update the critic on ``(prompt, R)`` pairs (or per-token returns for a step-level estimator)."""
        if self.critic is None or self.critic_optimizer is None:
            return {}
        return update_critic(
            self.critic,
            self.critic_optimizer,
            self.critic_params,
            batch,
            self.config,
            self.shuffle_generator,
            self.dist,
        )

    def train_policy(self, batch: RolloutBatch) -> dict[str, float]:
        """PPO epochs over mini-batches (one optimizer step each) of micro-batches (accumulated gradients)."""
        self.policy.use_policy_adapter()
        return update_policy(
            self.policy.model,
            self.policy_optimizer,
            self.policy_params,
            batch,
            self.config,
            self.shuffle_generator,
            self.collector.logprobs,
            self.dist,
        )

    def train_iteration(self) -> dict[str, float]:
        """Run one full iteration (rollout, critic update, policy update, engine sync) and return its metrics."""
        self._seed_everything()
        self.policy_optimizer.zero_grad(set_to_none=True)  # the last update's gradients are not kept through a rollout
        reset_peak_memory()
        t0 = time.perf_counter()
        batch = self.collect_rollout()
        t_rollout = time.perf_counter() - t0
        metrics = batch.metrics()
        metrics["memory/generation_peak_mb"] = batch.generation_peak_mb
        metrics["memory/rollout_peak_mb"] = peak_memory_mb(self.device)
        t1 = time.perf_counter()
        learning_rates = {"train/learning_rate": self.policy_optimizer.param_groups[0]["lr"]}
        if self.critic_optimizer is not None:
            learning_rates["train/critic_learning_rate"] = self.critic_optimizer.param_groups[0]["lr"]
        metrics.update(self.train_critic(batch))
        metrics["memory/critic_update_peak_mb"] = peak_memory_mb(self.device)
        if self.iteration >= self.config.critic_warmup:
            metrics.update(self.train_policy(batch))
            self.engine.sync_weights(self.policy)
        else:  # critic warm-up: the policy waits for a trained critic
            metrics["train/critic_warmup"] = 1.0
        with warnings.catch_warnings():  # a critic warm-up iteration steps the schedule without a policy step
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.policy_schedule.step()
            if self.critic_schedule is not None:
                self.critic_schedule.step()
        t_train = time.perf_counter() - t1
        self.num_timesteps += batch.size
        self.iteration += 1
        t_gen, t_score, t_logp = batch.timings
        elapsed = time.perf_counter() - t0
        n_tokens = float(batch.rollout.response_mask.sum())
        metrics.update(
            {
                **learning_rates,
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
        self.last_metrics = metrics
        self.history.append(metrics)
        self.last_batch = batch
        return metrics

    # ------------------------------------------------------------------------------------------------------
    # the loop
    # ------------------------------------------------------------------------------------------------------

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
        log_completions_interval: int | None = None,
        completions_to_log: int = 8,
    ) -> SPPOTrainer:
        """Train for ``total_steps`` more responses or ``n_iterations`` more iterations (SB3's ``learn``).

        :param total_steps: responses to sample (rounded up to whole iterations of
            ``prompts_per_step x samples_per_prompt``); ``total_timesteps`` is an alias
        :param n_iterations: iterations to run (wins over ``total_steps``)
        :param callback: SB3 callback(s) or ``fn(locals, globals) -> bool``; returning ``False`` stops training
        :param log_interval: dump the logger every this many iterations (and at the last one); a row holds the
            mean of each metric over the iterations since the previous row (as TRL's ``logging_steps``), the peak of
            the ``memory/*`` ones, and the latest value of counters, clocks, learning rates and evaluations
        :param progress_bar: show a ``tqdm`` progress bar (in responses)
        :param eval_interval: evaluate on ``eval_data`` every this many iterations (logged as ``eval/*``)
        :param save_interval: save a checkpoint to ``save_dir/checkpoint-<iteration>`` every this many iterations
        :param save_dir: checkpoint folder for ``save_interval``
        :param log_completions_interval: every this many iterations, log a sample of prompts, responses, outcomes,
            critic values and advantages (``completions.jsonl`` in the log folder, and a table in each tracker);
            evaluations log their samples too
        :param completions_to_log: how many sequences each completion log holds
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
        cb.init_callback(self)  # type: ignore[arg-type]  # SB3 callbacks read get_env, logger, num_timesteps
        cb.on_training_start(locals(), globals())
        bar = None
        if progress_bar and self.dist.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_iterations * per_iter, unit="resp", dynamic_ncols=True)
        start = time.perf_counter()
        start_steps = self.num_timesteps
        window: list[dict[str, float]] = []  # the iterations since the last logged row
        try:
            for i in range(n_iterations):
                cb.on_rollout_start()
                metrics = self.train_iteration()
                cb.update_locals({"metrics": metrics, "batch": self.last_batch})
                cb.on_rollout_end()
                if eval_interval and self.eval_dataset is not None and self.iteration % eval_interval == 0:
                    result = self.evaluate()
                    metrics.update({f"eval/{k}": v for k, v in result.items() if isinstance(v, float)})
                    self.run_log.completions(result["samples"], self.num_timesteps, table="eval_completions")
                if log_completions_interval and self.iteration % log_completions_interval == 0 and self.last_batch:
                    records = self.last_batch.completion_records(completions_to_log)
                    self.run_log.completions([{"iteration": self.iteration, **r} for r in records], self.num_timesteps)
                elapsed = time.perf_counter() - start
                metrics["time/time_elapsed"] = elapsed
                metrics["time/fps"] = (self.num_timesteps - start_steps) / max(elapsed, 1e-9)
                if bar is not None:
                    bar.update(per_iter)
                    bar.set_postfix(reward=f"{metrics['rollout/reward_mean']:.3f}")
                window.append(metrics)
                last = i == n_iterations - 1  # the last iteration of a call is always logged
                if log_interval and (self.iteration % log_interval == 0 or last):
                    for k, v in aggregate_log_window(window).items():
                        self.logger.record(k, v)
                    self.logger.dump(step=self.num_timesteps)
                    window = []
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
        n: int | None = None,
        group_by: str | Sequence[str] | None = None,
        rewards: RewardRunner | None = None,
        generation: GenerationSettings | None = None,
    ) -> dict[str, Any]:
        """avg@k, pass@k and maj@k on held-out prompts (see :func:`~sppo_rl.llm.evaluation.evaluate_policy`),
        sampled by the trainer's engine and sharded over the ranks. Defaults come from ``run_config.eval`` when the
        trainer was built from a run config.

        :param dataset: prompts (any source of :func:`~sppo_rl.llm.data.load_prompt_dataset`); default: the eval data
        :param k: the k of the metrics (default ``eval.k``, else 4)
        :param temperature: default ``eval.temperature``, else the training temperature
        :param max_new_tokens: default ``eval.max_new_tokens``, else the training limit
        :param max_prompts: evaluate the first prompts only (default ``eval.max_prompts``)
        :param batch_size: prompts per batch (default ``eval.batch_size``, else 64)
        :param seed: sampling seed (default ``eval.seed``, else 1234)
        :param n: samples per prompt (``>= k``; default ``k``)
        :param group_by: dataset column(s) to break the metrics down by
        :param rewards: the verifier (default: the trainer's)
        :param generation: sampling settings replacing the training ones (then ``temperature`` and
            ``max_new_tokens`` apply on top of them)
        """
        data = load_prompt_dataset(dataset) if dataset is not None else self.eval_dataset
        if data is None:
            raise ValueError("No evaluation data: pass a dataset or eval_data=... to the trainer")
        ev = self.run_config.eval if self.run_config is not None else None
        base = generation or self.config.generation
        gen = replace(
            base,
            temperature=temperature or (ev.temperature if ev and ev.temperature else base.temperature),
            max_new_tokens=max_new_tokens or (ev.max_new_tokens if ev and ev.max_new_tokens else base.max_new_tokens),
        )
        return evaluate_policy(
            self.policy,
            data,
            rewards if rewards is not None else self.rewards,
            k=k or (ev.k if ev else 4),
            generation=gen,
            max_prompt_length=self.config.max_prompt_length,
            prompt_truncation=self.config.prompt_truncation,
            chat_template=self.config.chat_template,
            max_prompts=max_prompts or (ev.max_prompts if ev else None),
            batch_size=batch_size or (ev.batch_size if ev else 64),
            seed=seed if seed is not None else (ev.seed if ev else 1234),
            engine=self.engine,
            n=n,
            group_by=group_by,
            dist=self.dist,
        )

    def close(self) -> None:
        """Finish the run: trackers end their runs and the reward worker processes stop."""
        self.run_log.close()
        self.rewards.close()

    def save(self, path: str) -> str:
        """Save adapter, critic, optimizers, RNG and counters to folder ``path`` (see
        :mod:`sppo_rl.llm.checkpoint`)."""
        return save_checkpoint(self, path)

    def load_checkpoint(self, path: str) -> SPPOTrainer:
        """Restore a checkpoint into this (identically built) trainer."""
        load_checkpoint(self, path)
        self.engine.sync_weights(self.policy)
        return self


def build_trainer(
    config: RunConfig, checkpoint: str | None = None, verbose: int = 1, logger: Any = None
) -> SPPOTrainer:
    """:meth:`SPPOTrainer.from_config` (the state of ``checkpoint`` is not loaded; only its tokenizers are reused)."""
    return SPPOTrainer.from_config(config, checkpoint=checkpoint, verbose=verbose, logger=logger)


def _seed_global(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
