"""Parametrised value types: ``List[Integer]``, ``Dict[String, Float]``, ``Enum[String]``.

``Origin[args]`` returns a cached subclass, so ``List[Integer] is List[Integer]``.
Those classes pickle by reference to their origin and arguments.
"""

from __future__ import annotations

import copyreg
import operator
import sys
import threading
from typing import Any

__all__ = ["GenericMeta", "register_with_dill"]

_LOCK = threading.Lock()


class GenericMeta(type):
    """Metaclass of the parametrisable value types."""

    _params: tuple[Any, ...] | None = None
    _origin: type | None = None

    def __getitem__(cls, params: Any) -> Any:
        """``Origin[args]``: the cached subclass for these arguments.

        Raises:
            TypeError: the class is already parametrised (``List[Integer][Float]``,
                ``Classes[Integer]``) or the arguments are not value types.
        """
        if getattr(cls, "_params", None) is not None:
            raise TypeError(f"{cls.type_name()} is already parametrised")  # type: ignore[attr-defined]
        key = params if isinstance(params, tuple) else (params,)
        normalize = getattr(cls, "_normalize_params", None)
        if normalize is not None:  # e.g. Tensor: np.float32, "float32" and np.dtype("float32") are one class
            key = normalize(key)
        found = cls.__dict__.get("_cache", {}).get(key)
        if found is not None:
            return found
        with _LOCK:  # two threads parametrising at once still get one class
            cache: dict[tuple[Any, ...], type] = cls.__dict__.get("_cache") or {}
            if "_cache" not in cls.__dict__:
                cls._cache = cache
            found = cache.get(key)
            if found is None:
                attrs = cls._parametrize(key)  # type: ignore[attr-defined]
                name = f"{cls.__name__}[{', '.join(_name(a) for a in key)}]"
                attrs.update({"_params": key, "_origin": cls, "__module__": cls.__module__, "__qualname__": name})
                found = type(cls)(name, (cls,), attrs)
                cache[key] = found
                # Findable by module and name, so every pickler (dill too) stores a reference.
                setattr(sys.modules[cls.__module__], name, found)
        return found


def _name(tp: Any) -> str:
    from rvai_sdk.types._helpers import type_name

    return type_name(tp)


def _reduce_generic(cls: GenericMeta) -> Any:
    params = cls.__dict__.get("_params")
    if params is None:
        return cls.__qualname__  # a plain class: pickle by module and name
    return (operator.getitem, (cls.__dict__["_origin"], params if len(params) > 1 else params[0]))


copyreg.pickle(GenericMeta, _reduce_generic)


def register_with_dill() -> None:
    """Make dill pickle parametrised classes as ``Origin[args]`` too (idempotent).

    dill stores classes with a metaclass by module and name, which a fresh process
    cannot find (``List[Integer]`` exists there only once something subscripts it).
    Runtimes call this before sending code by value.
    """
    import dill

    if GenericMeta in dill.Pickler.dispatch:
        return

    def save(pickler: Any, obj: GenericMeta) -> None:
        reduced = _reduce_generic(obj)
        if isinstance(reduced, str):
            pickler.save_global(obj)
        else:
            pickler.save_reduce(*reduced, obj=obj)

    dill.register(GenericMeta)(save)
