"""The paper's math benchmarks and training sets: a registry of Hugging Face datasets, loaded as prompt rows.

Each :class:`MathBenchmark` names a dataset on the Hugging Face Hub (id, split), the columns that hold the question
and the reference answer, how that answer is normalised, and the evaluation defaults (k, temperature, response
length). :func:`load_benchmark_rows` loads one through ``datasets.load_dataset`` (from the Hub when online, or from
a local copy under ``benchmark_dir``) and returns rows ``{"question": ..., "answer": ..., <the dataset's other
columns>}`` that any :class:`~sppo_rl.llm.data.PromptDataset` reads with its default columns, so the same rows are
an evaluation set (``sppo-llm eval --benchmark``) or a training set (``data.source: {benchmark: deepscaler}``).

Evaluation sets (the paper's: Average@16 at temperature 0.6, responses up to 8192 tokens): ``aime24``, ``aime25``,
``amc23``, ``math500``, ``minerva``. Training sets: ``deepscaler``, ``dapo17k``.

Local copies: ``benchmark_dir/<dataset id>/`` (the files of the dataset's Hub repository, e.g. from
``huggingface-cli download --repo-type dataset <id> --local-dir benchmark_dir/<id>``, or a folder written by
``Dataset.save_to_disk``), or ``benchmark_dir/<name>/`` or ``benchmark_dir/<name>.jsonl|.json|.parquet|.csv``.
Nothing here downloads by hand: the Hub is only reached through ``datasets``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "BENCHMARKS",
    "PAPER_BENCHMARKS",
    "PAPER_PROMPT_SUFFIX",
    "PAPER_TEMPLATE",
    "BenchmarkNotFoundError",
    "MathBenchmark",
    "benchmark_source_rows",
    "get_benchmark",
    "is_benchmark_source",
    "load_benchmark_rows",
    "normalize_answer",
    "resolve_benchmarks",
]

PAPER_PROMPT_SUFFIX = "Please output the final answer within \\boxed{}."
"""The instruction the paper appends to every math prompt."""

PAPER_TEMPLATE = "{question}\n" + PAPER_PROMPT_SUFFIX
"""The prompt template of the benchmarks: the question, a newline (ours), then the paper's instruction."""

ANSWER_FORMATS = ("numeric", "latex")

_DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
_DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'


class BenchmarkNotFoundError(FileNotFoundError):
    """A benchmark's dataset could not be loaded (offline without a local copy, or a missing local copy)."""


@dataclass(frozen=True)
class MathBenchmark:
    """One dataset of the registry.

    :param name: the short name (``--benchmark aime24``)
    :param title: the name used in papers
    :param dataset_id: the Hugging Face dataset id
    :param split: the split to read
    :param question_column: the column with the problem statement
    :param answer_column: the column with the reference answer (a dotted path for a nested field, e.g.
        ``reward_model.ground_truth``)
    :param answer_format: how the reference is normalised: ``"numeric"`` (a number; an integral value is written
        as an integer, ``"033"`` and ``27.0`` give ``"33"`` and ``"27"``, anything else is kept) or ``"latex"``
        (stripped, an enclosing ``$...$`` removed)
    :param n_rows: the number of rows of the split (problems; for DAPO-17K the rows before removing duplicates)
    :param card: where the schema was read (the dataset card)
    :param role: ``"eval"`` (a benchmark) or ``"train"`` (a training set)
    :param config: the dataset's configuration (subset), ``None`` for the default
    :param k: default k of avg@k / pass@k / maj@k
    :param temperature: default sampling temperature
    :param max_new_tokens: default response length limit
    :param question_prefix: text removed from the start of the question (DAPO's own instruction)
    :param question_suffix: text removed from the end of the question
    :param deduplicate: keep the first row of each question only
    :param renamed: ``(column, new name)`` pairs, so that a dataset column does not shadow the prompt conventions
        (DAPO's ``prompt`` holds its own prompt; it becomes ``source_prompt``)
    """

    name: str
    title: str
    dataset_id: str
    split: str
    question_column: str
    answer_column: str
    answer_format: str
    n_rows: int
    card: str
    role: str = "eval"
    config: str | None = None
    k: int = 16
    temperature: float = 0.6
    max_new_tokens: int = 8192
    question_prefix: str = ""
    question_suffix: str = ""
    deduplicate: bool = False
    renamed: tuple[tuple[str, str], ...] = ()

    def question(self, row: Mapping[str, Any]) -> str:
        """The problem statement of a raw dataset row (DAPO's instruction removed).

        :param row: a row as the dataset gives it
        """
        text = str(_field(row, self.question_column, self))
        if self.question_prefix and text.startswith(self.question_prefix):
            text = text[len(self.question_prefix) :]
        if self.question_suffix and text.endswith(self.question_suffix):
            text = text[: -len(self.question_suffix)]
        return text.strip()

    def answer(self, row: Mapping[str, Any]) -> str:
        """The normalised reference answer of a raw dataset row.

        :param row: a row as the dataset gives it
        """
        return normalize_answer(_field(row, self.answer_column, self), self.answer_format)


def _hf(dataset_id: str) -> str:
    return f"https://huggingface.co/datasets/{dataset_id}"


BENCHMARKS: dict[str, MathBenchmark] = {
    b.name: b
    for b in (
        MathBenchmark(
            "aime24", "AIME 2024", "HuggingFaceH4/aime_2024", "train", "problem", "answer", "numeric", 30,
            _hf("HuggingFaceH4/aime_2024"),
        ),
        MathBenchmark(
            "aime25", "AIME 2025", "math-ai/aime25", "test", "problem", "answer", "numeric", 30,
            _hf("math-ai/aime25"),
        ),
        MathBenchmark(
            "amc23", "AMC 2023", "math-ai/amc23", "test", "question", "answer", "numeric", 40,
            _hf("math-ai/amc23"),
        ),
        MathBenchmark(
            "math500", "MATH-500", "HuggingFaceH4/MATH-500", "test", "problem", "answer", "latex", 500,
            _hf("HuggingFaceH4/MATH-500"),
        ),
        MathBenchmark(
            "minerva", "Minerva Math", "math-ai/minervamath", "test", "question", "answer", "latex", 272,
            _hf("math-ai/minervamath"),
        ),
        MathBenchmark(
            "deepscaler", "DeepScaleR-Preview", "agentica-org/DeepScaleR-Preview-Dataset", "train", "problem",
            "answer", "latex", 40315, _hf("agentica-org/DeepScaleR-Preview-Dataset"), role="train",
        ),
        MathBenchmark(
            "dapo17k", "DAPO-Math-17K", "BytedTsinghua-SIA/DAPO-Math-17k", "train", "prompt.0.content",
            "reward_model.ground_truth", "numeric", 1791700, _hf("BytedTsinghua-SIA/DAPO-Math-17k"), role="train",
            question_prefix=_DAPO_PREFIX, question_suffix=_DAPO_SUFFIX, deduplicate=True,
            renamed=(("prompt", "source_prompt"),),
        ),
    )
}  # fmt: skip
"""Every registered dataset, by name."""

PAPER_BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "minerva")
"""The paper's evaluation set (``--benchmark paper``); its headline number is the mean of their Average@16."""

_ALIASES = {
    "aime2024": "aime24",
    "aime2025": "aime25",
    "amc": "amc23",
    "amc2023": "amc23",
    "math": "math500",
    "math-500": "math500",
    "minervamath": "minerva",
    "dapo": "dapo17k",
    "dapo-math-17k": "dapo17k",
}


def get_benchmark(name: str | MathBenchmark) -> MathBenchmark:
    """The registry entry of ``name`` (a few spellings are accepted: ``math`` for ``math500``, ...).

    :param name: a registry name, or an entry (returned as it is)
    :raises ValueError: an unknown name, listing the known ones
    """
    if isinstance(name, MathBenchmark):
        return name
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)} (or 'paper' for the paper's set)")
    return BENCHMARKS[key]


def resolve_benchmarks(spec: str | Sequence[str]) -> list[MathBenchmark]:
    """Benchmarks from ``"paper"``, a comma-separated list (``"aime24,amc23"``) or a list of names.

    :param spec: the selection; duplicates are dropped, the order is kept
    :raises ValueError: an unknown or empty selection
    """
    names = [s for part in ([spec] if isinstance(spec, str) else spec) for s in part.split(",")]
    names = [s.strip() for s in names if s.strip()]
    if not names:
        raise ValueError("No benchmark given; use 'paper' or names such as aime24,amc23")
    out: list[MathBenchmark] = []
    for name in names:
        for b in [BENCHMARKS[p] for p in PAPER_BENCHMARKS] if name.lower() == "paper" else [get_benchmark(name)]:
            if b not in out:
                out.append(b)
    return out


def normalize_answer(value: Any, answer_format: str) -> str:
    """A reference answer as the text the verifier parses.

    :param value: the raw value from the dataset (a string, an int or a float)
    :param answer_format: ``"numeric"`` or ``"latex"`` (see :class:`MathBenchmark`)
    :raises ValueError: an unknown format or a missing answer
    """
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"Unknown answer format {answer_format!r}; choose one of {', '.join(ANSWER_FORMATS)}")
    if value is None:
        raise ValueError("The reference answer is missing")
    text = str(value).strip()
    if answer_format == "numeric":
        try:
            number = Decimal(text)
        except InvalidOperation:
            return text
        if number.is_finite() and number == number.to_integral_value():
            return str(int(number))
        return text
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)")):
        if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right):
            return text[len(left) : -len(right)].strip()
    return text


def _field(row: Mapping[str, Any], path: str, bench: MathBenchmark) -> Any:
    value: Any = row
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, Sequence) and not isinstance(value, str) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(
                f"{bench.dataset_id}: a row has no field {path!r} (columns: {sorted(row)}); the registry expects the "
                f"schema of {bench.card}"
            )
    return value


_FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def _local_candidates(bench: MathBenchmark, benchmark_dir: str) -> list[str]:
    paths = [os.path.join(benchmark_dir, *bench.dataset_id.split("/")), os.path.join(benchmark_dir, bench.name)]
    return paths + [os.path.join(benchmark_dir, bench.name + ext) for ext in _FILE_FORMATS]


def _load_local(bench: MathBenchmark, path: str) -> Any:
    import datasets

    if os.path.isfile(path):
        fmt = _FILE_FORMATS[os.path.splitext(path)[1].lower()]
        return datasets.load_dataset(fmt, data_files=path, split="train")
    if os.path.exists(os.path.join(path, "dataset_dict.json")) or os.path.exists(os.path.join(path, "state.json")):
        loaded = datasets.load_from_disk(path)
        return loaded[bench.split] if isinstance(loaded, datasets.DatasetDict) else loaded
    return datasets.load_dataset(path, bench.config, split=bench.split)


def _load(bench: MathBenchmark, benchmark_dir: str | os.PathLike[str] | None) -> Any:
    import datasets

    if benchmark_dir is not None:
        folder = os.fspath(benchmark_dir)
        for path in _local_candidates(bench, folder):
            if os.path.exists(path):
                return _load_local(bench, path)
        raise BenchmarkNotFoundError(
            f"No local copy of {bench.name} ({bench.dataset_id}, split {bench.split!r}) under --benchmark-dir "
            f"{folder!r}: looked for {', '.join(_local_candidates(bench, folder)[:3])}, ... Put the dataset's files "
            f"there, e.g. `huggingface-cli download --repo-type dataset {bench.dataset_id} --local-dir "
            f"{os.path.join(folder, bench.dataset_id)}` on a machine with network"
        )
    try:
        return datasets.load_dataset(bench.dataset_id, bench.config, split=bench.split)
    except Exception as exc:  # offline, unreachable, not cached: one message that says what to do
        raise BenchmarkNotFoundError(
            f"Cannot load {bench.name} from the Hugging Face Hub (dataset {bench.dataset_id!r}, split "
            f"{bench.split!r}): {type(exc).__name__}: {exc}. Offline, pass --benchmark-dir DIR (Python: "
            f"benchmark_dir=DIR) with a local copy in DIR/{bench.dataset_id}/ (`huggingface-cli download "
            f"--repo-type dataset {bench.dataset_id} --local-dir DIR/{bench.dataset_id}` on a machine with network)"
        ) from exc


def load_benchmark_rows(
    name: str | MathBenchmark, benchmark_dir: str | os.PathLike[str] | None = None, max_rows: int | None = None
) -> list[dict[str, Any]]:
    """The rows of a registered dataset: ``{"question", "answer", <its other columns>}``.

    The question is the problem statement alone (DAPO's instruction removed), the answer is normalised (see
    :func:`normalize_answer`); the dataset's other columns are kept (``level`` and ``subject`` of MATH-500 can
    break results down), except those in ``renamed``.

    :param name: a registry name (or entry)
    :param benchmark_dir: a folder with local copies (see the module docstring); ``None`` loads from the Hub (or
        the ``datasets`` cache)
    :param max_rows: keep the first rows only
    :raises BenchmarkNotFoundError: the dataset is neither reachable nor found locally; the message names the
        dataset id and the ``--benchmark-dir`` option
    """
    bench = get_benchmark(name)
    loaded = _load(bench, benchmark_dir)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    renamed = dict(bench.renamed)
    for raw in loaded:
        question = bench.question(raw)
        if bench.deduplicate:
            if question in seen:
                continue
            seen.add(question)
        row = {renamed.get(key, key): value for key, value in raw.items()}
        row["question"] = question
        row["answer"] = bench.answer(raw)
        rows.append(row)
        if max_rows is not None and len(rows) >= max_rows:
            break
    if not rows:
        raise BenchmarkNotFoundError(f"{bench.name} ({bench.dataset_id}, split {bench.split!r}) has no rows")
    return rows


def is_benchmark_source(source: Any) -> bool:
    """Whether a data source names a registered dataset: ``"benchmark:<name>"`` or ``{"benchmark": <name>, ...}``.

    :param source: a data source of :func:`~sppo_rl.llm.data.load_rows`
    """
    if isinstance(source, str):
        return source.startswith("benchmark:")
    return isinstance(source, Mapping) and "benchmark" in source


def benchmark_source_rows(source: str | Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of a benchmark data source (``data.source`` / ``eval_data.source`` of a run config).

    :param source: ``"benchmark:dapo17k"`` (from the Hub), or ``{"benchmark": "dapo17k", "benchmark_dir":
        "data/hub", "max_rows": 1000}``
    :raises ValueError: unknown keys
    """
    if isinstance(source, str):
        return load_benchmark_rows(source.split(":", 1)[1])
    unknown = set(source) - {"benchmark", "benchmark_dir", "max_rows"}
    if unknown:
        raise ValueError(f"A benchmark source takes benchmark, benchmark_dir and max_rows; got {sorted(unknown)}")
    return load_benchmark_rows(source["benchmark"], source.get("benchmark_dir"), source.get("max_rows"))
