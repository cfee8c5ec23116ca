"""connectors -> rows -> connectors: pure, lossless in normalized form, secrets sealed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from migrator_strategies import (
    MISSING,
    assemble,
    bools,
    d_flags,
    dirty_datetimes,
    extra_fields,
    ids,
    texts,
)

from migrators.crypto import SecretBox
from migrators.entities.connectors import SPECS, redact_connector, seal_connector_document
from migrators.spec import Mapped, MappingContext, Quarantined
from strangler.config import ConnectorKeys

SPEC = SPECS[0]
CTX = SecretBox(ConnectorKeys.parse("t:" + "A" * 43 + "=")).context()

details = st.one_of(
    st.fixed_dictionaries(
        {
            "host": st.text(max_size=10),
            "port": st.sampled_from([5432, "5432", None]),
            "password": st.text(min_size=1, max_size=20).map(lambda t: "pw\u00a7" + t),
        },
        optional={
            "token": st.text(max_size=5).map(lambda t: "tk\u00a7" + t),
            "schema": st.text(max_size=5),
        },
    ),
    st.sampled_from([None, MISSING, {}, "host=db;password=pw\u00a7x"]),
)
connector_documents = st.builds(
    lambda cid, fields, extra: assemble({"connector_id": "cn_" + cid, **fields}, extra),
    ids,
    st.fixed_dictionaries(
        {
            "subscription_id": st.just("sub_000000000001"),
            "connector_name": texts,
            "connector_type": st.sampled_from(["postgres", "s3", MISSING, None]),
            "description": texts,
            "connection_detail": details,
            "is_active": bools,
            "test_status": st.sampled_from(["success", "failed", "untested", "pending", None]),
            "last_tested_at": dirty_datetimes,
            "created_by": st.sampled_from(["usr_000000000001", None, MISSING]),
            "created_at": dirty_datetimes,
            "updated_at": dirty_datetimes,
            "d_flag": d_flags,
        }
    ),
    extra_fields,
)


def rows_of(document: dict[str, Any], ctx: MappingContext = CTX) -> Mapped:
    outcome = SPEC.map_document(document, ctx)
    assert isinstance(outcome, Mapped), outcome
    return outcome


@settings(max_examples=150, deadline=None)
@given(connector_documents)
def test_document_rows_document_is_the_normalized_document(document: dict[str, Any]) -> None:
    assert SPEC.to_document and SPEC.normalize
    assert SPEC.to_document(rows_of(document).rows, CTX) == SPEC.normalize(document)


@settings(max_examples=150, deadline=None)
@given(connector_documents)
def test_no_secret_value_is_left_in_plain_columns(document: dict[str, Any]) -> None:
    row = rows_of(document).rows["connectors"][0]
    detail = document.get("connection_detail")
    secrets = (
        [v for k, v in detail.items() if k in ("password", "token")]
        if isinstance(detail, dict)
        else ([detail] if isinstance(detail, str) else [])
    )
    plain = repr({k: v for k, v in row.items() if k != "secret_ciphertext"})
    for secret in secrets:
        assert secret not in plain
        assert secret.encode() not in (row["secret_ciphertext"] or b"")
    assert "password" not in row["connection_detail"]


@settings(max_examples=100, deadline=None)
@given(connector_documents)
def test_normalized_form_reads_dirty_values_as_the_api_does(document: dict[str, Any]) -> None:
    assert SPEC.normalize
    normalized = SPEC.normalize(document)
    assert isinstance(normalized["d_flag"], bool)
    for name in ("created_at", "updated_at", "last_tested_at"):
        value = normalized[name]
        readable = value is None or isinstance(value, datetime)
        assert readable or value in ("not a date", "31/31/2020 99:99")
    assert "_id" not in normalized


def test_rows_carry_deleted_flag_and_unknown_fields() -> None:
    document = {
        "connector_id": "cn_00000000000a",
        "subscription_id": "sub_000000000001",
        "connector_name": "Lake",
        "connection_detail": {"host": "h", "port": "5432", "password": "pw-123456"},
        "d_flag": "true",
        "created_at": "2024-02-03 04:05:06",
        "__v": 3,
    }
    row = rows_of(document).rows["connectors"][0]
    assert row["is_deleted"] is True
    assert row["extra"] == {"__v": 3}
    assert row["connection_detail"] == {"host": "h", "port": "5432"}  # port kept as found
    assert row["created_at"].isoformat() == "2024-02-03T04:05:06+00:00"


def test_documents_without_ids_are_quarantined_with_a_reason() -> None:
    assert SPEC.map_document({"connector_name": "x"}, CTX) == Quarantined(
        "missing_id", "connector_id is None"
    )
    outcome = SPEC.map_document({"connector_id": "cn_1", "subscription_id": 5}, CTX)
    assert isinstance(outcome, Quarantined) and outcome.reason == "missing_subscription"


def test_unreadable_values_are_kept_and_noted() -> None:
    document = {"connector_id": "cn_1", "subscription_id": "sub_1", "created_at": "soon"}
    outcome = rows_of(document)
    assert outcome.rows["connectors"][0]["created_at"] is None
    assert [n.kind for n in outcome.notes] == ["unreadable_value"]
    assert SPEC.to_document and SPEC.to_document(outcome.rows, CTX)["created_at"] == "soon"


def test_quarantine_and_report_forms_hold_no_password() -> None:
    document = {"connector_id": "cn_1", "connection_detail": {"password": "s3cr3t-pw", "host": "h"}}
    sealed = seal_connector_document(document, CTX)
    assert "s3cr3t-pw" not in repr(sealed) and sealed["connection_detail"]["host"] == "h"
    assert "s3cr3t-pw" not in repr(redact_connector(document))
