"""Hypothesis strategies for legacy documents with production's dirt (LEGACY.md section 2)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from hypothesis import strategies as st

MISSING = object()

moments = st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2037, 1, 1)).map(
    lambda m: m.replace(microsecond=m.microsecond // 1000 * 1000)
)


def _text_forms(moment: datetime) -> list[Any]:
    return [
        moment,  # a BSON date
        moment.strftime("%Y-%m-%d %H:%M:%S"),
        moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
        moment.strftime("%d/%m/%Y %H:%M"),
        moment.strftime("%a %b %d %Y %H:%M:%S"),
        int((moment - datetime(1970, 1, 1)) / timedelta(milliseconds=1)),  # epoch ms
        str(int((moment - datetime(1970, 1, 1)) / timedelta(milliseconds=1))),
    ]


dirty_datetimes = st.one_of(
    moments.flatmap(lambda m: st.sampled_from(_text_forms(m))),
    st.sampled_from([None, "", "not a date", "31/31/2020 99:99", MISSING]),
)
d_flags = st.sampled_from([True, False, "true", "false", "True", None, MISSING])
bools = st.sampled_from([True, False, "true", "false", None, MISSING, "yes", 1])
texts = st.one_of(st.text(max_size=12), st.none(), st.just(MISSING), st.integers(0, 99))
ids = st.text("0123456789abcdef", min_size=12, max_size=12)
extra_values = st.one_of(
    st.integers(-(2**40), 2**40),
    st.text(max_size=8),
    st.booleans(),
    st.none(),
    moments,
    st.builds(ObjectId),
    st.lists(st.integers(0, 9), max_size=3),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 9), max_size=2),
)
extra_fields = st.dictionaries(
    st.sampled_from(["__v", "migratedFrom", "tmp_fix_2023", "legacyNotes", "isSample"]),
    extra_values,
    max_size=3,
)


def assemble(fields: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A document from drawn fields: MISSING ones left out, unknown fields added."""
    document = {k: v for k, v in fields.items() if v is not MISSING}
    document.update(extra)
    document["_id"] = ObjectId()
    return document
