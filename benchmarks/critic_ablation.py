"""Does ``V(s0)`` earn its place? SPPO against the moving-average baseline (``ema``) on the control suite.

Reads the finished control-suite runs (``benchmarks/control_suite.py``: ``<results>/<task>.curves.json``, which
hold the outcome of every training episode and the final critic's calibration of every run) and writes, for the
algorithms compared (default ``sppo`` and ``ema``: the same SPPO update, with ``A = R - V(s0)`` or
``A = R - b``, ``b`` a moving average of past outcomes):

- ``<out>/<task>.png``: success curves (mean and min-max band over seeds) and the calibration on held-out start
  states (the critic's ``V(s0)`` against the success rate the final policy reached from each state, every seed);
- ``<out>/summary.png``: final success and Brier skill score per task, one dot per seed;
- ``<out>/critic_ablation.json``: the numbers of the tables;

and prints the Markdown tables of ``docs/results/critic_ablation.md``.

    python benchmarks/critic_ablation.py                       # from docs/results/control_suite
    python benchmarks/critic_ablation.py --tasks SparseMountainCar-v0
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from sppo_rl.envs import paper_ids
from sppo_rl.zoo.control_suite import runs_from_curves
from sppo_rl.zoo.protocol import RLRun, episodes_to_reach, final_tail

SHORT = {
    "SparsePrecisionCartPole-v0": "Precision CartPole",
    "SparseMountainCar-v0": "MountainCar",
    "SparseHopper-v0": "Hopper",
    "SparseLunarLander-v0": "LunarLander",
    "SparsePendulum-v0": "Pendulum",
}


def load_runs(path: Path) -> tuple[dict[str, Any], list[RLRun]]:
    """The curves file of one task and its runs.

    :param path: ``<task>.curves.json``
    :return: the file's content and its runs as :class:`RLRun` objects (with their calibration)
    """
    data = json.loads(path.read_text())
    return data, runs_from_curves(data)


def _stats(values: list[float]) -> dict[str, float]:
    """Mean, min, max and standard error of the mean."""
    array = np.asarray(values, dtype=float)
    sem = float(array.std(ddof=1) / math.sqrt(len(array))) if len(array) > 1 else math.nan
    return {"mean": float(array.mean()), "min": float(array.min()), "max": float(array.max()), "sem": sem}


def compare(runs: list[RLRun], window: int, algos: tuple[str, str]) -> dict[str, Any]:
    """Per algorithm: final success, episodes to 50% and 80%, calibration; and the difference of the first
    algorithm's mean final success from the second's, with its standard error (unpaired, seeds independent).

    :param runs: the task's runs
    :param window: the task's curve window
    :param algos: the two algorithms compared
    :return: the numbers
    """
    out: dict[str, Any] = {}
    for algo in algos:
        sel = sorted((r for r in runs if r.algo == algo), key=lambda r: r.seed)
        finals = [float(np.mean(final_tail(r.successes, window))) for r in sel]
        entry: dict[str, Any] = {"seeds": [r.seed for r in sel], "final": _stats(finals), "final_per_seed": finals}
        for level in (0.5, 0.8):
            hits = [episodes_to_reach(r, level, window) for r in sel]
            reached = [h for h in hits if h is not None]
            entry[f"to_{int(level * 100)}"] = {
                "per_seed": hits,
                "median": float(np.median(reached)) if len(reached) == len(hits) else None,
                "reached": len(reached),
            }
        calibrations = [r.calibration for r in sel if r.calibration is not None]
        if calibrations:
            for key in ("brier", "brier_constant", "bss", "bss_base_rate", "start_state_share", "brier_ema_baseline"):
                values = [c.get(key) for c in calibrations]
                finite = [float(v) for v in values if v is not None]
                entry[key] = {**(_stats(finite) if finite else {}), "per_seed": values}
        out[algo] = entry
    a, b = (out[algo]["final"] for algo in algos)
    out["difference"] = {"mean": a["mean"] - b["mean"], "sem": math.sqrt(a["sem"] ** 2 + b["sem"] ** 2)}
    return out


def plot_task(runs: list[RLRun], window: int, start: float, algos: tuple[str, str], title: str, path: Path) -> None:
    """Success curves and calibration (``V(s0)`` against the observed success per held-out state) of one task.

    :param runs: the task's runs
    :param window: episodes per curve point
    :param start: the start policy's success rate
    :param algos: the algorithms shown
    :param title: the figure's title
    :param path: the PNG file
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.0))
    for algo in algos:
        sel = [r for r in runs if r.algo == algo]
        curves = [r.curve(window) for r in sel]
        n = min(len(c[1]) for c in curves)
        x = curves[0][0][:n]
        y = np.stack([c[1][:n] for c in curves])
        (line,) = left.plot(x, y.mean(axis=0), label=f"{algo} ({len(sel)} seeds)")
        left.fill_between(x, y.min(axis=0), y.max(axis=0), color=line.get_color(), alpha=0.2)
        predictions = [p for r in sel if r.calibration for p in r.calibration["predictions"]]
        observed = [p for r in sel if r.calibration for p in r.calibration["success_per_state"]]
        if predictions:
            right.scatter(predictions, observed, s=12, alpha=0.5, color=line.get_color(), label=f"{algo} critic V(s0)")
    left.axhline(start, color="grey", linestyle=":", label="start policy")
    left.set_xlabel("training episodes")
    left.set_ylabel(f"success rate (per {window} episodes)")
    left.set_ylim(-0.02, 1.02)
    left.grid(alpha=0.3)
    left.legend(loc="lower right")
    left.set_title(f"{title}: success")
    right.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    right.set_xlim(-0.02, 1.02)
    right.set_ylim(-0.02, 1.02)
    right.set_xlabel("critic's V(s0) on a held-out start state (final critic)")
    measured = [r for r in runs if r.algo in algos and r.calibration]
    states = measured[0].calibration["states"] if measured and measured[0].calibration else 0
    rollouts = measured[0].calibration["rollouts"] if measured and measured[0].calibration else 0
    n_seeds = len({r.seed for r in measured})
    right.set_ylabel(f"final policy's success from that state ({rollouts} runs)")
    right.grid(alpha=0.3)
    right.legend(loc="upper left")
    right.set_title(f"{title}: calibration ({states} states x {n_seeds} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_summary(results: dict[str, dict[str, Any]], algos: tuple[str, str], path: Path) -> None:
    """Final success and Brier skill score per task, one dot per seed.

    :param results: task -> :func:`compare`'s result
    :param algos: the algorithms shown
    :param path: the PNG file
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 3.8))
    for k, algo in enumerate(algos):
        offset = (k - 0.5) * 0.25
        for i, task in enumerate(tasks):
            entry = results[task][algo]
            finals = entry["final_per_seed"]
            color = f"C{k}"
            left.scatter([i + offset] * len(finals), finals, color=color, s=14, label=algo if i == 0 else None)
            left.hlines(entry["final"]["mean"], i + offset - 0.1, i + offset + 0.1, color=color)
            bss = [v for v in entry.get("bss", {}).get("per_seed", []) if v is not None]
            right.scatter([i + offset] * len(bss), bss, color=color, s=14, label=f"{algo} critic" if i == 0 else None)
            if bss:
                right.hlines(np.mean(bss), i + offset - 0.1, i + offset + 0.1, color=color)
    for ax in (left, right):
        ax.set_xticks(range(len(tasks)), [SHORT.get(t, t) for t in tasks], rotation=15)
        ax.grid(alpha=0.3)
        ax.legend()
    left.set_ylabel("final success (last 10% of episodes)")
    left.set_ylim(-0.02, 1.02)
    right.axhline(0.0, color="grey", linewidth=1)
    right.set_ylabel("Brier skill score vs constant")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _reach(entry: dict[str, Any]) -> str:
    median = entry["median"]
    per_seed = ", ".join("never" if h is None else str(h) for h in entry["per_seed"])
    head = f"{median:.0f}" if median is not None else f"{entry['reached']}/{len(entry['per_seed'])} seeds"
    return f"{head} ({per_seed})"


def _score(entry: dict[str, Any] | None, pattern: str = "{:.3f}") -> str:
    if not entry or "mean" not in entry:
        return "n/a"
    return f"{pattern.format(entry['mean'])} [{pattern.format(entry['min'])}, {pattern.format(entry['max'])}]"


def markdown(task: str, result: dict[str, Any], algos: tuple[str, str]) -> str:
    """The task's two tables: success and speed; calibration."""
    lines = [
        "| algorithm | final success (mean [min, max]) | per seed | episodes to 50% | episodes to 80% |",
        "|---|---|---|---|---|",
    ]
    for algo in algos:
        e = result[algo]
        per_seed = ", ".join(f"{v:.2f}" for v in e["final_per_seed"])
        lines.append(
            f"| {algo} | {_score(e['final'], '{:.2f}')} | {per_seed} | {_reach(e['to_50'])} | {_reach(e['to_80'])} |"
        )
    d = result["difference"]
    lines.append("")
    lines.append(
        f"Difference of the means ({algos[0]} - {algos[1]}): {d['mean']:+.3f} (standard error {d['sem']:.3f})."
    )
    lines.append("")
    lines.append(
        "| critic of | Brier | Brier of the constant | BSS vs constant | BSS vs held-out base rate | "
        "start-state share (ceiling) | Brier of the moving average |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for algo in algos:
        e = result[algo]
        lines.append(
            f"| {algo} | {_score(e.get('brier'))} | {_score(e.get('brier_constant'))} "
            f"| {_score(e.get('bss'), '{:+.2f}')} | {_score(e.get('bss_base_rate'), '{:+.2f}')} "
            f"| {_score(e.get('start_state_share'), '{:+.2f}')} | {_score(e.get('brier_ema_baseline'))} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Compare, plot, write the JSON and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=paper_ids())
    parser.add_argument("--algos", nargs=2, default=["sppo", "ema"])
    parser.add_argument("--results", default="docs/results/control_suite", help="the control suite's curves files")
    parser.add_argument("--out", default="docs/results/critic_ablation")
    args = parser.parse_args()
    algos = (args.algos[0], args.algos[1])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for task in args.tasks:
        path = Path(args.results) / f"{task}.curves.json"
        if not path.exists():
            print(f"{task}: no curves in {path}")
            continue
        data, runs = load_runs(path)
        if not all(any(r.algo == a for r in runs) for a in algos):
            print(f"{task}: the runs lack one of {algos}")
            continue
        results[task] = compare(runs, int(data["window"]), algos)
        plot_task(
            runs, int(data["window"]), float(data["start_success"]), algos, SHORT.get(task, task), out / f"{task}.png"
        )
        print(f"\n### {SHORT.get(task, task)} (`{task}`)\n")
        print(markdown(task, results[task], algos))
    if results:
        plot_summary(results, algos, out / "summary.png")
    (out / "critic_ablation.json").write_text(json.dumps(results, indent=1))
    print(f"\nWrote {out / 'critic_ablation.json'} and the PNGs in {out}")


if __name__ == "__main__":
    main()
