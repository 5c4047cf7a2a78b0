"""The driver base: what feeds an inference process (an HTTP server, a stream, your own loop)."""

from __future__ import annotations

import abc
import copy
import dataclasses
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from rvai_sdk.data import Parameters
from rvai_sdk.resources import DriverResources, DriverResourcesRequest

if TYPE_CHECKING:
    from rvai_sdk.drivers.port import RestrictedInferenceProcess

__all__ = ["DriverParameters", "PipelineDriver", "service_record"]


@dataclasses.dataclass
class DriverParameters(Parameters):
    """Base of a driver's parameters: typed fields, changeable while the driver runs.

    Subclass it as a dataclass exactly like cell :class:`~rvai_sdk.data.Parameters`
    and set it as the driver's ``parameters_class``.
    """


class PipelineDriver(abc.ABC):
    """Base of every driver: something that feeds an inference process with requests.

    Implement :meth:`run`, which serves until :meth:`stop` is called. The runtime
    constructs the driver inside the driver process (or thread, on the debug
    runtime) from the factory given to ``proc.add_driver(ref, factory, ...)``,
    asks for :meth:`resources_request`, allocates the ports, publishes
    :meth:`services`, then calls :meth:`run` with a
    :class:`~rvai_sdk.drivers.port.RestrictedInferenceProcess` (``predict`` and the
    pipeline's input/output spec, nothing that can stop or reconfigure it).

    The framework promises: :meth:`stop` and :meth:`set_parameters` may be called
    from another thread while :meth:`run` runs; an exception escaping :meth:`run`
    marks the driver failed with its text and never touches the inference process.

    Attributes:
        parameters_class: the :class:`DriverParameters` subclass this driver takes.

    Example:
        >>> class Echo(PipelineDriver):
        ...     def run(self, inference, resources):
        ...         self.wait_stopped()
        >>> d = Echo()
        >>> d.stop(); d.stopped.is_set()
        True
    """

    parameters_class: ClassVar[type[DriverParameters]] = DriverParameters

    def __init__(self, parameters: DriverParameters | Mapping[str, Any] | None = None) -> None:
        """Keep the parameters; no sockets, threads or processes here (constructors are cheap).

        Args:
            parameters: an instance of ``parameters_class`` or a mapping of field to value.

        Raises:
            ParameterError: a field is unknown or a value is rejected; names the field.
        """
        self._parameters = self.parameters_class.coerce(parameters, owner=f"driver {type(self).__name__}")
        self._parameters_lock = threading.Lock()
        self.stopped = threading.Event()
        """Set by :meth:`stop`; :meth:`run` should return soon after."""

    @abc.abstractmethod
    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        """Serve requests until :meth:`stop` is called, then return.

        Args:
            inference: the inference process to send requests to.
            resources: the ports the runtime allocated for :meth:`resources_request`.
        """

    def stop(self) -> None:
        """Ask :meth:`run` to return; called from another thread. Idempotent."""
        self.stopped.set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` is called (or ``timeout`` passes); whether it was."""
        return self.stopped.wait(timeout)

    def get_parameters(self) -> DriverParameters:
        """A copy of the parameters in force."""
        with self._parameters_lock:
            return copy.deepcopy(self._parameters)

    def parameters_in_force(self) -> DriverParameters:
        """The parameters in force, not copied: for a driver's own code that reads them often.

        :meth:`set_parameters` replaces the object rather than changing it, so what this
        returns stays consistent; treat it as read-only (use :meth:`get_parameters` for a
        copy to change, :meth:`set_parameters` to apply it).
        """
        with self._parameters_lock:
            return self._parameters

    def set_parameters(self, parameters: DriverParameters | Mapping[str, Any]) -> None:
        """Change parameters while running: an instance, or a mapping of the fields to change.

        Validates everything first; on success calls :meth:`parameters_changed`.

        Raises:
            ParameterError: an unknown field or a rejected value; nothing changes.
        """
        with self._parameters_lock:
            old = self._parameters
            new = self.parameters_class.coerce(parameters, old, owner=f"driver {type(self).__name__}")
            self._parameters = new
        self.parameters_changed(old, new)

    def take_back_parameters(self, changes: Mapping[str, Any]) -> DriverParameters:
        """Change fields of the parameters in force without calling :meth:`parameters_changed`.

        For a driver that could not apply part of a change it accepted (a host it cannot
        bind, say) and must put those fields back, so that :meth:`get_parameters` never
        claims what is not in force.

        Args:
            changes: field to value, validated like :meth:`set_parameters`.

        Returns:
            The parameters now in force.

        Raises:
            ParameterError: an unknown field or a rejected value; nothing changes.
        """
        with self._parameters_lock:
            self._parameters = self.parameters_class.coerce(
                changes, self._parameters, owner=f"driver {type(self).__name__}"
            )
            return self._parameters

    def parameters_changed(self, old: DriverParameters, new: DriverParameters) -> None:
        """Hook: called after :meth:`set_parameters` took effect; override to react (e.g. reopen)."""

    def resources_request(self) -> DriverResourcesRequest:
        """The ports this driver needs; none by default."""
        return DriverResourcesRequest()

    def services(self, resources: DriverResources) -> list[dict[str, Any]]:
        """Service records to publish once resources are allocated (see :func:`service_record`); none by default."""
        return []

    def stats(self) -> dict[str, Any]:
        """Counters the driver keeps (requests, frames, drops...); empty by default."""
        return {}


def service_record(name: str, port: int, address: str = "127.0.0.1", wan_address: str | None = None) -> dict[str, Any]:
    """A service record as :meth:`PipelineDriverProcess.get_service` returns it.

    Args:
        name: the service name, e.g. ``"http"``.
        port: the port it listens on.
        address: the address it is reached at on its network.
        wan_address: the address from outside that network (``address`` by default).

    Example:
        >>> record = service_record("http", 8080)
        >>> record.get("taggedAddresses").get("lan")
        {'address': '127.0.0.1', 'port': 8080}
    """
    return {
        "name": name,
        "address": address,
        "port": port,
        "taggedAddresses": {
            "lan": {"address": address, "port": port},
            "wan": {"address": wan_address or address, "port": port},
        },
    }
