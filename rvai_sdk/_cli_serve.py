"""``rvai-sdk serve``: a pipeline over HTTP (:class:`FastAPIDriver`, found as the ``serve`` command
driver), and with ``--grpc-port`` over gRPC too, until Ctrl-C, SIGTERM or ``--duration``."""

from __future__ import annotations

import argparse
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from rvai_sdk._cli_run import check_driver, service_reporter, start, stop_on_signals
from rvai_sdk._entry_points import command_driver
from rvai_sdk.exc import DriverError, RvaiError, UsageError

if TYPE_CHECKING:
    from rvai_sdk.runtime import InferenceProcess, PipelineDriverProcess

__all__ = ["cmd_serve"]


def _port_in_use(port: int) -> UsageError:
    return UsageError(f"port {port} is in use; pick another with --port, or --port 0 for any free port")


def _wait_ready(
    handle: PipelineDriverProcess, url: str, api_key: str | None, timeout: float = 60.0, instance: str | None = None
) -> None:
    """Wait until ``GET {url}/ready`` answers 200 from this driver; fails at once when the driver fails or stops.

    With ``instance`` (the driver's id, from its service record), only an answer naming
    it counts: any other answer comes from another server holding the port.

    Raises:
        UsageError: another server answers on the port, or the driver could not bind it.
        DriverError: the driver stopped, or was not ready within ``timeout`` seconds.
    """
    port = int(url.rsplit(":", 1)[1])
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    last = "no answer"
    for attempt in range(10_000):  # bounded by the deadline long before
        try:
            check_driver(handle)
        except DriverError as exc:
            if "is in use" in str(exc):
                raise _port_in_use(port) from exc
            raise
        answered: str | None = None
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{url}/ready", headers=headers), timeout=5.0) as response:
                answered = response.headers.get("X-Rvai-Instance")
                if instance is not None and answered != instance:
                    raise _port_in_use(port)
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if instance is not None and exc.headers.get("X-Rvai-Instance") != instance:
                raise _port_in_use(port) from None
            if exc.code != 503:
                break
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        pause.wait(min(0.01 * 2 ** min(attempt, 5), remaining))
    raise DriverError(f"driver {handle.ref!r} at {url} was not ready within {timeout:g} s: {last}")


def cmd_serve(args: argparse.Namespace) -> int:
    FastAPIDriver = command_driver("serve")
    from rvai_sdk.runtime import init

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0..65535 (0: any free port), got {args.port}")
    if args.grpc_port is not None and not 0 <= args.grpc_port <= 65535:
        raise UsageError(f"--grpc-port must be 0..65535 (0: any free port), got {args.grpc_port}")
    pipeline, inference = start(args)
    reporter = service_reporter()
    # the signal handlers go in after init: Ray sets its own for SIGTERM, which would abort the process
    with init(args.runtime) as rt, stop_on_signals() as stop, rt.start_inference(inference) as proc:
        try:
            http = proc.add_driver("http", FastAPIDriver, {"host": args.host, "listen_port": args.port, "api_key": args.api_key})
        except DriverError as exc:
            if "is in use" in str(exc):
                raise _port_in_use(args.port) from exc
            raise
        service = http.get_service("http")
        host = service["address"]
        url = f"http://{'[' + host + ']' if ':' in host else host}:{service['port']}"
        _wait_ready(http, url, args.api_key, instance=service.get("instance"))
        bound = f" (for {args.duration:g} s)" if args.duration is not None else " (Ctrl-C to stop)"
        print(f"serving pipeline {pipeline.name!r} on the {args.runtime} runtime at {url}{bound}", flush=True)
        print(f"  POST {url}/predict   docs {url}/docs   metrics {url}/metrics", flush=True)
        grpc = None if args.grpc_port is None else _add_grpc(proc, args)  # GrpcDriver: the V2 protocol over gRPC
        ports = {"http": int(service["port"])} | ({} if grpc is None else {"grpc": int(grpc.get_service("grpc")["port"])})
        reporter.running(ports=ports, url=url)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        stop.serving()
        while not stop.is_set():
            remaining = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if remaining <= 0 or stop.wait(remaining):
                break
            check_driver(http, proc)
            if grpc is not None:
                check_driver(grpc)
            if reporter.active:
                reporter.counters(_serve_counters(proc))
        print("stopping", flush=True)
        if grpc is not None:
            proc.remove_driver(grpc.pid)
        proc.remove_driver(http.pid)
    print("stopped", flush=True)
    return 0


def _add_grpc(proc: InferenceProcess, args: argparse.Namespace, timeout: float = 60.0) -> PipelineDriverProcess:
    """``serve --grpc-port``: a :class:`GrpcDriver` beside the HTTP one, once it accepts connections; prints its address.

    Raises:
        UsageError: the driver could not listen on ``--grpc-port``.
        DriverError: the driver stopped, or did not listen within ``timeout`` seconds.
    """
    import socket

    if args.grpc_port:  # a port another server holds: said now (a connection to it would look like ours)
        with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((args.host, args.grpc_port))
            except OSError as exc:
                raise UsageError(
                    f"--grpc-port {args.grpc_port} cannot be used on {args.host}: {exc.strerror}; pick another, "
                    "or --grpc-port 0 for any free port"
                ) from exc
    handle = proc.add_driver("grpc", command_driver("serve-grpc"), {"host": args.host, "listen_port": args.grpc_port, "api_key": args.api_key})
    service = handle.get_service("grpc")
    host, port = str(service["address"]), int(service["port"])
    pause, deadline = threading.Event(), time.monotonic() + timeout
    for attempt in range(10_000):  # bounded by the deadline long before
        try:
            check_driver(handle)
        except DriverError as exc:
            raise UsageError(f"--grpc-port {args.grpc_port}: {exc}; pick another, or --grpc-port 0 for any free port") from exc
        try:
            socket.create_connection((host, port), timeout=5.0).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise DriverError(f"driver 'grpc' did not listen on {host}:{port} within {timeout:g} s") from None
        pause.wait(min(0.01 * 2 ** min(attempt, 5), max(0.0, deadline - time.monotonic())))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    print(f"  gRPC (Open Inference Protocol, e.g. tritonclient.grpc) at {address}", flush=True)
    return handle


def _serve_counters(proc: InferenceProcess) -> dict[str, int]:
    """What ``rvai-sdk ps`` shows for a running ``serve``: the inference process's requests by outcome."""
    try:
        requests = proc.stats()["requests"]
    except RvaiError:
        return {}
    return {key: int(requests[key]) for key in ("succeeded", "failed", "in_flight")}
