"""Sparse, verifiable-outcome control tasks (the RLVR control suite), imported as ``sppo_rl.envs``.

Importing this package registers the suite's ids with gymnasium, so ``gymnasium.make("SparsePendulum-v0")``,
SB3's ``make_vec_env("SparsePendulum-v0")`` and rl-zoo's ``--gym-packages sppo_rl.envs`` work. The ids, their
horizons and success rules are listed in :data:`SUITE`; ``docs/envs.md`` shows them as a table.

Modules: one per task (:mod:`.cartpole`, :mod:`.mountain_car`, :mod:`.hopper`, :mod:`.lunar_lander`,
:mod:`.pendulum`: success rule, dense shaping, constructor and suite entries), :mod:`.suite` (:data:`SUITE`, put
together from them), :mod:`.task` (:class:`TaskSpec` and the building blocks of a constructor),
:mod:`.outcome` (the outcome wrappers), :mod:`.shaping` (shaped rewards), :mod:`.registration`,
:mod:`.table` (the documentation tables) and :mod:`.toy` (tiny environments for tests and examples, not in the
suite).
"""

from .cartpole import CartPolePrecisionShaping, CartPoleUpright, make_precision_cartpole
from .hopper import HopperForward, make_hopper
from .lunar_lander import LunarLanderLanded, make_lunar_lander
from .mountain_car import MountainCarAtFlag, MountainCarEnergyShaping, make_mountain_car
from .outcome import (
    DENSE_REWARD_KEY,
    END_REASON_KEY,
    IS_SUCCESS_KEY,
    OUTCOME_KEY,
    FinalStep,
    OutcomeWrapper,
    SparseOutcomeWrapper,
    SuccessRule,
    find_outcome_wrapper,
)
from .pendulum import PendulumUpright, PendulumUprightShaping, make_pendulum
from .registration import register_suite
from .shaping import RewardShaping, ShapedReward, Transition
from .suite import SUITE, dense_ids, get_task, is_dense, paper_ids, sparse_ids, suite_ids
from .task import TaskSpec, UnknownTaskError, make_base_env, wrap_outcome

register_suite()

__all__ = [
    "DENSE_REWARD_KEY",
    "END_REASON_KEY",
    "IS_SUCCESS_KEY",
    "OUTCOME_KEY",
    "SUITE",
    "CartPolePrecisionShaping",
    "CartPoleUpright",
    "FinalStep",
    "HopperForward",
    "LunarLanderLanded",
    "MountainCarAtFlag",
    "MountainCarEnergyShaping",
    "OutcomeWrapper",
    "PendulumUpright",
    "PendulumUprightShaping",
    "RewardShaping",
    "ShapedReward",
    "SparseOutcomeWrapper",
    "SuccessRule",
    "TaskSpec",
    "Transition",
    "UnknownTaskError",
    "dense_ids",
    "find_outcome_wrapper",
    "get_task",
    "is_dense",
    "make_base_env",
    "make_hopper",
    "make_lunar_lander",
    "make_mountain_car",
    "make_pendulum",
    "make_precision_cartpole",
    "paper_ids",
    "register_suite",
    "sparse_ids",
    "suite_ids",
    "wrap_outcome",
]
