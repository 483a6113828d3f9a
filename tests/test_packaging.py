"""The release artefacts: ``python -m build`` makes the sdist and, from it, the wheel; ``twine check`` passes; the
wheel, installed into a fresh venv outside the repository, runs the commands a new user runs first.

Slow, and it needs the package index: the fresh venv installs torch (``TORCH_SPEC``, the Makefile's default
``torch==2.13.0``, the CPU wheel where pip is set up to find it) and the wheel's ``[zoo,llm]`` dependencies. About
5 minutes on 2 cores, most of it pip (``make test-wheel``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")
PACKAGE_DATA = [
    "sppo_rl/py.typed",
    "sppo_rl/zoo/suite.yml",
    "sppo_rl/zoo/hyperparams/sppo.yml",
    "sppo_rl/zoo/hyperparams/ppo.yml",
    "sppo_rl/zoo/start_policies/SparsePrecisionCartPole-v0.pt",
    "sppo_rl/llm/examples/tiny_cpu.yml",
    "sppo_rl/integrations/verl/config/seq_ppo_trainer.yaml",
]


def _run(args: list[str | Path], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run a command of the fresh venv with the repository out of sight (no PYTHONPATH, a folder outside it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", SPPO_RL_EXPERT_CACHE=str(cwd / "experts"))
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_built_wheel_runs_from_a_fresh_venv_outside_the_repository(tmp_path: Path) -> None:
    assert not tmp_path.resolve().is_relative_to(ROOT)
    dist = tmp_path / "dist"
    # sdist first, then the wheel built from the unpacked sdist: a file missing from the sdist breaks the wheel
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT], cwd=tmp_path)
    (sdist,) = dist.glob("sppo_rl-*.tar.gz")
    (wheel,) = dist.glob("sppo_rl-*-py3-none-any.whl")
    _run([sys.executable, "-m", "twine", "check", "--strict", sdist, wheel], cwd=tmp_path)

    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for name in ["CHANGELOG.md", "LICENSE", "mkdocs.yml", "docs/index.md", "tests/test_packaging.py", "tools"]:
        assert name in in_sdist, f"{name} is not in the sdist"
    assert any(name.startswith("docs/results/") and name.endswith(".png") for name in in_sdist)
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    assert not [name for name in PACKAGE_DATA if name not in in_wheel]
    assert not [name for name in in_wheel if name.startswith(("tests/", "docs/", "benchmarks/"))]

    venv = tmp_path / "venv"
    work = tmp_path / "work"
    work.mkdir()
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    bin_dir = venv / "bin"
    _run([bin_dir / "python", "-m", "pip", "install", "-q", TORCH_SPEC], cwd=tmp_path, timeout=1200)
    _run([bin_dir / "python", "-m", "pip", "install", "-q", f"{wheel}[zoo,llm]"], cwd=tmp_path, timeout=1200)

    found = _run(
        [bin_dir / "python", "-c", "import sppo_rl, sys; print(sppo_rl.__file__); print(sppo_rl.__version__)"], work
    )
    location, version = found.stdout.split()
    assert Path(location).resolve().is_relative_to(venv.resolve())
    assert wheel.name.startswith(f"sppo_rl-{version}-")

    assert "suite" in _run([bin_dir / "sppo-zoo", "--help"], work).stdout
    assert "tiny_cpu" in _run([bin_dir / "sppo-llm", "examples"], work).stdout

    # SPPO on the binary outcome of Precision CartPole from the start policy that ships in the wheel
    _run(
        [
            *(bin_dir / "sppo-zoo", "suite", "--env", "SparsePrecisionCartPole-v0"),
            *("--algos", "sppo", "--seeds", "0", "--episodes", "128", "--out", "suite"),
        ],
        work,
    )
    summary = json.loads((work / "suite" / "SparsePrecisionCartPole-v0" / "summary.json").read_text())
    assert Path(summary["start_policy"]["path"]).resolve().is_relative_to(venv.resolve())
    assert [row["algo"] for row in summary["rows"]] == ["sppo"]

    # the LLM trainer from the example config that ships in the wheel
    _run(
        [
            bin_dir / "sppo-llm",
            "train",
            "--example",
            "tiny_cpu",
            "--set",
            "train.n_iterations=5",
            "--output-dir",
            "run",
        ],
        work,
    )
    run_summary = json.loads((work / "run" / "summary.json").read_text())
    assert run_summary["iteration"] == 5
    assert (work / "run" / "final").is_dir()
