"""What both backends share about a user's fields: the password hash, the email, the offset.

The legacy backend and the new side hash passwords the same way (bcrypt, at the cost
``Settings.password_rounds``), so a hash written by either is checked by the other, and
read the same fields with the same messages. A password is never kept, rendered or
logged in clear: only its hash leaves :func:`hash_password`.
"""

from __future__ import annotations

import asyncio
import re

from strangler.api_fields import FieldError

__all__ = ["MAX_PASSWORD_BYTES", "UTC_OFFSET", "check_email", "check_password", "hash_password"]

MAX_PASSWORD_BYTES = 72  # bcrypt reads no further; legacy refused longer ones
UTC_OFFSET = re.compile(r"^[+-](0\d|1[0-4]):[0-5]\d$")


async def hash_password(password: str, rounds: int) -> str:
    """The bcrypt hash of ``password`` (a 400 when it is longer than bcrypt reads)."""
    # Imported here so that only the endpoints that set a password need the package.
    import bcrypt

    raw = password.encode()
    if len(raw) > MAX_PASSWORD_BYTES:
        raise FieldError(f"password must be at most {MAX_PASSWORD_BYTES} bytes")
    # bcrypt is deliberately slow: keep it off the event loop.
    hashed = await asyncio.to_thread(bcrypt.hashpw, raw, bcrypt.gensalt(rounds))
    return hashed.decode()


def check_password(password: str, hashed: str) -> bool:
    """Whether ``password`` is the one ``hashed`` was made from (either side's hash)."""
    import bcrypt

    try:
        return bool(bcrypt.checkpw(password.encode(), hashed.encode()))
    except ValueError:  # not a bcrypt hash
        return False


def check_email(email: str) -> str:
    if "@" not in email:
        raise FieldError("email is not an email address")
    return email
