"""The package's import graph: imports run one way (core <- envs, zoo, llm) and no module imports itself back.

The graph is read from the source with ``ast`` (every ``import`` statement, also inside functions, except those
under ``if TYPE_CHECKING:``), with the package layout of ``pyproject.toml``: ``sppo_rl/`` is ``sppo_rl``, ``envs/``
is ``sppo_rl.envs``, ``llm/`` is ``sppo_rl.llm``, ``zoo/`` is ``sppo_rl.zoo``. ``python -m pytest
tests/test_architecture.py`` is the command that shows a cycle (it prints it).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "sppo_rl": ROOT / "sppo_rl",
    "sppo_rl.envs": ROOT / "envs",
    "sppo_rl.llm": ROOT / "llm",
    "sppo_rl.zoo": ROOT / "zoo",
}


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            out[name] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that module ``name`` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found: set[str] = set()

    def resolve(target: str) -> None:
        # the longest known module that ``target`` names (``a.b.c`` -> ``a.b`` when ``c`` is an attribute)
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target:
            found.add(target)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            for alias in node.names:
                resolve(f"{module}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph (ignoring edges into a package's own ``__init__``), or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def edges(node: str) -> set[str]:
        # a module importing its own package's __init__ (``from . import x``) is resolved to the module
        return {t for t in graph[node] if not node.startswith(t + ".")}

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges(node)):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def test_the_graph_is_read() -> None:
    graph = _graph()
    assert "sppo_rl.llm.rollout" in graph["sppo_rl.llm.trainer"]
    assert "sppo_rl.objectives" in graph["sppo_rl.sppo"]
    assert len(graph) > 40


def test_no_import_cycle() -> None:
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_a_cycle_would_be_found() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_core_imports_nothing_above_it() -> None:
    above = ("sppo_rl.envs", "sppo_rl.llm", "sppo_rl.zoo")
    bad = {
        (module, target)
        for module, targets in _graph().items()
        if not module.startswith(above)
        for target in targets
        if target.startswith(above)
    }
    assert not bad


def test_import_sppo_rl_needs_no_zoo_or_llm_extras(tmp_path: Path) -> None:
    """``import sppo_rl`` (and ``SPPO`` from it) works with optuna, pyyaml and matplotlib unavailable."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'optuna', 'yaml', 'matplotlib'}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    code = (
        "import sppo_rl\nfrom sppo_rl import SPPO\nimport sys\n"
        "assert not {'optuna', 'yaml', 'matplotlib'} & {m.split('.')[0] for m in sys.modules}\n"
        "model = SPPO('MlpPolicy', 'CartPole-v1', n_steps=8, batch_episodes=1)\nprint('ok')\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


@pytest.mark.parametrize("blocked", ["optuna", "yaml"])
def test_the_blocker_blocks(tmp_path: Path, blocked: str) -> None:
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        f"    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] == {blocked!r}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", f"import {blocked}"], capture_output=True, text=True, env=env)
    assert out.returncode != 0 and "blocked" in out.stderr
