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
        zoo(["train", "--algo", "sppo", "--env", "sppo_rl.envs.toy:Nope"]), "'sppo_rl.envs.toy'", "Nope"
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
        (["--n-trials", "0"], "argument --n-trials: must be at least 1, got 0"),
        (["--search-space", "nomodule_xyz:f"], "--search-space"),
        (["--sampler", "grid"], "invalid choice: 'grid'"),
    ],
)
def test_bad_tune_options(zoo, options: list[str], fragment: str) -> None:
    result = zoo(["tune", "--algo", "sppo", "--env", "LineTarget-v0", "-n", "10", *options])
    assert_one_line_error(result, fragment)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "-n", "-5"], "argument -n/--n-timesteps: must be at least 1, got -5"),
        (["train", "-n", "0"], "argument -n/--n-timesteps: must be at least 1, got 0"),
        (["train", "-n", "2.5"], "argument -n/--n-timesteps: expected an integer, got '2.5'"),
        (["train", "--eval-episodes", "0"], "argument --eval-episodes: must be at least 1, got 0"),
        (["tune", "-n", "-5"], "argument -n/--n-timesteps: must be at least 1, got -5"),
        (["tune", "--n-trials", "-5"], "argument --n-trials: must be at least 1, got -5"),
        (["tune", "--n-jobs", "0"], "argument --n-jobs: must be at least 1, got 0"),
        (["tune", "--n-evaluations", "0"], "argument --n-evaluations: must be at least 1, got 0"),
        (["tune", "--n-seeds-per-trial", "-1"], "argument --n-seeds-per-trial: must be at least 1, got -1"),
        (["tune", "--n-startup-trials", "-1"], "argument --n-startup-trials: must be at least 0, got -1"),
        (["tune", "--heartbeat-interval", "0"], "argument --heartbeat-interval: must be at least 1, got 0"),
        (["tune", "--sampler-seed", "-3"], "argument --sampler-seed: must be at least 0, got -3"),
        (["tune", "--seed", "-1"], "argument --seed: must be at least 0, got -1"),
        (["eval", "-n", "0"], "argument -n/--n-episodes: must be at least 1, got 0"),
        (["eval", "--n-envs", "0"], "argument --n-envs: must be at least 1, got 0"),
        (["eval", "--exp-id", "-2"], "argument --exp-id: must be at least 0, got -2"),
        (["eval", "--video-length", "0"], "argument --video-length: must be at least 1, got 0"),
    ],
)
def test_nonsense_counts_are_refused_naming_the_option(zoo, tmp_path: Path, argv: list[str], message: str) -> None:
    command, *options = argv
    result = zoo([command, "--algo", "sppo", "--env", "LineTarget-v0", *options])
    assert_one_line_error(result, message)
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("option", ["--jobs 0", "--episodes -5", "--window 0", "--seeds 0 -1"])
def test_nonsense_suite_counts_are_refused_naming_the_option(zoo, option: str) -> None:
    name, *values = option.split()
    result = zoo(["suite", "--env", "SparsePrecisionCartPole-v0", name, *values])
    assert_one_line_error(result, f"argument {name}: must be at least")


@pytest.mark.parametrize("storage", ["sqlite:///a_file/sub/study.db", "a_file/study.log", "sqlite:///a_file/study.db"])
def test_a_storage_folder_that_cannot_be_created(zoo, tmp_path: Path, storage: str) -> None:
    (tmp_path / "a_file").write_text("a file where a folder should be\n")
    result = zoo(["tune", "--algo", "sppo", "--env", "LineTarget-v0", "-n", "10", "--storage", storage])
    assert_one_line_error(result, f"--storage {storage!r}: cannot create the folder a_file")
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ("garbage\n", 1),  # Optuna would have appended its records after it, and failed at the next read
        ("some notes\nmore notes\n", 1),
        ('{"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}\n[1, 2]\n', 2),
        ("\x00\x01binary", 1),
    ],
)
def test_a_journal_file_holding_garbage(zoo, tmp_path: Path, content: str, line: int) -> None:
    path = tmp_path / "study.log"
    path.write_text(content)
    result = zoo(["tune", "--algo", "sppo", "--env", "LineTarget-v0", "-n", "10", "--storage", "study.log"])
    assert_one_line_error(result, f"--storage 'study.log': line {line} is not an Optuna journal record")
    assert path.read_text() == content  # left as it was
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["-params", "loss_agg_mode:bogus"], "Invalid hyperparameters for sppo"),  # the model cannot be built
        (["-params", "normalize:{bogus: 1}"], "normalize:"),  # VecNormalize cannot be built
    ],
)
def test_a_failed_run_leaves_no_run_folder(zoo, tmp_path: Path, options: list[str], message: str) -> None:
    argv = ["train", "--algo", "sppo", "--env", "LineTarget-v0", "-n", "64", "--eval-freq", "-1", "--verbose", "0"]
    result = zoo([*argv, *options])
    assert result.code != 0 and message in result.err
    assert list((tmp_path / "logs" / "sppo").iterdir()) == []
    assert zoo([*argv, "-params", "n_episodes:8"]).code == 0  # the next run takes experiment id 1
    assert [p.name for p in (tmp_path / "logs" / "sppo").iterdir()] == ["LineTarget-v0_1"]


def test_an_env_that_refuses_its_env_kwargs(zoo, tmp_path: Path) -> None:
    result = zoo(["train", "--algo", "sppo", "--env", "LineTarget-v0", "-params", "env_kwargs:{size: -3}"])
    assert_one_line_error(result, "Cannot build 'LineTarget-v0' with env_kwargs={'size': -3}", "size=-3")
    assert not (tmp_path / "logs").exists()


def test_a_log_folder_that_cannot_be_created(zoo, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    result = zoo(["train", "--algo", "sppo", "--env", "LineTarget-v0", "-n", "64", "-f", "a_file/logs"])
    assert_one_line_error(result, "Cannot create the folder a_file/logs/sppo")


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
