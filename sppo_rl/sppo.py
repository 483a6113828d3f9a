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

import io
import logging
import math
import numbers
import pathlib
import warnings
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

from sppo_rl.arguments import PPO_KEYWORDS, check_arguments, check_ppo_keywords
from sppo_rl.buffers import EpisodeMinibatch, EpisodeRolloutBuffer, first_non_finite
from sppo_rl.objectives import (
    PolicyLossOutput,
    aggregate_loss,
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
    :param clip_range: PPO clip range ``eps`` (float or schedule); the lower bound with ``clip_range_high``. A
        schedule that reaches 0 (linear to 0) makes the last updates train the critic only (no policy change)
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
    :param policy_kwargs: passed to the policy (``net_arch``, ``activation_fn``, ``value_head_kwargs``, ...): every
        argument of SB3's ``ActorCriticPolicy`` works as for PPO, except gSDE and ``share_features_extractor=True``
        (see :class:`SPPOPolicy`)
    :param verbose: 0 none, 1 info, 2 debug
    :param seed: random seed
    :param device: ``"auto"``, ``"cpu"``, ``"cuda"``...
    :param rollout_buffer_class: the episode buffer: :class:`~sppo_rl.buffers.EpisodeRolloutBuffer` (``None``) or a
        subclass (SB3's step-block buffers cannot hold whole episodes)
    :param rollout_buffer_kwargs: extra keyword arguments of the buffer
    :param batch_size: PPO's minibatch size in steps; refused: SPPO's minibatches are ``batch_episodes`` whole
        episodes
    :param gamma: PPO's discount; SPPO's outcome is undiscounted, so 1.0 (the default) is its meaning and any other
        value is ignored with a warning
    :param gae_lambda: PPO's GAE lambda; SPPO has no GAE (every step gets ``R - V(s0)``): 1.0 is its meaning and
        any other value is ignored with a warning
    :param vf_coef: PPO's value-loss weight; ignored with a warning (SPPO's critic has its own optimizer: use
        ``critic_learning_rate``)
    :param clip_range_vf: PPO's value clipping; ignored with a warning (SPPO's critic is not clipped)
    :param use_sde: gSDE; False only
    :param sde_sample_freq: a gSDE option; ignored with a warning unless -1 (the default)
    :param _init_setup_model: build the networks now (SB3 internals)
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    ppo_only_keywords: ClassVar[dict[str, str]] = {name: keyword.reason for name, keyword in PPO_KEYWORDS.items()}
    """Keywords taken only so that a call written for PPO works (warned about or refused), with what SPPO does
    instead (see docs/sppo.md, "Coming from PPO")."""
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
        rollout_buffer_class: type[EpisodeRolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        batch_size: int | None = None,
        gamma: float = 1.0,
        gae_lambda: float = 1.0,
        vf_coef: float | None = None,
        clip_range_vf: float | Schedule | None = None,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        _init_setup_model: bool = True,
    ) -> None:
        check_ppo_keywords(
            dict(batch_size=batch_size, use_sde=use_sde, gamma=gamma, gae_lambda=gae_lambda, vf_coef=vf_coef,
                 clip_range_vf=clip_range_vf, sde_sample_freq=sde_sample_freq)
        )  # fmt: skip
        check_arguments(
            dict(learning_rate=learning_rate, critic_learning_rate=critic_learning_rate, n_steps=n_steps,
                 n_episodes=n_episodes, batch_episodes=batch_episodes, n_epochs=n_epochs, clip_range=clip_range,
                 clip_range_high=clip_range_high, dual_clip=dual_clip, log_ratio_clamp=log_ratio_clamp,
                 ent_coef=ent_coef, max_grad_norm=max_grad_norm, target_kl=target_kl,
                 normalize_advantage=normalize_advantage, loss_agg_mode=loss_agg_mode,
                 advantage_estimator=advantage_estimator, advantage_estimator_kwargs=advantage_estimator_kwargs,
                 value_head=value_head, outcome=outcome, max_episode_steps=max_episode_steps,
                 stats_window_size=stats_window_size, tensorboard_log=tensorboard_log, policy_kwargs=policy_kwargs,
                 verbose=verbose, seed=seed, device=device, rollout_buffer_class=rollout_buffer_class,
                 rollout_buffer_kwargs=rollout_buffer_kwargs)
        )  # fmt: skip
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
            check_arguments({"value_head": policy_kwargs["value_head"]})
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
            rollout_buffer_class=rollout_buffer_class or EpisodeRolloutBuffer,  # type: ignore[arg-type]
            rollout_buffer_kwargs=rollout_buffer_kwargs,
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
        if self.env is not None:
            _check_space(self.observation_space, SUPPORTED_OBSERVATION_SPACES, "observation")
            _check_space(self.action_space, SUPPORTED_ACTION_SPACES, "action")
            _warn_time_limit_before_horizon(self.env)
        if _init_setup_model:
            self._setup_model()

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
        # None in files saved before SPPO took rollout_buffer_class
        buffer_class: type[EpisodeRolloutBuffer] = self.rollout_buffer_class or EpisodeRolloutBuffer  # type: ignore[assignment]
        self.rollout_buffer = buffer_class(
            self.observation_space, self.action_space, self.n_envs, device=self.device, **self.rollout_buffer_kwargs
        )
        self.clip_range = FloatSchedule(self.clip_range)
        if self.advantage_fn is None:  # a loaded model keeps its own (a stateful estimator's state with it)
            self.advantage_fn = get_advantage_estimator(self.advantage_estimator).build(self.advantage_estimator_kwargs)
        self._maybe_recommend_cpu("SPPOPolicy")

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """SB3's ``set_env``, with SPPO's check of the env's time limit (see :func:`_warn_time_limit_before_horizon`).

        :param env: the new environment
        :param force_reset: reset it before the next rollout
        """
        super().set_env(env, force_reset=force_reset)
        assert self.env is not None
        _warn_time_limit_before_horizon(self.env)

    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        # A rollout finishes its episodes, so the last one can overshoot total_timesteps: schedules are defined
        # on [0, 1], and a linear one must not turn negative (a negative learning rate ascends the loss).
        super()._update_current_progress_remaining(num_timesteps, total_timesteps)
        self._current_progress_remaining = max(0.0, self._current_progress_remaining)

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
            value = _callable_outcome(self.outcome, env_idx, episode_return, final_info)
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
        """Collect whole episodes (see the module docstring); returns False if a callback stopped training.

        The buffer is finalized here, so callbacks see the rollout's episodes at ``on_rollout_end``.
        """
        assert self._last_obs is not None, "No previous observation was provided"
        policy = self.policy
        policy.set_training_mode(False)
        if self._needs_reset:
            # the previous rollout dropped unfinished episodes: start every env on a fresh episode
            self._last_obs = env.reset()  # type: ignore[assignment]
            self._last_episode_starts = np.ones((env.num_envs,), dtype=bool)
            self._needs_reset = False
        rollout_buffer.reset()
        vec_normalize = self.get_vec_normalize_env()
        n_envs = env.num_envs
        # a Gaussian's samples are clipped to the Box before they reach the env (the buffer keeps them unclipped)
        bounds = (self.action_space.low, self.action_space.high) if isinstance(self.action_space, spaces.Box) else None
        on_cpu = self.device.type == "cpu"
        episode_return = np.zeros(n_envs, dtype=np.float64)
        # rollout_buffer.recording[i]: env i's open episode began before the rollout threshold, so it is recorded
        # and waited for; episodes that begin later are neither (keeping them only when they happen to end in
        # time would bias the sample towards short episodes)
        threshold_reached = False
        n_vector_steps = 0
        oldest_begin = 0  # the earliest step at which an open episode began
        callback.on_rollout_start()

        while not (threshold_reached and not rollout_buffer.recording.any()):
            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                try:
                    actions_t, log_probs_t = policy.sample_actions(obs_tensor)
                except RuntimeError:  # torch.multinomial on NaN logits: a NaN observation or diverged weights
                    self._raise_if_non_finite(self._last_obs, n_vector_steps)  # type: ignore[arg-type]
                    self._raise_if_diverged()
                    raise
            actions = actions_t.numpy() if on_cpu else actions_t.cpu().numpy()
            log_probs = log_probs_t.numpy() if on_cpu else log_probs_t.cpu().numpy()
            env_actions = actions if bounds is None else np.clip(actions, *bounds)

            new_obs, rewards, dones, infos = env.step(env_actions)
            self.num_timesteps += n_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False

            rollout_buffer.add(self._last_obs, actions, log_probs)  # type: ignore[arg-type]
            episode_return += vec_normalize.get_original_reward() if vec_normalize is not None else rewards
            n_vector_steps += 1
            if not threshold_reached:
                threshold_reached = self._rollout_threshold_reached(n_vector_steps, rollout_buffer)
            if dones.any():
                ended = np.flatnonzero(dones)
                self._update_info_buffer([infos[i] for i in ended], dones[ended])
                for env_idx in ended:
                    outcome = self._episode_outcome(int(env_idx), float(episode_return[env_idx]), infos[env_idx])
                    rollout_buffer.end_episode(int(env_idx), outcome)
                    episode_return[env_idx] = 0.0
                    if not threshold_reached:
                        threshold_reached = self._rollout_threshold_reached(n_vector_steps, rollout_buffer)
                    # the episode that starts now is recorded (and waited for) only if it began before the threshold
                    rollout_buffer.recording[env_idx] = not threshold_reached
                oldest_begin = int(rollout_buffer.episode_begin.min())
            if n_vector_steps - oldest_begin > self.max_episode_steps:
                stuck = int(np.argmin(rollout_buffer.episode_begin))
                raise EpisodeLengthError(
                    f"Env {stuck} has run more than max_episode_steps={self.max_episode_steps} steps "
                    "without ending its episode. SPPO needs episodes that end: add a time limit "
                    "(gymnasium.make(id, max_episode_steps=N) or gymnasium.wrappers.TimeLimit) or raise the "
                    "bound with SPPO(..., max_episode_steps=N)."
                )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones

        self._needs_reset = bool(np.any(rollout_buffer.episode_begin < n_vector_steps))
        rollout_buffer.finalize()
        self.num_episodes += rollout_buffer.n_episodes
        self.logger.record("rollout/episodes", rollout_buffer.n_episodes)
        self.logger.record("rollout/discarded_steps", n_vector_steps * n_envs - rollout_buffer.n_steps_total)
        self.logger.record("time/total_episodes", self.num_episodes)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _raise_if_diverged(self) -> None:
        for name, parameter in self.policy.named_parameters():
            if not th.isfinite(parameter).all():
                raise RuntimeError(
                    f"The policy's parameter {name} is not finite: training diverged at an update (try a lower "
                    "learning_rate or max_grad_norm, or check the rewards)"
                )

    def _raise_if_non_finite(self, obs: np.ndarray | dict[str, np.ndarray], step: int) -> None:
        bad = first_non_finite(obs, n_leading=1)
        if bad is not None:
            (env_idx,), key, value = bad
            where = "" if key is None else f" (key {key!r})"
            raise ValueError(
                f"Env {env_idx} returned a non-finite observation{where} ({value}) at step {step} of the rollout: "
                "check the environment (stable_baselines3's VecCheckNan finds the step that produced it)"
            )

    # ---- update -------------------------------------------------------------------------------------------

    def train(self) -> None:
        """One SPPO update on the collected episodes (critic and actor, ``n_epochs`` passes)."""
        self.policy.set_training_mode(True)
        progress = self._current_progress_remaining
        self._update_learning_rate(self.policy.optimizer)
        critic_lr = self.critic_lr_schedule(progress)
        update_learning_rate(self.policy.critic_optimizer, critic_lr)
        clip_range = float(self.clip_range(progress))  # type: ignore[operator]
        # A clip-range schedule that has reached 0 (e.g. linear to 0, at the end of training) allows no change of
        # the policy, PPO's limit for eps -> 0: the update then trains the critic only.
        train_actor = clip_range > 0.0

        buffer = self.rollout_buffer
        if not buffer.finalized:  # collect_rollouts finalizes; a buffer filled by hand may not be
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
        all_params, max_grad_norm = actor_params + critic_params, self.max_grad_norm
        actor_optimizer, critic_optimizer = self.policy.optimizer, self.policy.critic_optimizer
        # the statistics stay tensors until the end of the update (one synchronisation, not one per minibatch)
        pg_losses, value_losses, entropy_losses, clip_fractions, approx_kls = [], [], [], [], []
        continue_training = True
        for epoch in range(self.n_epochs):
            for batch in buffer.iter_minibatches(self.batch_episodes):
                loss = value_loss = critic.loss(batch.start_observations, batch.outcomes)
                if train_actor:
                    policy_out, entropy_loss = self._actor_loss(batch, clip_range)
                    approx_kls.append(policy_out.approx_kl)
                    if self.target_kl is not None and float(policy_out.approx_kl) > 1.5 * self.target_kl:
                        continue_training = False
                        if self.verbose >= 1:
                            kl = float(policy_out.approx_kl)
                            print(f"Early stopping at epoch {epoch} due to reaching max kl: {kl:.3f}")
                        break
                    loss = loss + policy_out.loss
                    if self.ent_coef != 0.0:  # else the entropy is only logged: no backward pass through it
                        loss = loss + self.ent_coef * entropy_loss
                    pg_losses.append(policy_out.loss.detach())
                    entropy_losses.append(entropy_loss.detach())
                    clip_fractions.append(policy_out.clip_fraction)
                # The actor and critic graphs are disjoint: one backward pass fills both sets of gradients,
                # then each network is clipped and stepped by its own optimizer.
                for parameter in all_params:  # zero_grad of both optimizers, without their per-call overhead
                    parameter.grad = None
                loss.backward()
                _clip_grad_norms_((critic_params, actor_params) if train_actor else (critic_params,), max_grad_norm)
                critic_optimizer.step()
                if train_actor:
                    actor_optimizer.step()
                value_losses.append(value_loss.detach())
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

    def _actor_loss(self, batch: EpisodeMinibatch, clip_range: float) -> tuple[PolicyLossOutput, th.Tensor]:
        """The clipped policy loss of a minibatch and its entropy loss (``-`` the aggregated entropy)."""
        log_prob, entropy = self.policy.log_prob_and_entropy(batch.observations, batch.actions)
        old_log_prob, advantages, mask = batch.old_log_probs, batch.step_advantages, None
        if self.loss_agg_mode != "token-mean":  # the flat steps suffice for a token mean; the others need padding
            log_prob, old_log_prob, advantages, entropy = map(
                batch.to_padded, (log_prob, old_log_prob, advantages, entropy)
            )
            mask = batch.mask
        policy_out = clipped_policy_loss(
            log_prob,
            old_log_prob,
            advantages,
            mask,
            clip_range=clip_range,
            clip_range_high=self.clip_range_high,
            dual_clip=self.dual_clip,
            log_ratio_clamp=self.log_ratio_clamp,
            loss_agg_mode=self.loss_agg_mode,
        )
        return policy_out, -aggregate_loss(entropy, mask, self.loss_agg_mode)

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
        _check_positive_int("total_timesteps", total_timesteps)
        _check_positive_int("log_interval", log_interval)
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

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfSPPO],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfSPPO:
        """SB3's ``load``; the values in ``kwargs`` get SPPO's checks, and ``policy_kwargs`` may be given as they
        were at training time (``value_head`` left out or ``"auto"``: the one the model chose).

        :param path: the saved model (``.zip``)
        :param env: the env to train or evaluate on (checked against the saved spaces)
        :param device: the torch device
        :param custom_objects: values that replace those of the file, as SB3
        :param print_system_info: print the system info of the file and of this machine
        :param force_reset: reset the env before the next rollout
        :param kwargs: attributes to set on the model (e.g. ``learning_rate``), as SB3
        :return: the model
        :raises ValueError: if ``policy_kwargs`` differ from the stored ones, or a value is refused
        """
        check_arguments(kwargs)
        given = kwargs.pop("policy_kwargs", None)
        model = super().load(
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )
        if given is not None:
            _check_same_policy_kwargs(dict(given), model.policy_kwargs)
        return model

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer", "policy.critic_optimizer"], []

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_needs_reset"]


def _mean(values: list[th.Tensor]) -> float:
    return float(th.stack(values).float().mean()) if values else float("nan")


def _callable_outcome(fn: OutcomeFn, env_idx: int, episode_return: float, final_info: dict[str, Any]) -> float:
    """The value of an ``outcome=`` callable as a float; anything but a real number is an :class:`OutcomeError`."""
    raw = fn(episode_return, final_info)
    value: Any = raw
    if (isinstance(raw, th.Tensor) and raw.numel() == 1) or (isinstance(raw, np.ndarray) and raw.size == 1):
        value = raw.item()
    if not isinstance(value, numbers.Real | np.bool_):  # bool is a Real: success or failure
        name = getattr(fn, "__qualname__", None) or repr(fn)
        raise OutcomeError(
            f"outcome={name} returned {raw!r} ({type(raw).__name__}) for the episode of env {env_idx} that just "
            "ended; it must return the episode's outcome as a number (e.g. 1.0 or 0.0)"
        )
    return float(value)


def _warn_time_limit_before_horizon(env: VecEnv) -> None:
    """Warn when a ``TimeLimit`` cuts episodes before the horizon that the env declares.

    The sparse tasks of :mod:`sppo_rl.envs` (and the toy ones) have a ``horizon`` attribute and report the
    outcome on the horizon's step; ``gymnasium.make(id, max_episode_steps=N)`` with ``N`` below it wraps a
    ``TimeLimit`` around them that ends every episode earlier, so no outcome is ever reported and SPPO would train
    on empty returns. Any env with a ``horizon`` and a shorter ``TimeLimit`` is reported, by env index.

    :param env: the training env
    """
    if not (env.has_attr("horizon") and env.has_attr("_max_episode_steps")):
        return
    for env_idx, (horizon, limit) in enumerate(
        zip(env.get_attr("horizon"), env.get_attr("_max_episode_steps"), strict=True)
    ):
        integers = isinstance(horizon, numbers.Integral) and isinstance(limit, numbers.Integral)
        if integers and 0 < int(limit) < int(horizon):
            warnings.warn(
                f"Env {env_idx}: a TimeLimit of {limit} steps ends every episode before the task's horizon "
                f"({horizon} steps), so its outcome is never reported and SPPO learns from truncated episodes. "
                "Build it without max_episode_steps (gymnasium.make(id)) or with max_episode_steps >= the horizon.",
                UserWarning,
                stacklevel=3,
            )
            return


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if int(value) < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _check_same_policy_kwargs(given: dict[str, Any], stored: dict[str, Any]) -> None:
    """``SPPO.load``'s ``policy_kwargs`` against the stored ones, SPPO's own entries aside.

    SPPO stores the value head it chose (``"auto"`` resolved) and drops ``use_sde=False``: a ``value_head`` left
    out, ``"auto"``, or of the stored head's class, and ``use_sde=False``, match.
    """
    if not given.get("use_sde", True):
        given.pop("use_sde")
    head, stored_head = given.get("value_head", "auto"), stored.get("value_head")
    if (isinstance(head, str) and head == "auto") or (isinstance(head, ValueHead) and type(head) is type(stored_head)):
        given["value_head"] = stored_head
    if given != stored:
        differ = sorted(k for k in set(given) | set(stored) if given.get(k, "<absent>") != stored.get(k, "<absent>"))
        raise ValueError(
            f"The policy_kwargs given to load differ from the model's in {differ}: given {given}, stored {stored}"
        )


def _clip_grad_norms_(groups: tuple[list[th.nn.Parameter], ...], max_norm: float) -> None:
    """``th.nn.utils.clip_grad_norm_(group, max_norm)`` on each group, with one norm kernel for all the groups.

    The same formula: the gradients of a group are scaled by ``min(max_norm / (norm + 1e-6), 1)``, ``norm`` the
    2-norm of the group's gradients; about half the time of one call per group on small networks.
    """
    grads = [[p.grad for p in group if p.grad is not None] for group in groups]
    norms = th._foreach_norm([g for group in grads for g in group])
    first = 0
    for group in grads:
        if group:
            total = th.linalg.vector_norm(th.stack(norms[first : first + len(group)]))
            th._foreach_mul_(group, th.clamp(max_norm / (total + 1e-6), max=1.0))
        first += len(group)
