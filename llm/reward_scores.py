"""What scoring a batch gives: each sample's outcome, reward, verdict and parsed answer, and the failure counts.

:class:`ScoredBatch` is the :class:`~sppo_rl.llm.rewards.RewardRunner`'s answer for one batch; the ranks' batches
concatenate (:meth:`ScoredBatch.concat`) and its :meth:`~ScoredBatch.metrics` are TRL's ``rewards/<name>/mean`` and
``/std`` plus ``rollout/reward_failures``. :class:`RewardStats` counts what went wrong, in samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import torch

__all__ = ["RewardStats", "ScoredBatch", "completion_id_lists"]


def completion_id_lists(response_ids: torch.Tensor, response_mask: torch.Tensor) -> list[list[int]]:
    """Each response's token ids without padding (TRL's ``completion_ids``).

    :param response_ids: ``(B, T)``
    :param response_mask: ``(B, T)``, 1 on the response's tokens
    """
    mask = response_mask.bool()
    return [ids[m].tolist() for ids, m in zip(response_ids, mask, strict=True)]


@dataclass
class RewardStats:
    """What happened while scoring, in samples (cumulative on a runner until :meth:`reset`).

    :param n: samples scored
    :param failed: samples for which at least one function failed (logged as ``rollout/reward_failures``)
    :param errors: (function, sample) pairs whose call raised
    :param timeouts: (function, sample) pairs whose call timed out
    :param invalid: (function, sample) pairs with a non-number, NaN, infinite or out-of-range value
    :param no_answer: samples in which the answer verifier found no answer (a wrong answer, not a failure)
    :param none: samples that no function scored (every value ``None``: the outcome is 0)
    :param last_error: the last failure, ``"<function>: <error>"``
    """

    n: int = 0
    failed: int = 0
    errors: int = 0
    timeouts: int = 0
    invalid: int = 0
    no_answer: int = 0
    none: int = 0
    last_error: str | None = None

    @property
    def failures(self) -> int:
        """Samples with a failure (``failed``)."""
        return self.failed

    def merge(self, other: RewardStats) -> None:
        """Add ``other``'s counts (its ``last_error`` wins when it has one)."""
        for f in fields(self):
            if f.name != "last_error":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        self.last_error = other.last_error or self.last_error

    def reset(self) -> None:
        """Zero the counts."""
        for f in fields(self):
            setattr(self, f.name, None if f.name == "last_error" else 0)


@dataclass
class ScoredBatch:
    """Scores of a batch of responses (``B`` samples).

    :param outcomes: ``(B,)`` the outcomes ``R`` (what the critic and the advantage estimator use)
    :param rewards: ``(B,)`` the weighted sums of the functions' values (TRL's reward)
    :param success: ``(B,)`` bools
    :param parsed: ``(B,)`` the answers parsed by the answer verifier (``None`` without one)
    :param failures: ``(B,)`` ``None`` or the sample's first problem: ``"error"``, ``"timeout"``, ``"invalid"``,
        ``"no_answer"``, ``"none"`` (no function scored it)
    :param per_function: name -> ``(B,)`` values (``None``: not applicable; a failed sample is 0)
    :param stats: the counts of this batch
    """

    outcomes: list[float]
    rewards: list[float]
    success: list[bool]
    parsed: list[str | None]
    failures: list[str | None]
    per_function: dict[str, list[float | None]] = field(default_factory=dict)
    stats: RewardStats = field(default_factory=RewardStats)

    @staticmethod
    def concat(parts: Sequence[ScoredBatch]) -> ScoredBatch:
        """One batch from several (the ranks' blocks, in order): lists concatenated, counts summed."""
        if len(parts) == 1:
            return parts[0]
        stats = RewardStats()
        for part in parts:
            stats.merge(part.stats)
        names = list(parts[0].per_function)
        return ScoredBatch(
            outcomes=[x for p in parts for x in p.outcomes],
            rewards=[x for p in parts for x in p.rewards],
            success=[x for p in parts for x in p.success],
            parsed=[x for p in parts for x in p.parsed],
            failures=[x for p in parts for x in p.failures],
            per_function={k: [x for p in parts for x in p.per_function[k]] for k in names},
            stats=stats,
        )

    def metrics(self) -> dict[str, float]:
        """``rewards/<name>/mean`` and ``rewards/<name>/std`` (over the samples the function scored; NaN when it
        scored none) and ``rollout/reward_failures`` (samples with a failure)."""
        out: dict[str, float] = {}
        for name, values in self.per_function.items():
            xs = [v for v in values if v is not None]
            mean = sum(xs) / len(xs) if xs else math.nan
            var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0
            out[f"rewards/{name}/mean"] = mean
            out[f"rewards/{name}/std"] = math.sqrt(var) if xs else math.nan
        out["rollout/reward_failures"] = float(self.stats.failed)
        return out
