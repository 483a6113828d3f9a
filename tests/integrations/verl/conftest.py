"""Fixtures for the verl plugin tests (run by ``make test-verl`` in ``.venv-verl``).

Nothing is downloaded: the tiny model is built from a config, Ray and the TransferQueue run on this machine.
A skipped test counts as a failure here, so that a missing piece cannot pass as a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# set before verl, transformers or Ray are imported (here and by the test modules)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray
import transfer_queue as tq
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config

from sppo_rl.integrations.verl import CONFIG_DIR

VOCAB = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(61)]
"""The tiny model's vocabulary: 64 tokens."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid} was skipped; the verl tests must run in the verl venv: {report.longrepr}"


@pytest.fixture(scope="session")
def tiny_qwen2_config() -> Qwen2Config:
    """A 2-layer Qwen2 (the architecture of the paper's DeepSeek-R1-Distill-Qwen models) with one output."""
    return Qwen2Config(
        vocab_size=len(VOCAB),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        num_labels=1,
        pad_token_id=0,
        eos_token_id=1,
        architectures=["Qwen2ForCausalLM"],
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_qwen2_config: Qwen2Config) -> Path:
    """A model folder (config and tokenizer, no weights) that verl's ``HFModelConfig`` can read offline."""
    path = tmp_path_factory.mktemp("tiny-qwen2")
    tiny_qwen2_config.save_pretrained(path)
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    tokenizer.save_pretrained(path)
    return path


def compose_seq_ppo(*overrides: str) -> DictConfig:
    """The shipped ``seq_ppo_trainer.yaml`` composed by Hydra on top of verl's ``ppo_trainer``."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="seq_ppo_trainer", overrides=list(overrides))


@pytest.fixture(scope="session")
def shipped_recipe() -> DictConfig:
    """``seq_ppo_trainer.yaml`` as shipped (the paper's models, which are not on this machine)."""
    return compose_seq_ppo()


@pytest.fixture(scope="session")
def seq_ppo_config(tiny_model_dir: Path) -> DictConfig:
    """The paper's recipe with the tiny local model in place of the 7B policy and the 1.5B critic."""
    return compose_seq_ppo(
        f"actor_rollout_ref.model.path={tiny_model_dir}",
        f"critic.model.path={tiny_model_dir}",
        "trainer.n_gpus_per_node=1",
        "trainer.logger=[console]",
        "trainer.device=cpu",
    )


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """A local Ray with verl's TransferQueue on it (one storage unit), shared by the session.

    4 logical CPUs on this 2-core machine: the queue's controller and storage unit hold one each.
    """
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
    yield
    tq.close()
    ray.shutdown()
