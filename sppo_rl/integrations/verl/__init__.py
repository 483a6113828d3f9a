"""SPPO (Sequence-Level PPO) as a plugin of upstream verl: ``pip install "sppo-rl[verl]"``, no fork.

verl imports :mod:`sppo_rl.integrations.verl.plugin` by itself (``verl.plugins`` entry point), which registers
in verl's own registries:

- the advantage estimator ``seq_ppo`` (:func:`~sppo_rl.integrations.verl.estimator.compute_seq_ppo_advantage`,
  ``A = R - sigmoid(l(s_p))`` on every response token, through :mod:`sppo_rl.objectives`);
- the trainer mode ``seq_ppo`` (:class:`~sppo_rl.integrations.verl.trainer.SeqPPOTrainer`, verl's synchronous
  trainer that passes the critic's values to the estimator and trains the critic with
  :func:`~sppo_rl.integrations.verl.losses.seq_ppo_value_loss`, BCE on the last-prompt-token logit).

:data:`CONFIG_DIR` holds ``seq_ppo_trainer.yaml``, the paper's recipe as a Hydra config on top of verl's
``ppo_trainer``. See ``docs/verl.md``.

This package imports ``verl`` first, completely, and its other names lazily (PEP 562): verl's own import loads
the plugin, which must never meet a half-imported module of this package, and a module that fails to import
must fail inside the plugin, which reports it, not in this package's ``__init__``, which runs before it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import verl  # noqa: F401  (see above: verl, and with it this plugin, is loaded before any module here)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from sppo_rl.integrations.verl.estimator import (
        SEQ_PPO,
        CriticValuesMissingError,
        compute_seq_ppo_advantage,
        sequence_outcomes,
    )
    from sppo_rl.integrations.verl.losses import seq_ppo_value_loss
    from sppo_rl.integrations.verl.trainer import SeqPPOTrainer, check_seq_ppo_config

CONFIG_DIR = Path(__file__).parent / "config"
"""Folder of ``seq_ppo_trainer.yaml``: pass it to verl's ``main_ppo`` as ``--config-path``."""

_LAZY = {
    "SEQ_PPO": "sppo_rl.integrations.verl.estimator",
    "CriticValuesMissingError": "sppo_rl.integrations.verl.estimator",
    "compute_seq_ppo_advantage": "sppo_rl.integrations.verl.estimator",
    "sequence_outcomes": "sppo_rl.integrations.verl.estimator",
    "seq_ppo_value_loss": "sppo_rl.integrations.verl.losses",
    "SeqPPOTrainer": "sppo_rl.integrations.verl.trainer",
    "check_seq_ppo_config": "sppo_rl.integrations.verl.trainer",
}

__all__ = [
    "CONFIG_DIR",
    "SEQ_PPO",
    "CriticValuesMissingError",
    "SeqPPOTrainer",
    "check_seq_ppo_config",
    "compute_seq_ppo_advantage",
    "seq_ppo_value_loss",
    "sequence_outcomes",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
