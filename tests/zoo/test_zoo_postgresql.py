"""Studies on a real PostgreSQL server (a throwaway cluster, fixture ``postgresql_url``): the trial-budget lock of
the server, and three ``sppo-zoo tune`` processes on one study, one of them killed with SIGKILL in mid-trial."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from sppo_rl.zoo.storage import open_storage


def test_the_budget_lock_of_a_study_is_held_across_connections(postgresql_url: str) -> None:
    """Storages with engines of their own (as processes have): one waits for another's lock on the same study,
    not on another study's."""
    first, second, third = (open_storage(postgresql_url) for _ in range(3))
    entered_same, entered_other = threading.Event(), threading.Event()

    def take(storage, name: str, entered: threading.Event) -> None:
        with storage.budget_lock(name):
            entered.set()

    with first.budget_lock("study-a"):
        same = threading.Thread(target=take, args=(second, "study-a", entered_same))
        other = threading.Thread(target=take, args=(third, "study-b", entered_other))
        same.start()
        other.start()
        assert entered_other.wait(10)  # another study's lock is free
        assert not entered_same.wait(1.0)  # this study's lock is not
    assert entered_same.wait(10)  # released with the first transaction
    same.join(10)
    other.join(10)


def _wait_for(predicate: Callable[[], object], timeout: float, processes: list[subprocess.Popen[str]]) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"a tune process ended early: {process.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def _kill_in_mid_trial(process: subprocess.Popen[str], study: optuna.Study, others: list) -> FrozenTrial:
    """SIGKILL ``process`` while it runs a trial; return that trial as it was when the process died.

    The process is stopped (SIGSTOP) first and the trial checked to be still running, so it cannot finish the
    trial between the check and the kill.
    """
    worker_suffix = f":{process.pid}"

    def running_trial() -> FrozenTrial | None:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if str(trial.user_attrs.get("worker", "")).endswith(worker_suffix):
                return trial
        return None

    while True:
        _wait_for(running_trial, timeout=120, processes=[process, *others])
        os.kill(process.pid, signal.SIGSTOP)
        trial = running_trial()
        if trial is not None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            return trial
        os.kill(process.pid, signal.SIGCONT)  # it finished that trial in between: wait for its next one


def test_three_processes_share_a_study_and_survive_a_killed_one(
    postgresql_url: str, subprocesses, fast_tune: list[str], tmp_path: Path
) -> None:
    n_trials, name = 9, "three-on-postgresql"
    url = postgresql_url.replace("postgres@", "postgres:s3cret@", 1)  # the server trusts any password
    argv = ["tune", "--n-trials", str(n_trials), "--storage", url, "--study-name", name,
            "--heartbeat-interval", "2", "--sampler-seed", "3", "--pruner", "none",
            *fast_tune, "-n", "800"]  # fmt: skip
    processes = [subprocesses.start(argv, cwd=tmp_path) for _ in range(3)]
    victim, survivors = processes[0], processes[1:]
    try:
        _wait_for(
            lambda: name in [s.study_name for s in optuna.get_all_study_summaries(postgresql_url)], 120, processes
        )
        study = optuna.load_study(study_name=name, storage=postgresql_url)
        killed = _kill_in_mid_trial(victim, study, survivors)
        for process in survivors:
            _, err = process.communicate(timeout=300)
            assert process.returncode == 0, err
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert victim.returncode == -signal.SIGKILL

    trials = optuna.load_study(study_name=name, storage=postgresql_url).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(complete) == n_trials  # the exact budget: no trial lost, none too many
    assert len(trials) == len(complete) + len(failed)  # nothing left RUNNING, nothing pruned
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    # the killed trial was failed by the heartbeat check (no fail_kind: it does not count) and replaced
    assert trials[killed.number].state == TrialState.FAIL
    assert all("fail_kind" not in t.user_attrs for t in failed)
    assert len(failed) == 1  # only the killed process had a trial that stopped sending heartbeats
    # one sampler seed in all three processes, yet no two trials share their parameters
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)
    survivor_workers = {t.user_attrs["worker"] for t in complete} - {killed.user_attrs["worker"]}
    assert {w.rsplit(":", 1)[1] for w in survivor_workers} <= {str(p.pid) for p in survivors}
    # the password of the URL is in no output file
    outputs = tmp_path / "logs" / "sppo" / f"tune_{name}"
    summary, best = (outputs / "summary.json").read_text(), (outputs / "best_hyperparams.yml").read_text()
    assert "postgres:***@" in summary and "postgres:***@" in best
    assert "s3cret" not in summary + best + (outputs / "trials.csv").read_text()
