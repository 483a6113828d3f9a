"""Prompt datasets: loading (local files, lists of dicts, ``reasoning-gym``, toy tasks), templating, sampling.

A :class:`PromptDataset` holds rows (dicts) and knows how to turn a row into chat messages with a
:class:`PromptTemplate`; each model renders those messages with its *own* tokenizer (the policy with its chat
template, a decoupled critic with its own), see :func:`render_messages`. A :class:`PromptSampler` walks the
dataset in seeded, reshuffled epochs and can save and restore its position (for exact resumes).

TRL's conventions: the prompt is the ``prompt`` column (``question`` when the rows have no ``prompt``), either text
or a list of chat messages (a conversational dataset); every other column is passed to the reward functions by
name. Every row is checked when the dataset is built: a row without a prompt, or with an empty one, is a
:class:`DatasetRowError` naming the row.

Everything here is offline: ``.jsonl`` files are read line by line (a bad line is a :class:`DatasetFileError`
naming the file and the line), other local files go through ``datasets.load_dataset("json" | "parquet" | "csv",
data_files=...)``, procedural tasks are generated in-process by ``reasoning_gym.create_dataset``. Nothing is
downloaded, except a registered math dataset named as ``"benchmark:<name>"`` (:mod:`sppo_rl.llm.math_benchmarks`),
which ``datasets`` loads from the Hugging Face Hub unless a local copy is given.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from .math_benchmarks import benchmark_source_rows, is_benchmark_source

__all__ = [
    "TOY_TASKS",
    "DatasetFileError",
    "DatasetRowError",
    "EmptyDatasetError",
    "PromptDataset",
    "PromptSampler",
    "PromptTemplate",
    "load_prompt_dataset",
    "load_rows",
    "make_toy_rows",
    "read_jsonl",
    "render_messages",
]

Message = dict[str, str]
Row = dict[str, Any]

_FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class EmptyDatasetError(ValueError):
    """A prompt dataset with no rows (nothing to train or evaluate on)."""


class DatasetFileError(ValueError):
    """A dataset file that cannot be read (the message names the file, and the line of a ``.jsonl``)."""


class DatasetRowError(KeyError, ValueError):
    """A row without a usable prompt (the message names the row and the column)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# ---------------------------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------------------------


@dataclass
class PromptTemplate:
    """Turns a dataset row into chat messages.

    ``template`` is a string with ``{column}`` placeholders filled from the row; braces that do not name a
    column of the row (such as the ``{}`` of ``\\boxed{}``) are left as they are, so no escaping is needed.
    If the row's prompt column already holds a list of ``{"role", "content"}`` messages (a conversational
    dataset), they are used as they are and ``template`` and ``system`` are ignored.

    :param template: e.g. ``"{question}\\nPlease output the final answer within \\\\boxed{}."``; ``None``
        means ``"{<prompt column>}"``
    :param system: optional system message (also templated)
    :param prompt_column: the column that holds the prompt text or messages; ``None``: ``prompt`` when the row
        has it, else ``question`` (TRL's column, then ours)
    """

    template: str | None = None
    system: str | None = None
    prompt_column: str | None = None

    def column(self, row: Mapping[str, Any]) -> str:
        """The prompt column of ``row``: ``prompt_column``, or ``prompt``/``question`` when it is ``None``."""
        if self.prompt_column is not None:
            return self.prompt_column
        return "prompt" if "prompt" in row else "question"

    def uses_column(self, column: str) -> bool:
        """Whether the prompt text is read from ``column`` (no template, or one with a ``{column}`` placeholder)."""
        return self.template is None or "{" + column + "}" in self.template

    def fill(self, text: str, row: Mapping[str, Any]) -> str:
        """Replace ``{column}`` placeholders by the row's values; unknown names are kept verbatim."""

        def sub(match: re.Match[str]) -> str:
            key = match.group(1)
            return str(row[key]) if key in row else match.group(0)

        return _PLACEHOLDER.sub(sub, text)

    def messages(self, row: Mapping[str, Any]) -> list[Message]:
        """The chat messages of one row.

        :param row: a dataset row
        :return: a list of ``{"role": ..., "content": ...}``
        :raises DatasetRowError: the row has no prompt column (and the template needs it)
        """
        column = self.column(row)
        if column not in row and self.uses_column(column):
            raise DatasetRowError(
                f"The dataset row has no column {column!r} (columns: {sorted(row)}); set prompt_column to the "
                "column that holds the prompt"
            )
        value = row.get(column)
        if isinstance(value, list) and is_conversational(value):
            return [{"role": str(m.get("role", "user")), "content": str(m["content"])} for m in value]
        template = self.template if self.template is not None else "{" + column + "}"
        messages: list[Message] = []
        if self.system:
            messages.append({"role": "system", "content": self.fill(self.system, row)})
        messages.append({"role": "user", "content": self.fill(template, row)})
        return messages


def is_conversational(value: Any) -> bool:
    """Whether a prompt value is a list of chat messages (dicts with ``content``)."""
    return isinstance(value, list) and all(isinstance(m, Mapping) and "content" in m for m in value)


def _empty(value: Any) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return (isinstance(value, str) and not value.strip()) or (isinstance(value, (list, tuple)) and not value)


def has_chat_template(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` defines a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_messages(messages: Sequence[Message], tokenizer: Any = None, chat_template: bool | str = "auto") -> str:
    """Render chat messages as the prompt text a model reads.

    :param messages: the messages of one prompt
    :param tokenizer: a Hugging Face tokenizer, or ``None`` for plain text
    :param chat_template: ``"auto"`` uses the tokenizer's chat template when it has one (with the generation
        prompt appended), ``True`` requires one, ``False`` gives plain text (system and user contents joined by
        a blank line)
    :return: the prompt text
    :raises ValueError: ``chat_template=True`` and the tokenizer has none
    """
    use_chat = chat_template is True or (chat_template == "auto" and has_chat_template(tokenizer))
    if use_chat:
        if tokenizer is None or not has_chat_template(tokenizer):
            raise ValueError("chat_template=True but the tokenizer has no chat template")
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages)


# ---------------------------------------------------------------------------------------------------------
# Loading rows
# ---------------------------------------------------------------------------------------------------------


def make_toy_rows(task: str = "copy_digit", size: int = 256, seed: int = 0, digits: str = "0123456789") -> list[Row]:
    """Small verifiable tasks that a tiny random-init model can learn on a CPU in minutes.

    - ``"copy_digit"``: ``{"question": "Repeat: 7", "answer": "7"}``; score with
      ``ExactMatchVerifier(mode="prefix")`` (the response must start with the digit).
    - ``"constant_digit"``: every prompt asks for the same digit (``digits[0]``), the easiest task.

    :param task: one of :data:`TOY_TASKS`
    :param size: number of rows
    :param seed: seed of the row generator
    :param digits: the digits to draw from
    :return: list of rows with ``question`` and ``answer``
    """
    if task not in TOY_TASKS:
        raise ValueError(f"Unknown toy task {task!r}; choose one of {', '.join(TOY_TASKS)}")
    if size < 1:
        raise EmptyDatasetError(f"A toy dataset needs size >= 1, got {size}")
    rng = random.Random(seed)
    rows = []
    for _ in range(size):
        d = digits[0] if task == "constant_digit" else rng.choice(digits)
        rows.append({"question": f"Repeat: {d}", "answer": d})
    return rows


TOY_TASKS = ("copy_digit", "constant_digit")


def read_jsonl(path: str) -> list[Row]:
    """The rows of a JSON Lines file, one JSON object per line (blank lines skipped).

    :param path: the file
    :raises DatasetFileError: a line that is not a JSON object, naming the file and the line number
    """
    rows: list[Row] = []
    number = 0
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    msg = f"{path}, line {number}: not valid JSON ({exc.msg} at column {exc.colno})"
                    raise DatasetFileError(msg) from None
                if not isinstance(value, dict):
                    kind = type(value).__name__
                    raise DatasetFileError(f"{path}, line {number}: expected a JSON object (one row), got a {kind}")
                rows.append(value)
    except UnicodeDecodeError as exc:
        raise DatasetFileError(f"{path}, line {number + 1}: not UTF-8 text ({exc.reason})") from None
    return rows


def _reasoning_gym_rows(name: str, size: int, seed: int, **config: Any) -> list[Row]:
    import reasoning_gym

    dataset = reasoning_gym.create_dataset(name, size=size, seed=seed, **config)
    return [{"question": e["question"], "answer": e["answer"], "metadata": e["metadata"]} for e in dataset]


def load_rows(source: Any, split: str = "train", **options: Any) -> list[Row]:
    """Load dataset rows, offline, from any supported source.

    :param source: one of

        - a path to a local ``.jsonl`` / ``.json`` / ``.parquet`` / ``.csv`` file (read with
          ``datasets.load_dataset(<format>, data_files=path)``), or a folder written by
          ``datasets.Dataset.save_to_disk``;
        - ``"reasoning_gym:<task>"`` (with ``size``, ``seed`` and task options in ``options``), or a dict
          ``{"reasoning_gym": "<task>", "size": ..., "seed": ..., "config": {...}}``;
        - ``"toy:<task>"`` or ``{"toy": "<task>", "size": ..., "seed": ...}`` (see :func:`make_toy_rows`);
        - ``"benchmark:<name>"`` or ``{"benchmark": "<name>", "benchmark_dir": ..., "max_rows": ...}``: a dataset of
          :data:`~sppo_rl.llm.math_benchmarks.BENCHMARKS` (``deepscaler``, ``dapo17k``, ``math500``, ...) as
          ``question``/``answer`` rows (see :func:`~sppo_rl.llm.math_benchmarks.load_benchmark_rows`);
        - a ``datasets.Dataset`` or a list of dicts.
    :param split: the split to read from a file (``datasets`` calls a single file ``"train"``)
    :param options: ``size`` / ``seed`` / task options for generated sources; ignored for files
    :return: list of rows
    :raises FileNotFoundError: a path that does not exist
    :raises DatasetFileError: a file that cannot be read (a bad ``.jsonl`` line: its number)
    :raises ValueError: an unsupported source
    :raises EmptyDatasetError: a source with no rows
    """
    rows: list[Row]
    if is_benchmark_source(source):
        rows = benchmark_source_rows(source)
    elif isinstance(source, Mapping) and ("reasoning_gym" in source or "toy" in source):
        spec = dict(source)
        kind = "reasoning_gym" if "reasoning_gym" in spec else "toy"
        task = spec.pop(kind)
        extra = dict(spec.pop("config", {}) or {})
        spec.update(options)
        size, seed = int(spec.pop("size", 256)), int(spec.pop("seed", 0))
        extra.update(spec)
        if kind == "reasoning_gym":
            rows = _reasoning_gym_rows(task, size, seed, **extra)
        else:
            rows = make_toy_rows(task, size, seed, **extra)
    elif isinstance(source, str) and source.startswith(("reasoning_gym:", "toy:")):
        kind, task = source.split(":", 1)
        return load_rows({kind: task}, split=split, **options)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"Dataset file {path!r} does not exist (only local files are supported)")
        import datasets

        if os.path.isdir(path):
            loaded = datasets.load_from_disk(path)
            if isinstance(loaded, datasets.DatasetDict):
                loaded = loaded[split]
        else:
            ext = os.path.splitext(path)[1].lower()
            if ext not in _FILE_FORMATS:
                raise ValueError(f"Unsupported dataset file {path!r}; use one of {', '.join(_FILE_FORMATS)}")
            if os.path.getsize(path) == 0:
                raise EmptyDatasetError(f"The dataset file {path!r} is empty")
            if ext == ".jsonl":
                loaded = read_jsonl(path)
            else:
                try:
                    loaded = datasets.load_dataset(_FILE_FORMATS[ext], data_files=path, split="train")
                except Exception as exc:
                    raise DatasetFileError(f"{path}: cannot read it as {ext}: {type(exc).__name__}: {exc}") from exc
        rows = [dict(r) for r in loaded]
    elif isinstance(source, Iterable) and not isinstance(source, (str, bytes, Mapping)):
        rows = [dict(r) for r in source]
    else:
        raise ValueError(f"Unsupported dataset source {source!r}")
    if not rows:
        raise EmptyDatasetError(f"The dataset {_describe(source)} has no rows")
    return rows


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike, Mapping)):
        return repr(source)
    return f"of type {type(source).__name__}"


# ---------------------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------------------


class PromptDataset:
    """Rows plus the template that turns a row into a prompt.

    :param rows: the rows (dicts); extra columns are passed to reward functions as keyword arguments
    :param template: a :class:`PromptTemplate`, a template string, or ``None`` (the prompt column as it is)
    :param prompt_column: the column with the prompt, text or chat messages (``None``: ``prompt`` when the rows
        have it, else ``question``)
    :param answer_column: the column with the reference answer (used by the built-in verifiers)
    :param system: optional system message
    :param name: a label for logs
    :raises EmptyDatasetError: no rows
    :raises DatasetRowError: a row without the prompt column or with an empty prompt (naming the first one)
    """

    def __init__(
        self,
        rows: Sequence[Row],
        template: PromptTemplate | str | None = None,
        prompt_column: str | None = None,
        answer_column: str = "answer",
        system: str | None = None,
        name: str = "prompts",
    ) -> None:
        self.rows: list[Row] = [dict(r) for r in rows]
        if not self.rows:
            raise EmptyDatasetError(f"The prompt dataset {name!r} has no rows")
        if isinstance(template, PromptTemplate):
            self.template = template
        else:
            self.template = PromptTemplate(template=template, system=system, prompt_column=prompt_column)
        if self.template.prompt_column is None:
            column = "prompt" if any("prompt" in r for r in self.rows) else "question"
            self.template = replace(self.template, prompt_column=column)
        self.answer_column = answer_column
        self.name = name
        for i, row in enumerate(self.rows):
            self._check_row(i, row)

    @property
    def prompt_column(self) -> str:
        """The column that holds the prompts."""
        assert self.template.prompt_column is not None
        return self.template.prompt_column

    def _check_row(self, i: int, row: Row) -> None:
        column = self.prompt_column
        value = row.get(column)
        if not is_conversational(value) and not self.template.uses_column(column):
            return  # the template does not read the prompt column
        where = f"Row {i} (counting from 0) of the dataset {self.name!r}"
        if column not in row:
            auto = " (neither 'prompt' nor 'question')" if column == "question" and "prompt" not in row else ""
            raise DatasetRowError(
                f"{where} has no column {column!r}{auto}; its columns: {sorted(row)}. Set prompt_column to the "
                "column that holds the prompt"
            )
        if _empty(value):
            raise DatasetRowError(f"{where} has an empty prompt in column {column!r}: {value!r}")
        if isinstance(value, list) and not is_conversational(value):
            raise DatasetRowError(
                f"{where}: column {column!r} holds a list that is not chat messages (dicts with 'role' and 'content')"
            )

    @classmethod
    def from_source(
        cls,
        source: Any,
        template: PromptTemplate | str | None = None,
        prompt_column: str | None = None,
        answer_column: str = "answer",
        system: str | None = None,
        name: str | None = None,
        **options: Any,
    ) -> PromptDataset:
        """Load rows with :func:`load_rows` and wrap them.

        :param source: see :func:`load_rows`
        :param template: see :class:`PromptDataset`
        :param prompt_column: see :class:`PromptDataset`
        :param answer_column: see :class:`PromptDataset`
        :param system: see :class:`PromptDataset`
        :param name: a label (default: the source)
        :param options: passed to :func:`load_rows`
        """
        rows = load_rows(source, **options)
        label = name or (source if isinstance(source, str) else "prompts")
        return cls(rows, template, prompt_column, answer_column, system, label)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Row:
        return self.rows[index]

    def messages(self, index: int) -> list[Message]:
        """Chat messages of row ``index``."""
        return self.template.messages(self.rows[index])

    def conversational(self, index: int) -> bool:
        """Whether row ``index``'s prompt is a list of chat messages."""
        return is_conversational(self.rows[index].get(self.prompt_column))

    def reward_prompt(self, index: int, rendered: str) -> str | list[Message]:
        """The prompt as reward functions see it (TRL's ``prompts``): the messages of a conversational row, else
        the rendered prompt text.

        :param index: the row
        :param rendered: the row's prompt as the policy reads it
        """
        return self.messages(index) if self.conversational(index) else rendered

    def prompt_text(self, index: int, tokenizer: Any = None, chat_template: bool | str = "auto") -> str:
        """The prompt of row ``index`` rendered for ``tokenizer`` (see :func:`render_messages`)."""
        return render_messages(self.messages(index), tokenizer, chat_template)

    def columns(self, indices: Sequence[int]) -> dict[str, list[Any]]:
        """Column-wise view of some rows, as TRL passes dataset columns to reward functions.

        :param indices: row indices
        :return: ``{column: [value of each row]}`` over the union of the rows' columns (missing -> ``None``)
        """
        keys: list[str] = []
        for i in indices:
            keys.extend(k for k in self.rows[i] if k not in keys)
        return {k: [self.rows[i].get(k) for i in indices] for k in keys}


def load_prompt_dataset(source: Any, **kwargs: Any) -> PromptDataset:
    """Shortcut for :meth:`PromptDataset.from_source`; a :class:`PromptDataset` is returned as it is."""
    if isinstance(source, PromptDataset):
        return source
    return PromptDataset.from_source(source, **kwargs)


class PromptSampler:
    """Draws row indices in epochs; each epoch is a fresh permutation seeded by ``(seed, epoch)``.

    The state is two integers (epoch and position), so a resumed run draws exactly the same prompts.

    :param n_rows: dataset size
    :param seed: base seed
    :param shuffle: permute each epoch (otherwise the rows are read in order)
    """

    def __init__(self, n_rows: int, seed: int = 0, shuffle: bool = True) -> None:
        if n_rows < 1:
            raise EmptyDatasetError("Cannot sample prompts from an empty dataset")
        self.n_rows = n_rows
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n_rows))
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.n_rows, generator=gen).tolist()

    def next(self, n: int) -> list[int]:
        """The next ``n`` row indices (crossing into the next epoch when needed).

        :param n: how many
        :return: list of ``n`` indices
        """
        out: list[int] = []
        while len(out) < n:
            if self.position >= self.n_rows:
                self.epoch += 1
                self.position = 0
                self._order = self._permutation(self.epoch)
            take = min(n - len(out), self.n_rows - self.position)
            out.extend(self._order[self.position : self.position + take])
            self.position += take
        return out

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "position", "seed", "n_rows"}``."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "n_rows": self.n_rows}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Restore a state from :meth:`state_dict`.

        :raises ValueError: if the saved dataset size differs (a different dataset)
        """
        if int(state["n_rows"]) != self.n_rows:
            raise ValueError(
                f"The checkpoint was trained on {state['n_rows']} prompts but this dataset has {self.n_rows}"
            )
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order = self._permutation(self.epoch)
