"""Episode-aligned rollout storage for SPPO.

SB3's ``RolloutBuffer`` holds a fixed ``n_steps x n_envs`` block in which episodes are cut at the block's
edges. SPPO needs whole episodes: every stored step must belong to an episode whose outcome is known. This
buffer records steps per environment, closes an episode when it ends (with its outcome), drops the steps
of episodes that never ended, and hands out minibatches made of whole episodes.

Layout after :meth:`EpisodeRolloutBuffer.finalize` (``N`` steps in ``E`` episodes, episode-major order):

- ``observations``: ``(N, *obs_shape)`` (a dict of such arrays for ``Dict`` spaces);
- ``actions``: ``(N, *action_shape)``; ``log_probs``: ``(N,)``;
- ``episode_starts``/``episode_lengths``: ``(E,)`` offsets and lengths into the step arrays;
- ``start_observations``: ``(E, *obs_shape)`` (the observation each episode started from);
- ``outcomes``: ``(E,)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_action_dim

Obs = np.ndarray | dict[str, np.ndarray]
TensorObs = th.Tensor | dict[str, th.Tensor]


def _take(obs: Obs, index: np.ndarray) -> Obs:
    if isinstance(obs, dict):
        return {k: v[index] for k, v in obs.items()}
    return obs[index]


def _stack(items: list[Obs]) -> Obs:
    if isinstance(items[0], dict):
        return {k: np.stack([it[k] for it in items]) for k in items[0]}  # type: ignore[index]
    return np.stack(items)  # type: ignore[arg-type]


def _index(x: TensorObs, index: th.Tensor) -> TensorObs:
    if isinstance(x, dict):
        return {k: v[index] for k, v in x.items()}
    return x[index]


def _to_tensor(x: Obs, device: th.device) -> TensorObs:
    if isinstance(x, dict):
        return {k: th.as_tensor(v, device=device) for k, v in x.items()}
    return th.as_tensor(x, device=device)


@dataclass
class EpisodeMinibatch:
    """A minibatch of ``B`` whole episodes with ``n`` steps in total.

    The per-step tensors are flat ``(n, ...)``; ``rows``/``cols`` place step ``k`` at ``[rows[k], cols[k]]``
    of a ``(B, max_len)`` padded matrix (what :func:`sppo_rl.objectives.clipped_policy_loss` takes).
    """

    observations: TensorObs
    """``(n, *obs_shape)``"""
    actions: th.Tensor
    """``(n, *action_shape)``"""
    old_log_probs: th.Tensor
    """``(n,)``"""
    advantages: th.Tensor
    """``(B,)`` one per episode"""
    start_observations: TensorObs
    """``(B, *obs_shape)``"""
    outcomes: th.Tensor
    """``(B,)``"""
    rows: th.Tensor
    """``(n,)`` episode index within the minibatch of each step"""
    cols: th.Tensor
    """``(n,)`` time index of each step within its episode"""
    mask: th.Tensor
    """``(B, max_len)`` bool, True on real steps"""

    def to_padded(self, flat: th.Tensor) -> th.Tensor:
        """Scatter a per-step ``(n,)`` tensor into the ``(B, max_len)`` layout (0 on padding)."""
        out = flat.new_zeros(self.mask.shape)
        out[self.rows, self.cols] = flat
        return out


class EpisodeRolloutBuffer:
    """Collects steps per environment and keeps only complete episodes.

    Usage per rollout: :meth:`reset`, then per vector step :meth:`add` followed by :meth:`end_episode` for
    each environment whose episode ended, then :meth:`finalize`, :meth:`set_advantages` and
    :meth:`iter_minibatches`.

    :param observation_space: observation space
    :param action_space: action space
    :param n_envs: number of parallel environments
    :param device: device of the tensors handed out
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        n_envs: int,
        device: th.device | str = "cpu",
    ) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.n_envs = n_envs
        self.device = th.device(device)
        self.action_dim = get_action_dim(action_space)
        self.reset()

    # ---- collection -------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything; start a new rollout."""
        self._obs: list[Obs] = []
        self._actions: list[np.ndarray] = []
        self._log_probs: list[np.ndarray] = []
        # per env: the vector-step indices of its open episode
        self._open: list[list[int]] = [[] for _ in range(self.n_envs)]
        # closed episodes: (env index, vector-step indices, outcome)
        self._closed: list[tuple[int, list[int], float]] = []
        self.finalized = False

    def add(self, obs: Obs, actions: np.ndarray, log_probs: np.ndarray, record: np.ndarray) -> None:
        """Store one vector step (the observation the actions were taken from).

        :param obs: ``(n_envs, *obs_shape)`` (or a dict)
        :param actions: ``(n_envs, *action_shape)`` as sampled from the policy (before clipping)
        :param log_probs: ``(n_envs,)``
        :param record: ``(n_envs,)`` bool; False for environments whose step is not recorded
        """
        t = len(self._actions)
        # copy: some vector envs reuse their observation buffers between steps
        self._obs.append({k: np.array(v) for k, v in obs.items()} if isinstance(obs, dict) else np.array(obs))
        self._actions.append(np.asarray(actions).reshape(self.n_envs, *self._action_shape()))
        self._log_probs.append(np.asarray(log_probs, dtype=np.float32).reshape(self.n_envs))
        for env_idx in np.flatnonzero(record):
            self._open[env_idx].append(t)

    def _action_shape(self) -> tuple[int, ...]:
        if isinstance(self.action_space, spaces.Discrete):
            return ()
        return tuple(self.action_space.shape)  # type: ignore[arg-type]

    def end_episode(self, env_idx: int, outcome: float) -> None:
        """Close the open episode of ``env_idx`` with its outcome (no-op if nothing was recorded)."""
        steps = self._open[env_idx]
        if steps:
            self._closed.append((env_idx, steps, float(outcome)))
        self._open[env_idx] = []

    def discard_open(self) -> int:
        """Drop the steps of episodes that did not end. Returns the number of steps dropped."""
        n = sum(len(s) for s in self._open)
        self._open = [[] for _ in range(self.n_envs)]
        return n

    @property
    def n_episodes(self) -> int:
        """Number of complete episodes stored."""
        return len(self._closed)

    # ---- training view ----------------------------------------------------------------------------------

    def finalize(self) -> None:
        """Lay the complete episodes out contiguously (episode-major) as arrays; see the module docstring."""
        if not self._closed:
            raise RuntimeError("The rollout holds no complete episode; nothing to train on")
        stacked_obs = _stack(self._obs)  # (T, n_envs, ...)
        actions = np.stack(self._actions)
        log_probs = np.stack(self._log_probs)
        t_idx = np.concatenate([np.asarray(steps) for _, steps, _ in self._closed])
        e_idx = np.concatenate([np.full(len(steps), env) for env, steps, _ in self._closed])
        lengths = np.array([len(steps) for _, steps, _ in self._closed], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)

        self.observations = _take(stacked_obs, (t_idx, e_idx))  # type: ignore[arg-type]
        self.actions = actions[t_idx, e_idx]
        self.log_probs = log_probs[t_idx, e_idx]
        self.episode_lengths = lengths
        self.episode_starts = starts
        self.start_observations = _take(self.observations, starts)
        self.outcomes = np.array([outcome for _, _, outcome in self._closed], dtype=np.float32)
        self.advantages = np.zeros_like(self.outcomes)
        self.n_steps_total = int(lengths.sum())
        # release the per-step lists
        self._obs, self._actions, self._log_probs = [], [], []
        self._make_tensors()
        self.finalized = True

    def start_observations_tensor(self) -> TensorObs:
        """``(E, *obs_shape)`` start observations on the buffer's device."""
        return self._t_start_obs

    def _make_tensors(self) -> None:
        # one host -> device conversion per rollout; minibatches are then tensor index operations
        dev = self.device
        self._t_obs = _to_tensor(self.observations, dev)
        self._t_actions = th.as_tensor(self.actions, device=dev)
        self._t_log_probs = th.as_tensor(self.log_probs, device=dev)
        self._t_start_obs = _to_tensor(self.start_observations, dev)
        self._t_outcomes = th.as_tensor(self.outcomes, device=dev)
        self._t_advantages = th.as_tensor(self.advantages, device=dev)

    def set_advantages(self, advantages: np.ndarray | th.Tensor) -> None:
        """Set the per-episode advantages ``(E,)``."""
        adv = advantages.detach().cpu().numpy() if isinstance(advantages, th.Tensor) else np.asarray(advantages)
        if adv.shape != self.outcomes.shape:
            raise ValueError(f"Expected {self.outcomes.shape} advantages, got {adv.shape}")
        self.advantages = adv.astype(np.float32)
        self._t_advantages = th.as_tensor(self.advantages, device=self.device)

    def iter_minibatches(self, batch_episodes: int) -> Iterator[EpisodeMinibatch]:
        """Shuffle the episodes (NumPy's global generator, which SB3's ``set_random_seed`` seeds) and yield
        minibatches of ``batch_episodes`` whole episodes (the last may be smaller)."""
        if not self.finalized:
            raise RuntimeError("Call finalize() before iterating")
        order = np.random.permutation(self.n_episodes)
        for first in range(0, len(order), batch_episodes):
            yield self._minibatch(order[first : first + batch_episodes])

    def _minibatch(self, episodes: np.ndarray) -> EpisodeMinibatch:
        lengths = self.episode_lengths[episodes]
        starts = self.episode_starts[episodes]
        rows = np.repeat(np.arange(len(episodes)), lengths)
        offsets = np.cumsum(lengths) - lengths
        cols = np.arange(int(lengths.sum())) - np.repeat(offsets, lengths)
        dev = self.device
        step_idx = th.as_tensor(np.repeat(starts, lengths) + cols, device=dev)
        episode_idx = th.as_tensor(episodes, device=dev)
        rows_t, cols_t = th.as_tensor(rows, device=dev), th.as_tensor(cols, device=dev)
        mask = th.zeros((len(episodes), int(lengths.max())), dtype=th.bool, device=dev)
        mask[rows_t, cols_t] = True
        return EpisodeMinibatch(
            observations=_index(self._t_obs, step_idx),
            actions=self._t_actions[step_idx],
            old_log_probs=self._t_log_probs[step_idx],
            advantages=self._t_advantages[episode_idx],
            start_observations=_index(self._t_start_obs, episode_idx),
            outcomes=self._t_outcomes[episode_idx],
            rows=rows_t,
            cols=cols_t,
            mask=mask,
        )
