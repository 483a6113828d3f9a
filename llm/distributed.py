"""Several processes (and GPUs): data-parallel rollouts and updates through ``torch.distributed`` and accelerate.

A run started by ``torchrun --nproc-per-node N`` or ``accelerate launch`` (which set ``RANK``, ``WORLD_SIZE`` and the
rendezvous ``MASTER_ADDR``/``MASTER_PORT``) has ``N`` ranks; accelerate's ``PartialState`` joins the process group
(NCCL on GPUs, gloo on CPUs) and places each rank on its own device. A plain ``python`` run is one rank with no
process group, and every operation here is the identity.

How the work is split, so that ``N`` ranks give the numbers of one process with the same global batch:

- **Rollouts**: the prompts of a step come from one seeded global order; rank ``r`` takes the ``r``-th contiguous
  block (a prompt's samples stay together, so GRPO/RLOO groups live on one rank), generates, scores and computes
  the behaviour log-probs and critic values of its block. Sampling is seeded per generation batch from the run's
  seed, the iteration and the batch's first global row, so a response does not depend on which rank sampled it.
- **The global batch**: the blocks are gathered (:meth:`Distributed.gather_padded`, :meth:`gather_objects`), so
  every rank holds the whole batch; the advantages (baselines, whitening, group statistics, a moving average) are
  computed on it, identically on every rank, and the logged metrics are its metrics.
- **Updates**: every mini-batch of the global permutation is cut into ``N`` equal parts; each rank accumulates
  the gradient of its part, weighted by its share of the *global* mini-batch (tokens for ``token-mean``,
  sequences for the sequence-mean modes), and the ranks' gradients are summed (:meth:`sync_gradients`; FSDP2's
  reduce-scatter for sharded modules), which is the gradient of the whole mini-batch.
- **FSDP** (``distributed.strategy: fsdp``): the models trained in full (a critic without LoRA, a policy without
  LoRA) are sharded layer by layer with FSDP2 (:meth:`shard`); LoRA policies and adapters stay replicated.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn

from .config import DistributedSettings

__all__ = [
    "Distributed",
    "DistributedSetupError",
    "copy_full_into",
    "full_tensor",
    "generation_seed",
    "load_optimizer_state",
    "optimizer_state",
]

Tensor = torch.Tensor
RENDEZVOUS = ("RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedSetupError(RuntimeError):
    """The launcher's environment does not describe a usable process group."""


def generation_seed(seed: int, iteration: int, row: int) -> int:
    """The sampling seed of the generation batch that starts at global row ``row`` of iteration ``iteration``."""
    return ((seed * 1_000_003 + iteration) * 1_000_003 + row) % (2**63 - 1)


class Distributed:
    """The ranks of a run and what they do together.

    :param rank: this process's rank
    :param world_size: number of ranks
    :param local_rank: rank on this machine
    :param strategy: ``"ddp"`` or ``"fsdp"`` (``"none"`` in one process)
    """

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, strategy: str = "none") -> None:
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.strategy = strategy

    @classmethod
    def from_environment(cls, settings: DistributedSettings | None = None) -> Distributed:
        """Join the process group the launcher describes (one rank without a launcher).

        :param settings: the strategy and the collective timeout
        :raises DistributedSetupError: ``WORLD_SIZE`` > 1 without the rendezvous settings, or a strategy the
            launcher contradicts
        """
        settings = settings or DistributedSettings()
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return cls()
        missing = [name for name in RENDEZVOUS if not os.environ.get(name)]
        if missing:
            raise DistributedSetupError(
                f"WORLD_SIZE={world} but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: start "
                "the run with `torchrun --nproc-per-node N ...` or `accelerate launch ...`, which set the rendezvous "
                "settings (or set RANK, MASTER_ADDR and MASTER_PORT yourself)"
            )
        from accelerate import PartialState

        timeout = datetime.timedelta(seconds=settings.timeout_s)
        state = PartialState(cpu=not torch.cuda.is_available(), timeout=timeout)
        accelerate_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
        strategy = settings.strategy
        if strategy == "auto":
            strategy = "fsdp" if accelerate_fsdp else "ddp"
        elif strategy == "ddp" and accelerate_fsdp:
            raise DistributedSetupError(
                "distributed.strategy is 'ddp' but the accelerate config asks for FSDP: set distributed.strategy to "
                "'fsdp' or 'auto', or launch with a DDP config"
            )
        if torch.cuda.is_available():
            torch.cuda.set_device(state.local_process_index)
        return cls(state.process_index, state.num_processes, state.local_process_index, strategy)

    # ---- who does what --------------------------------------------------------------------------------------

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints, logs and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Several ranks."""
        return self.world_size > 1

    def block(self, n: int) -> slice:
        """This rank's contiguous block of ``n`` items (``n`` must be divisible by the world size)."""
        if n % self.world_size:
            raise ValueError(f"{n} items cannot be split evenly over {self.world_size} ranks")
        size = n // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)

    def check_divides(self, **counts: int | None) -> None:
        """Raise ``ValueError`` naming every setting that the world size does not divide.

        :param counts: ``name=value`` (``None`` values are skipped)
        """
        bad = {name: value for name, value in counts.items() if value is not None and value % self.world_size}
        if bad:
            listed = ", ".join(f"{name}={value}" for name, value in bad.items())
            raise ValueError(
                f"{listed}: each must be divisible by the number of processes ({self.world_size}), so that every "
                "rank gets the same share of every step"
            )

    # ---- collectives ----------------------------------------------------------------------------------------

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.active:
            torch_dist.barrier()

    def gather_objects(self, items: list[Any]) -> list[Any]:
        """The ranks' lists, concatenated in rank order (every rank gets the result)."""
        if not self.active:
            return list(items)
        out: list[list[Any]] = [[] for _ in range(self.world_size)]
        torch_dist.all_gather_object(out, items)
        return [x for part in out for x in part]

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_padded(
        self, tensor: Tensor, pad_dim: int | None = None, pad_value: float = 0, left: bool = False
    ) -> Tensor:
        """The ranks' tensors concatenated along dim 0 (rank order), padded along ``pad_dim`` to the widest.

        :param tensor: this rank's tensor; every rank has the same size along dim 0
        :param pad_dim: the dimension whose size differs between ranks (``None``: none)
        :param pad_value: the padding value
        :param left: pad on the left (left-padded prompts)
        """
        if not self.active:
            return tensor
        from accelerate.utils import gather, pad_across_processes

        if pad_dim is not None:
            tensor = pad_across_processes(tensor.contiguous(), dim=pad_dim, pad_index=pad_value, pad_first=left)
        out: Tensor = gather(tensor.contiguous())
        return out

    def sum_(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over the ranks, in place."""
        if self.active:
            torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
        return tensor

    def sum_values(self, values: dict[str, float]) -> dict[str, float]:
        """Sum a dict of floats over the ranks (every rank has the same keys)."""
        if not self.active or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self._collective_device())
        self.sum_(t)
        return dict(zip(keys, t.tolist(), strict=True))

    def sync_gradients(self, params: Sequence[nn.Parameter]) -> None:
        """Sum the gradients of replicated parameters over the ranks (FSDP-sharded ones are summed by FSDP).

        A parameter without a gradient on this rank contributes zeros.
        """
        if not self.active:
            return
        from torch.distributed.tensor import DTensor

        plain = [p for p in params if not isinstance(p, DTensor)]
        if not plain:
            return
        for p in plain:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1).to(torch.float32) for p in plain if p.grad is not None])
        self.sum_(flat)
        offset = 0
        for p in plain:
            assert p.grad is not None
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")

    # ---- FSDP --------------------------------------------------------------------------------------------------

    def shard(self, module: Any, what: str, layers: bool = True) -> None:
        """Shard a model trained in full with FSDP2: each transformer layer, then the module itself; gradients
        are summed over the ranks (the losses are already weighted by each rank's share).

        :param module: the model (or trunk) whose forward the trainer calls
        :param what: its name, for messages (``"critic"``, ``"policy"``)
        :param layers: shard its transformer layers one by one (``False``: the module as one unit, e.g. a head)
        :raises ValueError: the model does not name its layer classes (``_no_split_modules``)
        """
        if self.strategy != "fsdp" or not self.active:
            return
        from torch.distributed.fsdp import FSDPModule, fully_shard

        base = module.get_base_model() if hasattr(module, "get_base_model") else module
        layer_names = set(getattr(base, "_no_split_modules", None) or [])
        if layers and not layer_names:
            raise ValueError(
                f"distributed.strategy='fsdp' cannot shard the {what} ({type(base).__name__}): it does not name its "
                "layer classes (_no_split_modules); use distributed.strategy='ddp'"
            )
        for sub in module.modules():
            if type(sub).__name__ in layer_names:
                fully_shard(sub)
        fully_shard(module)
        for sub in module.modules():
            if isinstance(sub, FSDPModule):
                sub.set_gradient_divide_factor(1.0)
                sub.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no pre-multiplied sum)


# ---- full (unsharded) states, for checkpoints that load at any number of ranks -----------------------------------


def _is_sharded(t: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full_tensor(t: Tensor) -> Tensor:
    """The whole tensor of an FSDP shard (a collective: every rank must call it), or ``t`` itself."""
    return t.full_tensor() if _is_sharded(t) else t  # type: ignore[attr-defined, no-any-return]


def copy_full_into(param: Tensor, full: Tensor) -> None:
    """Copy a whole tensor into a parameter, keeping only this rank's shard of an FSDP parameter."""
    with torch.no_grad():
        if _is_sharded(param):
            from torch.distributed.tensor import distribute_tensor

            shard = distribute_tensor(
                full.to(param.device, param.dtype),
                param.device_mesh,  # type: ignore[attr-defined]
                param.placements,  # type: ignore[attr-defined]
            )
            param.copy_(shard)
        else:
            param.copy_(full.to(param.device, param.dtype))


def optimizer_state(optimizer: torch.optim.Optimizer, module: nn.Module) -> dict[str, Any]:
    """The optimizer's state dict, whole (gathered from the FSDP shards of ``module``'s parameters if any)."""
    if not any(_is_sharded(p) for group in optimizer.param_groups for p in group["params"]):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return {"fsdp_full": get_optimizer_state_dict(module, optimizer, options=options)}


def load_optimizer_state(optimizer: torch.optim.Optimizer, module: nn.Module, state: dict[str, Any]) -> None:
    """Restore :func:`optimizer_state` (into FSDP shards when the parameters are sharded)."""
    sharded = any(_is_sharded(p) for group in optimizer.param_groups for p in group["params"])
    if "fsdp_full" not in state and not sharded:
        optimizer.load_state_dict(state)
        return
    if not sharded:
        raise ValueError(
            "This checkpoint's optimizer state was saved from FSDP-sharded models; resume it with "
            "distributed.strategy: fsdp"
        )
    if "fsdp_full" not in state:
        raise ValueError(
            "This checkpoint's optimizer state was saved without FSDP; resume it with distributed.strategy: ddp"
        )
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(
        module, optimizer, optim_state_dict=state["fsdp_full"], options=StateDictOptions(full_state_dict=True)
    )
