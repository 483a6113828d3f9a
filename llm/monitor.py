"""Logging, callbacks and resource measurements for the LLM trainer, in stable-baselines3's style.

The logger is SB3's (``stable_baselines3.common.logger.configure``: stdout, CSV, TensorBoard, JSON) and the
callbacks are SB3 callbacks (``BaseCallback`` subclasses, lists of them, or ``fn(locals, globals) -> bool``).
SB3 is imported only when a logger or callback is built; without it (a GPU box with only torch and
``transformers``) a minimal stdout logger and plain-function callbacks are used instead.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["PlainLogger", "make_callback", "make_logger", "peak_memory_mb", "reset_peak_memory"]


class PlainLogger:
    """A tiny stand-in for SB3's ``Logger`` (``record``/``dump``/``get_dir``) when SB3 is not installed.

    :param folder: where a ``progress.jsonl`` file is written (``None``: no file)
    :param stdout: print each dump as one JSON line
    """

    def __init__(self, folder: str | None = None, stdout: bool = True) -> None:
        self.name_to_value: dict[str, Any] = {}
        self.dir = folder
        self.stdout = stdout
        if folder:
            os.makedirs(folder, exist_ok=True)

    def record(self, key: str, value: Any, exclude: Any = None) -> None:
        self.name_to_value[key] = value

    def record_mean(self, key: str, value: Any, exclude: Any = None) -> None:
        self.name_to_value[key] = value

    def dump(self, step: int = 0) -> None:
        line = json.dumps({"step": step, **self.name_to_value}, default=float)
        if self.stdout:
            print(line, file=sys.stdout, flush=True)
        if self.dir:
            with open(os.path.join(self.dir, "progress.jsonl"), "a", encoding="utf-8") as f:
                f.write(line + "\n")
        self.name_to_value = {}

    def get_dir(self) -> str | None:
        return self.dir

    def info(self, *args: Any) -> None:
        if self.stdout:
            print(*args, flush=True)

    log = info

    def close(self) -> None:
        pass


def make_logger(folder: str | None = None, formats: list[str] | None = None, verbose: int = 1) -> Any:
    """SB3's logger for ``folder`` with ``formats`` (default ``["stdout"]`` when verbose, else none).

    :param folder: log folder (``None``: SB3's temporary folder, only used by file formats)
    :param formats: e.g. ``["stdout", "csv", "tensorboard"]``
    :param verbose: 0 removes ``"stdout"``
    :return: an SB3 ``Logger``, or :class:`PlainLogger` when SB3 is not installed
    """
    if formats is None:
        formats = ["stdout"] if verbose else []
    if not verbose:
        formats = [f for f in formats if f != "stdout"]
    try:
        from stable_baselines3.common.logger import configure
    except ImportError:
        return PlainLogger(folder if any(f != "stdout" for f in formats) else None, "stdout" in formats)
    if folder is None and all(f == "stdout" for f in formats):
        from stable_baselines3.common.logger import HumanOutputFormat, Logger

        return Logger(folder=None, output_formats=[HumanOutputFormat(sys.stdout)] if formats else [])
    return configure(folder, formats)


class _FunctionCallback:
    """A plain function ``fn(locals, globals) -> bool`` as a callback (used when SB3 is not installed)."""

    def __init__(self, fn: Callable[[dict[str, Any], dict[str, Any]], bool]) -> None:
        self.fn = fn
        self.locals: dict[str, Any] = {}
        self.globals: dict[str, Any] = {}

    def init_callback(self, model: Any) -> None:
        self.model = model

    def on_training_start(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        self.locals, self.globals = locals_, globals_

    def on_rollout_start(self) -> None:
        pass

    def on_step(self) -> bool:
        result = self.fn(self.locals, self.globals)
        return True if result is None else bool(result)

    def on_rollout_end(self) -> None:
        pass

    def on_training_end(self) -> None:
        pass

    def update_locals(self, locals_: dict[str, Any]) -> None:
        self.locals.update(locals_)


class _Callbacks:
    """Runs several callback objects (SB3 ``CallbackList`` semantics, without requiring SB3)."""

    def __init__(self, callbacks: list[Any]) -> None:
        self.callbacks = callbacks

    def init_callback(self, model: Any) -> None:
        for c in self.callbacks:
            c.init_callback(model)

    def on_training_start(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        for c in self.callbacks:
            c.on_training_start(locals_, globals_)

    def on_rollout_start(self) -> None:
        for c in self.callbacks:
            c.on_rollout_start()

    def on_step(self) -> bool:
        go_on = True
        for c in self.callbacks:
            go_on = c.on_step() and go_on
        return go_on

    def on_rollout_end(self) -> None:
        for c in self.callbacks:
            c.on_rollout_end()

    def on_training_end(self) -> None:
        for c in self.callbacks:
            c.on_training_end()

    def update_locals(self, locals_: dict[str, Any]) -> None:
        for c in self.callbacks:
            c.update_locals(locals_)


def make_callback(callback: Any) -> _Callbacks:
    """Normalise ``None``, an SB3 callback, a function or a list of them into one callback object.

    :param callback: ``None``; an object with SB3's callback methods (``BaseCallback``); a function
        ``fn(locals, globals) -> bool`` (returning ``False`` stops training); or a list of those
    :return: an object with ``init_callback``, ``on_training_start``, ``on_rollout_start``, ``on_step``,
        ``on_rollout_end``, ``on_training_end`` and ``update_locals``
    """
    items = callback if isinstance(callback, (list, tuple)) else ([] if callback is None else [callback])
    wrapped = []
    for c in items:
        if hasattr(c, "on_step") and hasattr(c, "init_callback"):
            wrapped.append(c)
        elif callable(c):
            wrapped.append(_FunctionCallback(c))
        else:
            raise TypeError(f"A callback must be an SB3 BaseCallback or a function, got {c!r}")
    return _Callbacks(wrapped)


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
