"""The suite table, gymnasium registration (idempotent), overrides through gymnasium kwargs, the docs table."""

from __future__ import annotations

import importlib
import inspect
import warnings
from pathlib import Path

import gymnasium
import pytest
import sppo_rl.envs
from gymnasium.envs.registration import EnvSpec
from gymnasium.error import RegistrationError
from sppo_rl.envs import (
    SUITE,
    OutcomeWrapper,
    SparseOutcomeWrapper,
    UnknownTaskError,
    dense_ids,
    find_outcome_wrapper,
    get_task,
    is_dense,
    paper_ids,
    register_suite,
    sparse_ids,
    suite,
    suite_ids,
)
from sppo_rl.envs.suite import TASK_MODULES
from sppo_rl.envs.table import markdown_table, space_text, suite_table_markdown
from stable_baselines3.common.env_util import make_vec_env

DOCS = Path(__file__).resolve().parents[2] / "docs" / "envs.md"

EXPECTED_IDS = {
    "SparsePrecisionCartPole-v0": 200,
    "SparseMountainCar-v0": 1000,
    "SparseMountainCarContinuous-v0": 1000,
    "SparseHopper-v0": 1000,
    "SparseLunarLander-v0": 1000,
    "SparseLunarLanderContinuous-v0": 1000,
    "SparsePendulum-v0": 1000,
}


def test_suite_lists_the_paper_tasks_with_their_horizons_and_budgets() -> None:
    assert {task.id: task.horizon for task in SUITE.values()} == EXPECTED_IDS
    budgets = {task.name.split(" (")[0]: task.paper_episode_budget for task in SUITE.values()}
    assert budgets == {
        "Precision CartPole": 40_000,
        "MountainCar": 10_000,
        "Hopper": 20_000,
        "LunarLander": 30_000,
        "Pendulum": 20_000,
    }
    batches = {task.id: task.paper_batch_episodes for task in SUITE.values()}
    assert batches["SparsePrecisionCartPole-v0"] == 64 and batches["SparseHopper-v0"] == 8
    assert sparse_ids() == list(EXPECTED_IDS)
    assert dense_ids() == [env_id.replace("Sparse", "Dense", 1) for env_id in EXPECTED_IDS]
    assert suite_ids() == sparse_ids() + dense_ids()


def test_paper_flag_marks_the_papers_five_tasks() -> None:
    assert paper_ids() == [
        "SparsePrecisionCartPole-v0",
        "SparseMountainCar-v0",
        "SparseHopper-v0",
        "SparseLunarLander-v0",
        "SparsePendulum-v0",
    ]
    assert [task.id for task in SUITE.values() if not task.paper] == [
        "SparseMountainCarContinuous-v0",
        "SparseLunarLanderContinuous-v0",
    ]


def test_each_task_module_holds_its_rule_factory_and_specs() -> None:
    assert [task for module in TASK_MODULES for task in module.TASKS] == list(SUITE.values())
    for module in TASK_MODULES:
        for task in module.TASKS:
            assert task.factory.__module__ == module.__name__
            assert type(task.success_rule).__module__ == module.__name__
            assert task.entry_point.startswith(f"{module.__name__}:")


def test_two_tasks_with_one_id_are_refused() -> None:
    with pytest.raises(ValueError, match="'SparsePendulum-v0', which another task already has"):
        suite._collect([*TASK_MODULES, TASK_MODULES[-1]])


def test_every_suite_id_is_registered_with_the_factory_entry_point() -> None:
    for task in SUITE.values():
        for env_id, dense in ((task.id, False), (task.dense_id, True)):
            spec = gymnasium.spec(env_id)
            assert spec.entry_point == task.entry_point
            assert spec.kwargs == task.registration_kwargs(dense)
            assert spec.max_episode_steps is None  # the outcome wrapper owns the horizon


def test_registration_is_idempotent_and_silent() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert register_suite() == []
        importlib.reload(sppo_rl.envs)
        assert register_suite() == []
    assert [str(warning.message) for warning in caught] == []


def test_registration_refuses_an_id_taken_by_another_env(monkeypatch: pytest.MonkeyPatch) -> None:
    other = EnvSpec(id="SparsePendulum-v0", entry_point="gymnasium.envs.classic_control:PendulumEnv")
    monkeypatch.setitem(gymnasium.registry, "SparsePendulum-v0", other)
    with pytest.raises(RegistrationError, match="already registered for another environment"):
        register_suite()


@pytest.mark.parametrize("env_id", suite_ids())
def test_made_env_matches_its_suite_entry(env_id: str, needs_dynamics) -> None:
    needs_dynamics(env_id)
    task = get_task(env_id)
    factory_defaults = inspect.signature(task.factory).parameters
    assert factory_defaults["horizon"].default == task.horizon
    env = gymnasium.make(env_id)
    wrapper = find_outcome_wrapper(env)
    assert wrapper is not None
    assert wrapper.horizon == task.horizon
    assert wrapper.success_rule == task.success_rule
    assert isinstance(wrapper, SparseOutcomeWrapper) is (not is_dense(env_id))
    assert isinstance(wrapper, OutcomeWrapper)
    assert env.spec is not None and env.spec.id == env_id
    env.close()


def test_horizon_and_threshold_are_gymnasium_kwargs() -> None:
    env = gymnasium.make("SparsePendulum-v0", horizon=7, min_cos=0.9)
    wrapper = find_outcome_wrapper(env)
    assert wrapper is not None and wrapper.horizon == 7 and wrapper.success_rule.min_cos == 0.9
    env.reset(seed=0)
    steps = 0
    while True:
        steps += 1
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            break
    assert steps == 7 and (terminated, truncated) == (True, False)


def test_base_env_kwargs_pass_through() -> None:
    env = gymnasium.make("SparsePendulum-v0", g=9.81)
    assert env.unwrapped.g == 9.81


def test_bad_kwargs_give_clear_errors() -> None:
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        gymnasium.make("SparsePrecisionCartPole-v0", horizon=0)
    with pytest.raises(ValueError, match="max_angle_deg must be > 0"):
        gymnasium.make("SparsePrecisionCartPole-v0", max_angle_deg=0.0)
    with pytest.raises(TypeError, match="no_such_option"):
        gymnasium.make("SparsePendulum-v0", no_such_option=1)


def test_unknown_ids_give_clear_errors() -> None:
    with pytest.raises(
        UnknownTaskError, match="unknown suite id 'SparseNope-v0'; known ids: SparsePrecisionCartPole-v0"
    ):
        get_task("SparseNope-v0")
    with pytest.raises(KeyError):
        is_dense("CartPole-v1")
    assert str(UnknownTaskError("plain message")) == "plain message"


def test_ids_work_with_sb3_make_vec_env_and_module_prefixed_make() -> None:
    venv = make_vec_env("SparsePrecisionCartPole-v0", n_envs=2, seed=0)
    assert venv.num_envs == 2 and venv.get_attr("horizon") == [200, 200]
    venv.close()
    env = gymnasium.make("sppo_rl.envs:DensePendulum-v0")
    assert find_outcome_wrapper(env) is not None


def test_space_text_and_markdown_table() -> None:
    assert space_text(gymnasium.spaces.Discrete(3)) == "Discrete(3)"
    assert space_text(gymnasium.spaces.Discrete(3, start=1)) == "Discrete(3, start=1)"
    assert space_text(gymnasium.spaces.Box(-2.0, 2.0, (1,))) == "Box((1,), float32, [-2, 2])"
    table = markdown_table(("a", "b"), [("x|y", 1)])
    assert table == "| a | b |\n|---|---|\n| x\\|y | 1 |"
    with pytest.raises(ValueError, match="has 1 cells"):
        markdown_table(("a", "b"), [("x",)])


def test_docs_table_is_the_generated_one() -> None:
    pytest.importorskip("Box2D", reason="the docs table lists LunarLander's spaces")
    pytest.importorskip("mujoco", reason="the docs table lists Hopper's spaces")
    text = DOCS.read_text()
    assert suite_table_markdown() in text, "docs/envs.md is stale: paste sppo_rl.envs.table.suite_table_markdown()"
    for env_id in suite_ids():
        assert f"`{env_id}`" in text


def test_docs_example_of_a_new_task_runs() -> None:
    text = DOCS.read_text()
    section = text.split("## Adding a task of your own", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "SparseAcrobot-v0" not in gymnasium.registry
    namespace: dict[str, object] = {"__name__": "docs_example"}
    try:
        exec(compile(code, str(DOCS), "exec"), namespace)
        env = namespace["env"]
        assert isinstance(env, gymnasium.Env)
        assert find_outcome_wrapper(env).horizon == 300
        env.action_space.seed(0)
        while True:
            _, reward, terminated, truncated, info = env.step(env.action_space.sample())
            if terminated or truncated:
                break
        assert reward == float(info["is_success"])
    finally:
        gymnasium.registry.pop("SparseAcrobot-v0", None)
