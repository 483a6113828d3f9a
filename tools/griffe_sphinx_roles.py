"""A griffe extension (mkdocs.yml's mkdocstrings ``extensions:``) for the reST in the docstrings.

The docstrings are written for Sphinx and SB3's style: ``:param:`` fields (mkdocstrings parses those itself),
``:class:`~pkg.Name``` roles, double-backquoted literals and ``>>>`` examples. Markdown renders the roles as a stray
``:class:`` and a ``>>>`` line as nested block quotes, so before rendering:

- ``:role:`target``` becomes inline code of the target (``~`` keeps the last name only, as in Sphinx);
- a ``>>>`` line and the lines after it up to a blank line (continuations, output) become a fenced ``pycon``
  block, with ``# doctest:`` directives removed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:mod|class|func|meth|attr|data|exc|obj|const|term|ref|doc):`(?P<target>[^`]+)`")
_DOCTEST_DIRECTIVE = re.compile(r"\s*# doctest:.*$")


def _role_as_code(match: re.Match[str]) -> str:
    target = match["target"].strip()
    if "<" in target and target.endswith(">"):  # :ref:`text <label>`
        target = target[: target.index("<")].strip()
    elif target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target}`"


def _fence_doctests(text: str) -> str:
    out: list[str] = []
    block: list[str] = []
    indent = ""

    def flush() -> None:
        if block:
            out.extend([f"{indent}```pycon", *block, f"{indent}```"])
            block.clear()

    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(">>>") or (block and stripped):  # a prompt, a continuation or output
            if not block:
                indent = line[: len(line) - len(stripped)]
                if out and out[-1].strip():
                    out.append("")
            block.append(_DOCTEST_DIRECTIVE.sub("", line))
            continue
        flush()
        out.append(line)
    flush()
    return "\n".join(out)


def markdown_from_rest(text: str) -> str:
    """``text`` with its Sphinx roles as inline code and its doctest lines as fenced blocks."""
    return _fence_doctests(_ROLE.sub(_role_as_code, text))


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring with :func:`markdown_from_rest` when griffe has loaded it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_from_rest(obj.docstring.value)
