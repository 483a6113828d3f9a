"""Learning-rate schedules of the policy and the critic, over the run's iterations (``transformers``' schedules).

A schedule advances once per training iteration (after the updates), so its length is the number of iterations
(``TrainerConfig.total_iterations``) and its warm-up a number of iterations; its state is saved in checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["SCHEDULES", "check_schedule", "make_schedule"]

SCHEDULES = ("constant", "linear", "cosine", "cosine_with_restarts", "polynomial", "inverse_sqrt")
"""The schedule names (``transformers.get_scheduler``); each takes a warm-up."""
_WITHOUT_LENGTH = ("constant", "inverse_sqrt")


def check_schedule(kind: str, warmup: int, total: int | None, what: str) -> None:
    """Raise ``ValueError`` naming the setting when a schedule cannot be built.

    :param kind: a name of :data:`SCHEDULES`
    :param warmup: warm-up iterations
    :param total: the run's iterations (``None``: unknown)
    :param what: the setting's name, for messages (``"lr_scheduler_type"``)
    """
    if kind not in SCHEDULES:
        raise ValueError(f"{what} must be one of {', '.join(SCHEDULES)}, got {kind!r}")
    if kind not in _WITHOUT_LENGTH and total is None:
        raise ValueError(
            f"{what}={kind!r} decays over the run: set trainer.total_iterations (the command line sets it from "
            "train.n_iterations)"
        )
    if total is not None and warmup > total:
        raise ValueError(f"the warm-up of {what} ({warmup} iterations) is longer than the run ({total})")


def make_schedule(
    optimizer: torch.optim.Optimizer, kind: str, warmup: int, total: int | None
) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule of ``optimizer`` (its current learning rate is the peak).

    :param optimizer: the optimizer
    :param kind: a name of :data:`SCHEDULES` (``"constant"`` with a warm-up is ``constant_with_warmup``)
    :param warmup: warm-up iterations
    :param total: the run's iterations
    """
    from transformers import get_scheduler

    name = "constant_with_warmup" if kind == "constant" and warmup > 0 else kind
    kwargs: dict[str, Any] = {"num_warmup_steps": warmup}
    if kind not in _WITHOUT_LENGTH:
        kwargs["num_training_steps"] = total
    schedule: torch.optim.lr_scheduler.LRScheduler = get_scheduler(name, optimizer, **kwargs)
    return schedule
