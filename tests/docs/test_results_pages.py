"""The results pages quote the measured JSON: a re-run that changes a number fails here until the page follows."""

from __future__ import annotations

import json
from pathlib import Path

from sppo_rl.zoo.control_suite import format_table

DOCS = Path(__file__).resolve().parents[2] / "docs" / "results"


def test_the_control_suite_page_shows_the_tables_of_its_json() -> None:
    summaries = json.loads((DOCS / "control_suite" / "control_suite.json").read_text())
    page = (DOCS / "control_suite.md").read_text()
    tasks = ["SparsePrecisionCartPole-v0", "SparseMountainCar-v0", "SparseHopper-v0", "SparseLunarLander-v0"]
    assert set(summaries) == {*tasks, "SparsePendulum-v0"}  # the paper's five, all re-run
    for task, summary in summaries.items():
        assert f"(`{task}`)" in page
        for line in format_table(summary["rows"]).splitlines()[2:]:  # every algorithm's row, as the report prints it
            assert line in page, f"{task}: {line}"
        assert (DOCS / "control_suite" / f"{task}.png").is_file()


def test_the_critic_ablation_page_quotes_its_json() -> None:
    ablation = json.loads((DOCS / "critic_ablation" / "critic_ablation.json").read_text())
    page = (DOCS / "critic_ablation.md").read_text()
    assert set(ablation) == set(json.loads((DOCS / "control_suite" / "control_suite.json").read_text()))
    for task, algos in ablation.items():
        assert f"(`{task}`)" in page and (DOCS / "critic_ablation" / f"{task}.png").is_file()
        for algo in ("sppo", "ema"):
            final = algos[algo]["final"]
            quoted = f"| {algo} | {final['mean']:.2f} [{final['min']:.2f}, {final['max']:.2f}] |"
            assert quoted in page, f"{task}: {quoted}"


def test_the_llm_performance_page_quotes_the_h200_ratios_of_its_json() -> None:
    page = (DOCS / "llm_performance.md").read_text()
    for name in ("h200_throughput_1024", "h200_throughput_1024_nockpt", "h200_throughput_4096"):
        throughput = json.loads((DOCS / "llm_performance" / f"{name}.json").read_text())["sections"]["throughput"]
        steps = throughput["steps"]
        grpo = [s for s in steps if s["estimator"] == "grpo"][-1]
        sppo = [s for s in steps if s["estimator"] == "sppo"][-1]
        ratio = sppo["prompts_per_s"] / grpo["prompts_per_s"]
        assert abs(ratio - throughput["speedup_prompts_per_s"]) < 1e-3, name
        assert f"**{ratio:.2f}**" in page, f"{name}: the page does not show the ratio {ratio:.2f} in bold"
        for step in (grpo, sppo):
            assert f"| {step['step_s']:.1f} | {step['generation_s']:.1f} |" in page, f"{name}: {step['case']}"


def test_the_real_lm_critic_page_quotes_its_json() -> None:
    page = (DOCS / "critic_ablation_real_lm.md").read_text()
    study = json.loads((DOCS / "real_lm" / "critic_study_2.json").read_text())
    best = max(p["skill"] for v in study["variants"].values() for p in v["per_pass"])
    assert best < 0.10  # the page says the target was not met
    for name, variant in study["variants"].items():  # every pass's skill, the best in bold
        skills = " | ".join(f"{p['skill']:+.3f}" for p in variant["per_pass"])
        skills = skills.replace(f"{best:+.3f}", f"**{best:+.3f}**")
        assert f"| {name.rsplit('_', 1)[0]} |" in page and skills in page, f"{name}: {skills}"
    runs = json.loads((DOCS / "real_lm" / "graded" / "real_lm.json").read_text())["runs"]
    for method in ("sppo", "ema", "grpo"):
        assert f"{runs[method]['final_accuracy']:.3f}" in page, method
    assert f"{runs['sppo']['calibration']['skill']['skill']:.3f}" in page
    warmup5 = json.loads((DOCS / "real_lm" / "graded_sppo_warmup5" / "real_lm.json").read_text())["runs"]["sppo"]
    assert f"**{warmup5['final_accuracy']:.3f}**" in page
    assert f"**{warmup5['calibration']['skill']['skill']:+.3f}**" in page  # the target (>= 0.10) met at the run's end
