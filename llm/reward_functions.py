"""Reward functions and the one way they are called: TRL's signature, once per batch (or slice), output checked.

A reward function is called as ``fn(prompts=..., completions=..., completion_ids=..., **columns)`` and returns one
value per completion (``None``: does not apply); ``async def`` functions are awaited. :func:`call_reward` makes that
call and checks what comes back: an exception or a value that is not a finite number (or lies outside the function's
declared ``reward_range``) fails its samples, a scalar or a wrong length breaks the contract (``fatal``, always
raised by the runner). A :class:`~sppo_rl.llm.verifiers.Verifier` is scored sample by sample instead, so that its
parsed answers and verdicts come back too. What comes back is a :class:`CallResult`, one entry per sample.

:class:`FunctionReward` gives a plain function a name and a range; :func:`make_reward` builds a reward from a name
(``boxed_math``, ``exact_match``, ``reasoning_gym``), a ``module:function`` path or a callable.

This module imports no torch: worker processes (:mod:`sppo_rl.llm.reward_workers`) import it to call the functions.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import math
import os
import pickle
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .verifiers import (
    BoxedMathVerifier,
    ExactMatchVerifier,
    ReasoningGymVerifier,
    Verifier,
    completion_text,
    prompt_text,
)

__all__ = [
    "BUILT_IN",
    "CallResult",
    "FunctionReward",
    "RewardCall",
    "RewardOutputError",
    "RewardTimeoutError",
    "call_in_process",
    "call_reward",
    "make_reward",
    "picklable",
    "reward_kwargs",
]

BUILT_IN: dict[str, type[Verifier]] = {
    "boxed_math": BoxedMathVerifier,
    "math": BoxedMathVerifier,
    "exact_match": ExactMatchVerifier,
    "reasoning_gym": ReasoningGymVerifier,
}
"""Reward names of the built-in verifiers."""

RESERVED_COLUMNS = frozenset({"prompt", "prompts", "completion", "completions", "completion_ids"})
"""Dataset columns not passed as keyword arguments (they would clash with the call's own, as in TRL)."""


class RewardOutputError(ValueError):
    """A reward function broke the calling contract: a scalar, or not one value per completion."""


class RewardTimeoutError(TimeoutError):
    """A reward function's call did not return within its time limit (its worker was stopped)."""


@dataclass
class RewardCall:
    """One slice of a batch, as a reward function sees it.

    :param prompts: prompt texts, or chat messages for a conversational dataset
    :param completions: completion texts, or ``[{"role": "assistant", "content": ...}]`` each
    :param completion_ids: the completions' token ids
    :param rows: the dataset row of each sample (its columns become keyword arguments)
    """

    prompts: list[Any]
    completions: list[Any]
    completion_ids: list[list[int]]
    rows: list[Mapping[str, Any]]

    def __len__(self) -> int:
        return len(self.completions)

    def slice(self, start: int, stop: int) -> RewardCall:
        """Samples ``start:stop``."""
        s = slice(start, stop)
        return RewardCall(self.prompts[s], self.completions[s], self.completion_ids[s], self.rows[s])


@dataclass
class CallResult:
    """What one call gave, one entry per sample.

    :param values: the rewards (``None``: not applicable, or failed)
    :param failures: ``None``, or why the sample has no value: ``"error"`` (the call raised), ``"timeout"``,
        ``"invalid"`` (a non-number, NaN, infinite, or outside the declared ``reward_range``)
    :param parsed: a verifier's parsed answers (``None`` for a plain function)
    :param correct: a verifier's verdicts
    :param no_answer: a verifier found no answer
    :param error: the first failure's exception (with its worker traceback as ``__cause__``)
    :param fatal: a broken contract (a scalar, a wrong length): always raised
    """

    values: list[float | None]
    failures: list[str | None]
    parsed: list[str | None] | None = None
    correct: list[bool] | None = None
    no_answer: list[bool] | None = None
    error: BaseException | None = None
    fatal: BaseException | None = None
    traceback: str | None = field(default=None, repr=False)

    @classmethod
    def failed(cls, n: int, kind: str, error: BaseException) -> CallResult:
        """Every sample of the call failed the same way."""
        return cls([None] * n, [kind] * n, error=error)

    def fail(self, i: int, kind: str, error: BaseException) -> None:
        """Sample ``i`` failed; the first error is kept."""
        self.values[i] = None
        self.failures[i] = kind
        if self.error is None:
            self.error = error

    @staticmethod
    def concat(parts: Sequence[CallResult]) -> CallResult:
        """One result from consecutive slices (the first error and the first fatal error are kept)."""
        verifier = any(p.parsed is not None for p in parts)
        out = CallResult(
            [v for p in parts for v in p.values],
            [f for p in parts for f in p.failures],
            [x for p in parts for x in (p.parsed or [None] * len(p.values))] if verifier else None,
            [x for p in parts for x in (p.correct or [False] * len(p.values))] if verifier else None,
            [x for p in parts for x in (p.no_answer or [False] * len(p.values))] if verifier else None,
        )
        out.error = next((p.error for p in parts if p.error is not None), None)
        out.fatal = next((p.fatal for p in parts if p.fatal is not None), None)
        return out


# ---------------------------------------------------------------------------------------------------------
# One call
# ---------------------------------------------------------------------------------------------------------


def reward_kwargs(call: RewardCall) -> dict[str, Any]:
    """TRL's keyword arguments: ``prompts``, ``completions``, ``completion_ids`` and every other dataset column as
    a list over the samples (a column missing from a row is ``None`` there)."""
    columns: list[str] = []
    for row in call.rows:
        columns.extend(k for k in row if k not in RESERVED_COLUMNS and k not in columns)
    kwargs: dict[str, Any] = {k: [row.get(k) for row in call.rows] for k in columns}
    kwargs.update(prompts=call.prompts, completions=call.completions, completion_ids=call.completion_ids)
    return kwargs


def run_coroutine(awaitable: Any) -> Any:
    """Await ``awaitable`` from synchronous code: on a new event loop, in a helper thread when this thread
    already runs one (a notebook)."""

    async def wrapped() -> Any:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wrapped())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["out"] = asyncio.run(wrapped())
        except BaseException as exc:
            box["error"] = exc

    helper = threading.Thread(target=target, name="sppo-reward-async")
    helper.start()
    helper.join()
    if "error" in box:
        raise box["error"]
    return box["out"]


def _number(value: Any) -> float | None:
    """``float(value)`` for a real number (bool, int, float, NumPy or 0-d tensor), else ``None``."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _check_value(result: CallResult, i: int, value: Any, bounds: tuple[float, float] | None) -> float | None:
    number = _number(value)
    if number is None or not math.isfinite(number):
        result.fail(i, "invalid", ValueError(f"returned {value!r} for sample {i}"))
        return None
    if bounds is not None and not bounds[0] <= number <= bounds[1]:
        msg = f"returned {number:g} for sample {i}, outside its reward_range {list(bounds)}"
        result.fail(i, "invalid", ValueError(msg))
        return None
    return number


def call_reward(fn: Any, call: RewardCall, name: str) -> CallResult:
    """Call one reward function (or verifier) on a slice of the batch and check what it returns; never raises
    for what the function does (its exceptions and bad values become failures, a broken contract ``fatal``).

    :param fn: a TRL-style function (sync or ``async``) or a :class:`~sppo_rl.llm.verifiers.Verifier`
    :param call: the samples
    :param name: the function's name, for messages
    """
    n = len(call)
    bounds = getattr(fn, "reward_range", None)
    if isinstance(fn, Verifier):
        result = CallResult([None] * n, [None] * n, [None] * n, [False] * n, [False] * n)
        assert result.parsed is not None and result.correct is not None and result.no_answer is not None
        for i in range(n):
            try:
                scored = fn.score(prompt_text(call.prompts[i]), completion_text(call.completions[i]), call.rows[i])
            except Exception as exc:
                result.fail(i, "error", exc)
                continue
            result.parsed[i] = scored.parsed
            if scored.failure == "timeout":
                result.fail(i, "timeout", RewardTimeoutError(f"math-verify's own time limit ran out on sample {i}"))
                continue
            value = _check_value(result, i, scored.reward, bounds)
            if value is not None:
                result.values[i] = value
                result.correct[i] = bool(scored.correct)
                result.no_answer[i] = scored.failure == "no_answer"
        return result
    try:
        out = fn(**reward_kwargs(call))
        if inspect.isawaitable(out):
            out = run_coroutine(out)
    except Exception as exc:
        return CallResult.failed(n, "error", exc)
    try:
        items = list(out) if not isinstance(out, (str, bytes, Mapping)) else None
    except TypeError:
        items = None
    result = CallResult([None] * n, [None] * n)
    if items is None:
        result.fatal = RewardOutputError(
            f"reward function {name!r} returned {out!r}; a reward function returns one value per completion "
            f"(a list of {n})"
        )
        return result
    if len(items) != n:
        result.fatal = RewardOutputError(
            f"reward function {name!r} returned {len(items)} rewards for {n} completions; it must return exactly "
            "one value (or None) per completion"
        )
        return result
    for i, value in enumerate(items):
        if value is not None:
            result.values[i] = _check_value(result, i, value, bounds)
    return result


def call_in_process(fn: Any, call: RewardCall, name: str, timeout_s: float | None) -> CallResult:
    """:func:`call_reward` in this process: directly when there is no time limit (or the function enforces its
    own in the main thread), else in a watchdog thread that is abandoned, still running, if the call overruns
    (a thread cannot be killed: only worker processes stop a stuck call).

    :param fn: the function
    :param call: the samples
    :param name: its name
    :param timeout_s: seconds, or ``None``
    """
    own_timeout = getattr(fn, "handles_timeout", False) and threading.current_thread() is threading.main_thread()
    if not timeout_s or own_timeout:
        return call_reward(fn, call, name)
    box: dict[str, CallResult] = {}
    watchdog = threading.Thread(target=lambda: box.update(out=call_reward(fn, call, name)), daemon=True)
    watchdog.start()
    watchdog.join(timeout_s)
    if "out" not in box:
        msg = f"did not return within {timeout_s:g} s on {len(call)} samples (its thread keeps running)"
        return CallResult.failed(len(call), "timeout", RewardTimeoutError(msg))
    return box["out"]


# ---------------------------------------------------------------------------------------------------------
# Functions and names
# ---------------------------------------------------------------------------------------------------------


class FunctionReward:
    """A TRL-style reward function with a name and, optionally, the range of its values.

    :param func: ``func(prompts, completions, completion_ids, **columns) -> list[float | None]`` (sync or async)
    :param name: the name in metrics and in ``outcome`` (default: the function's ``__name__``)
    :param reward_range: ``(low, high)`` bounds of every value (default: ``func.reward_range`` if it has one)
    :param options: keyword arguments bound to every call (``functools.partial``)
    """

    def __init__(
        self,
        func: Callable[..., Any],
        name: str | None = None,
        reward_range: tuple[float, float] | None = None,
        **options: Any,
    ) -> None:
        if not callable(func):
            raise TypeError(f"A reward function must be callable, got {func!r}")
        self.func: Callable[..., Any] = functools.partial(func, **options) if options else func
        self.name: str = name or _callable_name(func)
        bounds = reward_range if reward_range is not None else getattr(func, "reward_range", None)
        self.reward_range: tuple[float, float] | None = (float(bounds[0]), float(bounds[1])) if bounds else None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"FunctionReward({self.name!r})"


def _callable_name(fn: Any) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return str(getattr(fn, "__name__", None) or type(fn).__name__)


def make_reward(spec: Any, **options: Any) -> Verifier | FunctionReward:
    """Build a reward from a name, an import path or a callable.

    :param spec: ``"boxed_math"``, ``"exact_match"``, ``"reasoning_gym"``, ``"module:function"`` (a TRL-style
        function, a :class:`~sppo_rl.llm.verifiers.Verifier` instance or class, imported from the working folder or
        the installed packages), a verifier, or a callable
    :param options: constructor arguments of a verifier; keyword arguments bound to a function
    :raises ValueError: an unknown name, or a module without that attribute
    :raises ImportError: a module that cannot be imported, naming the working folder
    """
    if isinstance(spec, (Verifier, FunctionReward)):
        if options:
            raise ValueError(f"Options {sorted(options)} given for an already built reward {spec!r}")
        return spec
    if isinstance(spec, type) and issubclass(spec, Verifier):
        return spec(**options)
    if callable(spec):
        return FunctionReward(spec, **options)
    if isinstance(spec, str) and spec in BUILT_IN:
        return BUILT_IN[spec](**options)
    if isinstance(spec, str) and ":" in spec:
        module_name, attr = spec.split(":", 1)
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportError(f"Reward {spec!r}: cannot import {module_name!r} (working folder {cwd}): {exc}") from exc
        if not hasattr(module, attr):
            raise ValueError(f"Reward {spec!r}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(module, attr)
        if isinstance(target, Verifier) or (isinstance(target, type) and issubclass(target, Verifier)):
            return make_reward(target, **options)
        return FunctionReward(target, name=attr, **options)
    raise ValueError(f"Unknown reward {spec!r}; use one of {', '.join(BUILT_IN)}, 'module:function' or a callable")


def picklable(fn: Callable[..., Any]) -> bool:
    """Whether a worker process can receive ``fn``: it pickles, and (for a function) its module is not the main
    script (a worker never re-runs the user's main script)."""
    target = fn
    while hasattr(target, "func"):  # functools.partial and FunctionReward
        target = target.func
    if getattr(target, "__module__", None) == "__main__":
        return False
    try:
        pickle.dumps(fn)
    except Exception:
        return False
    return True
