"""Verifiable rewards: boxed-answer math (``math-verify``), exact match, ``reasoning-gym`` scorers, safely run.

Every reward here is callable with TRL's reward-function signature::

    reward(prompts: list[str], completions: list[str], **columns) -> list[float | None]

where ``columns`` are the dataset's extra columns, one list per column (``answer=[...]``, ...). A plain function
with that signature works too (wrap it with :class:`FunctionReward` or pass it to :class:`RewardRunner`).

:class:`RewardRunner` is what the trainer and :class:`~sppo_rl.llm.env.PromptEnv` use: it calls each reward on
one sample at a time so that a failure stays local, and **never raises**: an exception, a timeout, a non-numeric
or NaN score all give 0 and are counted in :class:`RewardStats` (logged as ``reward/*``). Scores outside
``[0, 1]`` are passed through unchanged; the Bernoulli value head rejects them with a clear error.

Timeouts. ``math-verify`` times its parsing and comparisons with ``signal.alarm``, which only works in the main
thread. :class:`BoxedMathVerifier` uses those signal timeouts when it runs in the main thread, and disables them
elsewhere; the runner then enforces ``timeout_s`` itself by running the call in a daemon thread and scoring 0
if it does not return in time (the stuck thread is abandoned, not killed).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BoxedMathVerifier",
    "ExactMatchVerifier",
    "FunctionReward",
    "ReasoningGymVerifier",
    "RewardRunner",
    "RewardStats",
    "ScoredBatch",
    "Verifier",
    "VerifierResult",
    "extract_boxed",
    "make_reward",
]

RewardFn = Callable[..., Sequence[float | None]]


@dataclass
class VerifierResult:
    """The score of one response.

    :param reward: the reward (0 when the verifier failed)
    :param parsed: the answer extracted from the response (``None`` if none was found)
    :param correct: whether the answer is right
    :param failure: ``None``, or why the score is a default 0: ``"no_answer"`` (nothing to parse),
        ``"error"`` (the verifier raised), ``"timeout"``, ``"invalid"`` (a non-numeric or NaN score),
        ``"none"`` (the reward function returned ``None``: it does not apply to this sample)
    """

    reward: float
    parsed: str | None = None
    correct: bool = False
    failure: str | None = None


class TimeoutExpired(Exception):
    """A verifier call ran past its time limit."""


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) of ``text``, braces balanced.

    :param text: a response
    :return: the boxed content, or ``None`` when there is no complete box
    """
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


class Verifier:
    """Base class: scores one ``(prompt, completion, row)`` and is callable with TRL's batch signature.

    Subclasses implement :meth:`score`. ``handles_timeout`` says that the runner may call the verifier directly in
    the main thread rather than in a watchdog thread: either it enforces the timeout itself there (math-verify's
    signal timeouts) or it is cheap and bounded (exact match).

    :param answer_column: the dataset column with the reference answer
    :param success_threshold: a reward ``>= success_threshold`` counts as a success
    """

    name = "verifier"
    handles_timeout = False

    def __init__(self, answer_column: str = "answer", success_threshold: float = 1.0) -> None:
        self.answer_column = answer_column
        self.success_threshold = success_threshold

    def score(self, prompt: str, completion: str, row: Mapping[str, Any]) -> VerifierResult:
        """Score one response.

        :param prompt: the prompt text
        :param completion: the response text
        :param row: the dataset row (all columns)
        :return: a :class:`VerifierResult`
        """
        raise NotImplementedError

    def reference(self, row: Mapping[str, Any]) -> str:
        """The reference answer of ``row``, as a string."""
        if self.answer_column not in row:
            raise KeyError(f"The dataset row has no answer column {self.answer_column!r} (columns: {sorted(row)})")
        return str(row[self.answer_column])

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **columns: Any) -> list[float | None]:
        """TRL-compatible batch call: one reward per completion."""
        out: list[float | None] = []
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            row = {k: v[i] for k, v in columns.items() if isinstance(v, Sequence) and not isinstance(v, str)}
            out.append(self.score(p, c, row).reward)
        return out


class BoxedMathVerifier(Verifier):
    """1 for a correct ``\\boxed{}`` final answer, 0 otherwise (the paper's reward), with ``math-verify``.

    The reference answer (``row[answer_column]``) is parsed as LaTeX (wrapped in ``$...$`` unless it already has
    math delimiters or a box); the response's last ``\\boxed{}`` is parsed with ``math-verify``'s LaTeX extractor
    and compared with :func:`math_verify.verify` (numeric, symbolic and set equivalence).

    :param answer_column: column with the reference answer
    :param require_boxed: a response without ``\\boxed{}`` scores 0 (``failure="no_answer"``) even if
        ``math-verify`` could find an answer elsewhere
    :param timeout_s: seconds allowed for parsing and for the comparison (``math-verify``'s signal timeouts
        in the main thread; the runner's watchdog thread elsewhere)
    :param success_threshold: see :class:`Verifier`
    """

    name = "boxed_math"
    handles_timeout = True

    def __init__(
        self,
        answer_column: str = "answer",
        require_boxed: bool = True,
        timeout_s: float = 5.0,
        success_threshold: float = 1.0,
    ) -> None:
        super().__init__(answer_column, success_threshold)
        self.require_boxed = require_boxed
        self.timeout_s = timeout_s
        from math_verify import LatexExtractionConfig

        self._answer_config = [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)]

    def _timeout(self) -> int | None:
        if not _in_main_thread() or not self.timeout_s:
            return None
        return max(1, math.ceil(self.timeout_s))

    def score(self, prompt: str, completion: str, row: Mapping[str, Any]) -> VerifierResult:
        from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
        from math_verify.errors import TimeoutException

        boxed = extract_boxed(completion)
        if self.require_boxed and boxed is None:
            return VerifierResult(0.0, None, False, "no_answer")
        gold_text = self.reference(row)
        if "$" not in gold_text and "\\boxed" not in gold_text and "\\(" not in gold_text:
            gold_text = f"${gold_text}$"
        timeout = self._timeout()
        try:
            gold = parse(
                gold_text,
                extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                parsing_timeout=timeout,
                raise_on_error=True,
            )
            answer = parse(
                completion, extraction_config=self._answer_config, parsing_timeout=timeout, raise_on_error=True
            )
            if not answer:
                return VerifierResult(0.0, boxed, False, "no_answer")
            ok = bool(verify(gold, answer, timeout_seconds=timeout, raise_on_error=True))
        except TimeoutException:
            return VerifierResult(0.0, boxed, False, "timeout")
        parsed = str(answer[-1]) if answer else boxed
        return VerifierResult(1.0 if ok else 0.0, parsed, ok)


class ExactMatchVerifier(Verifier):
    """1 if the response's answer equals the reference answer, 0 otherwise.

    :param answer_column: column with the reference answer
    :param mode: how the answer is read from the response: ``"exact"`` (the whole stripped response),
        ``"prefix"`` (the response starts with the reference), ``"contains"`` (the reference occurs anywhere),
        ``"boxed"`` (the last ``\\boxed{}`` content), ``"answer_tag"`` (the last ``<answer>...</answer>``),
        ``"regex"`` (the first group of the last match of ``pattern``)
    :param pattern: the regular expression for ``mode="regex"``
    :param case_sensitive: compare case-sensitively
    :param success_threshold: see :class:`Verifier`
    """

    name = "exact_match"
    handles_timeout = True
    MODES = ("exact", "prefix", "contains", "boxed", "answer_tag", "regex")

    def __init__(
        self,
        answer_column: str = "answer",
        mode: str = "exact",
        pattern: str | None = None,
        case_sensitive: bool = True,
        success_threshold: float = 1.0,
    ) -> None:
        super().__init__(answer_column, success_threshold)
        if mode not in self.MODES:
            raise ValueError(f"Unknown exact-match mode {mode!r}; choose one of {', '.join(self.MODES)}")
        if mode == "regex" and not pattern:
            raise ValueError("mode='regex' needs a pattern")
        self.mode = mode
        self.pattern = re.compile(pattern, re.DOTALL) if pattern else None
        self.case_sensitive = case_sensitive

    def _norm(self, s: str) -> str:
        s = s.strip()
        return s if self.case_sensitive else s.lower()

    def extract(self, completion: str, reference: str) -> str | None:
        """The answer read from ``completion`` by ``mode`` (``None`` if there is none)."""
        if self.mode == "exact":
            return completion.strip()
        if self.mode == "prefix":
            text = completion.strip()
            n = len(reference.strip())
            return text[:n] if text else None
        if self.mode == "contains":
            return reference.strip() if self._norm(reference) in self._norm(completion) else completion.strip()
        if self.mode == "boxed":
            return extract_boxed(completion)
        if self.mode == "answer_tag":
            matches = re.findall(r"<answer>\s?(.*?)\s?</answer>", completion, flags=re.DOTALL)
            return matches[-1].strip() if matches else None
        assert self.pattern is not None
        found = list(self.pattern.finditer(completion))
        if not found:
            return None
        m = found[-1]
        return m.group(1) if m.groups() else m.group(0)

    def score(self, prompt: str, completion: str, row: Mapping[str, Any]) -> VerifierResult:
        reference = self.reference(row)
        parsed = self.extract(completion, reference)
        if parsed is None or parsed == "":
            return VerifierResult(0.0, None, False, "no_answer")
        ok = self._norm(parsed) == self._norm(reference)
        return VerifierResult(1.0 if ok else 0.0, parsed, ok)


class ReasoningGymVerifier(Verifier):
    """Scores with the ``score_answer`` of the ``reasoning-gym`` task that generated the row.

    The row must carry ``question``, ``answer`` and ``metadata`` (as rows from
    ``load_rows("reasoning_gym:<task>")`` do); the task is ``metadata["source_dataset"]``.

    :param extract: how the answer is read from the response: ``"answer_tag"`` (the last
        ``<answer>...</answer>``, ``reasoning-gym``'s convention), ``"boxed"`` or ``"raw"`` (the whole
        stripped response)
    :param success_threshold: see :class:`Verifier`
    """

    name = "reasoning_gym"

    def __init__(self, extract: str = "answer_tag", success_threshold: float = 1.0) -> None:
        super().__init__("answer", success_threshold)
        if extract not in ("answer_tag", "boxed", "raw"):
            raise ValueError(f"Unknown extract mode {extract!r}; choose 'answer_tag', 'boxed' or 'raw'")
        self.extract = extract

    def score(self, prompt: str, completion: str, row: Mapping[str, Any]) -> VerifierResult:
        from reasoning_gym import get_score_answer_fn
        from reasoning_gym.utils import extract_answer

        if self.extract == "answer_tag":
            parsed = extract_answer(completion)
        elif self.extract == "boxed":
            parsed = extract_boxed(completion)
        else:
            parsed = completion.strip() or None
        if parsed is None:
            return VerifierResult(0.0, None, False, "no_answer")
        metadata = row.get("metadata") or {}
        task = metadata.get("source_dataset")
        if not task:
            raise KeyError("A reasoning-gym row needs metadata['source_dataset'] to find its scorer")
        entry = {"question": row.get("question"), "answer": row.get("answer"), "metadata": metadata}
        reward = float(get_score_answer_fn(task)(answer=parsed, entry=entry))
        return VerifierResult(reward, parsed, reward >= self.success_threshold)


_RESERVED_COLUMNS = frozenset({"prompt", "prompts", "completion", "completions", "completion_ids"})
"""Dataset columns not passed as keyword arguments (they would clash with the call's own, as in TRL)."""


class FunctionReward(Verifier):
    """Adapts a TRL-style reward function ``fn(prompts, completions, **columns) -> list[float | None]``.

    It is called with one sample at a time (so a failure stays local); prompts and completions are strings, and
    every dataset column except ``prompt``/``completion`` is passed as a one-element list.

    :param fn: the function
    :param name: a label for logs (default: the function's name)
    :param success_threshold: see :class:`Verifier`
    """

    def __init__(self, fn: RewardFn, name: str | None = None, success_threshold: float = 1.0) -> None:
        super().__init__("answer", success_threshold)
        self.fn = fn
        self.name: str = name or getattr(fn, "__name__", None) or type(fn).__name__

    def score(self, prompt: str, completion: str, row: Mapping[str, Any]) -> VerifierResult:
        columns = {k: [v] for k, v in row.items() if k not in _RESERVED_COLUMNS}
        out = self.fn(prompts=[prompt], completions=[completion], **columns)
        if out is None or len(out) != 1:
            raise ValueError(f"Reward function {self.name!r} returned {out!r} for one completion; expected a list of 1")
        value = out[0]
        if value is None:
            return VerifierResult(0.0, None, False, "none")
        try:
            reward = float(value)
        except (TypeError, ValueError):
            return VerifierResult(math.nan, None, False, "invalid")
        return VerifierResult(reward, None, reward >= self.success_threshold)


# ---------------------------------------------------------------------------------------------------------
# Running rewards safely
# ---------------------------------------------------------------------------------------------------------


@dataclass
class RewardStats:
    """Counts of what happened while scoring (cumulative until :meth:`reset`)."""

    n: int = 0
    no_answer: int = 0
    errors: int = 0
    timeouts: int = 0
    invalid: int = 0
    none: int = 0
    last_error: str | None = None

    @property
    def failures(self) -> int:
        """Verifier failures: errors, timeouts, invalid scores (a missing answer is a wrong answer, not a failure)."""
        return self.errors + self.timeouts + self.invalid

    def add(self, failure: str | None) -> None:
        self.n += 1
        if failure == "no_answer":
            self.no_answer += 1
        elif failure == "error":
            self.errors += 1
        elif failure == "timeout":
            self.timeouts += 1
        elif failure == "invalid":
            self.invalid += 1
        elif failure == "none":
            self.none += 1

    def reset(self) -> None:
        self.n = self.no_answer = self.errors = self.timeouts = self.invalid = self.none = 0
        self.last_error = None


@dataclass
class ScoredBatch:
    """Scores of a batch of responses.

    :param rewards: ``(B,)`` list of floats, the weighted sum over reward functions
    :param success: ``(B,)`` list of bools
    :param parsed: ``(B,)`` the answer parsed by the first verifier
    :param failures: ``(B,)`` the first failure reason of each sample, or ``None``
    """

    rewards: list[float]
    success: list[bool]
    parsed: list[str | None]
    failures: list[str | None]
    stats: RewardStats = field(default_factory=RewardStats)


def _call_with_timeout(fn: Callable[[], VerifierResult], timeout_s: float | None) -> VerifierResult:
    if not timeout_s:
        return fn()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=target, name="sppo-verifier", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise TimeoutExpired(f"verifier took more than {timeout_s} s")
    if "error" in box:
        raise box["error"]
    return box["result"]


class RewardRunner:
    """Scores batches with one or more rewards, weighted, and never raises.

    :param rewards: a verifier, a TRL-style function, or a list of them
    :param weights: one weight per reward (default 1 each); the sample's reward is the weighted sum of the
        rewards that gave a score (``None`` scores are left out, as in TRL)
    :param timeout_s: seconds per call; verifiers with ``handles_timeout`` enforce it themselves in the main
        thread, other calls run in a watchdog thread. ``None`` disables the watchdog.
    :param success_threshold: a combined reward ``>= success_threshold`` is a success (when a single verifier is
        used, its own ``correct`` flag is used instead)
    """

    def __init__(
        self,
        rewards: Verifier | RewardFn | Sequence[Verifier | RewardFn],
        weights: Sequence[float] | None = None,
        timeout_s: float | None = 10.0,
        success_threshold: float = 1.0,
    ) -> None:
        items = list(rewards) if isinstance(rewards, (list, tuple)) else [rewards]
        if not items:
            raise ValueError("RewardRunner needs at least one reward function")
        self.verifiers: list[Verifier] = [r if isinstance(r, Verifier) else FunctionReward(r) for r in items]  # type: ignore[arg-type]
        self.weights = [1.0] * len(items) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.verifiers):
            raise ValueError(f"{len(self.weights)} weights for {len(self.verifiers)} reward functions")
        self.timeout_s = timeout_s
        self.success_threshold = success_threshold
        self.stats = RewardStats()

    def score_one(self, verifier: Verifier, prompt: str, completion: str, row: Mapping[str, Any]) -> VerifierResult:
        """Score one sample with one verifier; failures become a 0 with a reason (never raises)."""
        direct = verifier.handles_timeout and _in_main_thread()
        try:
            if direct or not self.timeout_s:
                result = verifier.score(prompt, completion, row)
            else:
                result = _call_with_timeout(lambda: verifier.score(prompt, completion, row), self.timeout_s)
        except TimeoutExpired as exc:
            self.stats.last_error = f"{verifier.name}: {exc}"
            return VerifierResult(0.0, None, False, "timeout")
        except Exception as exc:
            self.stats.last_error = f"{verifier.name}: {type(exc).__name__}: {exc}"
            return VerifierResult(0.0, None, False, "error")
        try:
            reward = float(result.reward)
        except (TypeError, ValueError):
            reward = math.nan
        if math.isnan(reward):
            self.stats.last_error = f"{verifier.name}: invalid score {result.reward!r}"
            return VerifierResult(0.0, result.parsed, False, "invalid")
        result.reward = reward
        return result

    def score(
        self, prompts: Sequence[str], completions: Sequence[str], rows: Sequence[Mapping[str, Any]]
    ) -> ScoredBatch:
        """Score a batch.

        :param prompts: ``(B,)`` prompt texts
        :param completions: ``(B,)`` response texts
        :param rows: ``(B,)`` the dataset row of each sample
        :return: a :class:`ScoredBatch`; ``stats`` counts this batch only (the runner's ``stats`` accumulates)
        """
        if not (len(prompts) == len(completions) == len(rows)):
            raise ValueError(f"{len(prompts)} prompts, {len(completions)} completions and {len(rows)} rows")
        batch_stats = RewardStats()
        rewards, success, parsed, failures = [], [], [], []
        for prompt, completion, row in zip(prompts, completions, rows, strict=True):
            total, scored, first = 0.0, False, None
            for k, (verifier, weight) in enumerate(zip(self.verifiers, self.weights, strict=True)):
                res = self.score_one(verifier, prompt, completion, row)
                if k == 0:
                    first = res
                if res.failure != "none":
                    total += weight * res.reward
                    scored = True
            assert first is not None
            if len(self.verifiers) == 1:
                ok = first.correct and first.failure is None
            else:
                ok = scored and total >= self.success_threshold
            failure = first.failure if len(self.verifiers) == 1 or not scored else None
            for s in (batch_stats, self.stats):
                s.add(failure)
            rewards.append(total)
            success.append(bool(ok))
            parsed.append(first.parsed)
            failures.append(failure)
        batch_stats.last_error = self.stats.last_error
        return ScoredBatch(rewards, success, parsed, failures, batch_stats)


def make_reward(spec: Any, **options: Any) -> Verifier:
    """Build a reward from a name, an import path or a callable.

    :param spec: ``"boxed_math"``, ``"exact_match"``, ``"reasoning_gym"``, ``"package.module:function"`` (a
        TRL-style reward function), a :class:`Verifier`, or a callable
    :param options: constructor arguments of the named verifier
    :return: a :class:`Verifier`
    """
    if isinstance(spec, Verifier):
        return spec
    if callable(spec):
        return FunctionReward(spec, **options)
    named: dict[str, type[Verifier]] = {
        "boxed_math": BoxedMathVerifier,
        "math": BoxedMathVerifier,
        "exact_match": ExactMatchVerifier,
        "reasoning_gym": ReasoningGymVerifier,
    }
    if isinstance(spec, str) and spec in named:
        return named[spec](**options)
    if isinstance(spec, str) and ":" in spec:
        import importlib

        module_name, attr = spec.split(":", 1)
        fn = getattr(importlib.import_module(module_name), attr)
        return fn if isinstance(fn, Verifier) else FunctionReward(fn, name=attr, **options)
    raise ValueError(f"Unknown reward {spec!r}; use one of {', '.join(named)}, 'module:function' or a callable")
