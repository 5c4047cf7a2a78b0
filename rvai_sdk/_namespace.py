"""Where a class was defined: names its string annotations may refer to."""

from __future__ import annotations

import sys
from typing import Any


def defining_namespace(depth: int) -> dict[str, Any] | None:
    """Names visible where a class is being defined, beyond its module's globals.

    ``depth`` counts frames above the caller (``1``: the caller's caller). Classes
    defined inside a function see that function's locals; classes defined by
    ``exec`` or doctest see that namespace. Returns ``None`` when there is nothing
    beyond the module's own globals.
    """
    frame = sys._getframe(depth + 1)
    names: dict[str, Any] = {}
    module = sys.modules.get(frame.f_globals.get("__name__", ""))
    if module is None or vars(module) is not frame.f_globals:
        names.update(frame.f_globals)
    if frame.f_code.co_name != "<module>":
        names.update(frame.f_locals)
    return names or None
