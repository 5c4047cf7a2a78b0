"""Tensor: an n-dimensional numpy array with an optional dtype and shape; JSON form: base64 with dtype and shape."""

from __future__ import annotations

import base64
import binascii
import sys
import typing
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from rvai_sdk.exc import InputValidationError
from rvai_sdk.types._base import Value, mismatch, rng_or_default
from rvai_sdk.types._generic import GenericMeta

if TYPE_CHECKING:
    from typing_extensions import Self, TypeVar

    _ST = TypeVar("_ST", bound=np.generic, default=Any)
else:
    from typing import TypeVar

    _ST = TypeVar("_ST", bound=np.generic)

__all__ = ["Tensor"]

_KINDS = "biufc"  # booleans, integers, floats, complex: fixed-size numbers with a byte form


def _dtype_of(spec: Any) -> np.dtype[Any]:
    try:
        dtype: np.dtype[Any] = np.dtype(spec)
    except TypeError as exc:
        raise TypeError(f"Tensor takes a numpy dtype, e.g. Tensor[np.float32] or Tensor['uint8']; got {spec!r}") from exc
    if dtype.kind not in _KINDS or dtype.names is not None or dtype.subdtype is not None:
        raise TypeError(f"Tensor holds numbers or booleans; {dtype} is not one of them")
    return dtype


def _shape_of(spec: Any) -> tuple[int | None, ...]:
    if not isinstance(spec, tuple) or not all(
        d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in spec
    ):
        raise TypeError(
            f"a Tensor shape is a tuple of sizes, None for any size, e.g. Tensor[np.uint8, (None, None, 3)]; got {spec!r}"
        )
    return spec


def _shape_text(shape: tuple[int | None, ...]) -> str:
    inner = ", ".join("None" if d is None else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


class _ShapeName(tuple):  # type: ignore[type-arg]
    """A shape tuple that names itself ``(None, None, 3)`` in a parametrised class's name."""

    @property
    def __name__(self) -> str:  # read by the type-name helper
        return _shape_text(tuple(self))

    def __reduce__(self) -> tuple[Any, ...]:
        return (tuple, (tuple(self),))


class Tensor(np.ndarray[Any, np.dtype[_ST]], Value, metaclass=GenericMeta):
    """An n-dimensional numeric array, optionally of one dtype and shape: ``Tensor[np.float32]``, ``Tensor[np.uint8, (None, None, 3)]``.

    A Tensor is a numpy array (a subclass, like :class:`~rvai_sdk.types.Image`): a
    feature map, an embedding, a batch of logits. ``Tensor[dtype]`` fixes the dtype,
    ``Tensor[dtype, shape]`` also the number of dimensions and the sizes that are not
    ``None``; a bare ``Tensor`` takes any boolean, integer, float or complex array.
    Under ``mypy --strict`` declare a shape with a subclass instead of the subscript
    (a tuple is not a type): ``class Frame(Tensor[np.uint8], shape=(None, None, 3)): ...``.

    Coercion (at every cell boundary): an array of the dtype is wrapped without a
    copy; an array whose dtype converts without loss (``uint8`` to ``float32``) is
    converted; others are refused (``float64`` for ``Tensor[np.float32]``: convert
    with ``.astype``). Nested lists and numbers (the JSON input form) convert to the
    declared dtype when they fit it (floats are rounded to the nearest ``float32``).
    A ``torch.Tensor`` on the CPU is taken without a copy (one on a GPU is copied to
    the CPU), and :meth:`to_torch` gives one back without a copy.

    Arithmetic and indexing return plain numpy arrays (re-wrap with ``Tensor(...)``).
    Large tensors cross process boundaries through shared memory, as images do.
    JSON form: ``{"dtype": "float32", "shape": [2, 3], "data": "<base64>"}`` (the
    little-endian bytes in C order); a nested list is accepted as input too.

    Args:
        data: an array, a nested list, a number or a CPU ``torch.Tensor``.

    Raises:
        InputValidationError: the dtype or shape does not fit (the message says which
            and how to convert).

    Examples:
        >>> t = Tensor[np.float32]([[1, 2], [3, 4]])
        >>> t.dtype, t.shape, Tensor[np.float32].from_json(t.to_json()).tolist()
        (dtype('float32'), (2, 2), [[1.0, 2.0], [3.0, 4.0]])
        >>> Tensor[np.uint8, (None, None, 3)](np.zeros((2, 2), np.uint8))
        Traceback (most recent call last):
          ...
        rvai_sdk.exc.InputValidationError: expected Tensor[uint8, (None, None, 3)], got an array of shape (2, 2)
    """

    if TYPE_CHECKING:  # a dataclass field of this type accepts npt.ArrayLike under mypy (fields are coerced)
        def __get__(self, obj: object, owner: Any, /) -> Self: ...
        def __set__(self, obj: object, value: npt.ArrayLike, /) -> None: ...


    expected_dtype: ClassVar[np.dtype[Any] | None] = None
    """The dtype every value has (``None``: any numeric dtype)."""
    expected_shape: ClassVar[tuple[int | None, ...] | None] = None
    """The shape every value has, ``None`` for a size that may vary (``None``: any shape)."""

    def __init_subclass__(cls, dtype: Any = None, shape: tuple[int | None, ...] | None = None, **kwargs: Any) -> None:
        """``class Frame(Tensor[np.uint8], shape=(None, None, 3))``: a named tensor type.

        Args:
            dtype: the dtype (or keep the parent's).
            shape: the shape, ``None`` for a size that may vary (or keep the parent's).
        """
        super().__init_subclass__(**kwargs)
        if dtype is not None:
            cls.expected_dtype = _dtype_of(dtype)
        if shape is not None:
            cls.expected_shape = _shape_of(shape)

    @classmethod
    def _normalize_params(cls, key: tuple[Any, ...]) -> tuple[Any, ...]:
        if len(key) not in (1, 2):
            raise TypeError(f"Tensor takes a dtype and optionally a shape, e.g. Tensor[np.uint8, (None, None, 3)]; got {key!r}")
        dtype = _dtype_of(key[0])
        if len(key) == 1:
            return (dtype.type,)
        return (dtype.type, _ShapeName(_shape_of(key[1])))

    @classmethod
    def _parametrize(cls, params: tuple[Any, ...]) -> dict[str, Any]:
        attrs: dict[str, Any] = {"expected_dtype": np.dtype(params[0])}
        if len(params) == 2:
            attrs["expected_shape"] = tuple(params[1])
        return attrs

    def __new__(cls, data: Any) -> Self:
        array = _as_array(data, cls.type_name())
        return cls._check(array, data, lists=not isinstance(data, np.ndarray))

    @classmethod
    def _check(cls, array: np.ndarray[Any, Any], original: Any, lists: bool) -> Self:
        expected = cls.expected_dtype
        if expected is None:
            if array.dtype.kind not in _KINDS or array.dtype.names is not None:
                raise InputValidationError(
                    f"expected {cls.type_name()} (numbers or booleans), got an array of dtype {array.dtype}",
                    expected=cls.type_name(),
                )
        elif array.dtype != expected:
            array = _convert(cls.type_name(), array, expected, lists)
        shape = cls.expected_shape
        if shape is not None and (
            array.ndim != len(shape) or any(d is not None and d != n for d, n in zip(shape, array.shape))
        ):
            raise InputValidationError(
                f"expected {cls.type_name()}, got an array of shape {array.shape}", expected=cls.type_name()
            )
        return typing.cast("Self", array.view(cls))

    def __array_finalize__(self, obj: Any) -> None:
        pass

    def __array_wrap__(self, array: Any, context: Any = None, return_scalar: bool = False) -> Any:
        result = np.asarray(array).view(np.ndarray)
        if return_scalar and result.ndim == 0:
            return result[()]
        return result

    def __getitem__(self, key: Any) -> Any:
        result = super().__getitem__(key)
        return result.view(np.ndarray) if isinstance(result, np.ndarray) else result

    # Methods that may change dtype or shape return plain arrays too.
    def astype(self, *args: Any, **kwargs: Any) -> Any:
        return self.view(np.ndarray).astype(*args, **kwargs)

    def reshape(self, *args: Any, **kwargs: Any) -> Any:
        return self.view(np.ndarray).reshape(*args, **kwargs)

    def transpose(self, *axes: Any) -> Any:
        return self.view(np.ndarray).transpose(*axes)

    def ravel(self, *args: Any, **kwargs: Any) -> Any:
        return self.view(np.ndarray).ravel(*args, **kwargs)

    def flatten(self, *args: Any, **kwargs: Any) -> Any:
        return self.view(np.ndarray).flatten(*args, **kwargs)

    def squeeze(self, *args: Any, **kwargs: Any) -> Any:
        return self.view(np.ndarray).squeeze(*args, **kwargs)

    def swapaxes(self, *args: Any, **kwargs: Any) -> Any:
        return self.view(np.ndarray).swapaxes(*args, **kwargs)

    @property
    def T(self) -> Any:  # noqa: N802
        return self.view(np.ndarray).T

    def __reduce__(self) -> tuple[Any, ...]:
        # A plain array inside: the transport's array reducer sends a large one through shared memory.
        return (_rebuild, (type(self), self.view(np.ndarray)))

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return self.__reduce__()

    def __repr__(self) -> str:
        return f"{type(self).type_name()}(shape={self.shape}, dtype={self.dtype})"

    # -- torch ---------------------------------------------------------------------------

    def to_torch(self) -> Any:
        """A ``torch.Tensor`` sharing this array's memory (no copy; needs torch).

        A read-only array (for example one decoded from bytes) gives a tensor that must
        not be written to.

        Raises:
            MissingExtraError: torch is not installed.
        """
        from rvai_sdk._compat import require

        torch = require("torch", extra="gpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "the given NumPy array is not writable"
            return torch.from_numpy(self.view(np.ndarray))

    @classmethod
    def from_torch(cls, tensor: Any) -> Self:
        """Take a ``torch.Tensor``: without a copy on the CPU, copied from a GPU.

        Raises:
            InputValidationError: not a torch tensor, or its dtype has no numpy equivalent (bfloat16).
        """
        if not _is_torch(tensor):
            raise mismatch(cls.type_name(), tensor, "from_torch takes a torch.Tensor")
        return cls(tensor)

    # -- Value protocol ------------------------------------------------------------------

    @classmethod
    def coerce(cls, value: Any, like: Any = None) -> Self:
        """Wrap an array (no copy when the dtype fits), a CPU torch tensor, or nested lists.

        Raises:
            InputValidationError: the value is not array-like, or its dtype or shape does not fit.
        """
        if type(value) is cls:
            return value
        if isinstance(value, (np.ndarray, list, tuple, int, float, bool, np.generic)) or _is_torch(value):
            return cls(value)
        raise mismatch(cls.type_name(), value)

    def to_json(self) -> dict[str, Any]:
        """``{"dtype": name, "shape": [...], "data": base64}`` of the little-endian C-order bytes."""
        little = self.view(np.ndarray).astype(self.dtype.newbyteorder("<"), order="C", copy=False)
        return {
            "dtype": self.dtype.name,
            "shape": list(self.shape),
            "data": base64.b64encode(np.ascontiguousarray(little).data).decode("ascii"),
        }

    @classmethod
    def from_json(cls, obj: Any, like: Any = None) -> Self:
        """Decode :meth:`to_json`'s object, or a nested list of numbers (converted to the declared dtype).

        Raises:
            InputValidationError: a malformed object, bytes that do not fill the shape, or a dtype or shape that does not fit.
        """
        if isinstance(obj, list):
            if any(isinstance(x, str) for x in _flat(obj)):
                raise mismatch(cls.type_name(), obj, "a nested list must hold numbers only")
            return cls(obj)
        if not (isinstance(obj, dict) and isinstance(obj.get("dtype"), str) and isinstance(obj.get("shape"), list)
                and isinstance(obj.get("data"), str)):
            raise mismatch(cls.type_name(), obj, 'the JSON form is {"dtype": ..., "shape": [...], "data": "<base64>"} or a nested list')
        unknown = sorted(set(obj) - {"dtype", "shape", "data"})
        if unknown:
            raise InputValidationError(f"{cls.type_name()}: unknown key(s) {', '.join(unknown)}", expected=cls.type_name())
        try:
            dtype = _dtype_of(obj["dtype"])
        except TypeError as exc:
            raise InputValidationError(f"{cls.type_name()}: unknown dtype {obj['dtype']!r}", expected=cls.type_name()) from exc
        shape = obj["shape"]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise InputValidationError(f"{cls.type_name()}: a shape is a list of non-negative integers, got {shape!r}", expected=cls.type_name())
        try:
            raw = bytearray(base64.b64decode(obj["data"], validate=True))  # writable, so to_torch() may write
        except (binascii.Error, ValueError) as exc:
            raise InputValidationError(f"{cls.type_name()}: invalid base64 ({exc})", expected=cls.type_name()) from exc
        count = int(np.prod(shape, dtype=np.int64))
        if len(raw) != count * dtype.itemsize:
            raise InputValidationError(
                f"{cls.type_name()}: {len(raw)} bytes of data do not fill shape {shape} of {dtype} ({count * dtype.itemsize} bytes)",
                expected=cls.type_name(),
            )
        array = np.frombuffer(raw, dtype=dtype.newbyteorder("<"), count=count).reshape(shape)
        if not array.dtype.isnative:
            array = array.astype(dtype)
        return cls._check(array, obj, lists=False)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The base64 object (with the declared dtype and number of dimensions) or a nested array of numbers."""
        dtype: dict[str, Any] = {"type": "string"}
        shape: dict[str, Any] = {"type": "array", "items": {"type": "integer", "minimum": 0}}
        if cls.expected_dtype is not None:
            dtype["const"] = cls.expected_dtype.name
        if cls.expected_shape is not None:
            shape["minItems"] = shape["maxItems"] = len(cls.expected_shape)
            shape["prefixItems"] = [{"type": "integer", "minimum": 0} if d is None else {"const": d} for d in cls.expected_shape]
        number: dict[str, Any] = {"type": "boolean"} if cls.expected_dtype is not None and cls.expected_dtype.kind == "b" else {
            "type": "integer" if cls.expected_dtype is not None and cls.expected_dtype.kind in "iu" else "number"
        }
        return {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        "dtype": dtype,
                        "shape": shape,
                        "data": {"type": "string", "contentEncoding": "base64"},
                    },
                    "required": ["dtype", "shape", "data"],
                    "additionalProperties": False,
                },
                {"type": "array", "items": {"anyOf": [number, {"type": "array"}]}},
            ],
        }

    @classmethod
    def fake(cls, rng: np.random.Generator | None = None) -> Self:
        """A random tensor of the declared dtype (float32 when none) and shape (sizes 1 to 4 where free)."""
        rng = rng_or_default(rng)
        dtype = cls.expected_dtype if cls.expected_dtype is not None else np.dtype(np.float32)
        if cls.expected_shape is not None:
            shape = tuple(int(rng.integers(1, 5)) if d is None else d for d in cls.expected_shape)
        else:
            shape = tuple(int(n) for n in rng.integers(1, 5, size=int(rng.integers(1, 4))))
        array: Any
        if dtype.kind == "b":
            array = rng.random(shape) < 0.5
        elif dtype.kind in "iu":
            info = np.iinfo(typing.cast(Any, dtype))
            array = rng.integers(max(int(info.min), -1000), min(int(info.max), 1000), size=shape, endpoint=True)
        elif dtype.kind == "c":
            array = rng.uniform(-1, 1, size=shape) + 1j * rng.uniform(-1, 1, size=shape)
        else:
            array = rng.uniform(-1, 1, size=shape)
        return cls._check(np.asarray(array).astype(dtype), None, lists=False)


def _rebuild(cls: type[Tensor[Any]], array: np.ndarray[Any, Any]) -> Tensor[Any]:
    return typing.cast("Tensor[Any]", array.view(cls))


def _is_torch(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _as_array(data: Any, name: str = "Tensor") -> np.ndarray[Any, Any]:
    if isinstance(data, np.ndarray):
        return data
    if _is_torch(data):
        tensor = data.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        try:
            return typing.cast("np.ndarray[Any, Any]", tensor.resolve_conj().resolve_neg().numpy())
        except TypeError as exc:  # bfloat16 and other dtypes numpy lacks
            raise InputValidationError(
                f"expected {name}, got a torch tensor of dtype {data.dtype}, which numpy has no equivalent of; "
                "convert it first (tensor.float())",
                expected=name,
            ) from exc
    if isinstance(data, (str, bytes, dict)) or data is None:
        raise mismatch(name, data)
    try:
        array = np.asarray(data)
    except (TypeError, ValueError) as exc:  # ragged nested lists
        raise mismatch(name, data, f"not a rectangular array of numbers ({exc})") from exc
    if array.dtype.kind not in _KINDS:
        raise mismatch(name, data, "an array holds numbers or booleans only")
    return array


def _convert(name: str, array: np.ndarray[Any, Any], expected: np.dtype[Any], lists: bool) -> np.ndarray[Any, Any]:
    source = array.dtype
    if np.can_cast(source, expected, "safe"):
        return array.astype(expected)
    if lists or array.size == 0:
        # From nested lists (JSON): Python floats are float64 and ints int64; convert what fits the dtype.
        if expected.kind in "fc" and source.kind in "iuf":
            return array.astype(expected)
        if expected.kind in "iu" and source.kind in "iuf":
            info = np.iinfo(expected)
            if array.size == 0 or (
                np.isfinite(array).all() and (array == np.round(array)).all() and array.min() >= info.min and array.max() <= info.max
            ):
                return array.astype(expected)
            raise InputValidationError(
                f"expected {name}, got numbers that are not whole or outside {expected}'s range {info.min}..{info.max}",
                expected=name,
            )
        if expected.kind == "b" and source.kind == "b":
            return array
    raise InputValidationError(
        f"expected {name}, got an array of dtype {source}; convert it with .astype(np.{expected.name}) if that loses nothing you need",
        expected=name,
    )


def _flat(obj: Any) -> Sequence[Any]:
    out: list[Any] = []
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        else:
            out.append(item)
    return out
