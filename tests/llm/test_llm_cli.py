"""The ``sppo-llm`` CLI (``sppo_rl.llm.cli:main``, also ``python -m sppo_rl.llm``) and the example configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from sppo_rl.llm.cli import main
from sppo_rl.llm.run_config import RunConfig

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "llm" / "examples" / "tiny_cpu.yml"
PAPER = ROOT / "llm" / "examples" / "paper_7b_policy_1p5b_critic.yml"


def _last_json(text: str) -> dict[str, Any]:
    start = text.rindex("\n{") + 1 if "\n{" in text else text.index("{")
    return json.loads(text[start:])


def test_example_configs_parse() -> None:
    paper = RunConfig.from_yaml(str(PAPER))
    t = paper.trainer
    assert (t.estimator, t.samples_per_prompt, t.learning_rate, t.critic_learning_rate) == ("sppo", 1, 1e-6, 5e-6)
    assert (t.generation.temperature, t.clip_range, t.kl_coef, t.max_grad_norm) == (0.6, 0.2, 0.0, 1.0)
    assert t.generation.max_new_tokens == 8192 and t.prompts_per_step == 256 and t.mini_batch_size == 128
    assert paper.critic.mode == "separate" and paper.critic.value_head == "bernoulli"
    assert paper.policy.lora is not None and paper.critic.model.lora is None
    assert paper.data.template is not None and paper.data.template.endswith("within \\boxed{}.")
    assert paper.eval.k == 16
    t.validate()
    tiny = RunConfig.from_yaml(str(TINY), overrides=["trainer.learning_rate=0.01", "train.n_iterations=3"])
    assert tiny.trainer.learning_rate == 0.01 and tiny.train.n_iterations == 3
    assert RunConfig.from_dict(paper.to_dict()) == paper  # round trip through plain dicts (checkpoints)


def test_tiny_config_trains_saves_resumes_exactly(tmp_path: Path, capsys: Any) -> None:
    """Random-init models and in-process tokenizers from the YAML; a resumed run equals an uninterrupted one."""
    common = [
        "--quiet",
        "--set",
        "trainer.prompts_per_step=16",
        "--set",
        "trainer.mini_batch_size=8",
        "--set",
        "trainer.micro_batch_size=8",
        "--set",
        "train.save_interval=2",
        "--set",
        "eval_data=null",
    ]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", str(TINY), "--output-dir", str(full), "--set", "train.n_iterations=4", *common]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["iteration"] == 4 and summary["responses"] == 64
    assert (full / "checkpoints" / "checkpoint-2" / "config.json").exists()
    assert (full / "progress.csv").exists() and (full / "config.yml").exists()

    assert main(["train", str(TINY), "--output-dir", str(part), "--set", "train.n_iterations=2", *common]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                str(TINY),
                "--output-dir",
                str(part),
                "--set",
                "train.n_iterations=4",
                "--resume",
                "auto",
                *common,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Resumed from" in out and "at iteration 2" in out
    from safetensors.torch import load_file

    a = load_file(str(full / "final" / "policy_adapter" / "adapter_model.safetensors"))
    b = load_file(str(part / "final" / "policy_adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca = load_file(str(full / "final" / "critic.safetensors"))
    cb = load_file(str(part / "final" / "critic.safetensors"))
    assert all(torch.equal(ca[k], cb[k]) for k in ca)

    # eval from the checkpoint, twice: same numbers
    results = []
    for _ in range(2):
        assert (
            main(
                [
                    "eval",
                    str(TINY),
                    "--output-dir",
                    str(full),
                    "--checkpoint",
                    str(full / "final"),
                    "--k",
                    "2",
                    "--max-prompts",
                    "10",
                ]
            )
            == 0
        )
        results.append(_last_json(capsys.readouterr().out))
    assert results[0] == results[1] and results[0]["k"] == 2 and results[0]["n_prompts"] == 10
    assert 0.0 <= results[0]["avg@k"] <= 1.0


def test_make_tiny_folder_loads_like_a_hub_model(tmp_path: Path, capsys: Any) -> None:
    policy_dir, critic_dir = tmp_path / "policy", tmp_path / "critic"
    assert main(["make-tiny", "--out", str(policy_dir)]) == 0
    assert (
        main(
            [
                "make-tiny",
                "--out",
                str(critic_dir),
                "--model-type",
                "llama",
                "--hidden-size",
                "32",
                "--layers",
                "1",
                "--vocab-size",
                "48",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    capsys.readouterr()
    for d in (policy_dir, critic_dir):
        assert (d / "config.json").exists() and (d / "tokenizer.json").exists()
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"Repeat: {d}", "answer": str(d)}) for d in range(10)))
    config = tmp_path / "run.yml"
    config.write_text(f"""
output_dir: {tmp_path / "out"}
data: {{source: {data}}}
reward: {{name: exact_match, options: {{mode: prefix}}}}
policy: {{path: {policy_dir}, dtype: float32, device: cpu, lora: {{r: 4, alpha: 8}}}}
critic: {{mode: separate, model: {{path: {critic_dir}, dtype: float32, device: cpu}}}}
trainer:
  prompts_per_step: 4
  mini_batch_size: 2
  micro_batch_size: 2
  learning_rate: 1.0e-3
  max_prompt_length: 64
  generation: {{max_new_tokens: 3, temperature: 1.0}}
train: {{n_iterations: 2, logger: [csv]}}
""")
    assert main(["train", str(config), "--quiet"]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["iteration"] == 2
    assert main(["eval", str(config), "--checkpoint", summary["checkpoint"], "--k", "1"]) == 0
    result = _last_json(capsys.readouterr().out)
    assert result["n_prompts"] == 10


def test_python_dash_m_entry_point() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, "-m", "sppo_rl.llm", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "train" in out.stdout and "make-tiny" in out.stdout


def test_bad_config_is_a_clear_error(tmp_path: Path, capsys: Any) -> None:
    """One line on stderr, exit status 2; the traceback with --debug."""
    bad = tmp_path / "bad.yml"
    bad.write_text("trainer: {estimator: sppo, clip: 0.2}\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sppo-llm: error: Unknown TrainerConfig keys ['clip']" in err
    with pytest.raises(ValueError, match="Unknown TrainerConfig keys \\['clip'\\]"):
        main(["--debug", "train", str(bad)])


@pytest.mark.slow
def test_tiny_cpu_example_reward_rises(tmp_path: Path, capsys: Any) -> None:
    """The documented CPU example, as is: reward rises from ~0.05 to well above 0.5."""
    assert main(["train", str(TINY), "--output-dir", str(tmp_path), "--quiet"]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["reward_first_logged"] < 0.15
    assert summary["reward_last_logged"] > 0.5
