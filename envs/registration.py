"""Register the suite's sparse and dense ids with gymnasium (done on ``import sppo_rl.envs``)."""

from __future__ import annotations

import gymnasium
from gymnasium.error import RegistrationError

from .suite import SUITE


def register_suite() -> list[str]:
    """Register every id of :data:`~sppo_rl.envs.suite.SUITE` with gymnasium; idempotent.

    An id that is already registered with the same entry point and keyword arguments is left alone, so
    calling this twice (or reloading the package) neither warns nor fails.

    :return: the ids registered by this call (empty when all were registered before).
    :raises RegistrationError: if an id of the suite is registered already for a different environment.
    """
    registered: list[str] = []
    for task in SUITE.values():
        for env_id, dense in ((task.id, False), (task.dense_id, True)):
            kwargs = task.registration_kwargs(dense)
            existing = gymnasium.registry.get(env_id)
            if existing is not None:
                if existing.entry_point == task.entry_point and dict(existing.kwargs) == kwargs:
                    continue
                raise RegistrationError(
                    f"{env_id!r} is already registered for another environment (entry point "
                    f"{existing.entry_point!r}, kwargs {existing.kwargs!r}); sppo_rl.envs needs that id for "
                    f"{task.entry_point!r} with kwargs {kwargs!r}"
                )
            gymnasium.register(id=env_id, entry_point=task.entry_point, kwargs=kwargs)
            registered.append(env_id)
    return registered
