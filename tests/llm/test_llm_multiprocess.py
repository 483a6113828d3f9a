"""Several processes: 2 gloo processes on this CPU give the numbers of 1 process, resume exactly, and fail loudly.

Every run goes through the real launch commands (``torchrun --nproc-per-node 2 -m sppo_rl.llm train ...`` and
``python -m sppo_rl.llm train ...``) on the tiny example config, shrunk to 8 prompts a step. The tolerance of the
comparisons (:data:`ATOL`) is float32 summation order: the ranks' gradients are summed by an all-reduce instead of
accumulated in one ``.grad``; everything else (sampling, log-probs, critic values, advantages) is identical.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "llm" / "examples" / "tiny_cpu.yml"
ATOL = 1e-5
"""Largest absolute difference allowed between 1 and 2 processes (metrics and final weights)."""
SMALL = [
    "--set",
    "trainer.prompts_per_step=8",
    "--set",
    "trainer.mini_batch_size=4",
    "--set",
    "trainer.micro_batch_size=2",
    "--set",
    "trainer.generation.batch_size=4",
    "--set",
    "eval_data=null",
    "--set",
    "train.log_interval=1",
    "--quiet",
]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env.pop("WORLD_SIZE", None)
    return env


def _train(out: Path, *extra: str, procs: int = 1, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    launcher = [*TORCHRUN, "--master-port", _port()] if procs > 1 else [sys.executable]
    cmd = [*launcher, "-m", "sppo_rl.llm", "train", str(TINY), "--output-dir", str(out), *SMALL, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=cwd or out.parent, timeout=300)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in their own sessions)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_tree(pid: int) -> None:
    for p in [*_descendants(pid), pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _rows(run: Path) -> list[dict[str, float]]:
    with open(run / "progress.csv", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    out = {f"policy.{k}": v for k, v in load_file(checkpoint / "policy_adapter" / "adapter_model.safetensors").items()}
    out.update({f"critic.{k}": v for k, v in load_file(checkpoint / "critic.safetensors").items()})
    return out


def _assert_same_run(a: Path, b: Path, rows: slice = slice(None)) -> None:
    ra, rb = _rows(a)[rows], _rows(b)[rows]
    assert len(ra) == len(rb) > 0
    for x, y in zip(ra, rb, strict=True):
        assert x["time/iterations"] == y["time/iterations"]
        for key in x:
            if not key.startswith(("time/", "memory/")):
                assert abs(x[key] - y[key]) <= ATOL, (key, x[key], y[key])
    wa, wb = _weights(a / "final"), _weights(b / "final")
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=ATOL, msg=key)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("multi") / "one"
    done = _train(out, "--set", "train.n_iterations=3")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_give_the_numbers_of_one(one_process: Path, tmp_path: Path, strategy: str) -> None:
    out = tmp_path / strategy
    done = _train(out, "--set", "train.n_iterations=3", "--set", f"trainer.distributed.strategy={strategy}", procs=2)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_run(one_process, out)
    # one voice: the summary is printed once, progress.csv has one row per iteration
    assert done.stdout.count('"iteration": 3') == 1
    assert len(_rows(out)) == 3
    config = (out / "final" / "config.json").read_text()
    assert '"world_size": 2' in config and f'"strategy": "{strategy}"' in config


SLOW_REWARD = """
import time


def reward(prompts, completions, **kwargs):
    time.sleep(1.0)
    return [float(c[:1] == "7") for c in completions]
"""


def test_a_killed_two_process_run_resumes_exactly(tmp_path: Path) -> None:
    (tmp_path / "slow_reward.py").write_text(SLOW_REWARD)
    slow = [
        "--set",
        "imports=[slow_reward]",
        "--set",
        "reward.name=slow_reward:reward",
        "--set",
        "reward.options={}",
        "--set",
        "train.save_interval=2",
        "--set",
        "train.n_iterations=4",
    ]
    whole = tmp_path / "whole"
    done = _train(whole, *slow, procs=2, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    cut = tmp_path / "cut"
    launcher = [*TORCHRUN, "--master-port", _port()]
    cmd = [*launcher, "-m", "sppo_rl.llm", "train", str(TINY), "--output-dir", str(cut), *SMALL, *slow]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = cut / "checkpoints" / "checkpoint-2" / "config.json"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = _descendants(proc.pid)
    _kill_tree(proc.pid)  # the launcher and both ranks, in the middle of iteration 3
    proc.wait(timeout=60)
    # SIGKILL lands when the kernel next schedules each process: on a loaded machine that takes a moment
    deadline = time.time() + 60
    while any(_alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert len(workers) >= 2 and not [p for p in workers if _alive(p)]
    assert marker.exists() and not (cut / "final").exists()

    done = _train(cut, *slow, "--resume", "auto", procs=2, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_run(whole, cut, rows=slice(-2, None))  # iterations 3 and 4, and the final weights


FAILING_ENGINE = """
import os

from sppo_rl.llm.engine_registry import register_generation_engine
from sppo_rl.llm.generation import TransformersEngine


@register_generation_engine("fails-on-rank-1")
class FailsOnRank1(TransformersEngine):
    def sample_tokens(self, *args, **kwargs):
        if os.environ.get("RANK") == "1":
            raise RuntimeError("boom on rank 1")
        return super().sample_tokens(*args, **kwargs)
"""


def test_a_rank_that_raises_ends_the_job_with_its_error(tmp_path: Path) -> None:
    (tmp_path / "failing_engine.py").write_text(FAILING_ENGINE)
    start = time.time()
    done = _train(
        tmp_path / "run",
        "--set",
        "imports=[failing_engine]",
        "--set",
        "trainer.generation.engine=fails-on-rank-1",
        "--set",
        "train.n_iterations=2",
        procs=2,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "boom on rank 1" in done.stderr
    assert time.time() - start < 200  # rank 0, waiting in a collective, was ended: no hang


def test_a_world_size_that_does_not_divide_the_batch_is_refused_before_any_model(tmp_path: Path) -> None:
    done = _train(tmp_path / "run", "--set", "trainer.prompts_per_step=7", "--set", "train.n_iterations=1", procs=2)
    assert done.returncode != 0
    assert "prompts_per_step=7" in done.stderr and "number of processes (2)" in done.stderr
    assert "Converting" not in done.stderr and not (tmp_path / "run" / "final").exists()


def test_a_launcher_without_rendezvous_settings_is_named(tmp_path: Path) -> None:
    env = {**_env(), "WORLD_SIZE": "2"}
    cmd = [sys.executable, "-m", "sppo_rl.llm", "train", str(TINY), "--output-dir", str(tmp_path / "run"), *SMALL]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0
    assert "WORLD_SIZE=2 but RANK, MASTER_ADDR, MASTER_PORT are not set" in done.stderr
