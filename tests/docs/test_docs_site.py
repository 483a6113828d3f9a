"""The documentation site: the site tools of ``tools/`` on small inputs, and (slow) the whole site built with
``mkdocs build --strict`` and read in headless Chromium, as ``make docs`` and ``make docs-check`` do."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> ModuleType:
    """A module of ``tools/`` (a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"_docs_tool_{name}", ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sphinx_roles_become_inline_code() -> None:
    roles = _tool("griffe_sphinx_roles")
    text = "See :class:`~sppo_rl.value_heads.ValueHead`, :func:`sppo_rl.objectives.sppo_advantages` and :data:`SUITE`."
    assert roles.markdown_from_rest(text) == ("See `ValueHead`, `sppo_rl.objectives.sppo_advantages` and `SUITE`.")


def test_doctest_lines_become_a_fenced_block_until_a_blank_line() -> None:
    roles = _tool("griffe_sphinx_roles")
    text = "Example:\n\n>>> x = 1  # doctest: +SKIP\n>>> x + 1\n2\n\nAfter."
    assert roles.markdown_from_rest(text) == "Example:\n\n```pycon\n>>> x = 1\n>>> x + 1\n2\n```\n\nAfter."


def test_api_tree_lays_out_the_installed_package(tmp_path: Path) -> None:
    hooks = _tool("mkdocs_hooks")
    for folder in ("sppo_rl", "envs", "llm", "zoo"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "sppo_rl" / "sppo.py").write_text("")
    package = hooks.lay_out_api_tree(tmp_path)
    assert sorted(p.name for p in package.iterdir()) == ["__init__.py", "envs", "llm", "sppo.py", "zoo"]
    assert (package / "envs").resolve() == (tmp_path / "envs").resolve()
    # a module removed from the source goes away from the tree at the next build
    (tmp_path / "sppo_rl" / "sppo.py").unlink()
    package = hooks.lay_out_api_tree(tmp_path)
    assert "sppo.py" not in {p.name for p in package.iterdir()}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_site_builds_strictly_and_reads_well_in_chromium(tmp_path: Path) -> None:
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        pytest.skip("no Chromium here: apt-get install chromium (.ci/run installs it)")
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert build.returncode == 0, build.stderr[-3000:]
    out = tmp_path / "check"
    check = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "check_site.py"), str(site), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    pages = {page["name"]: page for page in report["pages"]}
    assert set(pages) == {"home", "api", "results"}
    assert pages["results"]["images"] >= 1 and not pages["results"]["broken_images"]
    assert pages["api"]["code_blocks"] >= 1
    assert report["search"]["results"], report["search"]
    for page in pages.values():
        for shot in page["screenshots"]:
            assert Path(shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
