"""sppo-llm on 1 against 2 processes on this CPU machine: prompts per second and seconds per iteration.

The tiny example (``llm/examples/tiny_cpu.yml``: random-init models, in-process tokenizers) with a wider policy
(``--hidden-size``, ``--layers``; on the example's own 64-wide model an iteration takes 0.1 s and the gathers cost
more than they save), at the same global batch, through the real launch commands: ``python -m sppo_rl.llm train``
and ``torchrun --nproc-per-node 2 -m sppo_rl.llm train``. Seconds per iteration are the median of
``time/iteration_s`` in ``progress.csv`` after the first (warm-up) iterations; wall time includes start-up. Each
process uses one thread (``OMP_NUM_THREADS=1``, as torchrun sets it), so 1 process uses one core and 2 processes two.

    python benchmarks/llm_processes.py --prompts 64 --iterations 12 --out benchmarks/out/llm_processes.json
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine_info, markdown_table, write_json

TINY = ROOT / "llm" / "examples" / "tiny_cpu.yml"


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def run(processes: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Train the tiny example with ``processes`` processes and read its timings."""
    launcher = [sys.executable]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes)]
        launcher += ["--master-port", _port()]
    overrides = {
        "trainer.prompts_per_step": args.prompts,
        "trainer.mini_batch_size": args.prompts,
        "trainer.micro_batch_size": args.micro_batch,
        "trainer.generation.max_new_tokens": args.new_tokens,
        "trainer.generation.batch_size": args.prompts // 2,
        "train.n_iterations": args.iterations,
        "policy.config.hidden_size": args.hidden_size,
        "policy.config.intermediate_size": 2 * args.hidden_size,
        "policy.config.num_hidden_layers": args.layers,
        "train.log_interval": 1,
        "eval_data": "null",
    }
    sets = [item for k, v in overrides.items() for item in ("--set", f"{k}={v}")]
    cmd = [*launcher, "-m", "sppo_rl.llm", "train", str(TINY), "--output-dir", str(out), *sets, "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
    with open(out / "progress.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    steady = [float(r["time/iteration_s"]) for r in rows[args.warmup :]]
    per_iteration = statistics.median(steady)
    return {
        "processes": processes,
        "iterations": len(rows),
        "s_per_iteration": per_iteration,
        "prompts_per_s": args.prompts / per_iteration,
        "generation_s": statistics.median(float(r["time/generation_s"]) for r in rows[args.warmup :]),
        "training_s": statistics.median(float(r["time/training_s"]) for r in rows[args.warmup :]),
        "wall_s": wall,
        "final_reward_mean": float(rows[-1]["rollout/reward_mean"]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=64, help="prompts per step (the global batch)")
    p.add_argument("--iterations", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2, help="first iterations left out of the medians")
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=16, help="response length")
    p.add_argument("--hidden-size", type=int, default=256, help="the policy's width (the example's is 64)")
    p.add_argument("--layers", type=int, default=4, help="the policy's layers (the example's are 2)")
    p.add_argument("--out", default="benchmarks/out/llm_processes.json")
    args = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 2):
            results.append(run(n, args, Path(tmp) / f"p{n}"))
            print(f"{n} process(es): {results[-1]['s_per_iteration']:.3f} s/iteration", flush=True)
    one, two = results
    speedup = one["s_per_iteration"] / two["s_per_iteration"]
    print(
        markdown_table(
            f"sppo-llm, tiny example, {args.prompts} prompts a step: 2 processes are {speedup:.2f}x 1 process",
            ["processes", "s / iteration", "prompts / s", "generation s", "updates s", "wall s"],
            [
                [
                    r["processes"],
                    r["s_per_iteration"],
                    r["prompts_per_s"],
                    r["generation_s"],
                    r["training_s"],
                    r["wall_s"],
                ]
                for r in results
            ],
        )
    )
    report = {"benchmark": "llm_processes", "machine": machine_info(), "settings": vars(args), "results": results}
    report["speedup_2_over_1"] = speedup
    write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
