"""Every entry of the shipped hyperparameter files trains (one rollout) and saves (about 25 s in all)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from sppo_rl.zoo.algos import ALGOS, get_algo
from sppo_rl.zoo.hyperparams import load_yaml

ENTRIES = [
    (algo, env_id)
    for algo in sorted(ALGOS)
    for env_id in load_yaml(get_algo(algo).hyperparams_file)
    if env_id != "default"
]


@pytest.mark.parametrize(("algo", "env_id"), ENTRIES)
def test_entry_trains_one_rollout(zoo, tmp_path: Path, algo: str, env_id: str) -> None:
    if "Hopper" in env_id and importlib.util.find_spec("mujoco") is None:
        pytest.skip("needs mujoco")
    if "LunarLander" in env_id and importlib.util.find_spec("Box2D") is None:
        pytest.skip("needs box2d")
    result = zoo(["train", "--algo", algo, "--env", env_id, "-n", "1", "--eval-freq", "-1", "--verbose", "0"])
    assert result.code == 0, result.err
    assert (tmp_path / "logs" / algo / f"{env_id}_1" / f"{env_id}.zip").is_file()
