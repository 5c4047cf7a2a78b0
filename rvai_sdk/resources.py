"""Resource requests: what a cell needs from the machine it runs on, and what a driver asks for and gets."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from rvai_sdk.exc import ParameterError

__all__ = ["CellResources", "DriverResourcesRequest", "DriverResources"]


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ParameterError(f"CellResources.{attribute.name} must be >= 0, got {value}", field=attribute.name)


@attrs.frozen
class CellResources:
    """What one cell needs: a share of GPUs and CPUs.

    Attributes:
        gpus: GPUs to reserve; a fraction (``0.5``) shares one GPU with other cells.
        cpus: CPUs to reserve (used by cluster runtimes for placement).
        allow_cpu: run on the CPU instead of failing when ``gpus > 0`` but no GPU is present.

    Example:
        >>> CellResources(gpus=0.5).gpus
        0.5
    """

    gpus: float = attrs.field(default=0.0, converter=float, validator=_non_negative)
    cpus: float = attrs.field(default=1.0, converter=float, validator=_non_negative)
    allow_cpu: bool = False


def _port_names(value: Iterable[str]) -> tuple[str, ...]:
    names = tuple(value)
    for name in names:
        if not isinstance(name, str) or not name.strip() or not name.isprintable():
            raise ParameterError(
                f"DriverResourcesRequest(ports=...) takes non-empty, printable port names such as 'http' or "
                f"'dummy-port', got {name!r}",
                field="ports",
            )
    if len(set(names)) != len(names):
        raise ParameterError(f"DriverResourcesRequest(ports=...) names a port twice: {list(names)}", field="ports")
    return names


@attrs.frozen
class DriverResourcesRequest:
    """What a driver asks the runtime for before it runs: named network ports.

    A driver returns one from :meth:`~rvai_sdk.drivers.PipelineDriver.resources_request`;
    the runtime answers with :class:`DriverResources` holding a free port per name.

    Attributes:
        ports: port names, e.g. ``["http"]`` or ``["dummy-port"]``: any non-empty printable
            name, each at most once per driver.

    Example:
        >>> DriverResourcesRequest(ports=["http", "metrics"]).ports
        ('http', 'metrics')
    """

    ports: tuple[str, ...] = attrs.field(default=(), converter=_port_names)


@attrs.frozen
class DriverResources:
    """What the runtime gave a driver: a free TCP port per requested name, and where it runs.

    Attributes:
        ports: port name to a port number that was free when allocated.
        host: the address of the machine the driver runs on as other machines on its
            network see it (``"127.0.0.1"`` when it has none).
        node: a name for that machine (its hostname).
        ref: the driver's ref in its inference process (unique there: a prefix for sids it makes up).

    Example:
        >>> DriverResources(ports={"http": 8080}).ports["http"]
        8080
    """

    ports: dict[str, int] = attrs.field(factory=dict)
    host: str = "127.0.0.1"
    node: str = ""
    ref: str = ""
