"""The main job of the README: a real SPPO training run with a visible result.

``python -m sppo_rl.demo`` trains SPPO on CartPole-v1 (outcome = the episode's return, Gaussian value head
chosen automatically), prints progress while it learns, and evaluates the policy before and after.

Options: ``--env``, ``--timesteps``, ``--n-envs``, ``--seed``, ``--eval-episodes``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sppo_rl import SPPO


class ProgressPrinter(BaseCallback):
    """Print one line per rollout: steps, episodes, mean return and success rate of recent episodes."""

    def __init__(self, start_time: float) -> None:
        super().__init__()
        self.start_time = start_time

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        model = self.model
        returns = [info["r"] for info in model.ep_info_buffer]
        success = list(model.ep_success_buffer)
        line = (
            f"steps {model.num_timesteps:>7d} | episodes {model.num_episodes:>5d} | "
            f"mean return (last 100) {np.mean(returns) if returns else float('nan'):7.1f}"
        )
        if success:
            line += f" | success rate {np.mean(success):.2f}"
        print(line + f" | {time.time() - self.start_time:5.1f}s", flush=True)


def _evaluate(model: SPPO, env_id: str, episodes: int, seed: int) -> tuple[float, float]:
    env = make_vec_env(env_id, n_envs=1, seed=seed)
    mean, std = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=True)
    return float(mean), float(std)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=20)
    args = parser.parse_args(argv)

    print(f"SPPO (Sequence-Level PPO) on {args.env}: {args.timesteps} steps, {args.n_envs} envs, seed {args.seed}")
    env = make_vec_env(args.env, n_envs=args.n_envs, seed=args.seed)
    model = SPPO("MlpPolicy", env, n_steps=512, seed=args.seed, verbose=0)
    before, _ = _evaluate(model, args.env, args.eval_episodes, seed=10_000)
    print(f"before training: mean return {before:.1f} over {args.eval_episodes} episodes")
    start = time.time()
    model.learn(args.timesteps, callback=ProgressPrinter(start))
    print(f"value head chosen: {model.value_head} (outcome: {model.outcome_source})")
    after, std = _evaluate(model, args.env, args.eval_episodes, seed=10_000)
    print(
        f"after training:  mean return {after:.1f} +/- {std:.1f} over {args.eval_episodes} episodes "
        f"({time.time() - start:.0f}s of training)"
    )


if __name__ == "__main__":
    main()
