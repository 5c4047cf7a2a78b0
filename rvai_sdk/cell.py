"""Cells: the typed steps of a pipeline.

A cell is a class whose ``call`` classmethod turns one request's inputs into
outputs. Its Inputs, Outputs and Parameters types come from the annotations of
``call`` (or of ``call_batch``), its per-stream state type from
``@cell(state=...)``. An instance of the cell is a handle used for wiring:
``MyCell().inputs.x`` and ``MyCell().outputs.y`` are port references.

Example:
    >>> from dataclasses import dataclass
    >>> from rvai_sdk.data import Inputs, Outputs, Parameters, State
    >>> from rvai_sdk.types import Integer
    >>> @dataclass
    ... class In(Inputs):
    ...     x: Integer = Inputs.field()
    >>> @dataclass
    ... class Out(Outputs):
    ...     y: Integer = Outputs.field()
    >>> @dataclass
    ... class Seen(State):
    ...     n: Integer = State.field(default=Integer(0))
    >>> @cell(state=Seen)
    ... class Count(Cell):
    ...     @classmethod
    ...     def call(cls, context, parameters: Parameters, inputs: In) -> Out:
    ...         context.state.n = Integer(context.state.n + 1)
    ...         return Out(y=inputs.x + context.state.n)
    >>> Count().inputs.x
    <input port Count.x: Integer>
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar, overload

import attrs

from rvai_sdk import types as _types
from rvai_sdk._namespace import defining_namespace
from rvai_sdk.data import DataClass, FieldInfo, Inputs, Outputs, Parameters, State
from rvai_sdk.exc import CellDefinitionError, PortNotFoundError

if typing.TYPE_CHECKING:
    from rvai_sdk.context import InferenceContext, ModelContext

__all__ = ["Cell", "cell", "CellSpec", "PortRef", "Ports", "DEFAULT_MAX_BATCH_SIZE", "DEFAULT_MAX_BATCH_WAIT"]

DEFAULT_MAX_BATCH_SIZE = 64
"""Batch size limit of a cell with ``call_batch`` unless it declares its own."""
DEFAULT_MAX_BATCH_WAIT = 0.005
"""Seconds a ``call_batch`` cell waits for a batch to fill unless it declares its own."""

_C = TypeVar("_C", bound="type[Cell]")


def _rebuild_spec(fields: dict[str, Any]) -> CellSpec:
    return CellSpec(**fields)


class _SpecCache:
    """A cell class's cached spec. Pickled without the class itself, so a class sent by value
    (defined in a notebook, ``__main__`` or a function) holds no reference cycle; ``Cell.spec()``
    links the spec to the class again on first use."""

    __slots__ = ("spec",)

    def __init__(self, spec: CellSpec) -> None:
        self.spec = spec

    def __reduce__(self) -> tuple[Any, ...]:
        fields = attrs.asdict(self.spec, recurse=False)
        fields["cell_class"] = None
        return (_rebuild_cache, (fields,))


def _rebuild_cache(fields: dict[str, Any]) -> _SpecCache:
    return _SpecCache(CellSpec(**fields))


@attrs.frozen
class CellSpec:
    """Everything the framework knows about a cell class, read once from its annotations.

    Attributes:
        name: the cell class's name.
        cell_class: the cell class.
        inputs: its Inputs class; each field is an input port.
        outputs: its Outputs class; each field is an output port.
        parameters: its Parameters class (the ``Parameters`` base itself when it takes none).
        state: its State class, or ``None``.
        has_call: whether the cell defines ``call``.
        has_call_batch: whether the cell defines ``call_batch`` (it is then batched).
        has_load_model: whether the cell defines ``load_model``.
        max_batch_size: most items in one ``call_batch`` call.
        max_batch_wait: most seconds the first item of a batch waits for others.
        concurrency: how many calls of this cell may run at once (1 keeps state access simple).
        is_async: whether ``call`` or ``call_batch`` is an ``async def``: its calls run as coroutines
            on the inference process's event loop (see :mod:`rvai_sdk.execution.async_calls`).
    """

    name: str
    cell_class: type[Cell]
    inputs: type[Inputs]
    outputs: type[Outputs]
    parameters: type[Parameters]
    state: type[State] | None
    has_call: bool
    has_call_batch: bool
    has_load_model: bool
    max_batch_size: int
    max_batch_wait: float
    concurrency: int
    is_async: bool = False

    def __reduce__(self) -> tuple[Any, ...]:
        # Plain attrs pickling; spelled out so _SpecCache can drop the class without a cycle.
        return (_rebuild_spec, (attrs.asdict(self, recurse=False),))

    @property
    def input_ports(self) -> dict[str, FieldInfo]:
        """The input ports by name."""
        return {f.name: f for f in self.inputs.fields_info()}

    @property
    def output_ports(self) -> dict[str, FieldInfo]:
        """The output ports by name."""
        return {f.name: f for f in self.outputs.fields_info()}


class PortRef:
    """A reference to one input or output port of a cell instance, used for wiring.

    Attributes:
        cell: the cell instance.
        direction: ``"input"`` or ``"output"``.
        name: the port (field) name.
        type: the port's declared type.
    """

    __slots__ = ("cell", "direction", "name", "type")

    def __init__(self, cell: Cell, direction: str, name: str, type: Any) -> None:
        self.cell = cell
        self.direction = direction
        self.name = name
        self.type = type

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PortRef)
            and other.cell is self.cell
            and other.direction == self.direction
            and other.name == self.name
        )

    def __hash__(self) -> int:
        return hash((id(self.cell), self.direction, self.name))

    def __repr__(self) -> str:
        return f"<{self.direction} port {type(self.cell).__name__}.{self.name}: {_types.type_name(self.type)}>"


class Ports:
    """The input or output ports of a cell instance, as attributes (``cell.inputs.image``)."""

    __slots__ = ("_cell", "_direction", "_fields")

    def __init__(self, cell: Cell, direction: str, fields: Mapping[str, FieldInfo]) -> None:
        self._cell = cell
        self._direction = direction
        self._fields = dict(fields)

    def __getattr__(self, name: str) -> PortRef:
        if name.startswith("__"):
            raise AttributeError(name)
        info = self._fields.get(name)
        if info is None:
            known = ", ".join(self._fields) or "(none)"
            raise PortNotFoundError(
                f"cell {type(self._cell).__name__} has no {self._direction} port {name!r}; "
                f"its {self._direction} ports are: {known}"
            )
        return PortRef(self._cell, self._direction, name, info.type)

    def __iter__(self) -> Iterator[PortRef]:
        return (getattr(self, name) for name in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: object) -> bool:
        return name in self._fields

    def __dir__(self) -> list[str]:
        return list(self._fields)

    def __repr__(self) -> str:
        return f"<{self._direction} ports of {type(self._cell).__name__}: {', '.join(self._fields) or '(none)'}>"


class Cell:
    """Base class of every cell; users subclass it and define ``call`` (or ``call_batch``).

    Implement:

    - ``call(cls, context, parameters, inputs) -> Outputs`` as a classmethod,
      annotated with your ``Parameters``, ``Inputs`` and ``Outputs`` subclasses.
    - optionally ``load_model(cls, context, parameters, model_path) -> model``: runs
      once in the inference process before the first request (and again when a
      parameter it read changes); its result is ``context.model`` in ``call``.
    - optionally ``call_batch(cls, contexts, parameters, inputs_list) -> list``:
      receives requests from different state ids at once (at most one per sid),
      one context each; an item of the returned list may be an exception, which
      fails that request alone.

    ``call`` and ``call_batch`` may be ``async def`` (for I/O: calling another
    service): their coroutines run on an event loop in the inference process, up to
    ``concurrency`` of them at once (``@cell(concurrency=8)``); ``load_model`` stays
    a plain ``def``.

    The framework promises: a sid's state is never touched by two calls at once,
    and requests of one sid reach each cell in arrival order. Declare the state
    class, batching limits and concurrency with :func:`cell`.

    Instances are cheap handles without side effects: ``MyCell().inputs.x``.
    """

    _rvai_options: ClassVar[dict[str, Any]] = {}
    _rvai_spec: ClassVar[_SpecCache | None] = None
    _rvai_localns: ClassVar[dict[str, Any] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A cell defined inside a function may name data classes local to it: keep those names
        # so its annotations resolve when the spec is first read.
        if "_rvai_localns" not in cls.__dict__:  # present when the class arrives by value (dill re-creates it)
            cls._rvai_localns = defining_namespace(1)

    def __init__(self) -> None:
        self._spec = type(self).spec()

    @classmethod
    def spec(cls) -> CellSpec:
        """The cell's :class:`CellSpec`, read from its annotations once and cached.

        Raises:
            CellDefinitionError: the annotations or declared state are wrong; the message names the cell.
        """
        cached = cls.__dict__.get("_rvai_spec")
        if cached is None:
            spec = _build_spec(cls, cls.__dict__.get("_rvai_options", {}), cls.__dict__.get("_rvai_localns"))
            cls._rvai_spec = cached = _SpecCache(spec)
            cls._rvai_localns = None  # annotations are resolved: the defining frame's names are no longer needed
        if cached.spec.cell_class is not cls:  # the class arrived by value in another process
            cached.spec = attrs.evolve(cached.spec, cell_class=cls)
        return cached.spec

    @property
    def inputs(self) -> Ports:
        """The input ports, as attributes: ``cell.inputs.<field>``."""
        return Ports(self, "input", self._spec.input_ports)

    @property
    def outputs(self) -> Ports:
        """The output ports, as attributes: ``cell.outputs.<field>``."""
        return Ports(self, "output", self._spec.output_ports)

    @classmethod
    def call(cls, context: InferenceContext, parameters: Any, inputs: Any) -> Any:
        """Compute one request's outputs; override it (annotated) in your cell."""
        raise NotImplementedError(f"cell {cls.__name__} defines neither call() nor call_batch()")

    @classmethod
    def call_batch(cls, contexts: list[InferenceContext], parameters: Any, inputs_list: list[Any]) -> Any:
        """Compute outputs for requests of several state ids at once; optional.

        The framework passes lists: override it as ``call_batch(cls, contexts: list[InferenceContext],
        parameters: MyParameters, inputs_list: list[MyInputs]) -> list[MyOutputs]`` (``Sequence[...]``
        works too), which ``mypy --strict`` accepts.
        """
        raise NotImplementedError

    @classmethod
    def load_model(cls, context: ModelContext, parameters: Any, model_path: str | None) -> Any:
        """Load weights or warm up once per inference process; optional."""
        return None

    def __repr__(self) -> str:
        return f"<cell {type(self).__name__}>"


@overload
def cell(cls: _C, /) -> _C: ...


@overload
def cell(
    cls: None = None,
    /,
    *,
    state: type[State] | None = None,
    max_batch_size: int | None = None,
    max_batch_wait: float | None = None,
    concurrency: int = 1,
) -> Callable[[_C], _C]: ...


def cell(
    cls: _C | None = None,
    /,
    *,
    state: type[State] | None = None,
    max_batch_size: int | None = None,
    max_batch_wait: float | None = None,
    concurrency: int = 1,
) -> _C | Callable[[_C], _C]:
    """Declare a cell's state, batching limits and concurrency, and validate it now.

    Use as ``@cell`` or ``@cell(state=MyState, max_batch_size=32)``.

    Args:
        cls: the cell class (when used without parentheses).
        state: the per-stream State class; each sid gets a fresh instance.
        max_batch_size: most items per ``call_batch`` call (default 64 for batched cells).
        max_batch_wait: most seconds the oldest pending item waits for a batch to fill
            (default 0.005 for batched cells).
        concurrency: how many calls of the cell may run at once (default 1); for an ``async def``
            cell, how many of its coroutines may be awaiting at once. Calls of one sid never overlap.

    Returns:
        The class, with its :class:`CellSpec` validated and cached.

    Raises:
        CellDefinitionError: missing or wrong annotations, a state that is not a
            ``State`` subclass or lacks defaults, or bad limits; names the cell.
    """
    localns = defining_namespace(1)

    def decorate(target: _C) -> _C:
        if not (isinstance(target, type) and issubclass(target, Cell)):
            raise CellDefinitionError(
                f"@cell decorates subclasses of rvai_sdk.cell.Cell; {getattr(target, '__name__', target)!r} is not one",
                cell=getattr(target, "__name__", None),
            )
        options = {
            "state": state,
            "max_batch_size": max_batch_size,
            "max_batch_wait": max_batch_wait,
            "concurrency": concurrency,
        }
        target._rvai_options = options
        names = {**(target.__dict__.get("_rvai_localns") or {}), **(localns or {})}
        target._rvai_spec = _SpecCache(_build_spec(target, options, names or None))
        target._rvai_localns = None
        return target

    if cls is not None:
        return decorate(cls)
    return decorate


def _overrides(cls: type[Cell], name: str) -> bool:
    for klass in cls.__mro__:
        if klass is Cell:
            return False
        if name in klass.__dict__:
            return True
    return False


def _hints(cls: type[Cell], fn: Any, localns: Mapping[str, Any] | None) -> dict[str, Any]:
    extra = dict(localns or {})
    extra.setdefault(cls.__name__, cls)
    try:
        return typing.get_type_hints(fn, localns=extra)
    except NameError as exc:
        raise CellDefinitionError(
            f"cell {cls.__name__}: an annotation of {fn.__name__}() does not resolve ({exc}); "
            "define the data classes it names at module level or import them there",
            cell=cls.__name__,
        ) from exc


def _sequence_item(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (list, tuple, Sequence, typing.Sequence) or (
        isinstance(origin, type) and issubclass(origin, Sequence)
    ):
        args = typing.get_args(tp)
        if args:
            return args[0]
    return None


def _data_class_of(tp: Any, base: type[DataClass]) -> type[DataClass] | None:
    """``tp`` itself, or the one ``base`` subclass in a union such as ``MyOutputs | Exception``."""
    if isinstance(tp, type) and issubclass(tp, base):
        return tp
    candidates = [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, base)]
    return candidates[0] if len(candidates) == 1 else None


def _signature_types(
    cls: type[Cell], method: str, localns: Mapping[str, Any] | None, batched: bool
) -> tuple[Any, Any, Any]:
    fn = getattr(cls, method)
    static = inspect.getattr_static(cls, method)
    if not isinstance(static, (classmethod, staticmethod)):
        raise CellDefinitionError(
            f"cell {cls.__name__}: {method}() must be a @classmethod (cells keep no instance state; "
            "use @cell(state=...) for per-stream state)",
            cell=cls.__name__,
        )
    params = list(inspect.signature(fn).parameters.values())
    names = ("contexts", "parameters", "inputs_list") if batched else ("context", "parameters", "inputs")
    if len(params) != 3:
        raise CellDefinitionError(
            f"cell {cls.__name__}: {method}() must take ({', '.join(names)}), got ({', '.join(p.name for p in params)})",
            cell=cls.__name__,
        )
    hints = _hints(cls, fn, localns)
    found = []
    for position, role in ((1, "parameters"), (2, "inputs")):
        pname = params[position].name
        if pname not in hints:
            raise CellDefinitionError(
                f"cell {cls.__name__}: {method}() parameter {pname!r} has no annotation; annotate it with your "
                f"{'Parameters' if role == 'parameters' else 'Inputs'} subclass"
                + (" (a list of it)" if batched and role == "inputs" else ""),
                cell=cls.__name__,
            )
        found.append(hints[pname])
    if "return" not in hints:
        raise CellDefinitionError(
            f"cell {cls.__name__}: {method}() has no return annotation; annotate it with your Outputs subclass"
            + (" (a list of it)" if batched else ""),
            cell=cls.__name__,
        )
    found.append(hints["return"])
    parameters, inputs, outputs = found
    if batched:
        inputs = _sequence_item(inputs) or inputs
        outputs = _sequence_item(outputs) or outputs
    return parameters, inputs, outputs


def _annotated(cls: type[Cell], method: str) -> bool:
    """Whether ``method`` carries any annotation (a parameter's or the return's)."""
    fn = getattr(cls, method)
    return bool(getattr(inspect.unwrap(fn), "__annotations__", None))


def _check_async(cls: type[Cell], has_call: bool, has_batch: bool) -> bool:
    """Whether the cell's ``call`` or ``call_batch`` is a coroutine function; rejects what cannot run.

    Raises:
        CellDefinitionError: an ``async def load_model``, or an async generator (``async def`` with ``yield``).
    """
    name = cls.__name__
    found = False
    for method, defined in (("call", has_call), ("call_batch", has_batch)):
        if not defined:
            continue
        fn = inspect.unwrap(getattr(cls, method))
        if inspect.isasyncgenfunction(fn):
            raise CellDefinitionError(
                f"cell {name}: {method}() is an async generator (async def with yield); it must return its "
                "Outputs: use return, not yield",
                cell=name,
            )
        found = found or inspect.iscoroutinefunction(fn)
    if _overrides(cls, "load_model") and inspect.iscoroutinefunction(inspect.unwrap(getattr(cls, "load_model"))):
        raise CellDefinitionError(
            f"cell {name}: load_model() is an async def; define it with a plain def (it runs once, before the "
            "first request; an async client it returns can still be used by an async call())",
            cell=name,
        )
    return found


def _check_class(cls: type[Cell], method: str, what: str, tp: Any, base: type[DataClass]) -> type[DataClass]:
    resolved = _data_class_of(tp, base) if what == "returns" else tp
    if not (isinstance(resolved, type) and issubclass(resolved, base)):
        shown = getattr(tp, "__name__", repr(tp))
        raise CellDefinitionError(
            f"cell {cls.__name__}: {method}() {what} {shown}, which is not a subclass of {base.__name__}; "
            f"annotate it with a dataclass deriving from rvai_sdk.data.{base.__name__}",
            cell=cls.__name__,
        )
    return resolved


def _build_spec(cls: type[Cell], options: Mapping[str, Any], localns: Mapping[str, Any] | None) -> CellSpec:
    name = cls.__name__
    has_call = _overrides(cls, "call")
    has_batch = _overrides(cls, "call_batch")
    if not (has_call or has_batch):
        raise CellDefinitionError(
            f"cell {name} defines neither call() nor call_batch(); define call(cls, context, parameters, inputs)",
            cell=name,
        )
    signatures = []
    if has_call:
        signatures.append(("call", _signature_types(cls, "call", localns, batched=False)))
    if has_batch and not (has_call and not _annotated(cls, "call_batch")):
        # A call_batch without any annotation takes its types from call() when the cell has one.
        signatures.append(("call_batch", _signature_types(cls, "call_batch", localns, batched=True)))
    is_async = _check_async(cls, has_call, has_batch)
    resolved = []
    for method, (p, i, o) in signatures:
        resolved.append(
            (
                _check_class(cls, method, "takes parameters of type", p, Parameters),
                _check_class(cls, method, "takes inputs of type", i, Inputs),
                _check_class(cls, method, "returns", o, Outputs),
            )
        )
    if len(resolved) == 2 and resolved[0] != resolved[1]:
        raise CellDefinitionError(
            f"cell {name}: call() and call_batch() disagree on their types: call() takes "
            f"{resolved[0][0].__name__}/{resolved[0][1].__name__} -> {resolved[0][2].__name__}, call_batch() takes "
            f"{resolved[1][0].__name__}/{resolved[1][1].__name__} -> {resolved[1][2].__name__}; make them the same",
            cell=name,
        )
    parameters, inputs, outputs = resolved[0]
    for klass in (parameters, inputs, outputs):
        try:
            klass.fields_info(localns=localns)
        except CellDefinitionError as exc:
            raise CellDefinitionError(f"cell {name}: {exc}", cell=name) from exc

    state = options.get("state")
    if state is not None:
        if not (isinstance(state, type) and issubclass(state, State)):
            raise CellDefinitionError(
                f"cell {name}: state={state!r} is not a State subclass; declare a dataclass deriving from "
                "rvai_sdk.data.State",
                cell=name,
            )
        try:
            infos = state.fields_info(localns=localns)
        except CellDefinitionError as exc:
            raise CellDefinitionError(f"cell {name}: {exc}", cell=name) from exc
        without = [f.name for f in infos if f.required]
        if without:
            raise CellDefinitionError(
                f"cell {name}: state field(s) {', '.join(without)} of {state.__name__} have no default; every state "
                "field needs one (each sid starts from a fresh state)",
                cell=name,
            )

    max_batch_size = options.get("max_batch_size")
    max_batch_wait = options.get("max_batch_wait")
    concurrency = options.get("concurrency", 1)
    if not has_batch and (max_batch_size not in (None, 1) or max_batch_wait is not None):
        raise CellDefinitionError(
            f"cell {name}: batching limits are set but the cell has no call_batch(); define call_batch() or drop them",
            cell=name,
        )
    max_batch_size = DEFAULT_MAX_BATCH_SIZE if max_batch_size is None else max_batch_size
    max_batch_wait = DEFAULT_MAX_BATCH_WAIT if max_batch_wait is None else max_batch_wait
    if not has_batch:
        max_batch_size, max_batch_wait = 1, 0.0
    if not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise CellDefinitionError(f"cell {name}: max_batch_size must be an int >= 1, got {max_batch_size!r}", cell=name)
    if not isinstance(max_batch_wait, (int, float)) or not 0 <= max_batch_wait < math.inf:  # NaN and inf too
        raise CellDefinitionError(
            f"cell {name}: max_batch_wait must be >= 0 seconds and finite, got {max_batch_wait!r}", cell=name
        )
    if not isinstance(concurrency, int) or concurrency < 1:
        raise CellDefinitionError(f"cell {name}: concurrency must be an int >= 1, got {concurrency!r}", cell=name)
    return CellSpec(
        name=name,
        cell_class=cls,
        inputs=typing.cast("type[Inputs]", inputs),
        outputs=typing.cast("type[Outputs]", outputs),
        parameters=typing.cast("type[Parameters]", parameters),
        state=state,
        has_call=has_call,
        has_call_batch=has_batch,
        has_load_model=_overrides(cls, "load_model"),
        max_batch_size=max_batch_size,
        max_batch_wait=float(max_batch_wait),
        concurrency=concurrency,
        is_async=is_async,
    )
