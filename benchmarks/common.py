"""What every benchmark script shares: the machine and versions it ran on, the markdown table, the JSON file.

Each script under ``benchmarks/`` prints a table and writes JSON; ``machine_info`` goes into that JSON so that a
number can always be traced to the hardware and the library versions that produced it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ROOT", "machine_info", "markdown_table", "write_json"]

ROOT = Path(__file__).resolve().parents[1]
"""The repository root."""

PACKAGES = ("torch", "numpy", "gymnasium", "stable-baselines3", "transformers", "peft", "accelerate", "sppo-rl")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(packages: Iterable[str] = PACKAGES) -> dict[str, Any]:
    """The machine (CPU, cores, GPU if any) and the versions of the packages that shape the numbers.

    :param packages: distribution names whose versions to record (absent ones are left out)
    """
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "argv": " ".join(sys.argv),
    }
    info["versions"] = {p: v for p in packages if (v := _version(p)) is not None}
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = {
                "name": props.name,
                "count": torch.cuda.device_count(),
                "memory_gib": props.total_memory / 2**30,
            }
    except ImportError:
        pass
    return info


def markdown_table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table with a ``###`` title; floats get 3 significant digits (1 decimal from 100 up).

    :param title: the heading
    :param header: column names
    :param rows: the cells (``None`` prints as ``-``)
    """

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.1f}"
        return str(v)

    lines = [f"\n### {title}", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (creating the folder) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return out
