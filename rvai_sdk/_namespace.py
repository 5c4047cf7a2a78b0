"""Where a class was defined: names its string annotations may refer to."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def defining_namespace(depth: int, annotations: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Names visible where a class is being defined, beyond its module's globals.

    ``depth`` counts frames above the caller (``1``: the caller's caller). Classes
    defined inside a function see that function's locals; classes defined by
    ``exec`` or doctest see that namespace. A class defined at the top of
    ``__main__`` (a script or a notebook) keeps the globals its ``annotations``
    name, so it still resolves when it is sent by value to another process, where
    ``__main__`` is another module. Returns ``None`` when there is nothing beyond
    the module's own globals.
    """
    frame = sys._getframe(depth + 1)
    names: dict[str, Any] = {}
    module_name = frame.f_globals.get("__name__", "")
    module = sys.modules.get(module_name)
    if module is None or vars(module) is not frame.f_globals:
        names.update(frame.f_globals)
    elif module_name == "__main__" and annotations:
        for annotation in annotations.values():
            if isinstance(annotation, str):
                for word in _NAME.findall(annotation):
                    if word in frame.f_globals:
                        names[word] = frame.f_globals[word]
    if frame.f_code.co_name != "<module>":
        names.update(frame.f_locals)
    return names or None
