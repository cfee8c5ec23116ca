"""Connecting to PostgreSQL for schema work, with its failures mapped to ours.

Also creates the target database when it does not exist yet, through the
server's ``postgres`` maintenance database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from schema.errors import SchemaError
from strangler.config import redact_url
from strangler.errors import ServiceUnavailable, StranglerError

__all__ = ["Progress", "connect", "connect_creating", "database_errors", "database_name"]

Progress = Callable[[str], object]
_SETTING = "DATABASE_URL"
CONNECT_TIMEOUT_SECONDS = 10.0
_UNREACHABLE = (OSError, asyncpg.CannotConnectNowError, TimeoutError)
_REFUSED_LOGIN = (
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidPasswordError,
)


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or (urlsplit(url).username or "")


def _maintenance_url(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/postgres"))


async def connect(url: str) -> asyncpg.Connection:
    """A connection to ``url``; an unreachable server is :class:`ServiceUnavailable`."""
    try:
        return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_SECONDS)
    except _UNREACHABLE as exc:
        raise ServiceUnavailable(_SETTING, redact_url(url), str(exc) or type(exc).__name__) from exc
    except _REFUSED_LOGIN as exc:
        raise SchemaError(
            f"{_SETTING}: PostgreSQL refused the login for {redact_url(url)} ({exc}); "
            "set DATABASE_URL to a user that may connect"
        ) from exc


async def connect_creating(url: str, progress: Progress) -> asyncpg.Connection:
    """Like :func:`connect`, creating the database first if the server lacks it."""
    try:
        return await connect(url)
    except asyncpg.InvalidCatalogNameError:
        pass
    name = database_name(url)
    admin = await connect(_maintenance_url(url))
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        await admin.execute(f"CREATE DATABASE {quoted}")
        progress(f'database "{name}" did not exist: created it')
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
        pass  # another runner created it meanwhile (the race shows as either error)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise SchemaError(
            f'{_SETTING}: database "{name}" does not exist and this user may not create it; '
            "create it (CREATE DATABASE) or point DATABASE_URL at an existing one"
        ) from exc
    finally:
        await admin.close()
    return await connect(url)


@asynccontextmanager
async def database_errors(url: str) -> AsyncIterator[None]:
    """Map what asyncpg raises past this point to the project's errors.

    Our own errors pass through; a connection lost midway is
    :class:`ServiceUnavailable`; anything else PostgreSQL refuses is a
    :class:`SchemaError` carrying the server's message.
    """
    try:
        yield
    except StranglerError:
        raise
    except (*_UNREACHABLE, asyncpg.ConnectionDoesNotExistError) as exc:
        raise ServiceUnavailable(_SETTING, redact_url(url), str(exc) or type(exc).__name__) from exc
    except asyncpg.PostgresError as exc:
        raise SchemaError(
            f"PostgreSQL at {redact_url(url)} refused a schema operation: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
