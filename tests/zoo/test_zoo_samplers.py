"""``make_sampler``: trial ``n`` draws from a stream seeded by ``(--sampler-seed, n)``."""

from __future__ import annotations

import optuna
import pytest
from sppo_rl.zoo.samplers import trial_seed
from sppo_rl.zoo.tune import make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 1e-5, 1e-2, log=True)
    k = trial.suggest_int("k", 0, 3)
    return -abs(x - 1e-3) - k


def params(study: optuna.Study) -> list[dict]:
    return [t.params for t in study.trials]


@pytest.mark.parametrize("name", ["tpe", "random"])
def test_a_study_resumed_with_its_seed_continues_as_if_never_stopped(name: str) -> None:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="s", sampler=make_sampler(name, 4, seed=7))
    study.optimize(objective, n_trials=5)
    resumed = optuna.load_study(storage=storage, study_name="s", sampler=make_sampler(name, 4, seed=7))
    resumed.optimize(objective, n_trials=5)  # a new process: a new sampler with the same seed

    in_one_go = optuna.create_study(sampler=make_sampler(name, 4, seed=7))
    in_one_go.optimize(objective, n_trials=10)
    assert params(resumed) == params(in_one_go)
    assert len({p["x"] for p in params(resumed)}) == 10  # no trial repeats another

    other_seed = optuna.create_study(sampler=make_sampler(name, 4, seed=8))
    other_seed.optimize(objective, n_trials=3)
    assert {p["x"] for p in params(other_seed)}.isdisjoint(p["x"] for p in params(in_one_go))


def test_trial_seeds_are_distinct_and_fixed() -> None:
    seeds = [trial_seed(7, n) for n in range(1000)]
    assert len(set(seeds)) == 1000 and all(0 <= s < 2**32 for s in seeds)
    assert seeds == [trial_seed(7, n) for n in range(1000)]
    assert trial_seed(8, 0) != trial_seed(7, 0) and trial_seed(None, 0) is None
