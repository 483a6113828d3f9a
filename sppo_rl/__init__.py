"""sppo-rl: Sequence-Level PPO (SPPO, arXiv 2604.08865) for stable-baselines3 users and LLM fine-tuning.

>>> from sppo_rl import SPPO
>>> model = SPPO("MlpPolicy", "CartPole-v1").learn(10_000)  # doctest: +SKIP

The names below are imported lazily (PEP 562), so ``import sppo_rl.llm`` or ``import sppo_rl.objectives``
needs only torch: stable-baselines3 and gymnasium are imported the first time ``SPPO`` or a policy is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sppo_rl.version import __version__

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from sppo_rl.policies import CnnPolicy, MlpPolicy, MultiInputPolicy, SPPOPolicy
    from sppo_rl.sppo import SPPO, EpisodeLengthError
    from sppo_rl.value_heads import BernoulliValueHead, GaussianValueHead, OutcomeError, ValueHead

_LAZY = {
    "SPPO": "sppo_rl.sppo",
    "EpisodeLengthError": "sppo_rl.sppo",
    "CnnPolicy": "sppo_rl.policies",
    "MlpPolicy": "sppo_rl.policies",
    "MultiInputPolicy": "sppo_rl.policies",
    "SPPOPolicy": "sppo_rl.policies",
    "BernoulliValueHead": "sppo_rl.value_heads",
    "GaussianValueHead": "sppo_rl.value_heads",
    "OutcomeError": "sppo_rl.value_heads",
    "ValueHead": "sppo_rl.value_heads",
}

__all__ = [
    "SPPO",
    "BernoulliValueHead",
    "CnnPolicy",
    "EpisodeLengthError",
    "GaussianValueHead",
    "MlpPolicy",
    "MultiInputPolicy",
    "OutcomeError",
    "SPPOPolicy",
    "ValueHead",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """Import the public names on first use (PEP 562).

    :param name: the attribute asked for.
    :return: the object.
    :raises AttributeError: for a name the package does not export.
    """
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sppo_rl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names, for tab completion."""
    return sorted(set(globals()) | set(__all__))
