"""The RLVR control suite in one table: :data:`SUITE`.

Registration (:mod:`sppo_rl.envs.registration`) and the documentation tables (:mod:`sppo_rl.envs.table`,
``docs/envs.md``) are generated from it. Each entry is a sparse task and names its dense counterpart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import gymnasium

from .dense import CartPolePrecisionShaping, MountainCarEnergyShaping, PendulumUprightShaping
from .outcome import SuccessRule
from .rules import CartPoleUpright, HopperForward, LunarLanderLanded, MountainCarAtFlag, PendulumUpright
from .tasks import make_hopper, make_lunar_lander, make_mountain_car, make_pendulum, make_precision_cartpole


class UnknownTaskError(KeyError):
    """An id that is not in the suite."""

    def __str__(self) -> str:
        """The message, without the quotes ``KeyError`` puts around it."""
        return str(self.args[0]) if self.args else ""


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task of the suite: a sparse id, its dense counterpart, and what they are.

    :param id: the gymnasium id of the sparse task.
    :param dense_id: the gymnasium id of the dense counterpart (same dynamics, horizon and success rule).
    :param name: the task's name in the paper.
    :param base_id: the gymnasium id whose dynamics the task uses.
    :param factory: the constructor (a function of :mod:`sppo_rl.envs.tasks`); its defaults are the suite's.
    :param variant_kwargs: fixed keyword arguments of ``factory`` for this id (e.g. ``continuous=True``).
    :param horizon: the horizon ``H`` (the default of ``factory``).
    :param success_rule: the default success rule (its :attr:`description` is the rule's text).
    :param shaping: the dense counterpart's reward, in words.
    :param paper_episode_budget: episodes of RL fine-tuning shown in the paper's plots.
    :param paper_batch_episodes: whole trajectories per update in the paper.
    :param requires: the Python module the dynamics need (``"Box2D"``, ``"mujoco"``), or ``None``.
    """

    id: str
    dense_id: str
    name: str
    base_id: str
    factory: Callable[..., gymnasium.Env[Any, Any]]
    variant_kwargs: Mapping[str, Any]
    horizon: int
    success_rule: SuccessRule
    shaping: str
    paper_episode_budget: int
    paper_batch_episodes: int
    requires: str | None = None

    @property
    def entry_point(self) -> str:
        """The gymnasium entry point string of :attr:`factory`."""
        return f"{self.factory.__module__}:{self.factory.__name__}"

    @property
    def success(self) -> str:
        """The success rule in words."""
        description = getattr(self.success_rule, "description", None)
        return str(description) if description is not None else repr(self.success_rule)

    def registration_kwargs(self, dense: bool) -> dict[str, Any]:
        """The keyword arguments registered with gymnasium for the sparse or the dense id.

        :param dense: ``True`` for :attr:`dense_id`, ``False`` for :attr:`id`.
        :return: the keyword arguments of :attr:`factory`.
        """
        return {**self.variant_kwargs, "dense": dense}


def _spec(**fields: Any) -> TaskSpec:
    """Build a :class:`TaskSpec` with a read-only ``variant_kwargs``.

    :param fields: the fields of :class:`TaskSpec`.
    :return: the spec.
    """
    fields["variant_kwargs"] = MappingProxyType(dict(fields.get("variant_kwargs", {})))
    return TaskSpec(**fields)


_HOPPER_REWARD = "Hopper-v5's own reward: forward velocity + 1 healthy bonus per step - 0.001 * sum(a ** 2)"
_LANDER_REWARD = (
    "LunarLander-v3's own reward: shaping on distance to the pad, speed, tilt and leg contact, engine costs, "
    "-100 for a crash, +100 at rest"
)

_TASKS: tuple[TaskSpec, ...] = (
    _spec(
        id="SparsePrecisionCartPole-v0",
        dense_id="DensePrecisionCartPole-v0",
        name="Precision CartPole",
        base_id="CartPole-v1",
        factory=make_precision_cartpole,
        horizon=200,
        success_rule=CartPoleUpright(),
        shaping=CartPolePrecisionShaping().description,
        paper_episode_budget=40_000,
        paper_batch_episodes=64,
    ),
    _spec(
        id="SparseMountainCar-v0",
        dense_id="DenseMountainCar-v0",
        name="MountainCar",
        base_id="MountainCar-v0",
        factory=make_mountain_car,
        variant_kwargs={"continuous": False},
        horizon=1000,
        success_rule=MountainCarAtFlag(),
        shaping=MountainCarEnergyShaping().description,
        paper_episode_budget=10_000,
        paper_batch_episodes=8,
    ),
    _spec(
        id="SparseMountainCarContinuous-v0",
        dense_id="DenseMountainCarContinuous-v0",
        name="MountainCar (continuous actions)",
        base_id="MountainCarContinuous-v0",
        factory=make_mountain_car,
        variant_kwargs={"continuous": True},
        horizon=1000,
        success_rule=MountainCarAtFlag(),
        shaping=MountainCarEnergyShaping().description,
        paper_episode_budget=10_000,
        paper_batch_episodes=8,
    ),
    _spec(
        id="SparseHopper-v0",
        dense_id="DenseHopper-v0",
        name="Hopper (MuJoCo)",
        base_id="Hopper-v5",
        factory=make_hopper,
        horizon=1000,
        success_rule=HopperForward(),
        shaping=_HOPPER_REWARD,
        paper_episode_budget=20_000,
        paper_batch_episodes=8,
        requires="mujoco",
    ),
    _spec(
        id="SparseLunarLander-v0",
        dense_id="DenseLunarLander-v0",
        name="LunarLander",
        base_id="LunarLander-v3",
        factory=make_lunar_lander,
        variant_kwargs={"continuous": False},
        horizon=1000,
        success_rule=LunarLanderLanded(),
        shaping=_LANDER_REWARD,
        paper_episode_budget=30_000,
        paper_batch_episodes=16,
        requires="Box2D",
    ),
    _spec(
        id="SparseLunarLanderContinuous-v0",
        dense_id="DenseLunarLanderContinuous-v0",
        name="LunarLander (continuous actions)",
        base_id="LunarLanderContinuous-v3",
        factory=make_lunar_lander,
        variant_kwargs={"continuous": True},
        horizon=1000,
        success_rule=LunarLanderLanded(),
        shaping=_LANDER_REWARD,
        paper_episode_budget=30_000,
        paper_batch_episodes=16,
        requires="Box2D",
    ),
    _spec(
        id="SparsePendulum-v0",
        dense_id="DensePendulum-v0",
        name="Pendulum",
        base_id="Pendulum-v1",
        factory=make_pendulum,
        horizon=1000,
        success_rule=PendulumUpright(),
        shaping=PendulumUprightShaping().description,
        paper_episode_budget=20_000,
        paper_batch_episodes=16,
    ),
)

#: The suite: sparse id -> :class:`TaskSpec`, in the order of the documentation.
SUITE: Mapping[str, TaskSpec] = MappingProxyType({task.id: task for task in _TASKS})


def sparse_ids() -> list[str]:
    """The ids of the sparse tasks, in suite order."""
    return [task.id for task in SUITE.values()]


def dense_ids() -> list[str]:
    """The ids of the dense counterparts, in suite order."""
    return [task.dense_id for task in SUITE.values()]


def suite_ids() -> list[str]:
    """Every registered id: the sparse tasks, then their dense counterparts."""
    return sparse_ids() + dense_ids()


def get_task(env_id: str) -> TaskSpec:
    """The suite entry of a sparse or dense id.

    :param env_id: a sparse id (``"SparsePendulum-v0"``) or a dense one (``"DensePendulum-v0"``).
    :return: its :class:`TaskSpec`.
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
