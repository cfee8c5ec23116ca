"""users and Accounts -> rows -> documents: lossless in normalized form."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from migrator_strategies import MISSING, assemble, bools, dirty_datetimes, extra_fields, ids, texts

from migrators.entities.accounts import SPECS as ACCOUNT_SPECS
from migrators.entities.users import SPECS as USER_SPECS
from migrators.entities.users import redact_user
from migrators.spec import Mapped, MappingContext, Quarantined

USERS, ACCOUNTS = USER_SPECS[0], ACCOUNT_SPECS[0]
CTX = MappingContext()

user_documents = st.builds(
    lambda uid, fields, extra: assemble({"UserId": "usr_" + uid, **fields}, extra),
    ids,
    st.fixed_dictionaries(
        {
            "subscription_id": st.just("sub_000000000001"),
            "email": texts,
            "username": texts,
            "full_name": texts,
            "password": st.sampled_from(["$2b$12$" + "a" * 53, None, MISSING]),
            "photo_url": texts,
            "user_utc_offset": st.sampled_from(["+05:30", "-08:00", None, MISSING]),
            "is_active": bools,
            "is_email_verified": bools,
            "last_login_at": dirty_datetimes,
            "created_at": dirty_datetimes,
            "updated_at": dirty_datetimes,
        }
    ),
    extra_fields,
)
account_documents = st.builds(
    lambda sid, fields, extra: assemble({"subscription_id": "sub_" + sid, **fields}, extra),
    ids,
    st.fixed_dictionaries(
        {
            "company_name": texts,
            "plan_type": st.sampled_from(["free", "team", "enterprise", "gold", None, MISSING]),
            "status": st.sampled_from(["active", "suspended", "closed", None, MISSING]),
            "created_at": dirty_datetimes,
        }
    ),
    extra_fields,
)


@settings(max_examples=150, deadline=None)
@given(user_documents)
def test_user_round_trip_is_the_normalized_document(document: dict[str, Any]) -> None:
    outcome = USERS.map_document(document, CTX)
    assert isinstance(outcome, Mapped)
    assert USERS.to_document and USERS.normalize
    assert USERS.to_document(outcome.rows, CTX) == USERS.normalize(document)


@settings(max_examples=150, deadline=None)
@given(account_documents)
def test_account_round_trip_is_the_normalized_document(document: dict[str, Any]) -> None:
    outcome = ACCOUNTS.map_document(document, CTX)
    assert isinstance(outcome, Mapped)
    assert ACCOUNTS.to_document and ACCOUNTS.normalize
    assert ACCOUNTS.to_document(outcome.rows, CTX) == ACCOUNTS.normalize(document)


def test_bcrypt_hash_is_kept_for_logins_but_never_shown() -> None:
    hashed = "$2b$12$" + "b" * 53
    outcome = USERS.map_document(
        {"UserId": "usr_1", "subscription_id": "s", "password": hashed}, CTX
    )
    assert isinstance(outcome, Mapped)
    assert outcome.rows["users"][0]["password_hash"] == hashed
    assert hashed not in repr(redact_user({"password": hashed}))


def test_plan_outside_the_schema_list_is_kept_in_extra_not_in_the_column() -> None:
    outcome = ACCOUNTS.map_document({"subscription_id": "sub_1", "plan_type": "gold"}, CTX)
    assert isinstance(outcome, Mapped)
    row = outcome.rows["subscriptions"][0]
    assert row["plan_type"] is None and row["extra"] == {"$unreadable": {"plan_type": "gold"}}


def test_documents_without_usable_ids_are_quarantined() -> None:
    assert isinstance(USERS.map_document({"UserId": ""}, CTX), Quarantined)
    assert isinstance(USERS.map_document({"UserId": "usr_1"}, CTX), Quarantined)
    assert isinstance(ACCOUNTS.map_document({"subscription_id": 12}, CTX), Quarantined)
