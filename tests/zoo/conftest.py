"""Shared helpers of the zoo tests (``tests/zoo``): run ``sppo-zoo`` in this process or in a subprocess.

Helpers are fixtures (tests run with ``--import-mode=importlib``, so test files do not import this module).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from sppo_rl.zoo.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    """What one ``sppo-zoo`` call gave."""

    code: int
    out: str
    err: str


@pytest.fixture
def fast_train() -> list[str]:
    """Options that make ``train`` on LineTarget-v0 take a second: rollouts of 8 ten-step episodes."""
    return ["--verbose", "0", "-params", "n_episodes:8", "batch_episodes:4", "n_epochs:2"]  # more params may follow


@pytest.fixture
def fast_tune() -> list[str]:
    """``tune`` options for SPPO on LineTarget-v0 with trials of a fraction of a second."""
    return [
        "--algo",
        "sppo",
        "--env",
        "LineTarget-v0",
        "-n",
        "400",
        "--n-evaluations",
        "2",
        "--eval-episodes",
        "4",
        "--n-startup-trials",
        "2",
        "--verbose",
        "0",
        "-params",
        "n_episodes:8",
        "n_epochs:2",
    ]  # fmt: skip  (more params may follow)


@pytest.fixture
def zoo(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[Sequence[str]], Result]:
    """Run ``sppo-zoo`` in this process, in ``tmp_path``: ``zoo(["train", ...]) -> Result``."""
    monkeypatch.chdir(tmp_path)

    def run(argv: Sequence[str]) -> Result:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


class Subprocesses:
    """Build and run ``python -m sppo_rl.zoo`` subprocesses (one torch thread, the repository importable)."""

    def env(self, extra_path: Path | None = None) -> dict[str, str]:
        """The environment of a subprocess; ``extra_path`` is added to ``PYTHONPATH``."""
        env = dict(os.environ)
        paths = [str(REPO_ROOT), str(extra_path) if extra_path else "", env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        env["OMP_NUM_THREADS"] = "1"
        return env

    def command(self, argv: Sequence[str]) -> list[str]:
        """``python -m sppo_rl.zoo ARGV`` with this interpreter."""
        return [sys.executable, "-m", "sppo_rl.zoo", *argv]

    def start(self, argv: Sequence[str], cwd: Path) -> subprocess.Popen[str]:
        """Start one without waiting (output to pipes)."""
        return subprocess.Popen(
            self.command(argv), cwd=cwd, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def run(self, argv: Sequence[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run one and wait for it."""
        return subprocess.run(
            self.command(argv), cwd=cwd, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )


@pytest.fixture
def subprocesses() -> Subprocesses:
    """:class:`Subprocesses`, as a fixture."""
    return Subprocesses()
