"""The numbers that docs/llm.md quotes for the tiny CPU example, from the command a reader runs.

Runs ``sppo-llm train --example tiny_cpu`` (the shipped ``llm/examples/tiny_cpu.yml``: random-init models and
tokenizers built in-process, no download) through the console script, then prints the run's summary as a table and
writes it, with the machine and versions, as JSON. ``tests/llm/test_tiny_cpu_numbers.py`` checks that docs/llm.md
quotes this JSON and that a fresh run stays within the stated tolerance of it.

    python benchmarks/tiny_cpu.py --out docs/results/tiny_cpu.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine_info, markdown_table, write_json

COMMAND = ["sppo-llm", "train", "--example", "tiny_cpu"]
"""What a reader runs (the output folder is added)."""

TOLERANCE = 0.15
"""How far (absolute) a rerun's rewards and held-out metrics may fall from the recorded ones: sampling is seeded, but
another CPU or library version may round differently and so draw other tokens."""


def run_example(output_dir: Path, extra: list[str] | None = None) -> dict[str, Any]:
    """Run the example through the console script and return its ``summary.json`` plus the wall-clock.

    :param output_dir: the run's folder (must not hold a run)
    :param extra: more command-line arguments (``--set`` overrides)
    """
    script = shutil.which("sppo-llm") or str(Path(sys.executable).with_name("sppo-llm"))
    cmd = [script, *COMMAND[1:], "--output-dir", str(output_dir), "--quiet", *(extra or [])]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    summary = json.loads((output_dir / "summary.json").read_text())
    summary["wall_clock_s"] = round(wall, 1)
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "tiny_cpu.json"), help="JSON output")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_example(Path(tmp) / "run")
    ev = summary["eval"]
    print(
        markdown_table(
            "sppo-llm train --example tiny_cpu",
            ["iterations", "reward, first logged row", "reward, last logged row", "avg@4", "pass@4", "maj@4", "wall s"],
            [
                [
                    summary["iteration"],
                    summary["reward_first_logged"],
                    summary["reward_last_logged"],
                    ev["avg@4"],
                    ev["pass@4"],
                    ev["maj@4"],
                    summary["wall_clock_s"],
                ]
            ],
        )
    )
    payload = {
        "command": " ".join(COMMAND),
        "tolerance": TOLERANCE,
        "summary": summary,
        "machine": machine_info(),
    }
    print(f"\nwrote {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
