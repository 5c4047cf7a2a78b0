"""Handles on running drivers, and the bookkeeping an inference process keeps of them."""

from __future__ import annotations

import abc
import copy
import pickle
import socket
import threading
import traceback
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from rvai_sdk.drivers.driver import DriverParameters, PipelineDriver
from rvai_sdk.exc import DriverError, DriverNotFoundError, ParameterError
from rvai_sdk.resources import DriverResources, DriverResourcesRequest
from rvai_sdk.runtime.status import ProcessStatus, check_transition

__all__ = ["PipelineDriverProcess", "DriverFactory", "allocate_ports", "make_driver", "failure_text", "host_address"]

def final_counters(driver: PipelineDriver) -> dict[str, Any] | None:
    """``driver.stats()`` once its ``run()`` returned, or ``None`` when that raises or cannot be pickled (they are
    sent to the process that started the driver)."""
    try:
        stats = dict(driver.stats())
        pickle.loads(pickle.dumps(stats))  # what the other end does with them
    except Exception:
        return None
    return stats


DriverFactory = Callable[..., PipelineDriver]
"""A driver class, or any callable returning a :class:`PipelineDriver` (e.g. a local function)."""


class PipelineDriverProcess(abc.ABC):
    """A running driver, as ``proc.add_driver(ref, factory, ...)`` returns it.

    On the local runtime it is a separate process; on the debug runtime a thread.
    Use it as a context manager to stop it on exit.

    Attributes:
        ref: the driver's ref, unique among the inference process's drivers.
        pid: the driver's process id (on the debug runtime, a number unique to the driver).
        failure: why it failed (the error and its traceback), when ``status`` is FAILED.
        final_stats: the driver's counters as its ``run()`` returned (after a stop, or when it ended or
            failed by itself), or ``None`` while it runs or when it died without answering.
    """

    def __init__(self, ref: str) -> None:
        self.ref = ref
        self.pid = 0
        self._status = ProcessStatus.STARTING
        self.failure: str | None = None
        self.final_stats: dict[str, Any] | None = None
        self._services: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._status_lock = threading.RLock()

    @property
    def status(self) -> ProcessStatus:
        """STARTING, RUNNING, STOPPING, STOPPED or FAILED (with :attr:`failure`)."""
        return self._status

    def _transition(self, new: ProcessStatus, when: Iterable[ProcessStatus] | None = None) -> bool:
        """Go to ``new`` through the table in :mod:`~rvai_sdk.runtime.status`; only from ``when``
        (any state) if given. Whether it moved.

        Raises:
            ProcessStateError: the table does not allow the move (from a state in ``when``).
        """
        with self._status_lock:
            if when is not None and self._status not in when:
                return False
            if self._status is new:
                return False
            check_transition(f"driver {self.ref!r}", self._status, new)
            self._status = new
            return True

    def _fail(self, failure: str) -> None:
        with self._status_lock:
            if self._status not in (ProcessStatus.STOPPED, ProcessStatus.STOPPING):
                self.failure = failure
                self._transition(ProcessStatus.FAILED)
        self._ready.set()

    @abc.abstractmethod
    def is_alive(self) -> bool:
        """Whether the driver's process (or thread) is still running."""

    @abc.abstractmethod
    def stop(self, timeout: float | None = 10.0) -> None:
        """Ask the driver to stop and wait up to ``timeout`` seconds; then it is killed. Idempotent."""

    @abc.abstractmethod
    def get_parameters(self) -> DriverParameters:
        """The running driver's parameters.

        Raises:
            DriverError: the driver is not running.
        """

    @abc.abstractmethod
    def set_parameters(self, parameters: DriverParameters | dict[str, Any]) -> None:
        """Deliver new parameters (an instance or a mapping of changed fields) to the running driver.

        Raises:
            ParameterError: a field is unknown or a value is rejected; nothing changes.
            DriverError: the driver is not running.
        """

    def stats(self) -> dict[str, Any]:
        """The driver's counters (``PipelineDriver.stats``); once it stopped, those of the moment its ``run()``
        returned (:attr:`final_stats`: what its stop finished, wrote or gave up is counted there).

        Raises:
            DriverError: the driver is not running and left no final counters (it died, or never ran).
        """
        if self._status is not ProcessStatus.RUNNING and self.final_stats is not None:
            return copy.deepcopy(self.final_stats)
        self._require_running("get stats")
        return self._live_stats()

    @abc.abstractmethod
    def _live_stats(self) -> dict[str, Any]:
        """The running driver's counters, asked of it where it runs."""

    def list_services(self) -> list[dict[str, Any]]:
        """The service records the driver published, e.g. ``[{"name": "http", "taggedAddresses": ...}]``."""
        return [dict(s) for s in self._services]

    def get_service(self, name: str) -> dict[str, Any]:
        """The service record called ``name``.

        Raises:
            DriverError: the driver published no such service; the message lists those it did.
        """
        for service in self._services:
            if service.get("name") == name:
                return dict(service)
        names = ", ".join(str(s.get("name")) for s in self._services) or "(none)"
        raise DriverError(f"driver {self.ref!r} has no service {name!r}; its services are: {names}")

    def _require_running(self, action: str) -> None:
        if self._status is not ProcessStatus.RUNNING:
            why = f": {self.failure.splitlines()[0]}" if self.failure else ""
            raise DriverError(f"cannot {action}: driver {self.ref!r} is {self._status.name}{why}")

    def __enter__(self) -> PipelineDriverProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} ref={self.ref!r} pid={self.pid} status={self._status.name}>"


class DriverRegistry:
    """The drivers of one inference process, by ref and pid (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._drivers: dict[str, PipelineDriverProcess] = {}
        self._starting: set[str] = set()

    def reserve(self, ref: str) -> None:
        if not isinstance(ref, str) or not ref:
            raise ParameterError(f"a driver ref must be a non-empty str, got {ref!r}")
        with self._lock:
            current = self._drivers.get(ref)
            busy = current is not None and current.status not in (ProcessStatus.STOPPED, ProcessStatus.FAILED)
            if busy or ref in self._starting:
                state = current.status.name if busy and current is not None else "STARTING"
                raise DriverError(
                    f"a driver with ref {ref!r} is already attached ({state}); "
                    "remove it first with proc.remove_driver(...) or pick another ref"
                )
            self._starting.add(ref)

    def add(self, driver: PipelineDriverProcess) -> None:
        with self._lock:
            self._starting.discard(driver.ref)
            self._drivers[driver.ref] = driver

    def unreserve(self, ref: str) -> None:
        with self._lock:
            self._starting.discard(ref)

    def find(self, key: int | str) -> PipelineDriverProcess:
        with self._lock:
            for driver in self._drivers.values():
                if driver.ref == key or (isinstance(key, int) and driver.pid == key):
                    return driver
            known = ", ".join(f"{d.ref!r} (pid {d.pid})" for d in self._drivers.values()) or "(none)"
        what = "pid" if isinstance(key, int) else "ref"
        raise DriverNotFoundError(f"no driver with {what} {key!r} is attached; attached drivers: {known}")

    def remove(self, driver: PipelineDriverProcess) -> None:
        with self._lock:
            if self._drivers.get(driver.ref) is driver:
                del self._drivers[driver.ref]

    def all(self) -> list[PipelineDriverProcess]:
        with self._lock:
            return list(self._drivers.values())


def make_driver(ref: str, factory: DriverFactory, args: Iterable[Any], kwargs: dict[str, Any]) -> PipelineDriver:
    """Call the factory and check that it made a driver.

    Raises:
        DriverError: the factory raised or returned something else; names the driver ref.
    """
    try:
        driver = factory(*args, **kwargs)
    except Exception as exc:
        raise DriverError(f"driver {ref!r}: its factory {_name(factory)} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(driver, PipelineDriver):
        raise DriverError(
            f"driver {ref!r}: its factory {_name(factory)} returned {type(driver).__name__}, not a PipelineDriver; "
            "pass a PipelineDriver subclass or a function returning an instance"
        )
    request = driver.resources_request()
    if not isinstance(request, DriverResourcesRequest):
        raise DriverError(f"driver {ref!r}: resources_request() must return a DriverResourcesRequest, got {type(request).__name__}")
    return driver


def _name(factory: Any) -> str:
    return str(getattr(factory, "__qualname__", None) or getattr(factory, "__name__", None) or repr(factory))


def failure_text(ref: str, driver: object, exc: BaseException) -> str:
    """The text a failed driver reports: the error on the first line, then the traceback."""
    tb = "".join(traceback.format_exception(exc)).rstrip()
    return f"driver {ref!r} ({type(driver).__name__}) failed: {type(exc).__name__}: {exc}\n{tb}"


_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def allocate_ports(request: DriverResourcesRequest) -> dict[str, int]:
    """A free TCP port for each requested name, never one this process handed out before."""
    ports: dict[str, int] = {}
    with _ports_lock:
        for name in request.ports:
            for _ in range(100):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("", 0))
                    port = int(s.getsockname()[1])
                if port not in _handed_out:
                    break
            _handed_out.add(port)
            ports[name] = port
    return ports


def host_address() -> str:
    """This machine's address as its network sees it, or ``127.0.0.1``."""
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
    return address


def driver_resources(request: DriverResourcesRequest, ref: str) -> DriverResources:
    """Allocate what driver ``ref`` asked for on this machine."""
    return DriverResources(ports=allocate_ports(request), host=host_address(), node=socket.gethostname(), ref=ref)
