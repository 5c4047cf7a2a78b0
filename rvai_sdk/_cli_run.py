"""What ``rvai-sdk serve`` and ``rvai-sdk stream`` share: ``--param`` and ``--model``, the pipeline and
its ``Inference`` from the common arguments, stopping on SIGINT/SIGTERM, and the driver's health."""

from __future__ import annotations

import argparse
import json
import math
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rvai_sdk._entry_points import load_pipeline
from rvai_sdk.exc import DriverError, ProcessError, UsageError
from rvai_sdk.pipeline import Pipeline

if TYPE_CHECKING:
    from rvai_sdk.runtime import PipelineDriverProcess

__all__ = ["parse_params", "parse_models", "named", "stop_on_signals", "start", "check_driver", "service_reporter"]


def parse_params(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Turn ``ref.name=value`` strings into ``Inference(parameters=...)``.

    A value is read as JSON when it parses (``4.5``, ``true``, ``[1, 2]``, ``null``),
    else taken as a string.

    Args:
        items: the ``--param`` values.

    Returns:
        Cell ref → parameter name → value.

    Raises:
        UsageError: an item is not ``ref.name=value``.

    Example:
        >>> parse_params(["mean.alarm_above=2.5", "label.text=hello"])
        {'mean': {'alarm_above': 2.5}, 'label': {'text': 'hello'}}
    """
    params: dict[str, dict[str, Any]] = {}
    for item in items:
        key, equals, text = item.partition("=")
        ref, dot, name = key.strip().rpartition(".")
        if not equals or not dot or not ref or not name:
            raise UsageError(f"--param {item!r} is not ref.name=value (e.g. --param mean.alarm_above=2.5)")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        params.setdefault(ref, {})[name] = value
    return params


def parse_models(items: Sequence[str], pipeline: Pipeline | None = None) -> dict[str, str]:
    """Turn ``REF=PATH`` strings into ``Inference(models=...)``: cell ref → model path.

    A path that exists is made absolute (the inference process may run elsewhere);
    another (a model name a cell understands) is passed on as given.

    Args:
        items: the ``--model`` values.
        pipeline: when given, each ref must be one of its cells that loads a model.

    Raises:
        UsageError: an item is not ``REF=PATH``, a ref is given twice, is not a cell of
            the pipeline, or names a cell without ``load_model``.

    Example:
        >>> parse_models(["detect=yolo-tiny"])
        {'detect': 'yolo-tiny'}
    """
    models: dict[str, str] = {}
    for item in items:
        ref, equals, path = item.partition("=")
        ref = ref.strip()
        if not equals or not ref or not path:
            raise UsageError(f"--model {item!r} is not REF=PATH (e.g. --model detect=weights/yolo.pt)")
        if ref in models:
            raise UsageError(f"two --model options name cell {ref!r}; give one path per cell")
        if pipeline is not None:
            if ref not in pipeline.cells:
                raise UsageError(
                    f"--model {item!r}: pipeline {pipeline.name!r} has no cell {ref!r}; its cells are: "
                    f"{', '.join(pipeline.order)}"
                )
            if not pipeline.spec(ref).has_load_model:
                raise UsageError(
                    f"--model {item!r}: cell {ref!r} ({pipeline.spec(ref).name}) has no load_model, so it would "
                    "never see the path; name a cell that loads a model (rvai-sdk info shows them)"
                )
        models[ref] = str(Path(path).resolve()) if Path(path).exists() else path
    return models


def named(items: Sequence[str], prefix: str) -> dict[str, str]:
    """``NAME=URL`` or ``URL`` items → ref → URL (unnamed ones are ``prefix-1``, ``prefix-2``...)."""
    named: dict[str, str] = {}
    for i, item in enumerate(items, 1):
        name, equals, rest = item.partition("=")
        if equals and name and rest and all(c.isalnum() or c in "-_." for c in name):
            ref, url = name, rest
        else:
            ref, url = f"{prefix}-{i}", item
        if ref in named:
            raise UsageError(f"two --{prefix} options are named {ref!r}; give each its own NAME=URL")
        named[ref] = url
    return named


class StopSignal(threading.Event):
    """Set by SIGINT (Ctrl-C) or SIGTERM once the command serves (:meth:`serving`); before that, while it starts
    (loading models can take minutes), the signal interrupts the start instead (``KeyboardInterrupt``)."""

    def __init__(self) -> None:
        super().__init__()
        self.starting = True

    def serving(self) -> None:
        """The command serves now: a signal asks its loop to stop cleanly."""
        self.starting = False


@contextmanager
def stop_on_signals() -> Iterator[StopSignal]:
    """A :class:`StopSignal` for SIGINT (Ctrl-C) and SIGTERM while the block runs (handlers restored after)."""
    stop = StopSignal()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: object) -> None:
        if stop.starting:
            stop.starting = False  # once: a second signal, during the cleanup, only sets the event
            raise KeyboardInterrupt  # the command exits 130; the with-blocks stop what was started
        stop.set()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def start(args: argparse.Namespace) -> tuple[Pipeline, Any]:
    """The pipeline and its ``Inference`` (validated parameters) from the common arguments."""
    from rvai_sdk.runtime import Inference

    pipeline = load_pipeline(args.target)
    models = parse_models(args.model, pipeline)
    if args.trace is not None:  # before the runtime starts: its processes trace the same way
        from rvai_sdk.tracing import configure_tracing

        try:
            configure_tracing(args.trace, endpoint=args.trace_endpoint, path=args.trace_path)
        except ValueError as exc:
            raise UsageError(f"--trace: {exc}") from exc
    # a service restarts its inference process when it dies or wedges (the debug runtime has none to restart)
    supervise = args.supervise and args.runtime != "debug"
    if not (args.stuck_after > 0 and math.isfinite(args.stuck_after)):
        raise UsageError(f"--stuck-after must be a number of seconds > 0, got {args.stuck_after:g}")
    return pipeline, Inference(
        pipeline=pipeline, parameters=parse_params(args.param), models=models, supervise=supervise,
        stuck_after=args.stuck_after,
    )


def check_driver(handle: PipelineDriverProcess, proc: Any = None) -> None:
    """Raise when the driver stopped, or when ``proc`` (the inference process) failed and is not supervised.

    Raises:
        DriverError: the driver stopped while running.
        ProcessError: the inference process failed and nothing restarts it (``--no-supervise``, or the debug
            runtime): the command exits instead of waiting for it for ever.
    """
    from rvai_sdk.runtime.status import ProcessStatus

    if handle.status is ProcessStatus.FAILED or not handle.is_alive():
        failure = (handle.failure or "it stopped").splitlines()[0]
        raise DriverError(f"driver {handle.ref!r} stopped while running: {failure}")
    if proc is not None and proc.status is ProcessStatus.FAILED and not proc.inference.supervise:
        failure = (proc.failure or "it failed").splitlines()[0]
        raise ProcessError(
            f"the inference process of pipeline {proc.pipeline.name!r} stopped serving: {failure}; nothing restarts "
            "it with --no-supervise: run the command again"
        )


def service_reporter() -> Any:
    """This command's :class:`~rvai_sdk.services.ServiceReporter` (a no-op unless it runs as a detached service)."""
    from rvai_sdk import services

    return services.reporter()
