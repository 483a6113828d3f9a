"""Environment steps per second of SPPO against SB3's PPO at equal gradient steps, and rollout cost against
stepping the same vec env with random actions; 1 and 8 environments, measured alternately in one run.

Per environment (CartPole-v1, LineTarget-v0) and number of environments (1, 8), each repeat runs, in an order that
alternates between repeats: PPO, SPPO, and the vec env stepped with random actions. The settings:

- same networks (two hidden layers of 64 for the actor and the critic), one torch thread, 10 epochs,
  ``n_steps = 1920 / n_envs`` per rollout, learning rate 3e-4;
- PPO's minibatches hold 60 steps (32 per epoch); SPPO's hold whole episodes, at least 60 steps: after each
  rollout a callback sets ``batch_episodes = ceil(60 / mean episode length)``. On LineTarget (10-step episodes)
  both take exactly 320 gradient steps per rollout of 1920 steps. On CartPole the episode lengths vary and grow
  with learning, so SPPO's count differs; the ratio *at equal gradient steps* charges SPPO its own measured time
  per gradient step for PPO's number of gradient steps per environment step:
  ``t_SPPO = collect_SPPO / N_SPPO + (train_SPPO / G_SPPO) * (G_PPO / N_PPO)`` seconds per environment step
  (``N`` environment steps, ``G`` gradient steps). SPPO's minibatches are never smaller than PPO's, so a gradient
  step of SPPO costs at least as much as one of PPO's; the raw ratio is reported too;
- the random-action baseline steps the same vec env (``make_vec_env``: Monitor, DummyVecEnv) as many steps, with
  one batched NumPy draw of actions per vector step (the cheapest possible policy); "rollout / random" is an
  algorithm's collection time per environment step divided by that.

The ratios are computed per repeat (the runs of a repeat are adjacent in time) and the table shows their median;
times are wall-clock (the JSON also holds CPU times). Usage::

    python benchmarks/control_throughput.py [--timesteps 19200] [--repeats 3] \\
        [--out benchmarks/out/control_throughput.json]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from sppo_rl.envs.toy import LineTargetEnv
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

from sppo_rl import SPPO

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, markdown_table, write_json

ENVS: dict[str, Any] = {"CartPole-v1": "CartPole-v1", "LineTarget-v0": LineTargetEnv}
ROLLOUT_STEPS = 1920
PPO_BATCH = 60
NET = dict(net_arch=dict(pi=[64, 64], vf=[64, 64]))


class Timer(BaseCallback):
    """Wall-clock and CPU time spent collecting rollouts; for SPPO, minibatches of at least ``PPO_BATCH`` steps."""

    def __init__(self, match_minibatch_steps: bool) -> None:
        super().__init__()
        self.match = match_minibatch_steps
        self.collect_wall = self.collect_cpu = 0.0
        self._t0 = self._c0 = 0.0

    def _on_rollout_start(self) -> None:
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def _on_rollout_end(self) -> None:
        self.collect_wall += time.perf_counter() - self._t0
        self.collect_cpu += time.process_time() - self._c0
        if self.match:  # SPPO's buffer is finalized here: whole-episode minibatches of >= PPO_BATCH steps
            buffer = self.model.rollout_buffer
            self.model.batch_episodes = max(1, math.ceil(PPO_BATCH * buffer.n_episodes / buffer.n_steps_total))

    def _on_step(self) -> bool:
        return True


@dataclass
class Run:
    env: str
    n_envs: int
    algo: str
    repeat: int
    timesteps: int
    wall: float
    cpu: float
    collect_wall: float
    collect_cpu: float
    gradient_steps: int


def _vec_env(env_name: str, n_envs: int, seed: int) -> VecEnv:
    return make_vec_env(ENVS[env_name], n_envs=n_envs, seed=seed)


def _model(algo: str, env: VecEnv, n_envs: int, seed: int) -> BaseAlgorithm:
    common = dict(n_steps=ROLLOUT_STEPS // n_envs, n_epochs=10, learning_rate=3e-4, seed=seed, device="cpu")
    if algo == "ppo":
        return PPO("MlpPolicy", env, batch_size=PPO_BATCH, policy_kwargs=NET, **common)
    return SPPO("MlpPolicy", env, batch_episodes=PPO_BATCH // 10, policy_kwargs=NET, **common)


def train_run(algo: str, env_name: str, n_envs: int, timesteps: int, repeat: int) -> Run:
    model = _model(algo, _vec_env(env_name, n_envs, seed=repeat), n_envs, seed=repeat)
    timer = Timer(match_minibatch_steps=algo == "sppo")
    counter = {"steps": 0}
    optimizer = model.policy.optimizer
    step = optimizer.step

    def counting_step(*args: Any, **kwargs: Any) -> Any:
        counter["steps"] += 1
        return step(*args, **kwargs)

    optimizer.step = counting_step  # type: ignore[method-assign]  # actor gradient steps (minibatches x epochs)
    wall, cpu = time.perf_counter(), time.process_time()
    model.learn(timesteps, callback=timer)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Run(env_name, n_envs, algo, repeat, int(model.num_timesteps), wall, cpu, timer.collect_wall,
               timer.collect_cpu, counter["steps"])  # fmt: skip


def random_run(env_name: str, n_envs: int, timesteps: int, repeat: int) -> Run:
    env = _vec_env(env_name, n_envs, seed=repeat)
    space = env.action_space
    rng = np.random.default_rng(repeat)
    env.reset()
    vector_steps = math.ceil(timesteps / n_envs)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(vector_steps):
        if isinstance(space, spaces.Discrete):
            actions = rng.integers(0, space.n, size=n_envs)
        else:
            assert isinstance(space, spaces.Box)
            actions = rng.uniform(space.low, space.high, size=(n_envs, *space.shape)).astype(space.dtype)
        env.step(actions)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Run(env_name, n_envs, "random", repeat, vector_steps * n_envs, wall, cpu, wall, cpu, 0)


def _equal_gradient_ratio(ppo: Run, sppo: Run, clock: str) -> float:
    """PPO's time per environment step / SPPO's at PPO's gradient steps per environment step."""
    ppo_total, sppo_total = getattr(ppo, clock), getattr(sppo, clock)
    sppo_collect = getattr(sppo, f"collect_{clock}")
    per_gradient_step = (sppo_total - sppo_collect) / sppo.gradient_steps
    sppo_per_step = sppo_collect / sppo.timesteps + per_gradient_step * ppo.gradient_steps / ppo.timesteps
    return (ppo_total / ppo.timesteps) / sppo_per_step


def summarize(runs: list[Run], clock: str = "wall") -> list[dict[str, Any]]:
    """One row per (env, n_envs): medians over the repeats of each quantity and of the per-repeat ratios."""
    rows = []
    for env_name in ENVS:
        for n_envs in sorted({r.n_envs for r in runs}):
            by_repeat: dict[int, dict[str, Run]] = {}
            for r in runs:
                if r.env == env_name and r.n_envs == n_envs:
                    by_repeat.setdefault(r.repeat, {})[r.algo] = r
            triples = [d for d in by_repeat.values() if len(d) == 3]
            if not triples:
                continue

            def med(values: list[float]) -> float:
                return float(statistics.median(values))

            def rate(r: Run) -> float:
                return r.timesteps / getattr(r, clock)

            def per_step(r: Run, collect: bool) -> float:
                return getattr(r, f"collect_{clock}" if collect else clock) / r.timesteps

            def density(r: Run) -> float:
                return 1000 * r.gradient_steps / r.timesteps

            rows.append(
                dict(
                    env=env_name,
                    n_envs=n_envs,
                    ppo_steps_per_s=med([rate(d["ppo"]) for d in triples]),
                    sppo_steps_per_s=med([rate(d["sppo"]) for d in triples]),
                    ppo_gradient_steps_per_1k=med([density(d["ppo"]) for d in triples]),
                    sppo_gradient_steps_per_1k=med([density(d["sppo"]) for d in triples]),
                    raw_ratio=med([rate(d["sppo"]) / rate(d["ppo"]) for d in triples]),
                    equal_gradient_ratio=med([_equal_gradient_ratio(d["ppo"], d["sppo"], clock) for d in triples]),
                    random_steps_per_s=med([rate(d["random"]) for d in triples]),
                    sppo_rollout_over_random=med(
                        [per_step(d["sppo"], True) / per_step(d["random"], False) for d in triples]
                    ),
                    ppo_rollout_over_random=med(
                        [per_step(d["ppo"], True) / per_step(d["random"], False) for d in triples]
                    ),
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=10 * ROLLOUT_STEPS, help="per run (10 rollouts)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-envs", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", default="benchmarks/out/control_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()  # a shared machine: the load says how much the other processes took

    runs: list[Run] = []
    orders = [("ppo", "sppo", "random"), ("sppo", "random", "ppo"), ("random", "ppo", "sppo")]
    for repeat in range(args.repeats):
        for env_name in ENVS:
            for n_envs in args.n_envs:
                # the order rotates between repeats, so a drift in machine speed hits every algorithm alike
                for algo in orders[repeat % len(orders)]:
                    if algo == "random":
                        run = random_run(env_name, n_envs, args.timesteps, repeat)
                    else:
                        run = train_run(algo, env_name, n_envs, args.timesteps, repeat)
                    runs.append(run)
                    print(f"  {env_name:14s} {n_envs} envs {algo:6s} rep {repeat}: {run.timesteps / run.wall:8.0f} "
                          f"steps/s, {run.gradient_steps} gradient steps", flush=True)  # fmt: skip

    rows = summarize(runs, "wall")
    table = markdown_table(
        "SPPO against PPO, and rollouts against random actions (medians of per-repeat ratios)",
        ["env", "envs", "PPO steps/s", "SPPO steps/s", "grad steps / 1k steps (PPO, SPPO)",
         "SPPO/PPO at equal grad steps", "SPPO/PPO raw", "SPPO rollout / random", "PPO rollout / random"],
        [[r["env"], r["n_envs"], r["ppo_steps_per_s"], r["sppo_steps_per_s"],
          f"{r['ppo_gradient_steps_per_1k']:.0f}, {r['sppo_gradient_steps_per_1k']:.0f}",
          r["equal_gradient_ratio"], r["raw_ratio"], r["sppo_rollout_over_random"], r["ppo_rollout_over_random"]]
         for r in rows],
    )  # fmt: skip
    print(table)
    report = {
        "benchmark": "control_throughput",
        "machine": machine_info(),
        "settings": {**vars(args), "rollout_steps": ROLLOUT_STEPS, "ppo_batch_size": PPO_BATCH, "torch_threads": 1},
        "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
        "summary_wall": rows,
        "summary_cpu": summarize(runs, "cpu"),
        "runs": [asdict(r) for r in runs],
    }
    print(f"\nwrote {write_json(args.out, report)}")


if __name__ == "__main__":
    main()
