"""``sppo-zoo tune`` in this process: samplers, pruners, seeds, outputs, failures, resuming, ``train -optimize``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState
from sppo_rl.zoo.storage import hide_password

SPACES = '''
import math


def diverge_or_raise(trial, context):
    """Trial 0 is fine, trial 1 diverges (a learning rate of 1e38 -> non-finite parameters after the first update;
    SPPO refuses a NaN argument when the model is built), trial 2 raises when the model is built."""
    kind = ("ok", "nan", "raise")[trial.number % 3]
    trial.set_user_attr("kind", kind)
    return {"ok": {}, "nan": {"learning_rate": 1e38}, "raise": {"loss_agg_mode": "bogus"}}[kind]


def failed_by_another_process(trial, context):
    """Trial 0 is failed from outside while it runs, as another process's heartbeat check would fail it."""
    if trial.number == 0:
        from optuna.trial import TrialState

        trial.study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    return {}


def easy_then_hopeless(trial, context):
    """One-step episodes: trial 0 on a line of 2 cells (any policy often succeeds), later ones on 1000 cells."""
    return {"env_kwargs": {"size": 2 if trial.number == 0 else 1000, "horizon": 1}}
'''


@pytest.fixture
def spaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of test search spaces, importable as ``zoo_test_spaces``."""
    (tmp_path / "zoo_test_spaces.py").write_text(SPACES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "zoo_test_spaces"


def out_dir(tmp_path: Path, name: str, algo: str = "sppo") -> Path:
    return tmp_path / "logs" / algo / f"tune_{name}"


@pytest.mark.parametrize(("sampler", "pruner"), [("tpe", "median"), ("random", "halving"), ("tpe", "none")])
def test_samplers_and_pruners(zoo, fast_tune, tmp_path: Path, sampler: str, pruner: str) -> None:
    name = f"{sampler}-{pruner}"
    argv = ["tune", "--n-trials", "3", "--sampler", sampler, "--pruner", pruner, "--study-name", name, *fast_tune]
    result = zoo(argv)
    assert result.code == 0, result.err
    folder = out_dir(tmp_path, name)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["counted_trials"] == 3 and sum(summary["trials_by_state"].values()) == 3
    assert summary["objective"]["metric"] == "success_rate"
    assert len(pd.read_csv(folder / "trials.csv")) == 3
    complete = summary["trials_by_state"].get("COMPLETE", 0)
    if complete:
        assert (folder / "optimization_history.png").stat().st_size > 0
        best = yaml.safe_load((folder / "best_hyperparams.yml").read_text())
        assert set(best) == {"LineTarget-v0"} and best["LineTarget-v0"]["n_timesteps"] == 400
    if complete >= 2:
        assert (folder / "param_importances.png").stat().st_size > 0


def test_best_entry_trains_with_conf_and_train_optimize_is_tune(zoo, fast_tune, tmp_path: Path) -> None:
    result = zoo(["train", "-optimize", "--n-trials", "2", "--pruner", "none", *fast_tune])
    assert result.code == 0, result.err
    best = out_dir(tmp_path, "sppo-LineTarget-v0") / "best_hyperparams.yml"
    text = best.read_text()
    assert text.startswith("# tuned with: sppo-zoo train -optimize")
    assert "objective: the success rate (4 deterministic episodes per seed after 400 steps" in text
    result = zoo(["train", "--algo", "sppo", "--env", "LineTarget-v0", "-conf", str(best), "--eval-freq", "-1",
                  "--verbose", "0"])  # fmt: skip
    assert result.code == 0, result.err
    config = yaml.safe_load((tmp_path / "logs/sppo/LineTarget-v0_1/LineTarget-v0/config.yml").read_text())
    assert config == yaml.safe_load(text)["LineTarget-v0"]


def test_several_seeds_and_the_median(zoo, fast_tune, tmp_path: Path) -> None:
    argv = ["tune", "--n-trials", "2", "--n-seeds-per-trial", "3", "--objective", "median", "--pruner", "none",
            "--seed", "5", "--storage", "sqlite:///seeds.db", *fast_tune]  # fmt: skip
    result = zoo(argv)
    assert result.code == 0, result.err
    study = optuna.load_study(study_name="sppo-LineTarget-v0", storage="sqlite:///seeds.db")
    for trial in study.trials:
        assert trial.user_attrs["seeds"] == [5, 6, 7]
        values = sorted(trial.user_attrs["values_per_seed"])
        assert trial.value == values[1]
        assert len(trial.intermediate_values) == 2
    assert study.user_attrs["zoo_objective"]["aggregate"] == "median"
    assert "median over 3 seeds of the success rate" in study.user_attrs["zoo_objective_text"]

    # joining the study with other objective settings is refused
    result = zoo([*argv, "--n-seeds-per-trial", "2"])
    assert result.code == 2 and "was created with other settings (n_seeds=3 there, 2 here)" in result.err


def test_diverging_and_failing_trials_do_not_end_the_study(zoo, fast_tune, spaces: str, tmp_path: Path) -> None:
    argv = ["tune", "--n-trials", "3", "--pruner", "none", "--search-space", f"{spaces}:diverge_or_raise",
            "--storage", "sqlite:///div.db", *fast_tune]  # fmt: skip
    result = zoo(argv)
    assert result.code == 0, result.err
    trials = optuna.load_study(study_name="sppo-LineTarget-v0", storage="sqlite:///div.db").trials
    states = [t.state for t in trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert trials[1].user_attrs["pruned_reason"].startswith("diverged: non-finite parameter")
    assert trials[2].user_attrs["fail_kind"] == "error"
    assert "Invalid hyperparameters for sppo" in trials[2].user_attrs["fail_reason"]
    assert "bogus" in trials[2].user_attrs["fail_reason"]
    summary = json.loads((out_dir(tmp_path, "sppo-LineTarget-v0") / "summary.json").read_text())
    assert summary["best"]["number"] == 0 and summary["counted_trials"] == 3


def test_median_pruner_prunes(zoo, fast_tune, spaces: str, tmp_path: Path) -> None:
    argv = ["tune", "--n-trials", "2", "--pruner", "median", "--storage", "sqlite:///p.db", "--search-space",
            f"{spaces}:easy_then_hopeless", *fast_tune, "-n", "300", "--n-evaluations", "3", "--eval-episodes", "8",
            "--n-startup-trials", "1"]  # fmt: skip
    result = zoo(argv)
    assert result.code == 0, result.err
    trials = optuna.load_study(study_name="sppo-LineTarget-v0", storage="sqlite:///p.db").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert trials[1].user_attrs["pruned_reason"].startswith("pruned by the median pruner at evaluation 1/3")
    assert list(trials[1].intermediate_values) == [1]


def test_mean_return_is_the_metric_when_the_env_reports_no_success(zoo, tmp_path: Path) -> None:
    argv = ["tune", "--algo", "sppo", "--env", "CartPole-v1", "-n", "300", "--n-trials", "1", "--n-evaluations", "1",
            "--eval-episodes", "2", "-params", "n_episodes:4"]  # fmt: skip
    result = zoo(argv)
    assert result.code == 0, result.err
    assert "Objective (maximised): the mean return (the env reports no is_success)" in result.out
    summary = json.loads((out_dir(tmp_path, "sppo-CartPole-v1") / "summary.json").read_text())
    assert summary["objective"]["metric"] == "mean_return" and summary["best"]["value"] > 5


def test_resume_from_a_journal_file_keeps_the_trials(zoo, fast_tune, tmp_path: Path) -> None:
    argv = ["tune", "--storage", "study.log", "--pruner", "none", *fast_tune]
    assert zoo([*argv[:1], "--n-trials", "2", *argv[1:]]).code == 0
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend("study.log"))
    first = [(t.number, t.value, t.params) for t in optuna.load_study(study_name="sppo-LineTarget-v0",
                                                                        storage=storage).trials]  # fmt: skip
    assert len(first) == 2
    result = zoo([*argv[:1], "--n-trials", "3", *argv[1:]])
    assert result.code == 0, result.err
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend("study.log"))
    trials = optuna.load_study(study_name="sppo-LineTarget-v0", storage=storage).trials
    assert [(t.number, t.value, t.params) for t in trials[:2]] == first
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)


def test_too_few_trials_for_importances_is_a_message(zoo, fast_tune, tmp_path: Path) -> None:
    result = zoo(["tune", "--n-trials", "1", "--pruner", "none", *fast_tune, "--verbose", "1"])
    assert result.code == 0, result.err
    assert "param_importances: skipped: parameter importances need at least 2 complete trials" in result.out
    folder = out_dir(tmp_path, "sppo-LineTarget-v0")
    assert (folder / "optimization_history.png").is_file() and not (folder / "param_importances.png").exists()


def test_parallel_jobs_respect_the_budget(zoo, fast_tune, tmp_path: Path) -> None:
    result = zoo(["tune", "--n-trials", "4", "--n-jobs", "2", "--pruner", "none", "--storage", "sqlite:///jobs.db",
                  *fast_tune])  # fmt: skip
    assert result.code == 0, result.err
    trials = optuna.load_study(study_name="sppo-LineTarget-v0", storage="sqlite:///jobs.db").trials
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)


@pytest.mark.parametrize(
    ("scheme", "module", "package"),
    [("postgresql+psycopg", "psycopg", '"psycopg[binary]"'), ("postgresql+psycopg2", "psycopg2", "psycopg2-binary")],
)
def test_postgresql_without_its_driver_is_one_line(
    zoo, monkeypatch: pytest.MonkeyPatch, scheme: str, module: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it raises ImportError
    url = f"{scheme}://u:secret@localhost/db"
    result = zoo(["tune", "--algo", "sppo", "--env", "LineTarget-v0", "--storage", url])
    assert result.code == 2
    assert result.err.strip() == (
        f"sppo-zoo: error: --storage '{scheme}://u:***@localhost/db' needs the Python module {module} "
        f"(pip install {package}), which is not installed"
    )


@pytest.mark.parametrize("storage", ["sqlite:///resume.db", "resume.log"])
def test_resuming_with_the_same_sampler_seed_does_not_repeat_finished_trials(
    zoo, fast_tune, tmp_path: Path, storage: str
) -> None:
    # six random start-up trials: before, the resumed run replayed the first three trials' parameters
    argv = ["tune", "--storage", storage, "--sampler-seed", "7", "--pruner", "none", *fast_tune,
            "--n-startup-trials", "6"]  # fmt: skip
    assert zoo([*argv, "--n-trials", "3"]).code == 0

    def trials() -> list[optuna.trial.FrozenTrial]:
        opened = storage
        if storage.endswith(".log"):
            opened = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
        return optuna.load_study(study_name="sppo-LineTarget-v0", storage=opened).trials

    first = [t.params for t in trials()]
    result = zoo([*argv, "--n-trials", "6"])
    assert result.code == 0, result.err
    resumed = trials()
    assert [t.state for t in resumed] == [TrialState.COMPLETE] * 6
    assert [t.params for t in resumed[:3]] == first
    assert len({t.params["learning_rate"] for t in resumed}) == 6
    assert len({tuple(sorted(t.params.items())) for t in resumed}) == 6


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql+psycopg://u:s3cr%40t@db:5432/optuna", "postgresql+psycopg://u:***@db:5432/optuna"),
        ("--storage 'mysql+pymysql://root:pw@h/db' -n 5", "--storage 'mysql+pymysql://root:***@h/db' -n 5"),
        ("postgresql://u@db/optuna", "postgresql://u@db/optuna"),  # no password
        ("sqlite:///a:b@c.db", "sqlite:///a:b@c.db"),  # a file name, not a password
        ("http://host:8080/path@x", "http://host:8080/path@x"),  # a port, not a password
    ],
)
def test_passwords_in_storage_urls_are_hidden(text: str, shown: str) -> None:
    assert hide_password(text) == shown


def test_a_trial_failed_meanwhile_by_another_process_is_dropped_and_replaced(
    zoo, fast_tune, spaces: str, tmp_path: Path
) -> None:
    argv = ["tune", "--n-trials", "2", "--pruner", "none", "--storage", "sqlite:///late.db", "--search-space",
            f"{spaces}:failed_by_another_process", *fast_tune, "--verbose", "1"]  # fmt: skip
    result = zoo(argv)
    assert result.code == 0, result.err
    assert "Trial 0 DROPPED: failed meanwhile by another process (no heartbeat in time)" in result.out
    trials = optuna.load_study(study_name="sppo-LineTarget-v0", storage="sqlite:///late.db").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert "fail_kind" not in trials[0].user_attrs  # not counted: two more trials make the budget
