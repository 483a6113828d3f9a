"""Studies shared by processes: a killed study resumes with its finished trials; two processes on one SQLite
storage run exactly the requested number of trials together."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
from optuna.trial import TrialState


def load(storage: str, name: str = "sppo-LineTarget-v0") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def wait_until(predicate, timeout: float, process=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended early: {process.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.2)


def complete_trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return load(storage).get_trials(states=(TrialState.COMPLETE,))
    except KeyError:  # the study does not exist yet
        return []


def test_killed_study_resumes_with_its_finished_trials(zoo, fast_tune, subprocesses, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    argv = ["tune", "--storage", storage, "--heartbeat-interval", "1", "--pruner", "none",
            *fast_tune, "-n", "800"]  # fmt: skip
    # far more trials than it can finish before the kill (a trial takes a fraction of a second; on an idle machine
    # a 6-trial study could end between two polls)
    process = subprocesses.start([*argv, "--n-trials", "60"], cwd=tmp_path)
    try:
        wait_until(lambda: len(complete_trials(storage)) >= 2, timeout=180, process=process)
    finally:
        process.kill()  # SIGKILL: no chance to clean up, a running trial stays RUNNING
        process.wait()
    before = {t.number: (t.value, t.params) for t in complete_trials(storage)}
    assert 2 <= len(before) < 60

    total = len(before) + 2
    result = zoo([*argv, "--n-trials", str(total)])  # resume in this process
    assert result.code == 0, result.err
    trials = load(storage).trials
    after = {t.number: (t.value, t.params) for t in trials if t.state == TrialState.COMPLETE}
    assert {n: after[n] for n in before} == before  # the finished trials are still there, unchanged
    assert len(after) == total  # the total reaches the requested count
    assert all(t.state != TrialState.RUNNING for t in trials)
    # a trial killed while running was failed by the stale-trial check (no fail_kind) and not counted
    for trial in trials:
        if trial.state == TrialState.FAIL:
            assert "fail_kind" not in trial.user_attrs


def test_two_processes_share_one_sqlite_study(subprocesses, fast_tune, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    n = 20  # enough trials that both processes get some even if one starts seconds after the other
    argv = ["tune", "--n-trials", str(n), "--storage", storage, "--heartbeat-interval", "2", "--sampler", "random",
            "--pruner", "none", *fast_tune, "-n", "800"]  # fmt: skip
    processes = [subprocesses.start(argv, cwd=tmp_path) for _ in range(2)]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    trials = load(storage).trials
    assert len(trials) == n  # no lost and no extra trial
    assert sorted(t.number for t in trials) == list(range(n))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2  # both processes ran trials
