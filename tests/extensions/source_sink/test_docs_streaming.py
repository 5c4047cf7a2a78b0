"""The streaming guide's self-contained example (a custom Source) works as printed."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

from rvai_sdk.drivers import SourceContext
from tests.conftest import single, AddOne

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "guides" / "streaming.md"


def test_the_guide_s_custom_source_yields_items_until_stopped() -> None:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    source_block = next(b for b in blocks if "class TickSource" in b)
    module = types.ModuleType("streaming_guide")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    try:
        exec(compile(source_block, str(GUIDE), "exec"), module.__dict__)
        source = module.TickSource(params=module.TickSource.parameters(period=0.01))
        context = SourceContext(ref="tick", inputs=single(AddOne).inputs)
        source.open(context)
        items = []
        for item in source.items():
            items.append(item)
            if len(items) == 3:
                context.stopped.set()
        source.close()
    finally:
        del sys.modules[module.__name__]
    assert [i.index for i in items] == [0, 1, 2] and [int(i.inputs["x"]) for i in items] == [0, 1, 2]
