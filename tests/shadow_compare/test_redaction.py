"""Secrets never reach a sample, a stored row or a printed report."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from shadow_compare.aggregate import tally
from shadow_compare.compare import compare_responses
from shadow_compare.model import Outcome
from shadow_compare.redact import REDACTED, redact, redact_text
from shadow_compare.rules import parse_rules
from strangler.exchange import RecordedRequest, RecordedResponse
from strangler.tokens import mint_token

SECRET_PASSWORD = "pl41n-t3xt-Pa55"
TOKEN = mint_token(
    "a-test-secret-long-enough-for-hs256-keys", "usr_000000000001", "sub_000000000001"
)


def test_secret_fields_are_redacted_at_any_depth() -> None:
    value = {
        "connector_name": "warehouse",
        "connection_detail": {"host": "db.internal", "password": SECRET_PASSWORD},
        "nested": [{"api_key": "k-123", "accessToken": "t-456", "note": "fine"}],
        "password": None,
    }
    cleaned = redact(value)
    # Only the credential inside a connection detail: host and port are evidence.
    assert cleaned["connection_detail"] == {"host": "db.internal", "password": REDACTED}
    assert cleaned["nested"][0] == {"api_key": REDACTED, "accessToken": REDACTED, "note": "fine"}
    assert cleaned["password"] is None  # a null is not a secret, and tells something
    assert SECRET_PASSWORD not in json.dumps(cleaned)


def test_secret_shapes_are_redacted_inside_free_text() -> None:
    text = (
        f"Authorization: Bearer {TOKEN} failed; dsn postgresql://app:{SECRET_PASSWORD}@db:5432/x "
        f"and password={SECRET_PASSWORD}&page=2, raw {TOKEN}"
    )
    cleaned = redact_text(text)
    assert SECRET_PASSWORD not in cleaned
    assert TOKEN not in cleaned
    assert "postgresql://app:[redacted]@db:5432/x" in cleaned
    assert "page=2" in cleaned


def test_samples_carry_no_secret_from_bodies_requests_or_details() -> None:
    rules = parse_rules({}).for_entity("connectors")
    legacy = {
        "data": {
            "connection_detail": {"host": "a", "password": SECRET_PASSWORD},
            "note": f"token={TOKEN}",
        }
    }
    new = {
        "data": {
            "connection_detail": {"host": "b", "password": "other-" + SECRET_PASSWORD},
            "note": "x",
        }
    }
    result = compare_responses(
        RecordedResponse(200, body=json.dumps(legacy).encode()),
        RecordedResponse(200, body=json.dumps(new).encode()),
        rules,
        endpoint="POST /connectors/addConnector",
    )
    assert len(result.differences) == 3  # the differences are found ...
    request = RecordedRequest(
        "POST",
        "/connectors/addConnector",
        query_string=f"token={TOKEN}",
        headers=(("authorization", f"Bearer {TOKEN}"),),
        body=json.dumps({"connection_detail": {"password": SECRET_PASSWORD}}).encode(),
    )
    outcome = Outcome(
        "connectors", "POST /connectors/addConnector", request, datetime.now(UTC), result
    )
    samples = tally([outcome]).samples
    stored = json.dumps([s.to_json() for s in samples])
    assert samples  # ... and sampled ...
    assert SECRET_PASSWORD not in stored  # ... without the secrets
    assert TOKEN not in stored
    assert "authorization" not in stored.lower()  # headers are never kept


def test_a_changed_port_is_shown_with_both_values() -> None:
    rules = parse_rules({}).for_entity("connectors")
    detail = {"host": "db.internal", "port": 5432, "password": "********"}
    legacy = {"status": True, "data": {"connector_id": "cn_1", "connection_detail": detail}}
    new = {"status": True, "data": {"connector_id": "cn_1",
                                    "connection_detail": {**detail, "port": 5433}}}  # fmt: skip
    result = compare_responses(
        RecordedResponse(200, body=json.dumps(legacy).encode()),
        RecordedResponse(200, body=json.dumps(new).encode()),
        rules,
        endpoint="GET /connectors/getConnector",
    )
    outcome = Outcome(
        "connectors",
        "GET /connectors/getConnector",
        RecordedRequest("GET", "/connectors/getConnector", query_string="connector_id=cn_1"),
        datetime.now(UTC),
        result,
    )
    stored = json.dumps([s.to_json() for s in tally([outcome]).samples])
    assert [d.path for d in result.differences] == ["$.data.connection_detail.port"]
    assert "5432" in stored and "5433" in stored
    assert REDACTED not in stored


def test_field_names_that_only_look_like_secrets_are_kept() -> None:
    value = {"passed": True, "passport_country": "FR", "compass": 1, "db_pass": "x"}
    assert redact(value) == {
        "passed": True,
        "passport_country": "FR",
        "compass": 1,
        "db_pass": REDACTED,
    }
