"""The run configuration of ``sppo-llm``: the YAML file's top level (:class:`RunConfig`) and its run-level sections.

:class:`RunConfig` gathers the model and trainer settings of :mod:`sppo_rl.llm.config` with the data, the rewards,
the run length, logging and evaluation. A YAML file maps onto it; unknown keys are errors (a typo never silently
does nothing)::

    cfg = RunConfig.from_yaml("llm/examples/tiny_cpu.yml", overrides=["trainer.learning_rate=1e-3"])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import CriticSpec, ModelSpec, TrainerConfig, from_dict, to_dict

__all__ = [
    "DataSpec",
    "EvalSettings",
    "RewardSpec",
    "RunConfig",
    "TrainSettings",
    "apply_overrides",
]


@dataclass
class DataSpec:
    """A prompt dataset (see :func:`~sppo_rl.llm.data.load_rows`), in TRL's conventions.

    :param source: a local ``.jsonl``/``.json``/``.parquet``/``.csv`` path, ``"reasoning_gym:<task>"``,
        ``"toy:copy_digit"``, or a dict ``{"reasoning_gym": ..., "size": ..., "seed": ...}``
    :param template: prompt template with ``{column}`` placeholders (``None``: the prompt column as it is); not
        used for a conversational prompt
    :param system: optional system message (not used for a conversational prompt)
    :param prompt_column: the column with the prompt, text or a list of chat messages (``None``: ``prompt`` when
        the rows have it, else ``question``); every other column is passed to the reward functions by name
    :param answer_column: column with the reference answer (read by the built-in verifiers)
    :param size: number of rows for generated sources
    :param seed: seed for generated sources
    :param max_rows: keep only the first rows (``None``: all)
    """

    source: Any = None
    template: str | None = None
    system: str | None = None
    prompt_column: str | None = None
    answer_column: str = "answer"
    size: int | None = None
    seed: int | None = None
    max_rows: int | None = None


@dataclass
class RewardSpec:
    """The reward functions, how they combine, and what the critic learns (see :mod:`sppo_rl.llm.rewards`).

    :param name: one reward or a list: ``"boxed_math"``, ``"exact_match"``, ``"reasoning_gym"`` or
        ``"module:function"`` (a TRL-style function, imported from the working folder or the installed packages)
    :param weights: one weight per reward (TRL's ``reward_weights``; ``None``: 1 each)
    :param options: the options of a single reward (constructor arguments of a built-in, e.g. ``{"mode":
        "prefix"}``, or keyword arguments bound to a function); with several, a mapping name -> options
    :param outcome: what the critic learns and the advantage estimator uses as ``R``: ``None`` (the weighted sum),
        a reward's name (that function's value), or a number ``t`` (1 when the weighted sum >= ``t``, else 0)
    :param timeout_s: seconds per call of a function on its slice of a batch; a stuck call's worker is killed
    :param workers: worker processes that score in parallel (0: in this process)
    :param max_failure_rate: training stops when more than this share of a batch's samples fail for a function;
        below it, failed samples score 0 for that function, with a warning
    """

    name: str | list[str] = "boxed_math"
    weights: list[float] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    outcome: str | float | None = None
    timeout_s: float | None = 30.0
    workers: int = 4
    max_failure_rate: float = 0.5


@dataclass
class EvalSettings:
    """Held-out evaluation (accuracy avg@k).

    :param k: samples per prompt
    :param temperature: sampling temperature (``None``: the training temperature)
    :param max_new_tokens: ``None``: the training limit
    :param max_prompts: evaluate on the first prompts only (``None``: all)
    :param batch_size: prompts per generation batch
    :param seed: evaluation sampling seed (evaluation never disturbs the training random state)
    """

    k: int = 4
    temperature: float | None = None
    max_new_tokens: int | None = None
    max_prompts: int | None = None
    batch_size: int = 64
    seed: int = 1234


@dataclass
class TrainSettings:
    """The training run (``sppo-llm train``).

    :param n_iterations: iterations (prompt batches) to run in total (counting those of a resumed checkpoint)
    :param total_steps: alternatively, responses to sample in total (``n_iterations`` wins when both are set)
    :param log_interval: dump the logs every this many iterations
    :param save_interval: save a checkpoint every this many iterations (``None``: only at the end)
    :param eval_interval: evaluate every this many iterations (``None``: only at the end, if there is
        ``eval_data``)
    :param logger: local outputs (:data:`sppo_rl.llm.run_logs.FORMATS`): ``"compact"`` (one console line per log
        interval), ``"stdout"`` (SB3's table), ``"csv"`` (``progress.csv``, appended on resume), ``"json"``,
        ``"tensorboard"``, ``"log"``
    :param report_to: trackers (TRL's ``report_to``): ``tensorboard``, ``wandb``, ``trackio``, ``mlflow``; a resumed
        run continues the same tracker run
    :param project: the trackers' project
    :param run_name: the trackers' run name (default: the output folder's name)
    :param log_completions_interval: every this many iterations, write a sample of prompts, responses, outcomes,
        critic values and advantages to ``completions.jsonl`` and to the trackers as a table (``None``: only at
        evaluations)
    :param completions_to_log: how many sequences each completion log holds
    :param progress_bar: show a progress bar (``"auto"``: when the console is a terminal)
    """

    n_iterations: int | None = None
    total_steps: int | None = None
    log_interval: int = 1
    save_interval: int | None = None
    eval_interval: int | None = None
    logger: list[str] = field(default_factory=lambda: ["compact", "csv"])
    report_to: list[str] = field(default_factory=list)
    project: str = "sppo-rl"
    run_name: str | None = None
    log_completions_interval: int | None = None
    completions_to_log: int = 8
    progress_bar: bool | str = "auto"


@dataclass
class RunConfig:
    """Everything ``sppo-llm train|eval`` needs; the YAML file's top level.

    :param policy: the policy model and its LoRA adapter
    :param critic: the value model
    :param data: the training prompts
    :param eval_data: held-out prompts (optional)
    :param reward: the reward functions and the outcome
    :param trainer: algorithm hyperparameters
    :param train: run length, logging and checkpoints
    :param eval: evaluation settings
    :param output_dir: where logs and checkpoints go
    :param seed: overrides ``trainer.seed`` when set
    :param imports: Python modules imported before anything is built, from the working folder or the installed
        packages: where your own advantage estimators, reward functions or generation engines register themselves
        (e.g. ``[my_estimators]`` for a ``my_estimators.py`` beside the config's working folder)
    """

    policy: ModelSpec = field(default_factory=ModelSpec)
    critic: CriticSpec = field(default_factory=CriticSpec)
    data: DataSpec = field(default_factory=DataSpec)
    eval_data: DataSpec | None = None
    reward: RewardSpec = field(default_factory=RewardSpec)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    output_dir: str = "runs/sppo-llm"
    seed: int | None = None
    imports: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.seed is not None:
            self.trainer.seed = self.seed

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Build from a nested dict (unknown keys raise ``ValueError``)."""
        return from_dict(cls, data)

    @classmethod
    def from_yaml(cls, path: str, overrides: Sequence[str] = ()) -> RunConfig:
        """Read a YAML file, apply ``key.sub=value`` overrides (values parsed as YAML), build the config.

        :param path: the YAML file
        :param overrides: e.g. ``["trainer.learning_rate=1e-5", "train.n_iterations=10"]``
        """
        import yaml

        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the top level of the config must be a mapping")
        apply_overrides(data, overrides)
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-serialisable nested dict."""
        return to_dict(self)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> None:
    """Apply ``a.b.c=value`` overrides to a nested dict in place (values parsed as YAML scalars/lists)."""
    import yaml

    for item in overrides:
        if "=" not in item:
            raise ValueError(f"Override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ValueError(f"Override {item!r}: {part!r} is not a section")
            node = nxt
        node[parts[-1]] = yaml.safe_load(raw)
