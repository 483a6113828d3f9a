"""Sequence-Level PPO (SPPO, arXiv 2604.08865) as a stable-baselines3 algorithm.

One update, top to bottom (see :meth:`SPPO.collect_rollouts` and :meth:`SPPO.train`):

1. Collect **whole episodes** with the current policy: after ``n_steps`` steps per environment (or
   ``n_episodes`` finished episodes) keep stepping until every episode started before that point has ended.
   Episodes that start after that point are not recorded (the environments are reset before the next
   rollout), so no episode crosses two rollouts and short episodes are not favoured.
2. The outcome ``R`` of each episode: ``info["is_success"]`` at its last step when the env reports it,
   otherwise the summed reward, or ``outcome(episode_return, final_info)`` for a user callable.
3. ``V(s0)`` of every episode's start observation from the critic *before* this update;
   ``A = R - V(s0)`` (:func:`sppo_rl.objectives.sppo_advantages`), the same ``A`` for every step.
4. For ``n_epochs``, over minibatches of ``batch_episodes`` whole episodes: a critic step (the value head's
   loss on start observations and outcomes, with the critic's own optimizer and learning rate) and an actor
   step (:func:`sppo_rl.objectives.clipped_policy_loss` with per-step ratios).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, explained_variance, obs_as_tensor, update_learning_rate
from stable_baselines3.common.vec_env import VecEnv

from sppo_rl.buffers import EpisodeRolloutBuffer
from sppo_rl.objectives import (
    ADVANTAGE_ESTIMATORS,
    LOSS_AGG_MODES,
    AdvantageEstimator,
    aggregate_loss,
    broadcast_to_steps,
    clipped_policy_loss,
    get_advantage_estimator,
    whiten_advantages,
)
from sppo_rl.policies import CnnPolicy, MlpPolicy, MultiInputPolicy, SPPOPolicy
from sppo_rl.value_heads import BernoulliValueHead, OutcomeError, ValueHead, brier_score

__all__ = ["SPPO", "EpisodeLengthError"]

SelfSPPO = TypeVar("SelfSPPO", bound="SPPO")
logger = logging.getLogger(__name__)

OutcomeFn = Callable[[float, dict[str, Any]], float]
SUPPORTED_ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
SUPPORTED_OBSERVATION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
CONTROL_INPUTS = frozenset({"outcomes", "baselines"})
"""What a control rollout gives an advantage estimator: each episode's outcome and the critic's ``V(s0)``."""


class EpisodeLengthError(RuntimeError):
    """An episode ran longer than ``max_episode_steps``: SPPO needs episodes that end."""


def _check_space(space: spaces.Space, allowed: tuple[type[spaces.Space], ...], what: str) -> None:
    if what == "observation" and isinstance(space, spaces.Dict):
        for key, sub in space.spaces.items():
            if isinstance(sub, spaces.Dict):
                raise ValueError(f"Nested Dict observation spaces are not supported (key {key!r})")
            _check_space(sub, allowed, f"observation[{key!r}]")
        return
    if not isinstance(space, allowed):
        names = ", ".join(s.__name__ for s in allowed)
        extra = " or Dict of those" if what == "observation" else ""
        raise ValueError(f"SPPO does not support the {what} space {space}; supported: {names}{extra}")


class SPPO(OnPolicyAlgorithm):
    """Sequence-Level PPO: PPO's clipped update with one advantage per episode, ``A = R - V(s0)``.

    The critic reads only the start observation of an episode and predicts its outcome; every step of the
    episode gets the same advantage. Suited to tasks with a sparse, verifiable outcome (success or failure
    at the end), where step-level critics struggle over long horizons.

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or a :class:`SPPOPolicy` subclass
    :param env: the environment (a gymnasium id, an env or a VecEnv); its episodes must end
    :param learning_rate: actor learning rate (float or schedule of the remaining progress, 1 -> 0)
    :param critic_learning_rate: critic learning rate (float or schedule); ``None``: same as the actor's
    :param n_steps: minimum number of steps per environment per rollout (then open episodes are finished)
    :param n_episodes: if set, collect until at least this many episodes have ended instead of ``n_steps``
    :param batch_episodes: number of whole episodes per minibatch
    :param n_epochs: passes over the rollout per update
    :param clip_range: PPO clip range ``eps`` (float or schedule); the lower bound with ``clip_range_high``
    :param clip_range_high: upper clip range for an asymmetric clip ``[1 - eps, 1 + eps_high]``; ``None``: same
    :param dual_clip: dual-clip constant for negative advantages (the SPPO reference uses 3.0), ``None``: off
    :param log_ratio_clamp: clamp of the log-ratio before the exponential (reference: 20), ``None``: off
    :param ent_coef: entropy bonus coefficient
    :param max_grad_norm: gradient clipping for the actor and the critic
    :param target_kl: stop the epoch loop when the approximate KL exceeds ``1.5 * target_kl``; ``None``: off
    :param normalize_advantage: whiten the per-episode advantages over the rollout (off in the reference)
    :param loss_agg_mode: ``"token-mean"``, ``"seq-mean-token-mean"`` or ``"seq-mean-token-sum"``
        (see :data:`sppo_rl.objectives.LOSS_AGG_MODES`)
    :param advantage_estimator: a sequence-level estimator of :mod:`sppo_rl.objectives`' registry that reads only
        the outcomes and the start-state critic: ``"sppo"`` (``R - V(s0)``), ``"none"`` (``R``), ``"batch_mean"``
        (``R - mean``), ``"ema"`` (``R -`` moving average of past outcomes), or one you registered
    :param advantage_estimator_kwargs: options of the estimator (e.g. ``{"decay": 0.99}`` for ``"ema"``)
    :param value_head: ``"auto"``, ``"bernoulli"``, ``"gaussian"``, a ``ValueHead`` subclass or instance.
        ``"auto"`` picks Bernoulli when the episodes' outcome is ``info["is_success"]`` and Gaussian otherwise,
        logs its choice and stores it in :attr:`value_head`
    :param outcome: ``"auto"`` (``info["is_success"]`` if the env reports it at the end of the episode, else
        the summed reward), ``"success"``, ``"return"``, or a callable ``(episode_return, final_info) -> float``
    :param max_episode_steps: an episode longer than this raises :class:`EpisodeLengthError`
    :param stats_window_size: episodes averaged in the ``rollout/`` logs
    :param tensorboard_log: TensorBoard log folder, or ``None``
    :param policy_kwargs: passed to the policy (``net_arch``, ``activation_fn``, ``value_head_kwargs``, ...)
    :param verbose: 0 none, 1 info, 2 debug
    :param seed: random seed
    :param device: ``"auto"``, ``"cpu"``, ``"cuda"``...
    :param _init_setup_model: build the networks now (SB3 internals)
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: SPPOPolicy
    rollout_buffer: EpisodeRolloutBuffer  # type: ignore[assignment]

    def __init__(
        self,
        policy: str | type[SPPOPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        critic_learning_rate: float | Schedule | None = 1e-3,
        n_steps: int = 2048,
        n_episodes: int | None = None,
        batch_episodes: int = 8,
        n_epochs: int = 10,
        clip_range: float | Schedule = 0.2,
        clip_range_high: float | None = None,
        dual_clip: float | None = 3.0,
        log_ratio_clamp: float | None = 20.0,
        ent_coef: float = 0.0,
        max_grad_norm: float = 0.5,
        target_kl: float | None = None,
        normalize_advantage: bool = False,
        loss_agg_mode: str = "token-mean",
        advantage_estimator: str = "sppo",
        advantage_estimator_kwargs: dict[str, Any] | None = None,
        value_head: str | type[ValueHead] | ValueHead = "auto",
        outcome: str | OutcomeFn = "auto",
        max_episode_steps: int = 10_000,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        policy_kwargs = dict(policy_kwargs or {})
        if policy_kwargs.get("use_sde"):
            raise ValueError("SPPO does not support gSDE (use_sde=True); use the default Gaussian exploration")
        policy_kwargs.pop("use_sde", None)
        if isinstance(env, gym.Env | VecEnv):
            # refuse unsupported spaces before SB3 tries to wrap the env
            _check_space(env.observation_space, SUPPORTED_OBSERVATION_SPACES, "observation")
            _check_space(env.action_space, SUPPORTED_ACTION_SPACES, "action")
        if "value_head" in policy_kwargs:
            if not (isinstance(value_head, str) and value_head == "auto") and policy_kwargs["value_head"] != value_head:
                raise ValueError("value_head is given both as an argument and in policy_kwargs, with different values")
            value_head = policy_kwargs["value_head"]
        policy_kwargs["value_head"] = value_head
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=1.0,
            gae_lambda=1.0,
            ent_coef=ent_coef,
            vf_coef=0.0,
            max_grad_norm=max_grad_norm,
            use_sde=False,
            sde_sample_freq=-1,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=None,
        )
        self.critic_learning_rate = learning_rate if critic_learning_rate is None else critic_learning_rate
        self.n_episodes = n_episodes
        self.batch_episodes = batch_episodes
        self.n_epochs = n_epochs
        self.clip_range = clip_range
        self.clip_range_high = clip_range_high
        self.dual_clip = dual_clip
        self.log_ratio_clamp = log_ratio_clamp
        self.target_kl = target_kl
        self.normalize_advantage = normalize_advantage
        self.loss_agg_mode = loss_agg_mode
        self.advantage_estimator = advantage_estimator
        self.advantage_estimator_kwargs = dict(advantage_estimator_kwargs or {})
        self.advantage_fn: Callable[..., th.Tensor] | None = None
        self.value_head = value_head
        self.outcome = outcome
        self.max_episode_steps = max_episode_steps
        self.num_episodes = 0
        self._needs_reset = False
        self._check_arguments()
        if self.env is not None:
            _check_space(self.observation_space, SUPPORTED_OBSERVATION_SPACES, "observation")
            _check_space(self.action_space, SUPPORTED_ACTION_SPACES, "action")
        if _init_setup_model:
            self._setup_model()

    def _check_arguments(self) -> None:
        if self.n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {self.n_steps}")
        if self.n_episodes is not None and self.n_episodes < 1:
            raise ValueError(f"n_episodes must be >= 1 or None, got {self.n_episodes}")
        if self.batch_episodes < 1:
            raise ValueError(f"batch_episodes must be >= 1, got {self.batch_episodes}")
        if self.n_epochs < 1:
            raise ValueError(f"n_epochs must be >= 1, got {self.n_epochs}")
        if self.loss_agg_mode not in LOSS_AGG_MODES:
            raise ValueError(f"Unknown loss_agg_mode {self.loss_agg_mode!r}; choose one of {', '.join(LOSS_AGG_MODES)}")
        estimator = get_advantage_estimator(self.advantage_estimator)
        if not _usable_for_control(estimator):
            usable = ", ".join(repr(e.name) for e in ADVANTAGE_ESTIMATORS.values() if _usable_for_control(e))
            needs = sorted(set(estimator.inputs) - CONTROL_INPUTS)
            raise ValueError(
                f"advantage_estimator {self.advantage_estimator!r} cannot run on control episodes: it is "
                f"{estimator.level}-level and needs {needs or 'several samples of one context'} (group estimators "
                f"and greedy baselines need several samples of one context: see sppo_rl.llm). Usable here: {usable}"
            )
        estimator.check_options(self.advantage_estimator_kwargs)
        if not (callable(self.outcome) or self.outcome in ("auto", "success", "return")):
            raise ValueError(f"outcome must be 'auto', 'success', 'return' or a callable, got {self.outcome!r}")
        if self.dual_clip is not None and self.dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1.0 or None, got {self.dual_clip}")
        if self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {self.max_episode_steps}")

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.critic_lr_schedule = FloatSchedule(self.critic_learning_rate)
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, use_sde=False, **self.policy_kwargs
        )
        if not isinstance(self.policy, SPPOPolicy):
            raise TypeError(f"SPPO needs an SPPOPolicy, got {type(self.policy).__name__}")
        self.policy = self.policy.to(self.device)
        update_learning_rate(self.policy.critic_optimizer, self.critic_lr_schedule(1.0))
        self.rollout_buffer = EpisodeRolloutBuffer(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.n_envs, device=self.device
        )
        self.clip_range = FloatSchedule(self.clip_range)
        if self.advantage_fn is None:  # a loaded model keeps its own (a stateful estimator's state with it)
            self.advantage_fn = get_advantage_estimator(self.advantage_estimator).build(self.advantage_estimator_kwargs)
        self._maybe_recommend_cpu("SPPOPolicy")

    # ---- outcome ------------------------------------------------------------------------------------------

    @property
    def outcome_source(self) -> str:
        """``"success"``, ``"return"``, ``"callable"``, or ``"auto"`` until the first episode has ended."""
        return "callable" if callable(self.outcome) else str(self.outcome)

    def _resolve_auto(self, final_info: dict[str, Any]) -> None:
        """Fix ``outcome="auto"`` and ``value_head="auto"`` from the first finished episode."""
        if self.outcome == "auto":
            self.outcome = "success" if "is_success" in final_info else "return"
        if isinstance(self.value_head, str) and self.value_head == "auto":
            chosen = "bernoulli" if self.outcome == "success" else "gaussian"
            self.policy.set_value_head(chosen)
            update_learning_rate(
                self.policy.critic_optimizer, self.critic_lr_schedule(self._current_progress_remaining)
            )
            self.value_head = chosen
            self.policy_kwargs["value_head"] = chosen
            reason = (
                "episodes report info['is_success']"
                if self.outcome == "success"
                else f"outcome is {self.outcome_source!r}, a real value"
            )
            message = f"SPPO: value_head='auto' chose {chosen!r} ({reason}); outcome={self.outcome_source!r}"
            logger.info(message)
            if self.verbose >= 1:
                print(message)

    def _episode_outcome(self, env_idx: int, episode_return: float, final_info: dict[str, Any]) -> float:
        if self.outcome == "auto" or (isinstance(self.value_head, str) and self.value_head == "auto"):
            self._resolve_auto(final_info)
        if callable(self.outcome):
            value = float(self.outcome(episode_return, final_info))
        elif self.outcome == "success":
            if "is_success" not in final_info:
                raise OutcomeError(
                    f"Env {env_idx} ended an episode without info['is_success'] but the outcome is "
                    "'success' (earlier episodes reported it, or outcome='success' was asked for). "
                    "Report it at every episode end, or pass outcome='return' or a callable."
                )
            value = float(final_info["is_success"])
        else:
            value = float(episode_return)
        if not math.isfinite(value):
            raise OutcomeError(f"Env {env_idx} ended an episode with a non-finite outcome ({value})")
        try:
            self.policy.critic.head.check_outcomes(th.tensor([value]))
        except OutcomeError as err:
            raise OutcomeError(f"Env {env_idx}: {err}") from err
        return value

    # ---- collection ---------------------------------------------------------------------------------------

    def _rollout_threshold_reached(self, n_vector_steps: int, buffer: EpisodeRolloutBuffer) -> bool:
        if self.n_episodes is not None:
            return buffer.n_episodes >= self.n_episodes
        return n_vector_steps >= self.n_steps

    def collect_rollouts(  # type: ignore[override]
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: EpisodeRolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """Collect whole episodes (see the module docstring); returns False if a callback stopped training."""
        assert self._last_obs is not None, "No previous observation was provided"
        action_shape: tuple[int, ...] = tuple(self.action_space.shape or ())
        self.policy.set_training_mode(False)
        if self._needs_reset:
            # the previous rollout dropped unfinished episodes: start every env on a fresh episode
            self._last_obs = env.reset()  # type: ignore[assignment]
            self._last_episode_starts = np.ones((env.num_envs,), dtype=bool)
            self._needs_reset = False
        rollout_buffer.reset()
        vec_normalize = self.get_vec_normalize_env()
        n_envs = env.num_envs
        episode_return = np.zeros(n_envs, dtype=np.float64)
        episode_length = np.zeros(n_envs, dtype=np.int64)
        # True for envs whose open episode began before the rollout threshold: we wait for those to end
        required = np.ones(n_envs, dtype=bool)
        threshold_reached = False
        n_vector_steps = 0
        n_unrecorded = 0
        callback.on_rollout_start()

        while not (threshold_reached and not required.any()):
            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                distribution = self.policy.get_distribution(obs_tensor)
                actions_t = distribution.get_actions()
                log_probs = distribution.log_prob(actions_t)
            actions = actions_t.cpu().numpy().reshape((-1, *action_shape))
            env_actions = actions
            if isinstance(self.action_space, spaces.Box):
                env_actions = np.clip(actions, self.action_space.low, self.action_space.high)

            new_obs, rewards, dones, infos = env.step(env_actions)
            self.num_timesteps += n_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)

            # Only episodes that began before the threshold are recorded: keeping later ones only when they
            # happen to end early would bias the sample towards short episodes.
            rollout_buffer.add(self._last_obs, actions, log_probs.cpu().numpy(), required)  # type: ignore[arg-type]
            n_unrecorded += int(n_envs - required.sum())
            raw_rewards = vec_normalize.get_original_reward() if vec_normalize is not None else rewards
            episode_return += raw_rewards
            episode_length += 1
            n_vector_steps += 1
            threshold_reached = threshold_reached or self._rollout_threshold_reached(n_vector_steps, rollout_buffer)
            for env_idx in np.flatnonzero(dones):
                outcome = self._episode_outcome(int(env_idx), float(episode_return[env_idx]), infos[env_idx])
                rollout_buffer.end_episode(int(env_idx), outcome)
                episode_return[env_idx] = 0.0
                episode_length[env_idx] = 0
                threshold_reached = threshold_reached or self._rollout_threshold_reached(n_vector_steps, rollout_buffer)
                # the episode that starts now is waited for only if it began before the threshold
                required[env_idx] = not threshold_reached
            too_long = np.flatnonzero(episode_length > self.max_episode_steps)
            if too_long.size:
                raise EpisodeLengthError(
                    f"Env {int(too_long[0])} has run more than max_episode_steps={self.max_episode_steps} steps "
                    "without ending its episode. SPPO needs episodes that end: add a time limit "
                    "(gymnasium.make(id, max_episode_steps=N) or gymnasium.wrappers.TimeLimit) or raise the "
                    "bound with SPPO(..., max_episode_steps=N)."
                )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones

        n_unrecorded += rollout_buffer.discard_open()  # nothing is left open here; kept as a safeguard
        self._needs_reset = bool(np.any(episode_length > 0))
        self.num_episodes += rollout_buffer.n_episodes
        self.logger.record("rollout/episodes", rollout_buffer.n_episodes)
        self.logger.record("rollout/discarded_steps", n_unrecorded)
        self.logger.record("time/total_episodes", self.num_episodes)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    # ---- update -------------------------------------------------------------------------------------------

    def train(self) -> None:
        """One SPPO update on the collected episodes (critic and actor, ``n_epochs`` passes)."""
        self.policy.set_training_mode(True)
        progress = self._current_progress_remaining
        self._update_learning_rate(self.policy.optimizer)
        critic_lr = self.critic_lr_schedule(progress)
        update_learning_rate(self.policy.critic_optimizer, critic_lr)
        clip_range = float(self.clip_range(progress))  # type: ignore[operator]

        buffer = self.rollout_buffer
        buffer.finalize()
        critic = self.policy.critic
        outcomes = th.as_tensor(buffer.outcomes, device=self.device)
        # Baselines from the critic before this update (no gradient), then the per-episode advantages.
        with th.no_grad():
            baselines = critic.baseline(buffer.start_observations_tensor()).to(outcomes.dtype)
        estimator = get_advantage_estimator(self.advantage_estimator)
        assert self.advantage_fn is not None, "the model was not set up (_setup_model)"
        advantages = self.advantage_fn(**estimator.select_inputs({"outcomes": outcomes, "baselines": baselines}))
        if self.normalize_advantage and advantages.numel() > 1:
            advantages = whiten_advantages(advantages)
        buffer.set_advantages(advantages)
        critic.head.update_statistics(outcomes)

        actor_params, critic_params = self.policy.actor_parameters(), self.policy.critic_parameters()
        actor_optimizer, critic_optimizer = self.policy.optimizer, self.policy.critic_optimizer
        pg_losses, value_losses, entropy_losses, clip_fractions, approx_kls = [], [], [], [], []
        continue_training = True
        for epoch in range(self.n_epochs):
            for batch in buffer.iter_minibatches(self.batch_episodes):
                value_loss = critic.loss(batch.start_observations, batch.outcomes)
                log_prob, entropy = self.policy.log_prob_and_entropy(batch.observations, batch.actions)
                policy_out = clipped_policy_loss(
                    batch.to_padded(log_prob),
                    batch.to_padded(batch.old_log_probs),
                    broadcast_to_steps(batch.advantages, batch.mask),
                    batch.mask,
                    clip_range=clip_range,
                    clip_range_high=self.clip_range_high,
                    dual_clip=self.dual_clip,
                    log_ratio_clamp=self.log_ratio_clamp,
                    loss_agg_mode=self.loss_agg_mode,
                )
                step_entropy = -log_prob if entropy is None else entropy
                entropy_loss = -aggregate_loss(batch.to_padded(step_entropy), batch.mask, self.loss_agg_mode)
                approx_kl = float(policy_out.approx_kl)
                approx_kls.append(approx_kl)
                if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at epoch {epoch} due to reaching max kl: {approx_kl:.3f}")
                    break
                # The actor and critic graphs are disjoint: one backward pass fills both sets of gradients,
                # then each network is clipped and stepped by its own optimizer.
                actor_optimizer.zero_grad()
                critic_optimizer.zero_grad()
                (policy_out.loss + self.ent_coef * entropy_loss + value_loss).backward()
                th.nn.utils.clip_grad_norm_(critic_params, self.max_grad_norm)
                th.nn.utils.clip_grad_norm_(actor_params, self.max_grad_norm)
                critic_optimizer.step()
                actor_optimizer.step()
                value_losses.append(value_loss.item())
                pg_losses.append(policy_out.loss.item())
                entropy_losses.append(entropy_loss.item())
                clip_fractions.append(float(policy_out.clip_fraction))
            self._n_updates += 1
            if not continue_training:
                break

        baselines_np = baselines.cpu().numpy()
        self.logger.record("train/policy_gradient_loss", _mean(pg_losses))
        self.logger.record("train/value_loss", _mean(value_losses))
        self.logger.record("train/entropy_loss", _mean(entropy_losses))
        self.logger.record("train/approx_kl", _mean(approx_kls))
        self.logger.record("train/clip_fraction", _mean(clip_fractions))
        self.logger.record("train/explained_variance", explained_variance(baselines_np, buffer.outcomes))
        self.logger.record("train/value_mean", float(baselines_np.mean()))
        self.logger.record("train/outcome_mean", float(buffer.outcomes.mean()))
        self.logger.record("train/advantage_abs_mean", float(np.abs(buffer.advantages).mean()))
        if isinstance(critic.head, BernoulliValueHead):
            self.logger.record("train/value_brier", brier_score(baselines, outcomes))
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        self.logger.record("train/critic_learning_rate", critic_lr)
        self.logger.record("train/steps", buffer.n_steps_total)

    def learn(
        self: SelfSPPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "SPPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfSPPO:
        """Train for at least ``total_timesteps`` environment steps (a rollout always finishes its episodes).

        :param total_timesteps: environment steps to train for (all envs together)
        :param callback: SB3 callback(s)
        :param log_interval: dump logs every this many rollouts
        :param tb_log_name: TensorBoard run name
        :param reset_num_timesteps: reset the step counter (and the environments)
        :param progress_bar: show a progress bar (needs ``tqdm`` and ``rich``)
        :return: the trained model
        """
        if reset_num_timesteps:
            self.num_episodes = 0
            self._needs_reset = False
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer", "policy.critic_optimizer"], []

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_needs_reset"]


def _usable_for_control(estimator: AdvantageEstimator) -> bool:
    """Sequence level, reads only outcomes and ``V(s0)``, one sample per context."""
    return (
        estimator.sequence_level and set(estimator.inputs) <= CONTROL_INPUTS and estimator.min_samples_per_context <= 1
    )


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")
