"""Shared helpers of the control-suite tests (``tests/envs``)."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium
import pytest

# Box2D's SWIG module segfaults when it is first imported while warnings are turned into errors (its import
# emits SWIG DeprecationWarnings); import it (when installed) before any test can do that.
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore", DeprecationWarning)
    import Box2D  # noqa: F401

import sppo_rl.envs  # noqa: F401  (registers the suite's ids)
from sppo_rl.envs import get_task


@dataclasses.dataclass
class Episode:
    """One episode's record.

    :param observations: the observations, the first (from reset) included.
    :param rewards: the rewards of the steps.
    :param infos: the infos of the steps.
    :param terminated: the last step's ``terminated``.
    :param truncated: the last step's ``truncated``.
    """

    observations: list[Any]
    rewards: list[float]
    infos: list[dict[str, Any]]
    terminated: bool
    truncated: bool

    @property
    def length(self) -> int:
        """Number of steps."""
        return len(self.rewards)

    @property
    def flags(self) -> tuple[bool, bool]:
        """The last step's ``(terminated, truncated)``."""
        return self.terminated, self.truncated

    @property
    def final_info(self) -> dict[str, Any]:
        """The last step's info."""
        return self.infos[-1]


Policy = Callable[[Any, gymnasium.Env[Any, Any]], Any]


def run_episode(env: gymnasium.Env[Any, Any], policy: Policy, seed: int, max_steps: int = 100_000) -> Episode:
    """Reset ``env`` with ``seed`` and run ``policy(observation, env)`` until the episode ends.

    :param env: the env.
    :param policy: maps the observation (and the env, for scripted controllers) to an action.
    :param seed: the reset seed.
    :param max_steps: a safety bound; exceeding it fails the test.
    :return: the episode.
    """
    observation, _ = env.reset(seed=seed)
    episode = Episode([observation], [], [], False, False)
    for _ in range(max_steps):
        observation, reward, terminated, truncated, info = env.step(policy(observation, env))
        episode.observations.append(observation)
        episode.rewards.append(float(reward))
        episode.infos.append(info)
        if terminated or truncated:
            episode.terminated, episode.truncated = bool(terminated), bool(truncated)
            return episode
    pytest.fail(f"episode did not end within {max_steps} steps")


def require_dynamics(env_id: str) -> None:
    """Skip the test when the physics engine of ``env_id`` is not installed.

    :param env_id: a suite id.
    """
    requires = get_task(env_id).requires
    if requires is not None:
        pytest.importorskip(requires, reason=f"{env_id} needs {requires} (pip install 'sppo-rl[envs]')")


def horizon_flags(env_id: str) -> tuple[bool, bool]:
    """``(terminated, truncated)`` of the last step of an episode of ``env_id`` that runs to its horizon.

    A sparse task ends there (its outcome is final: ``terminated``); its dense counterpart is truncated there
    (a time limit on a continuing task).

    :param env_id: a suite id.
    :return: ``(True, False)`` for a sparse id, ``(False, True)`` for a dense one.
    """
    return (False, True) if get_task(env_id).dense_id == env_id else (True, False)


@pytest.fixture
def at_horizon() -> Callable[[str], tuple[bool, bool]]:
    """:func:`horizon_flags`, as a fixture."""
    return horizon_flags


@pytest.fixture
def episode_runner() -> Callable[..., Episode]:
    """:func:`run_episode`, as a fixture."""
    return run_episode


@pytest.fixture
def needs_dynamics() -> Callable[[str], None]:
    """:func:`require_dynamics`, as a fixture."""
    return require_dynamics
