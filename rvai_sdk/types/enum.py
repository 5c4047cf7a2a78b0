"""Enum[T]: one selected value out of declared options."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

import numpy as np

from rvai_sdk.exc import InputValidationError
from rvai_sdk.types._base import Value, hybridmethod, rng_or_default
from rvai_sdk.types._generic import GenericMeta
from rvai_sdk.types._helpers import coerce as _coerce
from rvai_sdk.types._helpers import fake as _fake
from rvai_sdk.types._helpers import from_json as _from_json
from rvai_sdk.types._helpers import is_value_type
from rvai_sdk.types._helpers import json_schema as _json_schema
from rvai_sdk.types._helpers import to_json as _to_json
from rvai_sdk.types.scalars import Boolean, Float, Integer, String

__all__ = ["Enum"]

_T = TypeVar("_T")

_PLAIN = ((bool, Boolean), (int, Integer), (float, Float), (str, String))


def _wrap(value: Any) -> Any:
    """A bare Enum's option: Values as they are, plain bool/int/float/str wrapped."""
    if isinstance(value, Value):
        return value
    for plain, wrapper in _PLAIN:
        if isinstance(value, plain):
            return wrapper(value)
    raise InputValidationError(
        f"an Enum option must be an rvai_sdk value, got {type(value).__name__}; use Enum[T]", expected="Enum"
    )


class Enum(Value, Generic[_T], metaclass=GenericMeta):
    """One ``selected`` value out of ``options``; behaves like the selected value.

    The JSON form is the selected value's; the options belong to the field
    declaration (its default, passed as ``like``) and show in its schema as ``enum``.

    Args:
        options: the allowed values (coerced to T for ``Enum[T]``).
        selected: the chosen option (default: the first).

    Raises:
        InputValidationError: no options, an option does not fit T, or ``selected``
            is not one of the options.

    Examples:
        >>> e = Enum[String](options=["fast", "accurate"], selected="accurate")
        >>> e == "accurate", e.to_json()
        (True, 'accurate')
        >>> Enum[String].coerce("fast", like=e).selected
        String('fast')
    """

    __slots__ = ("options", "selected")
    item_type: Any = None
    options: tuple[_T, ...]
    selected: _T

    @classmethod
    def _parametrize(cls, params: tuple[Any, ...]) -> dict[str, Any]:
        if len(params) != 1 or not is_value_type(params[0]):
            raise TypeError(f"Enum takes one rvai_sdk value type, e.g. Enum[String]; got {params!r}")
        return {"item_type": params[0], "__slots__": ()}

    def __init__(self, options: Iterable[Any], selected: Any = None) -> None:
        convert = self._item_converter()
        opts = tuple(convert(o) for o in options)
        name = type(self).type_name()
        if not opts:
            raise InputValidationError(f"{name} needs at least one option", expected=name)
        chosen = opts[0] if selected is None else convert(selected)
        if chosen not in opts:
            raise InputValidationError(
                f"{chosen!s} is not one of the options: {', '.join(str(o) for o in opts)}", expected=name
            )
        self.options = opts
        self.selected = chosen

    @classmethod
    def _item_converter(cls) -> Any:
        item = cls.item_type
        if item is None:
            return _wrap
        return lambda value: _coerce(item, value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Enum):
            return bool(self.selected == other.selected)
        return bool(self.selected == other)

    def __hash__(self) -> int:
        return hash(self.selected)

    def __str__(self) -> str:
        return str(self.selected)

    def __repr__(self) -> str:
        return f"{type(self).type_name()}(options={list(self.options)!r}, selected={self.selected!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.options, self.selected))

    def __deepcopy__(self, memo: dict[int, Any]) -> Enum[Any]:
        return type(self)(self.options, self.selected)

    @classmethod
    def coerce(cls, value: Any, like: Any = None) -> Enum[Any]:
        """An Enum selecting ``value``: with ``like``, out of ``like``'s options; else a single-option Enum.

        Args:
            value: an Enum (returned unchanged when it has this type and ``like`` is ``None``)
                or a value to select.
            like: an Enum whose options apply.

        Raises:
            InputValidationError: the value is not one of the options, or does not fit T.
        """
        if isinstance(value, Enum):
            if like is None:
                return value if type(value) is cls else cls(value.options, value.selected)
            return cls(like.options, value.selected)
        if like is not None:
            return cls(like.options, value)
        return cls((value,), value)

    def to_json(self) -> Any:
        """The selected value's JSON form (the options belong to the declaration)."""
        return _to_json(self.selected)

    @classmethod
    def from_json(cls, obj: Any, like: Any = None) -> Enum[Any]:
        """Decode the selected value (options from ``like``), or ``{"selected": ..., "options": [...]}``.

        Raises:
            InputValidationError: malformed, or not one of the options.
        """
        if isinstance(obj, dict) and "selected" in obj:
            options = [cls._decode_item(o) for o in obj.get("options", [obj["selected"]])]
            return cls(options, cls._decode_item(obj["selected"]))
        value = cls._decode_item(obj)
        return cls.coerce(value, like)

    @classmethod
    def _decode_item(cls, obj: Any) -> Any:
        return _wrap(obj) if cls.item_type is None else _from_json(cls.item_type, obj)

    @hybridmethod
    def json_schema(self_or_cls: Any) -> dict[str, Any]:
        """T's schema; on an instance, plus ``enum``: the options' JSON forms."""
        cls: Any = self_or_cls if isinstance(self_or_cls, type) else type(self_or_cls)
        schema: dict[str, Any] = dict(_json_schema(cls.item_type)) if cls.item_type is not None else {}
        if not isinstance(self_or_cls, type):
            schema["enum"] = [_to_json(o) for o in self_or_cls.options]
        return schema

    @hybridmethod
    def fake(self_or_cls: Any, rng: np.random.Generator | None = None) -> Enum[Any]:
        """On an instance, a random choice among its options; on the class, fake options too."""
        rng = rng_or_default(rng)
        if not isinstance(self_or_cls, type):
            options = self_or_cls.options
            made: Enum[Any] = type(self_or_cls)(options, options[int(rng.integers(0, len(options)))])
            return made
        cls: Any = self_or_cls
        item = cls.item_type if cls.item_type is not None else String
        # Distinct options, compared by JSON form (items such as List are unhashable).
        drawn = {json.dumps(_to_json(v), sort_keys=True): v for v in (_fake(item, rng) for _ in range(3))}
        choices = list(drawn.values())
        fresh: Enum[Any] = cls(choices, choices[int(rng.integers(0, len(choices)))])
        return fresh
