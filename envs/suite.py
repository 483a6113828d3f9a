"""The RLVR control suite in one table, :data:`SUITE`, put together from the task modules.

Each task lives in its own module (:mod:`.cartpole`, :mod:`.mountain_car`, :mod:`.hopper`, :mod:`.lunar_lander`,
:mod:`.pendulum`): its success rule, its dense shaping, its constructor and ``TASKS``, its
:class:`~sppo_rl.envs.task.TaskSpec` entries. Registration (:mod:`sppo_rl.envs.registration`), the
documentation tables (:mod:`sppo_rl.envs.table`, ``docs/envs.md``), the benchmarks and the tests read the task
lists from here: :func:`sparse_ids`, :func:`dense_ids`, :func:`suite_ids` and :func:`paper_ids` (the paper's
five tasks, :attr:`TaskSpec.paper <sppo_rl.envs.task.TaskSpec.paper>`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType, ModuleType

from . import cartpole, hopper, lunar_lander, mountain_car, pendulum
from .task import TaskSpec, UnknownTaskError

#: The task modules, in the order of the documentation; each defines ``TASKS``.
TASK_MODULES: tuple[ModuleType, ...] = (cartpole, mountain_car, hopper, lunar_lander, pendulum)


def _collect(modules: Iterable[ModuleType]) -> dict[str, TaskSpec]:
    """The ``TASKS`` of the task modules, keyed by sparse id, in module order.

    :param modules: modules that each define ``TASKS``, a tuple of :class:`TaskSpec`.
    :return: sparse id -> spec.
    :raises ValueError: if two entries share an id (sparse or dense).
    """
    tasks: dict[str, TaskSpec] = {}
    seen: set[str] = set()
    for module in modules:
        for task in module.TASKS:
            for env_id in (task.id, task.dense_id):
                if env_id in seen:
                    raise ValueError(f"{module.__name__} declares {env_id!r}, which another task already has")
                seen.add(env_id)
            tasks[task.id] = task
    return tasks


#: The suite: sparse id -> :class:`~sppo_rl.envs.task.TaskSpec`, in the order of the documentation.
SUITE: Mapping[str, TaskSpec] = MappingProxyType(_collect(TASK_MODULES))


def sparse_ids() -> list[str]:
    """The ids of the sparse tasks, in suite order."""
    return [task.id for task in SUITE.values()]


def dense_ids() -> list[str]:
    """The ids of the dense counterparts, in suite order."""
    return [task.dense_id for task in SUITE.values()]


def suite_ids() -> list[str]:
    """Every registered id: the sparse tasks, then their dense counterparts."""
    return sparse_ids() + dense_ids()


def paper_ids() -> list[str]:
    """The sparse ids of the paper's five tasks (:attr:`TaskSpec.paper`), in suite order."""
    return [task.id for task in SUITE.values() if task.paper]


def get_task(env_id: str) -> TaskSpec:
    """The suite entry of a sparse or dense id.

    :param env_id: a sparse id (``"SparsePendulum-v0"``) or a dense one (``"DensePendulum-v0"``).
    :return: its :class:`~sppo_rl.envs.task.TaskSpec`.
    :raises UnknownTaskError: (a ``KeyError``) for an id that is not in the suite.
    """
    for task in SUITE.values():
        if env_id in (task.id, task.dense_id):
            return task
    raise UnknownTaskError(f"unknown suite id {env_id!r}; known ids: {', '.join(suite_ids())}")


def is_dense(env_id: str) -> bool:
    """Whether an id of the suite is a dense counterpart.

    :param env_id: a suite id.
    :return: ``True`` for a dense id, ``False`` for a sparse one.
    :raises UnknownTaskError: for an id that is not in the suite.
    """
    return get_task(env_id).dense_id == env_id
