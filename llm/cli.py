"""``sppo-llm``: train and evaluate with a YAML config, and build a tiny local model for CPU runs.

::

    sppo-llm train examples/llm/tiny_cpu.yml [--set trainer.learning_rate=3e-3 ...] [--resume DIR|auto]
    sppo-llm eval  examples/llm/tiny_cpu.yml --checkpoint runs/tiny_cpu/final [--k 8] [--data FILE]
    sppo-llm eval  CONFIG --checkpoint CKPT --benchmark paper|aime24,amc23,... [--k 16] [--benchmark-dir DIR]
    sppo-llm make-tiny --out models/tiny [--vocab-size 64] [--model-type qwen2|llama]
    sppo-llm export examples/llm/tiny_cpu.yml --checkpoint runs/tiny_cpu/final --out models/tiny-trained

The same commands run as ``python -m sppo_rl.llm ...``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from torch.distributed.elastic.multiprocessing.errors import record

__all__ = ["main"]


def _latest_checkpoint(output_dir: str) -> str | None:
    folder = os.path.join(output_dir, "checkpoints")
    if not os.path.isdir(folder):
        return None
    found = []
    for name in os.listdir(folder):
        if name.startswith("checkpoint-") and name.split("-", 1)[1].isdigit():
            found.append((int(name.split("-", 1)[1]), os.path.join(folder, name)))
    return max(found)[1] if found else None


def _load_config(args: argparse.Namespace) -> Any:
    from .run_config import RunConfig

    overrides = list(args.set or [])
    if getattr(args, "output_dir", None):
        overrides.append(f"output_dir={args.output_dir}")
    return RunConfig.from_yaml(args.config, overrides)


def _train(args: argparse.Namespace) -> int:
    from .trainer import build_trainer

    cfg = _load_config(args)
    resume = args.resume
    rank0 = os.environ.get("RANK", "0") == "0"
    if resume == "auto":
        resume = _latest_checkpoint(cfg.output_dir)
        if resume is None and rank0:
            print(f"No checkpoint under {cfg.output_dir}/checkpoints; starting from scratch", flush=True)
    trainer = build_trainer(cfg, checkpoint=resume, verbose=0 if args.quiet else 1)
    main = trainer.dist.is_main
    if resume:
        trainer.load_checkpoint(resume)
        if main:
            print(
                f"Resumed from {resume} at iteration {trainer.iteration} ({trainer.num_timesteps} responses)",
                flush=True,
            )
    if main:
        os.makedirs(cfg.output_dir, exist_ok=True)
        import yaml

        with open(os.path.join(cfg.output_dir, "config.yml"), "w", encoding="utf-8") as f:
            yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
    t = cfg.train
    per_iter = cfg.trainer.prompts_per_step * cfg.trainer.samples_per_prompt
    if t.n_iterations is not None:
        target = t.n_iterations
    elif t.total_steps is not None:
        target = math.ceil(t.total_steps / per_iter)
    else:
        raise SystemExit("The config needs train.n_iterations or train.total_steps")
    remaining = max(0, target - trainer.iteration)
    trainer.learn(
        n_iterations=remaining,
        log_interval=t.log_interval,
        progress_bar=t.progress_bar or args.progress_bar,
        eval_interval=t.eval_interval,
        save_interval=t.save_interval,
        save_dir=os.path.join(cfg.output_dir, "checkpoints"),
    )
    final = trainer.save(os.path.join(cfg.output_dir, "final"))
    summary: dict[str, Any] = {"checkpoint": final, "iteration": trainer.iteration, "responses": trainer.num_timesteps}
    first = trainer.history[0] if trainer.history else {}
    last = trainer.history[-1] if trainer.history else {}
    if first:
        window = trainer.history[-min(10, len(trainer.history)) :]
        summary["reward_first_iteration"] = first["rollout/reward_mean"]
        summary["reward_last_10_iterations"] = sum(m["rollout/reward_mean"] for m in window) / len(window)
        summary["success_rate_last"] = last["rollout/success_rate"]
    if trainer.eval_dataset is not None:
        result = trainer.evaluate()
        summary["eval"] = {k: v for k, v in result.items() if k != "per_prompt"}
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
        raise SystemExit("--benchmark and --data are exclusive")
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
    out = trainer.policy.save_pretrained(args.out, merge_adapter=not args.adapter_only, dtype=dtype)
    print(json.dumps({"out": out, "checkpoint": args.checkpoint, "merged": not args.adapter_only}), flush=True)
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
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train from a YAML config")
    train.add_argument("config", help="YAML run config (see docs/llm.md)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, repeatable")
    train.add_argument("--resume", help="checkpoint folder to resume from, or 'auto' (latest under output_dir)")
    train.add_argument("--output-dir", help="override output_dir")
    train.add_argument("--progress-bar", action="store_true", help="show a progress bar")
    train.add_argument("--quiet", action="store_true", help="no stdout logging")
    train.set_defaults(func=_train)

    ev = sub.add_parser(
        "eval", help="evaluate a checkpoint: avg@k, pass@k, maj@k on held-out prompts or the paper's math benchmarks"
    )
    ev.add_argument("config", help="YAML run config")
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
    export.add_argument("config", help="YAML run config")
    export.add_argument("--checkpoint", help="checkpoint folder (default: the untrained policy)")
    export.add_argument("--out", required=True, help="destination folder")
    export.add_argument("--dtype", help="cast the saved weights (bfloat16, float16, float32)")
    export.add_argument("--adapter-only", action="store_true", help="save only the LoRA adapter (peft format)")
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


@record
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sppo-llm`` (``sppo_rl.llm.cli:main``); under ``torchrun`` / ``accelerate launch`` an error
    is recorded for the launcher, which ends the other ranks and shows this rank's traceback."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
