"""Logging and callbacks for the LLM trainer, in stable-baselines3's style.

The logger is SB3's (``stable_baselines3.common.logger.configure``: stdout, CSV, TensorBoard, JSON) and the
callbacks are SB3 callbacks (``BaseCallback`` subclasses, lists of them, or ``fn(locals, globals) -> bool``,
through SB3's own ``CallbackList`` and ``ConvertCallback``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback
from stable_baselines3.common.logger import HumanOutputFormat, Logger, configure

__all__ = ["make_callback", "make_logger"]


def make_logger(folder: str | None = None, formats: list[str] | None = None, verbose: int = 1) -> Logger:
    """SB3's logger for ``folder`` with ``formats`` (default ``["stdout"]`` when verbose, else none).

    :param folder: log folder (``None``: SB3's temporary folder, only used by file formats)
    :param formats: e.g. ``["stdout", "csv", "tensorboard"]``
    :param verbose: 0 removes ``"stdout"``
    :return: an SB3 ``Logger``
    """
    if formats is None:
        formats = ["stdout"] if verbose else []
    if not verbose:
        formats = [f for f in formats if f != "stdout"]
    if folder is None and all(f == "stdout" for f in formats):
        return Logger(folder=None, output_formats=[HumanOutputFormat(sys.stdout)] if formats else [])
    return configure(folder, formats)


def make_callback(callback: Any) -> BaseCallback:
    """Normalise ``None``, an SB3 callback, a function or a list of them into one SB3 callback.

    :param callback: ``None``; a ``BaseCallback``; a function ``fn(locals, globals) -> bool`` (returning ``False``
        stops training); or a list of those
    :return: a ``CallbackList``
    :raises TypeError: something that is neither
    """
    items = callback if isinstance(callback, (list, tuple)) else ([] if callback is None else [callback])
    wrapped: list[BaseCallback] = []
    for c in items:
        if isinstance(c, BaseCallback):
            wrapped.append(c)
        elif callable(c):
            wrapped.append(ConvertCallback(_continue_unless_false(c)))
        else:
            raise TypeError(f"A callback must be an SB3 BaseCallback or a function, got {c!r}")
    return CallbackList(wrapped)


def _continue_unless_false(fn: Callable[[dict[str, Any], dict[str, Any]], Any]) -> Callable[..., bool]:
    """Only an explicit ``False`` stops training (a function that returns nothing goes on)."""

    def wrapped(locals_: dict[str, Any], globals_: dict[str, Any]) -> bool:
        return fn(locals_, globals_) is not False

    return wrapped
