"""Start policies are read without running code from the file: a crafted pickle is refused, not executed."""

from __future__ import annotations

import pathlib
from pathlib import Path

import numpy as np
import pytest
import torch as th
from sppo_rl.zoo import protocol
from sppo_rl.zoo.errors import ZooError

CARTPOLE = "SparsePrecisionCartPole-v0"


class _TouchOnLoad:
    """Unpickles to ``Path(marker).touch()``: what a crafted file could run instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


@pytest.fixture
def crafted(tmp_path: Path) -> tuple[Path, Path]:
    """A start-policy-shaped file whose metadata runs ``touch marker`` when fully unpickled: (file, marker)."""
    actor, _ = protocol.load_start_policy(protocol.start_policy_path(CARTPOLE))
    marker, path = tmp_path / "marker", tmp_path / "crafted.pt"
    th.save({"actor": actor, "meta": {"env_id": CARTPOLE, "note": _TouchOnLoad(marker)}}, path)
    return path, marker


def test_a_crafted_start_policy_is_refused_without_running_its_code(crafted: tuple[Path, Path]) -> None:
    path, marker = crafted
    with pytest.raises(ZooError, match=r"refused, not a file of tensors and plain values \(it needs getattr"):
        protocol.load_start_policy(path)
    assert not marker.exists()
    th.load(path, weights_only=False)  # the payload is live: a full unpickle runs it
    assert marker.exists()


def test_suite_refuses_a_crafted_start_policy_in_one_line(zoo, crafted: tuple[Path, Path], tmp_path: Path) -> None:
    path, marker = crafted
    result = zoo(["suite", "--env", CARTPOLE, "--start-policy", str(path), "--out", "out", "--expert-cache", "cache"])
    assert result.code == 2
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert result.err.startswith(f"sppo-zoo: error: Start policy {path}: refused")
    assert not marker.exists()
    assert not (tmp_path / "out" / CARTPOLE).exists()  # no empty results folder left behind
    assert not (tmp_path / "cache").exists()  # and no expert trained in its place


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (th.zeros(3), "not a start policy"),
        ({"actor": {"w": [1.0]}, "meta": {}}, "not a state dict of tensors"),
    ],
)
def test_files_that_are_not_start_policies_are_named(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "other.pt"
    th.save(content, path)
    with pytest.raises(ZooError, match=message):
        protocol.load_start_policy(path)
    path.write_bytes(b"not a torch file")
    with pytest.raises(ZooError, match="refused"):
        protocol.load_start_policy(path)


def test_a_saved_start_policy_with_numpy_metadata_loads_weights_only(tmp_path: Path) -> None:
    config = protocol.load_task_config(CARTPOLE)
    actor, _ = protocol.load_start_policy(protocol.start_policy_path(CARTPOLE))
    clone = protocol.CloneResult(actor, np.float64(0.375), 12, [(10, np.float32(0.5), np.float64(0.25))])
    demos = protocol.Demonstrations(np.zeros((4, 4)), np.zeros(4), n_episodes=2, n_tried=np.int64(8))
    path = tmp_path / "start.pt"
    protocol.save_start_policy(path, clone, config, demos)
    loaded, meta = protocol.load_start_policy(path)
    assert meta["start_success"] == 0.375 and type(meta["start_success"]) is float
    assert meta["bc_history"] == [(10, 0.5, 0.25)]
    assert meta["expert_success_rate"] == 0.25
    assert loaded.keys() == actor.keys() and all(th.equal(loaded[k], actor[k]) for k in actor)
