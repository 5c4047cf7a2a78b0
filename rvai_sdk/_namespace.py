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
    ``__main__`` is another module. Given ``annotations``, only the names they
    mention are kept, wherever the class is defined. Returns ``None`` when there is
    nothing beyond the module's own globals.
    """
    frame = sys._getframe(depth + 1)
    names: dict[str, Any] = {}
    wanted: set[str] | None = None
    if annotations is not None:  # only the names they mention: the rest of the scope (a database connection,
        wanted = set()  # a large array) would travel with the class to other processes, or fail to
        for annotation in annotations.values():
            wanted.update(_NAME.findall(annotation if isinstance(annotation, str) else repr(annotation)))

    def take(scope: Mapping[str, Any]) -> None:
        if wanted is None:
            names.update(scope)
        else:
            names.update((word, scope[word]) for word in wanted if word in scope)

    module_name = frame.f_globals.get("__name__", "")
    module = sys.modules.get(module_name)
    if module is None or vars(module) is not frame.f_globals:
        take(frame.f_globals)
    elif module_name == "__main__" and annotations:
        take(frame.f_globals)
    if frame.f_code.co_name != "<module>":
        take(frame.f_locals)
    return names or None
