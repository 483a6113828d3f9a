"""Run the three-stage control protocol (:mod:`sppo_rl.zoo.protocol`) for one task and write its results.

``sppo-zoo suite --env SparseMountainCar-v0 --algos sppo ppo ppo-sb3 ema --seeds 0 1 2 3 4 --jobs 2`` calls
:func:`run_suite`, which

1. gets the start policy: the committed ``zoo/start_policies/<env id>.pt`` when there is one (and
   ``--rebuild-start`` is not given), otherwise stage 1 (the expert, cached under ``--expert-cache``) and
   stage 2 (successful demonstrations, behaviour cloning) are run and the result is saved there;
2. runs stage 3 for every (algorithm, seed) pair, in ``--jobs`` processes, each with one torch thread;
3. writes ``<out>/<env id>/`` ``curves.json`` (the outcome of every training episode of every run),
   ``summary.json`` (the table below, the settings, versions and wall-clock time) and ``success.png``
   (success rate against episodes, mean and min-max band over seeds), and prints the table: start success,
   final success, episodes to reach 50% and 80% success, and for the algorithms with a sequence critic its
   calibration on held-out start states (:func:`~sppo_rl.zoo.protocol.measure_calibration`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from sppo_rl.processes import exit_with_parent

from .errors import ZooError
from .runs import folder_removed_on_failure

__all__ = [
    "SuiteSettings",
    "format_table",
    "merge_results",
    "plot_curves",
    "prepare_start_policy",
    "run_suite",
    "runs_from_curves",
    "summary_rows",
]

DEFAULT_EXPERT_CACHE = Path(os.environ.get("SPPO_RL_EXPERT_CACHE", Path.home() / ".cache" / "sppo-rl" / "experts"))


@dataclasses.dataclass
class SuiteSettings:
    """What :func:`run_suite` does.

    :param env_id: a sparse task of ``zoo/suite.yml``
    :param algos: stage-3 algorithms (``sppo``, ``ppo``, ``ppo-sb3``, ``ema``, ``batch-mean``)
    :param seeds: one run per algorithm and seed
    :param out_dir: results go to ``<out_dir>/<env_id>/``
    :param jobs: parallel processes for stage 3
    :param episodes: episode budget of every run (default: the task's ``rl.episodes``)
    :param window: episodes per point of the success curve (default: the task's ``rl.window``)
    :param expert_cache: where stage-1 experts are cached
    :param start_policy: the start policy file (default: ``zoo/start_policies/<env_id>.pt``)
    :param rebuild_start: run stages 1 and 2 even if the start policy file exists (and overwrite it)
    :param suite_config: the settings file (default: ``zoo/suite.yml``)
    :param verbose: print progress
    """

    env_id: str
    algos: Sequence[str] = ("sppo", "ppo", "ppo-sb3", "ema")
    seeds: Sequence[int] = (0, 1, 2, 3, 4)
    out_dir: str | Path = "logs/suite"
    jobs: int = 1
    episodes: int | None = None
    window: int | None = None
    expert_cache: str | Path = DEFAULT_EXPERT_CACHE
    start_policy: str | Path | None = None
    rebuild_start: bool = False
    suite_config: str | Path | None = None
    verbose: int = 1


def _log(settings: SuiteSettings, message: str) -> None:
    if settings.verbose:
        print(message, flush=True)


def prepare_start_policy(
    config: Any, path: str | Path, expert_cache: str | Path, rebuild: bool = False, verbose: int = 1
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load the start policy at ``path``, or make it with stages 1 and 2 and save it there.

    :param config: the task's :class:`~sppo_rl.zoo.protocol.TaskConfig`
    :param path: the start policy file
    :param expert_cache: where the stage-1 expert is cached
    :param rebuild: make it even if ``path`` exists
    :param verbose: print progress
    :return: (actor weights, metadata)
    :raises ZooError: if the file was made for another task or another actor architecture
    """
    from . import protocol

    path = Path(path)
    if path.exists() and not rebuild:
        actor, meta = protocol.load_start_policy(path)
        if meta.get("env_id") != config.env_id or list(meta.get("net_arch", [])) != list(config.net_arch):
            raise ZooError(
                f"{path} holds a start policy for {meta.get('env_id')} with net_arch {meta.get('net_arch')}, "
                f"not for {config.env_id} with net_arch {config.net_arch}; pass --rebuild-start to remake it"
            )
        if verbose:
            print(f"Start policy: {path} (success {meta['start_success']:.2f} when it was cloned)", flush=True)
        return actor, meta
    t0 = time.perf_counter()
    if verbose:
        print(f"Stage 1: expert {config.expert['algo']} on {config.dense_id} (cache: {expert_cache})", flush=True)
    expert_path = protocol.train_expert(config, expert_cache, verbose=verbose)
    t1 = time.perf_counter()
    demos = protocol.collect_demonstrations(config, expert_path)
    if verbose:
        print(
            f"Stage 2: {demos.n_episodes} successful expert episodes out of {demos.n_tried} "
            f"({len(demos.observations)} transitions); behaviour cloning",
            flush=True,
        )
    clone = protocol.behaviour_clone(config, demos, verbose=verbose)
    low, high = config.bc.get("target", (0.2, 0.7))
    if not 0.0 < clone.start_success < 1.0:
        raise ZooError(
            f"Behaviour cloning for {config.env_id} gave a start success of {clone.start_success:.2f}; the protocol "
            f"needs a non-zero but imperfect start (target band {low}-{high}): change bc or expert in suite.yml"
        )
    protocol.save_start_policy(path, clone, config, demos)
    actor, meta = protocol.load_start_policy(path)
    meta_seconds = {"expert_seconds": t1 - t0, "clone_seconds": time.perf_counter() - t1}
    if verbose:
        print(
            f"Start policy: success {clone.start_success:.2f} after {clone.epochs} BC epochs, saved to {path} "
            f"(expert {meta_seconds['expert_seconds']:.0f} s, demos + cloning {meta_seconds['clone_seconds']:.0f} s)",
            flush=True,
        )
    meta.update(meta_seconds)
    return actor, meta


def _stage3(job: tuple[str, Any, dict[str, Any], int]) -> Any:
    """One stage-3 run (a top-level function, so that worker processes can run it)."""
    from . import protocol

    algo, config, actor, seed = job
    return protocol.run_rl(algo, config, actor, seed)


def plot_curves(runs: Sequence[Any], window: int, start_success: float, path: str | Path, title: str) -> None:
    """Success rate against training episodes: per algorithm the mean over seeds and the min-max band.

    :param runs: :class:`~sppo_rl.zoo.protocol.RLRun` objects
    :param window: episodes per point
    :param start_success: the start policy's success rate (a dotted line)
    :param path: the PNG file
    :param title: the figure's title
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for algo in dict.fromkeys(r.algo for r in runs):
        curves = [r.curve(window) for r in runs if r.algo == algo]
        n = min(len(c[1]) for c in curves)
        if n == 0:
            continue
        x = curves[0][0][:n]
        y = np.stack([c[1][:n] for c in curves])
        (line,) = ax.plot(x, y.mean(axis=0), label=f"{algo} ({len(curves)} seeds)")
        ax.fill_between(x, y.min(axis=0), y.max(axis=0), color=line.get_color(), alpha=0.2)
    ax.axhline(start_success, color="grey", linestyle=":", label="start policy")
    ax.set_xlabel("training episodes")
    ax.set_ylabel(f"success rate (per {window} episodes)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(value: float | None, pattern: str = "{:.0f}") -> str:
    return "never" if value is None else pattern.format(value)


def _spread(stat: dict[str, Any] | None, pattern: str = "{:.3f}") -> str:
    """``mean [min, max]`` of a summarised score, or ``n/a``."""
    if stat is None or stat["mean"] is None:
        return "n/a"
    return f"{pattern.format(stat['mean'])} [{pattern.format(stat['min'])}, {pattern.format(stat['max'])}]"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary rows of :func:`~sppo_rl.zoo.protocol.summarize` as a Markdown table.

    The calibration columns (the final critic ``V(s0)`` on held-out start states: Brier score, and Brier skill
    score against the constant predictor) read ``n/a`` for algorithms without a sequence critic.
    """
    lines = [
        "| algorithm | seeds | start success | first-window success | final success (mean [min, max]) "
        "| episodes to 50% | episodes to 80% | critic Brier (mean [min, max]) | critic BSS vs constant "
        "| minutes per run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        reach = []
        for key in ("episodes_to_50", "episodes_to_80"):
            median, per_seed = row[key]["median"], row[key]["per_seed"]
            reached = sum(h is not None for h in per_seed)
            text = _fmt(median) if median is not None else f"{reached}/{len(per_seed)} seeds"
            reach.append(f"{text} ({', '.join(_fmt(h) for h in per_seed)})")
        calibration = row.get("calibration")
        brier = _spread(calibration["brier"]) if calibration else "n/a"
        bss = _spread(calibration["bss"], "{:+.2f}") if calibration else "n/a"
        lines.append(
            f"| {row['algo']} | {len(row['seeds'])} | {row['start_success']:.2f} | {row['first_window_mean']:.2f} "
            f"| {row['final_success_mean']:.2f} [{row['final_success_min']:.2f}, {row['final_success_max']:.2f}] "
            f"| {reach[0]} | {reach[1]} | {brier} | {bss} | {row['seconds_mean'] / 60:.1f} |"
        )
    return "\n".join(lines)


def _calibration_note(run: Any) -> str:
    """``, critic Brier ... (BSS ...)`` for a run whose critic was scored, else an empty string."""
    calibration = run.calibration
    if calibration is None:
        return ""
    bss = calibration["bss"]
    return (
        f", critic Brier {calibration['brier']:.3f} (BSS vs constant {_fmt(bss, '{:+.2f}')}; "
        f"{calibration['seconds']:.0f} s to measure)"
    )


def summary_rows(runs: Sequence[Any], start_success: float, window: int) -> list[dict[str, Any]]:
    """:func:`~sppo_rl.zoo.protocol.summarize`'s rows with ``first_window_mean`` (the mean success of each run's
    first ``window`` episodes), as in ``summary.json``.

    :param runs: :class:`~sppo_rl.zoo.protocol.RLRun` objects
    :param start_success: the start policy's success rate
    :param window: episodes per curve point
    :return: one row per algorithm
    """
    from . import protocol

    rows = protocol.summarize(runs, start_success, window)
    for row in rows:
        firsts = [float(np.mean(r.successes[:window])) for r in runs if r.algo == row["algo"]]
        row["first_window_mean"] = float(np.mean(firsts))
    return rows


def _curves(env_id: str, window: int, start_success: float, runs: Sequence[Any]) -> dict[str, Any]:
    """The content of ``curves.json``."""
    return {
        "env_id": env_id,
        "window": window,
        "start_success": start_success,
        "runs": [
            {
                "algo": r.algo,
                "seed": r.seed,
                "seconds": r.seconds,
                "timesteps": r.timesteps,
                "successes": [int(s) for s in r.successes],
                "calibration": r.calibration,
            }
            for r in runs
        ],
    }


def runs_from_curves(curves: dict[str, Any]) -> list[Any]:
    """The runs of a ``curves.json`` as :class:`~sppo_rl.zoo.protocol.RLRun` objects.

    :param curves: the file's content
    :return: the runs, in the file's order
    """
    from . import protocol

    return [
        protocol.RLRun(
            r["algo"],
            int(r["seed"]),
            [float(x) for x in r["successes"]],
            r["seconds"],
            r["timesteps"],
            r.get("calibration"),
        )
        for r in curves["runs"]
    ]


def merge_results(folders: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Put together the results of several ``sppo-zoo suite`` runs of one task (e.g. seeds 0-2, then 3-4) as if
    one command had run them all: ``curves.json``, ``summary.json`` and ``success.png`` in ``out``.

    The parts must share the task, the window, the episode budget, the start policy and the settings; each
    (algorithm, seed) pair may appear once. ``wall_clock_seconds`` is the sum of the parts' (listed in ``parts``).

    :param folders: the ``<out_dir>/<env id>`` folders of the parts
    :param out: where the merged files go (created)
    :return: the merged ``summary.json`` content
    :raises ZooError: if the parts differ in anything but their runs, or a run appears twice
    """
    parts = [
        (json.loads((Path(f) / "summary.json").read_text()), json.loads((Path(f) / "curves.json").read_text()))
        for f in folders
    ]
    if not parts:
        raise ZooError("merge_results needs at least one folder")
    first = parts[0][0]
    for summary, _ in parts[1:]:
        for key in ("env_id", "episodes", "window", "config"):
            if summary[key] != first[key]:
                raise ZooError(f"Cannot merge: the parts differ in {key} ({summary[key]!r} vs {first[key]!r})")
        if summary["start_policy"]["start_success"] != first["start_policy"]["start_success"]:
            raise ZooError("Cannot merge: the parts started from different start policies")
    runs = [run for _, curves in parts for run in runs_from_curves(curves)]
    keys = [(r.algo, r.seed) for r in runs]
    if len(set(keys)) != len(keys):
        raise ZooError(f"Cannot merge: some (algorithm, seed) pairs appear twice: {sorted(keys)}")
    algos = list(dict.fromkeys(r.algo for r in runs))
    runs.sort(key=lambda r: (r.seed, algos.index(r.algo)))
    start_success = float(first["start_policy"]["start_success"])
    window = int(first["window"])
    rows = summary_rows(runs, start_success, window)
    merged = {
        **first,
        "command": [summary["command"] for summary, _ in parts],
        "algos": algos,
        "seeds": sorted({r.seed for r in runs}),
        "wall_clock_seconds": sum(summary["wall_clock_seconds"] for summary, _ in parts),
        "parts": [
            {
                "folder": str(f),
                "seeds": summary["seeds"],
                "algos": summary["algos"],
                "jobs": summary["jobs"],
                "wall_clock_seconds": summary["wall_clock_seconds"],
                "versions": summary["versions"],
            }
            for f, (summary, _) in zip(folders, parts, strict=True)
        ],
        "rows": rows,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "curves.json").write_text(json.dumps(_curves(first["env_id"], window, start_success, runs)))
    (out / "summary.json").write_text(json.dumps(merged, indent=2, default=str))
    plot_curves(runs, window, start_success, out / "success.png", first["env_id"])
    return merged


def _versions() -> dict[str, str]:
    import gymnasium
    import stable_baselines3
    import torch

    from sppo_rl.version import __version__

    return {
        "sppo_rl": __version__,
        "stable_baselines3": stable_baselines3.__version__,
        "gymnasium": gymnasium.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }


def run_suite(settings: SuiteSettings) -> dict[str, Any]:
    """Run the protocol for one task (start policy, then stage 3 for every algorithm and seed) and write
    ``curves.json``, ``summary.json`` and ``success.png`` under ``<out_dir>/<env_id>/``.

    :param settings: what to run
    :return: the content of ``summary.json``
    :raises ZooError: for an unknown task or algorithm, a bad budget, or an unusable start policy
    """
    from . import protocol

    algos = list(settings.algos)
    unknown = [a for a in algos if a not in protocol.RL_ALGOS]
    if unknown or not algos:
        raise ZooError(f"Unknown stage-3 algorithm(s) {unknown}; choose from {', '.join(protocol.RL_ALGOS)}")
    seeds = [int(s) for s in settings.seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ZooError(f"--seeds must name at least one seed, each once (got {seeds})")
    if settings.jobs < 1:
        raise ZooError(f"--jobs must be at least 1 (got {settings.jobs})")
    try:
        config = protocol.load_task_config(settings.env_id, settings.suite_config or protocol.SUITE_CONFIG)
    except KeyError as err:
        raise ZooError(str(err.args[0])) from None
    if settings.episodes is not None:
        if settings.episodes < 1:
            raise ZooError(f"--episodes must be positive (got {settings.episodes})")
        config.rl["episodes"] = int(settings.episodes)
    episodes = int(config.rl["episodes"])
    window = int(settings.window or config.rl.get("window", max(1, episodes // 30)))
    if not 1 <= window <= episodes:
        raise ZooError(f"--window must be between 1 and the episode budget {episodes} (got {window})")

    out = Path(settings.out_dir) / settings.env_id
    with folder_removed_on_failure(out):
        return _run_stages(settings, config, out, algos, seeds, window)


def _run_stages(
    settings: SuiteSettings, config: Any, out: Path, algos: list[str], seeds: list[int], window: int
) -> dict[str, Any]:
    """Get the start policy, run stage 3, write the results to ``out`` (see :func:`run_suite`)."""
    from . import protocol

    episodes = int(config.rl["episodes"])
    start_path = Path(settings.start_policy) if settings.start_policy else protocol.start_policy_path(settings.env_id)
    wall0 = time.perf_counter()
    actor, meta = prepare_start_policy(
        config, start_path, settings.expert_cache, rebuild=settings.rebuild_start, verbose=settings.verbose
    )
    jobs = [(algo, config, actor, seed) for seed in seeds for algo in algos]
    _log(
        settings,
        f"Stage 3: {', '.join(algos)} x seeds {seeds}, {episodes} episodes each, {settings.jobs} process(es)",
    )
    runs = []
    if settings.jobs == 1:
        for job in jobs:
            runs.append(_stage3(job))
            _log(settings, f"  {job[0]} seed {job[3]}: done in {runs[-1].seconds:.0f} s{_calibration_note(runs[-1])}")
    else:
        # a worker exits when the suite is gone (killed by a signal, it does not shut its pool down)
        spawn, parent = get_context("spawn"), (os.getpid(),)
        with ProcessPoolExecutor(settings.jobs, spawn, initializer=exit_with_parent, initargs=parent) as pool:
            for job, run in zip(jobs, pool.map(_stage3, jobs), strict=True):
                runs.append(run)
                _log(settings, f"  {job[0]} seed {job[3]}: done in {run.seconds:.0f} s{_calibration_note(run)}")
    wall = time.perf_counter() - wall0

    rows = summary_rows(runs, float(meta["start_success"]), window)
    table = format_table(rows)
    curves = _curves(settings.env_id, window, meta["start_success"], runs)
    summary = {
        "env_id": settings.env_id,
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else None,
        "algos": algos,
        "seeds": seeds,
        "episodes": episodes,
        "window": window,
        "jobs": settings.jobs,
        "wall_clock_seconds": wall,
        "start_policy": {"path": str(start_path), **{k: v for k, v in meta.items() if k != "bc_history"}},
        "config": dataclasses.asdict(config),
        "rows": rows,
        "versions": _versions(),
    }
    (out / "curves.json").write_text(json.dumps(curves))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    plot_curves(runs, window, float(meta["start_success"]), out / "success.png", settings.env_id)
    _log(settings, f"\n{settings.env_id}: {episodes} episodes per run, window {window}, wall-clock {wall / 60:.1f} min")
    _log(settings, table)
    _log(settings, f"Wrote {out / 'curves.json'}, {out / 'summary.json'}, {out / 'success.png'}")
    return summary
