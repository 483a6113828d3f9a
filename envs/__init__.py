"""Sparse, verifiable-outcome control tasks (the RLVR control suite), imported as ``sppo_rl.envs``.

Importing this package registers the suite's ids with gymnasium, so ``gymnasium.make("SparsePendulum-v0")``,
SB3's ``make_vec_env("SparsePendulum-v0")`` and rl-zoo's ``--gym-packages sppo_rl.envs`` work. The ids, their
horizons and success rules are listed in :data:`SUITE`; ``docs/envs.md`` shows them as a table.
"""

from .dense import (
    CartPolePrecisionShaping,
    MountainCarEnergyShaping,
    PendulumUprightShaping,
    RewardShaping,
    ShapedReward,
    Transition,
)
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
from .registration import register_suite
from .rules import CartPoleUpright, HopperForward, LunarLanderLanded, MountainCarAtFlag, PendulumUpright
from .suite import SUITE, TaskSpec, UnknownTaskError, dense_ids, get_task, is_dense, sparse_ids, suite_ids
from .tasks import (
    make_base_env,
    make_hopper,
    make_lunar_lander,
    make_mountain_car,
    make_pendulum,
    make_precision_cartpole,
    wrap_outcome,
)

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
    "register_suite",
    "sparse_ids",
    "suite_ids",
    "wrap_outcome",
]
