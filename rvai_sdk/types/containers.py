"""Containers: List[T] and Dict[K, V]."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from rvai_sdk.exc import InputValidationError
from rvai_sdk.types._base import Value, mismatch, nested, rng_or_default
from rvai_sdk.types._generic import GenericMeta
from rvai_sdk.types._helpers import coerce as _coerce
from rvai_sdk.types._helpers import fake as _fake
from rvai_sdk.types._helpers import from_json as _from_json
from rvai_sdk.types._helpers import is_value_type, type_name
from rvai_sdk.types._helpers import json_schema as _json_schema
from rvai_sdk.types._helpers import to_json as _to_json
from rvai_sdk.types.scalars import Integer, String

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["List", "Dict"]

_T = TypeVar("_T")
_K = TypeVar("_K")
_V = TypeVar("_V")


class List(list[_T], Value, metaclass=GenericMeta):
    """A list of values of one type: ``List[Integer]([1, 2])``. Behaves like ``list``.

    Items are coerced when the list is made (not on later ``append``). JSON form: an array.
    ``List[T]`` is a cached subclass (``List[Integer] is List[Integer]``) that nests
    (``List[List[Point]]``) and pickles by reference. A bare ``List`` holds any
    values but has no JSON decoding, schema or ``fake``: use ``List[T]``.

    Args:
        items: the items (coerced to T).

    Raises:
        InputValidationError: an item does not fit; ``field`` is its path (``"[1]"``).

    Examples:
        >>> List[Integer]([1, 2.0])
        List[Integer]([Integer(1), Integer(2)])
    """

    if TYPE_CHECKING:  # a dataclass field of this type accepts Iterable[Any] under mypy (fields are coerced)
        def __get__(self, obj: object, owner: Any, /) -> Self: ...
        def __set__(self, obj: object, value: Iterable[Any], /) -> None: ...


    item_type: Any = None

    @classmethod
    def _parametrize(cls, params: tuple[Any, ...]) -> dict[str, Any]:
        if len(params) != 1 or not is_value_type(params[0]):
            raise TypeError(f"List takes one rvai_sdk value type, e.g. List[Integer]; got {params!r}")
        return {"item_type": params[0]}

    def __init__(self, items: Iterable[Any] = ()) -> None:
        item = type(self).item_type
        values = []
        for index, value in enumerate(items):
            if item is None:
                if not isinstance(value, Value):
                    raise InputValidationError(
                        f"[{index}]: a bare List holds rvai_sdk values only, got {type(value).__name__}; use List[T]",
                        field=f"[{index}]",
                    )
            else:
                try:
                    value = _coerce(item, value)
                except InputValidationError as exc:
                    raise nested(f"[{index}]", exc) from exc
            values.append(value)
        super().__init__(values)

    def __repr__(self) -> str:
        return f"{type(self).type_name()}({list.__repr__(self)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (list(self),))

    @classmethod
    def _item(cls) -> Any:
        if cls.item_type is None:
            raise TypeError(f"{cls.__name__} has no item type; use List[T], e.g. List[Integer]")
        return cls.item_type

    @classmethod
    def coerce(cls, value: Any, like: Any = None) -> List[Any]:
        """Build from a list or tuple, coercing every item to T.

        Raises:
            InputValidationError: not a list or tuple, or an item does not fit
                (``field`` is its path, e.g. ``"[2].xmin"``).
        """
        if type(value) is cls:
            return value
        if isinstance(value, (list, tuple)):
            return cls(value)
        raise mismatch(cls.type_name(), value)

    def to_json(self) -> list[Any]:
        """An array of the items' JSON forms."""
        return [_to_json(v) for v in self]

    @classmethod
    def from_json(cls, obj: Any, like: Any = None) -> List[Any]:
        """Decode an array of T's JSON forms.

        Raises:
            InputValidationError: not an array, or a bad item (with its path).
            TypeError: the List is not parametrised.
        """
        item = cls._item()
        if not isinstance(obj, list):
            raise mismatch(cls.type_name(), obj)
        values = []
        for index, value in enumerate(obj):
            try:
                values.append(_from_json(item, value))
            except InputValidationError as exc:
                raise nested(f"[{index}]", exc) from exc
        return cls(values)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """An array of T.

        Raises:
            TypeError: the List is not parametrised.
        """
        return {"type": "array", "items": _json_schema(cls._item())}

    @classmethod
    def fake(cls, rng: np.random.Generator | None = None) -> List[Any]:
        """Zero to four fake items.

        Raises:
            TypeError: the List is not parametrised.
        """
        rng = rng_or_default(rng)
        item = cls._item()
        return cls([_fake(item, rng) for _ in range(int(rng.integers(0, 5)))])


_INT_KEY = re.compile(r"^-?[0-9]+$")


class Dict(dict[_K, _V], Value, metaclass=GenericMeta):
    """A mapping with String or Integer keys: ``Dict[String, Float]({"a": 1})``. Behaves like ``dict``.

    JSON form: an object; Integer keys become decimal strings and back.
    ``Dict[K, V]`` is a cached subclass that nests and pickles by reference;
    ``Dict[Float, V]`` raises ``TypeError`` (JSON object keys are strings).

    Args:
        items: a mapping or iterable of pairs (keys coerced to K, values to V).
        **kwargs: more entries, as for ``dict``.

    Raises:
        InputValidationError: a key or value does not fit; ``field`` is its path (``"['a']"``).

    Examples:
        >>> Dict[Integer, String]({1: "one"}).to_json()
        {'1': 'one'}
    """

    if TYPE_CHECKING:  # a dataclass field of this type accepts Mapping[Any, Any] under mypy (fields are coerced)
        def __get__(self, obj: object, owner: Any, /) -> Self: ...
        def __set__(self, obj: object, value: Mapping[Any, Any], /) -> None: ...


    key_type: Any = None
    value_type: Any = None

    @classmethod
    def _parametrize(cls, params: tuple[Any, ...]) -> dict[str, Any]:
        if len(params) != 2:
            raise TypeError(f"Dict takes a key and a value type, e.g. Dict[String, Float]; got {params!r}")
        key, value = params
        if not (isinstance(key, type) and issubclass(key, (String, Integer))):
            raise TypeError(f"Dict keys must be String or Integer (JSON object keys), got {type_name(key)}")
        if not is_value_type(value):
            raise TypeError(f"Dict values must be an rvai_sdk value type, got {value!r}")
        return {"key_type": key, "value_type": value}

    def __init__(self, items: Mapping[Any, Any] | Iterable[tuple[Any, Any]] = (), **kwargs: Any) -> None:
        cls = type(self)
        pairs = dict(items, **kwargs)
        if cls.key_type is None:
            bad = [k for k, v in pairs.items() if not isinstance(v, Value)]
            if bad:
                raise InputValidationError(
                    f"[{bad[0]!r}]: a bare Dict holds rvai_sdk values only; use Dict[K, V]", field=f"[{bad[0]!r}]"
                )
            super().__init__(pairs)
            return
        values = {}
        for key, value in pairs.items():
            try:
                k = cls.key_type.coerce(key)
            except InputValidationError as exc:
                raise nested(f"[{key!r}]", InputValidationError(f"key: {exc}", expected=exc.expected)) from exc
            try:
                values[k] = _coerce(cls.value_type, value)
            except InputValidationError as exc:
                raise nested(f"[{key!r}]", exc) from exc
        super().__init__(values)

    def __repr__(self) -> str:
        return f"{type(self).type_name()}({dict.__repr__(self)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))

    @classmethod
    def _types(cls) -> tuple[Any, Any]:
        if cls.key_type is None:
            raise TypeError("Dict has no key and value types; use Dict[K, V], e.g. Dict[String, Float]")
        return cls.key_type, cls.value_type

    @classmethod
    def coerce(cls, value: Any, like: Any = None) -> Dict[Any, Any]:
        """Build from a mapping, coercing keys to K and values to V.

        Raises:
            InputValidationError: not a mapping, or a key or value does not fit
                (``field`` is its path, e.g. ``"['cam'][0]"``).
        """
        if type(value) is cls:
            return value
        if isinstance(value, Mapping):
            return cls(value)
        raise mismatch(cls.type_name(), value)

    def to_json(self) -> dict[str, Any]:
        """An object: keys as strings (Integer keys in decimal), values' JSON forms."""
        return {str(k): _to_json(v) for k, v in self.items()}

    @classmethod
    def from_json(cls, obj: Any, like: Any = None) -> Dict[Any, Any]:
        """Decode an object; Integer keys are parsed from decimal strings.

        Raises:
            InputValidationError: not an object, a key that is not an integer (for
                Integer keys), or a bad value (with its path).
            TypeError: the Dict is not parametrised.
        """
        key_type, value_type = cls._types()
        if not isinstance(obj, dict):
            raise mismatch(cls.type_name(), obj)
        values = {}
        for key, value in obj.items():
            if issubclass(key_type, Integer):
                if not (isinstance(key, str) and _INT_KEY.match(key)):
                    raise InputValidationError(
                        f"[{key!r}]: key: expected an integer key, got {key!r}", field=f"[{key!r}]", expected="Integer"
                    )
                k: Any = int(key)
            else:
                k = key
            try:
                values[k] = _from_json(value_type, value)
            except InputValidationError as exc:
                raise nested(f"[{key!r}]", exc) from exc
        return cls(values)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """An object whose values are V (and whose keys are decimal integers for Integer keys).

        Raises:
            TypeError: the Dict is not parametrised.
        """
        key_type, value_type = cls._types()
        schema: dict[str, Any] = {"type": "object", "additionalProperties": _json_schema(value_type)}
        if issubclass(key_type, Integer):
            schema["propertyNames"] = {"pattern": _INT_KEY.pattern}
        return schema

    @classmethod
    def fake(cls, rng: np.random.Generator | None = None) -> Dict[Any, Any]:
        """Zero to three fake entries.

        Raises:
            TypeError: the Dict is not parametrised.
        """
        rng = rng_or_default(rng)
        key_type, value_type = cls._types()
        return cls({key_type.fake(rng): _fake(value_type, rng) for _ in range(int(rng.integers(0, 4)))})
