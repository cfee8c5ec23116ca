"""Hypothesis strategies for workspace documents as production holds them: dirty values,
odd shapes (child arrays missing, null or not lists), repeated names, broken diagrams."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from hypothesis import strategies as st

MISSING = object()
SUBSCRIPTION = "sub_0000000000aa"

moments = st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2037, 1, 1)).map(
    lambda m: m.replace(microsecond=m.microsecond // 1000 * 1000)
)
dirty_datetimes = st.one_of(
    moments,
    moments.map(lambda m: m.strftime("%Y-%m-%d %H:%M:%S")),
    moments.map(lambda m: int((m - datetime(1970, 1, 1)) / timedelta(milliseconds=1))),
    st.sampled_from([None, "", "not a date", MISSING]),
)
d_flags = st.sampled_from([True, False, "true", "false", None, MISSING])
names = st.one_of(st.sampled_from(["Daily", "Hourly", "Load"]), st.text(max_size=6), st.none())
texts = st.one_of(st.text(max_size=8), st.none(), st.just(MISSING), st.integers(0, 9))
users = st.sampled_from(["usr_0000000000aa", "usr_gone00000000", None, MISSING])
diagrams = st.one_of(
    st.builds(
        lambda n: json.dumps({"nodes": [{"id": f"n{i}", "x": i} for i in range(n)], "edges": []}),
        st.integers(0, 3),
    ),
    st.sampled_from(['{"nodes": [', "", "null", '{ "b":1,  "a" : [1, 2.5] }', None, MISSING]),
    st.integers(0, 3),
)
extra_fields = st.dictionaries(
    st.sampled_from(["__v", "migratedFrom", "isSample"]),
    st.one_of(st.integers(0, 9), st.text(max_size=4), st.booleans(), moments),
    max_size=2,
)


def _assemble(fields: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    document = {k: v for k, v in fields.items() if v is not MISSING}
    document.update(extra)
    return document


def _children(child: st.SearchStrategy[Any], max_size: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(child, max_size=max_size),
        st.sampled_from([None, MISSING, "oops"]),
    )


summaries = st.builds(
    lambda wf, name, flag, diagram, extra: _assemble(
        {"workflow_id": wf, "workflow_name": name, "d_flag": flag, "workFlowDiagram": diagram},
        extra,
    ),
    st.one_of(st.sampled_from(["wf_000000000001", "wf_000000000002"]), st.none(), texts),
    names,
    d_flags,
    diagrams,
    extra_fields,
)
dependencies = st.one_of(
    st.lists(st.sampled_from(["wf_000000000001", "wf_000000000002", "wf_gone", 7]), max_size=4),
    st.sampled_from([None, MISSING, "wf_000000000001"]),
)
jobs = st.builds(
    lambda name, env, created, by, flag, reason, deps, flows, extra: _assemble(
        {
            "job_name": name,
            "description": "job",
            "environment": env,
            "created_by": by,
            "created_at": created,
            "d_flag": flag,
            "reason_to_delete": reason,
            "workflow_dependency": deps,
            "workflows": flows,
        },
        extra,
    ),
    names,
    texts,
    dirty_datetimes,
    users,
    d_flags,
    texts,
    dependencies,
    _children(summaries, 3),
    extra_fields,
)
folders = st.builds(
    lambda name, created, by, flag, children, extra: _assemble(
        {
            "folder_name": name,
            "description": None,
            "created_by": by,
            "created_at": created,
            "d_flag": flag,
            "jobs": children,
        },
        extra,
    ),
    names,
    dirty_datetimes,
    users,
    d_flags,
    _children(jobs, 3),
    extra_fields,
)


def _number(document: dict[str, Any], workspace: str) -> dict[str, Any]:
    """Give every folder and job a distinct id, as legacy mints them."""
    counter = 0
    for folder in document.get("folders") if isinstance(document.get("folders"), list) else []:
        counter += 1
        folder["folder_id"] = f"fd_{workspace[3:9]}{counter:06x}"
        listed = folder.get("jobs")
        for job in listed if isinstance(listed, list) else []:
            counter += 1
            job["job_id"] = f"jb_{workspace[3:9]}{counter:06x}"
    return document


workspaces = st.builds(
    lambda n, name, created, updated, flag, children, extra: _number(
        _assemble(
            {
                "workspace_id": f"ws_{n:012x}",
                "workspace_name": name,
                "description": "d",
                "subscription_id": SUBSCRIPTION,
                "owner_id": "usr_0000000000aa",
                "created_by": "usr_0000000000aa",
                "created_at": created,
                "updated_by": MISSING,
                "updated_at": updated,
                "d_flag": flag,
                "reason_to_delete": None,
                "folders": children,
            },
            extra,
        ),
        f"ws_{n:012x}",
    ),
    st.integers(0, 2**40),
    names,
    dirty_datetimes,
    dirty_datetimes,
    d_flags,
    _children(folders, 3),
    extra_fields,
)
