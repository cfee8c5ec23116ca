"""Connector secrets sealed in the application with AES-256-GCM, under rotating key ids.

What is secret: the keys of ``connection_detail`` named in :data:`SECRET_KEYS`
(``password`` and the other credential-bearing keys connector types use:
tokens, API keys, private keys, secret access keys, connection strings/URIs
that embed credentials). They leave ``connection_detail`` together, as one
JSON object, and are stored as ``secret_ciphertext`` under ``secret_key_id``.

Format of a ciphertext: ``0x01 || nonce (12 bytes) || AES-GCM(ciphertext || tag)``.
The associated data binds it to its row (:func:`associated_data` of the
connector id): a ciphertext moved onto another row fails to open.

The nonce is synthetic: an HMAC-SHA256 (under a key derived from the data key)
of the associated data and the plaintext. Sealing the same secret of the same
row under the same key gives the same bytes, so re-running a backfill or a sync
finds the row unchanged instead of rewriting it, and distinct plaintexts still
never share a nonce. What it reveals: whether one row's secret is the same as
before, nothing across rows.

Keys never go to PostgreSQL: encryption happens here, only ciphertexts and key
ids travel, always as bind parameters. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from migrators.spec import MappingContext
from strangler.config import ConnectorKeys
from strangler.errors import PermanentError

__all__ = [
    "SECRET_KEYS",
    "SecretBox",
    "SecretError",
    "associated_data",
    "join_secrets",
    "split_secrets",
]

FORMAT_VERSION = b"\x01"
NONCE_BYTES = 12
_NONCE_LABEL = b"uzo connector secret nonce v1"

# connection_detail keys whose values are credentials (compared case-insensitively).
SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "secret",
        "secret_key",
        "secret_access_key",
        "aws_secret_access_key",
        "access_key",
        "api_key",
        "apikey",
        "token",
        "access_token",
        "refresh_token",
        "auth_token",
        "client_secret",
        "private_key",
        "private_key_passphrase",
        "passphrase",
        "connection_string",
        "uri",
    }
)


class SecretError(PermanentError):
    """A connector secret cannot be sealed or opened (unknown key id, tampered bytes)."""


def associated_data(connector_id: str) -> bytes:
    """What binds a connector's ciphertext to that connector's row."""
    return b"uzo:connector:" + connector_id.encode()


def split_secrets(detail: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``connection_detail`` -> (what may be stored as is, the secret keys and values)."""
    public: dict[str, Any] = {}
    secret: dict[str, Any] = {}
    for key, value in detail.items():
        (secret if key.lower() in SECRET_KEYS else public)[key] = value
    return public, secret


def join_secrets(public: Mapping[str, Any], secret: Mapping[str, Any]) -> dict[str, Any]:
    return {**public, **secret}


class SecretBox:
    """Seals and opens secrets with the keys of ``CONNECTOR_KEYS``; never prints them."""

    def __init__(self, keys: ConnectorKeys) -> None:
        self._keys = keys
        self._ciphers = {kid: AESGCM(key) for kid, key in keys.keys.items()}
        self._nonce_keys = {
            kid: hmac.new(key, _NONCE_LABEL, hashlib.sha256).digest()
            for kid, key in keys.keys.items()
        }

    @property
    def active_key_id(self) -> str:
        return self._keys.active

    def seal(self, plaintext: bytes, associated: bytes) -> tuple[bytes, str]:
        kid = self._keys.active
        nonce = hmac.new(
            self._nonce_keys[kid],
            len(associated).to_bytes(4, "big") + associated + plaintext,
            hashlib.sha256,
        ).digest()[:NONCE_BYTES]
        sealed = self._ciphers[kid].encrypt(nonce, plaintext, associated)
        return FORMAT_VERSION + nonce + sealed, kid

    def open(self, ciphertext: bytes, key_id: str, associated: bytes) -> bytes:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise SecretError(
                f"a connector secret is sealed under key id {key_id!r}, which CONNECTOR_KEYS "
                f"does not hold (it holds {sorted(self._ciphers)}); add that key back"
            )
        if len(ciphertext) < 1 + NONCE_BYTES + 16 or ciphertext[:1] != FORMAT_VERSION:
            raise SecretError("a connector secret is not in the expected format")
        nonce = ciphertext[1 : 1 + NONCE_BYTES]
        try:
            return cipher.decrypt(nonce, ciphertext[1 + NONCE_BYTES :], associated)
        except InvalidTag:
            raise SecretError(
                f"a connector secret under key id {key_id!r} does not open: the key is wrong, "
                "the bytes were altered, or the ciphertext belongs to another row"
            ) from None

    def seal_json(self, value: Any, associated: bytes) -> tuple[bytes, str]:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
        return self.seal(text.encode(), associated)

    def open_json(self, ciphertext: bytes, key_id: str, associated: bytes) -> Any:
        return json.loads(self.open(ciphertext, key_id, associated))

    def context(self, now: datetime | None = None) -> MappingContext:
        return MappingContext(seal=self.seal, open=self.open, now=now)

    def __repr__(self) -> str:  # never print key material
        return f"SecretBox(keys={self._keys!r})"
