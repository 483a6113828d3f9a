"""The five-task control reproduction (expert -> behaviour cloning -> SPPO vs PPO), or its report.

Runs ``sppo-zoo suite`` (:func:`sppo_rl.zoo.control_suite.run_suite`) for each task of the paper's control
suite with five seeds and four stage-3 algorithms (SPPO, PPO with gamma = lambda = 1, PPO with SB3's defaults,
and SPPO's update with the moving-average baseline ``ema``), then prints one Markdown table per task and writes
``<out>/control_suite.json`` (all summaries), ``<out>/<task>.png`` (the success curves) and
``<out>/<task>.curves.json`` (the outcome of every training episode of every run).

    python benchmarks/control_suite.py --jobs 2                     # everything (about 4 h on 2 cores)
    python benchmarks/control_suite.py --tasks SparseMountainCar-v0 --jobs 16
    python benchmarks/control_suite.py --report-only                # tables from finished runs
    python benchmarks/control_suite.py --report-only --runs out/a out/b   # runs of one task split over folders
                                                                    # (e.g. seeds 0-2 and 3-4) are merged

The runs are independent: on a machine with more cores, raise ``--jobs`` (one torch thread per run).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from sppo_rl.envs import paper_ids
from sppo_rl.zoo.control_suite import SuiteSettings, format_table, merge_results, run_suite


def main() -> None:
    """Run the selected tasks (or only report on finished runs) and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=paper_ids(), help="sparse ids (default: the paper's five)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--algos", nargs="+", default=["sppo", "ppo", "ppo-sb3", "ema"])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--runs",
        nargs="+",
        default=["benchmarks/out/control_suite"],
        help="per-task run folders; with several, a task's runs found in more than one are merged (report only)",
    )
    parser.add_argument("--out", default="docs/results/control_suite", help="combined JSON and PNGs")
    parser.add_argument("--report-only", action="store_true", help="only read finished runs")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = {}
    if not args.report_only and len(args.runs) > 1:
        parser.error("--runs takes one folder unless --report-only")
    for task in args.tasks:
        if not args.report_only:
            run_suite(SuiteSettings(task, args.algos, args.seeds, args.runs[0], jobs=args.jobs))
        folders = [Path(runs) / task for runs in args.runs if (Path(runs) / task / "summary.json").exists()]
        if not folders:
            print(f"{task}: no finished run in {', '.join(args.runs)}")
            continue
        if len(folders) > 1:
            merged = Path(args.runs[0]) / "merged" / task
            merge_results(folders, merged)
            folders = [merged]
        summaries[task] = json.loads((folders[0] / "summary.json").read_text())
        shutil.copyfile(folders[0] / "success.png", out / f"{task}.png")
        shutil.copyfile(folders[0] / "curves.json", out / f"{task}.curves.json")
    for task, summary in summaries.items():
        minutes = summary["wall_clock_seconds"] / 60
        head = f"{summary['episodes']} episodes per run, {minutes:.1f} min wall-clock, jobs {summary['jobs']}"
        print(f"\n### {task}: {head}")
        print(format_table(summary["rows"]))
    (out / "control_suite.json").write_text(json.dumps(summaries, indent=1, default=str))
    print(f"\nWrote {out / 'control_suite.json'} and the PNGs in {out}")


if __name__ == "__main__":
    main()
