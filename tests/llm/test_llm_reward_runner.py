"""Reward functions as TRL calls them: batch signature, conversational and async functions, weights and the outcome
the critic learns, loud failures, and worker processes killed at a per-call timeout."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from typing import Any

import psutil
import pytest
import torch
from sppo_rl.llm.loading import build_rewards
from sppo_rl.llm.reward_functions import RewardCall, reward_kwargs
from sppo_rl.llm.reward_workers import RemoteTraceback
from sppo_rl.llm.rewards import (
    BoxedMathVerifier,
    ExactMatchVerifier,
    RewardFailureWarning,
    RewardFunctionError,
    RewardOutputError,
    RewardRunner,
    RewardTimeoutError,
)
from sppo_rl.llm.run_config import RunConfig

from sppo_rl.value_heads import BernoulliValueHead, GaussianValueHead, OutcomeError
from tests.llm import reward_helpers as rh

CONVO = [{"role": "user", "content": "Repeat: 7"}]


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


# ---------------------------------------------------------------------------------------------------------
# TRL's calling convention
# ---------------------------------------------------------------------------------------------------------


def test_trl_keyword_arguments() -> None:
    call = RewardCall(
        ["p0", "p1"],
        ["c0", "c1"],
        [[1, 2], [3]],
        [{"prompt": "p0", "answer": "7", "level": 3}, {"prompt": "p1", "answer": "8", "question": "q"}],
    )
    kwargs = reward_kwargs(call)
    assert sorted(kwargs) == ["answer", "completion_ids", "completions", "level", "prompts", "question"]
    assert kwargs["answer"] == ["7", "8"] and kwargs["level"] == [3, None] and kwargs["question"] == [None, "q"]
    assert kwargs["completion_ids"] == [[1, 2], [3]]


def test_conversational_dataset_gives_conversational_completions() -> None:
    seen: dict[str, Any] = {}

    def record(prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], **kw: Any) -> list[float]:
        seen.update(prompts=prompts, completions=completions, ids=completion_ids)
        return [1.0] * len(completions)

    with pytest.warns(RewardFailureWarning, match="'record' runs in this process"):
        runner = RewardRunner(record)
    runner.score([CONVO, "plain"], ["7", "8"], [{}, {}], completion_ids=[[5], [6, 7]])
    assert seen["prompts"] == [CONVO, "plain"]
    assert seen["completions"] == [[{"role": "assistant", "content": "7"}], "8"]
    assert seen["ids"] == [[5], [6, 7]]
    with RewardRunner(rh.accuracy_reward) as trl_style:  # reads completion[0]["content"], in a worker
        out = trl_style.score([CONVO] * 2, ["7 is it", "3"], [{"solution": "7"}] * 2)
        assert out.outcomes == [1.0, 0.0] and out.per_function == {"accuracy_reward": [1.0, 0.0]}
        assert len(trl_style.worker_pids) == 4


def test_async_functions_are_awaited_in_workers_and_in_process() -> None:
    async def closure(completions: list[str], **kw: Any) -> list[float]:
        return [0.25] * len(completions)

    with pytest.warns(RewardFailureWarning):
        runner = RewardRunner([rh.async_digit_reward, closure], outcome=1.0)
    with runner:
        out = runner.score(["p"] * 3, ["7", "1", "7x"], [{"answer": "7"}] * 3)
    assert out.per_function == {"async_digit_reward": [1.0, 0.0, 1.0], "closure": [0.25, 0.25, 0.25]}
    assert out.rewards == [1.25, 0.25, 1.25] and out.outcomes == [1.0, 0.0, 1.0]


def test_weights_none_and_per_function_metrics() -> None:
    def sometimes(completions: list[str], **kw: Any) -> list[float | None]:
        return [None if c == "skip" else 0.5 for c in completions]

    runner = RewardRunner([rh.digit_reward, sometimes], weights=[2.0, -1.0], workers=0)  # in-process: no warning
    out = runner.score(["p"] * 4, ["7", "skip", "1", "7"], [{"answer": "7", "skip": "7"}] * 4)
    assert out.rewards == [1.5, 0.0, -0.5, 1.5]  # None is left out of the weighted sum, as in TRL
    assert out.per_function["sometimes"] == [0.5, None, 0.5, 0.5]
    metrics = out.metrics()
    assert metrics["rewards/digit_reward/mean"] == 0.5
    assert metrics["rewards/digit_reward/std"] == pytest.approx(math.sqrt(1 / 3))  # unbiased, as TRL's nanstd
    assert metrics["rewards/sometimes/mean"] == 0.5 and metrics["rewards/sometimes/std"] == 0.0  # 3 values
    assert metrics["rollout/reward_failures"] == 0.0
    assert out.success == [True, False, False, True]  # outcome (the sum) >= 1


def test_outcome_a_name_or_a_threshold() -> None:
    rows = [{"answer": "7"}] * 3
    completions = ["7", "1", "x"]
    named = RewardRunner([rh.digit_reward, rh.format_reward], outcome="format_reward")
    threshold = RewardRunner([rh.digit_reward, rh.format_reward], weights=[1.0, 0.5], outcome=1.5)
    with named, threshold:
        a = named.score(["p"] * 3, completions, rows)
        b = threshold.score(["p"] * 3, completions, rows)
    assert a.outcomes == [1.0, 1.0, 0.0] and a.rewards == [2.0, 1.0, 0.0]
    assert b.outcomes == [1.0, 0.0, 0.0] and b.success == [True, False, False]
    with pytest.raises(ValueError, match="outcome 'digits' is not a reward's name"):
        RewardRunner([rh.digit_reward], outcome="digits")


def test_the_critic_check_lists_the_choices_when_the_trainer_is_built() -> None:
    bernoulli, gaussian = BernoulliValueHead(4), GaussianValueHead(4)
    pair = RewardRunner([rh.accuracy_reward, rh.format_reward])
    with pytest.raises(OutcomeError) as info:
        pair.check_critic(bernoulli)
    message = str(info.value)
    assert "'accuracy_reward', 'format_reward'" in message and "threshold t such as 1.0" in message
    assert "value_head: gaussian" in message
    pair.check_critic(gaussian)  # real-valued outcomes are fine there
    RewardRunner([rh.accuracy_reward, rh.format_reward], outcome="accuracy_reward").check_critic(bernoulli)
    RewardRunner([rh.accuracy_reward, rh.format_reward], outcome=1.0).check_critic(bernoulli)
    both_declared = RewardRunner([rh.accuracy_reward, rh.digit_reward])
    with pytest.raises(OutcomeError, match=r"ranges over \[0, 2\]"):
        both_declared.check_critic(bernoulli)
    RewardRunner([rh.accuracy_reward, rh.digit_reward], weights=[0.5, 0.5]).check_critic(bernoulli)  # in [0, 1]
    with pytest.raises(OutcomeError, match=r"reward function 'boxed_math', which ranges over \[0, 2\]"):
        RewardRunner(BoxedMathVerifier(), weights=[2.0]).check_critic(bernoulli)

    # one function without a declared range: checked on every batch, naming the function and the value
    single = RewardRunner(rh.length_reward, workers=0)
    single.check_critic(bernoulli)
    with pytest.raises(OutcomeError, match=r"Reward function 'length_reward' gave an outcome .* got -2 for sequence"):
        single.check_outcomes(torch.tensor([0.0, -2.0]), bernoulli)


def test_built_in_verifiers_keep_parsed_answers_and_verdicts() -> None:
    with RewardRunner(BoxedMathVerifier(), timeout_s=20.0) as runner:
        out = runner.score(["p"] * 3, ["\\boxed{1/2}", "\\boxed{3}", "no box"], [{"answer": "\\frac{1}{2}"}] * 3)
        assert len(runner.worker_pids) == 4  # math-verify runs in the worker processes
    assert out.outcomes == [1.0, 0.0, 0.0] and out.success == [True, False, False]
    assert out.parsed[0] is not None and out.parsed[2] is None
    assert out.failures == [None, None, "no_answer"] and out.stats.no_answer == 1
    exact = RewardRunner(ExactMatchVerifier(mode="prefix"))
    assert exact.score(["p"], ["7 a"], [{"answer": "7"}]).parsed == ["7"]
    assert exact.worker_pids == []  # cheap: scored in this process


# ---------------------------------------------------------------------------------------------------------
# Loud failures
# ---------------------------------------------------------------------------------------------------------


def test_a_function_that_raises_stops_training_with_its_own_error() -> None:
    with RewardRunner(rh.flaky, workers=2) as runner, pytest.raises(RewardFunctionError) as info:
        runner.score(["p"] * 4, ["boom"] * 4, [{}] * 4)
    assert str(info.value) == (
        "reward function 'flaky' failed on 4 of 4 samples (4 raised), more than max_failure_rate=0.5: "
        "KeyError: 'content'"
    )
    cause = info.value.__cause__
    assert isinstance(cause, KeyError)  # the function's own error, chained
    assert isinstance(cause.__cause__, RemoteTraceback) and 'raise KeyError("content")' in str(cause.__cause__)


def test_a_minority_of_failures_warns_and_scores_zero() -> None:
    with RewardRunner(rh.flaky, workers=2) as runner:
        with pytest.warns(RewardFailureWarning, match=r"'flaky' failed on 2 of 5 samples \(2 invalid values\)"):
            out = runner.score(["p"] * 5, ["ok", "nan", "skip", "text", "ok"], [{}] * 5)
        assert out.per_function["flaky"] == [0.5, 0.0, None, 0.0, 0.5]
        assert out.failures == [None, "invalid", "none", "invalid", None]
        assert out.stats.invalid == 2 and out.stats.none == 1 and out.metrics()["rollout/reward_failures"] == 2.0
        with pytest.raises(RewardFunctionError, match="3 of 5 samples"):
            runner.score(["p"] * 5, ["ok", "nan", "text", "nan", "skip"], [{}] * 5)
    strict = RewardRunner(rh.flaky, workers=0, max_failure_rate=0.0)  # as TRL: any failure raises
    with pytest.raises(RewardFunctionError, match=r"1 of 2 samples \(1 invalid values\).*ValueError: returned nan"):
        strict.score(["p"] * 2, ["ok", "nan"], [{}] * 2)


@pytest.mark.parametrize("fn", [rh.wrong_length, rh.scalar])
def test_a_broken_contract_always_raises(fn: Any) -> None:
    with RewardRunner(fn, workers=1, max_failure_rate=1.0) as runner, pytest.raises(RewardOutputError) as info:
        runner.score(["p"] * 3, ["a", "b", "c"], [{}] * 3)
    expected = "returned 4 rewards for 3 completions" if fn is rh.wrong_length else "returned 1.0; a reward function"
    assert f"reward function '{fn.__name__}' {expected}" in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# Worker processes and timeouts
# ---------------------------------------------------------------------------------------------------------


def test_a_hanging_reward_is_killed_at_its_timeout() -> None:
    children, threads = _children(), set(threading.enumerate())
    runner = RewardRunner(rh.hang_on, timeout_s=1.0, workers=4)
    runner.score(["p"] * 4, ["ok"] * 4, [{}] * 4)  # the pool starts with the run's first batch
    stuck = runner.worker_pids
    t0 = time.perf_counter()
    with pytest.raises(RewardFunctionError, match=r"'hang_on' failed on 64 of 64 samples \(64 timed out\)") as info:
        runner.score(["p"] * 64, ["hang"] * 64, [{}] * 64)
    elapsed = time.perf_counter() - t0
    print(f"64 hanging samples, 1 s timeout: {elapsed:.2f} s of scoring")
    assert elapsed < 3.0
    assert isinstance(info.value.__cause__, RewardTimeoutError)
    assert "did not return within 1 s on 16 samples (its worker process was stopped)" in str(info.value)
    assert not any(psutil.pid_exists(pid) for pid in stuck)  # killed and reaped
    assert set(threading.enumerate()) == threads  # no thread left behind
    runner.close()
    assert _children() == children  # no process left behind


def test_a_minority_of_hanging_samples_costs_one_timeout() -> None:
    with RewardRunner(rh.hang_on, timeout_s=1.0, workers=4) as runner:
        runner.score(["p"] * 4, ["ok"] * 4, [{}] * 4)
        t0 = time.perf_counter()
        with pytest.warns(RewardFailureWarning, match=r"failed on 16 of 64 samples \(16 timed out\)"):
            out = runner.score(["p"] * 64, ["hang"] + ["ok"] * 63, [{}] * 64)
        assert time.perf_counter() - t0 < 3.0
        assert out.outcomes == [0.0] * 16 + [1.0] * 48  # the stuck call's slice scores 0, the others are kept
        assert out.failures[:16] == ["timeout"] * 16 and out.stats.timeouts == 16


def test_the_pool_lives_for_the_run_and_is_closed() -> None:
    children = _children()
    runner = RewardRunner(rh.worker_facts, workers=2)
    first = runner.score(["p"] * 4, ["a"] * 4, [{}] * 4).outcomes
    second = runner.score(["p"] * 2, ["a"] * 2, [{}] * 2).outcomes
    pids = set(runner.worker_pids)
    assert len(pids) == 2 and set(first) | set(second) <= pids  # the same processes, called in their main thread
    runner.close()
    assert runner.worker_pids == [] and _children() == children
    third = runner.score(["p"] * 2, ["a"] * 2, [{}] * 2).outcomes  # a later batch starts a new pool
    assert set(third).isdisjoint(pids)
    del runner  # garbage collection stops the workers too
    assert _children() == children


def test_workers_import_only_what_scoring_needs() -> None:
    with RewardRunner([rh.torch_imported, rh.PreloadProbe()], outcome="torch_imported", workers=2) as runner:
        out = runner.score(["p"] * 2, ["a", "b"], [{}] * 2)
    assert out.per_function == {"torch_imported": [0.0, 0.0], "preload_probe": [1.0, 1.0]}
    assert RewardRunner(rh.PreloadProbe(), workers=0).score(["p"], ["a"], [{}]).outcomes == [0.0]  # in-process


def test_functions_that_cannot_go_to_a_worker_run_in_process(tmp_path: Any, monkeypatch: Any) -> None:
    def closure(completions: list[str], **kw: Any) -> list[float]:
        time.sleep(5 if "slow" in completions else 0)
        return [1.0] * len(completions)

    with pytest.warns(RewardFailureWarning, match="'closure' runs in this process.*a lambda, a closure"):
        runner = RewardRunner(closure, timeout_s=0.3, max_failure_rate=1.0)
    with pytest.warns(RewardFailureWarning, match="1 timed out"):
        assert runner.score(["p"], ["slow"], [{}]).failures == ["timeout"]
    assert runner.worker_pids == []

    # a module that a worker cannot import (its folder left the import path): scored in this process instead
    (tmp_path / "local_rewards.py").write_text(
        "import os\n\ndef pid(completions, **kw):\n    return [float(os.getpid())] * len(completions)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import local_rewards  # type: ignore[import-not-found]

    moved = RewardRunner(local_rewards.pid, workers=1)
    sys.path.remove(str(tmp_path))
    with pytest.warns(RewardFailureWarning, match="'pid' runs in this process.*could not load it"):
        out = moved.score(["p"], ["x"], [{}])
    assert out.outcomes == [float(os.getpid())] and moved.worker_pids == []


# ---------------------------------------------------------------------------------------------------------
# The YAML section
# ---------------------------------------------------------------------------------------------------------


def test_reward_section_with_several_functions(tmp_path: Any, monkeypatch: Any) -> None:
    (tmp_path / "my_rewards.py").write_text(
        "def length(completions, target=3, **kw):\n    return [-abs(len(c) - target) for c in completions]\n"
    )
    monkeypatch.chdir(tmp_path)  # module:function imports from the working folder
    cfg = RunConfig.from_dict(
        {
            "reward": {
                "name": ["exact_match", "my_rewards:length"],
                "weights": [1.0, 0.1],
                "outcome": "exact_match",
                "options": {"exact_match": {"mode": "prefix"}, "my_rewards:length": {"target": 2}},
                "timeout_s": 5,
                "workers": 1,
                "max_failure_rate": 0.25,
            }
        }
    )
    with build_rewards(cfg.reward, answer_column="solution") as runner:
        assert runner.names == ["exact_match", "length"] and runner.weights == [1.0, 0.1]
        assert runner.outcome == "exact_match" and runner.max_failure_rate == 0.25 and runner.timeout_s == 5
        out = runner.score(["p"] * 2, ["7xx", "1"], [{"solution": "7"}] * 2)
    assert out.per_function == {"exact_match": [1.0, 0.0], "length": [-1.0, -1.0]}
    assert out.outcomes == [1.0, 0.0] and out.rewards == pytest.approx([0.9, -0.1])
    bad = RunConfig.from_dict({"reward": {"name": ["exact_match", "boxed_math"], "options": {"mode": "prefix"}}})
    with pytest.raises(ValueError, match="with several rewards, options maps a reward's name to its options"):
        build_rewards(bad.reward)
    with pytest.raises(ImportError, match=r"cannot import 'nowhere'.*working folder"):
        build_rewards(RunConfig.from_dict({"reward": {"name": "nowhere:f"}}).reward)


# ---------------------------------------------------------------------------------------------------------
# In the trainer
# ---------------------------------------------------------------------------------------------------------

TRAIN_OPTS: dict[str, Any] = {"prompts_per_step": 4, "micro_batch_size": 4, "chat_template": False, "verbose": 0}


def test_trainer_with_trl_rewards_on_a_conversational_dataset(make_policy: Any) -> None:
    from sppo_rl.llm.config import GenerationSettings
    from sppo_rl.llm.trainer import SPPOTrainer

    rows = [{"prompt": [{"role": "user", "content": f"Repeat: {d}"}], "solution": str(d)} for d in range(8)]
    opts = {**TRAIN_OPTS, "generation": GenerationSettings(temperature=1.0, max_new_tokens=3)}
    with pytest.raises(OutcomeError, match=r"'accuracy_reward', 'format_reward'.*threshold"):
        SPPOTrainer(make_policy(), rows, [rh.accuracy_reward, rh.format_reward], critic="shared", **opts)

    rewards = RewardRunner([rh.accuracy_reward, rh.format_reward], weights=[1.0, 0.5], outcome="accuracy_reward")
    trainer = SPPOTrainer(make_policy(), rows, rewards, critic="shared", **opts)
    metrics = trainer.learn(n_iterations=1).history[-1]
    batch = trainer.last_batch
    assert batch is not None
    accuracy = [float(x or 0.0) for x in batch.scored.per_function["accuracy_reward"]]
    fmt = [float(x or 0.0) for x in batch.scored.per_function["format_reward"]]
    assert batch.outcomes.tolist() == accuracy  # the critic learns the named reward
    assert batch.scored.rewards == [a + 0.5 * f for a, f in zip(accuracy, fmt, strict=True)]
    assert metrics["rewards/accuracy_reward/mean"] == sum(accuracy) / 4
    assert "rewards/format_reward/std" in metrics and metrics["rollout/reward_failures"] == 0.0
    rewards.close()


def test_trainer_keywords_reward_weights_and_outcome(make_policy: Any) -> None:
    """TRL's ``reward_weights`` and the critic's outcome as trainer keywords; ``close()`` stops the workers."""
    from sppo_rl.llm.config import GenerationSettings
    from sppo_rl.llm.trainer import SPPOTrainer

    rows = [{"prompt": [{"role": "user", "content": f"Repeat: {d}"}], "solution": str(d)} for d in range(8)]
    opts = {**TRAIN_OPTS, "generation": GenerationSettings(temperature=1.0, max_new_tokens=3)}
    funcs = [rh.accuracy_reward, rh.format_reward]
    trainer = SPPOTrainer(
        make_policy(), rows, funcs, critic="shared", reward_weights=[1.0, 0.5], reward_outcome="accuracy_reward", **opts
    )
    assert trainer.rewards.weights == [1.0, 0.5] and trainer.rewards.outcome == "accuracy_reward"
    trainer.learn(n_iterations=1)
    assert trainer.last_batch is not None
    assert trainer.last_batch.outcomes.tolist() == [
        float(x or 0.0) for x in trainer.last_batch.scored.per_function["accuracy_reward"]
    ]
    trainer.close()
    assert trainer.rewards.worker_pids == []
    with pytest.raises(ValueError, match="set them on the RewardRunner given as reward"):
        SPPOTrainer(
            make_policy(), rows, RewardRunner(funcs, outcome=0.5), critic="shared", reward_weights=[1, 1], **opts
        )
