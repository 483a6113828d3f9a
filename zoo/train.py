"""``sppo-zoo train``: train one algorithm on one environment from a hyperparameter file, rl-zoo style.

The run folder layout is described in :mod:`sppo_rl.zoo.runs`.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from sppo_rl import EpisodeLengthError, OutcomeError

from .algos import AlgoSpec, get_algo
from .environments import EnvFactory, make_vec, probe_success, resolve_env
from .errors import ZooError
from .hyperparams import Hyperparams, build_hyperparams, dump_yaml, entry_for, parse_overrides
from .runs import RunPaths, new_run, removed_on_failure

__all__ = [
    "BEST_VECNORMALIZE",
    "TrainSettings",
    "create_model",
    "load_model",
    "make_envs",
    "settings_from_args",
    "train",
]

BEST_VECNORMALIZE = "best_vecnormalize.pkl"
"""VecNormalize statistics saved with ``best_model.zip`` (in the run folder)."""

# Keys that describe the networks: fixed once a model exists, so not passed when continuing a run.
_STRUCTURAL_KEYS = ("policy_kwargs", "value_head")


@dataclass
class TrainSettings:
    """What ``sppo-zoo train`` was asked for.

    :param algo: the algorithm name (``sppo``, ``ppo``...)
    :param env_id: the environment id
    :param log_folder: ``-f``: runs go to ``<log_folder>/<algo>/<env>_<exp id>``
    :param conf_file: ``-conf``: a hyperparameter file instead of ``zoo/hyperparams/<algo>.yml``
    :param params: ``-params key:value`` overrides
    :param seed: random seed; negative: drawn at random (and recorded in ``args.yml``)
    :param n_timesteps: ``-n``: training steps (overrides the entry's ``n_timesteps``); when continuing a run,
        the steps to add
    :param eval_freq: evaluate every this many steps (all envs together); ``<= 0``: never
    :param eval_episodes: episodes per evaluation
    :param save_freq: save a checkpoint every this many steps; ``<= 0``: never
    :param vec_env: ``dummy`` or ``subproc``
    :param device: torch device for the model
    :param progress_bar: show a progress bar
    :param trained_agent: ``-i``: continue training this saved model (``.zip``)
    :param gym_packages: modules to import for their env registrations
    :param verbose: SB3 verbosity
    :param tensorboard_log: TensorBoard folder (``None``: none)
    :param log_interval: SB3 ``log_interval`` (``-1``: the algorithm's default)
    :param num_threads: torch threads (1 is the fastest for small MLP policies on CPU; ``<= 0``: torch's default)
    :param deterministic_eval: deterministic actions in the periodic evaluations
    :param command: the command line, written to ``command.txt``
    """

    algo: str
    env_id: str
    log_folder: str = "logs"
    conf_file: str | None = None
    params: Sequence[str] = ()
    seed: int = -1
    n_timesteps: int = -1
    eval_freq: int = 10_000
    eval_episodes: int = 10
    save_freq: int = -1
    vec_env: str = "dummy"
    device: str = "auto"
    progress_bar: bool = False
    trained_agent: str | None = None
    gym_packages: Sequence[str] = field(default_factory=tuple)
    verbose: int = 1
    tensorboard_log: str | None = None
    log_interval: int = -1
    num_threads: int = 1
    deterministic_eval: bool = True
    command: str | None = None


def create_model(
    spec: AlgoSpec,
    hyperparams: Hyperparams,
    env: VecEnv,
    seed: int | None,
    device: str = "auto",
    verbose: int = 0,
    tensorboard_log: str | None = None,
) -> BaseAlgorithm:
    """Build a fresh model.

    :param spec: the algorithm
    :param hyperparams: the resolved entry
    :param env: the training env
    :param seed: random seed
    :param device: torch device
    :param verbose: SB3 verbosity
    :param tensorboard_log: TensorBoard folder
    :return: the model
    :raises ZooError: if the algorithm refuses a hyperparameter value
    """
    try:
        return spec.cls(
            hyperparams.policy,
            env,
            seed=seed,
            device=device,
            verbose=verbose,
            tensorboard_log=tensorboard_log,
            **hyperparams.algo_kwargs,
        )
    except (ValueError, TypeError, KeyError, AssertionError) as err:
        raise ZooError(f"Invalid hyperparameters for {spec.name}: {err}") from err


def load_model(
    spec: AlgoSpec,
    path: str | Path,
    env: VecEnv,
    hyperparams: Hyperparams | None = None,
    seed: int | None = None,
    device: str = "auto",
    verbose: int = 0,
    tensorboard_log: str | None = None,
) -> BaseAlgorithm:
    """Load a saved model onto ``env``, optionally with new (non-structural) hyperparameters.

    :param spec: the algorithm
    :param path: the ``.zip`` file
    :param env: the env to attach
    :param hyperparams: hyperparameters to set (``policy_kwargs`` and ``value_head`` are kept from the model)
    :param seed: random seed
    :param device: torch device
    :param verbose: SB3 verbosity
    :param tensorboard_log: TensorBoard folder
    :return: the model
    :raises ZooError: if the file is missing or does not hold a model of this algorithm
    """
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"No saved model at {path}")
    kwargs = {}
    if hyperparams is not None:
        kwargs = {k: v for k, v in hyperparams.algo_kwargs.items() if k not in _STRUCTURAL_KEYS}
    try:
        model = spec.cls.load(path, env=env, device=device, verbose=verbose, tensorboard_log=tensorboard_log, **kwargs)
    except (ValueError, KeyError, TypeError) as err:
        raise ZooError(f"Cannot load {path} as a {spec.name} model onto this env: {err}") from err
    if seed is not None:
        model.set_random_seed(seed)
    return model


def make_envs(
    factory: EnvFactory,
    hyperparams: Hyperparams,
    seed: int,
    monitor_dir: str | None,
    vec_env: str,
    reports_success: bool,
    vecnormalize_path: Path | None = None,
) -> VecEnv:
    """The training env: ``n_envs`` Monitor-wrapped envs, with ``VecNormalize`` when the entry asks for it.

    :param factory: the env constructor
    :param hyperparams: the resolved entry (``n_envs``, ``env_kwargs``, ``normalize``)
    :param seed: env ``i`` is seeded with ``seed + i``
    :param monitor_dir: where the Monitor files go
    :param vec_env: ``dummy`` or ``subproc``
    :param reports_success: log ``is_success`` in the Monitor files
    :param vecnormalize_path: statistics to start from (continuing a run)
    :return: the vector env
    """
    env = make_vec(
        factory,
        hyperparams.n_envs,
        seed,
        hyperparams.env_kwargs,
        monitor_dir=monitor_dir,
        vec_env=vec_env,
        info_keywords=("is_success",) if reports_success else (),
    )
    if hyperparams.normalize is None:
        return env
    if vecnormalize_path is not None and vecnormalize_path.is_file():
        env = VecNormalize.load(str(vecnormalize_path), env)
        env.training = True
        return env
    try:
        return VecNormalize(env, **hyperparams.normalize)
    except TypeError as err:
        raise ZooError(f"normalize: {err}") from err


class _SaveVecNormalizeOnBest(BaseCallback):
    """Save the training env's VecNormalize statistics next to ``best_model.zip`` at each new best."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def _on_step(self) -> bool:
        vec_normalize = self.model.get_vec_normalize_env()
        if vec_normalize is not None:
            vec_normalize.save(str(self.path))
        return True


def _callbacks(
    settings: TrainSettings,
    factory: EnvFactory,
    hyperparams: Hyperparams,
    paths: RunPaths,
    seed: int,
) -> list[BaseCallback]:
    callbacks: list[BaseCallback] = []
    n_envs = hyperparams.n_envs
    if settings.save_freq > 0:
        callbacks.append(
            CheckpointCallback(
                save_freq=max(settings.save_freq // n_envs, 1),
                save_path=str(paths.root),
                name_prefix="rl_model",
                save_vecnormalize=hyperparams.normalize is not None,
                verbose=settings.verbose,
            )
        )
    if settings.eval_freq > 0:
        eval_env = make_vec(factory, 1, seed + 10_000, hyperparams.env_kwargs)
        if hyperparams.normalize is not None:
            eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
        on_best = _SaveVecNormalizeOnBest(paths.root / BEST_VECNORMALIZE) if hyperparams.normalize is not None else None
        callbacks.append(
            EvalCallback(
                eval_env,
                callback_on_new_best=on_best,
                n_eval_episodes=settings.eval_episodes,
                eval_freq=max(settings.eval_freq // n_envs, 1),
                log_path=str(paths.root),
                best_model_save_path=str(paths.root),
                deterministic=settings.deterministic_eval,
                verbose=settings.verbose,
            )
        )
    return callbacks


def _trained_agent_vecnormalize(trained_agent: Path, env_name: str) -> Path | None:
    """VecNormalize statistics saved with a model: ``<dir>/<env>/vecnormalize.pkl`` (rl-zoo's place), or the
    checkpoint's ``rl_model_vecnormalize_<n>_steps.pkl``."""
    candidates = [trained_agent.parent / env_name / "vecnormalize.pkl"]
    stem = trained_agent.stem
    if stem.startswith("rl_model_") and stem.endswith("_steps"):
        candidates.insert(0, trained_agent.parent / f"rl_model_vecnormalize_{stem[len('rl_model_') :]}.pkl")
    if stem == "best_model":
        candidates.insert(0, trained_agent.parent / BEST_VECNORMALIZE)
    return next((c for c in candidates if c.is_file()), None)


def train(settings: TrainSettings) -> RunPaths:
    """Train (or continue training) and save a run folder.

    :param settings: what to do
    :return: the run's paths
    :raises ZooError: for bad input (unknown algorithm or env, bad hyperparameters, missing model)
    """
    spec = get_algo(settings.algo)
    factory = resolve_env(settings.env_id, settings.gym_packages)
    raw, source = entry_for(spec, settings.env_id, settings.conf_file, parse_overrides(settings.params))
    if settings.n_timesteps > 0:
        raw["n_timesteps"] = settings.n_timesteps
    hyperparams = build_hyperparams(raw, spec, source)
    if hyperparams.n_timesteps is None:
        raise ZooError(f"No n_timesteps in {source}: add it to the entry or pass -n")
    trained_agent = Path(settings.trained_agent) if settings.trained_agent else None
    if trained_agent is not None and (trained_agent.suffix != ".zip" or not trained_agent.is_file()):
        raise ZooError(f"-i {trained_agent}: no such saved model (.zip)")
    reports_success = probe_success(factory, hyperparams.env_kwargs)

    seed = settings.seed if settings.seed >= 0 else int(np.random.randint(2**31 - 1))
    if settings.num_threads > 0:
        torch.set_num_threads(settings.num_threads)
    paths = new_run(settings.log_folder, spec.name, factory.folder_name)
    with removed_on_failure(paths):
        if settings.verbose:
            print(f"Training {spec.name} on {settings.env_id} with {source}, seed {seed}: {paths.root}")
        args = {
            **asdict(settings),
            "seed": seed,
            "params": list(settings.params),
            "gym_packages": list(settings.gym_packages),
        }
        dump_yaml(dict(sorted(args.items())), paths.args)
        dump_yaml(raw, paths.config, comment=f"hyperparameters of this run, from {source}")
        paths.command.write_text((settings.command or shlex.join(sys.argv)) + "\n")

        vecnormalize_path = None
        if trained_agent is not None and hyperparams.normalize is not None:
            vecnormalize_path = _trained_agent_vecnormalize(trained_agent, factory.folder_name)
        env = make_envs(
            factory, hyperparams, seed, str(paths.root), settings.vec_env, reports_success, vecnormalize_path
        )
        try:
            _train_and_save(settings, spec, factory, hyperparams, env, trained_agent, paths, seed)
        finally:
            env.close()
    if settings.verbose:
        print(f"Saved {paths.final_model}")
    return paths


def _train_and_save(
    settings: TrainSettings,
    spec: AlgoSpec,
    factory: EnvFactory,
    hyperparams: Hyperparams,
    env: VecEnv,
    trained_agent: Path | None,
    paths: RunPaths,
    seed: int,
) -> None:
    """Build (or load) the model, train it, and save it with its VecNormalize statistics (also on Ctrl-C)."""
    common: dict[str, Any] = dict(
        seed=seed, device=settings.device, verbose=settings.verbose, tensorboard_log=settings.tensorboard_log
    )
    if trained_agent is not None:
        model = load_model(spec, trained_agent, env, hyperparams, **common)
        model._last_obs = None  # type: ignore[assignment]  # the new envs start with a reset
    else:
        model = create_model(spec, hyperparams, env, **common)

    n_timesteps = hyperparams.n_timesteps
    assert n_timesteps is not None  # checked when the hyperparameters were read
    learn_kwargs: dict[str, Any] = {}
    if settings.log_interval > 0:
        learn_kwargs["log_interval"] = settings.log_interval
    try:
        model.learn(
            n_timesteps,
            callback=_callbacks(settings, factory, hyperparams, paths, seed),
            progress_bar=settings.progress_bar,
            reset_num_timesteps=trained_agent is None,
            **learn_kwargs,
        )
    except KeyboardInterrupt:
        print("Interrupted: saving the model as it is", file=sys.stderr)
    except (EpisodeLengthError, OutcomeError) as err:
        raise ZooError(f"{spec.name} on {settings.env_id}: {err}") from err
    model.save(paths.final_model)
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        vec_normalize.save(str(paths.vecnormalize))


def settings_from_args(args: Mapping[str, Any]) -> TrainSettings:
    """:class:`TrainSettings` from parsed command-line arguments (extra keys are ignored).

    :param args: ``vars(namespace)``
    :return: the settings
    """
    names = TrainSettings.__dataclass_fields__
    return TrainSettings(**{k: v for k, v in args.items() if k in names})
