"""Redaction of secrets before anything is stored or printed.

Secrets are found two ways: by the name of the field holding them (passwords,
tokens, keys, connector credential keys, authorization headers) and by their shape inside
any string (bearer tokens, JWTs, URLs with a password, ``password=...`` pairs).
Redaction is one-way and loses the value on purpose: a report says *that* two
secrets differ, never what they are.
"""

from __future__ import annotations

import re
from typing import Any

from migrators.crypto import SECRET_KEYS

__all__ = ["REDACTED", "is_secret_name", "redact", "redact_path_value", "redact_text"]

REDACTED = "[redacted]"

_SECRET_NAME = re.compile(
    r"password|passwd|passphrase|(^|[_.-])pass([_.-]|$)|secret|token|api[_-]?key|"
    r"access[_-]?key|private[_-]?key|"
    r"credential|authorization|cookie|connection[_-]?string|dsn|"
    r"^pwd$",
    re.IGNORECASE,
)
_TEXT_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # JWTs anywhere (three base64url parts, the first a JSON header).
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    # scheme://user:password@host
    (re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@\s/]+@"), r"\1:" + REDACTED + "@"),
    # password=..., "token": "...", secret: ... inside free text or a query string
    (
        re.compile(
            r"(?i)\b([\w-]*(?:password|passwd|pwd|secret|token|api[_-]?key)[\w-]*)"
            r"(\"?\s*[:=]\s*\"?)([^\s&\",;}]+)"
        ),
        r"\1\2" + REDACTED,
    ),
)


def is_secret_name(name: str) -> bool:
    """Whether a field of this name holds a secret: a credential key of a connector
    (``migrators.crypto.SECRET_KEYS``) or a name shaped like one. A connector's
    ``connection_detail`` is not one: its ``host``, ``port`` or ``database`` are evidence,
    and its credential keys are redacted by their own names."""
    return name.lower() in SECRET_KEYS or bool(_SECRET_NAME.search(name))


def redact_text(text: str) -> str:
    for pattern, replacement in _TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any) -> Any:
    """A copy of a JSON value with secret fields and secret-shaped strings redacted."""
    if isinstance(value, dict):
        return {
            key: (REDACTED if is_secret_name(str(key)) and item is not None else redact(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_path_value(path: str, value: Any) -> Any:
    """A difference's value: all of it when its path passes through a secret field."""
    names = re.findall(r"[A-Za-z_][A-Za-z0-9_\-]*", path)
    if any(is_secret_name(name) for name in names) and value not in (None, "<missing>"):
        return REDACTED
    return redact(value)
