"""The built-in verifiers: boxed-answer math (``math-verify``), exact match and ``reasoning-gym`` scorers.

A :class:`Verifier` scores one ``(prompt, completion, row)`` at a time and returns a :class:`VerifierResult`: the
reward, the parsed answer (evaluation's majority vote reads it) and whether the answer is right (the
``rollout/success_rate``). Each is also callable with TRL's batch signature, so it can be handed to TRL's
``GRPOTrainer`` as it is::

    verifier(prompts=[...], completions=[...], answer=[...]) -> list[float]

Completions may be strings or conversational (``[{"role": "assistant", "content": ...}]``): a verifier reads the
last message's content. Every built-in verifier declares ``reward_range = (0.0, 1.0)``, which lets the trainer
check when it is built that a Bernoulli critic can learn its score.

Where they run (see :class:`~sppo_rl.llm.rewards.RewardRunner`): ``exact_match`` is cheap and bounded
(``in_process = True``) and is scored in the calling process; the others are scored in worker processes, where
``math-verify``'s own ``signal.alarm`` timeouts work (a worker's main thread runs them).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "BoxedMathVerifier",
    "ExactMatchVerifier",
    "ReasoningGymVerifier",
    "Verifier",
    "VerifierResult",
    "completion_text",
    "extract_boxed",
    "prompt_text",
]


@dataclass
class VerifierResult:
    """The score of one response.

    :param reward: the reward (0 when there is no answer)
    :param parsed: the answer extracted from the response (``None`` if none was found)
    :param correct: whether the answer is right
    :param failure: ``None``; ``"no_answer"`` (nothing to parse: a wrong answer, not a failure) or
        ``"timeout"`` (``math-verify`` ran out of time: a failure of the verifier, counted)
    """

    reward: float
    parsed: str | None = None
    correct: bool = False
    failure: str | None = None


def completion_text(completion: Any) -> str:
    """The text of a completion: the string itself, or the last message's content of a conversational one.

    :param completion: ``"..."`` or ``[{"role": "assistant", "content": "..."}]``
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        return str(completion[-1].get("content", ""))
    raise TypeError(f"A completion is a string or a list of chat messages, got {type(completion).__name__}")


def prompt_text(prompt: Any) -> str:
    """The text of a prompt: the string itself, or the last message's content of a conversational one."""
    return completion_text(prompt)


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

    Subclasses implement :meth:`score`. Class attributes tell the reward runner how to run it:

    - ``reward_range``: the ``(low, high)`` bounds of every reward it gives, or ``None`` when unknown (then a
      Bernoulli critic's outcome is checked on every batch instead of once when the trainer is built);
    - ``in_process``: cheap and bounded, scored in the calling process rather than in a worker process;
    - ``handles_timeout``: enforces its own time limit in a main thread (``math-verify``'s signal timeouts), so
      in-process scoring (``workers=0``) calls it directly there rather than in a watchdog thread.

    :param answer_column: the dataset column with the reference answer
    :param success_threshold: a reward ``>= success_threshold`` counts as a success
    """

    name = "verifier"
    reward_range: ClassVar[tuple[float, float] | None] = None
    in_process: ClassVar[bool] = False
    handles_timeout: ClassVar[bool] = False

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

    def preload(self) -> None:
        """Import what :meth:`score` needs. A worker pool's zygote calls this once, before it forks the workers,
        so that no worker pays the import inside a call's time limit. Default: nothing."""

    def reference(self, row: Mapping[str, Any]) -> str:
        """The reference answer of ``row``, as a string."""
        if self.answer_column not in row:
            raise KeyError(f"The dataset row has no answer column {self.answer_column!r} (columns: {sorted(row)})")
        return str(row[self.answer_column])

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        """TRL-compatible batch call: one reward per completion (string or conversational)."""
        out: list[float | None] = []
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            row = {k: v[i] for k, v in columns.items() if isinstance(v, Sequence) and not isinstance(v, str)}
            out.append(self.score(prompt_text(p), completion_text(c), row).reward)
        return out


class BoxedMathVerifier(Verifier):
    """1 for a correct ``\\boxed{}`` final answer, 0 otherwise (the paper's reward), with ``math-verify``.

    The reference answer (``row[answer_column]``) is parsed as LaTeX (wrapped in ``$...$`` unless it already has
    math delimiters or a box); the response's last ``\\boxed{}`` is parsed with ``math-verify``'s LaTeX extractor
    and compared with :func:`math_verify.verify` (numeric, symbolic and set equivalence).

    :param answer_column: column with the reference answer
    :param require_boxed: a response without ``\\boxed{}`` scores 0 (``failure="no_answer"``) even if
        ``math-verify`` could find an answer elsewhere
    :param timeout_s: seconds allowed for parsing and for the comparison (``math-verify``'s signal timeouts, which
        work in a main thread: a worker process's, or the main thread with ``workers=0``)
    :param success_threshold: see :class:`Verifier`
    """

    name = "boxed_math"
    reward_range = (0.0, 1.0)
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

    def preload(self) -> None:
        import math_verify  # noqa: F401

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

    Cheap and bounded: scored in the calling process (``in_process = True``), never in a worker.

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
    reward_range = (0.0, 1.0)
    in_process = True
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
    reward_range = (0.0, 1.0)

    def __init__(self, extract: str = "answer_tag", success_threshold: float = 1.0) -> None:
        super().__init__("answer", success_threshold)
        if extract not in ("answer_tag", "boxed", "raw"):
            raise ValueError(f"Unknown extract mode {extract!r}; choose 'answer_tag', 'boxed' or 'raw'")
        self.extract = extract

    def preload(self) -> None:
        import reasoning_gym.utils  # noqa: F401

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
