"""``sppo-zoo train`` and ``sppo-zoo eval`` end to end (in this process), and ``python -m sppo_rl.zoo``."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecNormalize

from sppo_rl import SPPO


def test_train_writes_an_rl_zoo_run_folder(zoo, fast_train, tmp_path: Path) -> None:
    argv = ["train", "--algo", "sppo", "--env", "LineTarget-v0", "-n", "400", "--seed", "3", "--eval-freq", "200",
            "--eval-episodes", "4", "--save-freq", "200", *fast_train]  # fmt: skip
    result = zoo(argv)
    assert result.code == 0, result.err
    run = tmp_path / "logs" / "sppo" / "LineTarget-v0_1"
    for name in ("LineTarget-v0.zip", "best_model.zip", "evaluations.npz", "0.monitor.csv", "command.txt",
                 "LineTarget-v0/config.yml", "LineTarget-v0/args.yml", "rl_model_200_steps.zip"):  # fmt: skip
        assert (run / name).is_file(), name
    assert (run / "command.txt").read_text().startswith("sppo-zoo train --algo sppo --env LineTarget-v0")
    args = yaml.safe_load((run / "LineTarget-v0" / "args.yml").read_text())
    assert args["seed"] == 3 and args["algo"] == "sppo"
    config = yaml.safe_load((run / "LineTarget-v0" / "config.yml").read_text())
    assert config["n_episodes"] == 8 and config["n_timesteps"] == 400
    evaluations = np.load(run / "evaluations.npz")
    assert evaluations["successes"].shape[1] == 4  # SB3's EvalCallback kept is_success
    assert "is_success" in (run / "0.monitor.csv").read_text().splitlines()[1]
    model = SPPO.load(run / "LineTarget-v0.zip")
    assert model.num_timesteps >= 400 and model.n_episodes == 8

    # a second run gets the next id
    assert zoo(argv).code == 0
    assert (tmp_path / "logs" / "sppo" / "LineTarget-v0_2" / "LineTarget-v0.zip").is_file()


def test_eval_reports_success_rate_and_return(zoo, fast_train, tmp_path: Path) -> None:
    train = ["train", "--algo", "sppo", "--env", "LineTarget-v0", "-n", "1500", "--seed", "0", "--eval-freq", "500"]
    assert zoo([*train, *fast_train]).code == 0
    result = zoo(["eval", "--algo", "sppo", "--env", "LineTarget-v0", "-n", "12"])
    assert result.code == 0, result.err
    assert "success rate:" in result.out and "mean return:" in result.out
    summary = json.loads((tmp_path / "logs" / "sppo" / "LineTarget-v0_1" / "eval_final.json").read_text())
    assert summary["n_episodes"] == 12 and summary["metric"] == "success_rate"
    assert summary["success_rate"] == summary["mean_return"]  # the toy task's return is its outcome
    assert summary["n_successes"] == round(12 * summary["success_rate"])

    best = zoo(["eval", "--algo", "sppo", "--env", "LineTarget-v0", "--exp-id", "1", "--load-best", "-n", "4",
                "--json", "-", "--stochastic"])  # fmt: skip
    assert best.code == 0, best.err
    data = json.loads(best.out)
    assert data["model"].endswith("best_model.zip") and data["deterministic"] is False


def test_continue_training_from_a_saved_model_with_vecnormalize(zoo, fast_train, tmp_path: Path) -> None:
    common = ["--algo", "sppo", "--env", "LineTarget-v0", "-n", "300", "--seed", "1", "--eval-freq", "-1", *fast_train,
              "normalize:true"]  # fmt: skip
    assert zoo(["train", *common]).code == 0
    first = tmp_path / "logs" / "sppo" / "LineTarget-v0_1"
    assert (first / "LineTarget-v0" / "vecnormalize.pkl").is_file()
    result = zoo(["train", *common, "-i", str(first / "LineTarget-v0.zip")])
    assert result.code == 0, result.err
    second = tmp_path / "logs" / "sppo" / "LineTarget-v0_2"
    before, after = SPPO.load(first / "LineTarget-v0.zip"), SPPO.load(second / "LineTarget-v0.zip")
    assert after.num_timesteps >= before.num_timesteps + 300  # -n steps were added
    assert after.num_episodes > before.num_episodes
    stats_before = pickle.loads((first / "LineTarget-v0" / "vecnormalize.pkl").read_bytes())
    stats_after = pickle.loads((second / "LineTarget-v0" / "vecnormalize.pkl").read_bytes())
    assert isinstance(stats_after, VecNormalize)
    assert stats_after.obs_rms.count > stats_before.obs_rms.count  # the statistics continued too
    result = zoo(["eval", "--algo", "sppo", "--env", "LineTarget-v0", "-n", "4"])
    assert result.code == 0, result.err


def test_ppo_on_cartpole_with_a_gif_and_no_success_metric(zoo, tmp_path: Path) -> None:
    train = ["train", "--algo", "ppo", "--env", "CartPole-v1", "-n", "256", "--eval-freq", "-1", "--verbose", "0",
             "-params", "n_steps:64", "batch_size:64", "n_epochs:1"]  # fmt: skip
    assert zoo(train).code == 0
    assert isinstance(PPO.load(tmp_path / "logs" / "ppo" / "CartPole-v1_1" / "CartPole-v1.zip"), PPO)
    result = zoo(["eval", "--algo", "ppo", "--env", "CartPole-v1", "-n", "2", "--video", "--video-length", "12"])
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "logs" / "ppo" / "CartPole-v1_1" / "eval_final.json").read_text())
    assert summary["success_rate"] is None and summary["metric"] == "mean_return"
    gif = Image.open(summary["video"])
    assert gif.format == "GIF" and 1 < gif.n_frames <= 13  # Pillow merges identical consecutive frames


def test_module_class_env_ids(zoo, fast_train, tmp_path: Path) -> None:
    env = "sppo_rl.envs.toy:LineTargetEnv"
    result = zoo(["train", "--algo", "sppo", "--env", env, "-n", "100", "--eval-freq", "-1", *fast_train])
    assert result.code == 0, result.err  # no entry of its own: the `default` entry is used
    run = tmp_path / "logs" / "sppo" / "sppo_rl.envs.toy-LineTargetEnv_1"
    assert (run / "sppo_rl.envs.toy-LineTargetEnv.zip").is_file()
    assert zoo(["eval", "--algo", "sppo", "--env", env, "-n", "2"]).code == 0


def test_python_dash_m_entry_point(subprocesses, tmp_path: Path) -> None:
    result = subprocesses.run(["--help"], cwd=tmp_path)
    assert result.returncode == 0
    assert all(command in result.stdout for command in ("train", "eval", "tune"))


def test_subprocess_vector_env(zoo, fast_train, tmp_path: Path) -> None:
    argv = ["train", "--algo", "sppo", "--env", "LineTarget-v0", "-n", "100", "--eval-freq", "-1", "--vec-env",
            "subproc", *fast_train, "n_envs:2"]  # fmt: skip
    result = zoo(argv)
    assert result.code == 0, result.err
    assert (tmp_path / "logs" / "sppo" / "LineTarget-v0_1" / "1.monitor.csv").is_file()
