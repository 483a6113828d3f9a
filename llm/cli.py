"""``sppo-llm``: train and evaluate with a YAML config, export models, list the shipped examples.

::

    sppo-llm examples                                   # the example configs that ship with the package
    sppo-llm train --example tiny_cpu                   # runs from any folder (output under runs/tiny_cpu)
    sppo-llm train CONFIG.yml [--set trainer.learning_rate=3e-3 ...] [--resume DIR|auto] [--overwrite]
    sppo-llm eval  CONFIG.yml --checkpoint runs/tiny_cpu/final [--k 8] [--data FILE]
    sppo-llm eval  CONFIG.yml --checkpoint CKPT --benchmark paper|aime24,amc23,... [--k 16] [--benchmark-dir DIR]
    sppo-llm export CONFIG.yml --checkpoint CKPT --out DIR [--critic]
    sppo-llm make-tiny --out models/tiny [--vocab-size 64] [--model-type qwen2|llama]

Every error is one line on stderr and exit status 2 (``--debug`` shows the traceback). The same commands run as
``python -m sppo_rl.llm ...``, and under ``torchrun`` / ``accelerate launch`` (see docs/distributed.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import warnings
from collections.abc import Sequence
from importlib import resources
from typing import Any

from torch.distributed.elastic.multiprocessing.errors import record

__all__ = ["RUN_FILES", "example_path", "list_examples", "main"]


RUN_FILES = ("progress.csv", "progress.json", "log.txt", "summary.json", "completions.jsonl", "checkpoints", "final")
"""What ``sppo-llm train`` writes into ``output_dir`` (what ``--overwrite`` removes)."""


class CommandError(Exception):
    """A mistake in the command line or the run folder (printed as one line)."""


def list_examples() -> dict[str, str]:
    """The example configs shipped inside the package: name -> first comment line."""
    folder = resources.files("sppo_rl.llm") / "examples"
    out = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yml"):
            first = entry.read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
            out[entry.name[:-4]] = first
    return out


def example_path(name: str) -> str:
    """The path of a shipped example config (``tiny_cpu``, ``paper_7b_policy_1p5b_critic``).

    :raises CommandError: an unknown name, listing the known ones
    """
    examples = list_examples()
    if name not in examples:
        raise CommandError(f"no example named {name!r}; examples: {', '.join(examples)}")
    return str(resources.files("sppo_rl.llm") / "examples" / f"{name}.yml")


def _load_config(args: argparse.Namespace) -> Any:
    from .run_config import RunConfig

    config = args.config
    if getattr(args, "example", None):
        if config:
            raise CommandError("give a config file or --example, not both")
        config = example_path(args.example)
    if not config:
        raise CommandError("give a config file (sppo-llm train CONFIG.yml) or --example NAME (see sppo-llm examples)")
    if not os.path.isfile(config):
        raise CommandError(f"no config file {config}")
    overrides = list(args.set or [])
    if getattr(args, "output_dir", None):
        overrides.append(f"output_dir={args.output_dir}")
    return RunConfig.from_yaml(config, overrides)


def _prepare_output_dir(output_dir: str, resume: str | None, overwrite: bool, main: bool) -> None:
    """Refuse to write a new run over an existing one (unless ``--overwrite``, which removes the old run's files)."""
    held = [name for name in RUN_FILES if os.path.exists(os.path.join(output_dir, name))]
    if not held or resume:
        return
    if not overwrite:
        raise CommandError(
            f"{output_dir} already holds a run ({', '.join(held)}): pass --resume auto to continue it, --overwrite "
            "to start over (its files are removed), or another --output-dir"
        )
    if main:
        for name in held:
            path = os.path.join(output_dir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _summary(trainer: Any, output_dir: str, final: str) -> dict[str, Any]:
    """The run's summary, from the whole ``progress.csv`` (a resumed run's rows included)."""
    import csv

    rows: list[dict[str, str]] = []
    progress = os.path.join(output_dir, "progress.csv")
    if os.path.isfile(progress):
        with open(progress, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    rewards = [float(r["rollout/reward_mean"]) for r in rows if r.get("rollout/reward_mean")]
    summary: dict[str, Any] = {"checkpoint": final, "iteration": trainer.iteration, "responses": trainer.num_timesteps}
    if rows and rewards:
        # a logged row averages the iterations since the previous one (see SPPOTrainer.learn's log_interval)
        summary["logged_rows"] = len(rows)
        summary["first_logged_iteration"] = int(float(rows[0]["time/iterations"]))
        summary["reward_first_logged"] = rewards[0]
        summary["reward_last_logged"] = rewards[-1]
        summary["success_rate_last_logged"] = float(rows[-1]["rollout/success_rate"])
    elif trainer.history:
        summary["reward_last_iteration"] = trainer.history[-1]["rollout/reward_mean"]
    return summary


def _train(args: argparse.Namespace) -> int:
    from .checkpoint import latest_checkpoint, read_checkpoint_config
    from .run_logs import truncate_progress
    from .trainer import build_trainer

    cfg = _load_config(args)
    rank0 = os.environ.get("RANK", "0") == "0"
    t = cfg.train
    per_iter = cfg.trainer.prompts_per_step * (cfg.trainer.n_samples_per_prompt or 1)
    if t.n_iterations is not None:
        target = t.n_iterations
    elif t.total_steps is not None:
        target = math.ceil(t.total_steps / per_iter)
    else:
        raise CommandError("the config needs train.n_iterations or train.total_steps")
    if cfg.trainer.total_iterations is None:
        cfg.trainer.total_iterations = target  # the length of the learning-rate schedules
    resume = args.resume
    if resume == "auto":
        resume = latest_checkpoint(cfg.output_dir)
        if rank0:
            found = f"resuming from {resume}" if resume else "starting from scratch"
            print(f"--resume auto: {found} (newest complete checkpoint under {cfg.output_dir}/checkpoints)")
    elif resume and not os.path.isdir(resume):
        raise CommandError(f"--resume {resume}: no such checkpoint folder")
    _prepare_output_dir(cfg.output_dir, resume, args.overwrite, rank0)
    if resume and rank0:
        dropped = truncate_progress(cfg.output_dir, int(read_checkpoint_config(resume)["iteration"]))
        if dropped:
            print(f"progress.csv: dropped {dropped} row(s) logged after the checkpoint (they are recomputed)")
    trainer = build_trainer(cfg, checkpoint=resume, verbose=0 if args.quiet else 1)
    main = trainer.dist.is_main
    try:
        if resume:
            trainer.load_checkpoint(resume)
            if main:
                print(f"Resumed from {resume} at iteration {trainer.iteration} ({trainer.num_timesteps} responses)")
        if main:
            import yaml

            with open(os.path.join(cfg.output_dir, "config.yml"), "w", encoding="utf-8") as f:
                yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
        progress = t.progress_bar if t.progress_bar != "auto" else sys.stdout.isatty()
        trainer.learn(
            n_iterations=max(0, target - trainer.iteration),
            log_interval=t.log_interval,
            progress_bar=bool(progress or args.progress_bar),
            eval_interval=t.eval_interval,
            save_interval=t.save_interval,
            save_dir=os.path.join(cfg.output_dir, "checkpoints"),
            log_completions_interval=t.log_completions_interval,
            completions_to_log=t.completions_to_log,
        )
        final = trainer.save(os.path.join(cfg.output_dir, "final"))
        summary = _summary(trainer, cfg.output_dir, final)
        if trainer.eval_dataset is not None:
            result = trainer.evaluate()
            trainer.run_log.completions(result["samples"], trainer.num_timesteps, table="eval_completions")
            summary["eval"] = {k: v for k, v in result.items() if k not in ("per_prompt", "samples")}
    finally:
        trainer.close()
    if main:
        print(json.dumps(summary, indent=2), flush=True)
        with open(os.path.join(cfg.output_dir, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .benchmark_eval import prepare_benchmarks
    from .loading import build_dataset
    from .run_config import DataSpec
    from .trainer import build_trainer

    if args.benchmark and args.data:
        raise CommandError("--benchmark and --data are exclusive")
    cfg = _load_config(args)
    prepared = prepare_benchmarks(args.benchmark, args.benchmark_dir) if args.benchmark else None
    trainer = build_trainer(cfg, checkpoint=args.checkpoint, verbose=0)
    if args.checkpoint:
        trainer.load_checkpoint(args.checkpoint)
    options = {
        "k": args.k,
        "n": args.n,
        "temperature": args.temperature,
        "max_new_tokens": args.max_new_tokens,
        "max_prompts": args.max_prompts,
        "group_by": args.group_by,
    }
    if prepared is not None:
        return _eval_benchmarks(args, cfg.output_dir, trainer, prepared, options)
    data = trainer.eval_dataset or trainer.dataset
    if args.data:
        base = cfg.eval_data or cfg.data
        data = build_dataset(DataSpec(**{**base.__dict__, "source": args.data}), "eval")
    result = trainer.evaluate(data, **options)
    result = {k: v for k, v in result.items() if k != "per_prompt"}
    result["checkpoint"] = args.checkpoint
    print(json.dumps(result, indent=2), flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


def _eval_benchmarks(
    args: argparse.Namespace, output_dir: str, trainer: Any, prepared: Any, options: dict[str, Any]
) -> int:
    from .benchmark_eval import evaluate_math_benchmarks, format_benchmark_table

    report = evaluate_math_benchmarks(trainer, prepared, **options)
    report["checkpoint"] = args.checkpoint
    out = args.out or os.path.join(output_dir, "benchmarks.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(format_benchmark_table(report), flush=True)
    print(f"Results (JSON): {out}", flush=True)
    return 0


def _export(args: argparse.Namespace) -> int:
    from .models import resolve_dtype
    from .trainer import build_trainer

    cfg = _load_config(args)
    trainer = build_trainer(cfg, checkpoint=args.checkpoint, verbose=0)
    if args.checkpoint:
        trainer.load_checkpoint(args.checkpoint)
    dtype = resolve_dtype(args.dtype) if args.dtype else None
    if args.critic:
        from .critic_export import export_critic

        if trainer.critic is None:
            raise CommandError("this run has no critic to export (critic.mode: none)")
        out = export_critic(trainer.critic, args.out, dtype=dtype)
        print(json.dumps({"out": out, "checkpoint": args.checkpoint, "critic": True}), flush=True)
        return 0
    out = trainer.policy.save_pretrained(args.out, merge_adapter=not args.adapter_only, dtype=dtype)
    print(json.dumps({"out": out, "checkpoint": args.checkpoint, "merged": not args.adapter_only}), flush=True)
    return 0


def _examples(args: argparse.Namespace) -> int:
    for name, line in list_examples().items():
        print(f"{name:32s} {line}")
    print("\nRun one from any folder: sppo-llm train --example NAME (its outputs go under runs/<name>)")
    return 0


def _make_tiny(args: argparse.Namespace) -> int:
    from .tiny import TINY_QWEN2, make_tiny

    config = dict(
        TINY_QWEN2,
        model_type=args.model_type,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.layers,
        intermediate_size=2 * args.hidden_size,
    )
    out = make_tiny(args.out, config=config, vocab_size=args.vocab_size, seed=args.seed, byte_level=args.byte_level)
    print(json.dumps({"out": out, "config": config, "vocab_size": args.vocab_size}), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``sppo-llm`` argument parser."""
    parser = argparse.ArgumentParser(prog="sppo-llm", description="Sequence-Level PPO for language models")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train from a YAML config or a shipped example")
    train.add_argument("config", nargs="?", help="YAML run config (see docs/llm.md)")
    train.add_argument("--example", help="a shipped example instead of a config file (see: sppo-llm examples)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, repeatable")
    train.add_argument("--resume", help="checkpoint folder to resume from, or 'auto' (newest complete one)")
    train.add_argument("--overwrite", action="store_true", help="start over in an output_dir that holds a run")
    train.add_argument("--output-dir", help="override output_dir")
    train.add_argument("--progress-bar", action="store_true", help="show a progress bar (default: on a terminal)")
    train.add_argument("--quiet", action="store_true", help="no console logging")
    train.set_defaults(func=_train)

    examples = sub.add_parser("examples", help="list the example configs that ship with the package")
    examples.set_defaults(func=_examples)

    ev = sub.add_parser(
        "eval", help="evaluate a checkpoint: avg@k, pass@k, maj@k on held-out prompts or the paper's math benchmarks"
    )
    ev.add_argument("config", nargs="?", help="YAML run config")
    ev.add_argument("--example", help="a shipped example instead of a config file")
    ev.add_argument("--checkpoint", help="checkpoint folder (default: the untrained policy)")
    ev.add_argument("--data", help="prompt file to evaluate on (default: eval_data, else data)")
    ev.add_argument(
        "--benchmark",
        help="math benchmarks instead of the run's data: 'paper' (AIME24, AIME25, AMC23, MATH-500, Minerva at the "
        "paper's settings) or names, comma-separated (aime24,aime25,amc23,math500,minerva); see docs/evaluation.md",
    )
    ev.add_argument(
        "--benchmark-dir", help="folder with local copies of the benchmark datasets (offline); default: the Hub"
    )
    ev.add_argument("--k", type=int, default=None, help="the k of avg@k/pass@k/maj@k (default: eval.k; benchmarks: 16)")
    ev.add_argument("--n", type=int, default=None, help="samples per prompt, >= k (default: k)")
    ev.add_argument("--temperature", type=float, default=None, help="sampling temperature (benchmarks: 0.6)")
    ev.add_argument("--max-new-tokens", type=int, default=None, help="response length limit (benchmarks: 8192)")
    ev.add_argument("--group-by", action="append", metavar="COLUMN", help="break the metrics down by a column")
    ev.add_argument("--max-prompts", type=int, default=None, help="the first prompts (of each benchmark) only")
    ev.add_argument("--set", action="append", metavar="KEY=VALUE")
    ev.add_argument("--output-dir", help="override output_dir")
    ev.add_argument("--out", help="write the result JSON here (benchmarks: default OUTPUT_DIR/benchmarks.json)")
    ev.set_defaults(func=_eval)

    export = sub.add_parser(
        "export", help="save the (trained) policy as a plain transformers model folder, LoRA merged (GGUF bases too)"
    )
    export.add_argument("config", nargs="?", help="YAML run config")
    export.add_argument("--example", help="a shipped example instead of a config file")
    export.add_argument("--checkpoint", help="checkpoint folder (default: the untrained policy)")
    export.add_argument("--out", required=True, help="destination folder")
    export.add_argument("--dtype", help="cast the saved weights (bfloat16, float16, float32)")
    export.add_argument("--adapter-only", action="store_true", help="save only the LoRA adapter (peft format)")
    export.add_argument(
        "--critic",
        action="store_true",
        help="export the trained critic as a transformers sequence-classification model (one label: the logit of "
        "the prompt's chance of success)",
    )
    export.add_argument("--set", action="append", metavar="KEY=VALUE")
    export.add_argument("--output-dir", help="override output_dir")
    export.set_defaults(func=_export)

    tiny = sub.add_parser("make-tiny", help="write a tiny random-init model + in-process tokenizer to a folder")
    tiny.add_argument("--out", required=True)
    tiny.add_argument("--model-type", default="qwen2", choices=["qwen2", "llama"])
    tiny.add_argument("--vocab-size", type=int, default=64)
    tiny.add_argument("--hidden-size", type=int, default=64)
    tiny.add_argument("--layers", type=int, default=2)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--byte-level", action="store_true")
    tiny.set_defaults(func=_make_tiny)
    return parser


# Library warnings that every command would print, and that say nothing about the user's run.
_QUIET = (
    (FutureWarning, r".*`is_gradient_checkpointing` is deprecated"),
    (FutureWarning, r".*`past_key_values` is deprecated"),
    (UserWarning, r".*TypedStorage is deprecated"),
    (UserWarning, r".*Unable to enable fault handler"),
)


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (CommandError, ValueError, FileNotFoundError, KeyError, ImportError, TypeError)):
        text = message.strip("'\"") if isinstance(exc, KeyError) else message
    else:
        text = f"{type(exc).__name__}: {message}"
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" (caused by {type(cause).__name__}: {' '.join(str(cause).split())})"
    return text


@record
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sppo-llm`` (``sppo_rl.llm.cli:main``): one line on stderr and exit status 2 on an error
    (``--debug``: the traceback)."""
    args = build_parser().parse_args(argv)
    for category, pattern in _QUIET:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("sppo-llm: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"sppo-llm: error: {_one_line(exc)}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
