"""``sppo-zoo tune``: hyperparameter search with Optuna, several seeds per trial.

What differs from rl-baselines3-zoo's tuner:

- **Several seeds per trial** (``--n-seeds-per-trial K``): every trial trains the same K seeds (``--seed``,
  ``--seed + 1``...: common random numbers, so trials differ by their hyperparameters, not by seed luck), in
  lockstep. At each of the ``--n-evaluations`` points every seed is evaluated, and the mean (or, with
  ``--objective median``, the median) over the seeds is reported to the pruner; the value of the trial is that
  aggregate at the last point.
- **The metric is the success rate** when the env reports ``info["is_success"]`` (checked once with a random
  episode), the mean return otherwise; the choice is printed and stored in the study.
- **The trial budget is the study's**: ``--n-trials`` counts finished trials (complete, pruned, or failed
  with an error) over every process and every resume of the study; processes take a shared lock (a file next
  to the SQLite or journal file; an advisory lock of a PostgreSQL server) before starting a trial, so they run
  exactly that many together.
- **Failures are recorded, not fatal**: a trial whose parameters become NaN or infinite is pruned with
  ``pruned_reason`` (``diverged: ...``); any other exception fails it with ``fail_reason``; the study goes on.
  A trial whose process died (no heartbeat for two intervals) is failed by Optuna's stale-trial check and
  does not count toward the budget, so a resumed study runs it again.

At the end: ``best_hyperparams.yml`` (an entry keyed by the env id, ready for ``train -conf``),
``trials.csv`` (``study.trials_dataframe()``), ``optimization_history.png``, ``param_importances.png`` and
``summary.json`` in ``<log folder>/<algo>/tune_<study name>/``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import socket
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, sync_envs_normalization

from .algos import AlgoSpec, get_algo
from .environments import EnvFactory, make_vec, probe_success, resolve_env
from .errors import ZooError
from .evaluate import EpisodeStats, run_episodes
from .hyperparams import Hyperparams, build_hyperparams, dump_yaml, entry_for, parse_overrides
from .plots import save_study_plots
from .runs import make_folder
from .samplers import TrialSeededSampler
from .search_spaces import SearchContext, SearchSpace, load_search_space
from .storage import Heartbeat, StudyStorage, hide_password, open_storage
from .train import create_model, make_envs

__all__ = [
    "OBJECTIVES",
    "PRUNERS",
    "SAMPLERS",
    "DivergedError",
    "ObjectiveSpec",
    "TuneSettings",
    "count_budget",
    "make_pruner",
    "make_sampler",
    "tune",
]

OBJECTIVES: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": lambda values: float(np.mean(values)),
    "median": lambda values: float(np.median(values)),
}
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "halving", "none")

FAIL_KIND = "fail_kind"
"""User attribute of a failed trial: ``error`` (counts toward the budget) or ``interrupted`` (does not)."""


class DivergedError(RuntimeError):
    """Training produced non-finite parameters or values: the trial is pruned."""


class _Interrupted(RuntimeError):
    """The tuning run was asked to stop (Ctrl-C) while this trial ran."""


@dataclass
class TuneSettings:
    """What ``sppo-zoo tune`` was asked for.

    :param algo: the algorithm name
    :param env_id: the environment id
    :param log_folder: ``-f``: outputs go to ``<log_folder>/<algo>/tune_<study name>/``
    :param conf_file: ``-conf``: the hyperparameter file whose entry the trials start from
    :param params: ``-params key:value``: fixed hyperparameters (never searched)
    :param seed: the first training seed of every trial (seeds ``seed .. seed + K - 1``)
    :param n_timesteps: ``-n``: training steps per seed (default: the entry's ``n_timesteps``)
    :param n_trials: finished trials the study should have (over all processes and resumes)
    :param n_jobs: trials run in parallel threads by this process
    :param sampler: ``tpe`` or ``random``
    :param sampler_seed: seed of the sampler (``None``: random; give each process sharing a study its own)
    :param pruner: ``median``, ``halving`` or ``none``
    :param n_startup_trials: trials before the TPE sampler and the median pruner start to act
    :param n_evaluations: evaluation points per trial (reported to the pruner)
    :param n_seeds_per_trial: seeds trained per trial
    :param objective: ``mean`` or ``median`` over the seeds
    :param eval_episodes: episodes per evaluation and seed
    :param deterministic_eval: deterministic actions in the evaluations
    :param storage: ``None`` (in memory), an RDB URL or a ``.log`` journal path
    :param study_name: default ``<algo>-<env>``
    :param heartbeat_interval: seconds between heartbeats of running trials (stored studies)
    :param search_space: ``module:function`` replacing the algorithm's search space
    :param device: torch device of the models
    :param vec_env: ``dummy`` or ``subproc``
    :param gym_packages: modules to import for their env registrations
    :param num_threads: torch threads (1 is the fastest for small MLP policies on CPU; ``<= 0``: torch's default)
    :param verbose: 0 quiet, 1 one line per trial
    :param command: the command line (written into ``best_hyperparams.yml``)
    """

    algo: str
    env_id: str
    log_folder: str = "logs"
    conf_file: str | None = None
    params: Sequence[str] = ()
    seed: int = 0
    n_timesteps: int = -1
    n_trials: int = 10
    n_jobs: int = 1
    sampler: str = "tpe"
    sampler_seed: int | None = None
    pruner: str = "median"
    n_startup_trials: int = 5
    n_evaluations: int = 5
    n_seeds_per_trial: int = 1
    objective: str = "mean"
    eval_episodes: int = 10
    deterministic_eval: bool = True
    storage: str | None = None
    study_name: str | None = None
    heartbeat_interval: int = 30
    search_space: str | None = None
    device: str = "auto"
    vec_env: str = "dummy"
    gym_packages: Sequence[str] = field(default_factory=tuple)
    num_threads: int = 1
    verbose: int = 1
    command: str | None = None


@dataclass(frozen=True)
class ObjectiveSpec:
    """What the value of a trial means; stored in the study (``zoo_objective``) and checked on resume.

    :param algo: the algorithm
    :param env: the environment id
    :param metric: ``success_rate`` or ``mean_return``
    :param aggregate: ``mean`` or ``median`` over the seeds
    :param n_seeds: seeds per trial
    :param n_timesteps: training steps per seed
    :param n_evaluations: evaluation points per trial
    :param eval_episodes: episodes per evaluation and seed
    :param deterministic: deterministic evaluation actions
    """

    algo: str
    env: str
    metric: str
    aggregate: str
    n_seeds: int
    n_timesteps: int
    n_evaluations: int
    eval_episodes: int
    deterministic: bool

    def describe(self) -> str:
        """One sentence, e.g. "mean over 3 seeds of the success rate (10 deterministic episodes, ...)"."""
        metric = "success rate" if self.metric == "success_rate" else "mean return (the env reports no is_success)"
        mode = "deterministic" if self.deterministic else "stochastic"
        seeds = f"{self.aggregate} over {self.n_seeds} seeds of the" if self.n_seeds > 1 else "the"
        return (
            f"{seeds} {metric} ({self.eval_episodes} {mode} episodes per seed after {self.n_timesteps} steps; "
            f"{self.n_evaluations} evaluation points reported to the pruner)"
        )


def _tpe(n_startup_trials: int, seed: int | None) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            n_startup_trials=n_startup_trials, seed=seed, multivariate=True, constant_liar=True
        )


def make_sampler(name: str, n_startup_trials: int, seed: int | None) -> optuna.samplers.BaseSampler:
    """``tpe`` (multivariate TPE with the constant liar for parallel trials, random for the first
    ``n_startup_trials``) or ``random``, seeded per trial from ``(seed, trial number)``
    (:class:`~sppo_rl.zoo.samplers.TrialSeededSampler`): a study resumed or joined with the same seed does not
    propose its finished trials' parameters again.

    :param name: the sampler name
    :param n_startup_trials: random trials before TPE models the results
    :param seed: sampler seed
    :return: the sampler
    :raises ZooError: for an unknown name
    """
    if name == "tpe":
        return TrialSeededSampler(lambda trial_seed: _tpe(n_startup_trials, trial_seed), seed)
    if name == "random":
        return TrialSeededSampler(lambda trial_seed: optuna.samplers.RandomSampler(seed=trial_seed), seed)
    raise ZooError(f"Unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")


def make_pruner(name: str, n_startup_trials: int, n_evaluations: int) -> optuna.pruners.BasePruner:
    """``median`` (after ``n_startup_trials`` trials and a third of the evaluations), ``halving`` (successive
    halving) or ``none``.

    :param name: the pruner name
    :param n_startup_trials: trials before the median pruner acts
    :param n_evaluations: evaluation points per trial
    :return: the pruner
    :raises ZooError: for an unknown name
    """
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_evaluations // 3)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ZooError(f"Unknown pruner {name!r}; choose from {', '.join(PRUNERS)}")


def _non_finite_parameter(model: BaseAlgorithm) -> str | None:
    for name, param in model.policy.named_parameters():
        if not torch.isfinite(param).all():
            return name
    return None


class _DivergenceCallback(BaseCallback):
    """Raise :class:`DivergedError` after an update that left non-finite parameters."""

    def _check(self) -> None:
        name = _non_finite_parameter(self.model)
        if name is not None:
            raise DivergedError(f"non-finite parameter {name} after {self.num_timesteps} steps")

    def _on_rollout_start(self) -> None:
        self._check()

    def _on_training_end(self) -> None:
        self._check()

    def _on_step(self) -> bool:
        return True


class _SeedRun:
    """One seed of a trial: its model, training env and evaluation env, trained in segments.

    The model's progress (for ``lin_`` schedules) is measured against the whole budget, not the segment.
    """

    def __init__(
        self,
        spec: AlgoSpec,
        hyperparams: Hyperparams,
        factory: EnvFactory,
        seed: int,
        n_timesteps: int,
        reports_success: bool,
        settings: TuneSettings,
    ) -> None:
        self.seed = seed
        self.eval_seed = 10_000 + seed
        self.env: VecEnv = make_envs(factory, hyperparams, seed, None, settings.vec_env, reports_success)
        self.eval_env: VecEnv = make_vec(factory, 1, self.eval_seed, hyperparams.env_kwargs)
        if hyperparams.normalize is not None:
            self.eval_env = VecNormalize(self.eval_env, training=False, norm_reward=False)
        try:
            self.model = create_model(spec, hyperparams, self.env, seed, device=settings.device)
        except Exception:
            self.close()
            raise
        # SB3 computes the progress of a learn() call from that call's budget; training in segments would
        # restart lin_ schedules at every segment, so the progress is pinned to the whole budget.
        update = self.model._update_current_progress_remaining
        self.model._update_current_progress_remaining = lambda done, _total: update(done, n_timesteps)  # type: ignore[method-assign, assignment]

    def train_until(self, timesteps: int) -> None:
        """Train until the model has taken ``timesteps`` steps (a rollout may overshoot)."""
        remaining = timesteps - self.model.num_timesteps
        if remaining > 0:
            self.model.learn(remaining, callback=_DivergenceCallback(), reset_num_timesteps=False)

    def evaluate(self, n_episodes: int, deterministic: bool) -> EpisodeStats:
        """Evaluate on the same start states every time (the evaluation env is reseeded)."""
        if isinstance(self.eval_env, VecNormalize):
            sync_envs_normalization(self.env, self.eval_env)
        self.eval_env.seed(self.eval_seed)
        return run_episodes(self.model, self.eval_env, n_episodes, deterministic)

    def diverged(self) -> str | None:
        """The name of a non-finite parameter, if any."""
        name = _non_finite_parameter(self.model)
        return None if name is None else f"non-finite parameter {name} after {self.model.num_timesteps} steps"

    def close(self) -> None:
        self.env.close()
        self.eval_env.close()


def _json_ready(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class _Objective:
    """Train and evaluate the seeds of one trial; returns the aggregate metric at the last evaluation."""

    def __init__(
        self,
        settings: TuneSettings,
        spec: AlgoSpec,
        factory: EnvFactory,
        entry: dict[str, Any],
        context: SearchContext,
        objective: ObjectiveSpec,
        search_space: SearchSpace,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.factory = factory
        self.entry = entry
        self.context = context
        self.objective = objective
        self.search_space = search_space
        self.stop = stop
        self.aggregate = OBJECTIVES[objective.aggregate]

    def _metric(self, stats: EpisodeStats) -> float:
        if self.objective.metric == "success_rate":
            if stats.success_rate is None:
                raise RuntimeError("the evaluation episodes did not all report info['is_success']")
            return stats.success_rate
        return stats.mean_return

    def __call__(self, trial: optuna.Trial) -> float:
        sampled = self.search_space(trial, self.context)
        if not isinstance(sampled, dict):
            raise TypeError(f"the search space returned {type(sampled).__name__}, not a dict of hyperparameters")
        raw = {**self.entry, **sampled, "n_timesteps": self.objective.n_timesteps}
        trial.set_user_attr("hyperparams", _json_ready(raw))
        hyperparams = build_hyperparams(raw, self.spec, f"trial {trial.number}")
        seeds = [self.settings.seed + k for k in range(self.objective.n_seeds)]
        trial.set_user_attr("seeds", seeds)
        n_timesteps, n_points = self.objective.n_timesteps, self.objective.n_evaluations
        targets = [round(n_timesteps * i / n_points) for i in range(1, n_points + 1)]
        runs: list[_SeedRun] = []
        try:
            for seed in seeds:
                runs.append(
                    _SeedRun(
                        self.spec,
                        hyperparams,
                        self.factory,
                        seed,
                        n_timesteps,
                        self.context.reports_success,
                        self.settings,
                    )
                )
            value = math.nan
            for step, target in enumerate(targets, start=1):
                values = []
                for run in runs:
                    if self.stop.is_set():
                        raise _Interrupted("interrupted: the tuning run was stopped")
                    run.train_until(target)
                    values.append(
                        self._metric(run.evaluate(self.objective.eval_episodes, self.objective.deterministic))
                    )
                value = self.aggregate(values)
                trial.set_user_attr("values_per_seed", values)
                trial.set_user_attr("timesteps", int(np.mean([run.model.num_timesteps for run in runs])))
                if not math.isfinite(value):
                    raise DivergedError(f"non-finite {self.objective.metric} at evaluation {step}")
                trial.report(value, step)
                if trial.should_prune():
                    raise optuna.TrialPruned(
                        f"pruned by the {self.settings.pruner} pruner at evaluation {step}/{n_points} "
                        f"({self.objective.metric} {value:.4g})"
                    )
            return value
        except (optuna.TrialPruned, DivergedError, _Interrupted):
            raise
        except Exception as err:
            reason = next((r for r in (run.diverged() for run in runs) if r), None)
            if reason is not None:
                raise DivergedError(f"{reason} ({type(err).__name__}: {err})") from err
            raise
        finally:
            for run in runs:
                run.close()


def count_budget(study: optuna.Study) -> tuple[int, int]:
    """Trials that count toward ``--n-trials``, and trials running now.

    Counted: complete, pruned, and failed with an error (``fail_kind == "error"``). Not counted: trials failed
    because their process died (stale) or was interrupted; they are run again.

    :param study: the study
    :return: ``(counted finished trials, running trials)``
    """
    finished = running = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
            trial.state == TrialState.FAIL and trial.user_attrs.get(FAIL_KIND) == "error"
        ):
            finished += 1
        elif trial.state == TrialState.RUNNING:
            running += 1
    return finished, running


def _one_line(text: str, limit: int = 500) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Worker:
    """Ask for trials while the study's budget allows, run them, and tell the results."""

    def __init__(
        self,
        study: optuna.Study,
        storage: StudyStorage,
        objective: _Objective,
        n_trials: int,
        stop: threading.Event,
        verbose: int,
        poll_seconds: float,
    ) -> None:
        self.study = study
        self.storage = storage
        self.objective = objective
        self.n_trials = n_trials
        self.stop = stop
        self.verbose = verbose
        self.poll_seconds = poll_seconds

    def _next_trial(self) -> optuna.Trial | bool | None:
        """A new trial, ``None`` to wait for running ones, or ``False`` when the budget is spent."""
        with self.storage.budget_lock(self.study.study_name):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            finished, running = count_budget(self.study)
            if finished >= self.n_trials:
                return False
            if finished + running >= self.n_trials:
                return None
            with warnings.catch_warnings():  # Optuna warns that heartbeats are meant for optimize(); see run()
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                return self.study.ask()

    def run(self) -> None:
        """Run trials until the study has ``n_trials`` counted trials or the run is stopped.

        Trials go through ``ask``/``tell`` rather than ``Study.optimize`` so that counting the trials and starting
        one happen under one lock; heartbeats are sent as ``optimize`` sends them.
        """
        while not self.stop.is_set():
            trial = self._next_trial()
            if trial is False:
                return
            if trial is None:
                self.stop.wait(self.poll_seconds)
                continue
            assert isinstance(trial, optuna.Trial)
            with Heartbeat(self.storage, trial._trial_id):
                self._run_trial(trial)

    def _run_trial(self, trial: optuna.Trial) -> None:
        """Run one trial and tell its result.

        A trial that another process has failed in the meantime (its heartbeats came too late: a stalled machine or
        network) cannot take its result any more: the result is dropped, and the trial (FAIL, not counted) is run
        again, as for a dead process.
        """
        try:
            self._run_and_tell(trial)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._report(trial.number, "DROPPED", "failed meanwhile by another process (no heartbeat in time)")

    def _tell(self, trial: optuna.Trial, state: TrialState, value: float | None = None) -> None:
        told = self.study.tell(trial, value, state=state, skip_if_finished=True)
        if told.state != state:
            raise optuna.exceptions.UpdateFinishedTrialError(f"trial {trial.number} is already {told.state.name}")

    def _run_and_tell(self, trial: optuna.Trial) -> None:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        try:
            value = self.objective(trial)
        except (optuna.TrialPruned, DivergedError) as err:
            reason = str(err) or "pruned"
            if isinstance(err, DivergedError):
                reason = f"diverged: {err}"
            trial.set_user_attr("pruned_reason", _one_line(reason))
            self._tell(trial, TrialState.PRUNED)
            self._report(trial.number, "PRUNED", reason)
        except (_Interrupted, KeyboardInterrupt) as err:
            self.stop.set()
            trial.set_user_attr(FAIL_KIND, "interrupted")
            trial.set_user_attr("fail_reason", _one_line(str(err) or "interrupted (KeyboardInterrupt)"))
            self._tell(trial, TrialState.FAIL)
            self._report(trial.number, "FAIL", "interrupted")
            if isinstance(err, KeyboardInterrupt):
                raise
        except optuna.exceptions.UpdateFinishedTrialError:
            raise
        except Exception as err:  # any failure of one trial: record it and go on with the study
            reason = _one_line(f"{type(err).__name__}: {err}")
            trial.set_user_attr(FAIL_KIND, "error")
            trial.set_user_attr("fail_reason", reason)
            self._tell(trial, TrialState.FAIL)
            self._report(trial.number, "FAIL", reason)
        else:
            self._tell(trial, TrialState.COMPLETE, value)
            per_seed = ", ".join(f"{v:.3g}" for v in trial.user_attrs.get("values_per_seed", []))
            self._report(trial.number, "COMPLETE", f"{self.objective.objective.metric} {value:.4g} (seeds: {per_seed})")

    def _report(self, number: int, state: str, detail: str) -> None:
        if self.verbose:
            print(f"Trial {number} {state}: {detail}", flush=True)


def _study_name(settings: TuneSettings, factory: EnvFactory) -> str:
    return settings.study_name or f"{settings.algo}-{factory.folder_name}"


def _check_study(study: optuna.Study, objective: ObjectiveSpec) -> None:
    """Store what the trial values mean in a new study; refuse to mix in trials of another meaning."""
    stored = study.user_attrs.get("zoo_objective")
    current = asdict(objective)
    if stored is None:
        study.set_user_attr("zoo_objective", current)
        study.set_user_attr("zoo_objective_text", objective.describe())
        return
    differences = [f"{k}={stored.get(k)!r} there, {v!r} here" for k, v in current.items() if stored.get(k) != v]
    if differences:
        raise ZooError(
            f"Study {study.study_name!r} was created with other settings ({'; '.join(differences)}): "
            "use the same settings or another --study-name"
        )


def tune(settings: TuneSettings) -> dict[str, Any]:
    """Run (or resume, or join) a study and write its results.

    :param settings: what to do
    :return: the summary (also written to ``summary.json``)
    :raises ZooError: for bad input
    """
    spec = get_algo(settings.algo)
    for name, value in (
        ("--n-trials", settings.n_trials),
        ("--n-jobs", settings.n_jobs),
        ("--n-evaluations", settings.n_evaluations),
        ("--n-seeds-per-trial", settings.n_seeds_per_trial),
        ("--eval-episodes", settings.eval_episodes),
    ):
        if value < 1:
            raise ZooError(f"{name} must be at least 1, got {value}")
    if settings.objective not in OBJECTIVES:
        raise ZooError(f"Unknown objective {settings.objective!r}; choose from {', '.join(OBJECTIVES)}")
    sampler = make_sampler(settings.sampler, settings.n_startup_trials, settings.sampler_seed)
    pruner = make_pruner(settings.pruner, settings.n_startup_trials, settings.n_evaluations)
    search_space = load_search_space(settings.search_space) if settings.search_space else spec.search_space
    if search_space is None:
        raise ZooError(f"{spec.name} has no search space; pass --search-space module:function")
    factory = resolve_env(settings.env_id, settings.gym_packages)
    overrides = parse_overrides(settings.params)
    entry, source = entry_for(spec, settings.env_id, settings.conf_file, overrides)
    base = build_hyperparams(entry, spec, source)
    n_timesteps = settings.n_timesteps if settings.n_timesteps > 0 else base.n_timesteps
    if n_timesteps is None:
        raise ZooError(f"No n_timesteps in {source}: add it to the entry or pass -n")
    reports_success = probe_success(factory, base.env_kwargs)
    objective_spec = ObjectiveSpec(
        algo=spec.name,
        env=settings.env_id,
        metric="success_rate" if reports_success else "mean_return",
        aggregate=settings.objective,
        n_seeds=settings.n_seeds_per_trial,
        n_timesteps=int(n_timesteps),
        n_evaluations=settings.n_evaluations,
        eval_episodes=settings.eval_episodes,
        deterministic=settings.deterministic_eval,
    )
    storage = open_storage(settings.storage, settings.heartbeat_interval)
    study_name = _study_name(settings, factory)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage.storage,
        sampler=sampler,
        pruner=pruner,
        study_name=study_name,
        direction="maximize",
        load_if_exists=True,
    )
    _check_study(study, objective_spec)
    if settings.num_threads > 0:
        torch.set_num_threads(settings.num_threads)

    finished = count_budget(study)[0]
    if settings.verbose:
        print(f"Study {study_name!r} ({storage.description}): {finished} of {settings.n_trials} trials done")
        print(f"Objective (maximised): {objective_spec.describe()}")
        print(f"Sampler {settings.sampler}, pruner {settings.pruner}; hyperparameters start from {source}")

    stop = threading.Event()
    context = SearchContext(settings.env_id, base.n_envs, reports_success, dict(entry), frozenset(overrides))
    objective = _Objective(settings, spec, factory, entry, context, objective_spec, search_space, stop)
    poll = max(0.5, min(5.0, settings.heartbeat_interval / 2))
    workers = [
        _Worker(study, storage, objective, settings.n_trials, stop, settings.verbose, poll)
        for _ in range(settings.n_jobs)
    ]
    interrupted = False
    try:
        if len(workers) == 1:
            workers[0].run()
        else:
            with ThreadPoolExecutor(max_workers=len(workers), thread_name_prefix="trial") as pool:
                futures = [pool.submit(worker.run) for worker in workers]
                try:
                    for future in futures:
                        future.result()
                except KeyboardInterrupt:
                    stop.set()
                    raise
    except KeyboardInterrupt:
        interrupted = True
        print("Interrupted: writing the results so far", file=sys.stderr)
    return _write_outputs(study, settings, storage, objective_spec, source, interrupted)


def _counts(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def _best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial
        return None


def _write_outputs(
    study: optuna.Study,
    settings: TuneSettings,
    storage: StudyStorage,
    objective: ObjectiveSpec,
    source: str,
    interrupted: bool,
) -> dict[str, Any]:
    out_dir = Path(settings.log_folder) / objective.algo / f"tune_{re.sub(r'[^A-Za-z0-9_.-]+', '-', study.study_name)}"
    make_folder(out_dir)
    files: dict[str, str] = {}
    frame = study.trials_dataframe()
    csv_path = out_dir / "trials.csv"
    frame.to_csv(csv_path, index=False)
    files["trials"] = str(csv_path)

    best = _best_trial(study)
    command = hide_password(settings.command or shlex.join(sys.argv))
    if best is not None:
        entry = dict(best.user_attrs.get("hyperparams", {}))
        comment = (
            f"tuned with: {command}\n"
            f"study {study.study_name!r} ({storage.description}): best of {len(study.trials)} trials is trial "
            f"{best.number}, value {best.value:.4g}\n"
            f"objective: {objective.describe()}\n"
            f"hyperparameters started from {source}"
        )
        best_path = out_dir / "best_hyperparams.yml"
        dump_yaml({objective.env: entry}, best_path, comment=comment)
        files["best_hyperparams"] = str(best_path)
    plots = save_study_plots(study, out_dir)
    files.update({k: v for k, v in plots.items() if not v.startswith("skipped")})

    summary: dict[str, Any] = {
        "study_name": study.study_name,
        "storage": storage.description,
        "objective": asdict(objective),
        "objective_text": objective.describe(),
        "n_trials_requested": settings.n_trials,
        "trials_by_state": _counts(study),
        "counted_trials": count_budget(study)[0],
        "interrupted": interrupted,
        "best": None
        if best is None
        else {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "hyperparams": best.user_attrs.get("hyperparams"),
            "values_per_seed": best.user_attrs.get("values_per_seed"),
        },
        "files": files,
        "skipped": {k: v for k, v in plots.items() if v.startswith("skipped")},
    }
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if settings.verbose:
        states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary["trials_by_state"].items()))
        print(f"Study {study.study_name!r}: {states}")
        if best is None:
            print("No complete trial: no best hyperparameters written")
        else:
            print(f"Best trial {best.number}: {objective.metric} {best.value:.4g} ({objective.describe()})")
            print(f"Best hyperparameters: {files['best_hyperparams']} (use with: sppo-zoo train -conf FILE)")
        for name, reason in summary["skipped"].items():
            print(f"{name}: {reason}")
        print(f"Trials: {csv_path}; summary: {summary_path}")
    return summary
