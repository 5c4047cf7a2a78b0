"""Internal type aliases."""

from __future__ import annotations

from typing import Any, NewType, Union

Sid = NewType("Sid", str)
"""A state id: the key under which a stream keeps its cell state."""

JSON = Union[None, bool, int, float, str, list[Any], dict[str, Any]]
"""A value that ``json.dumps`` accepts."""
