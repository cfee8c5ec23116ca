"""Properties of the comparator: it never says "equal" for JSON that differs, and never
finds a difference in JSON that is the same (whatever the key order or whitespace)."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shadow_compare.compare import compare_responses
from shadow_compare.model import Cause
from shadow_compare.rules import parse_rules
from strangler.exchange import RecordedResponse

RULES = parse_rules({}).for_entity("connectors")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**60), 2**60),
    # -0.0 is left out: it equals 0.0 as a number, and the comparator treats it so.
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != 0 or str(f) == "0.0"),
    st.text(max_size=8),
    st.sampled_from(["2024-01-01 10:00:00", "2024-01-01T10:00:00Z", "2024-01-01 15:30:00"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(["a", "b", "c", "connector_id", "d"]), children, max_size=4
        ),
    ),
    max_leaves=25,
)


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def shuffled_keys(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {k: shuffled_keys(value[k], rng) for k in keys}
    if isinstance(value, list):
        return [shuffled_keys(v, rng) for v in value]
    return value


def compare(legacy: Any, new: Any) -> Any:
    return compare_responses(
        RecordedResponse(200, body=json.dumps(legacy).encode()),
        RecordedResponse(200, body=json.dumps(new, indent=1).encode()),
        RULES,
        endpoint="GET /connectors/getConnectors",
    )


@settings(max_examples=300, deadline=None)
@given(json_values, json_values)
def test_equal_exactly_when_the_json_is_the_same(legacy: Any, new: Any) -> None:
    result = compare(legacy, new)
    assert not result.truncated
    assert result.equal == (canonical(legacy) == canonical(new))


@settings(max_examples=200, deadline=None)
@given(json_values, st.randoms())
def test_key_order_and_whitespace_never_make_a_difference(value: Any, rng: random.Random) -> None:
    assert compare(value, shuffled_keys(value, rng)).equal


def test_equal_item_shortcut_still_tells_one_from_one_point_zero_and_true() -> None:
    items = [{"connector_id": f"cn_{n}", "v": 1, "ok": True} for n in range(3)]
    changed = json.loads(json.dumps(items))
    changed[1]["v"] = 1.0
    changed[2]["ok"] = 1
    result = compare({"data": items}, {"data": changed})
    assert [(d.path, d.cause) for d in result.differences] == [
        ("$.data[connector_id=cn_1].v", Cause.NUMBER_PRECISION),
        ("$.data[connector_id=cn_2].ok", Cause.TYPE),
    ]
