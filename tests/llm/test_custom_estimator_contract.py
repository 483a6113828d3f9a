"""The estimator extension point, as a user meets it: a module outside the package registers an estimator with the
decorator, and both sides train with it by name, with no change to the library.

The user's module holds exactly what docs/objectives.md shows: a decorated function of the outcomes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sppo_rl.envs.toy import LineTargetEnv
from stable_baselines3.common.env_util import make_vec_env

from sppo_rl import SPPO, objectives

ROOT = Path(__file__).resolve().parents[2]
USER_MODULE = """
from sppo_rl.objectives import register_advantage_estimator


@register_advantage_estimator("{name}")
def my_baseline(outcomes, **kwargs):
    return outcomes - outcomes.mean()
"""


@pytest.fixture
def user_estimator(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """``(estimator name, module name, folder)`` of a freshly written and imported user module."""
    tag = uuid.uuid4().hex[:8]
    name, module = f"my-baseline-{tag}", f"my_estimators_{tag}"
    (tmp_path / f"{module}.py").write_text(USER_MODULE.format(name=name))
    sys.path.insert(0, str(tmp_path))
    try:
        __import__(module)
        yield name, module, tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module, None)
        objectives.ADVANTAGE_ESTIMATORS.pop(name, None)


def test_the_decorators_defaults_describe_the_common_case(user_estimator: tuple[str, str, Path]) -> None:
    est = objectives.get_advantage_estimator(user_estimator[0])
    assert est.level == "sequence" and est.inputs == ("outcomes",)
    assert est.samples_per_context == 1 and not est.needs_critic and not est.stateful
    assert est.fn.__name__ == "my_baseline"


def test_sppo_trains_with_a_user_estimator(user_estimator: tuple[str, str, Path]) -> None:
    name = user_estimator[0]
    env = make_vec_env(LineTargetEnv, n_envs=2, seed=0)
    model = SPPO("MlpPolicy", env, advantage_estimator=name, n_steps=30, batch_episodes=4, n_epochs=1, seed=0)
    before = [p.detach().clone() for p in model.policy.actor_parameters()]
    model.learn(total_timesteps=1)
    buffer = model.rollout_buffer
    np.testing.assert_allclose(buffer.advantages, buffer.outcomes - buffer.outcomes.mean(), rtol=0, atol=1e-6)
    assert buffer.outcomes.std() > 0  # a real check: the outcomes differ, so the advantages are not all zero
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.actor_parameters(), strict=True))


def test_the_llm_trainer_trains_with_a_user_estimator(
    user_estimator: tuple[str, str, Path], make_policy: Any, copy_rows: Any
) -> None:
    from sppo_rl.llm.config import GenerationSettings
    from sppo_rl.llm.trainer import SPPOTrainer

    def parity(prompts: list[str], completions: list[str], **kw: Any) -> list[float]:
        return [float(sum(map(ord, c)) % 2) for c in completions]

    trainer = SPPOTrainer(
        make_policy(),
        copy_rows[:24],
        parity,
        estimator=user_estimator[0],
        prompts_per_step=8,
        micro_batch_size=4,
        learning_rate=1e-3,
        generation=GenerationSettings(temperature=1.0, max_new_tokens=4),
        max_prompt_length=32,
        chat_template=False,
        verbose=0,
    )
    assert trainer.config.samples_per_prompt == 1 and trainer.critic is None
    trainer._seed_everything()
    batch = trainer.collect_rollout()
    mask = batch.rollout.response_mask.float()
    expected = (batch.outcomes - batch.outcomes.mean())[:, None] * mask
    torch.testing.assert_close(batch.advantages, expected)
    assert batch.outcomes.std() > 0
    metrics = trainer.train_iteration()
    assert np.isfinite(metrics["train/policy_gradient_loss"]) and metrics["train/grad_norm"] > 0


def test_the_command_line_trains_with_a_user_estimator(user_estimator: tuple[str, str, Path]) -> None:
    name, module, folder = user_estimator
    env = {**os.environ, "PYTHONPATH": ""}
    cmd = [
        sys.executable,
        "-m",
        "sppo_rl.llm",
        "train",
        str(ROOT / "llm" / "examples" / "tiny_cpu.yml"),
        "--output-dir",
        str(folder / "run"),
        "--set",
        f"trainer.estimator={name}",
        "--set",
        f"imports=[{module}]",
        "--set",
        "critic.mode=none",
        "--set",
        "train.n_iterations=2",
        "--set",
        "eval_data=null",
        "--quiet",
    ]
    out = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"iteration": 2' in out.stdout
    saved = (folder / "run" / "config.yml").read_text()
    assert f"estimator: {name}" in saved


def test_an_unknown_estimator_lists_the_registered_ones() -> None:
    with pytest.raises(ValueError, match=r"Unknown advantage estimator 'nope'.*'batch_mean'.*'sppo'"):
        SPPO("MlpPolicy", make_vec_env(LineTargetEnv, n_envs=1), advantage_estimator="nope")
