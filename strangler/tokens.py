"""The legacy API's bearer tokens: HS256 JWTs.

Claims: ``UserId``, ``subscription_id``, ``email``, ``exp``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

__all__ = ["Caller", "InvalidToken", "mint_token", "verify_token"]

DEFAULT_TTL_SECONDS = 24 * 3600


class InvalidToken(Exception):
    """Missing, malformed, badly signed or expired token (the API answers 401)."""


@dataclass(frozen=True)
class Caller:
    user_id: str
    subscription_id: str
    email: str | None


def mint_token(
    secret: str,
    user_id: str,
    subscription_id: str,
    email: str | None = None,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now: float | None = None,
) -> str:
    issued = time.time() if now is None else now
    claims = {
        "UserId": user_id,
        "subscription_id": subscription_id,
        "email": email or f"{user_id}@example.com",
        "exp": int(issued + ttl_seconds),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


# Tokens already verified, with their expiry: a client sends the same token on every
# request, and decoding it again costs more than a small read (each is still checked for
# expiry at every use). Bounded: emptied when full. Only successes are kept.
_VERIFIED: dict[tuple[str, str], tuple[Caller, float]] = {}
_VERIFIED_MAX = 4096


def verify_token(secret: str, token: str) -> Caller:
    """The caller a token names; raises :class:`InvalidToken` for anything else."""
    known = _VERIFIED.get((secret, token))
    if known is not None:
        caller, expires = known
        if expires <= time.time():
            _VERIFIED.pop((secret, token), None)
            raise InvalidToken("Signature has expired")
        return caller
    caller, expires = _decode(secret, token)
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[(secret, token)] = (caller, expires)
    return caller


def _decode(secret: str, token: str) -> tuple[Caller, float]:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp"]})
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    user_id = claims.get("UserId")
    subscription_id = claims.get("subscription_id")
    if not isinstance(user_id, str) or not isinstance(subscription_id, str):
        raise InvalidToken("token lacks UserId or subscription_id")
    email = claims.get("email")
    caller = Caller(user_id, subscription_id, email if isinstance(email, str) else None)
    return caller, float(claims["exp"])


def caller_from_authorization(secret: str, header: str | None) -> Caller:
    """The caller of an ``Authorization: Bearer ...`` header value."""
    if not header:
        raise InvalidToken("no Authorization header")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("Authorization is not a Bearer token")
    return verify_token(secret, token.strip())
