"""The protocol every value type implements, and small shared helpers."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np

from rvai_sdk.exc import InputValidationError

__all__ = ["Value", "hybridmethod", "mismatch", "nested", "rng_or_default"]

_F = TypeVar("_F", bound=Callable[..., Any])


class hybridmethod(Generic[_F]):
    """A method bound to the class when looked up on the class and to the instance on an instance.

    ``FloatRange.json_schema()`` describes any float range; ``FloatRange(0.5, min=0, max=1).json_schema()``
    adds that value's bounds. The wrapped function receives the class or the instance as its first argument.

    Args:
        func: the function to wrap.
    """

    def __init__(self, func: _F) -> None:
        self.func = func
        self.__doc__ = func.__doc__

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        return types.MethodType(self.func, owner if obj is None else obj)


class Value:
    """Base of every rvai_sdk value type.

    The SDK supplies the common types (:mod:`rvai_sdk.types`) and users may write
    their own (the guide "Custom value types"); data-class fields are annotated with
    them. A value type wraps a Python or numpy value and behaves like it
    (``Integer(2) + 1 == 3``), and the framework relies on this protocol:

    * ``coerce(value, like=None)`` returns ``value`` itself when it already has the
      type, converts plain values only when nothing is lost, and otherwise raises
      :class:`~rvai_sdk.exc.InputValidationError` (``expected Integer, got str 'abc'``);
    * ``to_json()`` / ``from_json(obj, like=None)`` round-trip exactly through plain
      JSON-compatible objects;
    * ``json_schema()`` describes that JSON form; ``fake(rng=None)`` makes a random
      valid value;
    * values, and parametrised classes such as ``List[Integer]``, survive pickle
      and ``copy.deepcopy``; a type defined in ``__main__`` (a script, a notebook)
      is made findable there in the processes that receive it.

    ``like`` is an instance carrying the declaration of a range or enum field (its
    bounds or options); the other types ignore it.
    """

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _findable_in_main(cls)

    @classmethod
    def type_name(cls) -> str:
        """The name shown in errors and schemas.

        Returns:
            e.g. ``"Integer"``, ``"List[Integer]"``, ``"Dict[String, Float]"``.
        """
        return cls.__name__

    @classmethod
    def coerce(cls, value: Any, like: Any = None) -> Any:
        """Return ``value`` as this type if that loses nothing.

        Args:
            value: a value of this type (returned unchanged) or a plain value.
            like: for ranges and enums, an instance whose bounds or options apply.

        Returns:
            An instance of this type.

        Raises:
            InputValidationError: the value does not fit; ``field`` holds the path
                inside containers and ``expected`` the type name.
        """
        raise NotImplementedError

    def to_json(self) -> Any:
        """The JSON form: plain dicts, lists, strings, numbers, booleans and None (never a JSON string)."""
        raise NotImplementedError

    @classmethod
    def from_json(cls, obj: Any, like: Any = None) -> Any:
        """Decode the JSON form made by :meth:`to_json`.

        Args:
            obj: the JSON form (as returned by ``json.loads``).
            like: for ranges and enums, an instance whose bounds or options apply.

        Returns:
            An instance of this type.

        Raises:
            InputValidationError: ``obj`` is malformed.
        """
        raise NotImplementedError

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """A JSON schema (a dict) of the JSON form."""
        raise NotImplementedError

    @classmethod
    def fake(cls, rng: np.random.Generator | None = None) -> Any:
        """A random valid value.

        Args:
            rng: the random generator to draw from (a fresh one when ``None``).
        """
        raise NotImplementedError


def _findable_in_main(cls: type) -> None:
    """Make a value type defined in ``__main__`` (a script, a notebook) findable there in every process.

    Requests pickle values with the standard pickler, which names the class ``__main__.Polygon``.
    A child process re-creates the class when it receives the pipeline by value (dill); this makes
    that copy the one the name finds, so values of the type cross the boundary both ways.
    """
    qualname = cls.__qualname__
    if cls.__module__ != "__main__" or "." in qualname or "<" in qualname or "[" in qualname:
        return
    main = sys.modules.get("__main__")
    if main is not None and not hasattr(main, qualname):
        setattr(main, qualname, cls)


def rng_or_default(rng: np.random.Generator | None) -> np.random.Generator:
    """``rng``, or a fresh default generator."""
    return rng if rng is not None else np.random.default_rng()


def mismatch(expected: str, value: Any, hint: str = "") -> InputValidationError:
    """The error for a value that does not fit ``expected``: ``expected Integer, got str 'abc'``.

    Args:
        expected: the type name.
        value: the rejected value (its repr is cut to about 60 characters).
        hint: an optional explanation appended after ``"; "``.
    """
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    message = f"expected {expected}, got {type(value).__name__} {text}"
    return InputValidationError(f"{message}; {hint}" if hint else message, expected=expected)


def nested(prefix: str, exc: InputValidationError) -> InputValidationError:
    """Re-raise an error from inside a container with ``prefix`` (``[2]``, ``.xmin``) added to its path."""
    path = prefix + (exc.field or "")
    return InputValidationError(f"{path}: {exc.detail}", field=path, expected=exc.expected)
