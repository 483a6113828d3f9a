"""The paper's math evaluation: the benchmark registry (loaded offline from schema-faithful fixtures through
``datasets.load_dataset``), avg@k / unbiased pass@k / maj@k in closed form, a breakdown by any column, and
``sppo-llm eval --benchmark`` on the tiny example model, in-process and through the console script."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from sppo_rl.llm.benchmark_eval import benchmark_rewards, evaluate_math_benchmarks
from sppo_rl.llm.cli import main
from sppo_rl.llm.data import PromptDataset, load_rows
from sppo_rl.llm.eval_metrics import majority_vote, math_answers_equal, pass_at_k, prompt_metrics
from sppo_rl.llm.evaluation import evaluate_policy
from sppo_rl.llm.loading import build_dataset
from sppo_rl.llm.math_benchmarks import (
    BENCHMARKS,
    PAPER_TEMPLATE,
    BenchmarkNotFoundError,
    get_benchmark,
    load_benchmark_rows,
    normalize_answer,
    resolve_benchmarks,
)
from sppo_rl.llm.rewards import BoxedMathVerifier, RewardRunner
from sppo_rl.llm.run_config import DataSpec, RunConfig
from sppo_rl.llm.sequences import EncodedPrompts, Rollout
from sppo_rl.llm.trainer import build_trainer

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "llm" / "examples" / "tiny_cpu.yml"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "math_benchmarks"
SIZES = {"aime24": 3, "aime25": 2, "amc23": 2, "math500": 4, "minerva": 2, "deepscaler": 3, "dapo17k": 2}
"""Rows of each fixture (DAPO's three rows hold two distinct problems)."""


# ---------------------------------------------------------------------------------------------------------
# metrics in closed form
# ---------------------------------------------------------------------------------------------------------


def test_pass_at_k_is_the_unbiased_estimator() -> None:
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(10, 2, 3) == pytest.approx(1 - 56 / 120)  # 1 - C(8,3)/C(10,3)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the success rate
    assert pass_at_k(16, 0, 16) == 0.0 and pass_at_k(16, 1, 16) == 1.0  # n = k: any success
    assert pass_at_k(5, 2, 4) == 1.0  # fewer failures than k: every k-subset holds a success
    # the estimator is the mean over all k-subsets of the n samples of "some sample succeeded"
    flags = [True, False, False, True, False, False, False]
    subsets = list(itertools.combinations(flags, 3))
    assert pass_at_k(7, 2, 3) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(2, 1, 3)


def test_majority_vote_groups_parsed_answers_and_breaks_ties_by_first_seen() -> None:
    assert majority_vote(["27", "26", "27"]) == 0
    assert majority_vote([None, "5", "6", "6"]) == 2
    assert majority_vote(["1", "2"]) == 0  # tie: the group that started first
    assert majority_vote([None, None]) is None  # no answer, no vote
    # math-verify equality puts "27.0" and "27" together; plain strings do not
    assert majority_vote(["26", "27.0", "27"]) == 0
    assert majority_vote(["26", "27.0", "27"], math_answers_equal()) == 1
    assert majority_vote(["\\frac{1}{2}", "3", "0.5"], math_answers_equal()) == 0


def test_prompt_metrics_from_n_samples() -> None:
    ok = [False, True, True, False]
    answers = ["26", "27", "27.0", None]
    equal = math_answers_equal()
    assert prompt_metrics(ok, answers, 4, equal) == {"avg": 0.5, "pass": 1.0, "maj": 1.0}
    m = prompt_metrics(ok, answers, 2, equal)  # maj@2 votes over "26", "27": a tie won by the wrong "26"
    assert m["avg"] == 0.5 and m["pass"] == pytest.approx(1 - 1 / 6) and m["maj"] == 0.0


class ScriptedEngine:
    """Returns fixed responses, in order, with given lengths and truncation flags (no model)."""

    def __init__(self, texts: list[str], lengths: list[int], truncated: list[bool]) -> None:
        self.texts, self.lengths, self.truncated = texts, lengths, truncated
        self.calls = 0

    def generate(self, prompts: EncodedPrompts, greedy: bool = False, settings: Any = None, **seeding: Any) -> Rollout:
        b = prompts.input_ids.shape[0]
        part = slice(self.calls, self.calls + b)
        self.calls += b
        width = max(self.lengths)
        mask = torch.tensor([[1] * n + [0] * (width - n) for n in self.lengths[part]])
        return Rollout(
            prompts.input_ids,
            prompts.attention_mask,
            torch.zeros(b, width, dtype=torch.long),
            mask,
            torch.tensor(self.truncated[part]),
            self.texts[part],
        )


SCRIPT = {  # reference -> the 4 responses of its prompt
    "27": ["so \\boxed{27}", "\\boxed{27.0}", "\\boxed{26}", "no box"],  # 2 right; vote 27 (right)
    "\\frac{1}{2}": ["\\boxed{0.5}", "\\boxed{3}", "\\boxed{3}", "\\boxed{4}"],  # 1 right; vote 3 (wrong)
    "5": ["\\boxed{4}"] * 4,  # none right
}


def _scripted(make_policy: Any, k: int) -> dict[str, Any]:
    levels = [1, 2, 1]
    rows = [{"question": f"q{i}", "answer": a, "level": levels[i]} for i, a in enumerate(SCRIPT)]
    texts = [t for responses in SCRIPT.values() for t in responses]
    engine = ScriptedEngine(texts, lengths=[5, 3, 4, 4] * 3, truncated=[False, False, False, True] * 3)
    return evaluate_policy(
        make_policy(),
        PromptDataset(rows, PAPER_TEMPLATE),
        RewardRunner(BoxedMathVerifier()),
        k=k,
        n=4,
        engine=engine,  # type: ignore[arg-type]
        max_prompt_length=512,
        prompt_truncation="left",
        chat_template=False,
        group_by="level",
    )


def test_evaluate_policy_metrics_on_scripted_samples(make_policy: Any) -> None:
    """Hand-made responses through the real verifier: every number is known in advance."""
    r = _scripted(make_policy, k=4)
    assert r["avg@4"] == r["avg@k"] == r["accuracy"] == pytest.approx((0.5 + 0.25 + 0) / 3)
    assert r["pass@4"] == r["pass@k"] == pytest.approx(2 / 3)
    assert r["maj@4"] == r["maj@k"] == pytest.approx(1 / 3)
    assert r["per_prompt"] == [0.5, 0.25, 0.0] and r["n_prompts"] == 3 and (r["k"], r["n"]) == (4, 4)
    assert r["truncation_rate"] == 0.25 and r["response_length_mean"] == 4.0 and r["response_tokens"] == 48
    assert r["breakdown"]["level"] == {
        "1": {"n_prompts": 2, "avg@4": 0.25, "pass@4": 0.5, "maj@4": 0.5},
        "2": {"n_prompts": 1, "avg@4": 0.25, "pass@4": 1.0, "maj@4": 0.0},
    }
    assert r["per_group"] == {"1": 0.25, "2": 0.25}
    assert r["samples"][0]["parsed"] == "27" and r["samples"][0]["reward"] == 1.0
    # k = 2 from the same n = 4 samples: unbiased pass@2, maj@2 over the first two answers of each prompt
    r2 = _scripted(make_policy, k=2)
    assert r2["avg@2"] == pytest.approx(0.25)
    assert r2["pass@2"] == pytest.approx((5 / 6 + 1 / 2 + 0) / 3)
    assert r2["maj@2"] == pytest.approx(2 / 3)  # "27"/"27.0" one group; "0.5" wins its tie with "3"
    assert "avg@4" not in r2


def test_evaluate_policy_rejects_bad_k_and_unknown_columns(make_policy: Any) -> None:
    data = PromptDataset([{"question": "q", "answer": "1"}])
    runner = RewardRunner(BoxedMathVerifier())
    with pytest.raises(ValueError, match="n \\(samples per prompt\\) must be >= k"):
        evaluate_policy(make_policy(), data, runner, k=4, n=2)
    with pytest.raises(KeyError, match="no row has a column 'level'"):
        evaluate_policy(make_policy(), data, runner, k=1, group_by="level")


# ---------------------------------------------------------------------------------------------------------
# the registry and its loading
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_every_registered_dataset_loads_from_a_local_copy(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls: list[tuple[Any, ...]] = []
    real = datasets.load_dataset

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append((*args, kwargs.get("split")))
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", spy)
    bench = get_benchmark(name)
    rows = load_benchmark_rows(name, FIXTURES)
    assert calls == [(str(FIXTURES / bench.dataset_id), None, bench.split)]  # datasets' own loader, the card's split
    assert len(rows) == SIZES[name]
    assert all(r["question"] and isinstance(r["answer"], str) for r in rows)


def test_questions_answers_and_columns_follow_the_cards() -> None:
    aime = load_benchmark_rows("aime24", FIXTURES)
    assert [r["answer"] for r in aime] == ["24", "9", "21"]  # "021" normalised
    assert aime[0]["question"].startswith("Find the remainder") and aime[0]["year"] == "2024"
    assert [r["answer"] for r in load_benchmark_rows("amc23", FIXTURES)] == ["27", "1"]  # floats 27.0, 1.0
    math500 = load_benchmark_rows("math500", FIXTURES)
    assert math500[0]["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)" and math500[0]["level"] == 2
    dapo = load_benchmark_rows("dapo17k", FIXTURES)
    assert [r["question"] for r in dapo] == ["What is $6 \\times 7$?", "How many primes are less than $10$?"]
    assert [r["answer"] for r in dapo] == ["42", "4"]
    assert "prompt" not in dapo[0] and dapo[0]["source_prompt"][0]["role"] == "user"


def test_normalize_answer() -> None:
    assert normalize_answer("033", "numeric") == "33"
    assert normalize_answer(27.0, "numeric") == "27"
    assert normalize_answer("27.0", "numeric") == "27"
    assert normalize_answer(0.5, "numeric") == "0.5"
    assert normalize_answer("\\frac{1}{2}", "numeric") == "\\frac{1}{2}"
    assert normalize_answer(" $\\frac{\\pi}{2}$ ", "latex") == "\\frac{\\pi}{2}"
    assert normalize_answer("\\text{(C)}", "latex") == "\\text{(C)}"
    with pytest.raises(ValueError, match="Unknown answer format"):
        normalize_answer("1", "roman")


def test_the_training_verifier_accepts_every_fixture_reference() -> None:
    """The normalised references parse: each one, boxed, scores 1 with the training reward; a wrong one 0."""
    runner = RewardRunner(BoxedMathVerifier())
    for name in BENCHMARKS:
        rows = load_benchmark_rows(name, FIXTURES)
        right = runner.score(["p"] * len(rows), [f"\\boxed{{{r['answer']}}}" for r in rows], rows)
        wrong = runner.score(["p"] * len(rows), ["\\boxed{123456}"] * len(rows), rows)
        assert all(right.success) and not any(wrong.success), name


def test_benchmark_selection() -> None:
    assert [b.name for b in resolve_benchmarks("paper")] == ["aime24", "aime25", "amc23", "math500", "minerva"]
    assert [b.name for b in resolve_benchmarks("aime24, math,aime2024")] == ["aime24", "math500"]
    paper = resolve_benchmarks("paper")
    assert {(b.k, b.temperature, b.max_new_tokens) for b in paper} == {(16, 0.6, 8192)}
    with pytest.raises(ValueError, match="Unknown benchmark 'gsm8k'; known: aime24, aime25, amc23"):
        resolve_benchmarks("gsm8k")


def test_a_missing_benchmark_names_the_dataset_and_the_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BenchmarkNotFoundError, match=r"aime25 \(math-ai/aime25.*--benchmark-dir"):
        load_benchmark_rows("aime25", tmp_path)
    import datasets

    def offline(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach 'math-ai/aime25' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(BenchmarkNotFoundError, match=r"'math-ai/aime25'.*--benchmark-dir DIR"):
        load_benchmark_rows("aime25")


def test_offline_hub_load_fails_fast_with_the_message() -> None:
    import datasets

    if not datasets.config.HF_HUB_OFFLINE:
        pytest.skip("needs HF_HUB_OFFLINE=1 (set by tests/llm/conftest.py before datasets is imported)")
    with pytest.raises(BenchmarkNotFoundError, match=r"HuggingFaceH4/MATH-500.*--benchmark-dir"):
        load_benchmark_rows("math500")


def test_training_sets_are_data_sources(tmp_path: Path) -> None:
    rows = load_rows({"benchmark": "deepscaler", "benchmark_dir": str(FIXTURES)})
    assert [r["answer"] for r in rows] == ["7", "\\frac{1}{2}", "7"]
    spec = DataSpec(source={"benchmark": "dapo17k", "benchmark_dir": str(FIXTURES)}, template=PAPER_TEMPLATE)
    data = build_dataset(spec, "train")
    assert len(data) == 2 and data.messages(0) == [
        {"role": "user", "content": "What is $6 \\times 7$?\nPlease output the final answer within \\boxed{}."}
    ]
    config = tmp_path / "run.yml"
    config.write_text(f"data:\n  source: {{benchmark: math500, benchmark_dir: {FIXTURES}}}\n")
    assert RunConfig.from_yaml(str(config)).data.source == {"benchmark": "math500", "benchmark_dir": str(FIXTURES)}
    with pytest.raises(ValueError, match="takes benchmark, benchmark_dir and max_rows"):
        load_rows({"benchmark": "dapo17k", "split": "test"})


# ---------------------------------------------------------------------------------------------------------
# the tiny example model, in-process and through the console script
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_trainer() -> Any:
    cfg = RunConfig.from_yaml(str(TINY), ["trainer.max_prompt_length=512", "eval.batch_size=16"])
    return build_trainer(cfg, verbose=0)


def test_benchmark_reward_is_the_training_reward(tiny_trainer: Any) -> None:
    runner = benchmark_rewards(tiny_trainer)
    (verifier,) = runner.functions
    assert isinstance(verifier, BoxedMathVerifier) and verifier.answer_column == "answer"
    assert runner.timeout_s == tiny_trainer.run_config.reward.timeout_s


def test_trainer_evaluate_spells_k_and_is_seeded(tiny_trainer: Any, copy_rows: Any) -> None:
    mine = tiny_trainer.evaluate(copy_rows[:6], k=2)
    assert mine == tiny_trainer.evaluate(copy_rows[:6], k=2)
    assert mine["avg@2"] == mine["avg@k"] and "maj@2" in mine and mine["n"] == 2


def test_evaluate_math_benchmarks_in_python(tiny_trainer: Any) -> None:
    report = evaluate_math_benchmarks(
        tiny_trainer, "math500,aime25", benchmark_dir=FIXTURES, k=2, n=3, max_new_tokens=3, group_by="subject"
    )
    assert list(report["benchmarks"]) == ["math500", "aime25"]
    m = report["benchmarks"]["math500"]
    assert (m["dataset"], m["split"], m["n_prompts"], m["k"], m["n"]) == ("HuggingFaceH4/MATH-500", "test", 4, 2, 3)
    assert (m["temperature"], m["max_new_tokens"], m["top_p"]) == (0.6, 3, 1.0)
    assert set(m["breakdown"]["subject"]) == {"Algebra", "Precalculus", "Prealgebra"}
    assert "breakdown" not in report["benchmarks"]["aime25"]  # no subject column there
    for key in ("avg@2", "pass@2", "maj@2"):
        expected = (m[key] + report["benchmarks"]["aime25"][key]) / 2
        assert report["mean"][key] == pytest.approx(expected)
    again = evaluate_math_benchmarks(
        tiny_trainer, "math500,aime25", benchmark_dir=FIXTURES, k=2, n=3, max_new_tokens=3, group_by="subject"
    )
    assert again == report  # seeded, no timings


def test_cli_eval_benchmark_in_process(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "bench.json"
    argv = ["eval", str(TINY), "--output-dir", str(tmp_path), "--set", "trainer.max_prompt_length=512"]
    argv += ["--benchmark", "paper", "--benchmark-dir", str(FIXTURES), "--max-new-tokens", "2", "--max-prompts", "1"]
    assert main([*argv, "--out", str(out), "--group-by", "level"]) == 0
    table = capsys.readouterr().out
    assert "avg@k %" in table and "pass@k %" in table and "maj@k %" in table and "mean of 5" in table
    report = json.loads(out.read_text())
    assert list(report["benchmarks"]) == ["aime24", "aime25", "amc23", "math500", "minerva"]
    for r in report["benchmarks"].values():  # the paper's settings: Average@16 at temperature 0.6
        assert (r["k"], r["n"], r["temperature"], r["max_new_tokens"], r["n_prompts"]) == (16, 16, 0.6, 2, 1)
        assert {"avg@16", "pass@16", "maj@16", "response_length_mean", "truncation_rate"} <= set(r)
    assert report["benchmarks"]["math500"]["breakdown"]["level"]["2"]["n_prompts"] == 1
    assert report["mean"]["n_benchmarks"] == 5 and "avg@16" in report["mean"]


def test_cli_plain_eval_spells_k(tmp_path: Path, capsys: Any) -> None:
    argv = ["eval", str(TINY), "--output-dir", str(tmp_path), "--k", "2", "--n", "3", "--max-prompts", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{") :])
    assert {"avg@2", "pass@2", "maj@2", "avg@k"} <= set(result) and (result["k"], result["n"]) == (2, 3)


def _console_script() -> str:
    found = shutil.which("sppo-llm", path=str(Path(sys.executable).parent)) or shutil.which("sppo-llm")
    assert found, "the sppo-llm console script is not installed (pip install -e .)"
    return found


def test_console_script_eval_benchmark(tmp_path: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = tmp_path / "bench.json"
    cmd = [_console_script(), "eval", str(TINY), "--output-dir", str(tmp_path), "--benchmark", "aime24,math500"]
    cmd += ["--benchmark-dir", str(FIXTURES), "--k", "2", "--max-new-tokens", "3", "--out", str(out)]
    done = subprocess.run(
        [*cmd, "--set", "trainer.max_prompt_length=512"], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "HuggingFaceH4/aime_2024" in done.stdout and f"Results (JSON): {out}" in done.stdout
    report = json.loads(out.read_text())
    assert [r["n_prompts"] for r in report["benchmarks"].values()] == [3, 4]
    assert all(0.0 <= r["avg@2"] <= r["pass@2"] <= 1.0 for r in report["benchmarks"].values())
    assert math.isclose(report["mean"]["avg@2"], sum(r["avg@2"] for r in report["benchmarks"].values()) / 2)


def test_console_script_missing_benchmark_is_a_clear_error(tmp_path: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cmd = [_console_script(), "eval", str(TINY), "--output-dir", str(tmp_path), "--benchmark", "minerva"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode != 0
    assert "math-ai/minervamath" in done.stderr and "--benchmark-dir" in done.stderr
