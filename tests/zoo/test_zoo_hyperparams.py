"""Hyperparameter files: YAML format, schedules, policy_kwargs, normalize, overrides, and the shipped entries."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from sppo_rl.envs import dense_ids, sparse_ids
from sppo_rl.zoo.algos import ALGOS, get_algo
from sppo_rl.zoo.errors import ZooError
from sppo_rl.zoo.hyperparams import (
    build_hyperparams,
    entry_for,
    load_entry,
    load_yaml,
    parse_literal,
    parse_overrides,
    resolve_policy_kwargs,
)

SPPO = get_algo("sppo")
PPO = get_algo("ppo")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_floats_in_exponent_notation_are_numbers(tmp_path: Path) -> None:
    data = load_yaml(write(tmp_path / "h.yml", "Env-v0:\n  learning_rate: 1e-3\n  n_timesteps: 2E5\n  gamma: 0.99\n"))
    assert data["Env-v0"] == {"learning_rate": 1e-3, "n_timesteps": 2e5, "gamma": 0.99}


def test_entry_falls_back_to_default(tmp_path: Path) -> None:
    path = write(tmp_path / "h.yml", "default:\n  n_envs: 2\nCartPole-v1:\n  n_envs: 8\n")
    assert load_entry(path, "CartPole-v1") == ("CartPole-v1", {"n_envs": 8})
    assert load_entry(path, "Other-v0") == ("default", {"n_envs": 2})


def test_missing_entry_without_default_names_the_entries(tmp_path: Path) -> None:
    path = write(tmp_path / "h.yml", "CartPole-v1:\n  n_envs: 8\n")
    with pytest.raises(ZooError, match=r"No hyperparameters for 'Other-v0'.*CartPole-v1"):
        load_entry(path, "Other-v0")


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yml", "Env-v0:\n  n_envs: [1, 2\n")
    with pytest.raises(ZooError, match=r"Malformed YAML in .*bad.yml line \d+"):
        load_yaml(path)


def test_linear_schedules() -> None:
    hp = build_hyperparams({"learning_rate": "lin_1e-3", "clip_range": "lin_0.2", "n_timesteps": 10}, SPPO, "t")
    assert hp.algo_kwargs["learning_rate"](1.0) == pytest.approx(1e-3)
    assert hp.algo_kwargs["learning_rate"](0.5) == pytest.approx(5e-4)
    assert hp.algo_kwargs["clip_range"](0.0) == pytest.approx(0.0)
    with pytest.raises(ZooError, match="lin_ schedules are only for"):
        build_hyperparams({"n_epochs": "lin_4"}, SPPO, "t")


@pytest.mark.parametrize(
    "value",
    [
        "dict(net_arch=[32, 32], activation_fn=nn.Tanh)",
        "{'net_arch': [32, 32], 'activation_fn': th.nn.Tanh}",
        {"net_arch": [32, 32], "activation_fn": "nn.Tanh"},
        {"net_arch": [32, 32], "activation_fn": "tanh"},
    ],
)
def test_policy_kwargs_string_or_mapping(value: object) -> None:
    assert resolve_policy_kwargs(value) == {"net_arch": [32, 32], "activation_fn": torch.nn.Tanh}


def test_policy_kwargs_nested_dicts_and_optimizer() -> None:
    kwargs = resolve_policy_kwargs("dict(net_arch=dict(pi=[64], vf=[32]), optimizer_class=torch.optim.RMSprop)")
    assert kwargs == {"net_arch": {"pi": [64], "vf": [32]}, "optimizer_class": torch.optim.RMSprop}


@pytest.mark.parametrize(
    "text",
    ["__import__('os').system('true')", "open('x')", "nn.Module.__subclasses__()", "os.path", "nn.functional.relu"],
)
def test_policy_kwargs_never_execute_code(text: str) -> None:
    with pytest.raises(ZooError, match="Cannot"):
        parse_literal(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, {}),
        (False, None),
        ("true", {}),
        ({"norm_obs": True, "norm_reward": False}, {"norm_obs": True, "norm_reward": False}),
        ("dict(norm_obs=True, norm_reward=False)", {"norm_obs": True, "norm_reward": False}),
    ],
)
def test_normalize_forms(value: object, expected: dict | None) -> None:
    assert build_hyperparams({"normalize": value}, SPPO, "t").normalize == expected


def test_normalize_takes_ppo_gamma() -> None:
    assert build_hyperparams({"normalize": True, "gamma": 0.9}, PPO, "t").normalize == {"gamma": 0.9}


def test_zoo_keys_are_split_from_algorithm_arguments() -> None:
    raw = {"n_envs": 3, "n_timesteps": 1e4, "policy": "MlpPolicy", "env_kwargs": {"size": 5}, "n_epochs": 2}
    hp = build_hyperparams(raw, SPPO, "t")
    assert (hp.n_envs, hp.n_timesteps, hp.policy, hp.env_kwargs) == (3, 10_000, "MlpPolicy", {"size": 5})
    assert hp.algo_kwargs == {"n_epochs": 2}


def test_unknown_hyperparameter_is_named_with_a_suggestion() -> None:
    with pytest.raises(
        ZooError, match=r"Unknown hyperparameter 'learnig_rate' for sppo in t; did you mean learning_rate"
    ):
        build_hyperparams({"learnig_rate": 1e-3}, SPPO, "t")
    with pytest.raises(ZooError, match="Unknown hyperparameter 'gae_lambda' for sppo"):
        build_hyperparams({"gae_lambda": 0.95}, SPPO, "t")


def test_overrides_are_read_as_yaml() -> None:
    overrides = parse_overrides(["learning_rate:1e-3", "normalize:true", "policy_kwargs:dict(net_arch=[8])", "x:a:b"])
    assert overrides == {
        "learning_rate": 1e-3,
        "normalize": True,
        "policy_kwargs": "dict(net_arch=[8])",
        "x": "a:b",
    }
    with pytest.raises(ZooError, match="key:value"):
        parse_overrides(["learning_rate"])


def test_overrides_win_and_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path / "h.yml", "LineTarget-v0:\n  n_epochs: 4\n")
    entry, source = entry_for(SPPO, "LineTarget-v0", path, {"n_epochs": 7})
    assert entry == {"n_epochs": 7}
    assert "LineTarget-v0" in source
    with pytest.raises(ZooError, match="Unknown hyperparameter 'bogus' for sppo in -params"):
        entry_for(SPPO, "LineTarget-v0", path, {"bogus": 1})


SUITE_SPARSE = sparse_ids()
PAPER_EPISODES_PER_UPDATE = {"CartPole": 64, "LunarLander": 16, "Pendulum": 16, "MountainCar": 8, "Hopper": 8}


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_shipped_entries_are_valid_and_say_where_they_come_from(algo: str) -> None:
    spec = get_algo(algo)
    text = spec.hyperparams_file.read_text()
    data = load_yaml(spec.hyperparams_file)
    lines = text.splitlines()
    for name, entry in data.items():
        build_hyperparams(entry, spec, f"{spec.hyperparams_file} [{name}]")
        index = next(i for i, line in enumerate(lines) if re.match(rf"^{re.escape(str(name))}:", line))
        comments = []
        for line in reversed(lines[:index]):
            if not line.startswith("#"):
                break
            comments.append(line)
        provenance = " ".join(comments).lower()
        assert any(p in provenance for p in ("chosen by hand", "tuned with:", "from rl-baselines3-zoo")), name


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_entries_cover_cartpole_the_toy_task_and_the_suite(algo: str) -> None:
    data = load_yaml(get_algo(algo).hyperparams_file)
    assert {"default", "CartPole-v1", "LineTarget-v0", *SUITE_SPARSE} <= set(data)


def test_ppo_has_the_dense_counterparts() -> None:
    data = load_yaml(PPO.hyperparams_file)
    assert set(dense_ids()) <= set(data)


def test_sppo_suite_entries_use_the_paper_batch_of_trajectories() -> None:
    data = load_yaml(SPPO.hyperparams_file)
    for env_id in SUITE_SPARSE:
        task = next(k for k in PAPER_EPISODES_PER_UPDATE if k in env_id)
        assert data[env_id]["n_episodes"] == PAPER_EPISODES_PER_UPDATE[task], env_id
