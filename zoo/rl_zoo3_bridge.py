"""Run SPPO inside rl-baselines3-zoo (``rl_zoo3``), for users of that zoo.

``rl_zoo3`` is not a dependency of sppo-rl: install it yourself (``pip install rl_zoo3``), then::

    python -m sppo_rl.zoo.rl_zoo3_bridge train --algo sppo --env SparsePendulum-v0 -n 100000
    python -m sppo_rl.zoo.rl_zoo3_bridge enjoy --algo sppo --env SparsePendulum-v0 -f logs/

This adds ``"sppo": sppo_rl.SPPO`` to rl_zoo3's algorithm table (the way rl_zoo3's documentation adds
algorithms from other packages), imports :mod:`sppo_rl.envs` (``--gym-packages``) and, for ``--algo sppo``
without ``-conf``, uses this package's ``zoo/hyperparams/sppo.yml``. rl_zoo3's own tuner has no SPPO search
space: tune with ``sppo-zoo tune``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from sppo_rl import SPPO

from .algos import get_algo

__all__ = ["main", "register"]

_COMMANDS = {"train": ("rl_zoo3.train", "train"), "enjoy": ("rl_zoo3.enjoy", "enjoy")}


def register() -> None:
    """Add SPPO to ``rl_zoo3.ALGOS`` (and to the copies its modules imported).

    :raises ModuleNotFoundError: if rl_zoo3 is not installed
    """
    rl_zoo3 = importlib.import_module("rl_zoo3")
    rl_zoo3.ALGOS["sppo"] = SPPO
    for name in ("rl_zoo3.train", "rl_zoo3.exp_manager", "rl_zoo3.enjoy"):
        try:
            module = importlib.import_module(name)
        except ImportError:  # pragma: no cover - older rl_zoo3 layouts
            continue
        module.ALGOS = rl_zoo3.ALGOS  # type: ignore[attr-defined]


def _with_defaults(argv: list[str]) -> list[str]:
    argv = list(argv)
    if "--gym-packages" not in argv:
        argv += ["--gym-packages", "sppo_rl.envs"]
    algo = argv[argv.index("--algo") + 1] if "--algo" in argv[:-1] else None
    if algo == "sppo" and not {"-conf", "--conf-file"} & set(argv):
        argv += ["--conf-file", str(get_algo("sppo").hyperparams_file)]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sppo_rl.zoo.rl_zoo3_bridge {train,enjoy} [rl_zoo3 options]``.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    :return: the exit code
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in _COMMANDS:
        print(
            f"usage: python -m sppo_rl.zoo.rl_zoo3_bridge {{{','.join(_COMMANDS)}}} [rl_zoo3 options]", file=sys.stderr
        )
        return 2
    try:
        register()
    except ModuleNotFoundError:
        print(
            "sppo-zoo: error: rl_zoo3 is not installed (pip install rl_zoo3); sppo-zoo itself needs no rl_zoo3",
            file=sys.stderr,
        )
        return 2
    module_name, function = _COMMANDS[argv[0]]
    entry = getattr(importlib.import_module(module_name), function)
    sys.argv = [module_name, *_with_defaults(argv[1:])]
    entry()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
