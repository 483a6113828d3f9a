"""Datasets (files, lists, reasoning-gym, toy), templates, the prompt sampler, verifiers and PromptEnv."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from sppo_rl.llm.data import (
    DatasetFileError,
    DatasetRowError,
    EmptyDatasetError,
    PromptDataset,
    PromptSampler,
    PromptTemplate,
    load_rows,
    render_messages,
)
from sppo_rl.llm.rewards import (
    BoxedMathVerifier,
    ExactMatchVerifier,
    FunctionReward,
    ReasoningGymVerifier,
    RewardFailureWarning,
    RewardFunctionError,
    RewardRunner,
    Verifier,
    VerifierResult,
    extract_boxed,
    make_reward,
)

ROWS = [{"question": "What is 1 + 1?", "answer": "2"}, {"question": "What is 2 * 3?", "answer": "6"}]


# ---------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_local_files_load_offline(tmp_path: Any, fmt: str) -> None:
    import datasets

    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in ROWS))
    elif fmt == "parquet":
        datasets.Dataset.from_list(ROWS).to_parquet(str(path))
    else:
        datasets.Dataset.from_list(ROWS).to_csv(str(path))
    rows = load_rows(str(path))
    assert [(r["question"], str(r["answer"])) for r in rows] == [(r["question"], r["answer"]) for r in ROWS]


def test_list_toy_and_reasoning_gym_sources() -> None:
    assert load_rows(ROWS) == ROWS
    toy = load_rows("toy:copy_digit", size=5, seed=3)
    assert len(toy) == 5 and all(r["question"].endswith(r["answer"]) for r in toy)
    rg = load_rows({"reasoning_gym": "basic_arithmetic", "size": 4, "seed": 1})
    assert len(rg) == 4 and {"question", "answer", "metadata"} <= set(rg[0])
    assert load_rows({"reasoning_gym": "basic_arithmetic", "size": 4, "seed": 1}) == rg  # procedural, seeded


def test_empty_sources_raise(tmp_path: Any) -> None:
    with pytest.raises(EmptyDatasetError):
        load_rows([])
    with pytest.raises(EmptyDatasetError):
        PromptDataset([])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises((EmptyDatasetError, ValueError)):
        load_rows(str(empty))
    with pytest.raises(FileNotFoundError):
        load_rows(str(tmp_path / "missing.jsonl"))


def test_template_keeps_boxed_braces_and_renders_chat(policy_tokenizer: Any) -> None:
    template = PromptTemplate("{question}\nPlease output the final answer within \\boxed{}.", system="Be brief.")
    messages = template.messages(ROWS[0])
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 1 + 1?\nPlease output the final answer within \\boxed{}."},
    ]
    plain = render_messages(messages, None)
    assert plain.endswith("within \\boxed{}.")
    chat = render_messages(messages, policy_tokenizer)
    assert chat.startswith("<|im_start|>system") and chat.endswith("<|im_start|>assistant\n")
    assert render_messages(messages, policy_tokenizer, chat_template=False) == plain
    conversational = PromptTemplate(prompt_column="prompt").messages({"prompt": [{"role": "user", "content": "hi"}]})
    assert conversational == [{"role": "user", "content": "hi"}]
    with pytest.raises(KeyError, match="no column"):
        PromptDataset([{"text": "x"}])


def test_prompt_column_is_prompt_then_question() -> None:
    trl = PromptDataset([{"prompt": "Say 7", "question": "unused", "answer": "7"}])
    assert trl.prompt_column == "prompt" and trl.messages(0) == [{"role": "user", "content": "Say 7"}]
    ours = PromptDataset(ROWS)
    assert ours.prompt_column == "question" and ours.messages(1)[0]["content"] == "What is 2 * 3?"
    explicit = PromptDataset([{"prompt": "unused", "question": "Say 7"}], prompt_column="question")
    assert explicit.messages(0)[0]["content"] == "Say 7"
    templated = PromptDataset([{"problem": "1 + 1"}], template="Solve {problem}.")  # needs no prompt column
    assert templated.messages(0)[0]["content"] == "Solve 1 + 1."


def test_conversational_rows_give_messages_to_the_policy_and_the_rewards() -> None:
    convo = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say 7"}]
    ds = PromptDataset([{"prompt": convo, "solution": "7"}, {"prompt": "Say 8", "solution": "8"}], system="ignored")
    assert ds.messages(0) == convo and ds.conversational(0) and not ds.conversational(1)
    assert ds.reward_prompt(0, "rendered") == convo and ds.reward_prompt(1, "rendered") == "rendered"
    assert ds.columns([0, 1])["solution"] == ["7", "8"]  # every other column goes to the reward functions


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text": "x"}, "has no column 'question' (neither 'prompt' nor 'question'); its columns: ['text']"),
        ({"prompt": None}, "has an empty prompt in column 'prompt': None"),
        ({"prompt": "  "}, "has an empty prompt in column 'prompt': '  '"),
        ({"prompt": []}, "has an empty prompt in column 'prompt': []"),
        ({"prompt": ["a", "b"]}, "column 'prompt' holds a list that is not chat messages"),
    ],
)
def test_a_row_without_a_prompt_is_an_error_naming_it(row: dict[str, Any], message: str) -> None:
    rows = [{"prompt": "fine"}, {"prompt": "fine"}, row] if "prompt" in row else [{"question": "q"}] * 3 + [row]
    with pytest.raises(DatasetRowError) as info:
        PromptDataset(rows, name="train")
    index = len(rows) - 1
    assert str(info.value).startswith(f"Row {index} (counting from 0) of the dataset 'train'")
    assert message in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, KeyError)


def test_jsonl_errors_name_the_file_and_the_line(tmp_path: Any) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": "a", "answer": "1"}\n\n{"prompt": "b", "answer": "2"}\n{"prompt": "c", answer: 3}\n')
    with pytest.raises(DatasetFileError) as info:
        load_rows(str(path))
    assert (
        str(info.value)
        == f"{path}, line 4: not valid JSON (Expecting property name enclosed in double quotes at column 17)"
    )
    assert info.value.__suppress_context__  # one line, not the JSON parser's traceback
    path.write_text('{"prompt": "a"}\n[1, 2]\n')
    with pytest.raises(DatasetFileError, match=r"line 2: expected a JSON object \(one row\), got a list"):
        load_rows(str(path))
    path.write_text('{"prompt": "a", "answer": "1"}\n\n{"answer": "2"}\n')  # blank lines are skipped
    assert load_rows(str(path)) == [{"prompt": "a", "answer": "1"}, {"answer": "2"}]
    with pytest.raises(DatasetRowError, match=r"Row 1 .* has no column 'prompt'"):
        PromptDataset.from_source(str(path))


def test_sampler_epochs_and_state() -> None:
    a = PromptSampler(5, seed=3)
    first = a.next(7)
    assert sorted(first[:5]) == list(range(5))  # one full epoch before repeating
    state = a.state_dict()
    b = PromptSampler(5, seed=3)
    b.load_state_dict(state)
    assert a.next(9) == b.next(9)
    with pytest.raises(ValueError, match="prompts"):
        PromptSampler(6, seed=3).load_state_dict(state)


def test_dataset_columns_for_trl_rewards() -> None:
    ds = PromptDataset([{"question": "q", "answer": "1", "level": 3}, {"question": "r", "answer": "2"}])
    assert ds.columns([0, 1]) == {"question": ["q", "r"], "answer": ["1", "2"], "level": [3, None]}


# ---------------------------------------------------------------------------------------------------------
# verifiers
# ---------------------------------------------------------------------------------------------------------


def test_boxed_math_verifier() -> None:
    v = BoxedMathVerifier()
    row = {"answer": "\\frac{1}{2}"}
    assert v.score("", "so the answer is \\boxed{0.5}", row).reward == 1.0
    assert v.score("", "\\boxed{1/2}", row).correct
    assert v.score("", "\\boxed{3}", row).reward == 0.0
    no_box = v.score("", "The answer is $\\frac12$", row)
    assert no_box.reward == 0.0 and no_box.failure == "no_answer"
    assert v.score("", "garbage \\boxed{", row).failure == "no_answer"
    assert v(["p", "p"], ["\\boxed{2}", "\\boxed{5}"], answer=["2", "2"]) == [1.0, 0.0]  # TRL signature
    assert extract_boxed("a \\boxed{x^{2}} b \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"


def test_boxed_math_off_the_main_thread() -> None:
    # math-verify's signal timeouts only work in the main thread; the verifier must still work elsewhere
    runner = RewardRunner(BoxedMathVerifier(), timeout_s=5.0)
    out: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: out.update(r=runner.score(["p"], ["\\boxed{4}"], [{"answer": "4"}])))
    worker.start()
    worker.join(30)
    assert out["r"].rewards == [1.0] and out["r"].stats.failures == 0


def test_exact_match_modes() -> None:
    row = {"answer": "7"}
    assert ExactMatchVerifier().score("", " 7 \n", row).reward == 1.0
    assert ExactMatchVerifier(mode="prefix").score("", "7abc", row).reward == 1.0
    assert ExactMatchVerifier(mode="prefix").score("", "a7", row).reward == 0.0
    assert ExactMatchVerifier(mode="contains").score("", "it is 7.", row).reward == 1.0
    assert ExactMatchVerifier(mode="boxed").score("", "\\boxed{7}", row).reward == 1.0
    assert ExactMatchVerifier(mode="answer_tag").score("", "<answer>7</answer>", row).reward == 1.0
    assert ExactMatchVerifier(mode="regex", pattern=r"= (\d+)").score("", "x = 3, y = 7", row).reward == 1.0
    assert ExactMatchVerifier(mode="prefix").score("", "   ", row).failure == "no_answer"
    with pytest.raises(ValueError, match="mode"):
        ExactMatchVerifier(mode="fuzzy")


def test_reasoning_gym_scorer() -> None:
    rows = load_rows({"reasoning_gym": "basic_arithmetic", "size": 3, "seed": 0})
    v = ReasoningGymVerifier()
    for row in rows:
        assert v.score("", f"thinking... <answer>{row['answer']}</answer>", row).reward == 1.0
        assert v.score("", "<answer>nonsense</answer>", row).reward == 0.0
        assert v.score("", "no tags", row).failure == "no_answer"
    assert ReasoningGymVerifier(extract="raw").score("", str(rows[0]["answer"]), rows[0]).reward == 1.0


class _Sleepy(Verifier):
    name = "sleepy"

    def score(self, prompt: str, completion: str, row: Any) -> VerifierResult:
        time.sleep(2.0 if completion == "slow" else 0.0)
        return VerifierResult(1.0, completion, True)


def test_runner_counts_failures_and_raises_above_the_rate() -> None:
    def flaky(prompts: list[str], completions: list[str], **kw: Any) -> list[float | None]:
        table = {"boom": RuntimeError, "nan": float("nan"), "skip": None, "text": "not a number"}
        if "boom" in completions:
            raise RuntimeError("verifier crashed")
        return [table.get(c, 0.5) for c in completions]  # type: ignore[misc]

    def uses_columns(prompts: list[str], completions: list[str], answer: list[str], **kw: Any) -> list[float]:
        assert "prompt" not in kw and kw["level"] == [3]
        return [float(completions[0] == answer[0])]

    with pytest.warns(RewardFailureWarning, match="'uses_columns' runs in this process"):
        columns = RewardRunner(uses_columns)
    assert columns.score(["p"], ["7"], [{"answer": "7", "prompt": "p", "level": 3}]).rewards == [1.0]

    runner = RewardRunner(flaky, timeout_s=None, workers=0)
    with pytest.warns(RewardFailureWarning, match=r"'flaky' failed on 2 of 5 samples \(2 invalid values\)"):
        out = runner.score(["p"] * 5, ["ok", "ok", "nan", "skip", "text"], [{}] * 5)
    assert out.rewards == [0.5, 0.5, 0.0, 0.0, 0.0]
    assert out.failures == [None, None, "invalid", "none", "invalid"]
    assert out.stats.invalid == 2 and out.stats.none == 1 and out.stats.failures == 2
    assert out.stats.last_error == "flaky: ValueError: returned nan for sample 2"  # the first failure, named
    with pytest.raises(RewardFunctionError, match=r"'flaky' failed on 2 of 2 samples .*verifier crashed"):
        runner.score(["p"] * 2, ["ok", "boom"], [{}] * 2)  # a call that raises fails its whole batch

    slow = RewardRunner(_Sleepy(), timeout_s=0.2, workers=0, max_failure_rate=1.0)
    t0 = time.perf_counter()
    with pytest.warns(RewardFailureWarning, match="2 timed out"):
        res = slow.score(["p", "p"], ["slow", "fast"], [{}, {}])
    assert time.perf_counter() - t0 < 1.5  # one timeout per call, not one per sample
    assert res.rewards == [0.0, 0.0] and res.failures == ["timeout", "timeout"] and res.stats.timeouts == 2


def test_runner_weights_and_make_reward() -> None:
    with pytest.warns(RewardFailureWarning, match="'<lambda>' runs in this process"):
        runner = RewardRunner(
            [ExactMatchVerifier(), lambda prompts, completions, **kw: [0.25] * len(prompts)], weights=[1.0, 2.0]
        )
    out = runner.score(["p"], ["7"], [{"answer": "7"}])
    assert out.rewards == [1.5] and out.success == [True]
    assert isinstance(make_reward("boxed_math"), BoxedMathVerifier)
    assert isinstance(make_reward("exact_match", mode="prefix"), ExactMatchVerifier)
    assert isinstance(make_reward(lambda prompts, completions, **kw: [1.0]), FunctionReward)
    with pytest.raises(ValueError, match="Unknown reward"):
        make_reward("bleu")


# ---------------------------------------------------------------------------------------------------------
# PromptEnv
# ---------------------------------------------------------------------------------------------------------


def test_prompt_env_one_step_episode(policy_tokenizer: Any) -> None:
    pytest.importorskip("gymnasium")
    from sppo_rl.llm.env import PromptEnv

    env = PromptEnv(ROWS, reward=ExactMatchVerifier(), tokenizer=policy_tokenizer)
    obs, info = env.reset(seed=0, options={"index": 1})
    assert obs.startswith("<|im_start|>user") and "2 * 3" in obs
    assert info["row"] == ROWS[1] and info["index"] == 1
    assert env.observation_space.contains(obs)
    _, reward, terminated, truncated, info = env.step("6")
    assert (reward, terminated, truncated, info["is_success"], info["parsed_answer"]) == (1.0, True, False, True, "6")
    with pytest.raises(RuntimeError, match="reset"):
        env.step("6")
    env.reset(options={"index": 0})
    _, reward, _, _, info = env.step("no idea")
    assert reward == 0.0 and not info["is_success"]
    plain = PromptEnv(ROWS, reward="exact_match")
    assert plain.reset(options={"index": 0})[0] == "What is 1 + 1?"
