"""The tiny CPU example's numbers that docs/llm.md and the example's own comments quote: they are the recorded run
(``docs/results/tiny_cpu.json``, written by ``benchmarks/tiny_cpu.py``), and a fresh run of the same command stays
within the recorded tolerance of them."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECORD = json.loads((ROOT / "docs" / "results" / "tiny_cpu.json").read_text())
SUMMARY = RECORD["summary"]
TOLERANCE = RECORD["tolerance"]


@pytest.fixture(scope="module")
def tiny_cpu() -> Any:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("tiny_cpu")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def _quoted() -> dict[str, str]:
    """The numbers each document states, as printed (two decimals)."""
    ev = SUMMARY["eval"]
    return {
        "reward_first_logged": f"{SUMMARY['reward_first_logged']:.2f}",
        "reward_last_logged": f"{SUMMARY['reward_last_logged']:.2f}",
        "avg@4": f"{ev['avg@4']:.2f}",
        "pass@4": f"{ev['pass@4']:.2f}",
    }


@pytest.mark.parametrize("document", ["docs/llm.md", "llm/examples/tiny_cpu.yml"])
def test_the_documents_quote_the_recorded_run(document: str) -> None:
    text = (ROOT / document).read_text()
    start = text.index("tiny-cpu-numbers")  # the passage that quotes the run is marked
    passage = text[start : start + 1200]
    for name, value in _quoted().items():
        assert value in passage, f"{document} should quote {name} = {value} from docs/results/tiny_cpu.json"
    assert "benchmarks/tiny_cpu.py" in passage or "sppo-llm train --example tiny_cpu" in passage
    assert RECORD["command"] == "sppo-llm train --example tiny_cpu"


def test_the_first_logged_row_is_reproduced(tiny_cpu: Any, tmp_path: Path) -> None:
    """The first 20 iterations of the same command (the first logged row averages them) give the recorded reward."""
    rows = SUMMARY["first_logged_iteration"]
    summary = tiny_cpu.run_example(tmp_path / "run", ["--set", f"train.n_iterations={rows}", "--set", "eval_data=null"])
    assert summary["iteration"] == rows
    assert summary["reward_first_logged"] == pytest.approx(SUMMARY["reward_first_logged"], abs=TOLERANCE)


@pytest.mark.slow
def test_a_fresh_run_stays_within_the_tolerance(tiny_cpu: Any, tmp_path: Path) -> None:
    summary = tiny_cpu.run_example(tmp_path / "run")
    assert summary["iteration"] == SUMMARY["iteration"]
    for key in ("reward_first_logged", "reward_last_logged"):
        assert summary[key] == pytest.approx(SUMMARY[key], abs=TOLERANCE), key
    for key in ("avg@4", "pass@4", "maj@4"):
        assert summary["eval"][key] == pytest.approx(SUMMARY["eval"][key], abs=TOLERANCE), key
