"""Conditions that an expected divergence must prove for each exchange (``when:``).

A rule's path and cause say *where* the new side may differ on purpose; its predicate says
*whether this difference is that one*. A predicate returns None when its condition holds,
else why it does not: the difference then stays a regression, with the rule and the
reason named in its detail (a false "expected" would excuse a real regression, the worst
thing a comparator can say).

- ``contract-order``: a list whose order differs. The new side's list must be in the
  contract's order (rendered ``created_at`` descending, then the item id ascending) and
  legacy's must not be: legacy's dirt put items out of place, not a new-side regression.
- ``credential-masked``: a connection detail value the new side masks. The key must be a
  credential key (``migrators.crypto.SECRET_KEYS``), and the new value ``"********"``.
- ``ties-only``: entries without ids in another order. Both lists hold the same
  ``created_at`` at every position (only ties moved), the new side's newest first.
- ``version-bumped``: the new side answers legacy's version plus one.
- ``stale-version``: the new side refused an update as stale. The request's ``version`` is
  a whole number and legacy's answer shows a different stored one (legacy leaves
  ``version`` as it was on update, so its answer is the version the client should have
  sent), or the new side's refusal names a current version ahead of legacy's (its own
  updates bump it, and the reverse sync may not have carried that yet).
- ``version-not-whole``: the new side refused an update's ``version`` as malformed. The
  request's ``version`` is not a whole number (nor a string of one).
- ``only-removed``: a list shorter on the new side. The new list is legacy's with items
  removed (nothing added, nothing reordered), and every removed item is a workflow id;
  item by item, the same is judged on the whole lists.
- ``stamped-during``: a time a write set, different on the two sides. Both values are
  instants within the window of one write the replay sent to both sides (from the request
  sent to both answers in, a second either side: legacy renders times to the second):
  that write's own answer, or a read of the same tenant after it. Each side's clock
  stamped the same write. Live traffic has no such windows, so its times must agree.
- ``minted-id``: an id a write created, different on the two sides. The exchange is a
  write, the field an ``..._id`` (or ``UserId``), both values minted ids of one kind
  (``ws_`` and 12 hex
  digits) and neither named by the request (an id the request names is one it refers to).

Predicates see the difference, both whole lists where the difference is a list's
(``ListEvidence``), and the exchange (``Exchange``: the request's fields, both bodies).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from migrators.crypto import SECRET_KEYS
from shadow_compare.model import Difference

__all__ = ["PREDICATES", "Exchange", "ListEvidence", "contract_order", "credential_masked"]

MASK = "********"


@dataclass(frozen=True)
class ListEvidence:
    """Both whole lists at a place whose order differs, and the key naming their items."""

    legacy: Sequence[Any]
    new: Sequence[Any]
    key: str | None


@dataclass(frozen=True)
class Exchange:
    """The request's fields (query, then JSON body) and both parsed bodies (None: not JSON)."""

    request: dict[str, Any]
    legacy: Any
    new: Any
    method: str | None = None
    # The replay's writes to both sides that this exchange may show the stamps of (its own,
    # and its tenant's earlier ones): request sent, both answers in (UTC). Live: none.
    windows: tuple[tuple[datetime, datetime], ...] = ()


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _out_of_order(items: Sequence[Any], key: str) -> str | None:
    """Where ``items`` leave the contract's order (None: they keep it)."""
    previous: tuple[float, str] | None = None
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            return f"item {position} is not an object"
        instant = _instant(item.get("created_at"))
        if instant is None:
            return f"item {position} has no rendered created_at ({item.get('created_at')!r})"
        here = (-instant.timestamp(), str(item.get(key)))
        if previous is not None and here < previous:
            return f"item {position} ({key} {item.get(key)}) is out of the contract's order"
        previous = here
    return None


def contract_order(
    difference: Difference, evidence: ListEvidence | None, exchange: Exchange | None = None
) -> str | None:
    if evidence is None or evidence.key is None:
        return "the items have no id to order them by"
    wrong = _out_of_order(evidence.new, evidence.key)
    if wrong is not None:
        return f"the new side's order is not the contract's (created_at desc, then "\
               f"{evidence.key}): {wrong}"  # fmt: skip
    if _out_of_order(evidence.legacy, evidence.key) is None:
        return "legacy's order is the contract's too: no dirty date explains the difference"
    return None


_LAST_NAME = re.compile(r"""(?:\.|\[['"]?)([^.\[\]'"]+)['"]?\]?$""")


def _field_name(path: str) -> str:
    """The last key of a difference's path ("" for none)."""
    found = _LAST_NAME.search(path)
    return found.group(1) if found else ""


def credential_masked(
    difference: Difference, evidence: ListEvidence | None, exchange: Exchange | None = None
) -> str | None:
    name = _field_name(difference.path)
    if name.lower() not in SECRET_KEYS:
        return f"{name or difference.path!r} is not a credential key"
    if difference.new != MASK:
        return f"the new side shows {difference.new!r}, not the mask"
    return None


def ties_only(
    difference: Difference, evidence: ListEvidence | None, exchange: Exchange | None = None
) -> str | None:
    """Two orders of the same items that differ only among entries of one created_at, the
    new side's newest first: what a tie broken another way looks like."""
    if evidence is None:
        return "no list to check"
    stamps = [_stamp(item) for item in evidence.legacy]
    if stamps != [_stamp(item) for item in evidence.new]:
        return "the lists differ beyond entries of equal created_at"
    instants = [i for i in (_instant(stamp) for stamp in stamps) if i is not None]
    if len(instants) != len(stamps):
        return "an entry has no rendered created_at"
    if any(a < b for a, b in itertools.pairwise(instants)):
        return "the new side's entries are not newest first"
    return None


def _stamp(item: Any) -> Any:
    return item.get("created_at") if isinstance(item, dict) else None


def version_bumped(
    difference: Difference, evidence: ListEvidence | None, exchange: Exchange | None = None
) -> str | None:
    """The new side answers the stored version plus one, legacy the version unchanged."""
    legacy, new = difference.legacy, difference.new
    if not (isinstance(legacy, int) and isinstance(new, int)) or isinstance(legacy, bool):
        return f"versions {legacy!r} and {new!r} are not both whole numbers"
    if new != legacy + 1:
        return f"the new side answers version {new}, not legacy's {legacy} + 1"
    return None


def _whole(value: Any) -> int | None:
    """``value`` as the new side reads a version: a whole number, or a string of one."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _data_field(body: Any, name: str) -> Any:
    data = body.get("data") if isinstance(body, dict) else None
    return data.get(name) if isinstance(data, dict) else None


_CURRENT = re.compile(r"is not the current version (\d+)")


def stale_version(
    difference: Difference, evidence: ListEvidence | None, exchange: Exchange | None = None
) -> str | None:
    """A 409 for a version legacy's own answer shows to be stale."""
    if exchange is None or "version" not in exchange.request:
        return "the request sent no version"
    sent = _whole(exchange.request["version"])
    if sent is None:
        return f"the request's version {exchange.request['version']!r} is not a whole number"
    stored = _data_field(exchange.legacy, "version")
    if not isinstance(stored, int) or isinstance(stored, bool):
        return "legacy's answer shows no stored version to judge the request's against"
    if stored != sent:
        return None  # stale by legacy's own account
    # The version legacy stores, and the new side names another as its current: the new
    # side's own updates bump the version (update-bumps-version), so it may be ahead of a
    # legacy the reverse sync has not reached. Behind legacy, it is wrong, not ahead.
    message = exchange.new.get("message") if isinstance(exchange.new, dict) else None
    found = _CURRENT.search(message) if isinstance(message, str) else None
    current = int(found.group(1)) if found else None
    if current is not None and current > stored:
        return None
    named = "names no current version" if current is None else f"names {current} as current"
    return (f"the request sent version {sent}, the one legacy stores, and the new side "
            f"{named}: nothing was stale")  # fmt: skip


def version_not_whole(
    difference: Difference, evidence: ListEvidence | None, exchange: Exchange | None = None
) -> str | None:
    """A 400 for a version that is not a whole number."""
    if exchange is None or "version" not in exchange.request:
        return "the request sent no version"
    value = exchange.request["version"]
    if value is None or _whole(value) is not None:
        return f"the request's version {value!r} is a whole number (or none): no cause for 400"
    return None


def only_removed(
    difference: Difference, evidence: ListEvidence | None, exchange: Exchange | None = None
) -> str | None:
    """The new list is legacy's with workflow ids taken out, nothing else changed."""
    if evidence is None:
        return "no list to check"
    legacy, new = list(evidence.legacy), list(evidence.new)
    if len(new) >= len(legacy):
        return f"the new side's list is not shorter ({len(new)} items, legacy {len(legacy)})"
    removed: list[Any] = []
    position = 0
    for item in legacy:
        if position < len(new) and item == new[position]:
            position += 1
        else:
            removed.append(item)
    if position != len(new):
        return "the new side's list is not legacy's with items removed (added or reordered)"
    strays = [item for item in removed if not (isinstance(item, str) and item.startswith("wf_"))]
    if strays:
        return f"removed items that are not workflow ids: {strays[:3]!r}"
    return None


# Legacy renders times to the second: a stamp of this exchange may read up to a second early.
_STAMP_SLACK = timedelta(seconds=1)


def stamped_during(
    difference: Difference, evidence: ListEvidence | None, exchange: Exchange | None = None
) -> str | None:
    """Both sides stamped one write the replay sent to both, each with its own clock."""
    if exchange is None or not exchange.windows:
        return "no write sent to both sides could have stamped it"
    legacy, new = _instant(difference.legacy), _instant(difference.new)
    if legacy is None or new is None:
        return f"{difference.legacy!r} and {difference.new!r} are not both times"
    for began, ended in exchange.windows:
        low, high = began - _STAMP_SLACK, ended + _STAMP_SLACK
        if low <= legacy <= high and low <= new <= high:
            return None
    return "the two times were not stamped during one write sent to both sides"


_MINTED = re.compile(r"^([a-z]{2,4})_[0-9a-f]{12}$")


def minted_id(
    difference: Difference, evidence: ListEvidence | None, exchange: Exchange | None = None
) -> str | None:
    """Both sides gave the thing a write created an id of their own."""
    if exchange is None or exchange.method in (None, "GET"):
        return "only a write sent to both sides mints on both"
    name = _field_name(difference.path)
    if not (name.endswith("_id") or name == "UserId"):  # LEGACY.md: a user's id is UserId
        return f"{name or difference.path!r} is not an id field"
    shapes = [_MINTED.match(v) if isinstance(v, str) else None
              for v in (difference.legacy, difference.new)]  # fmt: skip
    if not all(shapes):
        return "the values are not both minted ids"
    if shapes[0].group(1) != shapes[1].group(1):  # type: ignore[union-attr]
        return "the ids are of different kinds"
    named = {v for v in exchange.request.values() if isinstance(v, str)}
    if difference.legacy in named or difference.new in named:
        return "the request names that id: it refers to something, it mints nothing"
    return None


Predicate = Callable[[Difference, ListEvidence | None, Exchange | None], str | None]
PREDICATES: dict[str, Predicate] = {
    "contract-order": contract_order,
    "credential-masked": credential_masked,
    "ties-only": ties_only,
    "version-bumped": version_bumped,
    "stale-version": stale_version,
    "version-not-whole": version_not_whole,
    "only-removed": only_removed,
    "stamped-during": stamped_during,
    "minted-id": minted_id,
}
