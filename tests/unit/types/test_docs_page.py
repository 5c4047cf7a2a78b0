"""The examples on docs/concepts/types.md run and print what the page says."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import rvai_sdk.types as types_module

PAGE = Path(__file__).resolve().parents[3] / "docs" / "concepts" / "types.md"


def test_the_types_page_examples_run_as_written() -> None:
    text = re.sub(r"^```.*$", "", PAGE.read_text(encoding="utf-8"), flags=re.MULTILINE)
    namespace = {name: getattr(types_module, name) for name in types_module.__all__}
    test = doctest.DocTestParser().get_doctest(text, namespace, PAGE.name, str(PAGE), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted > 10
    assert results.failed == 0
