"""The main job of the README: the paper's control protocol, end to end, on Precision CartPole.

``make demo`` (``python -m sppo_rl.zoo.demo``) runs the three stages of :mod:`sppo_rl.zoo.protocol` on
``SparsePrecisionCartPole-v0`` (reward 0 at every step; outcome 1 only if the pole is within 0.5 degrees of upright
after 200 steps):

1. an expert (SB3 PPO) trained on the dense counterpart (cached under ``~/.cache/sppo-rl/experts``);
2. behaviour cloning of its successful episodes into the actor, giving a start policy that succeeds sometimes;
3. SPPO on the binary outcome alone, printing the success rate after every update,

and prints the success rate of the start policy and of the SPPO policy on the same held-out episodes.

Options: ``--env`` (a task of ``zoo/suite.yml``), ``--episodes``, ``--seed``, ``--eval-episodes``.
Needs the ``zoo`` extra (``pip install "sppo-rl[zoo]"``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import cast

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from sppo_rl import SPPO

from . import protocol
from .control_suite import DEFAULT_EXPERT_CACHE, prepare_start_policy


class ProgressPrinter(BaseCallback):
    """Print one line per update: episodes so far and the success rate of the update's episodes.

    :param recorder: the callback that records each episode's outcome
    :param start_time: ``time.perf_counter()`` at the start of training
    :param every: print every ``every`` updates
    """

    def __init__(self, recorder: protocol.SuccessRecorder, start_time: float, every: int = 4) -> None:
        super().__init__()
        self.recorder = recorder
        self.start_time = start_time
        self.every = every
        self._printed = 0
        self._updates = 0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self._updates += 1
        if self._updates % self.every:
            return
        new = self.recorder.successes[self._printed :]
        self._printed = len(self.recorder.successes)
        if new:
            print(
                f"  episodes {len(self.recorder.successes):>5d} | success rate of the last {len(new):>3d} episodes "
                f"{np.mean(new):.2f} | {time.perf_counter() - self.start_time:5.1f}s",
                flush=True,
            )


def main(argv: list[str] | None = None) -> None:
    """Run the demo.

    :param argv: command-line arguments (default: ``sys.argv[1:]``)
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SparsePrecisionCartPole-v0", help="a task of zoo/suite.yml")
    parser.add_argument("--episodes", type=int, default=None, help="SPPO training episodes (default: suite.yml)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=200, help="held-out episodes before and after")
    args = parser.parse_args(argv)

    config = protocol.load_task_config(args.env)
    episodes = int(args.episodes or config.rl["episodes"])
    config.rl["episodes"] = episodes
    print(f"SPPO on {args.env}: the paper's protocol (expert -> behaviour cloning -> SPPO on the binary outcome)")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        actor, _ = prepare_start_policy(config, Path(tmp) / "start.pt", DEFAULT_EXPERT_CACHE, rebuild=True)
    print(f"Stages 1-2 took {time.perf_counter() - t0:.0f}s")

    eval_env = protocol.make_rl_env(config, seed=123_456)  # the same held-out episodes before and after
    train_env = protocol.make_rl_env(config, seed=args.seed)
    model = cast(SPPO, protocol.build_rl_model("sppo", config, train_env, seed=args.seed))
    protocol.load_actor(model, actor)
    before = protocol.evaluate_success(model.policy, eval_env, args.eval_episodes)
    print(f"Start policy: success rate {before:.2f} on {args.eval_episodes} held-out episodes (stochastic actions)")

    print(f"Stage 3: SPPO for {episodes} episodes ({config.rl['episodes_per_update']} per update)")
    recorder = protocol.SuccessRecorder(max_episodes=episodes)
    start = time.perf_counter()
    model.learn(10**12, callback=CallbackList([recorder, ProgressPrinter(recorder, start)]))
    eval_env = protocol.make_rl_env(config, seed=123_456)
    after = protocol.evaluate_success(model.policy, eval_env, args.eval_episodes)
    print(
        f"After SPPO:   success rate {after:.2f} on the same {args.eval_episodes} held-out episodes "
        f"(start {before:.2f}; {time.perf_counter() - start:.0f}s of SPPO, {model.num_timesteps} steps; "
        f"value head: {model.value_head})"
    )


if __name__ == "__main__":
    main()
