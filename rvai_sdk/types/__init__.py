"""Typed values: what flows between cells, with JSON forms, JSON schemas and ``fake()``.

Every type derives from :class:`Value` and behaves like the value it wraps
(``Integer(2) + 1 == 3``). The module-level helpers accept any value-type
annotation, including ``T | None``.

Examples:
    >>> from rvai_sdk.types import Integer, List, coerce
    >>> coerce(List[Integer], [1, 2.0])
    List[Integer]([Integer(1), Integer(2)])
"""

from rvai_sdk.types._base import Value
from rvai_sdk.types._helpers import (
    coerce,
    fake,
    from_json,
    is_value_type,
    json_schema,
    to_json,
    type_name,
    unwrap_optional,
)
from rvai_sdk.types.containers import Dict, List
from rvai_sdk.types.detections import Detections
from rvai_sdk.types.enum import Enum
from rvai_sdk.types.geometry import BoundingBox, Class, Classes, Point
from rvai_sdk.types.image import Image
from rvai_sdk.types.ranges import FloatRange, IntegerRange
from rvai_sdk.types.scalars import Boolean, Float, Integer, String
from rvai_sdk.types.tensor import Tensor

__all__ = [
    "Value",
    "Integer",
    "Float",
    "String",
    "Boolean",
    "FloatRange",
    "IntegerRange",
    "Enum",
    "Image",
    "Tensor",
    "BoundingBox",
    "Point",
    "Class",
    "Classes",
    "Detections",
    "List",
    "Dict",
    "coerce",
    "fake",
    "from_json",
    "is_value_type",
    "json_schema",
    "to_json",
    "type_name",
    "unwrap_optional",
]
