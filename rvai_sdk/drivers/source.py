"""Sources: where a stream's items come from (a camera, a file, a message topic, fake data).

A :class:`Source` is a picklable piece of configuration until :meth:`Source.open`
is called inside the driver; it then yields :class:`SourceItem` objects (the
pipeline inputs as typed values, with a per-source index and a timestamp) until
it ends or is stopped, and is closed. ``SourceSinkDriver`` runs each source as
its own stream.

Example:
    >>> import itertools, time
    >>> from rvai_sdk.types import Integer
    >>> class Count(Source):
    ...     def items(self):
    ...         for i in range(3):
    ...             yield SourceItem(inputs={"x": Integer(i)}, index=i, timestamp=time.time())
    >>> [item.index for item in Count().items()] == [0, 1, 2]
    True
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, TypeVar

import attrs
import numpy as np

from rvai_sdk.data import Parameters
from rvai_sdk.drivers.driver import DriverParameters
from rvai_sdk.exc import InputValidationError
from rvai_sdk.pipeline.graph import InputSpec
from rvai_sdk.types import Enum, FloatRange, IntegerRange, String, Value
from rvai_sdk.types._base import mismatch

__all__ = ["Source", "SourceItem", "SourceContext", "SourceParameters", "SourceMap", "DROP_POLICIES"]

DROP_POLICIES = ("auto", "block", "drop_oldest", "keep_latest")
"""What a stream does when its source produces faster than inference takes items:

* ``block``: the source waits (back-pressure; right for files and fake data);
* ``drop_oldest``: the oldest queued item is dropped to make room (right for live cameras);
* ``keep_latest``: only the newest item is kept queued (lowest latency);
* ``auto``: ``drop_oldest`` for a :attr:`Source.live` source, else ``block``.
"""

_P = TypeVar("_P", bound=Parameters)
_URL_PASSWORD = re.compile(r"(://[^:/@\s']*:)[^@\s']+@")


def hide_passwords(text: str) -> str:
    """``text`` with the password of every URL in it shown as ``***`` (for messages and logs)."""
    return _URL_PASSWORD.sub(r"\1***@", text)


@dataclasses.dataclass
class SourceParameters(DriverParameters):
    """Parameters every source has: how its stream is queued, pipelined and retried.

    Subclass it (as a dataclass) for a source's own parameters and set it as the
    source's ``parameters_class``; build values with ``MySource.parameters(...)``.

    Attributes:
        drop: the drop policy, one of :data:`DROP_POLICIES`.
        buffer: items queued between the source and inference before the policy applies.
        max_in_flight: requests of this stream sent to the inference process at once
            (results still reach the sinks in source order).
        retry_initial: seconds before the first retry after the source failed.
        retry_max: the longest wait between retries (the wait doubles each time).
        give_up: seconds an item waits for an unreachable inference process (down or
            restarting) before it is written as failed; ``0`` (the default) waits as long
            as it takes, and items already taken are sent again once it is back.
    """

    drop: Enum[String] = DriverParameters.field(
        name="Drop policy",
        description="block, drop_oldest, keep_latest, or auto (drop_oldest for live sources, else block)",
        default=Enum[String](options=list(DROP_POLICIES), selected="auto"),
    )
    buffer: IntegerRange = DriverParameters.field(
        name="Buffer", description="Items queued before the drop policy applies", default=IntegerRange(8, min=1, max=100_000)
    )
    max_in_flight: IntegerRange = DriverParameters.field(
        name="Requests in flight", description="Requests of this stream pipelined at once", default=IntegerRange(4, min=1, max=1024)
    )
    retry_initial: FloatRange = DriverParameters.field(
        name="First retry delay", description="Seconds before reopening a failed source", default=FloatRange(0.2, min=0.0, max=600.0)
    )
    retry_max: FloatRange = DriverParameters.field(
        name="Longest retry delay", description="Upper bound of the doubling retry delay", default=FloatRange(5.0, min=0.0, max=3600.0)
    )
    give_up: FloatRange = DriverParameters.field(
        name="Give up after",
        description="Seconds an item waits for an unreachable inference process before it fails (0: wait)",
        default=FloatRange(0.0, min=0.0, max=1e7),
    )


@attrs.frozen
class SourceItem:
    """One item a source produced: the pipeline inputs of one request.

    Attributes:
        inputs: pipeline input ref → typed value (plain values are coerced by ``predict``).
        index: the item's number in its source, increasing by one per item, never reused
            (a camera that reconnects keeps counting).
        timestamp: when the item was captured, in seconds since the epoch.
        sid: the state id for this item; ``None`` uses the stream's sid (the usual case).
    """

    inputs: Mapping[str, Any]
    index: int
    timestamp: float
    sid: str | None = None


@attrs.frozen
class SourceContext:
    """What a source gets when it is opened inside the driver.

    Attributes:
        ref: the source's ref in the driver (use it in messages).
        inputs: the pipeline's inputs by ref (their types), to build or check items.
        stopped: set when the stream is asked to stop; :meth:`Source.items` must return
            soon after (check it at least every half second, never block on I/O longer).
        logger: where to log what the source notices (bad payloads, reconnects).
        first_index: items of a lower index are skipped by the driver (its sinks hold them, or the
            stream took them before the source was opened again): a replayable source may give them
            with empty ``inputs``, without decoding, converting or pacing them.
    """

    ref: str
    inputs: Mapping[str, InputSpec]
    stopped: threading.Event = attrs.field(factory=threading.Event)
    logger: logging.Logger = attrs.field(factory=lambda: logging.getLogger("rvai_sdk.sources"))
    first_index: int = 0


class Configurable:
    """Shared by :class:`Source` and :class:`Sink`: typed parameters given as ``params=``.

    Instances are configuration: comparable by value (same class, same attributes)
    and picklable. The driver opens a shallow copy, so anything set in ``open`` stays
    off the configuration object.
    """

    parameters_class: ClassVar[type[Parameters]] = DriverParameters

    def __init__(self, params: Parameters | Mapping[str, Any] | None = None) -> None:
        """Keep the parameters.

        Args:
            params: an instance of ``parameters_class`` (see :meth:`parameters`) or a mapping
                of field to value.

        Raises:
            ParameterError: a field is unknown or a value is rejected; names the field.
        """
        self.params = self.parameters_class.coerce(params, owner=type(self).__name__)

    @classmethod
    def parameters(cls, **fields: Any) -> Any:
        """Build this class's parameters, e.g. ``DummySource.parameters(rate=FloatRange(10))``.

        Args:
            **fields: field name to value; missing fields take their defaults.

        Returns:
            An instance of ``parameters_class``.

        Raises:
            ParameterError: an unknown field or a rejected value.
        """
        return cls.parameters_class.coerce(fields, owner=cls.__name__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    __hash__ = None  # type: ignore[assignment]

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        # Configuration is a value: a copy shares what the constructor was given (a drain
        # callable, a format) and gets its own parameters.
        clone = copy.copy(self)
        clone.params = copy.deepcopy(self.params, memo)
        return clone

    secret_attributes: ClassVar[tuple[str, ...]] = ()
    """Attributes :func:`repr` shows as ``'***'`` (passwords, auth headers); URLs always hide their password."""

    def __repr__(self) -> str:
        shown = []
        for name, value in sorted(vars(self).items(), key=lambda item: item[0] == "params"):
            if name.startswith("_") or name == "context":
                continue
            if name in self.secret_attributes and value:
                text = "'***'"
            else:
                text = hide_passwords(repr(value))
            shown.append(f"{name}={text}")
        return f"{type(self).__name__}({', '.join(shown)})"


class Source(Configurable, abc.ABC):
    """Base of every source: a stream of pipeline inputs.

    Implement :meth:`items`; override :meth:`open` and :meth:`close` to acquire and
    release connections, :attr:`live` for a source that produces at its own pace
    (a camera), and :meth:`stats` for your counters. The constructor only keeps
    configuration (the driver may run in another process, so a source must pickle).

    The framework promises: :meth:`open` is called once on a private copy in the
    driver, then :meth:`items` is iterated on one thread, then :meth:`close` is
    called (also after an error, and before a retry opens it again). An exception
    from :meth:`open` or :meth:`items` is reported (``SourceError`` naming the ref)
    and the source is reopened with backoff; other streams are not disturbed.

    Attributes:
        parameters_class: the :class:`SourceParameters` subclass this source takes.
        params: its parameters.
    """

    parameters_class: ClassVar[type[Parameters]] = SourceParameters
    params: Any

    @property
    def live(self) -> bool:
        """Whether the source produces at its own pace and cannot wait (a camera); ``False`` by default."""
        return False

    @property
    def replayable(self) -> bool:
        """Whether every open yields the same items under the same indexes (a file); default: not :attr:`live`.

        The driver uses it when a stream starts on a sink that keeps positions, or with
        a ``position_store``: a replayable source skips the items its sinks already
        hold (it resumes, so no item is inferred twice); any other source numbers its
        items on after them (a new run never collides with an old run's records).
        """
        return not self.live

    @property
    def wants_acknowledgements(self) -> bool:
        """Whether the driver calls :meth:`acknowledge` for each item once it is done; ``False`` by default."""
        return False

    def acknowledge(self, index: int) -> None:
        """Item ``index`` is done, when :attr:`wants_acknowledgements`: every sink acknowledged its record
        (wrote it, held it already, dead-lettered it, or gave it up, counted as ``lost``), or the stream's
        drop policy dropped it (counted). Never called for an item a stop or a crash cut off, so a source
        that acknowledges upstream only here (a message queue) gets those again.

        Called from the driver's threads, in any order and at any time (also after :meth:`close`); it
        must not block.
        """

    def open(self, context: SourceContext) -> None:
        """Acquire what :meth:`items` needs (connections, decoders); keep ``context``.

        Args:
            context: the ref, the pipeline's inputs and the stop event.

        Raises:
            SourceError: it cannot be opened (the driver retries with backoff).
        """
        self.context = context

    @abc.abstractmethod
    def items(self) -> Iterator[SourceItem]:
        """Yield items until the source ends or ``context.stopped`` is set.

        Raises:
            SourceError: the source failed (the driver closes it and reopens it with backoff).
        """

    def close(self) -> None:
        """Release what :meth:`open` acquired; must not raise. Idempotent."""

    def stats(self) -> dict[str, Any]:
        """The source's own counters (reconnects, bad payloads...); empty by default."""
        return {}


class ComponentMap(dict[str, Any], Value):
    """A mapping of ref → source or sink configuration that can be a parameter value.

    It lets ``SourceSinkDriver`` take its sources and sinks through its parameters, so
    they can be changed from the parent process with ``set_parameters``. Its JSON form
    describes each entry (class and repr) but cannot be decoded: set entries from Python.
    """

    component: ClassVar[type] = Configurable

    @classmethod
    def coerce(cls, value: Any, like: Any = None) -> Any:
        """A map of this kind from a mapping of str ref → component.

        Raises:
            InputValidationError: not a mapping, a ref that is not a non-empty str, or an
                entry of another class; ``field`` is the ref.
        """
        if type(value) is cls:
            return value
        if not isinstance(value, Mapping):
            raise mismatch(cls.type_name(), value, f"give a mapping of ref to {cls.component.__name__}")
        for ref, entry in value.items():
            if not isinstance(ref, str) or not ref:
                raise InputValidationError(
                    f"{cls.type_name()} refs must be non-empty strings, got {ref!r}", expected=cls.type_name()
                )
            if not isinstance(entry, cls.component):
                raise InputValidationError(
                    f"[{ref!r}]: expected a {cls.component.__name__}, got {type(entry).__name__} {entry!r}",
                    field=f"[{ref!r}]",
                    expected=cls.component.__name__,
                )
        return cls(value)

    def to_json(self) -> Any:
        """Each entry's class and repr (one way: :meth:`from_json` refuses it)."""
        return {ref: {"class": f"{type(c).__module__}.{type(c).__qualname__}", "repr": repr(c)} for ref, c in self.items()}

    @classmethod
    def from_json(cls, obj: Any, like: Any = None) -> Any:
        """Refused: components are Python objects.

        Raises:
            InputValidationError: always, unless ``obj`` is empty.
        """
        if obj in ({}, None):
            return cls()
        raise InputValidationError(
            f"{cls.type_name()} cannot be decoded from JSON; set {cls.component.__name__} objects from Python",
            expected=cls.type_name(),
        )

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """An object of ref → description."""
        return {"type": "object", "additionalProperties": {"type": "object"}}

    @classmethod
    def fake(cls, rng: np.random.Generator | None = None) -> Any:
        """An empty map."""
        return cls()

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return type(self)({ref: copy.deepcopy(c, memo) for ref, c in self.items()})

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))


class SourceMap(ComponentMap):
    """Source ref → :class:`Source`, as a parameter value (see :class:`ComponentMap`)."""

    component = Source
