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

import functools
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


def _slice(x: TensorObs, first: int, last: int) -> TensorObs:
    if isinstance(x, dict):
        return {k: v[first:last] for k, v in x.items()}
    return x[first:last]


def _to_tensor(x: Obs, device: th.device) -> TensorObs:
    if isinstance(x, dict):
        return {k: th.as_tensor(v, device=device) for k, v in x.items()}
    return th.as_tensor(x, device=device)


def first_non_finite(obs: Obs, n_leading: int) -> tuple[tuple[int, ...], str | None, float] | None:
    """The first non-finite entry of the floating-point observations, or ``None`` if all are finite.

    :param obs: an array (or a dict of arrays) whose first ``n_leading`` dimensions index steps and environments
    :param n_leading: how many leading dimensions to report (1: ``(n_envs, ...)``; 2: ``(steps, n_envs, ...)``)
    :return: ``(leading index, dict key or None, value)``
    """
    items = obs.items() if isinstance(obs, dict) else [(None, obs)]
    for key, array in items:
        array = np.asarray(array)
        if array.dtype.kind != "f" or np.isfinite(array).all():
            continue
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        return where[:n_leading], key, float(array[where])
    return None


@dataclass
class EpisodeMinibatch:
    """A minibatch of ``B`` whole episodes with ``n`` steps in total, steps of an episode contiguous.

    The per-step tensors are flat ``(n, ...)``, which is all a token-mean loss needs; :meth:`to_padded` and
    :attr:`mask` give the ``(B, max_len)`` padded layout that the per-sequence aggregations take.
    """

    observations: TensorObs
    """``(n, *obs_shape)``"""
    actions: th.Tensor
    """``(n, *action_shape)``"""
    old_log_probs: th.Tensor
    """``(n,)``"""
    step_advantages: th.Tensor
    """``(n,)`` each step's episode advantage"""
    advantages: th.Tensor
    """``(B,)`` one per episode"""
    start_observations: TensorObs
    """``(B, *obs_shape)``"""
    outcomes: th.Tensor
    """``(B,)``"""
    lengths: np.ndarray
    """``(B,)`` steps of each episode, in order"""

    @functools.cached_property
    def _padded_index(self) -> tuple[th.Tensor, th.Tensor]:
        rows = np.repeat(np.arange(len(self.lengths)), self.lengths)
        cols = np.arange(int(self.lengths.sum())) - np.repeat(np.cumsum(self.lengths) - self.lengths, self.lengths)
        device = self.old_log_probs.device
        return th.as_tensor(rows, device=device), th.as_tensor(cols, device=device)

    @functools.cached_property
    def mask(self) -> th.Tensor:
        """``(B, max_len)`` bool, True on real steps."""
        rows, cols = self._padded_index
        mask = th.zeros((len(self.lengths), int(self.lengths.max())), dtype=th.bool, device=rows.device)
        mask[rows, cols] = True
        return mask

    def to_padded(self, flat: th.Tensor) -> th.Tensor:
        """Scatter a per-step ``(n,)`` tensor into the ``(B, max_len)`` layout (0 on padding)."""
        rows, cols = self._padded_index
        out = flat.new_zeros(self.mask.shape)
        out[rows, cols] = flat
        return out


class EpisodeRolloutBuffer:
    """Collects steps per environment and keeps only complete episodes.

    Usage per rollout: :meth:`reset`, then per vector step :meth:`add` followed by :meth:`end_episode` for
    each environment whose episode ended (and, for an episode that must not be recorded, setting
    :attr:`recording`), then :meth:`finalize`, :meth:`set_advantages` and :meth:`iter_minibatches`.
    An episode is recorded, or not, as a whole: the flag of its environment when it began.

    :param observation_space: observation space
    :param action_space: action space
    :param n_envs: number of parallel environments
    :param device: device of the tensors handed out
    """

    episode_begin: np.ndarray
    """``(n_envs,)``: the vector step at which each environment's open episode began."""
    recording: np.ndarray
    """``(n_envs,)`` bool: whether each environment's open episode is recorded (set right after
    :meth:`end_episode`; an episode that is not recorded is dropped when it ends)."""

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
        self._action_shape: tuple[int, ...] = (
            () if isinstance(action_space, spaces.Discrete) else tuple(action_space.shape)  # type: ignore[arg-type]
        )
        self.reset()

    # ---- collection -------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything; start a new rollout (every environment at the start of a recorded episode)."""
        self._obs: list[Obs] = []
        self._actions: list[np.ndarray] = []
        self._log_probs: list[np.ndarray] = []
        self.episode_begin = np.zeros(self.n_envs, dtype=np.int64)
        self.recording = np.ones(self.n_envs, dtype=bool)
        # closed recorded episodes: (env index, first vector step, length, outcome)
        self._closed: list[tuple[int, int, int, float]] = []
        self.finalized = False

    @property
    def n_vector_steps(self) -> int:
        """Vector steps added since :meth:`reset`."""
        return len(self._actions)

    def add(self, obs: Obs, actions: np.ndarray, log_probs: np.ndarray) -> None:
        """Store one vector step (the observation the actions were taken from).

        :param obs: ``(n_envs, *obs_shape)`` (or a dict)
        :param actions: ``(n_envs, *action_shape)`` as sampled from the policy (before clipping)
        :param log_probs: ``(n_envs,)``
        """
        # copy: some vector envs reuse their observation buffers between steps
        self._obs.append({k: np.array(v) for k, v in obs.items()} if isinstance(obs, dict) else np.array(obs))
        self._actions.append(np.asarray(actions).reshape(self.n_envs, *self._action_shape))
        self._log_probs.append(np.asarray(log_probs, dtype=np.float32).reshape(self.n_envs))

    def end_episode(self, env_idx: int, outcome: float) -> None:
        """Close the open episode of ``env_idx`` (its last step is the last one added) with its outcome; the
        env's next episode begins at the next step, recorded unless :attr:`recording` is then set False."""
        begin, end = int(self.episode_begin[env_idx]), self.n_vector_steps
        if self.recording[env_idx] and end > begin:
            self._closed.append((env_idx, begin, end - begin, float(outcome)))
        self.episode_begin[env_idx] = end
        self.recording[env_idx] = True

    @property
    def n_episodes(self) -> int:
        """Number of complete episodes stored."""
        return len(self._closed)

    # ---- training view ----------------------------------------------------------------------------------

    def finalize(self) -> None:
        """Lay the complete episodes out contiguously (episode-major) as arrays; see the module docstring.

        :raises ValueError: if an observation is NaN or infinite, naming the environment and the step
        :raises RuntimeError: if no episode ended
        """
        stacked_obs = _stack(self._obs)  # (T, n_envs, ...)
        bad = first_non_finite(stacked_obs, n_leading=2)
        if bad is not None:
            (step, env_idx), key, value = bad
            where = "" if key is None else f" (key {key!r})"
            raise ValueError(
                f"Env {env_idx} returned a non-finite observation{where} ({value}) at step {step} of the rollout: "
                "check the environment (stable_baselines3's VecCheckNan finds the step that produced it)"
            )
        if not self._closed:
            raise RuntimeError("The rollout holds no complete episode; nothing to train on")
        env_ids, begins, lengths_list, outcomes = zip(*self._closed, strict=True)
        lengths = np.array(lengths_list, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        t_idx = np.repeat(np.array(begins) - starts, lengths) + np.arange(int(lengths.sum()))
        e_idx = np.repeat(np.array(env_ids), lengths)

        self.observations = _take(stacked_obs, (t_idx, e_idx))  # type: ignore[arg-type]
        self.actions = np.stack(self._actions)[t_idx, e_idx]
        self.log_probs = np.stack(self._log_probs)[t_idx, e_idx]
        self.episode_lengths = lengths
        self.episode_starts = starts
        self.start_observations = _take(self.observations, starts)
        self.outcomes = np.array(outcomes, dtype=np.float32)
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
        self._t_step_episode = th.as_tensor(np.repeat(np.arange(self.n_episodes), self.episode_lengths), device=dev)
        self.set_advantages(self.advantages)

    def set_advantages(self, advantages: np.ndarray | th.Tensor) -> None:
        """Set the per-episode advantages ``(E,)``."""
        adv = advantages.detach().cpu().numpy() if isinstance(advantages, th.Tensor) else np.asarray(advantages)
        if adv.shape != self.outcomes.shape:
            raise ValueError(f"Expected {self.outcomes.shape} advantages, got {adv.shape}")
        self.advantages = adv.astype(np.float32)
        self._t_advantages = th.as_tensor(self.advantages, device=self.device)
        self._t_step_advantages = self._t_advantages[self._t_step_episode]

    def iter_minibatches(self, batch_episodes: int) -> Iterator[EpisodeMinibatch]:
        """Shuffle the episodes (NumPy's global generator, which SB3's ``set_random_seed`` seeds) and yield
        minibatches of ``batch_episodes`` whole episodes (the last may be smaller).

        The steps are gathered once per call in the shuffled order; each minibatch is then a slice of them."""
        if not self.finalized:
            raise RuntimeError("Call finalize() before iterating")
        order = np.random.permutation(self.n_episodes)
        lengths = self.episode_lengths[order]
        ends = np.cumsum(lengths)
        step_idx = np.repeat(self.episode_starts[order] - (ends - lengths), lengths) + np.arange(int(ends[-1]))
        dev = self.device
        steps, episodes = th.as_tensor(step_idx, device=dev), th.as_tensor(order, device=dev)
        observations = _index(self._t_obs, steps)
        actions, old_log_probs = self._t_actions[steps], self._t_log_probs[steps]
        step_advantages = self._t_step_advantages[steps]
        start_observations = _index(self._t_start_obs, episodes)
        advantages, outcomes = self._t_advantages[episodes], self._t_outcomes[episodes]
        for first in range(0, len(order), batch_episodes):
            last = min(first + batch_episodes, len(order))
            s0, s1 = int(ends[first] - lengths[first]), int(ends[last - 1])
            yield EpisodeMinibatch(
                observations=_slice(observations, s0, s1),
                actions=actions[s0:s1],
                old_log_probs=old_log_probs[s0:s1],
                step_advantages=step_advantages[s0:s1],
                advantages=advantages[first:last],
                start_observations=_slice(start_observations, first, last),
                outcomes=outcomes[first:last],
                lengths=lengths[first:last],
            )
