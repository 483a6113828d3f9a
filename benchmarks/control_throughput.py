"""Environment steps per second of SPPO against SB3's PPO, measured alternately in one run.

Same environment, same actor and critic sizes (two hidden layers of 64), same number of environments,
same optimiser epochs. Each algorithm keeps its own default minibatching (PPO: 64 steps; SPPO: 8 whole
episodes), and a second setting gives SPPO minibatches of about PPO's size in steps, so the gradient
work per rollout is comparable. The time is split between collection (rollouts) and training.

Usage::

    python benchmarks/control_throughput.py [--timesteps 50000] [--repeats 3] \\
        [--out benchmarks/out/control_throughput.json]

Prints a table with the SPPO/PPO ratio and writes the raw measurements as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import stable_baselines3
import torch
from sppo_rl.envs.toy import LineTargetEnv
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

import sppo_rl
from sppo_rl import SPPO


class RolloutTimer(BaseCallback):
    """Accumulate the wall time spent collecting rollouts."""

    def __init__(self) -> None:
        super().__init__()
        self.collect_seconds = 0.0
        self._t0 = 0.0

    def _on_rollout_start(self) -> None:
        self._t0 = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.collect_seconds += time.perf_counter() - self._t0

    def _on_step(self) -> bool:
        return True


@dataclass
class Measurement:
    env: str
    setting: str
    algo: str
    repeat: int
    timesteps: int
    seconds: float
    collect_seconds: float
    steps_per_second: float
    gradient_steps: int


ENVS = {
    "CartPole-v1": lambda: "CartPole-v1",
    "LineTarget(H=10)": lambda: LineTargetEnv,
}


def _make(algo: str, env_name: str, setting: str, n_envs: int, seed: int):
    env = make_vec_env(ENVS[env_name](), n_envs=n_envs, seed=seed)
    common = dict(n_steps=2048 // n_envs, n_epochs=10, seed=seed, device="cpu", learning_rate=3e-4)
    net = dict(net_arch=dict(pi=[64, 64], vf=[64, 64]))
    if algo == "ppo":
        return PPO("MlpPolicy", env, batch_size=64, policy_kwargs=net, **common)
    if setting == "defaults":
        batch_episodes = 8
    else:
        # about 64 steps per minibatch, as PPO: episodes of LineTarget last 10 steps; CartPole's grow with
        # learning, so use its mean length under a random policy (~22) as a fixed guide
        batch_episodes = 6 if env_name.startswith("LineTarget") else 3
    return SPPO("MlpPolicy", env, batch_episodes=batch_episodes, policy_kwargs=net, **common)


def measure(algo: str, env_name: str, setting: str, timesteps: int, n_envs: int, repeat: int) -> Measurement:
    model = _make(algo, env_name, setting, n_envs, seed=repeat)
    timer = RolloutTimer()
    optimizer = model.policy.optimizer
    counter = {"steps": 0}
    original_step = optimizer.step

    def counting_step(*a, **kw):
        counter["steps"] += 1
        return original_step(*a, **kw)

    optimizer.step = counting_step  # count actor gradient steps (minibatches x epochs)
    start = time.perf_counter()
    model.learn(timesteps, callback=timer)
    seconds = time.perf_counter() - start
    grad_steps = counter["steps"]
    return Measurement(
        env=env_name,
        setting=setting,
        algo=algo,
        repeat=repeat,
        timesteps=int(model.num_timesteps),
        seconds=seconds,
        collect_seconds=timer.collect_seconds,
        steps_per_second=model.num_timesteps / seconds,
        gradient_steps=grad_steps,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--out", default="benchmarks/out/control_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    results: list[Measurement] = []
    for env_name in ENVS:
        for setting in ("defaults", "matched-minibatch"):
            for repeat in range(args.repeats):
                # alternate the order so drifts in machine speed hit both algorithms alike
                order = ("ppo", "sppo") if repeat % 2 == 0 else ("sppo", "ppo")
                for algo in order:
                    # PPO has one setting; it is measured again beside each SPPO setting (side by side)
                    m = measure(algo, env_name, setting, args.timesteps, args.n_envs, repeat)
                    results.append(m)
                    print(f"  {env_name:18s} {setting:18s} {algo:5s} rep {repeat}: {m.steps_per_second:8.0f} steps/s",
                          flush=True)  # fmt: skip

    rows = []
    for env_name in ENVS:
        for setting in ("defaults", "matched-minibatch"):
            sel = [r for r in results if r.env == env_name and r.setting == setting]
            ppo = np.median([r.steps_per_second for r in sel if r.algo == "ppo"])
            sppo = np.median([r.steps_per_second for r in sel if r.algo == "sppo"])
            ppo_c = np.median([r.collect_seconds / r.seconds for r in sel if r.algo == "ppo"])
            sppo_c = np.median([r.collect_seconds / r.seconds for r in sel if r.algo == "sppo"])
            ppo_g = np.median([r.gradient_steps for r in sel if r.algo == "ppo"])
            sppo_g = np.median([r.gradient_steps for r in sel if r.algo == "sppo"])
            rows.append(dict(env=env_name, setting=setting, ppo_steps_per_s=float(ppo), sppo_steps_per_s=float(sppo),
                             ratio=float(sppo / ppo), ppo_collect_share=float(ppo_c),
                             sppo_collect_share=float(sppo_c), ppo_gradient_steps=float(ppo_g),
                             sppo_gradient_steps=float(sppo_g)))  # fmt: skip

    header = f"{'env':18s} {'setting':18s} {'PPO steps/s':>12s} {'SPPO steps/s':>13s} {'SPPO/PPO':>9s}"
    header += f" {'PPO collect%':>13s} {'SPPO collect%':>14s} {'PPO grad':>9s} {'SPPO grad':>10s}"
    print("\n" + header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['env']:18s} {r['setting']:18s} {r['ppo_steps_per_s']:12.0f} {r['sppo_steps_per_s']:13.0f} "
              f"{r['ratio']:9.2f} {100 * r['ppo_collect_share']:12.0f}% {100 * r['sppo_collect_share']:13.0f}%"
              f" {r['ppo_gradient_steps']:9.0f} {r['sppo_gradient_steps']:10.0f}")  # fmt: skip

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(
        timesteps=args.timesteps,
        repeats=args.repeats,
        n_envs=args.n_envs,
        torch_threads=1,
        python=platform.python_version(),
        torch=torch.__version__,
        stable_baselines3=stable_baselines3.__version__,
        sppo_rl=sppo_rl.__version__,
        cpu_count=os.cpu_count(),
        machine=platform.machine(),
    )
    out.write_text(json.dumps(dict(meta=meta, summary=rows, runs=[asdict(r) for r in results]), indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
