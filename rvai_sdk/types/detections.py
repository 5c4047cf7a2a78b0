"""Detections: the boxes, scores, class ids (and optional names, track ids and masks) of one frame."""

from __future__ import annotations

import base64
import binascii
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from rvai_sdk._compat import require
from rvai_sdk.exc import InputValidationError
from rvai_sdk.types._base import Value, mismatch, rng_or_default

__all__ = ["Detections"]

_D = TypeVar("_D", bound="Detections")

_FIELDS = ("xyxy", "scores", "class_ids", "class_names", "track_ids", "masks")


def _error(field: str, message: str) -> InputValidationError:
    return InputValidationError(f".{field}: {message}", field=f".{field}", expected="Detections")


def _float_array(field: str, value: Any, shape: tuple[int | None, ...]) -> npt.NDArray[np.float32]:
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise _error(field, f"expected a numeric array, got {type(value).__name__}") from exc
    if array.size == 0 and array.dtype == object:
        array = array.astype(np.float32)
    if array.dtype.kind not in "iuf" and not (array.size == 0 and array.dtype.kind == "b"):
        raise _error(field, f"expected a numeric array, got dtype {array.dtype}")
    if array.size == 0:
        array = array.reshape(tuple(0 if n is None else n for n in shape))
    if array.ndim != len(shape) or any(n is not None and n != m for n, m in zip(shape, array.shape)):
        wanted = "(" + ", ".join("N" if n is None else str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"
        raise _error(field, f"expected shape {wanted}, got {array.shape}")
    result = array.astype(np.float32, copy=False)
    if not np.isfinite(result).all():
        raise _error(field, "every value must be finite (no NaN or infinity)")
    return result


def _int_array(field: str, value: Any, count: int) -> npt.NDArray[np.int64]:
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise _error(field, f"expected an integer array, got {type(value).__name__}") from exc
    if array.size == 0:
        array = array.reshape(0)
    if array.ndim != 1 or array.shape[0] != count:
        raise _error(field, f"expected shape ({count},) (one per box), got {array.shape}")
    if array.dtype.kind == "f":
        if not (np.isfinite(array).all() and (array == np.round(array)).all()):
            raise _error(field, "expected whole numbers")
    elif array.dtype.kind not in "iu" and array.size:
        raise _error(field, f"expected an integer array, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _mask_array(value: Any, count: int) -> npt.NDArray[np.bool_]:
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise _error("masks", f"expected a boolean array, got {type(value).__name__}") from exc
    if array.ndim != 3 or array.shape[0] != count:
        raise _error("masks", f"expected shape ({count}, H, W) (one mask per box), got {array.shape}")
    if array.dtype != np.bool_:
        if array.dtype.kind not in "iuf" or not np.isin(array, (0, 1)).all():
            raise _error("masks", f"expected booleans (or 0/1), got dtype {array.dtype}")
        array = array.astype(np.bool_)
    return array


class Detections(Value):
    """The objects found in one frame: boxes, scores and class ids, with optional names, track ids and masks.

    Every array has one row per object (``N`` objects, ``N`` may be 0):

    * ``xyxy``: ``(N, 4)`` float32 boxes, ``x_min, y_min, x_max, y_max`` in pixels;
    * ``scores``: ``(N,)`` float32 confidences;
    * ``class_ids``: ``(N,)`` int64 class ids;
    * ``class_names``: optional names indexed by class id (``class_names[class_ids[i]]``
      is object ``i``'s class), shared by every slice;
    * ``track_ids``: optional ``(N,)`` int64 ids of a tracker;
    * ``masks``: optional ``(N, H, W)`` boolean segmentation masks.

    Other numeric dtypes are converted (``float64`` boxes, integral floats as ids);
    a wrong shape, non-finite numbers, fractional ids or a class id without a name
    raise :class:`~rvai_sdk.exc.InputValidationError` naming the field.
    ``len(d)`` is ``N``; ``d[i]``, ``d[2:5]``, ``d[d.scores > 0.5]`` and ``d[[0, 2]]``
    return Detections. With the ``supervision`` extra, :meth:`to_supervision` and
    :meth:`from_supervision` convert losslessly (so its trackers and annotators
    work inside cells). Large arrays cross processes through shared memory like
    :class:`~rvai_sdk.types.Image`. JSON form: an object of arrays (``masks``
    bit-packed in base64). Equality compares every field exactly.

    Examples:
        >>> d = Detections(xyxy=[[0, 0, 10, 10], [5, 5, 20, 20]], scores=[0.9, 0.4], class_ids=[0, 1],
        ...                class_names=["person", "car"])
        >>> len(d), len(d[d.scores > 0.5]), d[1].names()
        (2, 1, ['car'])
        >>> Detections.from_json(d.to_json()) == d
        True
    """

    __slots__ = ("xyxy", "scores", "class_ids", "class_names", "track_ids", "masks")

    xyxy: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    class_ids: npt.NDArray[np.int64]
    class_names: list[str] | None
    track_ids: npt.NDArray[np.int64] | None
    masks: npt.NDArray[np.bool_] | None

    def __init__(
        self,
        xyxy: Any,
        scores: Any,
        class_ids: Any,
        class_names: Sequence[str] | None = None,
        track_ids: Any = None,
        masks: Any = None,
    ) -> None:
        """Check and store the arrays (no copy when they already have the right dtype).

        Args:
            xyxy: ``(N, 4)`` boxes.
            scores: ``(N,)`` confidences.
            class_ids: ``(N,)`` integer class ids.
            class_names: names indexed by class id, or None.
            track_ids: ``(N,)`` integer track ids, or None.
            masks: ``(N, H, W)`` booleans, or None.

        Raises:
            InputValidationError: a field has the wrong shape or dtype, a number is not
                finite, or a class id has no name in ``class_names``.
        """
        boxes = _float_array("xyxy", xyxy, (None, 4))
        count = boxes.shape[0]
        self.xyxy = boxes
        self.scores = _float_array("scores", scores, (count,))
        self.class_ids = _int_array("class_ids", class_ids, count)
        if class_names is None:
            self.class_names = None
        else:
            if isinstance(class_names, (str, bytes)) or not isinstance(class_names, (Sequence, np.ndarray)):
                raise _error("class_names", f"expected a list of strings, got {type(class_names).__name__}")
            names = [str(n) if isinstance(n, (str, np.str_)) else n for n in class_names]
            bad = [n for n in names if not isinstance(n, str)]
            if bad:
                raise _error("class_names", f"expected strings, got {type(bad[0]).__name__} {bad[0]!r}")
            self.class_names = names
            if count and (self.class_ids.min() < 0 or self.class_ids.max() >= len(names)):
                wrong = int(self.class_ids[(self.class_ids < 0) | (self.class_ids >= len(names))][0])
                raise _error(
                    "class_ids",
                    f"class id {wrong} has no name in class_names (it has {len(names)}: ids 0..{len(names) - 1}); "
                    "add the name, or pass class_names=None",
                )
        self.track_ids = None if track_ids is None else _int_array("track_ids", track_ids, count)
        self.masks = None if masks is None else _mask_array(masks, count)

    # -- container behaviour -------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self: _D, index: Any) -> _D:
        """The objects at ``index``: an int, a slice, an integer array or a boolean mask of length N.

        Raises:
            IndexError: an int out of range, or a mask of the wrong length.
        """
        if isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_)):
            n = len(self)
            if not -n <= int(index) < n:
                raise IndexError(f"detection index {int(index)} out of range for {n} detections")
            index = [int(index)]
        elif not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == np.bool_ and index.shape != (len(self),):
                raise IndexError(f"a boolean mask must have shape ({len(self)},), got {index.shape}")
        new = object.__new__(type(self))
        new.xyxy = self.xyxy[index]
        new.scores = self.scores[index]
        new.class_ids = self.class_ids[index]
        new.class_names = self.class_names
        new.track_ids = None if self.track_ids is None else self.track_ids[index]
        new.masks = None if self.masks is None else self.masks[index]
        return new

    def __iter__(self) -> Any:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detections):
            return NotImplemented
        for name in _FIELDS:
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None):
                return False
            if name == "class_names":
                if a != b:
                    return False
            elif a is not None and not (a.shape == b.shape and np.array_equal(a, b)):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        extra = "".join(
            f", {label}" for label, field in (("names", "class_names"), ("tracks", "track_ids"), ("masks", "masks"))
            if getattr(self, field) is not None
        )
        return f"Detections({len(self)} objects{extra})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Plain arrays: the transport's array reducer sends large ones through shared memory.
        return (
            type(self),
            (self.xyxy, self.scores, self.class_ids, self.class_names, self.track_ids, self.masks),
        )

    def names(self) -> list[str]:
        """The class name of every object, in order.

        Raises:
            ValueError: there are no ``class_names``.
        """
        if self.class_names is None:
            raise ValueError("these Detections have no class_names; pass class_names=[...] when making them")
        return [self.class_names[i] for i in self.class_ids.tolist()]

    @classmethod
    def empty(cls: type[_D], class_names: Sequence[str] | None = None) -> _D:
        """No objects (``len() == 0``), optionally with the class names of the model.

        Examples:
            >>> len(Detections.empty())
            0
        """
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            scores=np.zeros(0, np.float32),
            class_ids=np.zeros(0, np.int64),
            class_names=class_names,
        )

    # -- supervision ---------------------------------------------------------------------

    def to_supervision(self) -> Any:
        """A ``supervision.Detections`` with the same boxes, scores, ids, track ids and masks (needs the ``supervision`` extra).

        The class names go both per object (``data["class_name"]``, which supervision's
        annotators read) and whole (``metadata["class_names"]``), so
        :meth:`from_supervision` gives back an equal value.

        Raises:
            MissingExtraError: supervision is not installed.
        """
        sv = _supervision()
        data: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        if self.class_names is not None:
            data["class_name"] = np.array(self.names(), dtype=str)
            metadata["class_names"] = list(self.class_names)
        return sv.Detections(
            xyxy=self.xyxy,
            mask=self.masks,
            confidence=self.scores,
            class_id=self.class_ids,
            tracker_id=self.track_ids,
            data=data,
            metadata=metadata,
        )

    @classmethod
    def from_supervision(cls: type[_D], detections: Any) -> _D:
        """Convert a ``supervision.Detections`` (no copy when its arrays have our dtypes).

        ``confidence`` None becomes scores of 1.0 and ``class_id`` None class 0. Class
        names come from ``metadata["class_names"]`` (as :meth:`to_supervision` writes it),
        else from ``data["class_name"]`` per object.

        Raises:
            InputValidationError: not a supervision Detections, or a field does not fit
                (for example two names for one class id).
        """
        if not (hasattr(detections, "xyxy") and hasattr(detections, "tracker_id") and hasattr(detections, "data")):
            raise mismatch("supervision.Detections", detections)
        count = len(detections.xyxy)
        scores = detections.confidence if detections.confidence is not None else np.ones(count, np.float32)
        class_ids = detections.class_id if detections.class_id is not None else np.zeros(count, np.int64)
        names: list[str] | None = None
        metadata = getattr(detections, "metadata", None) or {}
        if metadata.get("class_names") is not None:
            names = [str(n) for n in metadata["class_names"]]
        elif "class_name" in detections.data:
            per_object = [str(n) for n in np.asarray(detections.data["class_name"]).tolist()]
            ids = np.asarray(class_ids).astype(np.int64).tolist()
            by_id: dict[int, str] = {}
            for class_id, name in zip(ids, per_object):
                if by_id.setdefault(class_id, name) != name:
                    raise _error("class_names", f"class id {class_id} is named both {by_id[class_id]!r} and {name!r}")
            if by_id and min(by_id) >= 0:
                names = [by_id.get(i, str(i)) for i in range(max(by_id) + 1)]
            elif not by_id:
                names = []
        return cls(
            xyxy=detections.xyxy,
            scores=scores,
            class_ids=class_ids,
            class_names=names,
            track_ids=detections.tracker_id,
            masks=detections.mask,
        )

    # -- Value protocol ------------------------------------------------------------------

    @classmethod
    def coerce(cls: type[_D], value: Any, like: Any = None) -> _D:
        """Accept Detections, a mapping of the fields (arrays or lists), or a ``supervision.Detections``.

        Raises:
            InputValidationError: anything else, or a field that does not fit (``field`` names it).
        """
        if type(value) is cls:
            return value
        if isinstance(value, Detections):
            return cls(value.xyxy, value.scores, value.class_ids, value.class_names, value.track_ids, value.masks)
        if isinstance(value, Mapping):
            return cls._from_mapping(value, json=False)
        sv = sys.modules.get("supervision")
        if sv is not None and isinstance(value, sv.Detections):
            return cls.from_supervision(value)
        raise mismatch("Detections", value, "pass Detections(xyxy=..., scores=..., class_ids=...)")

    @classmethod
    def _from_mapping(cls: type[_D], value: Mapping[str, Any], json: bool) -> _D:
        unknown = sorted(str(k) for k in value if k not in _FIELDS)
        missing = [k for k in ("xyxy", "scores", "class_ids") if k not in value]
        if unknown or missing:
            raise InputValidationError(
                "Detections takes the fields xyxy, scores, class_ids and optionally class_names, track_ids, masks"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
                expected="Detections",
            )
        fields = dict(value)
        if isinstance(fields.get("masks"), Mapping):  # the JSON form's packed bits
            fields["masks"] = _masks_from_json(fields["masks"])
        for name in ("xyxy", "scores", "class_ids", "track_ids"):
            item = fields.get(name)
            if json and item is not None and not isinstance(item, list):
                raise _error(name, f"expected an array, got {type(item).__name__}")
            if json and isinstance(item, list) and any(isinstance(x, (bool, str)) for x in np.ravel(np.asarray(item, dtype=object))):
                raise _error(name, "expected numbers")
        return cls(**fields)

    def to_json(self) -> dict[str, Any]:
        """An object of arrays; ``masks`` as ``{"shape": [N, H, W], "bits": base64}`` (``numpy.packbits``)."""
        return {
            "xyxy": self.xyxy.astype(np.float64).tolist(),
            "scores": self.scores.astype(np.float64).tolist(),
            "class_ids": self.class_ids.tolist(),
            "class_names": None if self.class_names is None else list(self.class_names),
            "track_ids": None if self.track_ids is None else self.track_ids.tolist(),
            "masks": None if self.masks is None else _masks_to_json(self.masks),
        }

    @classmethod
    def from_json(cls: type[_D], obj: Any, like: Any = None) -> _D:
        """Decode the object made by :meth:`to_json` (missing optional fields are None).

        Raises:
            InputValidationError: not an object, a missing or unknown field, or a field that does not fit.
        """
        if not isinstance(obj, Mapping):
            raise mismatch("Detections", obj, "the JSON form is an object with xyxy, scores and class_ids")
        return cls._from_mapping(obj, json=True)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """An object of arrays: boxes of four numbers, scores, integer ids, optional names, track ids and masks."""
        number_list = {"type": "array", "items": {"type": "number"}}
        integer_list = {"type": "array", "items": {"type": "integer"}}
        return {
            "type": "object",
            "properties": {
                "xyxy": {
                    "type": "array",
                    "items": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
                    "description": "boxes: x_min, y_min, x_max, y_max",
                },
                "scores": number_list,
                "class_ids": integer_list,
                "class_names": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
                "track_ids": {"anyOf": [integer_list, {"type": "null"}]},
                "masks": {
                    "anyOf": [
                        {
                            "type": "object",
                            "properties": {
                                "shape": {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3},
                                "bits": {"type": "string", "contentEncoding": "base64"},
                            },
                            "required": ["shape", "bits"],
                            "additionalProperties": False,
                        },
                        {"type": "null"},
                    ]
                },
            },
            "required": ["xyxy", "scores", "class_ids"],
            "additionalProperties": False,
        }

    @classmethod
    def fake(cls: type[_D], rng: np.random.Generator | None = None) -> _D:
        """0 to 5 random objects in a 64x64 frame, with class names, and track ids and 8x8 masks half the time each."""
        rng = rng_or_default(rng)
        count = int(rng.integers(0, 6))
        corner = rng.uniform(0, 48, size=(count, 2))
        size = rng.uniform(1, 16, size=(count, 2))
        return cls(
            xyxy=np.concatenate([corner, corner + size], axis=1).astype(np.float32),
            scores=rng.uniform(0, 1, size=count).astype(np.float32),
            class_ids=rng.integers(0, 3, size=count),
            class_names=["person", "car", "bicycle"],
            track_ids=rng.integers(0, 1000, size=count) if rng.random() < 0.5 else None,
            masks=rng.random((count, 8, 8)) < 0.5 if rng.random() < 0.5 else None,
        )


def _masks_to_json(masks: npt.NDArray[np.bool_]) -> dict[str, Any]:
    return {"shape": list(masks.shape), "bits": base64.b64encode(np.packbits(masks, axis=None).tobytes()).decode("ascii")}


def _masks_from_json(obj: Any) -> npt.NDArray[np.bool_]:
    if not (isinstance(obj, Mapping) and isinstance(obj.get("shape"), list) and isinstance(obj.get("bits"), str)):
        raise _error("masks", 'expected {"shape": [N, H, W], "bits": "<base64>"}')
    shape = obj["shape"]
    if len(shape) != 3 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise _error("masks", f"expected shape [N, H, W] of non-negative integers, got {shape!r}")
    try:
        packed = np.frombuffer(base64.b64decode(obj["bits"], validate=True), dtype=np.uint8)
    except (binascii.Error, ValueError) as exc:
        raise _error("masks", f"invalid base64 ({exc})") from exc
    total = shape[0] * shape[1] * shape[2]
    if packed.size != (total + 7) // 8:
        raise _error("masks", f"{packed.size} bytes of bits do not fit shape {shape}")
    masks: npt.NDArray[np.bool_] = np.unpackbits(packed, count=total).astype(np.bool_).reshape(shape)
    return masks


def _supervision() -> Any:
    with warnings.catch_warnings():
        # supervision warns at import when OpenCV is absent; its NumPy fallback is fine for conversion
        warnings.simplefilter("ignore", UserWarning)
        return require("supervision", extra="supervision")
