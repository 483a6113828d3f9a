"""Search spaces: what they sample, what they leave alone, and that every sample builds a model."""

from __future__ import annotations

import optuna
import pytest
from sppo_rl.zoo.algos import get_algo
from sppo_rl.zoo.environments import make_vec, resolve_env
from sppo_rl.zoo.errors import ZooError
from sppo_rl.zoo.hyperparams import build_hyperparams
from sppo_rl.zoo.search_spaces import NET_ARCHS, SearchContext, load_search_space
from sppo_rl.zoo.train import create_model


def sample(algo: str, context: SearchContext, n: int = 20, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    space = get_algo(algo).search_space
    samples = []
    for _ in range(n):
        trial = study.ask()
        samples.append(space(trial, context))
        study.tell(trial, 0.0)
    return samples


def test_sppo_space_has_its_own_knobs_and_builds_models() -> None:
    context = SearchContext("LineTarget-v0", n_envs=2, reports_success=True, entry={"n_episodes": 8})
    samples = sample("sppo", context)
    keys = set().union(*samples)
    assert {"learning_rate", "critic_learning_rate", "batch_episodes", "loss_agg_mode", "value_head", "dual_clip",
            "clip_range_high", "policy_kwargs"} <= keys  # fmt: skip
    assert "n_episodes" not in keys  # the paper's batch of trajectories comes from the entry
    assert all(s["batch_episodes"] <= 8 for s in samples)
    assert {s["value_head"] for s in samples} == {"bernoulli", "gaussian"}
    assert {s["dual_clip"] for s in samples} == {3.0, None}
    assert all(s["clip_range_high"] is None or s["clip_range_high"] > s["clip_range"] for s in samples)
    assert all(1e-5 <= s["learning_rate"] <= 1e-2 for s in samples)
    env = make_vec(resolve_env("LineTarget-v0"), 2, 0)
    spec = get_algo("sppo")
    for raw in samples[:6]:
        create_model(spec, build_hyperparams({"n_episodes": 8, **raw}, spec, "sample"), env, seed=0)


def test_bernoulli_head_only_for_success_outcomes() -> None:
    no_success = SearchContext("CartPole-v1", n_envs=2, reports_success=False)
    assert all("value_head" not in s for s in sample("sppo", no_success))
    forced_return = SearchContext("LineTarget-v0", 2, True, entry={"outcome": "return"})
    assert all("value_head" not in s for s in sample("sppo", forced_return))


def test_fixed_parameters_are_not_searched() -> None:
    context = SearchContext("LineTarget-v0", 2, True, entry={"learning_rate": 1e-3}, fixed=frozenset({"learning_rate",
                            "policy_kwargs", "n_episodes"}))  # fmt: skip
    for s in sample("sppo", context, n=5):
        assert "learning_rate" not in s and "policy_kwargs" not in s and "n_episodes" not in s


def test_sppo_searches_n_episodes_when_the_entry_has_no_rollout_size() -> None:
    samples = sample("sppo", SearchContext("LineTarget-v0", 2, True, entry={}))
    assert {s["n_episodes"] for s in samples} <= {8, 16, 32, 64}
    assert all(s["batch_episodes"] <= s["n_episodes"] for s in samples)


def test_ppo_space_uses_powers_of_two_and_named_networks() -> None:
    samples = sample("ppo", SearchContext("CartPole-v1", n_envs=1, reports_success=False))
    for s in samples:
        assert s["n_steps"] & (s["n_steps"] - 1) == 0 and s["batch_size"] <= s["n_steps"]
        assert any(f"net_arch={arch}" in s["policy_kwargs"] for arch in NET_ARCHS.values())
    env = make_vec(resolve_env("CartPole-v1"), 1, 0)
    spec = get_algo("ppo")
    for raw in samples[:4]:
        create_model(spec, build_hyperparams(raw, spec, "sample"), env, seed=0)


def test_search_space_reference_errors() -> None:
    for bad in ("nocolon", "no_such_module_xyz:f", "sppo_rl.zoo.search_spaces:missing"):
        with pytest.raises(ZooError, match="--search-space"):
            load_search_space(bad)
    assert load_search_space("sppo_rl.zoo.search_spaces:sample_ppo_params") is get_algo("ppo").search_space
