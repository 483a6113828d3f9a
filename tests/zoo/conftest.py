"""Shared helpers of the zoo tests (``tests/zoo``): run ``sppo-zoo`` in this process or in a subprocess.

Helpers are fixtures (tests run with ``--import-mode=importlib``, so test files do not import this module).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
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


# --- a throwaway PostgreSQL server ---------------------------------------------------------------------------


def _postgresql_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``pg_ctl`` (Debian's layout), or the
    folder of an ``initdb`` on ``PATH``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    initdb = found[-1] if found else shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _server_user() -> str | None:
    """The user the server runs as: PostgreSQL refuses to run as root, so root hands it to ``postgres``
    (created by Debian's package) or ``nobody``; any other user runs it as itself (``None``)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    pytest.skip("running as root with neither a postgres nor a nobody user to run PostgreSQL as")


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (``initdb`` in a temporary folder, a Unix socket there, no TCP port, fsync
    off), removed afterwards: yields the SQLAlchemy URL of its database ``optuna``. Skips when no PostgreSQL
    binaries are installed (Debian: ``apt-get install postgresql``)."""
    bin_dir = _postgresql_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="sppo-pg-"))  # short: a socket path has at most 107 characters
    data, log = root / "data", root / "server.log"
    if user is not None:
        shutil.chown(root, user)

    def run(*command: str) -> None:
        subprocess.run(command, check=True, capture_output=True, text=True, user=user, cwd=root, timeout=120)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C")
        options = f"-k {root} -c listen_addresses='' -F -c max_connections=200"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        run(str(bin_dir / "createdb"), "-h", str(root), "-U", "postgres", "optuna")
    except subprocess.CalledProcessError as err:
        server_log = log.read_text() if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"cannot start PostgreSQL: {err.stderr}{server_log}") from err
    try:
        yield f"postgresql+psycopg://postgres@/optuna?host={root}"
    finally:
        subprocess.run(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True, user=user, cwd=root, timeout=60, check=False,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)
