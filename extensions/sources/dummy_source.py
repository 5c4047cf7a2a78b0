"""DummySource: fake values of the pipeline's inputs at a steady rate, the quickest way to try a driver."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from rvai_sdk.drivers import Source, SourceContext, SourceItem, SourceParameters
from rvai_sdk.exc import SourceError
from rvai_sdk.types import Boolean, FloatRange, Integer, fake, is_value_type, type_name, unwrap_optional

__all__ = ["DummySource", "DummySourceParameters"]


@dataclasses.dataclass
class DummySourceParameters(SourceParameters):
    """Parameters of a :class:`DummySource`.

    Attributes:
        rate: items per second (``0``: as fast as the stream takes them).
        count: items to produce before the source ends (``None``: endless).
        seed: seed of the random values (``None``: different every run).
        live: behave as a live camera (drop items when inference falls behind) instead
            of waiting for inference.
        signed: fake ``Integer`` inputs of both signs; by default they are counts, 0 to 1000
            (an ``IntegerRange`` input always respects its declared bounds).
    """

    rate: FloatRange = SourceParameters.field(
        name="Rate", description="Items per second (0: as fast as taken)", default=FloatRange(10.0, min=0.0, max=1e6)
    )
    count: Integer | None = SourceParameters.field(name="Count", description="Items before the end (empty: endless)", default=None)
    seed: Integer | None = SourceParameters.field(name="Seed", description="Random seed", default=None)
    live: Boolean = SourceParameters.field(name="Live", description="Drop items like a camera when behind", default=Boolean(False))
    signed: Boolean = SourceParameters.field(
        name="Signed", description="Fake Integer inputs of both signs (default: counts, 0 to 1000)", default=Boolean(False)
    )


class DummySource(Source):
    """Produces :func:`~rvai_sdk.types.fake` values for each pipeline input at a set rate.

    A plain ``Integer`` input gets a count (0 to 1000) unless the ``signed`` parameter
    asks for both signs, so a counting pipeline shows plausible totals.

    Args:
        format: input ref → value type to fake (default: every pipeline input, with
            the bounds and options of its declaration).
        params: :meth:`DummySource.parameters` (rate, count, seed, live).

    Example:
        >>> from rvai_sdk.types import FloatRange, Integer
        >>> source = DummySource(format={"x": Integer}, params=DummySource.parameters(rate=FloatRange(0), count=2, seed=1))
        >>> [item.index for item in source.items()] == [0, 1]
        True
    """

    parameters_class = DummySourceParameters

    def __init__(self, format: Mapping[str, Any] | None = None, params: DummySourceParameters | Mapping[str, Any] | None = None) -> None:  # noqa: A002
        super().__init__(params)
        if format is not None:
            bad = [f"{ref}: {tp!r}" for ref, tp in format.items() if not is_value_type(tp)]
            if bad:
                raise SourceError(f"DummySource(format=...) takes rvai_sdk value types; got {', '.join(bad)}")
        self.format = dict(format) if format is not None else None

    @classmethod
    def from_url(cls, url: str) -> DummySource:
        """A DummySource from a URL (the ``rvai-sdk stream --source`` form).

        Scheme: ``dummy:`` (every pipeline input faked, as declared).

        Query options: the parameters of :class:`DummySourceParameters` and
        :class:`~rvai_sdk.drivers.SourceParameters`, each read as JSON when it parses,
        else as a string: ``dummy:?rate=25&count=100&seed=1&live=true``.

        Raises:
            ParameterError: a query option is not a parameter, or its value is out of range.

        Example:
            >>> int(DummySource.from_url("dummy:?count=5&rate=0").params.count)
            5
        """
        query = urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True)
        params: dict[str, Any] = {}
        for key, text in query:
            try:
                params[key] = json.loads(text)
            except ValueError:
                params[key] = text
        return cls(params=params)

    @property
    def live(self) -> bool:
        """As the ``live`` parameter says."""
        return bool(self.params.live)

    @property
    def replayable(self) -> bool:
        """Only with a ``seed`` (and not ``live``): then every run yields the same items."""
        return self.params.seed is not None and not self.live

    def open(self, context: SourceContext) -> None:
        """Check the format against the pipeline's inputs.

        Raises:
            SourceError: the format names an input the pipeline lacks, or misses one it needs.
        """
        super().open(context)
        if self.format is not None:
            unknown = sorted(set(self.format) - set(context.inputs))
            missing = sorted(set(context.inputs) - set(self.format))
            if unknown or missing:
                raise SourceError(
                    f"source {context.ref!r}: DummySource format does not match the pipeline inputs "
                    f"(unknown: {', '.join(unknown) or 'none'}; missing: {', '.join(missing) or 'none'}); "
                    f"the pipeline takes: {', '.join(f'{r}: {type_name(s.type)}' for r, s in context.inputs.items())}"
                )

    def _fields(self) -> list[tuple[str, Any, Any]]:
        if self.format is not None:
            return [(ref, tp, None) for ref, tp in self.format.items()]
        context: SourceContext | None = getattr(self, "context", None)
        if context is None:
            raise SourceError("DummySource() without a format must be opened by a driver to learn the pipeline inputs")
        return [(ref, spec.type, spec.like) for ref, spec in context.inputs.items()]

    def items(self) -> Iterator[SourceItem]:
        """Fake items at the rate, until ``count`` items or the stop."""
        fields = self._fields()
        seed = self.params.seed
        rng = np.random.default_rng(None if seed is None else int(seed))
        rate = float(self.params.rate)
        count = None if self.params.count is None else int(self.params.count)
        signed = bool(self.params.signed)
        context: SourceContext | None = getattr(self, "context", None)
        start = time.monotonic()
        index = 0
        while count is None or index < count:
            if rate > 0:
                delay = start + index / rate - time.monotonic()
                if delay > 0 and context is not None and context.stopped.wait(delay):
                    return
            if context is not None and context.stopped.is_set():
                return
            inputs = {ref: fake(tp, rng, like=like) if signed or not _is_count(tp, like) else Integer(int(rng.integers(0, 1001)))
                      for ref, tp, like in fields}
            yield SourceItem(inputs=inputs, index=index, timestamp=time.time())
            index += 1


def _is_count(tp: Any, like: Any) -> bool:
    """A plain ``Integer`` (or ``Integer | None``) input without declared bounds."""
    return like is None and unwrap_optional(tp)[0] is Integer
