from __future__ import annotations

from datetime import UTC, datetime

import pytest

from strangler.contract import (
    DirtyValue,
    PagingError,
    is_deleted,
    parse_legacy_datetime,
    parse_paging,
    render_datetime,
    to_int,
)
from strangler.tokens import InvalidToken, caller_from_authorization, mint_token, verify_token

SECRET = "a-test-secret-long-enough-for-hs256-keys"


def test_a_minted_token_names_its_caller() -> None:
    token = mint_token(SECRET, "usr_0123456789ab", "sub_0123456789ab")
    caller = verify_token(SECRET, token)
    assert (caller.user_id, caller.subscription_id) == ("usr_0123456789ab", "sub_0123456789ab")


def test_a_token_verified_once_still_expires_and_binds_its_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import strangler.tokens as tokens

    now = 2_000_000_000.0
    token = mint_token(SECRET, "usr_0123456789ab", "sub_0123456789ab", ttl_seconds=60, now=now)
    monkeypatch.setattr(tokens.time, "time", lambda: now + 1)
    assert verify_token(SECRET, token).user_id == "usr_0123456789ab"
    with pytest.raises(InvalidToken):  # known, but under another secret: decoded, refused
        verify_token("another-secret-entirely-and-long-enough-too", token)
    monkeypatch.setattr(tokens.time, "time", lambda: now + 61)
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(SECRET, token)  # the remembered verification does not outlive exp


@pytest.mark.parametrize(
    "header",
    [None, "", "Basic abc", "Bearer ", "Bearer not.a.jwt"],
)
def test_bad_authorization_headers_are_invalid(header: str | None) -> None:
    with pytest.raises(InvalidToken):
        caller_from_authorization(SECRET, header)


def test_expired_and_badly_signed_tokens_are_invalid() -> None:
    expired = mint_token(SECRET, "usr_0123456789ab", "sub_0123456789ab", ttl_seconds=-10)
    with pytest.raises(InvalidToken):
        verify_token(SECRET, expired)
    other = mint_token(
        "another-secret-entirely-and-long-enough-too", "usr_0123456789ab", "sub_0123456789ab"
    )
    with pytest.raises(InvalidToken):
        verify_token(SECRET, other)


@pytest.mark.parametrize(
    "stored",
    [
        datetime(2024, 3, 1, 12, 30, 5, 123456),
        datetime(2024, 3, 1, 12, 30, 5, 123000, tzinfo=UTC),
        "2024-03-01 12:30:05.123",
        "2024-03-01T12:30:05.123Z",
        "2024-03-01T14:30:05.123+02:00",
        1709296205123,
        "1709296205123",
        {"$date": "2024-03-01T12:30:05.123Z"},
    ],
)
def test_every_stored_datetime_form_reads_as_the_same_moment(stored: object) -> None:
    assert parse_legacy_datetime(stored) == datetime(2024, 3, 1, 12, 30, 5, 123000, tzinfo=UTC)
    assert render_datetime(stored) == "2024-03-01 12:30:05"


def test_unreadable_datetimes_raise_but_render_as_found() -> None:
    with pytest.raises(DirtyValue):
        parse_legacy_datetime("next tuesday")
    assert render_datetime("next tuesday") == "next tuesday"
    assert render_datetime(None) is None


@pytest.mark.parametrize(
    ("flag", "deleted"),
    [(None, False), (False, False), ("false", False), (True, True), ("true", True), ("TRUE", True)],
)
def test_d_flag_in_all_its_stored_forms(flag: object, deleted: bool) -> None:
    assert is_deleted(flag) is deleted


def test_numbers_stored_as_strings() -> None:
    assert to_int("5432") == 5432
    assert to_int(5432.0) == 5432
    assert to_int(None) is None
    with pytest.raises(DirtyValue):
        to_int("abc")


def test_paging_defaults_clamps_and_refuses() -> None:
    assert parse_paging(None, None).per_page == 20
    assert parse_paging("3", "500").per_page == 100
    assert parse_paging("3", "10").skip == 20
    for bad in ("0", "-1", "x"):
        with pytest.raises(PagingError):
            parse_paging(bad, None)
        with pytest.raises(PagingError):
            parse_paging(None, bad)
