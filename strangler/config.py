"""Settings read from the environment, once, at the entry points.

Nothing below the entry points reads ``os.environ``: commands build a
:class:`Settings` with :func:`load_settings` and pass it (or the part they
need) down explicitly.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from strangler.errors import ConfigError

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_JWT_SECRET",
    "DEFAULT_LEGACY_URL",
    "DEFAULT_MONGO_URL",
    "DEFAULT_PASSWORD_ROUNDS",
    "DEFAULT_REDIS_URL",
    "ConnectorKeys",
    "Settings",
    "load_settings",
    "redact_url",
]

DEFAULT_LEGACY_URL = "http://127.0.0.1:8001"
# "memory://" selects the in-process mongomock store; "mongodb://..." a real server.
DEFAULT_MONGO_URL = "memory://"
DEFAULT_DATABASE_URL = "postgresql://root@127.0.0.1:5432/uzo"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# bcrypt's cost factor, as legacy configured it.
DEFAULT_PASSWORD_ROUNDS = 12
# Only for local trials: production sets JWT_SECRET to the legacy backend's secret.
DEFAULT_JWT_SECRET = "uzo-dev-secret-change-me-0123456789"
# A fixed development key (32 zero-padded bytes) so that a fresh checkout runs;
# production sets CONNECTOR_KEYS.
DEFAULT_CONNECTOR_KEYS = "dev1:" + base64.b64encode(b"uzo-development-key-not-secret!!").decode()


def redact_url(url: str) -> str:
    """The URL with any password replaced, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _check_url(setting: str, value: str, schemes: tuple[str, ...], example: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ConfigError(
            setting,
            f"{redact_url(value)!r} is not a {' or '.join(s + '://' for s in schemes)} URL",
            f"set it like {example}",
        )
    if parts.scheme != "memory" and not parts.hostname:
        raise ConfigError(setting, f"{redact_url(value)!r} names no host", f"set it like {example}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(
            setting, f"{redact_url(value)!r} has a bad port", f"set it like {example}"
        ) from None
    return value


@dataclass(frozen=True)
class ConnectorKeys:
    """AES-256-GCM keys for connector secrets, by key id; ``active`` encrypts new values."""

    keys: Mapping[str, bytes]
    active: str

    @classmethod
    def parse(cls, spec: str, active: str | None = None) -> ConnectorKeys:
        """Parse ``"kid1:base64key,kid2:base64key"``; the last key is active unless named."""
        fix = "set CONNECTOR_KEYS to 'keyid:base64-of-32-bytes[,keyid:...]'"
        keys: dict[str, bytes] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            kid, sep, encoded = item.partition(":")
            if not sep or not kid:
                raise ConfigError("CONNECTOR_KEYS", "an entry has no 'keyid:' prefix", fix)
            try:
                raw = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError("CONNECTOR_KEYS", f"key {kid!r} is not base64", fix) from None
            if len(raw) != 32:
                raise ConfigError("CONNECTOR_KEYS", f"key {kid!r} is {len(raw)} bytes, not 32", fix)
            if kid in keys:
                raise ConfigError("CONNECTOR_KEYS", f"key id {kid!r} appears twice", fix)
            keys[kid] = raw
        if not keys:
            raise ConfigError("CONNECTOR_KEYS", "no key given", fix)
        chosen = active or list(keys)[-1]
        if chosen not in keys:
            raise ConfigError(
                "CONNECTOR_KEY_ID", f"{chosen!r} is not a key id of CONNECTOR_KEYS", fix
            )
        return cls(keys=keys, active=chosen)

    def __repr__(self) -> str:  # never print key material
        return f"ConnectorKeys(ids={sorted(self.keys)}, active={self.active!r})"


@dataclass(frozen=True)
class Settings:
    legacy_url: str = DEFAULT_LEGACY_URL
    mongo_url: str = DEFAULT_MONGO_URL
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    jwt_secret: str = field(default=DEFAULT_JWT_SECRET, repr=False)
    connector_keys: ConnectorKeys = field(
        default_factory=lambda: ConnectorKeys.parse(DEFAULT_CONNECTOR_KEYS)
    )
    # bcrypt's cost factor for passwords set from now on, on either side (PASSWORD_ROUNDS).
    password_rounds: int = DEFAULT_PASSWORD_ROUNDS

    @property
    def mongo_in_process(self) -> bool:
        return self.mongo_url.startswith("memory://")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build and validate the settings from the environment (``os.environ`` by default)."""
    env = os.environ if environ is None else environ

    def get(name: str, default: str) -> str:
        value = env.get(name, "").strip()
        return value or default

    legacy = _check_url(
        "LEGACY_URL",
        get("LEGACY_URL", DEFAULT_LEGACY_URL),
        ("http", "https"),
        "http://127.0.0.1:8001",
    )
    mongo = _check_url(
        "MONGO_URL",
        get("MONGO_URL", DEFAULT_MONGO_URL),
        ("mongodb", "mongodb+srv", "memory"),
        "mongodb://127.0.0.1:27017/uzo (or memory:// for the in-process store)",
    )
    database = _check_url(
        "DATABASE_URL",
        get("DATABASE_URL", DEFAULT_DATABASE_URL),
        ("postgresql", "postgres"),
        "postgresql://user:password@127.0.0.1:5432/uzo",
    )
    redis_url = _check_url(
        "REDIS_URL",
        get("REDIS_URL", DEFAULT_REDIS_URL),
        ("redis", "rediss"),
        "redis://127.0.0.1:6379/0",
    )
    secret = get("JWT_SECRET", DEFAULT_JWT_SECRET)
    if len(secret) < 16:
        raise ConfigError(
            "JWT_SECRET", "is shorter than 16 characters", "set it to the legacy backend's secret"
        )
    keys = ConnectorKeys.parse(
        get("CONNECTOR_KEYS", DEFAULT_CONNECTOR_KEYS), env.get("CONNECTOR_KEY_ID") or None
    )
    rounds_text = get("PASSWORD_ROUNDS", str(DEFAULT_PASSWORD_ROUNDS))
    try:
        rounds = int(rounds_text)
    except ValueError:
        rounds = 0
    if not 4 <= rounds <= 31:
        raise ConfigError(
            "PASSWORD_ROUNDS",
            f"is {rounds_text!r}, not a bcrypt cost factor",
            f"set a whole number from 4 to 31 (legacy's is {DEFAULT_PASSWORD_ROUNDS})",
        )
    return Settings(
        legacy_url=legacy,
        mongo_url=mongo,
        database_url=database,
        redis_url=redis_url,
        jwt_secret=secret,
        connector_keys=keys,
        password_rounds=rounds,
    )
