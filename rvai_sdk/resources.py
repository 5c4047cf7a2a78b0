"""Resource requests: what a cell needs from the machine it runs on."""

from __future__ import annotations

import attrs

from rvai_sdk.exc import ParameterError

__all__ = ["CellResources"]


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
