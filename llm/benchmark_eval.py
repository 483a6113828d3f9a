"""Evaluating a trainer's policy like the paper: the registered math benchmarks, avg@k, pass@k, maj@k, one table.

::

    from sppo_rl.llm.benchmark_eval import evaluate_math_benchmarks, format_benchmark_table

    report = evaluate_math_benchmarks(trainer, "paper", benchmark_dir="data/hub")   # or "aime24,amc23", k=4, ...
    print(format_benchmark_table(report))

Data path: each benchmark's rows come from :func:`~sppo_rl.llm.math_benchmarks.load_benchmark_rows` (all of them
before anything is generated, so a missing one fails at once), become prompts with the paper's template
(:data:`~sppo_rl.llm.math_benchmarks.PAPER_TEMPLATE`, rendered with the policy's chat template as in training), are
sampled by the trainer's generation engine at the benchmark's settings (the paper's temperature 0.6 and 8192
response tokens unless overridden; top-p 1, top-k off) and scored by :func:`~sppo_rl.llm.evaluation.evaluate_policy`
with the training reward ``boxed_math`` built by :func:`~sppo_rl.llm.loading.build_rewards` (math-verify; the run's
own ``boxed_math`` options when it has them), through :meth:`SPPOTrainer.evaluate
<sppo_rl.llm.trainer.SPPOTrainer.evaluate>` (what ``sppo-llm eval`` without ``--benchmark`` runs on the run's own
data and reward), so the evaluation is sharded over the ranks of a multi-process run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

from .data import PromptDataset
from .evaluation import METRICS
from .loading import build_rewards, reward_options
from .math_benchmarks import PAPER_TEMPLATE, MathBenchmark, load_benchmark_rows, resolve_benchmarks
from .rewards import RewardRunner
from .run_config import RewardSpec

if TYPE_CHECKING:
    from .trainer import SPPOTrainer

__all__ = [
    "PreparedBenchmark",
    "benchmark_rewards",
    "evaluate_math_benchmarks",
    "format_benchmark_table",
    "prepare_benchmarks",
]


class PreparedBenchmark(NamedTuple):
    """A registered benchmark and its prompts."""

    benchmark: MathBenchmark
    dataset: PromptDataset


def benchmark_rewards(trainer: SPPOTrainer) -> RewardRunner:
    """The training reward ``boxed_math`` on the benchmarks' ``answer`` column, built as training builds it (the
    run's ``boxed_math`` options and timeout when its reward is ``boxed_math``).

    :param trainer: the trainer whose run config gives the reward options
    """
    spec = trainer.run_config.reward if trainer.run_config is not None else RewardSpec()
    names = [spec.name] if isinstance(spec.name, str) else list(spec.name)
    math_name = next((n for n in names if n in ("boxed_math", "math")), None)
    options = reward_options(spec)[names.index(math_name)] if math_name is not None else {}
    options["answer_column"] = "answer"
    single = RewardSpec(name="boxed_math", options=options, timeout_s=spec.timeout_s, workers=spec.workers)
    return build_rewards(single)


def prepare_benchmarks(
    benchmarks: str | Sequence[str], benchmark_dir: str | os.PathLike[str] | None = None, template: str = PAPER_TEMPLATE
) -> list[PreparedBenchmark]:
    """Load the benchmarks' rows (all of them, so that a missing one fails before any generation) as prompts.

    :param benchmarks: ``"paper"``, ``"aime24,amc23"`` or a list of names
    :param benchmark_dir: local copies (see :mod:`sppo_rl.llm.math_benchmarks`); ``None``: the Hugging Face Hub
    :param template: the prompt template (``{question}`` is the problem)
    :raises ~sppo_rl.llm.math_benchmarks.BenchmarkNotFoundError: a benchmark that cannot be loaded
    """
    out = []
    for bench in resolve_benchmarks(benchmarks):
        rows = load_benchmark_rows(bench, benchmark_dir)
        out.append(PreparedBenchmark(bench, PromptDataset(rows, template, "question", "answer", name=bench.name)))
    return out


def _prepared(
    benchmarks: str | Sequence[str] | Sequence[PreparedBenchmark],
    benchmark_dir: str | os.PathLike[str] | None,
    template: str,
) -> list[PreparedBenchmark]:
    items = [benchmarks] if isinstance(benchmarks, str) else list(benchmarks)
    ready = [b for b in items if isinstance(b, PreparedBenchmark)]
    names = [b for b in items if isinstance(b, str)]
    if ready and names:
        raise TypeError("benchmarks: give names or prepare_benchmarks()' result, not both")
    return ready or prepare_benchmarks(names, benchmark_dir, template)


def evaluate_math_benchmarks(
    trainer: SPPOTrainer,
    benchmarks: str | Sequence[str] | Sequence[PreparedBenchmark] = "paper",
    benchmark_dir: str | os.PathLike[str] | None = None,
    k: int | None = None,
    n: int | None = None,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    max_prompts: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    group_by: str | Sequence[str] | None = None,
    template: str = PAPER_TEMPLATE,
) -> dict[str, Any]:
    """Evaluate the trainer's policy on registered math benchmarks at their (the paper's) settings.

    :param trainer: the trainer (policy, engine, prompt settings; the run config's ``eval.batch_size`` and
        ``eval.seed`` and its ``boxed_math`` options)
    :param benchmarks: ``"paper"`` (AIME24, AIME25, AMC23, MATH-500, Minerva), names, or
        :func:`prepare_benchmarks`' result
    :param benchmark_dir: local copies of the datasets (``None``: the Hugging Face Hub)
    :param k: the k of avg@k / pass@k / maj@k (default: each benchmark's, 16)
    :param n: samples per prompt (``>= k``; default ``k``)
    :param temperature: default: each benchmark's (0.6)
    :param max_new_tokens: default: each benchmark's (8192)
    :param max_prompts: evaluate the first problems of each benchmark only
    :param batch_size: prompts per batch (default ``eval.batch_size``)
    :param seed: sampling seed (default ``eval.seed``), the same for every benchmark
    :param group_by: dataset column(s) to break the metrics down by, where a benchmark has them (``level``,
        ``subject`` of MATH-500)
    :param template: the prompt template
    :return: ``{"benchmarks": {name: {"title", "dataset", "split", "temperature", "max_new_tokens", "top_p",
        "avg@<k>", "pass@<k>", "maj@<k>", "n_prompts", "response_length_mean", "truncation_rate", ...}},
        "mean": {metric: mean over the benchmarks, "n_benchmarks"}, "settings": {...}}``
    :raises KeyError: a ``group_by`` column that no benchmark has
    """
    prepared = _prepared(benchmarks, benchmark_dir, template)
    columns = [group_by] if isinstance(group_by, str) else list(group_by or [])
    for column in columns:
        if not any(column in p.dataset.rows[0] for p in prepared):
            raise KeyError(f"group_by: no benchmark has a column {column!r}")
    rewards = benchmark_rewards(trainer)
    ev = trainer.run_config.eval if trainer.run_config is not None else None
    seed = seed if seed is not None else (ev.seed if ev else 1234)
    results: dict[str, dict[str, Any]] = {}
    for bench, dataset in prepared:
        gen = replace(
            trainer.config.generation,
            temperature=temperature or bench.temperature,
            max_new_tokens=max_new_tokens or bench.max_new_tokens,
            top_p=1.0,
            top_k=0,
            suppress_eos=False,
        )
        result = trainer.evaluate(
            dataset,
            k=k or bench.k,
            n=n,
            max_prompts=max_prompts,
            batch_size=batch_size,
            seed=seed,
            group_by=[c for c in columns if c in dataset.rows[0]] or None,
            rewards=rewards,
            generation=gen,
        )
        result.pop("per_prompt")
        header = {"title": bench.title, "dataset": bench.dataset_id, "split": bench.split}
        sampling = {"temperature": gen.temperature, "max_new_tokens": gen.max_new_tokens, "top_p": gen.top_p}
        results[bench.name] = {**header, **sampling, **result}
    verifier = rewards.answer_verifier
    settings = {
        "template": template,
        "chat_template": trainer.config.chat_template,
        "seed": seed,
        "top_k": 0,
        "reward": {"name": "boxed_math", "require_boxed": getattr(verifier, "require_boxed", True)},
    }
    return {"benchmarks": results, "mean": _mean(results), "settings": settings}


def _mean(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    values = list(results.values())
    keys = [f"{m}@k" for m in METRICS]
    ks = sorted({r["k"] for r in values})
    if len(ks) == 1:
        keys += [f"{m}@{ks[0]}" for m in METRICS]
    mean: dict[str, Any] = {key: sum(r[key] for r in values) / len(values) for key in keys}
    mean["n_benchmarks"] = len(values)
    return mean


def format_benchmark_table(report: dict[str, Any]) -> str:
    """A plain-text table of :func:`evaluate_math_benchmarks`' report: a row per benchmark (metrics in percent,
    response length in tokens) and, for several benchmarks, their mean.

    :param report: the report (or its JSON, read back)
    """
    head = ["benchmark", "dataset", "problems", "k", "n", *[f"{m}@k %" for m in METRICS], "mean tokens", "truncated %"]
    rows = []
    for name, r in report["benchmarks"].items():
        metrics = [f"{100 * r[f'{m}@k']:.2f}" for m in METRICS]
        lengths = [f"{r['response_length_mean']:.1f}", f"{100 * r['truncation_rate']:.1f}"]
        rows.append([name, r["dataset"], str(r["n_prompts"]), str(r["k"]), str(r["n"]), *metrics, *lengths])
    if len(rows) > 1:
        mean = report["mean"]
        metrics = [f"{100 * mean[f'{m}@k']:.2f}" for m in METRICS]
        rows.append([f"mean of {mean['n_benchmarks']}", "", "", "", "", *metrics, "", ""])
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    lines = []
    for row in [head, *rows]:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
