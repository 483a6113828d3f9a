"""An Optuna sampler whose randomness comes from the trial number, so a resumed study does not replay itself.

Optuna's samplers draw from one random stream that starts at ``seed`` when the sampler is built. A study resumed
with the same ``--sampler-seed`` therefore proposes its first trials' parameters again (the random start-up trials
of TPE, every trial of the random sampler), and so do processes that join a study with the same seed.
:class:`TrialSeededSampler` builds a fresh sampler for each trial, seeded from ``(seed, trial number)``: trial
numbers are unique within a study, so no two trials share a stream, and trial ``n`` draws the same numbers whether
the study ran in one go or was stopped and resumed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

__all__ = ["TrialSeededSampler", "trial_seed"]


def trial_seed(seed: int | None, number: int) -> int | None:
    """The seed of trial ``number``'s sampler: a 32-bit hash of ``(seed, number)`` (``None`` stays random).

    :param seed: the study's sampler seed
    :param number: the trial number
    :return: the trial's seed
    """
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededSampler(BaseSampler):
    """Delegate every trial to its own sampler ``make(trial_seed(seed, trial.number))``.

    The inner samplers keep no state between trials (TPE and random sampling read the finished trials from the
    study), so one per trial changes nothing but the random stream. Safe with trials run in several threads.

    :param make: builds a sampler from a seed (``None``: random)
    :param seed: the study's sampler seed
    """

    def __init__(self, make: Callable[[int | None], BaseSampler], seed: int | None) -> None:
        self._make = make
        self._seed = seed
        self._samplers: dict[int, BaseSampler] = {}
        self._lock = threading.Lock()

    def _sampler(self, trial: FrozenTrial) -> BaseSampler:
        with self._lock:
            sampler = self._samplers.get(trial.number)
            if sampler is None:
                sampler = self._samplers[trial.number] = self._make(trial_seed(self._seed, trial.number))
            return sampler

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        """The inner sampler's relative search space."""
        return self._sampler(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """The inner sampler's relative sample."""
        return self._sampler(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        """The inner sampler's independent sample."""
        return self._sampler(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Build the trial's sampler and let it prepare."""
        self._sampler(trial).before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        """Let the trial's sampler finish, then drop it."""
        try:
            self._sampler(trial).after_trial(study, trial, state, values)
        finally:
            with self._lock:
                self._samplers.pop(trial.number, None)

    def reseed_rng(self) -> None:
        """Nothing to do: every trial's sampler is seeded from its trial number."""
