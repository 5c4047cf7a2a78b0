"""DatabaseSink: one row per record in a SQL table (SQLAlchemy Core; SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import collections
import dataclasses
import urllib.parse
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from rvai_sdk._compat import require
from rvai_sdk.drivers import Record, RecordError, Sink, SinkContext, SinkParameters, WriteResult
from rvai_sdk.drivers.sink import dead_letter_json
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
    (JSON) when ``store_inputs`` is set; ``source`` and ``sid`` are unbounded text.
    Rows are inserted in batches with ``INSERT ... ON CONFLICT DO NOTHING``; rows that
    were already there are reported as ``present``, not ``written``.

    When the database cannot be reached (a connection error, a timeout, a serialization
    failure) a write raises :class:`~rvai_sdk.exc.SinkError` and the driver keeps the
    records buffered and retries with backoff. When a row itself is refused (an integrity
    or data error, a value that does not convert to its column) the write raises
    :class:`~rvai_sdk.drivers.RecordError`: the driver writes the other rows and the
    refused one goes to the dead-letter table ``<table>_dead_letter`` (``source``,
    ``index``, ``sid``, ``timestamp``, ``error``, ``record`` as JSON), or to the JSON-lines
    file of the ``dead_letter`` parameter when set.

    The sink keeps positions: the highest index of a source in the table (or its
    dead-letter table) is where a new run of that source continues (see
    :attr:`~rvai_sdk.drivers.Sink.keeps_positions`): a database sink is exactly-once.

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
    keeps_positions = True

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

    @classmethod
    def from_url(cls, url: str) -> DatabaseSink:
        """A DatabaseSink for a SQLAlchemy URL (the ``rvai-sdk stream --sink`` form).

        Schemes: ``sqlite:///path.db``, ``postgresql://`` and ``postgres://`` (with no
        driver these use psycopg 3, ``postgresql+psycopg://``, the one the ``sql`` extra
        installs), and any ``scheme+driver://`` SQLAlchemy knows.

        Query options: ``table=NAME`` picks the table (default ``results``); every other
        query option stays in the URL for SQLAlchemy and the database driver.

        Example:
            >>> sink = DatabaseSink.from_url("sqlite:///frames.db?table=frames")
            >>> sink.url, sink.table
            ('sqlite:///frames.db', 'frames')
            >>> DatabaseSink.from_url("postgres://ann@db/frames?sslmode=require").url
            'postgresql+psycopg://ann@db/frames?sslmode=require'
        """
        base, _, query_text = url.partition("?")
        query = dict(urllib.parse.parse_qsl(query_text, keep_blank_values=True))
        table = query.pop("table", "results")
        scheme, _, rest = base.partition(":")
        if scheme in ("postgresql", "postgres"):
            base = f"postgresql+psycopg:{rest}"
        return cls(base + (f"?{urllib.parse.urlencode(query)}" if query else ""), table=table)

    def _shown_url(self) -> str | None:
        """The URL with its password hidden (``None``: it does not parse)."""
        try:
            sa = require("sqlalchemy", extra="sql")
            return str(sa.engine.make_url(self.url).render_as_string(hide_password=True))
        except Exception:
            return None

    @property
    def destination(self) -> str:
        """The database (its URL, the password hidden) and the table: stamped on letters kept in a file."""
        return f"{self._shown_url() or self.url} table {self.table}"

    def _where(self) -> str:
        ref = getattr(getattr(self, "context", None), "ref", "?")
        return f"sink {ref!r} (DatabaseSink {self._shown_url() or '(unparsable url)'}, table {self.table!r})"

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
                sa.Column("source", sa.Text, primary_key=True),
                sa.Column("index", sa.BigInteger, primary_key=True, autoincrement=False),
                sa.Column("sid", sa.Text, nullable=True),
                sa.Column("timestamp", sa.Float(53), nullable=False),
                sa.Column("status", sa.String(16), nullable=False),
                sa.Column("error", sa.Text, nullable=True),
            ]
            columns += [sa.Column(ref, _column_type(sa, tp), nullable=True) for ref, tp in self._outputs.items()]
            if self.store_inputs:
                columns.append(sa.Column("inputs", sa.JSON, nullable=True))
            self._table = sa.Table(self.table, metadata, *columns)
            self._dead = None
            if not str(self.params.dead_letter):
                self._dead = sa.Table(
                    f"{self.table}_dead_letter",
                    metadata,
                    sa.Column("source", sa.Text, primary_key=True),
                    sa.Column("index", sa.BigInteger, primary_key=True, autoincrement=False),
                    sa.Column("sid", sa.Text, nullable=True),
                    sa.Column("timestamp", sa.Float(53), nullable=False),
                    sa.Column("error", sa.Text, nullable=False),
                    sa.Column("record", sa.JSON, nullable=False),
                )
            metadata.create_all(self._engine, checkfirst=True)
            for table in (self._table, self._dead):
                if table is not None:
                    self._check_table(table)
            self._sqlite = self._engine.dialect.name == "sqlite"
            self._insert = self._make_insert(self._table)
            self._dead_insert = None if self._dead is None else self._make_insert(self._dead)
        except sa.exc.SQLAlchemyError as exc:
            self.close()
            raise SinkError(f"{self._where()}: cannot open: {_first_line(exc)}") from exc
        except BaseException:  # a table it cannot write (see _check_table): its connections go too
            self.close()
            raise

    def _check_table(self, table: Any) -> None:
        """Refuse an existing table this sink cannot write exactly once: a column missing, one of another kind
        (a value would be converted: PostgreSQL rounds a Float into an old BIGINT column), a column it does not
        write that refuses NULL and has no default, or no key on ``(source, index)`` (every insert would fail).

        Raises:
            SinkError: naming the table and what to do.
        """
        sa = self._sa
        inspector = sa.inspect(self._engine)
        columns = inspector.get_columns(table.name)
        found = {c["name"]: c["type"] for c in columns}
        fix = "drop it, migrate it, or give another table="
        missing = [c.name for c in table.columns if c.name not in found]
        if missing:
            raise SinkError(
                f"{self._where()}: the existing table {table.name!r} lacks columns {', '.join(missing)} this pipeline "
                f"writes; {fix}"
            )
        # A column this sink does not write that takes no NULL and has no default refuses every row: the sink
        # would dead-letter everything (and a replayable source would resume after those letters).
        primary = inspector.get_pk_constraint(table.name).get("constrained_columns") or []
        rowid = (  # SQLite fills a lone INTEGER PRIMARY KEY itself (the rowid) in a rowid table
            primary[0] if self._engine.dialect.name == "sqlite" and len(primary) == 1
            and str(found.get(primary[0], "")).upper() == "INTEGER" and self._has_rowid(table.name) else None
        )
        unfilled = [
            c["name"] for c in columns
            if c["name"] not in table.columns and c["name"] != rowid and not c.get("nullable", True)
            and c.get("default") is None and not c.get("identity") and not c.get("computed")
            and c.get("autoincrement") is not True
        ]
        if unfilled:
            raise SinkError(
                f"{self._where()}: the existing table {table.name!r} has columns {', '.join(unfilled)} that this "
                f"pipeline does not write, NOT NULL and without a default, so every row would be refused; give them "
                f"a default or let them be NULL, or {fix}"
            )
        mysql = self._engine.dialect.name in ("mysql", "mariadb")
        for column in table.columns:
            want, have = _kind(sa, column.type), _kind(sa, found[column.name])
            if (want, have) == ("integers", "numbers") or (mysql and (want, have) == ("booleans", "integers")):
                continue  # an Integer output into an earlier Float column loses nothing; MySQL keeps booleans as TINYINT
            if want is not None and have is not None and want != have:
                raise SinkError(
                    f"{self._where()}: column {column.name!r} of the existing table {table.name!r} holds {have} "
                    f"({found[column.name]}), but this pipeline writes {want} there; {fix}"
                )
        if table.name in inspector.get_view_names():
            return  # a view has no keys of its own: the table below it has them, or the database refuses the insert
        keys = [inspector.get_pk_constraint(table.name).get("constrained_columns") or []]
        with warnings.catch_warnings():  # SQLite: "skipped unsupported reflection of expression-based index"
            warnings.simplefilter("ignore", sa.exc.SAWarning)
            keys += [u["column_names"] for u in inspector.get_unique_constraints(table.name)]
            indexes = inspector.get_indexes(table.name)
        keys += [
            i["column_names"] for i in indexes
            if i.get("unique") and not any(v is not None for k, v in i.get("dialect_options", {}).items() if k.endswith("_where"))
        ]  # a partial unique index cannot serve ON CONFLICT
        if not any(None not in names and sorted(names) == ["index", "source"] for names in keys):
            raise SinkError(
                f"{self._where()}: the existing table {table.name!r} has no primary key or unique index on "
                f"(source, index), which writing each record exactly once needs; {fix}"
            )

    def _has_rowid(self, name: str) -> bool:
        """Whether the SQLite table ``name`` has a rowid (not ``WITHOUT ROWID``)."""
        sa = self._sa
        try:
            with self._engine.connect() as conn:
                conn.execute(sa.text(f'SELECT rowid FROM "{name.replace(chr(34), chr(34) * 2)}" LIMIT 0'))
        except sa.exc.DBAPIError:
            return False
        return True

    def _make_insert(self, table: Any) -> Any:
        """An insert that skips rows already present and returns the keys of those it inserted (where the backend can)."""
        backend = self._engine.dialect.name
        if backend == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing(index_elements=["source", "index"]).returning(table.c.source, table.c.index)
        if backend == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(table).on_conflict_do_nothing(index_elements=["source", "index"])
            return stmt.returning(table.c.source, table.c.index) if self._engine.dialect.insert_executemany_returning else stmt
        if backend in ("mysql", "mariadb"):
            return table.insert().prefix_with("IGNORE")
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
            try:
                row[ref] = value = _column_value(tp, record.outputs.get(ref))
                if self._sqlite and isinstance(value, float) and value != value:
                    raise ValueError("NaN, which SQLite would store as NULL (a missing output)")
            except (TypeError, ValueError, OverflowError) as exc:
                raise RecordError(
                    f"{self._where()}: output {ref!r} of record {record.index} (source {record.source!r}) does not fit "
                    f"its column: {type(exc).__name__}: {exc}"
                ) from exc
        if self.store_inputs:
            try:
                row["inputs"] = None if record.inputs is None else {k: to_json(v) for k, v in record.inputs.items()}
            except (TypeError, ValueError) as exc:
                raise RecordError(f"{self._where()}: the inputs of record {record.index} have no JSON form: {exc}") from exc
        return row

    def write(self, records: Sequence[Record]) -> WriteResult | None:
        """Insert the records, skipping rows already present (reported as ``present``).

        Raises:
            RecordError: a row is refused (integrity or data error, a value that does not
                fit its column); nothing of this batch is committed.
            SinkError: the database failed (connection, timeout...); nothing of this batch is committed.
        """
        sa = self._sa
        rows = [self._row(r) for r in records]
        try:
            if self._insert is not None:
                with self._engine.begin() as conn:
                    result = conn.execute(self._insert, rows)
                    if not result.returns_rows:
                        return None
                    inserted = collections.Counter((str(source), int(index)) for source, index in result.all())
                present = []
                for record in records:  # a key twice in one batch is inserted once: the other is present
                    key = (record.source, record.index)
                    if inserted[key]:
                        inserted[key] -= 1
                    else:
                        present.append(record)
                return WriteResult(present=present)
            try:
                with self._engine.begin() as conn:
                    conn.execute(self._table.insert(), rows)
            except sa.exc.IntegrityError:
                present = []
                for record, row in zip(records, rows):  # some rows exist already (a retried batch): insert the others
                    try:
                        with self._engine.begin() as conn:
                            conn.execute(self._table.insert(), [row])
                    except sa.exc.IntegrityError:
                        present.append(record)
                return WriteResult(present=present)
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(exc, f"write of {len(rows)} rows failed") from exc
        except (OverflowError, TypeError, ValueError) as exc:  # the database driver could not bind a value
            raise RecordError(f"{self._where()}: write of {len(rows)} rows failed: {type(exc).__name__}: {exc}") from exc
        return None

    def _error(self, exc: Any, what: str) -> SinkError:
        """A :class:`RecordError` for what the rows caused (integrity, data, conversion), else a transient :class:`SinkError`."""
        sa = self._sa
        text = f"{self._where()}: {what}: {_first_line(exc)}"
        transient = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.InternalError, sa.exc.TimeoutError, sa.exc.DisconnectionError)
        if isinstance(exc, transient) or getattr(exc, "connection_invalidated", False):
            return SinkError(text)
        if isinstance(exc, (sa.exc.IntegrityError, sa.exc.DataError)):
            return RecordError(text)
        if isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError):
            return RecordError(text)  # a value the driver could not bind (e.g. no JSON form)
        return SinkError(text)

    def position(self, source: str) -> int | None:
        """The highest index of ``source`` in the table, its dead-letter table and the dead-letter file (``None``: none).

        Raises:
            SinkError: the database cannot be read.
        """
        sa = self._sa
        try:
            with self._engine.connect() as conn:
                found = [conn.execute(sa.select(sa.func.max(self._table.c["index"])).where(self._table.c.source == source)).scalar()]
                if self._dead is not None:
                    found.append(conn.execute(sa.select(sa.func.max(self._dead.c["index"])).where(self._dead.c.source == source)).scalar())
        except sa.exc.SQLAlchemyError as exc:
            raise SinkError(f"{self._where()}: cannot read the position of source {source!r}: {_first_line(exc)}") from exc
        found.append(self.filed_position(source))  # letters the table refused, or all of them with dead_letter= set
        held = [int(i) for i in found if i is not None]
        return max(held) if held else None

    def dead_letter(self, failures: Sequence[tuple[Record, str]]) -> None:
        """Keep refused records in ``<table>_dead_letter`` (or the ``dead_letter`` file when set).

        Raises:
            SinkError: they cannot be kept (the driver retries).
        """
        if self._dead is None:
            super().dead_letter(failures)
            return
        sa = self._sa
        ref = self.context.ref
        rows = []
        for record, error in failures:
            letter = dead_letter_json(record, error, sink=ref)
            rows.append(
                {
                    "source": _text(record.source),
                    "index": record.index,
                    "sid": None if record.sid is None else _text(record.sid),
                    "timestamp": record.timestamp,
                    "error": _text(error),
                    "record": _json_safe(letter),
                }
            )
        try:
            with self._engine.begin() as conn:
                if self._dead_insert is not None:
                    conn.execute(self._dead_insert, rows)
                else:
                    for row in rows:
                        try:
                            with conn.begin_nested():
                                conn.execute(self._dead.insert(), [row])
                        except sa.exc.IntegrityError:
                            pass
        except sa.exc.SQLAlchemyError as exc:
            refused = self._error(exc, f"cannot write {len(rows)} dead letters to {self._dead.name!r}")
            if not isinstance(refused, RecordError):
                raise refused from exc
            self.context.logger.error("%s; keeping them in the dead-letter file instead", refused)
            super().dead_letter(failures)  # the table refuses them too: a file takes anything

    def close(self) -> None:
        """Dispose of the connection pool."""
        engine = getattr(self, "_engine", None)
        if engine is not None:
            self._engine = None
            try:
                engine.dispose()
            except Exception:
                pass


def _text(value: str) -> str:
    """A string any database's text column takes (NUL characters, which PostgreSQL refuses, shown as ``\\x00``)."""
    return value.replace("\x00", "\\x00")


def _json_safe(obj: Any) -> Any:
    """``obj`` through a JSON round trip: anything without a JSON form as its text, NUL characters as ``\\x00``."""
    import json

    return json.loads(json.dumps(obj, default=str).replace("\\u0000", "\\\\x00"))


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


def _kind(sa: Any, column_type: Any) -> str | None:
    """What a column holds, to compare an existing column with the one wanted (``None``: cannot tell)."""
    for kind, types in (
        ("booleans", (sa.Boolean,)),
        ("integers", (sa.Integer,)),
        ("numbers", (sa.Float, sa.Numeric)),
        ("text", (sa.String,)),
        ("JSON", (sa.JSON,)),
    ):
        if isinstance(column_type, types):
            return kind
    return None


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
