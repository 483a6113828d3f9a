"""Figures of a finished study (optimization history, parameter importances) as PNG files, via
``optuna.visualization.matplotlib``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

__all__ = ["save_study_plots"]


def _save(ax: Any, path: Path) -> None:
    """Write the figure of a Matplotlib axes to ``path`` and close it."""
    import matplotlib.pyplot as plt

    figure = ax.figure
    while not hasattr(figure, "savefig"):  # a sub-figure: its parent
        figure = figure.figure
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def _importance_evaluator() -> Any:
    """PED-ANOVA (pure NumPy, Optuna >= 3.6); older Optuna's default fANOVA needs scikit-learn."""
    evaluator_cls = getattr(optuna.importance, "PedAnovaImportanceEvaluator", None)
    return evaluator_cls() if evaluator_cls is not None else None


def save_study_plots(study: optuna.Study, out_dir: str | Path) -> dict[str, str]:
    """Write ``optimization_history.png`` and ``param_importances.png``.

    A figure that cannot be drawn (too few complete trials, no parameter that varies) is skipped with a
    message instead of an error.

    :param study: the study
    :param out_dir: where the files go
    :return: for each figure, the file written or the reason it was skipped
    """
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    results: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if not complete:
            results["optimization_history"] = "skipped: no complete trial yet"
        else:
            ax = plot_optimization_history(study)
            path = out_dir / "optimization_history.png"
            _save(ax, path)
            results["optimization_history"] = str(path)

        varying = {
            name
            for name in {n for t in complete for n in t.params}
            if len({repr(t.params.get(name)) for t in complete}) > 1
        }
        if len(complete) < 2 or not varying:
            results["param_importances"] = (
                f"skipped: parameter importances need at least 2 complete trials whose parameters vary "
                f"(this study has {len(complete)} complete trial(s))"
            )
            return results
        try:
            evaluator = _importance_evaluator()
            ax = plot_param_importances(study, evaluator=evaluator) if evaluator else plot_param_importances(study)
        except (ValueError, RuntimeError, ZeroDivisionError, ImportError) as err:
            results["param_importances"] = f"skipped: {type(err).__name__}: {err}"
            return results
        path = out_dir / "param_importances.png"
        _save(ax, path)
        results["param_importances"] = str(path)
    return results
