"""Measure what a uniformly random policy achieves on each task of the sparse control suite.

Runs ``--episodes`` episodes per id (episode ``i`` is reset with seed ``seed + i``; actions are drawn from
the action space seeded with ``seed``), prints a markdown table and writes the numbers as JSON.

Usage::

    python benchmarks/random_policy_success.py                       # 200 episodes per id, seed 0
    python benchmarks/random_policy_success.py --episodes 50 out.json
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import gymnasium
from common import machine_info, markdown_table, write_json
from sppo_rl.envs import DENSE_REWARD_KEY, END_REASON_KEY, IS_SUCCESS_KEY, SUITE, get_task  # registers the ids

DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "random_policy_success.json"


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% for ``z = 1.96``).

    :param successes: the number of successes.
    :param trials: the number of trials (> 0).
    :param z: the normal quantile.
    :return: ``(low, high)``.
    """
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def measure(env_id: str, episodes: int, seed: int) -> dict[str, Any]:
    """Run a random policy on one id.

    :param env_id: a suite id.
    :param episodes: the number of episodes.
    :param seed: the base seed.
    :return: success count and rate with a 95% interval, mean episode length, mean dense return, end reasons.
    """
    env = gymnasium.make(env_id)
    env.action_space.seed(seed)
    successes, lengths, dense_returns, ends = 0, [], [], Counter()
    start = time.perf_counter()
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        length, dense_return = 0, 0.0
        while True:
            _, _, terminated, truncated, info = env.step(env.action_space.sample())
            length += 1
            dense_return += info[DENSE_REWARD_KEY]
            if terminated or truncated:
                break
        successes += int(info[IS_SUCCESS_KEY])
        ends[info[END_REASON_KEY]] += 1
        lengths.append(length)
        dense_returns.append(dense_return)
    env.close()
    low, high = wilson_interval(successes, episodes)
    return {
        "horizon": get_task(env_id).horizon,
        "episodes": episodes,
        "successes": successes,
        "success_rate": successes / episodes,
        "success_rate_ci95": [low, high],
        "mean_episode_length": sum(lengths) / episodes,
        "mean_dense_return": sum(dense_returns) / episodes,
        "end_reasons": dict(sorted(ends.items())),
        "seconds": time.perf_counter() - start,
    }


def results_table(results: dict[str, dict[str, Any]]) -> str:
    """The markdown table of the measurements.

    :param results: id -> the output of :func:`measure`.
    :return: the table.
    """
    rows = []
    for env_id, result in results.items():
        low, high = result["success_rate_ci95"]
        ends = ", ".join(f"{reason} {count}" for reason, count in result["end_reasons"].items())
        rows.append(
            (
                f"`{env_id}`",
                result["horizon"],
                f"{result['successes']}/{result['episodes']} = {result['success_rate']:.1%}",
                f"[{low:.1%}, {high:.1%}]",
                f"{result['mean_episode_length']:.1f}",
                f"{result['mean_dense_return']:.1f}",
                ends,
            )
        )
    header = ("id", "H", "random success", "95% CI (Wilson)", "mean length", "mean dense return", "episode ends")
    return markdown_table("Success of a uniformly random policy", header, rows)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure, print the table, write the JSON.

    :param argv: the command-line arguments (``sys.argv[1:]`` when ``None``).
    :return: the exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    parser.add_argument("--episodes", type=int, default=200, help="episodes per id (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--ids", nargs="+", default=list(SUITE), help="suite ids to measure (default: the sparse ids)")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    for env_id in args.ids:
        get_task(env_id)  # a clear error for an unknown id, before any work

    results = {env_id: measure(env_id, args.episodes, args.seed) for env_id in args.ids}
    print(results_table(results))
    report = {
        "script": "benchmarks/random_policy_success.py",
        "policy": "uniform random (action_space.sample())",
        "episodes_per_id": args.episodes,
        "seed": args.seed,
        "machine": machine_info(("gymnasium", "numpy", "sppo-rl")),
        "results": results,
    }
    write_json(args.out, report)
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
