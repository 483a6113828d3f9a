"""Markdown tables of the suite, generated from :data:`~sppo_rl.envs.suite.SUITE` (used by ``docs/envs.md``)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import gymnasium
from gymnasium import spaces

from .suite import SUITE
from .task import TaskSpec


def space_text(space: gymnasium.Space[object]) -> str:
    """A short text for a space: ``Discrete(3)``, ``Box((8,), float32)``, ``Box((1,), float32, [-2, 2])``.

    Bounds are shown for a ``Box`` whose bounds are the same finite interval in every dimension.

    :param space: the space.
    :return: the text.
    """
    if isinstance(space, spaces.Discrete):
        return (
            f"Discrete({int(space.n)})" if int(space.start) == 0 else f"Discrete({int(space.n)}, start={space.start})"
        )
    if isinstance(space, spaces.Box):
        text = f"Box({space.shape}, {space.dtype}"
        low, high = space.low.flat[0], space.high.flat[0]
        uniform = (space.low == low).all() and (space.high == high).all()
        if uniform and space.is_bounded("both"):
            text += f", [{low:g}, {high:g}]"
        return text + ")"
    return repr(space)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table.

    :param header: the column titles.
    :param rows: the cells, one sequence per row, as long as ``header``.
    :return: the table, lines joined with ``\\n`` and no trailing newline.
    :raises ValueError: if a row's length differs from the header's.
    """

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(title) for title in header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {row!r} has {len(row)} cells, the header {len(header)}")
        lines.append("| " + " | ".join(cell(value) for value in row) + " |")
    return "\n".join(lines)


def _spaces(task: TaskSpec) -> tuple[str, str]:
    """The observation and action spaces of a task, as text.

    :param task: the task.
    :return: ``(observation space, action space)``; ``("needs <module>", ...)`` when it cannot be built.
    """
    if task.requires is not None and importlib.util.find_spec(task.requires) is None:
        missing = f"needs {task.requires}"
        return missing, missing
    env = gymnasium.make(task.id)
    try:
        return space_text(env.observation_space), space_text(env.action_space)
    finally:
        env.close()


def suite_table_markdown() -> str:
    """The table of tasks of ``docs/envs.md``: ids, horizon, success rule, spaces, the paper's task and budget.

    Builds each env once to read its spaces.

    :return: the markdown table.
    """
    header = (
        "sparse id",
        "dense counterpart",
        "H",
        "success (outcome = 1)",
        "observation",
        "action",
        "in the paper",
        "paper: episodes / batch",
    )
    rows = []
    for task in SUITE.values():
        observation, action = _spaces(task)
        in_paper = "yes" if task.paper else "no (ours)"
        budget = f"{task.paper_episode_budget:,} / {task.paper_batch_episodes}"
        rows.append(
            (f"`{task.id}`", f"`{task.dense_id}`", task.horizon, task.success, observation, action, in_paper, budget)
        )
    return markdown_table(header, rows)


def dense_table_markdown() -> str:
    """The table of dense counterparts and their rewards.

    :return: the markdown table.
    """
    rows = [(f"`{task.dense_id}`", task.name, task.base_id, task.shaping) for task in SUITE.values()]
    return markdown_table(("dense id", "task", "dynamics", "reward"), rows)
