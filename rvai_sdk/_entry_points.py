"""What installed packages register for rvai_sdk, found through entry points.

Pipelines by name (:data:`ENTRY_POINT_GROUP`), sources and sinks by URL scheme
(:data:`SOURCES_GROUP`, :data:`SINKS_GROUP`: each entry point names the ``from_url``
classmethod of the class that parses that URL) and the drivers the commands run
(:data:`DRIVERS_GROUP`). The ``rvai-sdk`` command line (:mod:`rvai_sdk.cli`, which
re-exports every public name here) only dispatches through these; it never names an
extension.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from rvai_sdk.drivers.source import hide_passwords
from rvai_sdk.exc import RvaiError, TargetError, UnknownSchemeError, UsageError
from rvai_sdk.pipeline import Pipeline, PipelineFactory

if TYPE_CHECKING:
    from rvai_sdk.drivers import Sink, Source

__all__ = [
    "ENTRY_POINT_GROUP",
    "SOURCES_GROUP",
    "SINKS_GROUP",
    "DRIVERS_GROUP",
    "registered_pipelines",
    "load_pipeline",
    "load_source",
    "load_sink",
    "command_driver",
]

ENTRY_POINT_GROUP = "rvai_sdk.pipelines"
"""Entry-point group under which packages register pipelines by name."""
SOURCES_GROUP = "rvai_sdk.sources"
"""Entry-point group of source factories, named by URL scheme (a callable: URL → Source)."""
SINKS_GROUP = "rvai_sdk.sinks"
"""Entry-point group of sink factories, named by URL scheme (a callable: URL → Sink)."""
DRIVERS_GROUP = "rvai_sdk.cli_drivers"
"""Entry-point group of the driver classes the commands run, named by command (``serve``, ``stream``)."""


def registered_pipelines() -> dict[str, str]:
    """Names registered under :data:`ENTRY_POINT_GROUP`, mapped to their ``module:attribute``."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_pipeline(target: str) -> Pipeline:
    """Resolve ``module:attribute`` or a registered name to a built :class:`Pipeline`.

    Args:
        target: ``"package.module:attribute"`` or a name from :func:`registered_pipelines`.

    Returns:
        The pipeline (factories are built, functions called with no arguments).

    Raises:
        TargetError: the module, attribute or name does not exist, or it is not a pipeline.
        PipelineBuildError: a factory found there does not build.
    """
    if ":" not in target:
        registered = registered_pipelines()
        if target not in registered:
            known = ", ".join(sorted(registered)) or "(none installed)"
            raise TargetError(
                f"{target!r} is neither module:attribute nor a registered pipeline; registered pipelines: {known}"
            )
        target = registered[target]
    module_name, _, attribute = target.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetError(f"cannot import module {module_name!r} for {target!r}: {exc}") from exc
    try:
        obj: Any = module
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise TargetError(f"module {module_name!r} has no attribute {attribute!r}") from exc
    if callable(obj) and not isinstance(obj, (Pipeline, PipelineFactory)):
        obj = obj()
    if isinstance(obj, PipelineFactory):
        obj = obj.build()
    if not isinstance(obj, Pipeline):
        raise TargetError(
            f"{target!r} is a {type(obj).__name__}, not a Pipeline, PipelineFactory or a function returning one"
        )
    return obj


# -- sources and sinks by URL ----------------------------------------------------------------


def _scheme(url: str) -> str:
    """The scheme of a source or sink URL; ``file`` for a plain path (``clip.mp4``, ``C:\\\\clip.mp4``)."""
    scheme, colon, _ = url.partition(":")
    if not colon or len(scheme) == 1 or not scheme or not (scheme[0].isalpha() and all(c.isalnum() or c in "+-." for c in scheme)):
        return "file"
    return scheme.lower()


def _factories(group: str) -> dict[str, Any]:
    return {ep.name.lower(): ep for ep in entry_points(group=group)}


def _load_component(group: str, what: str, url: str) -> Any:
    scheme = _scheme(url)
    registered = _factories(group)
    ep = registered.get(scheme) or registered.get(scheme.split("+", 1)[0])
    if ep is None:
        known = ", ".join(sorted(registered)) or "(none installed)"
        raise UnknownSchemeError(
            f"no {what} handles {scheme}: URLs ({hide_passwords(repr(url))}); installed {what} schemes: {known}; "
            f"a package adds one under the {group!r} entry-point group"
        )
    try:
        factory = ep.load()
    except ImportError as exc:
        raise UsageError(f"the {what} for {scheme}: URLs ({ep.value}) cannot be imported: {exc}") from exc
    try:
        return factory(url)
    except RvaiError:
        raise
    except Exception as exc:  # a third-party factory: its error, in one line, with who raised it
        raise UsageError(
            hide_passwords(f"the {what} factory {ep.value} rejected {url!r}: {type(exc).__name__}: {exc}")
        ) from exc


def load_source(url: str) -> Source:
    """The source for ``url``, made by the factory registered for its scheme under :data:`SOURCES_GROUP`.

    Example:
        >>> int(load_source("dummy:?count=5&rate=0").params.count)
        5

    Raises:
        UnknownSchemeError: no installed package handles the scheme (the message lists those that are).
        UsageError: the factory cannot be imported or rejects the URL.
    """
    from rvai_sdk.drivers import Source

    source = _load_component(SOURCES_GROUP, "source", url)
    if not isinstance(source, Source):
        raise UsageError(f"the source factory for {url!r} returned a {type(source).__name__}, not a Source")
    return source


def load_sink(url: str) -> Sink:
    """The sink for ``url``, made by the factory registered for its scheme under :data:`SINKS_GROUP`.

    Example:
        >>> load_sink("sqlite:///frames.db?table=frames").table
        'frames'

    Raises:
        UnknownSchemeError: no installed package handles the scheme (the message lists those that are).
        UsageError: the factory cannot be imported or rejects the URL.
    """
    from rvai_sdk.drivers import Sink

    sink = _load_component(SINKS_GROUP, "sink", url)
    if not isinstance(sink, Sink):
        raise UsageError(f"the sink factory for {url!r} returned a {type(sink).__name__}, not a Sink")
    return sink


def command_driver(command: str) -> Any:
    """The driver class ``rvai-sdk COMMAND`` runs, from the :data:`DRIVERS_GROUP` entry points.

    ``rvai_sdk`` registers ``serve`` (``FastAPIDriver``) and ``stream`` (``SourceSinkDriver``).

    Raises:
        UsageError: no installed package registers one, or it cannot be imported.
        MissingExtraError: the driver needs an extra that is not installed.
    """
    found = {ep.name: ep for ep in entry_points(group=DRIVERS_GROUP)}
    ep = found.get(command)
    if ep is None:
        raise UsageError(
            f"no driver for 'rvai-sdk {command}' is installed (no {command!r} entry point in the {DRIVERS_GROUP!r} group); "
            "reinstall rvai_sdk"
        )
    try:
        return ep.load()
    except RvaiError:
        raise
    except ImportError as exc:
        raise UsageError(f"the driver of 'rvai-sdk {command}' ({ep.value}) cannot be imported: {exc}") from exc
