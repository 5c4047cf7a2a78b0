"""Typed dataclass bases for what a cell takes, returns, is configured with and remembers.

Users subclass one of :class:`Inputs`, :class:`Outputs`, :class:`Parameters` or
:class:`State` and decorate the subclass with :func:`dataclasses.dataclass`.
Every field is annotated with a type from :mod:`rvai_sdk.types` (optionally
``T | None``) and may carry display metadata through ``<Base>.field(...)``.

Values are validated when an instance is created: a lossless plain value is
coerced (``1`` becomes ``Integer(1)``), anything else raises an error that
names the class, the field and the expected type. Range and enum fields take
their bounds and options from the field's default.

Example:
    >>> from dataclasses import dataclass
    >>> from rvai_sdk.types import Integer
    >>> @dataclass
    ... class MyInputs(Inputs):
    ...     count: Integer = Inputs.field(name="Count", description="How many")
    >>> MyInputs(count=3).count
    Integer(3)
"""

from __future__ import annotations

import copy
import copyreg
import dataclasses
import functools
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from rvai_sdk import types as _types
from rvai_sdk._namespace import defining_namespace
from rvai_sdk.exc import CellDefinitionError, InputValidationError, ParameterError

__all__ = ["FieldInfo", "Inputs", "Outputs", "Parameters", "State", "DataClass"]

_MISSING: Any = dataclasses.MISSING
_META_KEY = "rvai_sdk"


def _by_name(name: str) -> Callable[[Any], str]:
    def reduce(obj: Any) -> str:
        return name  # pickle stores a reference to ``dataclasses.<name>``: the one object, not a copy

    return reduce


# A dataclass defined in a notebook or ``__main__`` travels to other processes by value
# (dill on the local runtime, cloudpickle on Ray), and with it its fields, whose defaults
# are the sentinels ``dataclasses.MISSING`` (no default) and ``_HAS_DEFAULT_FACTORY``.
# Pickled like ordinary objects they arrive as copies, and every ``default is MISSING``
# test on the other side (ours, and the dataclasses module's own) goes wrong: a required
# field looks like one whose default is a ``_MISSING_TYPE`` object. Registered here, every
# pickler that honours :mod:`copyreg` sends them by reference instead.
_SENTINELS = {
    "MISSING": dataclasses.MISSING,
    "_HAS_DEFAULT_FACTORY": getattr(dataclasses, "_HAS_DEFAULT_FACTORY", None),
}
for _name, _sentinel in _SENTINELS.items():
    if _sentinel is not None:
        copyreg.pickle(type(_sentinel), _by_name(_name))

_D = TypeVar("_D", bound="DataClass")
_P = TypeVar("_P", bound="Parameters")


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """What one field of a data class declares; read by docs, schemas and the HTTP driver.

    Attributes:
        name: the attribute name (also the port name of a cell).
        title: the display name given with ``field(name=...)``; defaults to ``name``.
        description: the description given with ``field(description=...)``.
        type: the resolved annotation (a :mod:`rvai_sdk.types` type, maybe optional).
        default: the default value, or ``dataclasses.MISSING``.
        default_factory: the default factory, or ``dataclasses.MISSING``.
    """

    name: str
    title: str
    description: str
    type: Any
    default: Any = _MISSING
    default_factory: Any = _MISSING

    @property
    def required(self) -> bool:
        """Whether a value must be given (the field has no default)."""
        return self.default is _MISSING and self.default_factory is _MISSING

    @property
    def like(self) -> Any:
        """The default when it carries bounds or options (a range or enum), else ``None``."""
        default = self.default
        if isinstance(default, (_types.FloatRange, _types.IntegerRange, _types.Enum)):
            return default
        return None

    def make_default(self) -> Any:
        """A fresh default value (a copy for mutable defaults)."""
        if self.default_factory is not _MISSING:
            return self.default_factory()
        return self.default

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of this field, with title, description and default."""
        schema = dict(_types.json_schema(self.type, like=self.like))
        schema["title"] = self.title
        if self.description:
            schema["description"] = self.description
        if self.default is not _MISSING and not isinstance(self.default, _types.Image):
            schema["default"] = _types.to_json(self.default)
        return schema


class _CopyOf:
    """A picklable default factory that returns a deep copy of a mutable default."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self) -> Any:
        return copy.deepcopy(self.value)

    def __repr__(self) -> str:
        return f"copy of {self.value!r}"


class _FieldMeta:
    __slots__ = ("title", "description")

    def __init__(self, title: str | None, description: str) -> None:
        self.title = title
        self.description = description


class DataClass:
    """Shared behaviour of the four data class bases; not subclassed directly.

    Subclasses are dataclasses whose fields are annotated with
    :mod:`rvai_sdk.types` types. Instances validate and coerce their values in
    ``__post_init__``; a subclass that defines its own ``__post_init__`` must
    call ``super().__post_init__()``.
    """

    _error: ClassVar[type[Exception]] = InputValidationError
    _rvai_localns: ClassVar[dict[str, Any] | None] = None
    _rvai_fields_cache: ClassVar[tuple[FieldInfo, ...] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_rvai_localns" not in cls.__dict__:  # present when the class arrives by value (dill re-creates it)
            # the names its own annotations use (each class of the MRO resolves its own: _own_hints)
            cls._rvai_localns = defining_namespace(1, cls.__dict__.get("__annotations__") or {})
    _rvai_coercers_cache: ClassVar[tuple[tuple[str, Any, Any, Any], ...] | None] = None

    @classmethod
    def field(
        cls,
        *,
        name: str | None = None,
        description: str = "",
        default: Any = _MISSING,
        default_factory: Callable[[], Any] | Any = _MISSING,
    ) -> Any:
        """Declare a field with display metadata, for use as a dataclass field default.

        Args:
            name: the display name shown in docs and HTTP schemas (defaults to the attribute name).
            description: a sentence shown in docs and HTTP schemas.
            default: the default value; a mutable one (an Image, a List) is copied for each instance.
            default_factory: a zero-argument callable making the default.

        Returns:
            A :func:`dataclasses.field` carrying the metadata.

        Example:
            >>> from dataclasses import dataclass
            >>> from rvai_sdk.types import Integer
            >>> @dataclass
            ... class Counter(State):
            ...     count: Integer = State.field(default=Integer(0), description="Frames seen")
            >>> Counter().count
            Integer(0)
        """
        if default is not _MISSING and default_factory is not _MISSING:
            raise TypeError("give a field either default= or default_factory=, not both")
        metadata = {_META_KEY: _FieldMeta(name, description)}
        if default is not _MISSING and _is_mutable(default):
            return dataclasses.field(default_factory=_CopyOf(default), metadata=metadata)
        if default_factory is not _MISSING:
            return dataclasses.field(default_factory=default_factory, metadata=metadata)
        return dataclasses.field(default=default, metadata=metadata)

    @classmethod
    def fields_info(cls, *, localns: Mapping[str, Any] | None = None) -> tuple[FieldInfo, ...]:
        """Describe every field, resolving and checking the annotations once per class.

        Args:
            localns: extra names for resolving string annotations (classes defined
                inside a function); the ``@cell`` decorator passes its caller's locals.

        Returns:
            One :class:`FieldInfo` per field, in declaration order.

        Raises:
            CellDefinitionError: the class is not a dataclass, an annotation does not
                resolve, or a field's type is not a :mod:`rvai_sdk.types` type.
        """
        cached = cls.__dict__.get("_rvai_fields_cache")
        if cached is not None:
            return typing.cast("tuple[FieldInfo, ...]", cached)
        infos = _resolve_fields(cls, localns)
        cls._rvai_fields_cache = infos
        return infos

    @classmethod
    def _coercers(cls) -> tuple[tuple[str, Any, Any, Any], ...]:
        cached = cls.__dict__.get("_rvai_coercers_cache")
        if cached is not None:
            return typing.cast("tuple[tuple[str, Any, Any, Any], ...]", cached)
        coercers = tuple(
            (f.name, f.type, f.like, typing.cast(Any, f.type).coerce if isinstance(f.type, type) else functools.partial(_types.coerce, f.type))
            for f in cls.fields_info()
        )
        cls._rvai_coercers_cache = coercers
        return coercers

    def __post_init__(self) -> None:
        values = self.__dict__
        cls = type(self)
        coercers = cls.__dict__.get("_rvai_coercers_cache") or cls._coercers()
        for name, tp, like, coerce in coercers:
            value = values[name]
            if like is None and type(value) is tp:
                continue
            try:
                coerced = coerce(value, like=like)
            except InputValidationError as exc:
                raise self._field_error(name, exc) from exc
            if coerced is not value:
                object.__setattr__(self, name, coerced)

    @classmethod
    def _field_error(cls, name: str, exc: InputValidationError) -> Exception:
        path = name + (exc.field or "")
        message = f"{cls.__name__}.{path}: {exc.detail}"
        if issubclass(cls._error, ParameterError):
            return ParameterError(message, field=path)
        return InputValidationError(message, field=path, expected=exc.expected)

    @classmethod
    def from_dict(cls: type[_D], data: Mapping[str, Any]) -> _D:
        """Build an instance from a mapping of field name to value, naming unknown and missing fields.

        Args:
            data: field name to value; plain values are coerced.

        Returns:
            The validated instance.

        Raises:
            InputValidationError: (ParameterError for Parameters) an unknown or
                missing field, or a value of the wrong type.
        """
        if not isinstance(data, Mapping):
            raise cls._error(f"{cls.__name__}: expected a mapping of field name to value, got {type(data).__name__}")
        infos = cls.fields_info()
        known = {f.name for f in infos}
        unknown = [k for k in data if k not in known]
        if unknown:
            raise cls._error(
                f"{cls.__name__} has no field {', '.join(repr(k) for k in unknown)}; its fields are: {', '.join(sorted(known)) or '(none)'}"
            )
        missing = [f.name for f in infos if f.required and f.name not in data]
        if missing:
            raise cls._error(f"{cls.__name__}: missing required field {', '.join(repr(m) for m in missing)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The field values by name (not copied)."""
        return {f.name: getattr(self, f.name) for f in self.fields_info()}

    def to_json(self) -> dict[str, Any]:
        """The JSON form: field name to the value's JSON form."""
        return {f.name: _types.to_json(getattr(self, f.name)) for f in self.fields_info()}

    @classmethod
    def from_json(cls: type[_D], obj: Any) -> _D:
        """Inverse of :meth:`to_json`: decode each field's JSON form.

        Raises:
            InputValidationError: (ParameterError for Parameters) unknown, missing or malformed fields.
        """
        if not isinstance(obj, Mapping):
            raise cls._error(f"{cls.__name__}: expected a JSON object, got {type(obj).__name__}")
        infos = {f.name: f for f in cls.fields_info()}
        decoded: dict[str, Any] = {}
        for key, value in obj.items():
            info = infos.get(key)
            if info is None:
                decoded[key] = value  # from_dict names it as unknown
                continue
            try:
                decoded[key] = _types.from_json(info.type, value, like=info.like)
            except InputValidationError as exc:
                raise cls._field_error(key, exc) from exc
        return cls.from_dict(decoded)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """A JSON schema (an object) describing the class's JSON form, with field metadata."""
        infos = cls.fields_info()
        schema: dict[str, Any] = {
            "title": cls.__name__,
            "type": "object",
            "properties": {f.name: f.json_schema() for f in infos},
            "additionalProperties": False,
        }
        required = [f.name for f in infos if f.required]
        if required:
            schema["required"] = required
        if cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}("):
            schema["description"] = cls.__doc__.strip().splitlines()[0]
        return schema


@dataclasses.dataclass
class Inputs(DataClass):
    """Base of a cell's inputs: one field per input port.

    Subclass it as a dataclass; each field is an input port that other cells'
    outputs or the pipeline's declared inputs feed. A field with a default
    need not be fed.
    """


@dataclasses.dataclass
class Outputs(DataClass):
    """Base of a cell's outputs: one field per output port.

    A cell's ``call`` returns an instance; wrongly typed values raise when it is
    created, and the request fails with a :class:`~rvai_sdk.exc.CellError`.
    """


@dataclasses.dataclass
class Parameters(DataClass):
    """Base of a cell's parameters: configuration set per inference and changeable while it runs.

    Every field should have a default. Rejected values raise
    :class:`~rvai_sdk.exc.ParameterError`; range fields are checked against the
    bounds of their default.
    """

    _error: ClassVar[type[Exception]] = ParameterError

    @classmethod
    def coerce(cls: type[_P], value: Any, current: _P | None = None, *, owner: str, ref: str | None = None) -> _P:
        """Validate ``value`` as parameters of this class.

        Args:
            value: an instance (re-validated copy), a mapping of field to value (applied
                over ``current`` when given, else over the defaults), or ``None``
                (``current``, else the defaults).
            current: the parameters in force, for partial updates.
            owner: who the parameters belong to, for messages (``"cell 'detect'"``).
            ref: the cell or driver ref, kept on the error.

        Raises:
            ParameterError: an unknown field, a rejected value or a value of another class;
                the message starts with ``owner`` and names the field.

        Example:
            >>> import dataclasses
            >>> from rvai_sdk.types import Integer
            >>> @dataclasses.dataclass
            ... class P(Parameters):
            ...     n: Integer = Parameters.field(default=Integer(1))
            >>> P.coerce({"n": 2}, owner="cell 'c'").n
            Integer(2)
            >>> P.coerce({"m": 2}, owner="cell 'c'")
            Traceback (most recent call last):
            ...
            rvai_sdk.exc.ParameterError: cell 'c': P has no parameter 'm'; its parameters are: n
        """
        try:
            if value is None:
                return current if current is not None else cls()
            if isinstance(value, cls):
                return dataclasses.replace(value)  # re-validates fields changed since construction
            if isinstance(value, Mapping):
                known = {f.name for f in cls.fields_info()}
                bad = [k for k in value if k not in known]
                if bad:
                    raise ParameterError(
                        f"{owner}: {cls.__name__} has no parameter {bad[0]!r}; its parameters are: "
                        f"{', '.join(sorted(known)) or '(none)'}",
                        ref=ref,
                        field=str(bad[0]),
                    )
                if current is None:
                    return cls.from_dict(value)
                return dataclasses.replace(current, **value)
            raise ParameterError(
                f"parameters for {owner} must be a {cls.__name__} or a mapping of field to value, "
                f"got {type(value).__name__}",
                ref=ref,
            )
        except ParameterError as exc:
            if exc.ref is None and not str(exc).startswith(owner):
                raise ParameterError(f"{owner}: {exc}", ref=ref, field=exc.field) from exc
            raise


@dataclasses.dataclass
class State(DataClass):
    """Base of a cell's per-stream state, declared with ``@cell(state=MyState)``.

    Every field needs a default: each state id starts from a fresh instance.
    The cell reads and assigns ``context.state.<field>`` in ``call``.
    """


def _is_mutable(value: Any) -> bool:
    return type(value).__hash__ is None


def _own_hints(cls: type, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The resolved annotations of ``cls`` and its bases: each class's own, in its module, with the names kept
    where it was defined (``_rvai_localns``) and ``extra`` (names local to a function, from ``@cell``).

    One namespace for the whole MRO (what ``typing.get_type_hints(cls, localns=...)`` does) would let a base's
    local alias and a subclass's module-level name of the same spelling resolve each other's fields.
    """
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        own = klass.__dict__.get("__annotations__")
        if not own:
            continue
        names = {**dict(vars(klass)), **(extra or {}), **(klass.__dict__.get("_rvai_localns") or {})}
        probe = type(klass.__name__, (), {"__annotations__": dict(own), "__module__": klass.__module__})
        hints.update(typing.get_type_hints(probe, localns=names))
    return hints


def _resolve_fields(cls: type[DataClass], localns: Mapping[str, Any] | None) -> tuple[FieldInfo, ...]:
    if "__dataclass_fields__" not in cls.__dict__:
        raise CellDefinitionError(
            f"{cls.__name__} is not a dataclass; decorate it with @dataclasses.dataclass", cell=None
        )
    try:
        hints = _own_hints(cls, localns)
    except NameError as exc:
        raise CellDefinitionError(
            f"{cls.__name__}: an annotation does not resolve ({exc}); define the types it names at module level "
            "or import them where the class is defined",
        ) from exc
    infos = []
    for f in dataclasses.fields(typing.cast(Any, cls)):
        tp = hints.get(f.name, f.type)
        if not _types.is_value_type(tp):
            shown = getattr(tp, "__name__", repr(tp))
            raise CellDefinitionError(
                f"{cls.__name__}.{f.name} is annotated {shown}, which is not an rvai_sdk type; "
                "use a type from rvai_sdk.types (e.g. Integer, Float, Image, List[Integer]), optionally '| None'"
            )
        meta = f.metadata.get(_META_KEY)
        title = meta.title if meta is not None and meta.title else f.name
        description = meta.description if meta is not None else ""
        infos.append(FieldInfo(f.name, title, description, tp, f.default, f.default_factory))
    return tuple(infos)
