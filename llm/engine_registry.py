"""The registry of generation engines: ``generation.engine`` name -> engine class (or its ``"module:Class"`` path).

Kept apart from :mod:`sppo_rl.llm.generation` (which defines the engines) so that configurations can check an engine
name without importing any model code. The built-in engines are listed by import path and loaded on first use, as
gymnasium's registry does; :func:`register_generation_engine` adds a class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["GENERATION_ENGINES", "get_generation_engine", "register_generation_engine"]

GENERATION_ENGINES: dict[str, Any] = {
    "generate": "sppo_rl.llm.generation:TransformersEngine",
    "static": "sppo_rl.llm.generation:StaticCacheEngine",
}
"""Name -> engine class, or the ``"module:Class"`` path of a built-in one."""


def register_generation_engine(name: str) -> Callable[[type], type]:
    """Class decorator that registers a generation engine (a subclass of
    :class:`~sppo_rl.llm.generation.GenerationEngine`) under ``name``.

    :param name: the value of ``generation.engine`` that selects it
    :raises ValueError: ``name`` is taken by another class
    """

    def decorator(cls: type) -> type:
        existing = GENERATION_ENGINES.get(name)
        path = f"{cls.__module__}:{cls.__qualname__}"
        if existing is not None and existing is not cls and existing != path:
            raise ValueError(f"A generation engine named {name!r} is already registered")
        GENERATION_ENGINES[name] = cls
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return decorator


def check_engine_name(name: str) -> None:
    """Raise ``ValueError`` naming the registered engines if ``name`` is not one of them."""
    if name not in GENERATION_ENGINES:
        raise ValueError(
            f"generation.engine must be a registered engine ({', '.join(sorted(GENERATION_ENGINES))}), got {name!r}"
        )


def get_generation_engine(name: str) -> type:
    """The engine class registered as ``name`` (imported on first use for the built-in ones).

    :raises ValueError: naming the registered engines
    """
    check_engine_name(name)
    entry = GENERATION_ENGINES[name]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        GENERATION_ENGINES[name] = entry
    return entry  # type: ignore[no-any-return]
