"""The algorithms the zoo knows: a small registry (name -> class, default hyperparameter file, search space).

>>> from sppo_rl.zoo.algos import ALGOS, register_algo, AlgoSpec
>>> sorted(ALGOS)
['ppo', 'sppo']

More can be added with :func:`register_algo` (say SB3's A2C) before calling :func:`sppo_rl.zoo.cli.main`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm

from sppo_rl import SPPO

from .errors import ZooError
from .search_spaces import SearchSpace, sample_ppo_params, sample_sppo_params

__all__ = ["ALGOS", "HYPERPARAMS_DIR", "AlgoSpec", "get_algo", "register_algo"]

HYPERPARAMS_DIR = Path(__file__).with_name("hyperparams")
"""Where the default hyperparameter files ``<algo>.yml`` live (installed as package data)."""

# Constructor arguments that the zoo sets itself (from the command line), never from a YAML entry.
_SET_BY_THE_ZOO = frozenset(
    {"self", "env", "policy", "seed", "device", "verbose", "tensorboard_log", "_init_setup_model"}
)

ZOO_KEYS = frozenset({"policy", "n_timesteps", "n_envs", "normalize", "env_kwargs"})
"""Keys of a YAML entry that are not constructor arguments of the algorithm."""


@dataclass(frozen=True)
class AlgoSpec:
    """One algorithm of the zoo.

    :param name: the ``--algo`` name
    :param cls: the SB3 algorithm class
    :param search_space: the Optuna search space for ``tune`` (``None``: not tunable)
    :param default_policy: the policy used when an entry has no ``policy`` key
    """

    name: str
    cls: type[BaseAlgorithm]
    search_space: SearchSpace | None = None
    default_policy: str = "MlpPolicy"

    @property
    def hyperparams_file(self) -> Path:
        """The default hyperparameter file, ``zoo/hyperparams/<name>.yml``."""
        return HYPERPARAMS_DIR / f"{self.name}.yml"

    def constructor_keys(self) -> frozenset[str]:
        """The constructor arguments a YAML entry may set (the class's keyword arguments, minus those the zoo
        sets from the command line and those a class takes only for calls written for another algorithm, such as
        ``SPPO.ppo_only_keywords``: in a hyperparameter file they are mistakes)."""
        parameters = inspect.signature(self.cls.__init__).parameters
        foreign = frozenset(getattr(self.cls, "ppo_only_keywords", ()))
        return frozenset(parameters) - _SET_BY_THE_ZOO - foreign

    def allowed_keys(self) -> frozenset[str]:
        """All keys a YAML entry may have: constructor arguments and the zoo's own keys."""
        return self.constructor_keys() | ZOO_KEYS


ALGOS: dict[str, AlgoSpec] = {}
"""The registry: ``--algo`` name -> :class:`AlgoSpec`."""


def register_algo(spec: AlgoSpec, overwrite: bool = False) -> None:
    """Add an algorithm to the registry.

    :param spec: the algorithm
    :param overwrite: replace an algorithm of the same name
    :raises ValueError: if the name is taken and ``overwrite`` is false
    """
    if spec.name in ALGOS and not overwrite:
        raise ValueError(f"An algorithm named {spec.name!r} is already registered")
    ALGOS[spec.name] = spec


def get_algo(name: str) -> AlgoSpec:
    """The registered algorithm called ``name``.

    :param name: the ``--algo`` name (case-insensitive)
    :return: its spec
    :raises ZooError: naming the known algorithms, if there is none of that name
    """
    spec = ALGOS.get(name.lower())
    if spec is None:
        raise ZooError(f"Unknown algorithm {name!r}; known: {', '.join(sorted(ALGOS))}")
    return spec


register_algo(AlgoSpec("sppo", SPPO, search_space=sample_sppo_params))
register_algo(AlgoSpec("ppo", PPO, search_space=sample_ppo_params))
