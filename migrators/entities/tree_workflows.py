"""``workflow`` documents -> ``workflows`` rows, and back.

The workflow document is authoritative for the definition (everything but its place
in the tree, docs/tree.md). ``workFlowDiagram`` is kept exactly as stored in
``workflow_diagram_text`` (getWorkflow answers the stored string, byte for byte) and
parsed beside it into ``workflow_diagram`` (jsonb) when it is JSON that jsonb can hold;
an empty or unparseable string is kept as found and reported. A string holding a NUL
character cannot be stored at all: the document is quarantined.

``version`` stored as a string is read as the integer; one that is no positive
integer is kept as found in ``extra``. ``parameters``, ``notification`` and ``tags``
go to jsonb as found. ``source_connectorid``/``target_connectorid`` are kept as data
(no foreign key) and a connector that does not exist is reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from migrators.entities.common import (
    UNREADABLE,
    from_json,
    json_value,
    normalize_fields,
    read_fields,
    to_json,
    write_fields,
)
from migrators.entities.tree_fields import (
    WORKFLOW_FIELDS,
    WORKFLOW_JSON_FIELDS,
    contains_nul,
    parse_diagram,
    read_int,
    read_json,
    unreadable,
    write_json,
)
from migrators.spec import Document, Mapped, MappingContext, Note, Quarantined, Row
from schema.keys import row_key

__all__ = ["diagram_columns", "map_workflow", "normalize_workflow", "workflow_document"]

_HANDLED = (*WORKFLOW_JSON_FIELDS, "version")


def diagram_columns(text: object) -> tuple[dict[str, object], Note | None]:
    """The two diagram columns for a ``workFlowDiagram`` value (the new side uses it too)."""
    parsed, note = parse_diagram(text)
    return {"workflow_diagram_text": text, "workflow_diagram": parsed}, note


def map_workflow(document: Document, ctx: MappingContext) -> Mapped | Quarantined:
    workflow_id = document.get("workflow_id")
    if not isinstance(workflow_id, str) or not workflow_id.strip():
        return Quarantined("missing_id", f"workflow_id is {workflow_id!r}")
    subscription_id = document.get("subscription_id")
    if not isinstance(subscription_id, str) or not subscription_id.strip():
        return Quarantined("missing_subscription", f"subscription_id is {subscription_id!r}")
    columns, extra, notes = read_fields(document, WORKFLOW_FIELDS, handled=_HANDLED)
    parsed, note = parse_diagram(columns["workflow_diagram_text"])
    if note is not None:
        notes.append(note)
    for name, column in WORKFLOW_JSON_FIELDS.items():
        columns[column] = read_json(document.get(name))
    version, readable = read_int(document.get("version"), minimum=1)
    if not readable:
        unreadable(extra, "version", document.get("version"))
        notes.append(Note("unreadable_value", f"version kept as found: {document['version']!r}"))
    row: Row = {
        "id": row_key("workflow", workflow_id),
        **columns,
        "workflow_diagram": parsed,
        "version": version,
        "extra": extra,
    }
    # the parsed diagram needs no look: parse_diagram refused any NUL already
    bad = contains_nul([{k: v for k, v in row.items() if k != "workflow_diagram"}])
    if bad is not None:
        return Quarantined("nul_character", f"{bad} holds a NUL character PostgreSQL cannot store")
    return Mapped({"workflows": [row]}, tuple(notes))


def workflow_document(rows: Mapping[str, Sequence[Row]], ctx: MappingContext) -> Document:
    row = rows["workflows"][0]
    extra = json_value(row.get("extra")) or {}
    document = write_fields(row, WORKFLOW_FIELDS, extra)
    for name, column in WORKFLOW_JSON_FIELDS.items():
        document[name] = write_json(row.get(column))
    kept = extra.get(UNREADABLE, {})
    document["version"] = from_json(kept["version"]) if "version" in kept else row.get("version")
    return document


def normalize_workflow(document: Document) -> Document:
    normalized = normalize_fields(document, WORKFLOW_FIELDS, handled=_HANDLED)
    for name in WORKFLOW_JSON_FIELDS:
        value = document.get(name)
        normalized[name] = None if value is None else from_json(to_json(value))
    version, readable = read_int(document.get("version"), minimum=1)
    normalized["version"] = version if readable else from_json(to_json(document.get("version")))
    return normalized
