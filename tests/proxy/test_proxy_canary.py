"""Canary tenants are picked by a stable, documented hash; raising the percent only adds."""

from __future__ import annotations

import asyncio
import hashlib
import pathlib

from hypothesis import given, settings
from hypothesis import strategies as st
from proxy_support import rules_data, token, write_rules

import proxy.canary as canary_module
from proxy.canary import CANARY_TEST_VECTORS, in_canary, percent_threshold, tenant_bucket
from strangler.exchange import RecordedRequest, RecordedResponse

subscription_ids = st.text(alphabet="0123456789abcdef", min_size=12, max_size=12).map(
    lambda h: "sub_" + h
)
percents = st.integers(min_value=0, max_value=10_000).map(lambda bp: bp / 100)


def _reference_bucket(subscription_id: str) -> int:
    """The hash as docs/proxy.md states it, written out independently."""
    digest = hashlib.sha256(b"uzo-canary:" + subscription_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000


def test_documented_test_vectors() -> None:
    assert len(CANARY_TEST_VECTORS) >= 5
    for subscription_id, bucket in CANARY_TEST_VECTORS:
        assert tenant_bucket(subscription_id) == bucket
        assert _reference_bucket(subscription_id) == bucket
    # The vector table in the module docstring agrees with the tuple.
    for subscription_id, bucket in CANARY_TEST_VECTORS:
        assert f"{subscription_id}     {bucket}" in (canary_module.__doc__ or "")


@settings(deadline=None)  # a loaded CI machine must not turn slowness into a failure
@given(subscription_ids)
def test_bucket_matches_the_documented_formula(subscription_id: str) -> None:
    assert tenant_bucket(subscription_id) == _reference_bucket(subscription_id)


@settings(deadline=None)
@given(st.lists(subscription_ids, min_size=1, max_size=50), percents, percents)
def test_raising_the_percent_only_adds_tenants(tenants, p1, p2) -> None:
    low, high = sorted((p1, p2))
    in_low = {t for t in tenants if in_canary(t, percent_threshold(low))}
    in_high = {t for t in tenants if in_canary(t, percent_threshold(high))}
    assert in_low <= in_high


def test_zero_and_hundred_percent_are_none_and_all() -> None:
    tenants = [f"sub_{n:012x}" for n in range(500)]
    assert not any(in_canary(t, percent_threshold(0)) for t in tenants)
    assert all(in_canary(t, percent_threshold(100)) for t in tenants)


def test_share_of_tenants_follows_the_percent() -> None:
    tenants = [f"sub_{n:012x}" for n in range(4000)]
    share = sum(in_canary(t, percent_threshold(25)) for t in tenants) / len(tenants)
    assert 0.22 < share < 0.28


async def _new_side(request: RecordedRequest) -> RecordedResponse:
    return RecordedResponse(
        status=200,
        headers=(("content-type", "application/json"),),
        body=b'{"status": true, "message": "ok", "data": {"origin": "new"}}',
    )


async def test_canary_serves_its_tenants_from_new_and_stays_sticky_when_raised(
    start_proxy, http
) -> None:
    handlers = {
        ("connectors", "GET /connectors/getConnectors"): _new_side,
        ("connectors", "GET /connectors/getConnector"): _new_side,
    }
    proxy = await start_proxy(
        rules=rules_data(connectors={"mode": "canary", "percent": 30}), handlers=handlers
    )
    tenants = [f"sub_{n:012x}" for n in range(40)]

    async def origins() -> dict[str, str]:
        seen = {}
        for tenant in tenants:
            resp = await http.get(
                proxy.url + "/connectors/getConnectors",
                headers={"Authorization": f"Bearer {token(tenant)}"},
            )
            seen[tenant] = resp.json()["data"]["origin"]
        return seen

    at_30 = await origins()
    expected_30 = {t for t in tenants if tenant_bucket(t) < 3000}
    assert {t for t, o in at_30.items() if o == "new"} == expected_30
    assert 0 < len(expected_30) < len(tenants)
    assert at_30 == await origins()  # sticky across requests

    write_rules(
        pathlib.Path(proxy.config.rules_path),
        rules_data(connectors={"mode": "canary", "percent": 60}),
    )
    for _ in range(100):
        if proxy.tables.current.entities["connectors"].percent == 60:
            break
        await asyncio.sleep(0.05)
    at_60 = await origins()
    new_at_30 = {t for t, o in at_30.items() if o == "new"}
    new_at_60 = {t for t, o in at_60.items() if o == "new"}
    assert new_at_30 < new_at_60  # only additions
    assert new_at_60 == {t for t in tenants if tenant_bucket(t) < 6000}

    # A request without a valid token is not a tenant: legacy answers it (and its 401).
    resp = await http.get(proxy.url + "/connectors/getConnectors")
    assert resp.json()["data"]["origin"] == "legacy"
    # Writes of canary tenants still go to legacy.
    in_canary_tenant = sorted(new_at_30)[0]
    resp = await http.post(
        proxy.url + "/connectors/addConnector",
        headers={"Authorization": f"Bearer {token(in_canary_tenant)}"},
        json={"connector_name": "x"},
    )
    assert resp.json()["data"]["origin"] == "legacy"
