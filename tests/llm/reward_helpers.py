"""Reward functions for the reward tests, written as a TRL user writes them.

They live in an importable module of the standard library only, so that worker processes can load them (by
reference) in a fraction of a second; functions defined inside a test are closures and run in-process.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import threading
import time
from typing import Any

from sppo_rl.llm.verifiers import Verifier, VerifierResult


def accuracy_reward(completions: list[Any], solution: list[str], **kwargs: Any) -> list[float | None]:
    """TRL's ``accuracy_reward`` habit: a conversational completion, read as ``completion[0]["content"]``."""
    return [float(c[0]["content"].strip().startswith(s)) for c, s in zip(completions, solution, strict=True)]


accuracy_reward.reward_range = (0.0, 1.0)  # type: ignore[attr-defined]


def format_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """1 when the response starts with a digit (a TRL-style format reward, range undeclared)."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [float(t.strip()[:1].isdigit()) for t in texts]


def parity_reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
    """A deterministic, response-dependent 0/1 reward (so groups have mixed outcomes)."""
    return [float(sum(map(ord, c)) % 2) for c in completions]


def digit_reward(prompts: list[str], completions: list[str], answer: list[str], **kwargs: Any) -> list[float]:
    """1 when the plain-text completion starts with the answer."""
    return [float(c.strip().startswith(a)) for c, a in zip(completions, answer, strict=True)]


digit_reward.reward_range = (0.0, 1.0)  # type: ignore[attr-defined]


async def async_digit_reward(completions: list[str], answer: list[str], **kwargs: Any) -> list[float]:
    """:func:`digit_reward` as an ``async def`` (an LLM judge's habit)."""
    await asyncio.sleep(0.01)
    return [float(c.strip().startswith(a)) for c, a in zip(completions, answer, strict=True)]


def length_reward(completions: list[str], target: int = 3, **kwargs: Any) -> list[float]:
    """``-|len - target|``: a reward outside [0, 1]; ``target`` is an option bound from the config."""
    return [-abs(len(c) - target) for c in completions]


def hang_on(completions: list[str], **kwargs: Any) -> list[float]:
    """Hangs when any completion of its batch is ``"hang"``, else 1 each."""
    if "hang" in completions:
        time.sleep(3600)
    return [1.0] * len(completions)


def flaky(completions: list[str], **kwargs: Any) -> list[float | None]:
    """Raises on ``"boom"``; NaN for ``"nan"``, ``None`` for ``"skip"``, a string for ``"text"``, else 0.5."""
    if "boom" in completions:
        raise KeyError("content")
    table: dict[str, Any] = {"nan": math.nan, "skip": None, "text": "not a number"}
    return [table.get(c, 0.5) for c in completions]


def wrong_length(completions: list[str], **kwargs: Any) -> list[float]:
    """One value too many."""
    return [1.0] * (len(completions) + 1)


def scalar(completions: list[str], **kwargs: Any) -> float:
    """A scalar for the whole batch."""
    return 1.0


def worker_facts(completions: list[str], **kwargs: Any) -> list[float]:
    """The process id (as a float) of whoever calls it; negative when not called in a main thread."""
    sign = 1.0 if threading.current_thread() is threading.main_thread() else -1.0
    return [sign * os.getpid()] * len(completions)


def torch_imported(completions: list[str], **kwargs: Any) -> list[float]:
    """1 when the calling process has imported torch."""
    return [float("torch" in sys.modules)] * len(completions)


class PreloadProbe(Verifier):
    """Scores 1 when :meth:`preload` ran in this process before the call (a worker inherits it from the zygote)."""

    name = "preload_probe"

    def preload(self) -> None:
        _PRELOADED.append(True)

    def score(self, prompt: str, completion: str, row: Any) -> VerifierResult:
        return VerifierResult(float(bool(_PRELOADED)), completion, bool(_PRELOADED))


_PRELOADED: list[bool] = []
