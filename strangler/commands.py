"""Small commands that belong to no package: ``strangler token``."""

from __future__ import annotations

import argparse
import re

from strangler.config import load_settings
from strangler.errors import DataError
from strangler.tokens import mint_token

_USER_ID = re.compile(r"^usr_[0-9a-f]{12}$")
_SUBSCRIPTION_ID = re.compile(r"^sub_[0-9a-f]{12}$")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    token = subparsers.add_parser(
        "token",
        help="print a bearer token for trying the API by hand",
        description="Print an HS256 token signed with JWT_SECRET, as the legacy backend issues.",
    )
    token.add_argument("--user", required=True, help="UserId claim (usr_ + 12 hex)")
    token.add_argument(
        "--subscription", required=True, help="subscription_id claim (sub_ + 12 hex)"
    )
    token.add_argument("--email", help="email claim (default: derived from the user id)")
    token.add_argument("--ttl", type=int, default=24 * 3600, help="lifetime in seconds")
    token.set_defaults(handler=_token)


def _token(args: argparse.Namespace) -> int:
    if not _USER_ID.match(args.user):
        raise DataError(f"--user {args.user!r} is not a UserId (usr_ followed by 12 lowercase hex)")
    if not _SUBSCRIPTION_ID.match(args.subscription):
        raise DataError(
            f"--subscription {args.subscription!r} is not a subscription_id "
            "(sub_ followed by 12 lowercase hex)"
        )
    settings = load_settings()
    print(mint_token(settings.jwt_secret, args.user, args.subscription, args.email, args.ttl))
    return 0
