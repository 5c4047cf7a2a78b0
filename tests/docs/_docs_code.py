"""The Python code of the documentation pages: find each block, run a page's blocks in order.

A page's ```python blocks run in order in one namespace, the ``__main__`` of a fresh
interpreter (as in a notebook: classes defined there travel to other processes by
value). Two HTML comments, invisible on the rendered page, steer it:

- ``<!-- not-runnable: <reason> -->`` on the line before a block leaves that block out;
  the reason is required (a Ray cluster it needs, a package of the reader's own).
- ``<!-- docs-test`` ... ``-->`` holds code that runs at that point of the page, unseen
  by readers: what a fragment assumes (a running ``proc``, a ``frame``), or checks of
  what the blocks before it did.

Blocks whose first line starts with ``>>>`` are doctests, run with :mod:`doctest`.
"""

from __future__ import annotations

import doctest
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_NOT_RUNNABLE = re.compile(r"^<!--\s*not-runnable:?(.*?)-->\s*$")
_FENCE = re.compile(r"^(\s*)```(\w*)")


@dataclass
class Block:
    """One piece of Python on a page."""

    page: str
    line: int
    code: str
    kind: str  # "python", "doctest" or "hidden"
    skip_reason: str | None = None  # set: not runnable, and why ("" when the marker gives no reason)


def blocks(page: Path) -> list[Block]:
    """Every Python block and hidden ``docs-test`` comment of ``page``, in order."""
    lines = page.read_text().splitlines()
    name = str(page.relative_to(ROOT))
    found: list[Block] = []
    i = 0
    previous = ""  # the last non-blank line before the current one
    while i < len(lines):
        line = lines[i]
        if line.strip() == "<!-- docs-test":
            end = i + 1
            while end < len(lines) and lines[end].strip() != "-->":
                end += 1
            found.append(Block(name, i + 2, "\n".join(lines[i + 1 : end]) + "\n", "hidden"))
            previous = "-->"
            i = end + 1
            continue
        fence = _FENCE.match(line)
        if fence:
            indent, language = fence.groups()
            end = i + 1
            while end < len(lines) and not lines[end].startswith(indent + "```"):
                end += 1
            if language == "python":
                code = "\n".join(text[len(indent) :] for text in lines[i + 1 : end]) + "\n"
                kind = "doctest" if code.lstrip().startswith(">>>") else "python"
                marker = _NOT_RUNNABLE.match(previous.strip())
                reason = marker.group(1).strip() if marker else None
                found.append(Block(name, i + 2, code, kind, reason))
            previous = "```"
            i = end + 1
            continue
        if line.strip():
            previous = line
        i += 1
    return found


def pages() -> list[Path]:
    """The documentation pages that hold Python."""
    return [page for page in sorted(DOCS.rglob("*.md")) if blocks(page)]


def run_page(page: str) -> None:
    """Run the page's blocks in ``__main__``; print the failing block and exit 1 at the first failure."""
    import __main__

    namespace = __main__.__dict__
    for block in blocks(ROOT / page):
        if block.skip_reason is not None:
            continue
        where = f"{block.page}:{block.line}"
        if block.kind == "doctest":
            test = doctest.DocTestParser().get_doctest(block.code, namespace, where, block.page, block.line - 1)
            runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
            runner.run(test, clear_globs=False)
            namespace.update(test.globs)  # a DocTest runs in a copy: keep what it defined for the next blocks
            if runner.failures:
                print(f"the doctest block at {where} failed", file=sys.stderr)
                sys.exit(1)
            continue
        try:
            exec(compile(block.code, where, "exec"), namespace)  # noqa: S102 - the docs' own code
        except BaseException:
            traceback.print_exc()
            print(f"the {'hidden docs-test' if block.kind == 'hidden' else 'python'} block at {where} failed", file=sys.stderr)
            sys.exit(1)
    print(f"{page}: every block ran")
