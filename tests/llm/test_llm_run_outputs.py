"""What a run leaves behind, and the command line around it: nothing lost on resume, no run overwritten by
mistake, damaged checkpoints named, one-line errors, the shipped examples, trackers, completion logs, a one-argument
reload and the critic exported as a sequence-classification model."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from sppo_rl.llm.cli import main
from sppo_rl.llm.trainer import SPPOTrainer

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "llm" / "examples" / "tiny_cpu.yml")
FAST = [
    "--set",
    "trainer.prompts_per_step=16",
    "--set",
    "trainer.mini_batch_size=16",
    "--set",
    "trainer.micro_batch_size=16",
    "--set",
    "eval_data=null",
    "--set",
    "train.log_interval=1",
]


def _train(out: Path, iterations: int, *extra: str) -> int:
    return main(["train", TINY, "--output-dir", str(out), "--set", f"train.n_iterations={iterations}", *FAST, *extra])


def _progress(out: Path) -> list[dict[str, str]]:
    with open(out / "progress.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _iterations(out: Path) -> list[int]:
    return [int(float(r["time/iterations"])) for r in _progress(out)]


def test_resume_appends_and_the_summary_covers_the_whole_run(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "run"
    assert _train(out, 4, "--set", "train.save_interval=2", "--quiet") == 0
    whole = _progress(out)
    # an interruption after the checkpoint of iteration 2: resuming from it drops rows 3-4 and recomputes them
    assert _train(out, 4, "--resume", str(out / "checkpoints" / "checkpoint-2"), "--quiet") == 0
    assert "dropped 2 row(s) logged after the checkpoint" in capsys.readouterr().out
    assert _iterations(out) == [1, 2, 3, 4]
    resumed = _progress(out)
    for a, b in zip(whole, resumed, strict=True):
        assert a["rollout/reward_mean"] == b["rollout/reward_mean"]  # exact resume
    summary = json.loads((out / "summary.json").read_text())
    assert summary["first_logged_iteration"] == 1
    assert summary["reward_first_logged"] == float(whole[0]["rollout/reward_mean"])
    assert summary["reward_last_logged"] == float(whole[-1]["rollout/reward_mean"])
    assert summary["logged_rows"] == 4
    # more iterations later: appended, not overwritten
    assert _train(out, 6, "--resume", "auto", "--quiet") == 0
    assert _iterations(out) == [1, 2, 3, 4, 5, 6]


def test_a_logged_row_averages_the_iterations_since_the_previous_one(tmp_path: Path) -> None:
    """log_interval=2 logs the mean of iterations (1, 2) and (3, 4) of the same run logged every iteration."""
    assert _train(tmp_path / "every", 4, "--quiet") == 0
    assert _train(tmp_path / "pairs", 4, "--quiet", "--set", "train.log_interval=2") == 0
    every, pairs = _progress(tmp_path / "every"), _progress(tmp_path / "pairs")
    assert _iterations(tmp_path / "pairs") == [2, 4]
    for row, (a, b) in zip(pairs, [every[0:2], every[2:4]], strict=True):
        for key in ("rollout/reward_mean", "train/value_loss", "rollout/entropy"):
            assert float(row[key]) == pytest.approx((float(a[key]) + float(b[key])) / 2, rel=1e-6)
        assert float(row["rollout/response_length_max"]) == max(
            float(a["rollout/response_length_max"]), float(b["rollout/response_length_max"])
        )
        assert row["time/total_timesteps"] == b["time/total_timesteps"]


def test_aggregate_log_window_rules() -> None:
    from sppo_rl.llm.trainer import aggregate_log_window

    window = [
        {"rollout/reward_mean": 0.0, "memory/rollout_peak_mb": 5.0, "time/iterations": 1, "eval/pass@k": 0.5},
        {"rollout/reward_mean": 1.0, "memory/rollout_peak_mb": 3.0, "time/iterations": 2, "train/learning_rate": 1e-3},
    ]
    row = aggregate_log_window(window)
    assert row == {
        "rollout/reward_mean": 0.5,
        "memory/rollout_peak_mb": 5.0,
        "time/iterations": 2.0,
        "eval/pass@k": 0.5,  # the latest evaluation, even when the last iteration had none
        "train/learning_rate": 1e-3,
    }


def test_an_existing_run_is_not_overwritten_by_mistake(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "run"
    assert _train(out, 1, "--quiet") == 0
    capsys.readouterr()
    assert _train(out, 1, "--quiet") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a run" in err and "--resume auto" in err and "--overwrite" in err
    (out / "completions.jsonl").write_text("old\n")
    assert _train(out, 2, "--overwrite", "--quiet") == 0
    assert _iterations(out) == [1, 2] and not (out / "completions.jsonl").exists()


def test_resume_auto_skips_a_half_written_checkpoint_and_names_a_damaged_file(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "run"
    assert _train(out, 2, "--set", "train.save_interval=1", "--quiet") == 0
    shutil.copytree(out / "checkpoints" / "checkpoint-2", out / "checkpoints" / "checkpoint-3.tmp")
    (out / "checkpoints" / "checkpoint-3.tmp" / "config.json").unlink()  # a save killed half-way
    capsys.readouterr()
    assert _train(out, 3, "--resume", "auto", "--quiet") == 0
    assert f"resuming from {out}/checkpoints/checkpoint-2" in capsys.readouterr().out
    critic = out / "checkpoints" / "checkpoint-2" / "critic.safetensors"
    critic.write_bytes(critic.read_bytes()[:100])  # truncated
    assert _train(out, 3, "--resume", str(out / "checkpoints" / "checkpoint-2"), "--quiet") == 2
    err = capsys.readouterr().err
    assert f"The checkpoint file {critic} cannot be read" in err and err.count("\n") == 1


def test_compact_console_lines(tmp_path: Path, capsys: Any) -> None:
    assert _train(tmp_path / "run", 2, "--set", "train.logger=[compact,csv]") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("it ")]
    assert len(lines) == 2 and lines[0].startswith("it 1 | reward ") and "| s/it " in lines[0]


def test_completion_logs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _train(out, 2, "--set", "train.log_completions_interval=1", "--set", "train.completions_to_log=3") == 0
    records = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert len(records) == 6 and [r["iteration"] for r in records] == [1, 1, 1, 2, 2, 2]
    first = records[0]
    assert set(first) >= {"prompt", "response", "outcome", "value", "advantage", "step", "table"}
    assert first["prompt"].startswith("Repeat: ") and first["advantage"] == pytest.approx(
        first["outcome"] - first["value"]
    )


@pytest.mark.parametrize("tracker", ["tensorboard", "wandb", "mlflow", "trackio"])
def test_trackers_log_locally_and_continue_the_run_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracker: str
) -> None:
    if tracker != "tensorboard":
        pytest.importorskip(tracker)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    project = f"sppo-test-{tmp_path.name}"
    report = ["--set", f"train.report_to=[{tracker}]", "--set", f"train.project={project}", "--quiet"]
    report += ["--set", "train.log_completions_interval=1"]
    assert _train(out, 2, "--set", "train.save_interval=2", *report) == 0
    assert _train(out, 3, "--resume", "auto", *report) == 0
    if tracker == "tensorboard":
        assert list(out.glob("events.out.tfevents.*"))
        return
    run_id = (out / f".{tracker}_run_id").read_text().strip()
    if tracker == "wandb":
        runs = list((out / "wandb").glob("offline-run-*"))
        assert runs and all(run_id in r.name for r in runs)  # one run id, continued on resume
    elif tracker == "mlflow":
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{(out / 'mlflow.db').resolve()}")
        history = mlflow.MlflowClient().get_metric_history(run_id, "rollout/reward_mean")
        assert sorted(m.step for m in history) == [16, 32, 48]  # 3 iterations of 16 responses, one run
    else:
        import trackio

        logs = trackio.SQLiteStorage.get_logs(project, run=run_id)
        steps = sorted({int(row["step"]) for row in logs if "rollout/reward_mean" in row})
        assert steps == [16, 32, 48]  # one run, continued on resume


def test_an_unknown_tracker_lists_the_known_ones(tmp_path: Path, capsys: Any) -> None:
    assert _train(tmp_path / "run", 1, "--set", "train.report_to=[comet]", "--quiet") == 2
    assert "Unknown report_to tracker 'comet'; known: tensorboard, wandb, trackio, mlflow" in capsys.readouterr().err


def test_from_config_reads_a_yaml_path(tmp_path: Path, monkeypatch: Any) -> None:
    """``SPPOTrainer.from_config("run.yml")`` builds the same run as ``sppo-llm train run.yml``."""
    monkeypatch.chdir(tmp_path)  # the example's output_dir is relative
    trainer = SPPOTrainer.from_config(TINY, verbose=0)
    try:
        assert trainer.run_config is not None and trainer.run_config.train.n_iterations == 200
        assert trainer.config.prompts_per_step == 64 and trainer.config.estimator == "sppo"
        assert len(trainer.eval_dataset) == 50
    finally:
        trainer.close()


def test_from_pretrained_and_the_critic_as_a_sequence_classifier(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _train(out, 2, "--quiet") == 0
    trainer = SPPOTrainer.from_pretrained(str(out), verbose=0)
    assert trainer.iteration == 2 and trainer.critic is not None
    from safetensors.torch import load_file

    saved = load_file(str(out / "final" / "critic.safetensors"))
    own = trainer.critic.trainable_state_dict()
    assert all(torch.equal(saved[k], own[k]) for k in saved)

    assert main(["export", TINY, "--checkpoint", str(out / "final"), "--critic", "--out", str(tmp_path / "vm")]) == 0
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "vm")).eval()
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "vm"))
    critic = trainer.critic
    prompts = [trainer.dataset.messages(i) for i in range(6)]
    enc = critic.encode(prompts)
    with torch.no_grad():
        expected = critic.baseline(critic.prompt_outputs(enc.input_ids, enc.attention_mask))
        texts = [critic.render(m) for m in prompts]
        batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        logits = model(**batch).logits[:, 0]
    torch.testing.assert_close(torch.sigmoid(logits), expected, rtol=1e-4, atol=1e-5)


def _console(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "sppo-llm"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_the_console_script_examples_and_one_line_errors(tmp_path: Path) -> None:
    listed = _console("examples", cwd=tmp_path)
    assert listed.returncode == 0 and "tiny_cpu" in listed.stdout and "paper_7b_policy_1p5b_critic" in listed.stdout
    done = _console("train", "--example", "tiny_cpu", *FAST, "--set", "train.n_iterations=2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "runs" / "tiny_cpu" / "final" / "config.json").exists()
    assert "Warning" not in done.stderr  # no library deprecation warning on every command
    bad = _console("train", "--example", "nope", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "no example named 'nope'; examples: paper_7b_policy_1p5b_critic, tiny_cpu" in bad.stderr
    missing = _console("train", "missing.yml", cwd=tmp_path)
    assert missing.returncode == 2 and "sppo-llm: error: no config file missing.yml" in missing.stderr
