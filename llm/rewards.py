"""Rewards with TRL's calling convention: one or several functions, weighted, checked, scored in worker processes.

A reward function has TRL's signature and is called once per batch (or once per slice of it, one slice per worker)::

    def accuracy(prompts, completions, completion_ids, **columns) -> list[float | None]: ...

``columns`` are the dataset's other columns, one list per column (``answer=[...]``, ...). For a conversational
dataset (its prompt column holds chat messages) ``prompts`` are those messages and each completion is
``[{"role": "assistant", "content": ...}]``; otherwise both are strings. ``None`` means "does not apply" and is left
out of the weighted sum, as in TRL. ``async def`` functions are awaited. A function may declare the bounds of what it
returns as an attribute, ``accuracy.reward_range = (0.0, 1.0)``; the built-in verifiers
(:mod:`sppo_rl.llm.verifiers`) do.

:class:`RewardRunner` scores a batch with every function and gives each sample:

- the **reward**: the weighted sum (``weights``, TRL's ``reward_weights``; 1 each by default);
- the **outcome** ``R``, what the critic learns and the advantage estimator uses: the weighted sum
  (``outcome=None``), one function's value (``outcome="accuracy"``), or a threshold ``t`` (``outcome=1.0``:
  1 when the weighted sum is ``>= t``, else 0). With a Bernoulli critic the outcome must lie in [0, 1]: the trainer
  checks this when it is built (:meth:`RewardRunner.check_critic`), and on every batch for a function that declares
  no range;
- the success flag, the parsed answer (from a verifier) and the metrics ``rewards/<name>/mean`` and ``/std``.

Failures are loud. A function that breaks the contract (returns a scalar or the wrong number of values) raises
:class:`~sppo_rl.llm.reward_functions.RewardOutputError` at once. A call that raises or times out fails its samples;
a non-number, NaN, infinite value, or one outside the declared ``reward_range`` fails that sample. When more than
``max_failure_rate`` of a batch's samples fail for one function, :class:`RewardFunctionError` is raised, chained to
the function's own error and traceback; below that, a :class:`RewardFailureWarning` gives the counts and **a failed
sample scores 0 for that function** (as ``math-verify`` scores an answer it could not check in time), counted in
``rollout/reward_failures``.

Where functions run: in ``workers`` worker processes (:class:`~sppo_rl.llm.reward_workers.WorkerPool`), started at
the first batch and kept until :meth:`RewardRunner.close`; the batch is cut into one slice per worker, and a call
that overruns ``timeout_s`` has its process killed. Cheap built-ins (``exact_match``) run in this process. A function
that cannot be sent to a worker (a lambda, a closure, a function of the main script) runs in this process with a
:class:`RewardFailureWarning`; its timeout then abandons the call in a watchdog thread (a thread cannot be killed).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sppo_rl.value_heads import OutcomeError

from .reward_functions import (
    BUILT_IN,
    CallResult,
    FunctionReward,
    RewardCall,
    RewardOutputError,
    RewardTimeoutError,
    call_in_process,
    make_reward,
    picklable,
)
from .reward_scores import RewardStats, ScoredBatch, completion_id_lists
from .reward_workers import WorkerPool, lost_result
from .verifiers import (
    BoxedMathVerifier,
    ExactMatchVerifier,
    ReasoningGymVerifier,
    Verifier,
    VerifierResult,
    extract_boxed,
)

__all__ = [
    "BUILT_IN",
    "BoxedMathVerifier",
    "ExactMatchVerifier",
    "FunctionReward",
    "ReasoningGymVerifier",
    "RewardFailureWarning",
    "RewardFunctionError",
    "RewardOutputError",
    "RewardRunner",
    "RewardStats",
    "RewardTimeoutError",
    "ScoredBatch",
    "Verifier",
    "VerifierResult",
    "completion_id_lists",
    "extract_boxed",
    "make_reward",
]

DEFAULT_WORKERS = 4
"""Worker processes of a runner by default."""


class RewardFunctionError(RuntimeError):
    """Too many samples of a batch failed for one reward function (chained to its own error)."""


class RewardFailureWarning(UserWarning):
    """Some samples failed for a reward function (fewer than ``max_failure_rate``), or a function runs in-process."""


# ---------------------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------------------


def _slices(n: int, k: int) -> list[tuple[int, int]]:
    """``[0, n)`` cut into ``k`` consecutive slices of near-equal size (none empty)."""
    k = max(1, min(k, n))
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(k)]


class RewardRunner:
    """Scores batches with one or more reward functions (see the module docstring).

    :param rewards: a verifier, a TRL-style function, a :class:`FunctionReward`, or a list of them
    :param weights: one weight per function (default 1 each; TRL's ``reward_weights``)
    :param outcome: what the critic learns and the estimator uses: ``None`` (the weighted sum), a function's name
        (its value), or a number ``t`` (1 when the weighted sum is ``>= t``, else 0)
    :param timeout_s: seconds per call of a function (on its slice of the batch); ``None``: no limit
    :param workers: worker processes that score in parallel (0: everything in this process)
    :param max_failure_rate: the share of a batch's samples that may fail for one function before
        :class:`RewardFunctionError` is raised (``0``: any failure raises, as in TRL)
    :param success_threshold: an outcome ``>= success_threshold`` is a success (a verifier's outcome uses its own
        verdict, a threshold outcome its 0/1)
    :raises ValueError: no function, wrong number of weights, an unknown outcome name, bad settings
    """

    def __init__(
        self,
        rewards: Any,
        weights: Sequence[float] | None = None,
        *,
        outcome: str | float | None = None,
        timeout_s: float | None = 30.0,
        workers: int = DEFAULT_WORKERS,
        max_failure_rate: float = 0.5,
        success_threshold: float = 1.0,
    ) -> None:
        items = list(rewards) if isinstance(rewards, (list, tuple)) else [rewards]
        if not items:
            raise ValueError("RewardRunner needs at least one reward function")
        self.functions: list[Verifier | FunctionReward] = [make_reward(r) for r in items]
        self.names = _unique_names([f.name for f in self.functions])
        self.weights = [1.0] * len(items) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.functions):
            raise ValueError(f"{len(self.weights)} weights for {len(self.functions)} reward functions")
        if not all(math.isfinite(w) for w in self.weights):
            raise ValueError(f"Reward weights must be finite numbers, got {self.weights}")
        if isinstance(outcome, bool) or not (outcome is None or isinstance(outcome, (str, int, float))):
            raise ValueError(f"outcome must be None, a reward's name or a threshold number, got {outcome!r}")
        if isinstance(outcome, str) and outcome not in self.names:
            raise ValueError(f"outcome {outcome!r} is not a reward's name; choose one of {self.names} or a threshold")
        if isinstance(outcome, (int, float)) and not isinstance(outcome, bool) and not math.isfinite(outcome):
            raise ValueError(f"A threshold outcome must be a finite number, got {outcome!r}")
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 or None, got {timeout_s}")
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if not 0.0 <= max_failure_rate <= 1.0:
            raise ValueError(f"max_failure_rate must lie in [0, 1], got {max_failure_rate}")
        self.outcome = float(outcome) if isinstance(outcome, (int, float)) else outcome
        self.timeout_s = timeout_s
        self.workers = workers
        self.max_failure_rate = max_failure_rate
        self.success_threshold = success_threshold
        self.stats = RewardStats()
        self._pool: WorkerPool | None = None
        self._remote: list[int] = []
        for j, fn in enumerate(self.functions):
            if workers == 0 or (isinstance(fn, Verifier) and fn.in_process):
                continue
            if picklable(fn):
                self._remote.append(j)
            else:
                why = "it cannot be sent to a worker process (a lambda, a closure or a function of the main script)"
                _warn_in_process(self.names[j], why, stacklevel=3)

    # ---- what the outcome is ---------------------------------------------------------------------------------

    @property
    def outcome_index(self) -> int | None:
        """The function whose value is the outcome (a named outcome, or the only function), else ``None``."""
        if isinstance(self.outcome, str):
            return self.names.index(self.outcome)
        if self.outcome is None and len(self.functions) == 1:
            return 0
        return None

    @property
    def answer_verifier(self) -> Verifier | None:
        """The verifier whose parsed answers and verdicts are reported: the outcome's, else the first one."""
        j = self.outcome_index
        if j is not None and isinstance(self.functions[j], Verifier):
            return self.functions[j]  # type: ignore[return-value]
        return next((f for f in self.functions if isinstance(f, Verifier)), None)

    def describe_outcome(self) -> str:
        """The outcome in words, for messages."""
        if isinstance(self.outcome, float):
            return f"the threshold outcome (1 when the weighted sum >= {self.outcome:g})"
        j = self.outcome_index
        if j is not None:
            return f"reward function {self.names[j]!r}"
        weights = ", ".join(f"{w:g}" for w in self.weights)
        return f"the weighted sum of {', '.join(map(repr, self.names))} (weights {weights})"

    def outcome_range(self) -> tuple[float, float] | None:
        """Bounds of the outcome, or ``None`` when a function involved declares no ``reward_range``."""
        if isinstance(self.outcome, float):
            return (0.0, 1.0)
        j = self.outcome_index
        if j is not None:
            bounds = self.functions[j].reward_range
            if bounds is None:
                return None
            w = self.weights[j] if self.outcome is None else 1.0
            return (min(w * bounds[0], w * bounds[1]), max(w * bounds[0], w * bounds[1]))
        lo = hi = 0.0
        for fn, w in zip(self.functions, self.weights, strict=True):
            if fn.reward_range is None:
                return None
            a, b = w * fn.reward_range[0], w * fn.reward_range[1]
            lo, hi = lo + min(a, b, 0.0), hi + max(a, b, 0.0)  # a None value adds 0
        return (lo, hi)

    def _choices(self) -> str:
        return (
            "Say what the critic learns with the reward's outcome (reward.outcome in YAML, RewardRunner(outcome=...) "
            f"in Python): a reward's name ({', '.join(map(repr, self.names))}: that function's value) or a "
            "threshold t such as 1.0 (1 when the weighted sum >= t, else 0); or use a critic with value_head: gaussian"
        )

    def check_critic(self, head: Any) -> None:
        """Check, when the trainer is built, that the critic's value head can learn the outcome (a Bernoulli head
        needs [0, 1]). An outcome of unknown range from one function is checked on every batch instead
        (:meth:`check_outcomes`).

        :param head: the critic's :class:`~sppo_rl.value_heads.ValueHead`
        :raises ~sppo_rl.value_heads.OutcomeError: naming the outcome, its range, and the choices
        """
        bounds = self.outcome_range()
        if bounds is None and self.outcome_index is not None:
            return
        probe = [-1.0, 2.0] if bounds is None else list(bounds)  # unknown range: does the head restrict any?
        try:
            head.check_outcomes(torch.tensor(probe, dtype=torch.float32))
        except OutcomeError as exc:
            name = getattr(head, "name", type(head).__name__)
            why = "it needs outcomes in [0, 1]" if name == "bernoulli" else str(exc)
            span = f"ranges over [{probe[0]:g}, {probe[1]:g}]" if bounds else "has no known range (no reward_range)"
            raise OutcomeError(
                f"The critic's {name} value head cannot learn {self.describe_outcome()}, which {span}: {why}. "
                f"{self._choices()}."
            ) from None

    def check_outcomes(self, outcomes: torch.Tensor, head: Any) -> None:
        """Check a batch's outcomes against the critic's value head (every batch), naming the outcome's function.

        :param outcomes: ``(B,)``
        :param head: the critic's value head
        :raises ~sppo_rl.value_heads.OutcomeError: an outcome the head cannot learn
        """
        try:
            head.check_outcomes(outcomes)
        except OutcomeError as exc:
            what = self.describe_outcome()
            raise OutcomeError(
                f"{what[0].upper()}{what[1:]} gave an outcome the critic cannot learn: {exc} {self._choices()}."
            ) from None

    # ---- scoring --------------------------------------------------------------------------------------------

    def score(
        self,
        prompts: Sequence[Any],
        completions: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
        completion_ids: Sequence[Sequence[int]] | None = None,
    ) -> ScoredBatch:
        """Score a batch.

        :param prompts: ``(B,)`` prompt texts, or chat messages (then the completions become conversational)
        :param completions: ``(B,)`` response texts
        :param rows: ``(B,)`` the dataset row of each sample
        :param completion_ids: ``(B,)`` the responses' token ids (default: empty lists)
        :return: a :class:`ScoredBatch`; ``stats`` counts this batch (the runner's ``stats`` accumulate)
        :raises RewardOutputError: a function returned a scalar or the wrong number of values
        :raises RewardFunctionError: more than ``max_failure_rate`` of the samples failed for one function
        """
        n = len(completions)
        if not (len(prompts) == n == len(rows)):
            raise ValueError(f"{len(prompts)} prompts, {n} completions and {len(rows)} rows")
        ids = [list(x) for x in completion_ids] if completion_ids is not None else [[] for _ in range(n)]
        convo = [
            c if not isinstance(p, list) else [{"role": "assistant", "content": c}]
            for p, c in zip(prompts, completions, strict=True)
        ]
        call = RewardCall(list(prompts), convo, ids, [dict(r) for r in rows])
        results = self._call_all(call) if n else [CallResult([], []) for _ in self.functions]
        for result in results:
            if result.fatal is not None:
                raise result.fatal.with_traceback(None) from None
        scored = self._combine(results, n)
        self._check_failures(results, n)
        self.stats.merge(scored.stats)
        return scored

    def _call_all(self, call: RewardCall) -> list[CallResult]:
        n = len(call)
        results: list[CallResult | None] = [None] * len(self.functions)
        if self._remote:
            if self._pool is None:
                self._pool = WorkerPool([(self.names[j], self.functions[j]) for j in self._remote], self.workers)
            pieces = _slices(n, self.workers)
            tasks = [(k, call.slice(a, b)) for k in range(len(self._remote)) for a, b in pieces]
            outs = self._pool.run(tasks, self.timeout_s)
            for k, j in enumerate(self._remote):
                if k in self._pool.unloadable:
                    continue
                parts = outs[k * len(pieces) : (k + 1) * len(pieces)]
                results[j] = CallResult.concat(
                    [
                        p if isinstance(p, CallResult) else lost_result(p, b - a)
                        for p, (a, b) in zip(parts, pieces, strict=True)
                    ]
                )
            self._drop_unloadable()
        for j, fn in enumerate(self.functions):
            if results[j] is None:
                results[j] = call_in_process(fn, call, self.names[j], self.timeout_s)
        return [r for r in results if r is not None]

    def _drop_unloadable(self) -> None:
        """Functions the workers could not load (e.g. their module is not importable there) run in-process."""
        assert self._pool is not None
        if not self._pool.unloadable:
            return
        for k, why in sorted(self._pool.unloadable.items()):
            _warn_in_process(self.names[self._remote[k]], f"a worker process could not load it ({why})", 5)
        keep = [j for k, j in enumerate(self._remote) if k not in self._pool.unloadable]
        self._pool.close()
        self._pool = None
        self._remote = keep

    def _combine(self, results: list[CallResult], n: int) -> ScoredBatch:
        stats = RewardStats(n=n)
        per_function: dict[str, list[float | None]] = {}
        for name, r in zip(self.names, results, strict=True):
            per_function[name] = [0.0 if f is not None else v for v, f in zip(r.values, r.failures, strict=True)]
            stats.errors += r.failures.count("error")
            stats.timeouts += r.failures.count("timeout")
            stats.invalid += r.failures.count("invalid")
            if r.error is not None:
                stats.last_error = f"{name}: {type(r.error).__name__}: {r.error}"
        answer = self.answer_verifier
        ans = results[self.functions.index(answer)] if answer is not None else CallResult([None] * n, [None] * n)
        parsed = ans.parsed or [None] * n
        no_answer = ans.no_answer or [False] * n
        j_out = self.outcome_index
        verdict = None  # the outcome verifier's own verdicts, when the outcome is a verifier's value
        if j_out is not None and isinstance(self.functions[j_out], Verifier):
            r = results[j_out]
            verdict = [bool(c) and f is None for c, f in zip(r.correct or [False] * n, r.failures, strict=True)]
        rewards, outcomes, success, failures = [], [], [], []
        for i in range(n):
            values = [per_function[name][i] for name in self.names]
            total = sum(w * v for w, v in zip(self.weights, values, strict=True) if v is not None)
            if isinstance(self.outcome, float):
                outcome = 1.0 if total >= self.outcome else 0.0
            elif isinstance(self.outcome, str):
                outcome = values[self.names.index(self.outcome)] or 0.0
            else:
                outcome = total
            failure = next((r.failures[i] for r in results if r.failures[i] is not None), None)
            if failure is not None:
                stats.failed += 1
            elif no_answer[i]:
                failure = "no_answer"
            elif all(v is None for v in values):
                failure = "none"
            if verdict is not None:
                ok = verdict[i]
            elif isinstance(self.outcome, float):
                ok = outcome == 1.0
            else:
                ok = outcome >= self.success_threshold
            stats.no_answer += no_answer[i]
            stats.none += failure == "none"
            rewards.append(total)
            outcomes.append(outcome)
            success.append(ok)
            failures.append(failure)
        return ScoredBatch(outcomes, rewards, success, parsed, failures, per_function, stats)

    def _check_failures(self, results: list[CallResult], n: int) -> None:
        for name, r in zip(self.names, results, strict=True):
            k = sum(f is not None for f in r.failures)
            if not k:
                continue
            assert r.error is not None
            first = f"{type(r.error).__name__}: {r.error}"
            kinds = ", ".join(f"{r.failures.count(x)} {how}" for x, how in _HOW.items() if x in r.failures)
            if k / n > self.max_failure_rate:
                raise RewardFunctionError(
                    f"reward function {name!r} failed on {k} of {n} samples ({kinds}), more than "
                    f"max_failure_rate={self.max_failure_rate:g}: {first}"
                ) from r.error
            warnings.warn(
                f"reward function {name!r} failed on {k} of {n} samples ({kinds}); they score 0 for it. First: "
                f"{first}. Training stops when more than {self.max_failure_rate:.0%} of a batch fails "
                "(max_failure_rate).",
                RewardFailureWarning,
                stacklevel=3,
            )

    # ---- life cycle -----------------------------------------------------------------------------------------

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live worker processes (none before the first batch or after :meth:`close`)."""
        return self._pool.pids if self._pool is not None else []

    def close(self) -> None:
        """Stop the worker processes (the next batch starts new ones). Also done at garbage collection and exit."""
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> RewardRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_HOW = {"error": "raised", "timeout": "timed out", "invalid": "invalid values"}


def _unique_names(names: list[str]) -> list[str]:
    """``names`` with repeats numbered (``exact_match``, ``exact_match_2``)."""
    out: list[str] = []
    for name in names:
        candidate, k = name, 2
        while candidate in out:
            candidate, k = f"{name}_{k}", k + 1
        out.append(candidate)
    return out


def _warn_in_process(name: str, why: str, stacklevel: int) -> None:
    warnings.warn(
        f"reward function {name!r} runs in this process, not in a worker: {why}. A stuck call is then abandoned in a "
        "thread at timeout_s, not stopped; define the function at the top level of an importable module to score it "
        "in worker processes.",
        RewardFailureWarning,
        stacklevel=stacklevel,
    )
