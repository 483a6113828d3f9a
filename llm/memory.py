"""Peak memory of the trainer's phases: CUDA's allocator peak on a GPU, the process's peak RSS on a CPU."""

from __future__ import annotations

import resource
import sys

import torch

__all__ = ["peak_memory_mb", "reset_peak_memory"]


def reset_peak_memory() -> None:
    """Reset the CUDA peak-memory counter (no-op on CPU)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak memory in MiB: CUDA's ``max_memory_allocated`` on a GPU, the process's max RSS on a CPU."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss_kb / 1024 if sys.platform != "darwin" else rss_kb / 2**20
