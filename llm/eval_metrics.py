"""Sample-based accuracy metrics of one prompt: avg@k, unbiased pass@k (Chen et al., 2021) and maj@k.

Each prompt is sampled ``n >= k`` times and every sample is scored by the verifier (success or not, and the answer
it parsed). From those:

- **avg@k** (the paper's Average@k): the mean success over the samples. With ``n = k`` this is exactly the mean
  over ``k`` samples; with ``n > k`` it is the unbiased estimate of it from more samples.
- **pass@k**: the chance that at least one of ``k`` samples succeeds, estimated without bias from ``n`` samples
  with ``c`` successes as ``1 - C(n - c, k) / C(n, k)`` (Chen et al., 2021, "Evaluating Large Language Models
  Trained on Code", eq. 1). With ``n = k`` it is 1 if any sample succeeds, else 0.
- **maj@k**: majority vote over the answers *parsed* from the first ``k`` samples (samples without an answer do
  not vote); equivalent answers (``"27"`` and ``"27.0"`` under math-verify) form one group; a tie goes to the group
  whose first sample came first. The vote is right when the verifier scored that first sample of the winning
  group as a success, so the check against the reference is the verifier's own.

Everything here is deterministic and pure (no model, no sampling).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "AnswersEqual",
    "avg_at_k",
    "majority_vote",
    "math_answers_equal",
    "pass_at_k",
    "prompt_metrics",
    "strings_equal",
]

AnswersEqual = Callable[[str, str], bool]
"""Whether two parsed answers are the same answer (the grouping of the majority vote)."""


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` succeeded: ``1 - C(n - c, k) / C(n, k)``.

    :param n: samples of the prompt
    :param c: successful samples (``0 <= c <= n``)
    :param k: the k of pass@k (``1 <= k <= n``)
    :return: the estimate, in ``[0, 1]``
    :raises ValueError: inconsistent counts
    """
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n successes, got c={c}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def avg_at_k(successes: Sequence[bool]) -> float:
    """The mean success of one prompt's samples (avg@k with ``k = len(successes)``, or its estimate from more).

    :param successes: one flag per sample
    :raises ValueError: no samples
    """
    if not successes:
        raise ValueError("avg@k needs at least one sample")
    return sum(bool(s) for s in successes) / len(successes)


def strings_equal(a: str, b: str) -> bool:
    """Exact equality of the stripped strings (the grouping for verifiers that are not math-verify)."""
    return a.strip() == b.strip()


def majority_vote(answers: Sequence[str | None], equal: AnswersEqual = strings_equal) -> int | None:
    """The sample that stands for the most common answer.

    Samples are grouped in order: each answer joins the first earlier group whose first answer it equals under
    ``equal`` (identical strings are grouped without calling ``equal``). The largest group wins; among groups of
    the same size, the one that started first.

    :param answers: the parsed answer of each sample, ``None`` when the sample has none (it does not vote)
    :param equal: whether two answers are the same
    :return: the index of the winning group's first sample, or ``None`` when no sample has an answer
    """
    heads: list[int] = []  # index of the first sample of each group
    sizes: list[int] = []
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        for g, head in enumerate(heads):
            other = answers[head]
            assert other is not None
            if answer == other or equal(answer, other):
                sizes[g] += 1
                break
        else:
            heads.append(i)
            sizes.append(1)
    if not heads:
        return None
    best = max(range(len(heads)), key=lambda g: (sizes[g], -heads[g]))
    return heads[best]


def prompt_metrics(
    successes: Sequence[bool], answers: Sequence[str | None], k: int, equal: AnswersEqual = strings_equal
) -> dict[str, float]:
    """avg@k, pass@k and maj@k of one prompt from its ``n >= k`` scored samples.

    :param successes: ``(n,)`` the verifier's verdict on each sample
    :param answers: ``(n,)`` the answer the verifier parsed from each sample (``None``: none)
    :param k: the k of the metrics
    :param equal: answer equality of the vote (see :func:`majority_vote`)
    :return: ``{"avg": ..., "pass": ..., "maj": ...}``; maj@k votes over the first ``k`` samples
    """
    n = len(successes)
    if len(answers) != n:
        raise ValueError(f"{n} verdicts but {len(answers)} parsed answers")
    winner = majority_vote(answers[:k], equal)
    return {
        "avg": avg_at_k(successes),
        "pass": pass_at_k(n, sum(bool(s) for s in successes), k),
        "maj": float(winner is not None and bool(successes[winner])),
    }


class _MathAnswers:
    """math-verify equality of two parsed answers, each parsed once (the grouping for boxed-answer verifiers).

    :param timeout_s: math-verify's time limit per parse and comparison (signal based: main thread only)
    """

    def __init__(self, timeout_s: float | None = 5.0) -> None:
        self.timeout_s = timeout_s
        self._parsed: dict[str, Any] = {}

    def _timeout(self) -> int | None:
        if not self.timeout_s or threading.current_thread() is not threading.main_thread():
            return None
        return max(1, math.ceil(self.timeout_s))

    def _parse(self, text: str) -> Any:
        if text not in self._parsed:
            from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

            wrapped = text if "$" in text or "\\boxed" in text else f"${text}$"
            try:
                self._parsed[text] = parse(
                    wrapped,
                    extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                    parsing_timeout=self._timeout(),
                )
            except Exception:
                self._parsed[text] = []
        return self._parsed[text]

    def __call__(self, a: str, b: str) -> bool:
        from math_verify import verify

        left, right = self._parse(a), self._parse(b)
        if not left or not right:
            return strings_equal(a, b)
        try:
            return bool(verify(left, right, timeout_seconds=self._timeout()))
        except Exception:
            return False


def math_answers_equal(timeout_s: float | None = 5.0) -> AnswersEqual:
    """An equality of parsed answers by math-verify (``"27"`` equals ``"27.0"``, ``"\\frac{1}{2}"`` equals
    ``"0.5"``), caching each answer's parse; answers it cannot parse are compared as strings.

    :param timeout_s: time limit per parse and comparison
    """
    return _MathAnswers(timeout_s)
