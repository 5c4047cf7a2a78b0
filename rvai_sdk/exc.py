"""The one exception hierarchy of rvai_sdk.

Every failure the SDK reports is an :class:`RvaiError`. Messages say what
happened, where (cell ref, port, field, driver ref, sid) and what to do; the
same facts are kept in attributes so drivers can map errors to status codes
without parsing strings::

    RvaiError
    ├── DefinitionError
    │   ├── CellDefinitionError      bad data classes or call() annotations
    │   └── PipelineBuildError       unknown ref, port type mismatch, port fed twice/never, cycle
    │       └── PortNotFoundError    also AttributeError: MyCell().inputs.no_such_port
    ├── ParameterError               also ValueError: a parameter value was rejected
    ├── InputValidationError         also ValueError; the HTTP driver turns it into a 422
    ├── CellError                    one request failed; .ref, .sid, .field, original traceback
    ├── DeadlineExceededError        also TimeoutError: a request ran past its deadline; .ref, .sid, .timeout
    ├── ProcessError                 a process died or can't be reached
    │   └── ProcessStateError        call not allowed in the current state
    ├── StateRestoreError            a sid's stored state cannot be read back (a damaged or incompatible checkpoint)
    ├── DriverError ── DriverNotFoundError, SourceError, SinkError, FastAPIClientError
    ├── UnknownSidError              also LookupError
    ├── MissingExtraError            also ImportError
    ├── TargetError                  also LookupError: rvai-sdk found no pipeline at that module:attribute or name
    └── UsageError                   also ValueError: a malformed command-line argument, source URL or sink URL
        ├── UnknownSchemeError       also LookupError: no installed package handles a URL's scheme
        └── ServiceNotFoundError     also LookupError: rvai-sdk ps/logs/stop/rm got a name no service has
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "RvaiError",
    "DefinitionError",
    "CellDefinitionError",
    "PipelineBuildError",
    "PortNotFoundError",
    "ParameterError",
    "InputValidationError",
    "CellError",
    "DeadlineExceededError",
    "ProcessError",
    "ProcessStateError",
    "StateRestoreError",
    "DriverError",
    "DriverNotFoundError",
    "SourceError",
    "SinkError",
    "UnknownRuntimeError",
    "UnknownSidError",
    "MissingExtraError",
    "TargetError",
    "UsageError",
    "UnknownSchemeError",
    "ServiceNotFoundError",
    "FastAPIClientError",
]


class RvaiError(Exception):
    """Root of every error raised by rvai_sdk."""


class DefinitionError(RvaiError):
    """A cell, data class or pipeline is defined wrongly; raised before any request runs."""


class CellDefinitionError(DefinitionError, TypeError):
    """A cell's data classes or ``call()`` annotations are wrong.

    Attributes:
        cell: the name of the offending cell class.
    """

    def __init__(self, message: str, *, cell: str | None = None) -> None:
        super().__init__(message)
        self.cell = cell


class PipelineBuildError(DefinitionError):
    """``PipelineFactory.build()`` found problems; ``problems`` lists each of them.

    Attributes:
        problems: one line per problem, in the order they were found.
    """

    def __init__(self, problems: str | Sequence[str]) -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"{len(self.problems)} problems in the pipeline:\n{lines}"
        super().__init__(message)


class PortNotFoundError(PipelineBuildError, AttributeError):
    """A port reference names a port the cell does not have."""


class ParameterError(RvaiError, ValueError):
    """A parameter value was rejected.

    Attributes:
        ref: the cell ref the parameters belong to, when known.
        field: the parameter field, when known.
    """

    def __init__(self, message: str, *, ref: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.ref = ref
        self.field = field


class InputValidationError(RvaiError, ValueError):
    """A value does not fit the type its input (or field) declares.

    Attributes:
        field: the dotted path of the offending input or field (``"image"``,
            ``"boxes[2].xmin"``), when known.
        expected: the name of the expected type, when known.
    """

    def __init__(self, message: str, *, field: str | None = None, expected: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.expected = expected

    @property
    def detail(self) -> str:
        """The message without its leading ``"<field>: "`` path, for re-raising under a longer path."""
        text = str(self)
        if self.field and text.startswith(self.field + ": "):
            return text[len(self.field) + 2 :]
        return text


class CellError(RvaiError):
    """One request failed inside a cell; other requests are unaffected.

    Attributes:
        ref: the ref of the failing cell.
        sid: the state id of the request (``None`` for a one-off request).
        cause_type: the name of the original exception's type.
        remote_traceback: the formatted traceback of the original exception.
        field: the output field the cell got wrong (not set, or of the wrong type), when
            that is what failed; else ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        ref: str,
        sid: str | None,
        cause_type: str = "",
        remote_traceback: str = "",
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.ref = ref
        self.sid = sid
        self.cause_type = cause_type
        self.remote_traceback = remote_traceback
        self.field = field

    def __reduce__(self) -> tuple[object, ...]:
        message = Exception.__str__(self)  # without the traceback: __str__ appends it again
        return (_rebuild_cell_error, (message, self.ref, self.sid, self.cause_type, self.remote_traceback, self.field))

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            return f"{text}\n\nOriginal traceback:\n{self.remote_traceback.rstrip()}"
        return text


def _rebuild_cell_error(
    message: str, ref: str, sid: str | None, cause_type: str, tb: str, field: str | None = None
) -> CellError:
    return CellError(message, ref=ref, sid=sid, cause_type=cause_type, remote_traceback=tb, field=field)


class DeadlineExceededError(RvaiError, TimeoutError):
    """A request ran past its deadline (``predict(..., timeout=)`` or ``Inference(request_timeout=)``).

    Its future failed at the deadline; a cell call that was running goes on in the
    background and its result is dropped. Also a :class:`TimeoutError`.

    Attributes:
        ref: the ref of the cell the request was in (running or waiting for), when known.
        sid: the state id of the request (``None`` for a one-off request).
        timeout: the deadline in seconds, counted from when the request was sent.
    """

    def __init__(self, message: str, *, ref: str | None = None, sid: str | None = None, timeout: float | None = None) -> None:
        super().__init__(message)
        self.ref = ref
        self.sid = sid
        self.timeout = timeout

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_deadline_error, (str(self), self.ref, self.sid, self.timeout))


def _rebuild_deadline_error(message: str, ref: str | None, sid: str | None, timeout: float | None) -> DeadlineExceededError:
    return DeadlineExceededError(message, ref=ref, sid=sid, timeout=timeout)


class ProcessError(RvaiError):
    """A process died, was stopped, or cannot be reached."""


class ProcessStateError(ProcessError):
    """The call is not allowed in the process's current state.

    Attributes:
        state: the name of the current state.
    """

    def __init__(self, message: str, *, state: str | None = None) -> None:
        super().__init__(message)
        self.state = state


class StateRestoreError(RvaiError):
    """A sid's stored state cannot be read back: its checkpoint is damaged, or was written by a State
    class this pipeline no longer has. Sending the request again cannot help: drop that sid's state
    (``drop_state(sid)``) to start it afresh, or restore the State class it was written with.

    Attributes:
        sid: the state id whose checkpoint cannot be read.
    """

    def __init__(self, message: str, *, sid: str | None = None) -> None:
        super().__init__(message)
        self.sid = sid

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_state_restore_error, (str(self), self.sid))


def _rebuild_state_restore_error(message: str, sid: str | None) -> StateRestoreError:
    return StateRestoreError(message, sid=sid)


class DeadlockError(RvaiError, RuntimeError):
    """A wait that could never end was refused: a completion callback waited on its own deliverer.

    Raised at once (every runtime alike) when a callback added with
    ``add_done_callback`` calls ``result()`` or ``exception()`` on a request of the
    same inference process that has not finished, or makes a control call
    (``get_parameters``, ``stats``...) on it: the callback runs on the thread that
    delivers that process's results, so the answer could only arrive once the
    callback returned. Send from a callback (``predict`` without waiting) and chain
    with ``add_done_callback``, or hand the wait to another thread.
    """


class DriverError(RvaiError):
    """A driver failed or was used wrongly."""


class DriverNotFoundError(DriverError, LookupError):
    """No driver with that pid or ref is attached."""


class SourceError(DriverError):
    """A source failed to open or to produce items."""


class SinkError(DriverError):
    """A sink failed to open or to write records."""


class UnknownRuntimeError(RvaiError, ValueError):
    """``init()`` was given a runtime name that does not exist."""


class UnknownSidError(RvaiError, LookupError):
    """No state is kept for that state id."""


class MissingExtraError(RvaiError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class TargetError(RvaiError, LookupError):
    """A pipeline target (``module:attribute`` or a registered name) could not be found or is not a pipeline."""


class UsageError(RvaiError, ValueError):
    """A command-line argument is malformed (a ``--param``, a port), or a source or sink URL is.

    ``from_url`` of a source or sink raises it for a URL it cannot take; ``rvai-sdk``
    prints it in one line and exits with status 2.
    """


class UnknownSchemeError(UsageError, LookupError):
    """No installed package handles a source or sink URL's scheme; the message lists those that are handled."""


class ServiceNotFoundError(UsageError, LookupError):
    """``rvai-sdk logs``, ``stop`` or ``rm`` (or :mod:`rvai_sdk.services`) got a name no service has."""


class FastAPIClientError(DriverError):
    """A ``FastAPIClient`` call failed: an HTTP error, a refused connection or a timeout.

    Also importable from ``rvai_sdk.extensions.drivers.fast_api_driver``, beside the client.

    Attributes:
        status_code: the HTTP status (``None`` when no response came: refused, timed out).
        error_type: the server's error type (``"InputValidationError"``, ``"CellError"``...), when given.
        server_message: the server's message, when given.
        cell: the failing cell's ref, for a cell failure.
        field: the offending field path, for a 422.
        body: the parsed JSON body of the error response, when any.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        server_message: str | None = None,
        cell: str | None = None,
        field: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type
        self.server_message = server_message
        self.cell = cell
        self.field = field
        self.body = body
