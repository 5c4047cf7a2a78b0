"""Parameters and models of a running executor: reading them, and changing them by drain-then-swap.

:class:`Reconfiguration` is a part of :class:`~rvai_sdk.execution.executor.Executor` (one of
its bases): the control-plane calls that change what new requests run with. A change
validates everything first, loads new models in the calling thread while requests keep
running with the old ones, then swaps atomically under the executor's lock; one change at
a time (``_params_lock``). A change whose models load past the caller's ``timeout`` is
discarded, not swapped in, so that a caller that gave up never sees it happen later.
"""

from __future__ import annotations

import copy
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from rvai_sdk.context import ModelContext
from rvai_sdk.data import Parameters
from rvai_sdk.exc import CellError, ParameterError, ProcessError
from rvai_sdk.execution.parameters import check_model_paths, coerce_parameters, differs, recording
from rvai_sdk.execution.plan import CellPlan, Plan
from rvai_sdk.execution.requests import Config
from rvai_sdk.pipeline.graph import Pipeline

__all__ = ["Reconfiguration"]


class Reconfiguration:
    """The executor's parameters and models (see the module's docstring); the executor sets the attributes below."""

    pipeline: Pipeline
    _plan: Plan
    _clock: Callable[[], float]
    _lock: threading.Lock
    _params_lock: threading.Lock
    _config: Config
    _model_deps: list[frozenset[str]]
    _model_paths: dict[str, str | None]

    def get_parameters(self) -> dict[str, Parameters]:
        """Cell ref to a copy of the cell's current Parameters."""
        return {c.ref: copy.deepcopy(self._config.params[c.index]) for c in self._plan.cells}

    def get_models(self) -> dict[str, str]:
        """Cell ref to the model path its ``load_model`` was given, for the cells that have one."""
        with self._params_lock:
            return {ref: path for ref, path in self._model_paths.items() if path is not None}

    def set_models(self, models: Mapping[str, Any], timeout: float | None = None) -> None:
        """Give cells new model paths: each named cell's ``load_model`` runs again with its path.

        Drain-then-swap, as :meth:`set_parameters`: the new models are loaded first, in this
        thread, while requests keep running with the old ones; then one atomic swap makes
        them the models of every request submitted after this returns. Requests already
        submitted finish with the old models (a batch that straddles the swap is split per
        model). Per-sid state is not touched.

        Args:
            models: cell ref to a model path (``str`` or ``os.PathLike``), or ``None`` for no
                path (``load_model`` then gets ``None``, as for a cell ``models=`` does not name).
            timeout: seconds the caller waits for the change (from now, waiting for an earlier
                change included); models loaded later than that are discarded, not swapped in,
                so that a caller that gave up never sees its change happen afterwards.
                ``None``: no limit.

        Raises:
            ParameterError: an unknown ref, a cell without ``load_model``, or a path that is
                not a ``str``, path or ``None``; nothing changes.
            CellError: a ``load_model`` raised (names the cell); nothing changes, the old
                models keep serving.
            ProcessError: loading took longer than ``timeout``; nothing changes.
        """
        paths = check_model_paths(self.pipeline, models, where="set_models(...)")
        for ref in paths:
            if not self._plan.refs[ref].spec.has_load_model:
                raise ParameterError(
                    f"set_models(...) names cell {ref!r}, which has no load_model(); a model path would not be used",
                    ref=ref,
                )
        deadline = None if timeout is None else self._clock() + timeout
        with self._params_lock:  # one change at a time: none is lost
            config = self._config
            models_now = list(config.models)
            deps = list(self._model_deps)
            old_paths = self._model_paths
            self._model_paths = {**old_paths, **paths}
            try:
                for ref in paths:
                    cell = self._plan.refs[ref]
                    models_now[cell.index], deps[cell.index] = self._load_model(cell, config.params[cell.index])
                self._check_deadline("set_models", deadline, timeout)
            except BaseException:
                self._model_paths = old_paths
                raise
            with self._lock:
                self._config = Config(config.params, tuple(models_now))
                self._model_deps = deps

    def set_parameters(self, parameters: Mapping[str, Any], timeout: float | None = None) -> None:
        """Change cell parameters for the requests submitted from now on.

        All values are validated before any takes effect. A cell whose
        ``load_model`` read a changed field gets its model reloaded first
        (in this thread) while requests keep running with the old one; then one
        atomic swap makes the new parameters and models those of every request
        submitted after this returns. Requests already submitted finish with the
        old ones (a batch that straddles the swap is split). Per-sid state is not touched.

        Args:
            parameters: cell ref to a Parameters instance or a mapping of changed fields.
            timeout: as for :meth:`set_models`: a change whose models load later than that is
                discarded. ``None``: no limit.

        Raises:
            ParameterError: an unknown ref or field, or a rejected value; nothing changes.
            CellError: a reloading ``load_model`` raised; nothing changes.
            ProcessError: reloading took longer than ``timeout``; nothing changes.
        """
        deadline = None if timeout is None else self._clock() + timeout
        with self._params_lock:  # one change at a time: none is lost
            self._set_parameters(parameters, deadline, timeout)

    def _check_deadline(self, method: str, deadline: float | None, timeout: float | None) -> None:
        """Refuse to swap in what was loaded past the caller's ``timeout`` (the caller has given up by now)."""
        if deadline is not None and self._clock() > deadline:
            raise ProcessError(
                f"{method}(...) on pipeline {self.pipeline.name!r}: loading the new models took longer than the "
                f"{timeout:g} s the caller waits for them; they were discarded: nothing changed, the old models "
                "serve on (a runtime's start_timeout bounds model loads: give it more time, or make load_model faster)"
            )

    def _set_parameters(self, parameters: Mapping[str, Any], deadline: float | None = None, timeout: float | None = None) -> None:
        refs = self._plan.refs
        config = self._config
        new_params = list(config.params)
        for ref, value in parameters.items():
            cell = refs.get(ref)
            if cell is None:
                raise ParameterError(
                    f"unknown cell ref {ref!r}; the pipeline's cells are: {', '.join(refs)}", ref=str(ref)
                )
            new_params[cell.index] = coerce_parameters(ref, cell.spec.parameters, value, config.params[cell.index])
        models = list(config.models)
        deps = list(self._model_deps)
        for cell in self._plan.cells:
            old, new = config.params[cell.index], new_params[cell.index]
            if not cell.spec.has_load_model or old is new:
                continue
            changed = {f.name for f in type(new).fields_info() if differs(getattr(old, f.name), getattr(new, f.name))}
            if changed & self._model_deps[cell.index]:
                models[cell.index], deps[cell.index] = self._load_model(cell, new)
        self._check_deadline("set_parameters", deadline, timeout)
        with self._lock:
            self._config = Config(tuple(new_params), tuple(models))
            self._model_deps = deps

    def _load_model(self, cell: CellPlan, params: Parameters) -> tuple[Any, frozenset[str]]:
        recorded, read = recording(params)
        context = ModelContext(cell.ref, cell.device, self.pipeline.name)
        try:
            model = cell.spec.cell_class.load_model(context, recorded, self._model_paths.get(cell.ref))
        except Exception as exc:
            raise CellError(
                f"load_model of cell {cell.ref!r} ({cell.spec.name}) failed: {type(exc).__name__}: {exc}",
                ref=cell.ref,
                sid=None,
                cause_type=type(exc).__name__,
                remote_traceback="".join(traceback.format_exception(exc)),
            ) from exc
        return model, frozenset(read)
