"""Bad input gives one line on stderr naming the problem, exit code 2, and no traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert re.match(r"^sppo-zoo( \w+)?: error: ", lines[0]), lines[0]
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("command", ["train", "tune"])
def test_unknown_env_id(zoo, command: str) -> None:
    result = zoo([command, "--algo", "sppo", "--env", "CartPol-v1", "-n", "10"])
    assert_one_line_error(result, "Unknown environment id 'CartPol-v1'", "did you mean CartPole-v1")


def test_unknown_module_class_env(zoo) -> None:
    assert_one_line_error(
        zoo(["train", "--algo", "sppo", "--env", "sppo_rl.toy_envs:Nope"]), "'sppo_rl.toy_envs'", "Nope"
    )
    assert_one_line_error(zoo(["train", "--algo", "sppo", "--env", "no_such_mod_x:Env"]), "cannot import module")


@pytest.mark.parametrize("command", ["train", "tune", "eval"])
def test_unknown_algo(zoo, command: str) -> None:
    result = zoo([command, "--algo", "dqn", "--env", "CartPole-v1"])
    assert_one_line_error(result, "--algo", "invalid choice: 'dqn'")


def test_malformed_yaml(zoo, tmp_path: Path) -> None:
    conf = write(tmp_path / "bad.yml", "LineTarget-v0:\n  n_envs: [1, 2\n  gamma: 0.9\n")
    result = zoo(["train", "--algo", "sppo", "--env", "LineTarget-v0", "-conf", conf])
    assert_one_line_error(result, "Malformed YAML", "bad.yml")


def test_yaml_that_is_not_a_mapping(zoo, tmp_path: Path) -> None:
    conf = write(tmp_path / "list.yml", "- 1\n- 2\n")
    assert_one_line_error(zoo(["tune", "--algo", "sppo", "--env", "LineTarget-v0", "-conf", conf]), "top level")


@pytest.mark.parametrize("command", ["train", "tune"])
def test_unknown_hyperparameter_in_yaml(zoo, tmp_path: Path, command: str) -> None:
    conf = write(tmp_path / "h.yml", "LineTarget-v0:\n  n_timesteps: 100\n  learning_rte: 0.001\n")
    result = zoo([command, "--algo", "sppo", "--env", "LineTarget-v0", "-conf", conf])
    assert_one_line_error(result, "Unknown hyperparameter 'learning_rte' for sppo", "did you mean learning_rate")


def test_unknown_hyperparameter_in_params(zoo) -> None:
    result = zoo(["train", "--algo", "ppo", "--env", "LineTarget-v0", "-params", "critic_learning_rate:0.1"])
    assert_one_line_error(result, "Unknown hyperparameter 'critic_learning_rate' for ppo in -params")


def test_bad_hyperparameter_value(zoo) -> None:
    result = zoo(["train", "--algo", "sppo", "--env", "LineTarget-v0", "-n", "10", "-params", "loss_agg_mode:bogus"])
    assert_one_line_error(result, "Invalid hyperparameters for sppo", "bogus")


def test_unsafe_policy_kwargs(zoo) -> None:
    result = zoo(["train", "--algo", "sppo", "--env", "LineTarget-v0", "-params", "policy_kwargs:__import__('os')"])
    assert_one_line_error(result, "Cannot read")


def test_missing_hyperparameter_file(zoo) -> None:
    result = zoo(["train", "--algo", "sppo", "--env", "LineTarget-v0", "-conf", "nowhere.yml"])
    assert_one_line_error(result, "Cannot read hyperparameter file nowhere.yml")


def test_eval_without_a_run(zoo) -> None:
    assert_one_line_error(zoo(["eval", "--algo", "sppo", "--env", "LineTarget-v0"]), "No sppo run of LineTarget-v0")


def test_continue_from_a_missing_model(zoo) -> None:
    result = zoo(["train", "--algo", "sppo", "--env", "LineTarget-v0", "-i", "missing.zip"])
    assert_one_line_error(result, "-i missing.zip")


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--storage", "study.txt"], "--storage 'study.txt'"),
        (["--storage", "nodriver+fake://host/db"], "--storage"),
        (["--n-trials", "0"], "--n-trials must be at least 1"),
        (["--search-space", "nomodule_xyz:f"], "--search-space"),
        (["--sampler", "grid"], "invalid choice: 'grid'"),
    ],
)
def test_bad_tune_options(zoo, options: list[str], fragment: str) -> None:
    result = zoo(["tune", "--algo", "sppo", "--env", "LineTarget-v0", "-n", "10", *options])
    assert_one_line_error(result, fragment)


def test_missing_gym_package(zoo) -> None:
    result = zoo(["train", "--algo", "sppo", "--env", "LineTarget-v0", "--gym-packages", "no_such_pkg_xyz"])
    assert_one_line_error(result, "--gym-packages", "no_such_pkg_xyz")


def test_error_in_a_real_process(subprocesses, tmp_path: Path) -> None:
    result = subprocesses.run(["train", "--algo", "sppo", "--env", "NoSuchEnv-v0"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "sppo-zoo: error: Unknown environment id 'NoSuchEnv-v0' (not registered with gymnasium; import its package "
        "with --gym-packages or write it as module:Class)"
    ]
