"""Run folders, laid out as rl-baselines3-zoo lays them out.

``<log folder>/<algo>/<env>_<exp id>/``::

    <env>.zip                 the final model
    best_model.zip            the best model of the periodic evaluations (EvalCallback)
    evaluations.npz           the periodic evaluations (timesteps, results, ep_lengths, successes)
    rl_model_<n>_steps.zip    checkpoints (--save-freq), with rl_model_vecnormalize_<n>_steps.pkl
    <i>.monitor.csv           one Monitor file per training env (with is_success when the env reports it)
    command.txt               the command line
    <env>/config.yml          the hyperparameters used (YAML, reusable with -conf after keying by env id)
    <env>/args.yml            the command-line arguments
    <env>/vecnormalize.pkl    VecNormalize statistics (when normalize is set)

Experiment ids count from 1; ``--exp-id 0`` means the latest run. A run that fails before it has saved a model
(bad hyperparameters, an env that cannot be built...) removes its folder (:func:`removed_on_failure`).
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ZooError

__all__ = [
    "RunPaths",
    "find_run",
    "folder_removed_on_failure",
    "latest_exp_id",
    "make_folder",
    "new_run",
    "removed_on_failure",
]


@dataclass(frozen=True)
class RunPaths:
    """The files of one run.

    :param root: the run folder ``<log folder>/<algo>/<env>_<exp id>``
    :param env_name: the env id as used in file names
    """

    root: Path
    env_name: str

    @property
    def exp_id(self) -> int:
        """The experiment id (the number after the last ``_`` of the folder name)."""
        return int(self.root.name.rsplit("_", 1)[1])

    @property
    def params_dir(self) -> Path:
        """``<run>/<env>/``: config, arguments and VecNormalize statistics."""
        return self.root / self.env_name

    @property
    def final_model(self) -> Path:
        """``<run>/<env>.zip``."""
        return self.root / f"{self.env_name}.zip"

    @property
    def best_model(self) -> Path:
        """``<run>/best_model.zip``."""
        return self.root / "best_model.zip"

    @property
    def vecnormalize(self) -> Path:
        """``<run>/<env>/vecnormalize.pkl``."""
        return self.params_dir / "vecnormalize.pkl"

    @property
    def config(self) -> Path:
        """``<run>/<env>/config.yml``: the hyperparameters."""
        return self.params_dir / "config.yml"

    @property
    def args(self) -> Path:
        """``<run>/<env>/args.yml``: the command-line arguments."""
        return self.params_dir / "args.yml"

    @property
    def command(self) -> Path:
        """``<run>/command.txt``."""
        return self.root / "command.txt"

    def checkpoint(self, steps: int) -> Path:
        """``<run>/rl_model_<steps>_steps.zip``."""
        return self.root / f"rl_model_{steps}_steps.zip"

    def checkpoint_vecnormalize(self, steps: int) -> Path:
        """``<run>/rl_model_vecnormalize_<steps>_steps.pkl``."""
        return self.root / f"rl_model_vecnormalize_{steps}_steps.pkl"


def make_folder(folder: Path) -> None:
    """``folder.mkdir(parents=True, exist_ok=True)``, with a one-line error.

    :param folder: the folder
    :raises ZooError: if it cannot be created (a file in the way, no permission...)
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ZooError(f"Cannot create the folder {folder} ({err.strerror or err})") from None


def _exp_ids(algo_dir: Path, env_name: str) -> list[int]:
    pattern = re.compile(rf"^{re.escape(env_name)}_(\d+)$")
    if not algo_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in algo_dir.iterdir() if p.is_dir() and (m := pattern.match(p.name)))


def latest_exp_id(log_folder: str | Path, algo: str, env_name: str) -> int:
    """The largest experiment id of ``env_name`` runs under ``<log folder>/<algo>`` (0 if none)."""
    ids = _exp_ids(Path(log_folder) / algo, env_name)
    return ids[-1] if ids else 0


def new_run(log_folder: str | Path, algo: str, env_name: str) -> RunPaths:
    """Create the folder of a new run with the next experiment id.

    :param log_folder: ``-f``
    :param algo: the algorithm name
    :param env_name: the env id as used in file names
    :return: its paths (the run folder and ``<env>/`` exist)
    """
    algo_dir = Path(log_folder) / algo
    make_folder(algo_dir)
    exp_id = latest_exp_id(log_folder, algo, env_name) + 1
    while True:
        root = algo_dir / f"{env_name}_{exp_id}"
        try:
            root.mkdir()  # atomic: two runs started together get different ids
            break
        except FileExistsError:
            exp_id += 1
    paths = RunPaths(root, env_name)
    paths.params_dir.mkdir()
    return paths


@contextlib.contextmanager
def removed_on_failure(paths: RunPaths) -> Iterator[RunPaths]:
    """Remove the run folder if the ``with`` block raises before any model (``*.zip``) was saved in it.

    :param paths: a run made by :func:`new_run`
    :return: ``paths``, for the block
    """
    try:
        yield paths
    except BaseException:
        if not any(paths.root.glob("*.zip")):
            shutil.rmtree(paths.root, ignore_errors=True)
        raise


@contextlib.contextmanager
def folder_removed_on_failure(folder: Path) -> Iterator[Path]:
    """Create ``folder`` (and its parents); if the ``with`` block raises, remove it again when this call created
    it and it is still empty (an earlier run's results in it are never touched).

    :param folder: the results folder
    :return: ``folder``, for the block
    """
    created = not folder.exists()
    make_folder(folder)
    try:
        yield folder
    except BaseException:
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise


def find_run(log_folder: str | Path, algo: str, env_name: str, exp_id: int = 0) -> RunPaths:
    """An existing run.

    :param log_folder: ``-f``
    :param algo: the algorithm name
    :param env_name: the env id as used in file names
    :param exp_id: the experiment id, 0 for the latest
    :return: its paths
    :raises ZooError: if there is no such run
    """
    algo_dir = Path(log_folder) / algo
    if exp_id == 0:
        exp_id = latest_exp_id(log_folder, algo, env_name)
        if exp_id == 0:
            raise ZooError(f"No {algo} run of {env_name} under {algo_dir}")
    root = algo_dir / f"{env_name}_{exp_id}"
    if not root.is_dir():
        raise ZooError(f"No run folder {root}")
    return RunPaths(root, env_name)
