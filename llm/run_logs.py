"""Where a run's numbers go: a compact console line, ``progress.csv`` (appended on resume), TensorBoard, and the
trackers TRL users know (Weights & Biases, Trackio, MLflow), all as stable-baselines3 ``KVWriter`` outputs of one
SB3 ``Logger``; plus the completion logs (``completions.jsonl`` and a table in each tracker).

``report_to`` names the trackers (``tensorboard``, ``wandb``, ``trackio``, ``mlflow``); each is imported only
when asked for, through its own optional extra (``pip install "sppo-rl[wandb]"``, ...). A resumed run appends to
``progress.csv`` (its rows after the checkpoint, from the interrupted part, are dropped) and continues the same
tracker run (the run id is kept in the output folder).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stable_baselines3.common.logger import (
    HumanOutputFormat,
    JSONOutputFormat,
    KVWriter,
    Logger,
    TensorBoardOutputFormat,
    filter_excluded_keys,
)

__all__ = [
    "FORMATS",
    "TRACKERS",
    "AppendingCSV",
    "CompactConsole",
    "RunLog",
    "make_run_log",
    "truncate_progress",
]

FORMATS = ("stdout", "compact", "csv", "json", "tensorboard", "log")
"""Local outputs (``train.logger``): SB3's ``stdout`` table, ``compact`` (one line an interval), ``csv`` (appending
``progress.csv``), ``json``, ``tensorboard``, ``log`` (SB3's text log)."""
TRACKERS = ("tensorboard", "wandb", "trackio", "mlflow")
"""The trackers of ``report_to``."""

CONSOLE_KEYS = (
    ("time/iterations", "it", "{:.0f}"),
    ("rollout/reward_mean", "reward", "{:.3f}"),
    ("rollout/success_rate", "success", "{:.3f}"),
    ("train/value_brier", "brier", "{:.3f}"),
    ("train/approx_kl", "kl", "{:.2g}"),
    ("train/clip_fraction", "clip", "{:.2f}"),
    ("rollout/response_length_mean", "len", "{:.0f}"),
    ("time/iteration_s", "s/it", "{:.2f}"),
    ("eval/avg@k", "eval avg@k", "{:.3f}"),
)


class CompactConsole(KVWriter):
    """One line per dump: iteration, reward, success, critic Brier score, KL, clip fraction, length, seconds.

    :param stream: where to print (stdout)
    """

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        parts = []
        for key, label, fmt in CONSOLE_KEYS:
            value = key_values.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                parts.append(f"{label} {fmt.format(value)}")
        print(" | ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        """Nothing to close (the stream is not ours)."""


class AppendingCSV(KVWriter):
    """``progress.csv`` that a resumed run appends to (SB3's writer truncates it); new columns rewrite the header.

    :param filename: the file
    """

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.keys: list[str] = []
        if os.path.isfile(filename) and os.path.getsize(filename) > 0:
            with open(filename, encoding="utf-8", newline="") as f:
                self.keys = next(csv.reader(f), [])

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        values = filter_excluded_keys(key_values, key_excluded, "csv")
        new = [k for k in values if k not in self.keys]
        if new or not self.keys:
            rows = _read_rows(self.filename)
            self.keys += new
            with open(self.filename, "w", encoding="utf-8", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.keys)
                writer.writeheader()
                writer.writerows(rows)
        with open(self.filename, "a", encoding="utf-8", newline="") as f:
            csv.DictWriter(f, fieldnames=self.keys).writerow({k: values.get(k, "") for k in self.keys})

    def close(self) -> None:
        """Every write closes the file."""


def _read_rows(filename: str) -> list[dict[str, str]]:
    if not os.path.isfile(filename):
        return []
    with open(filename, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def truncate_progress(folder: str, iteration: int) -> int:
    """Drop the rows of ``folder/progress.csv`` after ``iteration`` (an interrupted run's, before a resume).

    :return: how many rows were dropped
    """
    filename = os.path.join(folder, "progress.csv")
    rows = _read_rows(filename)
    if not rows:
        return 0
    keep = [r for r in rows if r.get("time/iterations") and float(r["time/iterations"]) <= iteration]
    with open(filename, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(keep)
    return len(rows) - len(keep)


# ---- trackers ---------------------------------------------------------------------------------------------------


def _numbers(key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], name: str) -> dict[str, float]:
    values = filter_excluded_keys(key_values, key_excluded, name)
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}


def _run_id(folder: str, tracker: str, make: Callable[[], str]) -> str:
    """The tracker's run id kept in the output folder (a resumed run continues the same tracker run)."""
    path = Path(folder) / f".{tracker}_run_id"
    if path.is_file():
        return path.read_text().strip()
    run_id = make()
    path.write_text(run_id)
    return run_id


class WandbTracker(KVWriter):
    """Weights & Biases (``WANDB_MODE=offline`` works without an account)."""

    name = "wandb"

    def __init__(self, folder: str, project: str, run_name: str | None, config: dict[str, Any]) -> None:
        import wandb

        run_id = _run_id(folder, "wandb", lambda: uuid.uuid4().hex[:8])
        self.run = wandb.init(
            project=project,
            name=run_name,
            id=run_id,
            resume="allow",
            dir=folder,
            config=config,
            reinit="finish_previous",
        )

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        self.run.log(_numbers(key_values, key_excluded, self.name), step=step)

    def table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        import wandb

        self.run.log({name: wandb.Table(columns=list(columns), data=[list(r) for r in rows])}, step=step)

    def close(self) -> None:
        self.run.finish()


class TrackioTracker(KVWriter):
    """Trackio (Hugging Face's local-first tracker; its local store under ``TRACKIO_DIR``)."""

    name = "trackio"

    def __init__(self, folder: str, project: str, run_name: str | None, config: dict[str, Any]) -> None:
        import trackio

        self.trackio = trackio
        name = _run_id(folder, "trackio", lambda: run_name or Path(folder).resolve().name)
        self.run = trackio.init(project=project, name=name, config=config, resume="allow")

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        self.trackio.log(_numbers(key_values, key_excluded, self.name), step=step)

    def table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        import pandas as pd

        frame = pd.DataFrame([list(r) for r in rows], columns=list(columns))
        self.trackio.log({name: self.trackio.Table(dataframe=frame)}, step=step)

    def close(self) -> None:
        self.trackio.finish()


class MLflowTracker(KVWriter):
    """MLflow: a local SQLite store ``mlflow.db`` and the artifacts (completion tables) in ``mlartifacts/`` of the
    output folder, unless ``MLFLOW_TRACKING_URI`` names another server or store."""

    name = "mlflow"

    def __init__(self, folder: str, project: str, run_name: str | None, config: dict[str, Any]) -> None:
        import mlflow

        self.mlflow = mlflow
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow.set_tracking_uri(f"sqlite:///{Path(folder, 'mlflow.db').resolve()}")
            if mlflow.get_experiment_by_name(project) is None:
                # artifacts (the completion tables) beside the store, not in ./mlruns of the working directory
                mlflow.create_experiment(project, artifact_location=Path(folder, "mlartifacts").resolve().as_uri())
        mlflow.set_experiment(project)
        stored = Path(folder) / ".mlflow_run_id"
        run_id = stored.read_text().strip() if stored.is_file() else None
        self.run = mlflow.start_run(run_id=run_id, run_name=run_name)
        if run_id is None:
            stored.write_text(self.run.info.run_id)
            mlflow.log_params({k: str(v)[:500] for k, v in _flatten(config).items()})

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        metrics = {k.replace("@", "_at_"): v for k, v in _numbers(key_values, key_excluded, self.name).items()}
        self.mlflow.log_metrics(metrics, step=step)

    def table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        data = {c: [r[i] for r in rows] for i, c in enumerate(columns)}
        self.mlflow.log_table(data, artifact_file=f"{name.replace('/', '_')}_{step}.json")

    def close(self) -> None:
        self.mlflow.end_run()


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


_TRACKER_CLASSES: dict[str, type[Any]] = {"wandb": WandbTracker, "trackio": TrackioTracker, "mlflow": MLflowTracker}


def check_outputs(formats: Sequence[str], report_to: Sequence[str]) -> None:
    """Raise ``ValueError`` listing the known names when an output or a tracker is unknown."""
    for name in formats:
        if name not in FORMATS:
            raise ValueError(f"Unknown train.logger format {name!r}; known: {', '.join(FORMATS)}")
    for name in report_to:
        if name not in TRACKERS:
            raise ValueError(f"Unknown report_to tracker {name!r}; known: {', '.join(TRACKERS)}")


class RunLog:
    """The run's SB3 ``Logger`` (its outputs) and the trackers that also take tables.

    :param logger: the SB3 logger the trainer records into
    :param trackers: the tracker outputs (with a ``table`` method)
    :param folder: the output folder (``completions.jsonl`` goes there), or ``None``
    """

    def __init__(self, logger: Logger, trackers: Sequence[Any] = (), folder: str | None = None) -> None:
        self.logger = logger
        self.trackers = list(trackers)
        self.folder = folder

    def completions(self, records: Sequence[dict[str, Any]], step: int, table: str = "completions") -> None:
        """Append completion records to ``completions.jsonl`` and send them to the trackers as a table."""
        if not records:
            return
        if self.folder is not None:
            os.makedirs(self.folder, exist_ok=True)
            with open(os.path.join(self.folder, "completions.jsonl"), "a", encoding="utf-8") as f:
                for record in records:
                    f.write(json.dumps({"step": step, "table": table, **record}, default=float) + "\n")
        columns = list(records[0])
        rows = [[r.get(c) for c in columns] for r in records]
        for tracker in self.trackers:
            tracker.table(table, columns, rows, step)

    def close(self) -> None:
        """Close every output (trackers finish their runs)."""
        self.logger.close()


def make_run_log(
    folder: str | None,
    formats: Sequence[str],
    report_to: Sequence[str] = (),
    verbose: int = 1,
    project: str = "sppo-rl",
    run_name: str | None = None,
    config: dict[str, Any] | None = None,
) -> RunLog:
    """Build the run's outputs.

    :param folder: the output folder (``None``: console outputs only)
    :param formats: local outputs, names of :data:`FORMATS`
    :param report_to: trackers, names of :data:`TRACKERS` (``tensorboard`` here equals the ``tensorboard`` format)
    :param verbose: 0 drops the console outputs
    :param project: the trackers' project
    :param run_name: the trackers' run name (default: the folder's name)
    :param config: the run configuration, recorded by the trackers
    :raises ValueError: an unknown format or tracker, or a file output without a folder
    :raises ImportError: a tracker whose library is not installed, naming the extra to install
    """
    check_outputs(formats, report_to)
    writers: list[KVWriter] = []
    trackers: list[Any] = []
    console = {"stdout", "compact"}
    if folder is None and any(f not in console for f in formats):
        raise ValueError("file outputs (csv, json, tensorboard, log) need an output folder")
    if folder is not None:
        os.makedirs(folder, exist_ok=True)
    for name in formats:
        if name in console and not verbose:
            continue
        if name == "stdout":
            writers.append(HumanOutputFormat(sys.stdout))
        elif name == "compact":
            writers.append(CompactConsole())
        elif name == "csv":
            writers.append(AppendingCSV(os.path.join(str(folder), "progress.csv")))
        elif name == "json":
            writers.append(JSONOutputFormat(os.path.join(str(folder), "progress.json")))
        elif name == "log":
            writers.append(HumanOutputFormat(os.path.join(str(folder), "log.txt")))
        elif name == "tensorboard":
            writers.append(TensorBoardOutputFormat(str(folder)))
    for name in report_to:
        if name == "tensorboard":
            if "tensorboard" not in formats:
                writers.append(TensorBoardOutputFormat(str(folder)))
            continue
        if folder is None:
            raise ValueError(f"report_to {name!r} needs an output folder")
        try:
            tracker = _TRACKER_CLASSES[name](folder, project, run_name, config or {})
        except ImportError as exc:
            raise ImportError(f'report_to {name!r} needs its library: pip install "sppo-rl[{name}]" ({exc})') from exc
        writers.append(tracker)
        trackers.append(tracker)
    return RunLog(Logger(folder=folder, output_formats=writers), trackers, folder)
