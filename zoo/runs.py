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

Experiment ids count from 1; ``--exp-id 0`` means the latest run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ZooError

__all__ = ["RunPaths", "find_run", "latest_exp_id", "new_run"]


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
    algo_dir.mkdir(parents=True, exist_ok=True)
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
