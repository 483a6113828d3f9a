"""The rl-baselines3-zoo bridge, against a stand-in ``rl_zoo3`` (the real one is not a dependency)."""

from __future__ import annotations

import sys
import types

import pytest
import yaml
from sppo_rl.zoo import rl_zoo3_bridge
from sppo_rl.zoo.algos import get_algo

from sppo_rl import SPPO


@pytest.fixture
def fake_rl_zoo3(monkeypatch: pytest.MonkeyPatch) -> dict:
    calls: dict = {}
    algos: dict = {"ppo": object}
    package = types.ModuleType("rl_zoo3")
    package.ALGOS = algos
    train = types.ModuleType("rl_zoo3.train")
    train.ALGOS = dict(algos)
    train.train = lambda: calls.setdefault("argv", list(sys.argv))
    for name, module in {"rl_zoo3": package, "rl_zoo3.train": train, "rl_zoo3.exp_manager": types.ModuleType("x"),
                         "rl_zoo3.enjoy": types.ModuleType("y")}.items():  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    calls["modules"] = (package, train)
    return calls


def test_register_adds_sppo_everywhere_and_train_gets_defaults(fake_rl_zoo3: dict) -> None:
    assert rl_zoo3_bridge.main(["train", "--algo", "sppo", "--env", "SparsePendulum-v0"]) == 0
    package, train = fake_rl_zoo3["modules"]
    assert package.ALGOS["sppo"] is SPPO and train.ALGOS["sppo"] is SPPO
    argv = fake_rl_zoo3["argv"]
    assert argv[argv.index("--gym-packages") + 1] == "sppo_rl.envs"
    assert argv[argv.index("--conf-file") + 1] == str(get_algo("sppo").hyperparams_file)


def test_a_user_conf_file_is_kept(fake_rl_zoo3: dict) -> None:
    assert rl_zoo3_bridge.main(["train", "--algo", "sppo", "--env", "X-v0", "-conf", "mine.yml"]) == 0
    assert "--conf-file" not in fake_rl_zoo3["argv"]


def test_missing_rl_zoo3_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "rl_zoo3", None)  # makes the import fail
    assert rl_zoo3_bridge.main(["train", "--algo", "sppo", "--env", "X-v0"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "sppo-zoo: error: rl_zoo3 is not installed (pip install rl_zoo3); sppo-zoo itself needs no rl_zoo3"
    ]


@pytest.mark.parametrize("algo", ["sppo", "ppo"])
def test_shipped_files_read_the_same_with_plain_pyyaml(algo: str) -> None:
    """rl_zoo3 reads hyperparameter files with PyYAML: a number written ``1e-3`` would be a string there."""

    def is_number(text: str) -> bool:
        try:
            float(text)
        except ValueError:
            return False
        return True

    data = yaml.safe_load(get_algo(algo).hyperparams_file.read_text())
    numbers_as_strings = [
        (name, key, value)
        for name, entry in data.items()
        for key, value in entry.items()
        if isinstance(value, str) and is_number(value)
    ]
    assert numbers_as_strings == []
