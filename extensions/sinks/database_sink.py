"""DatabaseSink: one row per record in a SQL table (SQLAlchemy Core; SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from rvai_sdk._compat import require
from rvai_sdk.drivers import Record, Sink, SinkContext, SinkParameters
from rvai_sdk.exc import SinkError
from rvai_sdk.types import Boolean, Enum, Float, FloatRange, Integer, IntegerRange, String, to_json, unwrap_optional

__all__ = ["DatabaseSink", "DatabaseSinkParameters"]

_FIXED = ("source", "index", "sid", "timestamp", "status", "error", "inputs")


@dataclasses.dataclass
class DatabaseSinkParameters(SinkParameters):
    """Parameters of a :class:`DatabaseSink` (batching, buffer and retries come from :class:`SinkParameters`).

    Attributes:
        connect_timeout: seconds to wait for a connection before the write fails and is retried.
    """

    connect_timeout: FloatRange = SinkParameters.field(
        name="Connect timeout", description="Seconds to wait for a connection", default=FloatRange(3.0, min=0.1, max=600.0)
    )


class DatabaseSink(Sink):
    """Writes each record as a row of a table, created from the pipeline's outputs.

    The table has the columns ``source``, ``index`` (together the primary key, so a
    retried batch never duplicates a row), ``sid``, ``timestamp``, ``status``,
    ``error``, one column per pipeline output (Integer, Float, String and Boolean
    outputs as SQL columns of that type, everything else as JSON), and ``inputs``
    (JSON) when ``store_inputs`` is set. Rows are inserted in batches with
    ``INSERT ... ON CONFLICT DO NOTHING``. When the database cannot be reached a write
    raises :class:`~rvai_sdk.exc.SinkError` and the driver keeps the records buffered
    and retries with backoff.

    Args:
        url: a SQLAlchemy database URL: ``sqlite:///results.db`` (the default, embedded),
            ``postgresql+psycopg://user:password@host/db``.
        table: the table name; it is created when missing, and checked when present.
        store_inputs: also store the request inputs as JSON (images become base64 PNG: large).
        params: :meth:`DatabaseSink.parameters` (batching, buffer, retries, connect timeout).

    Example:
        >>> sink = DatabaseSink("sqlite:///frames.db", table="detections")
        >>> sink.table
        'detections'
    """

    parameters_class = DatabaseSinkParameters

    def __init__(
        self,
        url: str = "sqlite:///rvai_results.db",
        table: str = "results",
        store_inputs: bool = False,
        params: DatabaseSinkParameters | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(params)
        self.url = url
        self.table = table
        self.store_inputs = store_inputs

    def _where(self) -> str:
        ref = getattr(getattr(self, "context", None), "ref", "?")
        try:
            sa = require("sqlalchemy", extra="sql")
            shown = sa.engine.make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            shown = "(unparsable url)"
        return f"sink {ref!r} (DatabaseSink {shown}, table {self.table!r})"

    def open(self, context: SinkContext) -> None:
        """Connect and create the table (or check the existing one's columns).

        Raises:
            SinkError: the database cannot be reached, or the table lacks columns this
                pipeline needs (the message lists them).
        """
        super().open(context)
        sa = require("sqlalchemy", extra="sql")
        self._sa = sa
        try:
            self._outputs = {ref: spec.type for ref, spec in context.outputs.items()}
            clash = sorted(set(self._outputs) & set(_FIXED))
            if clash:
                raise SinkError(
                    f"{self._where()}: pipeline outputs {', '.join(clash)} clash with the table's own columns "
                    f"({', '.join(_FIXED)}); rename those outputs"
                )
            url = sa.engine.make_url(self.url)
            timeout = float(self.params.connect_timeout)
            connect_args: dict[str, Any] = {}
            if url.get_backend_name() == "sqlite":
                connect_args["timeout"] = timeout
            elif url.get_backend_name() == "postgresql":
                connect_args["connect_timeout"] = max(1, round(timeout))
            self._engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
            if url.get_backend_name() == "sqlite":
                sa.event.listen(self._engine, "connect", _sqlite_wal)
            metadata = sa.MetaData()
            columns = [
                sa.Column("source", sa.String(255), primary_key=True),
                sa.Column("index", sa.BigInteger, primary_key=True, autoincrement=False),
                sa.Column("sid", sa.String(255), nullable=True),
                sa.Column("timestamp", sa.Float(53), nullable=False),
                sa.Column("status", sa.String(16), nullable=False),
                sa.Column("error", sa.Text, nullable=True),
            ]
            columns += [sa.Column(ref, _column_type(sa, tp), nullable=True) for ref, tp in self._outputs.items()]
            if self.store_inputs:
                columns.append(sa.Column("inputs", sa.JSON, nullable=True))
            self._table = sa.Table(self.table, metadata, *columns)
            metadata.create_all(self._engine, checkfirst=True)
            existing = {c["name"] for c in sa.inspect(self._engine).get_columns(self.table)}
            missing = [c.name for c in self._table.columns if c.name not in existing]
            if missing:
                raise SinkError(
                    f"{self._where()}: the existing table lacks columns {', '.join(missing)} this pipeline writes; "
                    "drop it, migrate it, or give another table="
                )
            self._insert = self._make_insert()
        except sa.exc.SQLAlchemyError as exc:
            self.close()
            raise SinkError(f"{self._where()}: cannot open: {_first_line(exc)}") from exc

    def _make_insert(self) -> Any:
        backend = self._engine.dialect.name
        if backend == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(self._table).on_conflict_do_nothing(index_elements=["source", "index"])
        if backend == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(self._table).on_conflict_do_nothing(index_elements=["source", "index"])
        if backend in ("mysql", "mariadb"):
            return self._table.insert().prefix_with("IGNORE")
        return None  # generic: plain inserts, row by row after a conflict

    def _row(self, record: Record) -> dict[str, Any]:
        row: dict[str, Any] = {
            "source": record.source,
            "index": record.index,
            "sid": record.sid,
            "timestamp": record.timestamp,
            "status": record.status,
            "error": record.error,
        }
        for ref, tp in self._outputs.items():
            row[ref] = _column_value(tp, record.outputs.get(ref))
        if self.store_inputs:
            row["inputs"] = None if record.inputs is None else {k: to_json(v) for k, v in record.inputs.items()}
        return row

    def write(self, records: Sequence[Record]) -> None:
        """Insert the records, ignoring rows already present.

        Raises:
            SinkError: the database failed; nothing of this batch is committed.
        """
        sa = self._sa
        rows = [self._row(r) for r in records]
        try:
            if self._insert is not None:
                with self._engine.begin() as conn:
                    conn.execute(self._insert, rows)
                return
            try:
                with self._engine.begin() as conn:
                    conn.execute(self._table.insert(), rows)
            except sa.exc.IntegrityError:
                for row in rows:  # some rows exist already (a retried batch): insert the others
                    try:
                        with self._engine.begin() as conn:
                            conn.execute(self._table.insert(), [row])
                    except sa.exc.IntegrityError:
                        pass
        except sa.exc.SQLAlchemyError as exc:
            raise SinkError(f"{self._where()}: write of {len(rows)} rows failed: {_first_line(exc)}") from exc

    def close(self) -> None:
        """Dispose of the connection pool."""
        engine = getattr(self, "_engine", None)
        if engine is not None:
            self._engine = None
            try:
                engine.dispose()
            except Exception:
                pass


def _sqlite_wal(dbapi_connection: Any, connection_record: Any) -> None:
    """Let readers read while the sink writes."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return f"{type(getattr(exc, 'orig', None) or exc).__name__}: {text.splitlines()[0] if text else ''}"


def _column_type(sa: Any, tp: Any) -> Any:
    base, _ = unwrap_optional(tp)
    if isinstance(base, type):
        if issubclass(base, Boolean):
            return sa.Boolean
        if issubclass(base, (Integer, IntegerRange)):
            return sa.BigInteger
        if issubclass(base, (Float, FloatRange)):
            return sa.Float(53)
        if issubclass(base, String):
            return sa.Text
    return sa.JSON


def _column_value(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    base, _ = unwrap_optional(tp)
    if isinstance(base, type):
        if issubclass(base, Boolean):
            return bool(value)
        if issubclass(base, (Integer, IntegerRange)):
            return int(value)
        if issubclass(base, (Float, FloatRange)):
            return float(value)
        if issubclass(base, String):
            return str(value)
        if issubclass(base, Enum):
            return to_json(value)
    return to_json(value)
