"""Checkpoints of the LLM trainer: safetensors weights + JSON config, with everything needed to resume exactly.

A checkpoint is a folder::

    config.json              format, versions, TrainerConfig, RunConfig (if any), counters, base fingerprints
    policy_adapter/          the policy's LoRA adapter (peft ``save_pretrained``: adapter_model.safetensors +
                             adapter_config.json; loadable with ``PeftModel.from_pretrained``)
    policy.safetensors       instead of policy_adapter/ when the policy is trained without LoRA
    critic.safetensors       the critic's trainable weights (head, plus its adapter or its whole trunk) and the
                             head's buffers
    optimizer.pt             both optimizer states and learning-rate schedules (tensors and numbers only; read with
                             ``torch.load(weights_only=True)``)
    rng_state.safetensors    torch CPU/CUDA and shuffle-generator states (rank 0; other ranks:
                             rng_state_rank<r>.safetensors)
    trainer_state.json       iteration, responses seen, prompt-sampler position, Python and NumPy RNG states
    tokenizer/, critic_tokenizer/   the tokenizers (in-process tokenizers are reused on load)

Base weights are not copied (they are the pretrained model, or a seeded random init). A fingerprint of the
frozen base weights is stored and checked on load, so restoring an adapter onto a different base fails loudly.
Weights and optimizer states are stored whole (FSDP shards are gathered), so a checkpoint loads at any number of
processes. A save goes to ``<folder>.tmp`` and is renamed when complete; a missing or damaged file is an error that
names it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from sppo_rl.version import __version__

from .config import TrainerConfig, to_dict
from .critic import LMCritic
from .data import PromptSampler
from .distributed import Distributed, copy_full_into, full_tensor, load_optimizer_state, optimizer_state
from .models import PolicyModel
from .run_config import RunConfig

__all__ = [
    "CHECKPOINT_FORMAT",
    "DamagedCheckpointError",
    "frozen_fingerprint",
    "latest_checkpoint",
    "load_checkpoint",
    "read_checkpoint_config",
    "resolve_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "sppo-rl-llm-checkpoint/1"


class DamagedCheckpointError(ValueError):
    """A file of a checkpoint is missing or cannot be read (named in the message)."""


class TrainerState(Protocol):
    """What a checkpoint reads and restores: the trainer's models, optimizers, random states and counters."""

    config: TrainerConfig
    run_config: RunConfig | None
    policy: PolicyModel
    policy_params: list[torch.nn.Parameter]
    policy_optimizer: torch.optim.Optimizer
    critic: LMCritic | None
    critic_optimizer: torch.optim.Optimizer | None
    policy_schedule: torch.optim.lr_scheduler.LRScheduler
    critic_schedule: torch.optim.lr_scheduler.LRScheduler | None
    advantage_fn: Callable[..., Any]
    sampler: PromptSampler
    shuffle_generator: torch.Generator
    iteration: int
    num_timesteps: int
    last_metrics: dict[str, float]
    dist: Distributed
    _seeded: bool


def frozen_fingerprint(model: torch.nn.Module, exclude: set[int], max_tensors: int = 16) -> list[float]:
    """Float64 sums of up to ``max_tensors`` frozen parameters (evenly spread, by name order).

    :param model: the model
    :param exclude: ``id()`` of the trainable parameters to leave out
    :param max_tensors: how many tensors to sum
    :return: list of sums
    """
    named = sorted((n, p) for n, p in model.named_parameters() if id(p) not in exclude)
    if not named:
        return []
    step = max(1, len(named) // max_tensors)
    return [float(p.detach().double().sum()) for _, p in named[::step][:max_tensors]]


def _fingerprints(trainer: TrainerState) -> dict[str, list[float]]:
    out = {"policy": frozen_fingerprint(trainer.policy.model, {id(p) for p in _all_trainable(trainer)})}
    critic = trainer.critic
    if critic is not None and not critic.shared:
        out["critic"] = frozen_fingerprint(critic.backbone, {id(p) for _, p in critic.trainable_named_parameters()})
    return out


def _all_trainable(trainer: TrainerState) -> list[torch.nn.Parameter]:
    params = list(trainer.policy_params)
    if trainer.critic is not None and trainer.critic.shared:
        params += [p for _, p in trainer.critic.trainable_named_parameters()]
    return params


def _policy_state(trainer: TrainerState) -> dict[str, torch.Tensor]:
    names = {id(p): n for n, p in trainer.policy.model.named_parameters()}
    return {names[id(p)]: full_tensor(p.detach()).contiguous() for p in trainer.policy_params}


def _estimator_state(trainer: TrainerState) -> Any:
    """The state of a stateful estimator (e.g. the moving average of ``"ema"``), or ``None``."""
    state_dict = getattr(trainer.advantage_fn, "state_dict", None)
    return state_dict() if callable(state_dict) else None


def save_checkpoint(trainer: TrainerState, path: str) -> str:
    """Write ``trainer``'s state to folder ``path``, atomically.

    Everything is written to ``<path>.tmp`` first and renamed to ``path`` once complete (``config.json`` last), so
    an interrupted save never leaves a folder that looks like a checkpoint. On several ranks every rank calls this:
    sharded (FSDP) tensors are gathered to full ones, rank 0 writes the shared files, and each rank writes its own
    random state (``rng_state_rank<r>.safetensors`` beside rank 0's ``rng_state.safetensors``).

    :param trainer: the trainer
    :param path: destination folder (replaced if it exists)
    :return: ``path``
    """
    from safetensors.torch import save_file

    dist = trainer.dist
    path = os.path.normpath(path)
    tmp = f"{path}.tmp"
    if dist.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    dist.barrier()

    # weights (gathered to full tensors on every rank: a collective under FSDP)
    policy = trainer.policy
    policy_state = None if policy.has_lora else _policy_state(trainer)
    critic_state = None
    if trainer.critic is not None:
        critic_state = {
            k: full_tensor(v).contiguous().clone() for k, v in trainer.critic.trainable_state_dict().items()
        }
    optim = {
        "policy": optimizer_state(trainer.policy_optimizer, policy.model),
        "policy_schedule": trainer.policy_schedule.state_dict(),
    }
    if trainer.critic_optimizer is not None and trainer.critic is not None:
        optim["critic"] = optimizer_state(trainer.critic_optimizer, trainer.critic)
    if trainer.critic_schedule is not None:
        optim["critic_schedule"] = trainer.critic_schedule.state_dict()

    rng = {"torch_cpu": torch.get_rng_state(), "shuffle": trainer.shuffle_generator.get_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda_{i}"] = s
    rng_file = "rng_state.safetensors" if dist.is_main else f"rng_state_rank{dist.rank}.safetensors"
    save_file({k: v.contiguous() for k, v in rng.items()}, os.path.join(tmp, rng_file))

    if dist.is_main:
        if policy.has_lora:
            # the base weights are never changed by LoRA, so an adapted output head need not be copied
            policy.model.save_pretrained(
                os.path.join(tmp, "policy_adapter"),
                selected_adapters=[policy.adapter_name],
                save_embedding_layers=False,
            )
        else:
            assert policy_state is not None
            save_file(policy_state, os.path.join(tmp, "policy.safetensors"))
        if trainer.critic is not None and critic_state is not None:
            save_file(critic_state, os.path.join(tmp, "critic.safetensors"))
            if not trainer.critic.shared:
                trainer.critic.tokenizer.save_pretrained(os.path.join(tmp, "critic_tokenizer"))
        policy.tokenizer.save_pretrained(os.path.join(tmp, "tokenizer"))
        torch.save(optim, os.path.join(tmp, "optimizer.pt"))
        _write_trainer_state(trainer, tmp)
        _write_config(trainer, tmp)
    dist.barrier()
    if dist.is_main:
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    dist.barrier()
    return path


def _write_trainer_state(trainer: TrainerState, folder: str) -> None:
    np_state: Any = np.random.get_state()
    py_state = random.getstate()
    trainer_state: dict[str, Any] = {
        "iteration": trainer.iteration,
        "num_timesteps": trainer.num_timesteps,
        "sampler": trainer.sampler.state_dict(),
        "seeded": trainer._seeded,
        "estimator": _estimator_state(trainer),
        "python_random": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy_random": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    with open(os.path.join(folder, "trainer_state.json"), "w", encoding="utf-8") as f:
        json.dump(trainer_state, f)


def _write_config(trainer: TrainerState, folder: str) -> None:
    config = {
        "format": CHECKPOINT_FORMAT,
        "sppo_rl_version": __version__,
        "torch_version": torch.__version__,
        "estimator": trainer.config.estimator,
        "critic": None if trainer.critic is None else ("shared" if trainer.critic.shared else "separate"),
        "value_head": None if trainer.critic is None else trainer.critic.head.name,
        "iteration": trainer.iteration,
        "num_timesteps": trainer.num_timesteps,
        "world_size": trainer.dist.world_size,
        "strategy": trainer.dist.strategy,
        "trainer_config": to_dict(trainer.config),
        "run_config": trainer.run_config.to_dict() if trainer.run_config is not None else None,
        "fingerprints": _fingerprints(trainer),
        "last_metrics": trainer.last_metrics,
    }
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, default=str)


def _checkpoint_number(name: str) -> int | None:
    prefix, _, number = name.partition("-")
    return int(number) if prefix == "checkpoint" and number.isdigit() else None


def latest_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint under ``output_dir/checkpoints`` (a half-written save ends in ``.tmp``)."""
    folder = os.path.join(output_dir, "checkpoints")
    if not os.path.isdir(folder):
        return None
    found = []
    for name in os.listdir(folder):
        number = _checkpoint_number(name)
        if number is not None and os.path.isfile(os.path.join(folder, name, "config.json")):
            found.append((number, os.path.join(folder, name)))
    return max(found)[1] if found else None


def resolve_checkpoint(path: str) -> str:
    """The checkpoint a path names: a checkpoint folder itself, a run folder's ``final`` checkpoint, else the
    run's newest complete one.

    :raises FileNotFoundError: no checkpoint there
    """
    for candidate in (path, os.path.join(path, "final")):
        if os.path.isfile(os.path.join(candidate, "config.json")) and os.path.isfile(
            os.path.join(candidate, "trainer_state.json")
        ):
            return candidate
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(f"{path} is neither a checkpoint nor a run folder with one (final/ or checkpoints/)")
    return latest


def read_checkpoint_config(path: str) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint folder.

    :raises FileNotFoundError: not a checkpoint folder
    :raises ValueError: unknown format
    """
    file = os.path.join(path, "config.json")
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{path} is not an sppo-rl LLM checkpoint (no config.json)")
    config = _read(file, lambda: json.loads(Path(file).read_text(encoding="utf-8")))
    if config.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: unknown checkpoint format {config.get('format')!r}; expected {CHECKPOINT_FORMAT}")
    return config


def _read(file: str, load: Callable[[], Any]) -> Any:
    """``load()``, with any failure reported as :class:`DamagedCheckpointError` naming ``file``."""
    if not os.path.exists(file):
        raise DamagedCheckpointError(f"The checkpoint file {file} is missing")
    try:
        return load()
    except Exception as exc:
        raise DamagedCheckpointError(
            f"The checkpoint file {file} cannot be read ({type(exc).__name__}: {exc})"
        ) from exc


def _check_fingerprint(name: str, saved: list[float] | None, current: list[float]) -> None:
    if saved is None:
        return
    if len(saved) != len(current) or not np.allclose(saved, current, rtol=1e-5, atol=1e-6):
        raise ValueError(
            f"The {name}'s frozen base weights differ from those the checkpoint was trained on: load the same base "
            "model (path, or config and seed for a random init)"
        )


def load_checkpoint(trainer: TrainerState, path: str) -> None:
    """Restore a checkpoint written by :func:`save_checkpoint` into an identically built trainer.

    :param trainer: the trainer (same models, data and configuration as when saving)
    :param path: the checkpoint folder
    :raises ValueError: a different estimator, critic kind or base model
    """
    from peft import load_peft_weights, set_peft_model_state_dict
    from safetensors.torch import load_file

    config = read_checkpoint_config(path)
    if config["estimator"] != trainer.config.estimator:
        raise ValueError(
            f"The checkpoint uses estimator {config['estimator']!r}, the trainer {trainer.config.estimator!r}"
        )
    kind = None if trainer.critic is None else ("shared" if trainer.critic.shared else "separate")
    if config["critic"] != kind:
        raise ValueError(f"The checkpoint has critic {config['critic']!r}, the trainer {kind!r}")
    fps = config.get("fingerprints", {})
    current = _fingerprints(trainer)
    _check_fingerprint("policy", fps.get("policy"), current["policy"])
    if "critic" in current:
        _check_fingerprint("critic", fps.get("critic"), current["critic"])

    device = trainer.policy.device
    policy = trainer.policy
    if policy.has_lora:
        adapter = os.path.join(path, "policy_adapter")
        weights = _read(adapter, lambda: load_peft_weights(adapter, device=str(device)))
        result = set_peft_model_state_dict(policy.model, weights, adapter_name=policy.adapter_name)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ValueError(f"The policy adapter in {path} does not match the model: unexpected {unexpected[:5]}")
    else:
        file = os.path.join(path, "policy.safetensors")
        state = _read(file, lambda: load_file(file, device=str(device)))
        own = dict(policy.model.named_parameters())
        with torch.no_grad():
            for name, tensor in state.items():
                copy_full_into(own[name], tensor)
    if trainer.critic is not None:
        file = os.path.join(path, "critic.safetensors")
        trainer.critic.load_trainable_state_dict(_read(file, lambda: load_file(file)))

    file = os.path.join(path, "optimizer.pt")
    optim = _read(file, lambda: torch.load(file, map_location=device, weights_only=True))
    load_optimizer_state(trainer.policy_optimizer, policy.model, optim["policy"])
    if trainer.critic_optimizer is not None and trainer.critic is not None:
        load_optimizer_state(trainer.critic_optimizer, trainer.critic, optim["critic"])
    if "policy_schedule" in optim:
        trainer.policy_schedule.load_state_dict(optim["policy_schedule"])
    if trainer.critic_schedule is not None and "critic_schedule" in optim:
        trainer.critic_schedule.load_state_dict(optim["critic_schedule"])

    own_rng = os.path.join(path, f"rng_state_rank{trainer.dist.rank}.safetensors")
    file = own_rng if trainer.dist.rank and os.path.isfile(own_rng) else os.path.join(path, "rng_state.safetensors")
    rng = _read(file, lambda: load_file(file))
    torch.set_rng_state(rng["torch_cpu"])
    trainer.shuffle_generator.set_state(rng["shuffle"])
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(k for k in rng if k.startswith("torch_cuda_"))]
        if states and len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    file = os.path.join(path, "trainer_state.json")
    state = _read(file, lambda: json.loads(Path(file).read_text(encoding="utf-8")))
    py = state["python_random"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npr = state["numpy_random"]
    np.random.set_state((npr[0], np.asarray(npr[1], dtype=np.uint32), npr[2], npr[3], npr[4]))
    if state.get("estimator") is not None:
        trainer.advantage_fn.load_state_dict(state["estimator"])  # type: ignore[attr-defined]
    trainer.sampler.load_state_dict(state["sampler"])
    trainer.iteration = int(state["iteration"])
    trainer.num_timesteps = int(state["num_timesteps"])
    trainer._seeded = bool(state["seeded"])
    trainer.last_metrics = dict(config.get("last_metrics") or {})
