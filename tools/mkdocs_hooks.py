"""mkdocs hooks of the documentation site (mkdocs.yml's ``hooks:``).

- The API reference reads the source statically (griffe), which finds a package by its folder: ``sppo_rl/``
  holds the core only, while ``sppo_rl.envs``, ``.llm`` and ``.zoo`` live in ``envs/``, ``llm/`` and ``zoo/``
  (``[tool.setuptools.package-dir]``). :func:`on_config` lays out ``build/docs-api/sppo_rl/`` as the package
  installs, with symbolic links to the source, before the API pages are rendered.
- A nav entry ``page.md#heading`` (a section of a page, such as "Coming from TRL") becomes a link to that
  heading; mkdocs only takes whole pages. :func:`on_post_page` checks that the heading exists.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

log = logging.getLogger("mkdocs.hooks.sppo_rl")

API_TREE = Path("build") / "docs-api"
# subpackage -> its folder in the repository
SUBPACKAGE_FOLDERS = {"envs": "envs", "llm": "llm", "zoo": "zoo"}
_SECTION = re.compile(r"^(?P<page>[^:#]+\.md)#(?P<anchor>[\w-]+)$")
_SCHEME = "section:"  # what a section entry of the nav is while mkdocs builds the nav (a URL: not checked as a file)
_sections: dict[str, set[str]] = {}  # page source path -> anchors the nav links to


def lay_out_api_tree(root: Path) -> Path:
    """Make ``root/build/docs-api/sppo_rl/`` the installed package's layout, as links into ``root``."""
    package = root / API_TREE / "sppo_rl"
    package.mkdir(parents=True, exist_ok=True)
    wanted = {p.name: p for p in (root / "sppo_rl").iterdir() if p.name != "__pycache__"}
    wanted.update({name: root / folder for name, folder in SUBPACKAGE_FOLDERS.items()})
    for link in package.iterdir():
        if link.name not in wanted or not link.is_symlink() or link.resolve() != wanted[link.name].resolve():
            link.unlink()
    for name, target in wanted.items():
        link = package / name
        if not link.is_symlink():
            link.symlink_to(target.resolve(), target_is_directory=target.is_dir())
    return package


def _mark_sections(items: list[Any]) -> None:
    for item in items:
        if isinstance(item, dict):
            for title, value in item.items():
                if isinstance(value, list):
                    _mark_sections(value)
                elif isinstance(value, str) and (match := _SECTION.match(value)):
                    item[title] = _SCHEME + value
                    _sections.setdefault(match["page"], set()).add(match["anchor"])
        elif isinstance(item, list):
            _mark_sections(item)


@event_priority(100)  # before mkdocstrings reads its search paths: build/docs-api must exist by then
def on_config(config: Any) -> Any:
    lay_out_api_tree(Path(config["config_file_path"]).parent)
    _sections.clear()
    _mark_sections(config["nav"] or [])
    return config


def _links(items: list[Any]) -> list[Any]:
    found = []
    for item in items:
        found.extend(_links(item.children) if item.children else [item] if item.is_link else [])
    return found


def on_nav(nav: Any, config: Any, files: Any) -> Any:
    for link in _links(nav.items):
        if not link.url.startswith(_SCHEME):
            continue
        page, anchor = link.url[len(_SCHEME) :].split("#", 1)
        target = files.get_file_from_path(page)
        if target is None:
            log.warning("nav: %r links to a section of %r, which is not a documentation file", link.title, page)
            continue
        link.url = f"{target.url}#{anchor}"
    return nav


def on_post_page(output: str, page: Any, config: Any) -> str:
    for anchor in sorted(_sections.get(page.file.src_uri, ())):
        if f'id="{anchor}"' not in output:
            log.warning("nav: a section link points to '%s#%s', a heading that page lacks", page.file.src_uri, anchor)
    return output
