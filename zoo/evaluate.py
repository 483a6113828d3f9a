"""``sppo-zoo eval``: load a run and measure its success rate and return; optionally record a GIF.

The GIF is written with Pillow (a dependency of matplotlib) from the env's ``rgb_array`` frames, so no
video library (moviepy, ffmpeg) is needed.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

from .algos import get_algo
from .environments import EnvFactory, make_vec, resolve_env
from .errors import ZooError
from .hyperparams import build_hyperparams, load_yaml
from .runs import RunPaths, find_run
from .train import BEST_VECNORMALIZE, load_model

__all__ = ["EpisodeStats", "EvalSettings", "evaluate", "record_gif", "run_episodes"]


@dataclass
class EpisodeStats:
    """Returns, lengths and (when the env reports them) successes of evaluation episodes.

    :param returns: the summed reward of each episode (the env's own reward, before any normalisation)
    :param lengths: the number of steps of each episode
    :param successes: ``info["is_success"]`` at the end of each episode, ``None`` if the env reports none
    """

    returns: list[float]
    lengths: list[int]
    successes: list[bool] | None = None

    @property
    def n_episodes(self) -> int:
        """Number of episodes."""
        return len(self.returns)

    @property
    def mean_return(self) -> float:
        """Mean episode return."""
        return float(np.mean(self.returns)) if self.returns else math.nan

    @property
    def std_return(self) -> float:
        """Standard deviation of the episode returns."""
        return float(np.std(self.returns)) if self.returns else math.nan

    @property
    def success_rate(self) -> float | None:
        """Fraction of successful episodes (``None`` if the env reports no ``is_success``)."""
        if self.successes is None or not self.successes:
            return None
        return float(np.mean(self.successes))

    @property
    def metric_name(self) -> str:
        """``success_rate`` when the env reports success, else ``mean_return``."""
        return "success_rate" if self.success_rate is not None else "mean_return"

    @property
    def metric(self) -> float:
        """The success rate when available, else the mean return."""
        rate = self.success_rate
        return rate if rate is not None else self.mean_return

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "n_episodes": self.n_episodes,
            "success_rate": self.success_rate,
            "n_successes": None if self.successes is None else int(sum(self.successes)),
            "mean_return": self.mean_return,
            "std_return": self.std_return,
            "mean_length": float(np.mean(self.lengths)) if self.lengths else math.nan,
            "metric": self.metric_name,
        }


def run_episodes(model: BaseAlgorithm, env: VecEnv, n_episodes: int, deterministic: bool = True) -> EpisodeStats:
    """Play ``n_episodes`` episodes (spread evenly over the envs, as SB3's ``evaluate_policy``).

    :param model: the agent
    :param env: a Monitor-wrapped vector env (with frozen ``VecNormalize`` statistics if the model uses them)
    :param n_episodes: episodes to play
    :param deterministic: deterministic actions
    :return: the episodes' statistics
    """
    successes: list[bool] = []

    def record_success(locals_: dict[str, Any], _globals: dict[str, Any]) -> None:
        if locals_["done"] and "is_success" in locals_["info"]:
            successes.append(bool(locals_["info"]["is_success"]))

    returns, lengths = evaluate_policy(
        model,  # type: ignore[arg-type]
        env,
        n_eval_episodes=n_episodes,
        deterministic=deterministic,
        callback=record_success,
        return_episode_rewards=True,
        warn=False,
    )
    returns_list = [float(r) for r in returns]  # type: ignore[union-attr]
    return EpisodeStats(
        returns_list,
        [int(n) for n in lengths],  # type: ignore[union-attr]
        successes if len(successes) == len(returns_list) else None,
    )


def _frozen(env: VecEnv, path: Path | None) -> VecEnv:
    if path is None:
        return env
    normalized = VecNormalize.load(str(path), env)
    normalized.training = False
    normalized.norm_reward = False
    return normalized


def record_gif(
    model: BaseAlgorithm,
    factory: EnvFactory,
    env_kwargs: dict[str, Any],
    path: str | Path,
    n_steps: int = 300,
    vecnormalize_path: Path | None = None,
    deterministic: bool = True,
    seed: int = 0,
    fps: int | None = None,
) -> Path:
    """Play ``n_steps`` steps and write the ``rgb_array`` frames as an animated GIF (Pillow).

    :param model: the agent
    :param factory: the env constructor (it must accept ``render_mode="rgb_array"``)
    :param env_kwargs: keyword arguments of the env
    :param path: the ``.gif`` file
    :param n_steps: steps to record (episodes restart when they end)
    :param vecnormalize_path: observation statistics of the model
    :param deterministic: deterministic actions
    :param seed: reset seed
    :param fps: frames per second (default: the env's ``render_fps``, else 30)
    :return: the file written
    :raises ZooError: if the env cannot render ``rgb_array`` frames
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():  # gymnasium warns before the env itself refuses the render mode
            warnings.simplefilter("ignore", UserWarning)
            env = factory(render_mode="rgb_array", **env_kwargs)
    except TypeError as err:
        raise ZooError(f"{factory.env_id} cannot render rgb_array frames: {err}") from err
    vec = _frozen(DummyVecEnv([lambda: env]), vecnormalize_path)
    vec.seed(seed)
    obs = vec.reset()
    frames = [env.render()]
    if frames[0] is None:
        vec.close()
        raise ZooError(f"{factory.env_id} returned no rgb_array frame: it cannot be recorded")
    for _ in range(n_steps):
        action, _ = model.predict(obs, deterministic=deterministic)  # type: ignore[arg-type]
        obs, _, _, _ = vec.step(action)
        frames.append(env.render())
    fps = fps or int(env.metadata.get("render_fps") or 30)
    vec.close()
    images = [Image.fromarray(np.asarray(frame, dtype=np.uint8)) for frame in frames if frame is not None]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0)
    return path


@dataclass
class EvalSettings:
    """What ``sppo-zoo eval`` was asked for.

    :param algo: the algorithm name
    :param env_id: the environment id
    :param log_folder: ``-f``, where the runs are
    :param exp_id: the experiment id, 0 for the latest
    :param n_episodes: ``-n``: episodes to play
    :param load_best: load ``best_model.zip`` instead of the final model
    :param load_checkpoint: load the checkpoint of this many steps instead
    :param deterministic: deterministic actions (``--stochastic`` turns this off)
    :param seed: seed of the evaluation envs
    :param n_envs: evaluation envs stepped together
    :param device: torch device
    :param gym_packages: modules to import for their env registrations (added to the run's own)
    :param json_path: where the JSON summary goes (default ``<run>/eval_<model>.json``; ``-``: stdout only)
    :param video: also record a GIF
    :param video_length: steps in the GIF
    :param video_path: the GIF file (default ``<run>/videos/<env>_<model>.gif``)
    :param verbose: print the summary
    """

    algo: str
    env_id: str
    log_folder: str = "logs"
    exp_id: int = 0
    n_episodes: int = 100
    load_best: bool = False
    load_checkpoint: int | None = None
    deterministic: bool = True
    seed: int = 0
    n_envs: int = 1
    device: str = "auto"
    gym_packages: Sequence[str] = field(default_factory=tuple)
    json_path: str | None = None
    video: bool = False
    video_length: int = 300
    video_path: str | None = None
    verbose: int = 1


def _model_files(paths: RunPaths, settings: EvalSettings) -> tuple[str, Path, Path | None]:
    """(label, model file, VecNormalize statistics or None) of the model to evaluate."""
    if settings.load_best and settings.load_checkpoint is not None:
        raise ZooError("--load-best and --load-checkpoint exclude each other")
    if settings.load_best:
        stats = paths.root / BEST_VECNORMALIZE
        return "best", paths.best_model, stats if stats.is_file() else _existing(paths.vecnormalize)
    if settings.load_checkpoint is not None:
        steps = settings.load_checkpoint
        return f"checkpoint_{steps}", paths.checkpoint(steps), _existing(paths.checkpoint_vecnormalize(steps))
    return "final", paths.final_model, _existing(paths.vecnormalize)


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def evaluate(settings: EvalSettings) -> dict[str, Any]:
    """Evaluate a saved run: success rate and mean return over ``n_episodes`` episodes.

    :param settings: what to evaluate
    :return: the JSON summary (also written to ``json_path``)
    :raises ZooError: if the run, its model or its env cannot be found
    """
    spec = get_algo(settings.algo)
    env_name = EnvFactory(settings.env_id).folder_name
    paths = find_run(settings.log_folder, spec.name, env_name, settings.exp_id)
    run_args = load_yaml(paths.args) if paths.args.is_file() else {}
    packages = list(dict.fromkeys([*run_args.get("gym_packages", []), *settings.gym_packages]))
    factory = resolve_env(settings.env_id, packages)
    raw = load_yaml(paths.config) if paths.config.is_file() else {}
    hyperparams = build_hyperparams(raw, spec, str(paths.config))
    label, model_path, stats_path = _model_files(paths, settings)
    if not model_path.is_file():
        hint = " (it is saved by the periodic evaluations: train with --eval-freq > 0)" if label == "best" else ""
        raise ZooError(f"No model {model_path.name} in {paths.root}{hint}")
    if hyperparams.normalize is not None and stats_path is None:
        raise ZooError(f"The run used VecNormalize but {paths.root} has no statistics for the {label} model")

    env = _frozen(make_vec(factory, settings.n_envs, settings.seed, hyperparams.env_kwargs), stats_path)
    model = load_model(spec, model_path, env, device=settings.device)
    stats = run_episodes(model, env, settings.n_episodes, settings.deterministic)
    env.close()
    summary: dict[str, Any] = {
        "algo": spec.name,
        "env": settings.env_id,
        "run": str(paths.root),
        "model": str(model_path),
        "deterministic": settings.deterministic,
        "seed": settings.seed,
        **stats.to_dict(),
    }
    if settings.video:
        gif = Path(settings.video_path) if settings.video_path else paths.root / "videos" / f"{env_name}_{label}.gif"
        summary["video"] = str(
            record_gif(
                model,
                factory,
                hyperparams.env_kwargs,
                gif,
                settings.video_length,
                stats_path,
                settings.deterministic,
                settings.seed,
            )
        )
    text = json.dumps(summary, indent=2)
    if settings.json_path == "-":
        print(text)
        return summary
    json_path = Path(settings.json_path) if settings.json_path else paths.root / f"eval_{label}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(text + "\n")
    if settings.verbose:
        _print_summary(summary, json_path)
    return summary


def _print_summary(summary: dict[str, Any], json_path: Path) -> None:
    mode = "deterministic" if summary["deterministic"] else "stochastic"
    print(f"{summary['algo']} on {summary['env']}: {summary['model']} ({summary['n_episodes']} episodes, {mode})")
    if summary["success_rate"] is not None:
        print(f"  success rate: {summary['success_rate']:.3f} ({summary['n_successes']}/{summary['n_episodes']})")
    else:
        print("  success rate: n/a (the env reports no is_success)")
    print(f"  mean return:  {summary['mean_return']:.3f} +/- {summary['std_return']:.3f}")
    print(f"  mean length:  {summary['mean_length']:.1f}")
    if "video" in summary:
        print(f"  video: {summary['video']}")
    print(f"  JSON: {json_path}")
