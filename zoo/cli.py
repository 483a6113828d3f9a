"""The ``sppo-zoo`` command: ``train``, ``eval`` and ``tune`` (also ``train -optimize``).

Run ``sppo-zoo <command> --help`` for the options; ``docs/zoo.md`` walks through them. Bad input (an unknown
algorithm, env id or hyperparameter, a malformed YAML file...) gives one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from .errors import ZooError

__all__ = ["build_parser", "main"]

PROG = "sppo-zoo"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit code 2), without the usage text."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer of at least ``minimum``; otherwise argparse's one-line error names the
    option, e.g. ``argument -n/--n-timesteps: must be at least 1, got -5``.

    :param minimum: the smallest value accepted
    :return: the converter
    """

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    convert.__name__ = f"integer >= {minimum}"
    return convert


_COUNT = _at_least(1)
_NON_NEGATIVE = _at_least(0)


def _algo_names() -> list[str]:
    from .algos import ALGOS

    return sorted(ALGOS)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--algo", required=True, choices=_algo_names(), help="algorithm")
    parser.add_argument("--env", dest="env_id", required=True, help="environment id (gymnasium id or module:Class)")
    parser.add_argument("-f", "--log-folder", default="logs", help="log folder (default: logs)")
    parser.add_argument("--gym-packages", nargs="+", default=[], help="modules to import for their env ids")
    parser.add_argument("--device", default="auto", help="torch device (default: auto)")
    parser.add_argument(
        "--verbose", type=_NON_NEGATIVE, default=1, help="verbosity: 0 quiet, 1 info (default), 2 debug"
    )


def _add_hyperparams(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-conf", "--conf-file", default=None, help="hyperparameter YAML file (entries keyed by env id)")
    parser.add_argument(
        "-params",
        "--hyperparams",
        dest="params",
        nargs="+",
        default=[],
        metavar="KEY:VALUE",
        help="override hyperparameters, e.g. learning_rate:1e-3 'policy_kwargs:dict(net_arch=[64])'",
    )
    parser.add_argument("-n", "--n-timesteps", type=_COUNT, default=-1, help="training steps (default: from the YAML)")
    parser.add_argument("--vec-env", choices=["dummy", "subproc"], default="dummy", help="vector env class")
    parser.add_argument(
        "--num-threads", type=int, default=1, help="torch threads (default: 1, fastest for small MLPs; 0: torch's)"
    )


def add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``tune`` (also accepted by ``train -optimize``)."""
    group = parser.add_argument_group("tuning")
    group.add_argument(
        "--n-trials", type=_COUNT, default=10, help="finished trials of the study, all processes together"
    )
    group.add_argument("--n-jobs", type=_COUNT, default=1, help="trials in parallel in this process (threads)")
    group.add_argument("--sampler", choices=["tpe", "random"], default="tpe", help="Optuna sampler (default: tpe)")
    group.add_argument("--sampler-seed", type=_NON_NEGATIVE, default=None, help="sampler seed (default: random)")
    group.add_argument(
        "--pruner", choices=["median", "halving", "none"], default="median", help="Optuna pruner (default: median)"
    )
    group.add_argument(
        "--n-startup-trials", type=_NON_NEGATIVE, default=5, help="random trials before TPE / the pruner act"
    )
    group.add_argument("--n-evaluations", type=_COUNT, default=5, help="evaluation points per trial (for pruning)")
    group.add_argument("--n-seeds-per-trial", type=_COUNT, default=1, help="seeds trained per trial")
    group.add_argument(
        "--objective", choices=["mean", "median"], default="mean", help="aggregate over the seeds (default: mean)"
    )
    group.add_argument("--storage", default=None, help="sqlite:///study.db, postgresql://..., or a journal file *.log")
    group.add_argument("--study-name", default=None, help="study name (default: <algo>-<env>)")
    group.add_argument(
        "--heartbeat-interval",
        type=_COUNT,
        default=30,
        help="seconds between heartbeats of running trials (default: 30)",
    )
    group.add_argument("--search-space", default=None, help="module:function replacing the algorithm's search space")


def build_parser() -> argparse.ArgumentParser:
    """The ``sppo-zoo`` argument parser."""
    parser = _Parser(prog=PROG, description="Train, evaluate and tune SPPO and PPO (rl-baselines3-zoo style).")
    commands = parser.add_subparsers(dest="zoo_command", required=True, parser_class=_Parser, metavar="COMMAND")

    train = commands.add_parser("train", help="train from a hyperparameter file", description="Train a model.")
    _add_common(train)
    _add_hyperparams(train)
    train.add_argument("--seed", type=int, default=-1, help="random seed (default: random; tune: 0)")
    train.add_argument("-i", "--trained-agent", default=None, help="continue training this saved model (.zip)")
    train.add_argument("--eval-freq", type=int, default=10_000, help="evaluate every N steps (<= 0: never)")
    train.add_argument("--eval-episodes", type=_COUNT, default=10, help="episodes per evaluation")
    train.add_argument("--save-freq", type=int, default=-1, help="checkpoint every N steps (<= 0: never)")
    train.add_argument("-P", "--progress", dest="progress_bar", action="store_true", help="show a progress bar")
    train.add_argument("-tb", "--tensorboard-log", default=None, help="TensorBoard log folder")
    train.add_argument("--log-interval", type=int, default=-1, help="SB3 log interval (rollouts)")
    train.add_argument("--stochastic-eval", action="store_true", help="stochastic actions in evaluations")
    train.add_argument(
        "-optimize",
        "--optimize",
        "--optimize-hyperparameters",
        dest="optimize",
        action="store_true",
        help="tune instead of training (same as the tune command)",
    )
    add_tune_arguments(train)

    tune = commands.add_parser("tune", help="tune hyperparameters with Optuna", description="Tune with Optuna.")
    _add_common(tune)
    _add_hyperparams(tune)
    tune.add_argument("--seed", type=_NON_NEGATIVE, default=0, help="first training seed of every trial (default: 0)")
    tune.add_argument("--eval-episodes", type=_COUNT, default=10, help="episodes per evaluation and seed")
    tune.add_argument("--stochastic-eval", action="store_true", help="stochastic actions in evaluations")
    add_tune_arguments(tune)

    evaluate = commands.add_parser("eval", help="evaluate a saved run", description="Evaluate a saved run.")
    _add_common(evaluate)
    evaluate.add_argument("--exp-id", type=_NON_NEGATIVE, default=0, help="experiment id (default: 0, the latest)")
    evaluate.add_argument("-n", "--n-episodes", type=_COUNT, default=100, help="episodes (default: 100)")
    evaluate.add_argument("--load-best", action="store_true", help="load best_model.zip")
    evaluate.add_argument("--load-checkpoint", type=_COUNT, default=None, metavar="STEPS", help="load a checkpoint")
    evaluate.add_argument("--stochastic", action="store_true", help="stochastic actions")
    evaluate.add_argument("--seed", type=_NON_NEGATIVE, default=0, help="seed of the evaluation envs (default: 0)")
    evaluate.add_argument("--n-envs", type=_COUNT, default=1, help="evaluation envs (default: 1)")
    evaluate.add_argument(
        "--json", dest="json_path", default=None, help="JSON file (default: <run>/eval_<model>.json; -: stdout)"
    )
    evaluate.add_argument("--video", action="store_true", help="also record a GIF (Pillow)")
    evaluate.add_argument("--video-length", type=_COUNT, default=300, help="steps in the GIF (default: 300)")
    evaluate.add_argument("--video-path", default=None, help="GIF file (default: <run>/videos/<env>_<model>.gif)")

    suite = commands.add_parser(
        "suite",
        help="the paper's control protocol: expert -> behaviour cloning -> SPPO vs PPO",
        description="Run the three-stage protocol of zoo/suite.yml for one sparse task and write its results.",
    )
    suite.add_argument("--env", dest="env_id", required=True, help="sparse task id, e.g. SparsePrecisionCartPole-v0")
    suite.add_argument(
        "--algos",
        nargs="+",
        default=["sppo", "ppo", "ppo-sb3", "ema"],
        help="stage-3 algorithms: sppo, ppo, ppo-sb3, ema, batch-mean (default: sppo ppo ppo-sb3 ema)",
    )
    suite.add_argument(
        "--seeds", nargs="+", type=_NON_NEGATIVE, default=[0, 1, 2, 3, 4], help="seeds (default: 0 1 2 3 4)"
    )
    suite.add_argument("--jobs", type=_COUNT, default=1, help="parallel processes for stage 3 (default: 1)")
    suite.add_argument("--episodes", type=_COUNT, default=None, help="episode budget per run (default: suite.yml)")
    suite.add_argument("--window", type=_COUNT, default=None, help="episodes per curve point (default: suite.yml)")
    suite.add_argument("--out", dest="out_dir", default="logs/suite", help="results folder (default: logs/suite)")
    suite.add_argument("--expert-cache", default=None, help="expert cache (default: ~/.cache/sppo-rl/experts)")
    suite.add_argument("--start-policy", default=None, help="start policy file (default: the committed one)")
    suite.add_argument("--rebuild-start", action="store_true", help="rerun stages 1 and 2, overwrite the start")
    suite.add_argument("--config", dest="suite_config", default=None, help="settings file (default: zoo/suite.yml)")
    return parser


def _tune_settings(args: dict, command: str):
    from .tune import TuneSettings

    names = TuneSettings.__dataclass_fields__
    values = {k: v for k, v in args.items() if k in names}
    values["deterministic_eval"] = not args.get("stochastic_eval", False)
    if args.get("seed", 0) < 0:  # train's default seed is random; a study's seeds must be fixed
        values["seed"] = 0
    return TuneSettings(**values, command=command)


def _run(args: argparse.Namespace, command: str) -> int:
    values = vars(args)
    if args.zoo_command == "tune" or (args.zoo_command == "train" and args.optimize):
        from .tune import tune

        tune(_tune_settings(values, command))
        return 0
    if args.zoo_command == "suite":
        from .control_suite import DEFAULT_EXPERT_CACHE, SuiteSettings, run_suite

        names = SuiteSettings.__dataclass_fields__
        settings_suite = SuiteSettings(**{k: v for k, v in values.items() if k in names and v is not None})
        settings_suite.expert_cache = values.get("expert_cache") or DEFAULT_EXPERT_CACHE
        run_suite(settings_suite)
        return 0
    if args.zoo_command == "train":
        from .train import settings_from_args, train

        settings = settings_from_args(values)
        settings.command = command
        settings.deterministic_eval = not args.stochastic_eval
        train(settings)
        return 0
    from .evaluate import EvalSettings, evaluate

    names = EvalSettings.__dataclass_fields__
    settings_eval = EvalSettings(**{k: v for k, v in values.items() if k in names})
    settings_eval.deterministic = not args.stochastic
    evaluate(settings_eval)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sppo-zoo``.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    :return: the exit code (0 success, 2 bad input)
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures are written to files, never shown
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    command = shlex.join([PROG, *argv])
    try:
        return _run(args, command)
    except ZooError as err:
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
