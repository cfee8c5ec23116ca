"""The emulator's reads and writes that several entities share.

Only the methods of :class:`strangler.mongo.Collection` are used, and no
index is assumed: legacy has none beyond ``_id``, so every list reads the
tenant's documents and orders them in the process, which is also the only way
to order ``created_at`` values stored in several formats.

Cursors are read with ``to_list``: the in-process store answers a whole list
in one pass but does much more work per ``async for`` step, and the lists read
here are small (projected, or one page).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from legacy_emulator.http import Call, not_found
from legacy_emulator.render import ACTIVITY, render, sort_key
from strangler.contract import Page, is_deleted
from strangler.mongo import Collection

__all__ = [
    "find_visible",
    "name_taken",
    "page_of",
    "record_activity",
    "save_workspace",
]

Document = dict[str, Any]


async def page_of(
    collection: Collection,
    query: Mapping[str, Any],
    *,
    id_field: str,
    page: Page,
    keep: Callable[[Document], bool] | None = None,
    fields: Iterable[str] = (),
    order: Callable[[Document], Any] | None = None,
    leave_out: Iterable[str] = (),
) -> tuple[list[Document], int]:
    """One page of the visible matching documents, in list order, and the count of all.

    The first pass reads only what ordering and filtering need (``fields``
    names what ``keep`` and ``order`` look at); the second reads the page's
    documents, without the ``leave_out`` fields (big ones the list omits).
    """
    projection = dict.fromkeys(("_id", id_field, "created_at", "d_flag", *fields), 1)
    by_order = order or (lambda document: sort_key(document, id_field))
    ordered: list[tuple[Any, Any]] = []
    for document in await collection.find(dict(query), projection).to_list(None):
        if is_deleted(document.get("d_flag")):
            continue
        if keep is not None and not keep(document):
            continue
        ordered.append((by_order(document), document["_id"]))
    ordered.sort(key=lambda entry: entry[0])
    chosen = [key for _, key in ordered[page.skip : page.skip + page.per_page]]
    if not chosen:
        return [], len(ordered)
    omitted = dict.fromkeys(leave_out, 0) or None
    documents = await collection.find({"_id": {"$in": chosen}}, omitted).to_list(None)
    found = {document["_id"]: document for document in documents}
    return [found[key] for key in chosen if key in found], len(ordered)


async def find_visible(
    collection: Collection, id_field: str, value: str, subscription_id: str, entity: str
) -> Document:
    """The caller's document with that id; another tenant's or a soft-deleted one is a 404."""
    query = {id_field: value, "subscription_id": subscription_id}
    for document in await collection.find(query).to_list(None):
        if not is_deleted(document.get("d_flag")):
            return document
    raise not_found(entity)


async def name_taken(
    collection: Collection,
    query: Mapping[str, Any],
    *,
    id_field: str,
    except_id: str | None = None,
) -> bool:
    """Whether a visible document other than ``except_id`` matches (the duplicate-name check)."""
    projection = {"_id": 1, id_field: 1, "d_flag": 1}
    for document in await collection.find(dict(query), projection).to_list(None):
        if is_deleted(document.get("d_flag")):
            continue
        if except_id is None or document.get(id_field) != except_id:
            return True
    return False


async def save_workspace(call: Call, workspace: Document) -> None:
    """Write the whole workspace document back, tree and all (legacy's only way to edit it).

    Whatever another request changed in it since this one read it is lost.
    """
    await call.emulator.workspaces.replace_one({"_id": workspace["_id"]}, workspace)


async def record_activity(
    call: Call,
    action: str,
    object_type: str,
    object_id: str,
    object_name: Any,
    *,
    previous: Any = None,
    current: Any = None,
) -> None:
    """Append the userActivity entry of a successful write (its own insert) and announce it."""
    entry: Document = {
        "subscription_id": call.caller.subscription_id,
        "UserId": call.caller.user_id,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "object_name": object_name,
        "ip_address": call.ip_address,
        "user_agent": call.user_agent,
        "previous_data": previous,
        "current_data": current,
        "created_at": call.emulator.clock(),
    }
    await call.emulator.activity.insert_one(entry)
    call.emulator.hub.publish_activity(call.caller.subscription_id, render(entry, ACTIVITY))
