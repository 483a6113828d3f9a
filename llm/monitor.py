"""Callbacks of the LLM trainer, in stable-baselines3's style (the logs are :mod:`sppo_rl.llm.run_logs`).

The callbacks are SB3 callbacks (``BaseCallback`` subclasses, lists of them, or ``fn(locals, globals) -> bool``,
through SB3's own ``CallbackList`` and ``ConvertCallback``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback

__all__ = ["make_callback"]


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
