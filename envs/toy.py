"""Tiny sparse-outcome environments for tests, examples and sanity checks (NumPy only, instant to step).

- :class:`LineTargetEnv`: walk on a line and *end* on the target cell; reward 0 at every step, the outcome
  at the last one. Needs credit assignment over the whole episode, as the control suite, but learns in
  seconds.
- :class:`StartDeterminedOutcomeEnv`: the outcome is a function of the start state only and episodes have
  a known length; for closed-form checks of the advantage.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["LineTargetEnv", "StartDeterminedOutcomeEnv"]


class LineTargetEnv(gym.Env[np.ndarray, np.int64 | np.ndarray]):
    """Walk left/right/stay on cells ``0..size-1`` for exactly ``horizon`` steps; succeed if the final cell is
    the target.

    The agent starts on a random cell; the target is a random cell too (both in the observation). Reward is 0
    on every step; the last step gives 1.0 on success and 0.0 otherwise, and ``info["is_success"]``.
    A uniformly random policy succeeds rarely (about ``1/size`` or less); a good one always.

    Observation: ``[position / (size - 1), target / (size - 1), steps_left / horizon]`` (``Box(3,)``).
    Actions: ``Discrete(3)`` (0 left, 1 stay, 2 right), or ``Box(-1, 1, (1,))`` with ``continuous=True``
    (the sign and a dead zone of 1/3 pick the move).

    :param size: number of cells
    :param horizon: episode length
    :param continuous: use a continuous action
    """

    metadata = {"render_modes": []}

    def __init__(self, size: int = 7, horizon: int = 10, continuous: bool = False) -> None:
        if size < 2 or horizon < 1:
            raise ValueError(f"Need size >= 2 and horizon >= 1, got size={size}, horizon={horizon}")
        self.size = size
        self.horizon = horizon
        self.continuous = continuous
        self.observation_space = spaces.Box(0.0, 1.0, shape=(3,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32) if continuous else spaces.Discrete(3)
        self._pos = 0
        self._target = 0
        self._t = 0

    def _obs(self) -> np.ndarray:
        scale = self.size - 1
        return np.array(
            [self._pos / scale, self._target / scale, (self.horizon - self._t) / self.horizon], dtype=np.float32
        )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._pos = int(self.np_random.integers(self.size))
        self._target = int(self.np_random.integers(self.size))
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        if self.continuous:
            a = float(np.asarray(action).reshape(-1)[0])
            move = -1 if a < -1 / 3 else (1 if a > 1 / 3 else 0)
        else:
            move = int(action) - 1
        self._pos = int(np.clip(self._pos + move, 0, self.size - 1))
        self._t += 1
        done = self._t >= self.horizon
        info: dict[str, Any] = {}
        reward = 0.0
        if done:
            success = self._pos == self._target
            info["is_success"] = success
            reward = float(success)
        return self._obs(), reward, False, done, info


class StartDeterminedOutcomeEnv(gym.Env[np.ndarray, np.int64]):
    """Episodes whose length and outcome are fixed by the start state: for closed-form tests.

    At reset a start value ``k`` is drawn from ``0..n_starts-1``. The episode lasts ``k + 1`` steps whatever the
    actions; its outcome is ``1.0`` when ``k`` is even and ``0.0`` otherwise (reported as ``is_success``, or as
    the reward ``outcome_scale * outcome`` at the last step). The observation is
    ``[k, step_in_episode, done_flag]`` so tests can check how steps were grouped into episodes.

    :param n_starts: number of distinct start values
    :param report_success: put ``info["is_success"]`` on the last step
    :param outcome_scale: the last step's reward is ``outcome_scale * outcome``
    :param never_ends: ignore the length and never end (to test the missing-time-limit error)
    :param action_space: any action space (actions are ignored)
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        n_starts: int = 5,
        report_success: bool = True,
        outcome_scale: float = 1.0,
        never_ends: bool = False,
        action_space: spaces.Space | None = None,
    ) -> None:
        self.n_starts = n_starts
        self.report_success = report_success
        self.outcome_scale = outcome_scale
        self.never_ends = never_ends
        self.observation_space = spaces.Box(0.0, np.inf, shape=(3,), dtype=np.float32)
        self.action_space = action_space if action_space is not None else spaces.Discrete(2)
        self._k = 0
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._k = int(self.np_random.integers(self.n_starts))
        self._t = 0
        return np.array([self._k, 0, 0], dtype=np.float32), {}

    @staticmethod
    def outcome_of(k: int) -> float:
        """The outcome of an episode that started from ``k``."""
        return 1.0 if k % 2 == 0 else 0.0

    def step(self, action):
        self._t += 1
        done = (not self.never_ends) and self._t >= self._k + 1
        info: dict[str, Any] = {}
        reward = 0.0
        if done:
            outcome = self.outcome_of(self._k)
            reward = self.outcome_scale * outcome
            if self.report_success:
                info["is_success"] = bool(outcome)
        obs = np.array([self._k, self._t, float(done)], dtype=np.float32)
        return obs, reward, done, False, info
