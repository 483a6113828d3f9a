"""SPPO's own argument checks reach the zoo: a bad value in a YAML file or in ``-params`` is one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest


def _one_line_error(result, *fragments: str) -> None:
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("entry", "fragments"),
    [
        ("max_grad_norm: -1.0", ("Invalid hyperparameters for sppo", "max_grad_norm must be > 0.0, got -1.0")),
        ("learning_rate: .nan", ("learning_rate must be a number, got nan",)),
        ("n_steps: 32.7", ("n_steps must be an integer, got 32.7",)),
        ("batch_episodes: 2.5", ("batch_episodes must be an integer, got 2.5",)),
        ("batch_size: 64", ("Unknown hyperparameter 'batch_size' for sppo", "use batch_episodes=")),
        ("gamma: 0.99", ("Unknown hyperparameter 'gamma' for sppo", "undiscounted")),
    ],
)
def test_bad_sppo_value_in_yaml_is_one_line_naming_it(zoo, tmp_path: Path, entry: str, fragments: tuple[str, ...]):
    conf = tmp_path / "h.yml"
    conf.write_text(f"LineTarget-v0:\n  n_timesteps: 100\n  {entry}\n")
    result = zoo(["train", "--algo", "sppo", "--env", "LineTarget-v0", "-conf", str(conf), "--verbose", "0"])
    _one_line_error(result, *fragments)


def test_negative_max_grad_norm_from_params_is_refused(zoo, fast_train: list[str]):
    result = zoo(["train", "--algo", "sppo", "--env", "LineTarget-v0", "-n", "100", *fast_train, "max_grad_norm:-0.5"])
    _one_line_error(result, "max_grad_norm must be > 0.0, got -0.5")
