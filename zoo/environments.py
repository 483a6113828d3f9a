"""Environment ids for the zoo: gymnasium ids, the control suite, ``module:Class`` references and vector envs.

Importing the zoo's commands imports :mod:`sppo_rl.envs` (when it is installed) so the suite's ids
(``SparsePendulum-v0``...) resolve, and registers the toy task as ``LineTarget-v0`` (and
``LineTargetContinuous-v0``). An id may also be ``module:Name`` where ``Name`` is a registered id
(``sppo_rl.envs:SparseHopper-v0``) or an env class or constructor (``sppo_rl.envs.toy:LineTargetEnv``).
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from .errors import ZooError

__all__ = [
    "SUITE_PACKAGE",
    "VEC_ENV_CLASSES",
    "ZOO_ENV_IDS",
    "EnvFactory",
    "import_gym_packages",
    "make_vec",
    "probe_success",
    "register_zoo_envs",
    "resolve_env",
]

SUITE_PACKAGE = "sppo_rl.envs"
"""Imported (if present) so the control suite's ids resolve."""

ZOO_ENV_IDS: dict[str, tuple[str, dict[str, Any]]] = {
    "LineTarget-v0": ("sppo_rl.envs.toy:LineTargetEnv", {}),
    "LineTargetContinuous-v0": ("sppo_rl.envs.toy:LineTargetEnv", {"continuous": True}),
}
"""Ids the zoo registers itself: id -> (entry point, default kwargs)."""

VEC_ENV_CLASSES: dict[str, type[DummyVecEnv] | type[SubprocVecEnv]] = {
    "dummy": DummyVecEnv,
    "subproc": SubprocVecEnv,
}


def register_zoo_envs() -> None:
    """Register :data:`ZOO_ENV_IDS` with gymnasium (ids already registered are left alone)."""
    for env_id, (entry_point, kwargs) in ZOO_ENV_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point, kwargs=kwargs)


def import_gym_packages(packages: Sequence[str] = ()) -> None:
    """Register the zoo's ids, import the control suite if installed, then the user's packages.

    :param packages: modules to import for their gymnasium registrations (``--gym-packages``)
    :raises ZooError: if one of ``packages`` cannot be imported
    """
    register_zoo_envs()
    try:
        importlib.import_module(SUITE_PACKAGE)
    except ModuleNotFoundError as err:
        if err.name is None or not SUITE_PACKAGE.startswith(err.name):
            raise
    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError as err:
            raise ZooError(f"--gym-packages: cannot import {package!r} ({err})") from err


class EnvFactory:
    """A picklable constructor for one environment id (works with ``SubprocVecEnv`` under any start method).

    :param env_id: a gymnasium id, ``module:id`` or ``module:ClassOrFunction``
    :param packages: modules to import before building (``--gym-packages``)
    """

    def __init__(self, env_id: str, packages: Sequence[str] = ()) -> None:
        self.env_id = env_id
        self.packages = tuple(packages)

    @property
    def folder_name(self) -> str:
        """The id with characters unsafe in file names (``:``, ``/``...) replaced by ``-``."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.env_id)

    def _constructor(self) -> Callable[..., gymnasium.Env]:
        module_name, sep, name = self.env_id.partition(":")
        if not sep:
            return lambda **kwargs: gymnasium.make(self.env_id, **kwargs)
        module = importlib.import_module(module_name)
        if name in gymnasium.registry:
            return lambda **kwargs: gymnasium.make(name, **kwargs)
        return getattr(module, name)

    def __call__(self, **kwargs: Any) -> gymnasium.Env:
        """Build one environment.

        :param kwargs: keyword arguments of the env (``env_kwargs``, ``render_mode``)
        :return: the environment
        """
        import_gym_packages(self.packages)
        return self._constructor()(**kwargs)

    def __repr__(self) -> str:
        return f"EnvFactory({self.env_id!r})"


def resolve_env(env_id: str, packages: Sequence[str] = ()) -> EnvFactory:
    """Check that an environment id can be built and return its constructor.

    :param env_id: a gymnasium id, ``module:id`` or ``module:ClassOrFunction``
    :param packages: modules to import first (``--gym-packages``)
    :return: a picklable constructor
    :raises ZooError: naming the id (and close matches) if it is unknown
    """
    import_gym_packages(packages)
    module_name, sep, name = env_id.partition(":")
    if sep:
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ZooError(f"Unknown environment {env_id!r}: cannot import module {module_name!r} ({err})") from err
        if name not in gymnasium.registry and not callable(getattr(module, name, None)):
            raise ZooError(
                f"Unknown environment {env_id!r}: {module_name!r} has no env class or function {name!r} "
                "and no registered id of that name"
            )
    elif env_id not in gymnasium.registry:
        close = difflib.get_close_matches(env_id, list(gymnasium.registry), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ZooError(
            f"Unknown environment id {env_id!r} (not registered with gymnasium; import its package with "
            f"--gym-packages or write it as module:Class){hint}"
        )
    return EnvFactory(env_id, packages)


def make_vec(
    factory: EnvFactory,
    n_envs: int,
    seed: int | None,
    env_kwargs: Mapping[str, Any] | None = None,
    monitor_dir: str | None = None,
    vec_env: str = "dummy",
    info_keywords: Sequence[str] = (),
) -> VecEnv:
    """Build a ``Monitor``-wrapped vector env (SB3's ``make_vec_env`` with a zoo env id).

    :param factory: the env constructor
    :param n_envs: environments
    :param seed: seed of env ``i`` is ``seed + i`` (``None``: unseeded)
    :param env_kwargs: keyword arguments of every env
    :param monitor_dir: where ``Monitor`` writes ``<i>.monitor.csv`` (``None``: no file)
    :param vec_env: ``"dummy"`` or ``"subproc"``
    :param info_keywords: ``info`` keys logged by ``Monitor`` at the end of each episode (``is_success``)
    :return: the vector env
    """
    return make_vec_env(
        factory,
        n_envs=n_envs,
        seed=seed,
        monitor_dir=monitor_dir,
        env_kwargs=dict(env_kwargs or {}),
        vec_env_cls=VEC_ENV_CLASSES[vec_env],
        monitor_kwargs={"info_keywords": tuple(info_keywords)},
    )


def probe_success(factory: EnvFactory, env_kwargs: Mapping[str, Any] | None = None, max_steps: int = 100_000) -> bool:
    """Whether the env reports ``info["is_success"]`` at the end of an episode (one episode of random actions).

    Also checks that the env can be built with ``env_kwargs``.

    :param factory: the env constructor
    :param env_kwargs: keyword arguments of the env
    :param max_steps: give up (``False``) if no episode has ended after this many steps
    :return: ``True`` if the final ``info`` of the episode has ``is_success``
    :raises ZooError: if the env cannot be built with these keyword arguments
    """
    try:
        env = factory(**dict(env_kwargs or {}))
    except (TypeError, ValueError) as err:  # an unknown keyword; a value the env refuses
        raise ZooError(f"Cannot build {factory.env_id!r} with env_kwargs={dict(env_kwargs or {})}: {err}") from err
    try:
        env.reset(seed=0)
        env.action_space.seed(0)
        for _ in range(max_steps):
            _, _, terminated, truncated, info = env.step(env.action_space.sample())
            if terminated or truncated:
                return "is_success" in info
        return False
    finally:
        env.close()
