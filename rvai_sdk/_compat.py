"""Optional imports: one helper that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from rvai_sdk.exc import MissingExtraError


def require(module: str, *, extra: str) -> ModuleType:
    """Import an optional dependency, or fail saying which extra provides it.

    Args:
        module: the dotted module name, e.g. ``"paho.mqtt.client"``.
        extra: the rvai_sdk extra that installs it, e.g. ``"mqtt"``.

    Returns:
        The imported module.

    Raises:
        MissingExtraError: the module is not installed.

    Example:
        >>> require("json", extra="none").__name__
        'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{module!r} is not installed; it comes with the {extra!r} extra: pip install 'rvai_sdk[{extra}]'"
        ) from exc
