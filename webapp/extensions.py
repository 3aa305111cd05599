"""Extension objects, created once here and bound to an app in create_app()."""

import sqlite3

import psycopg
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase

from .private_files import private_sqlite_file


class Base(DeclarativeBase):
    pass


# Each request has its own session, so objects it has just committed cannot be stale: keeping
# them loaded spares the reload queries (about 3 ms) that serialising a new prediction cost.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate()
csrf = CSRFProtect()
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please sign in to continue."
login_manager.session_protection = "strong"


@event.listens_for(Engine, "do_connect")
def _private_sqlite_file(dialect, _record, cargs, _cparams) -> None:
    # The database holds patient films: created 0600 before SQLite opens it, whatever the umask.
    if dialect.name == "sqlite" and cargs:
        private_sqlite_file(str(cargs[0]))


@event.listens_for(Engine, "connect")
def _sqlite_write_ahead_log(dbapi_connection, _record) -> None:
    # SQLite only: a commit then costs one fsync instead of several (about 20 ms -> 3 ms per
    # upload here, still durable), and readers never wait for a worker that is writing.
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute("PRAGMA journal_mode=WAL")


@event.listens_for(Engine, "connect")
def _postgresql_session_in_utc(dbapi_connection, _record) -> None:
    # PostgreSQL hands timestamptz values back in the session's TimeZone, which comes from the
    # server's postgresql.conf (initdb takes the host's zone), ALTER DATABASE/ROLE or PGTZ: in a
    # hospital's Europe/Berlin cluster every page and printed report labelled "UTC" showed local
    # time. Every time we store and show is UTC, so the session is too, whatever the server says.
    if isinstance(dbapi_connection, psycopg.Connection):
        dbapi_connection.execute("SET TIME ZONE 'UTC'")
        dbapi_connection.commit()


@event.listens_for(Engine, "connect")
def _postgresql_statements_unprepared(dbapi_connection, _record) -> None:
    # psycopg prepares a statement on the server once it has run five times on a connection. Behind a
    # connection pooler in transaction mode (pgbouncer's pool_mode = transaction, as hospitals run it) the
    # next transaction may run on another server connection, which has no such statement: a film of a
    # six-film upload failed with "prepared statement "_pg3_0" does not exist". Unprepared, every
    # statement is whole in itself, on any server connection; the parse it saves is small beside a film.
    if isinstance(dbapi_connection, psycopg.Connection):
        dbapi_connection.prepare_threshold = None


# PostgreSQL's answers that are the server's state, not the statement's fault, but which psycopg files
# under InternalError or ProgrammingError: a database that takes no writes (a standby promoted the other
# way round by a failover, `default_transaction_read_only` set by a DBA) answered every upload, and every
# page that records a view, with 500 "something went wrong" and a stack trace, while /readyz said ready;
# so did a privilege the DBA withheld from the app's role (an append-only table, a hardening guide's grants).
SERVER_REFUSALS = (
    psycopg.errors.ReadOnlySqlTransaction,
    psycopg.errors.IdleInTransactionSessionTimeout,
    psycopg.errors.InsufficientPrivilege,
)


@event.listens_for(Engine, "handle_error", retval=True)
def _server_refusal_is_unavailability(context):
    """Raised as the OperationalError every caller takes for "the database is not available" (a 503 on
    a page or the API, a job that waits and is tried again) instead of a fault of ours."""
    if not isinstance(context.original_exception, SERVER_REFUSALS):
        return None
    if isinstance(context.original_exception, psycopg.errors.IdleInTransactionSessionTimeout):
        context.is_disconnect = True  # the server has closed it: out of the pool with it
    return OperationalError(context.statement, context.parameters, context.original_exception, hide_parameters=True)
