"""The dirt of production data (LEGACY.md section 2), injected at a rate and counted.

Every kind is named in :data:`DIRT_KINDS` and described in docs/seed_data.md.
Field-level kinds are applied here to one document at a time; structural kinds
(duplicate names, dangling references, broken diagrams, orphans, stale
summaries, oversized workspaces) are decided by the generator through
:meth:`Dirt.hit` and counted the same way.

With a rate above zero each kind is injected at least once: the first document
where a kind can apply always gets it, later ones with probability ``rate``.
With a rate of zero nothing is drawn and nothing is injected.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from legacy_emulator.generator_scales import IdMint

__all__ = ["DIRT_KINDS", "Dirt", "FieldSpec"]

DIRT_KINDS: tuple[str, ...] = (
    "datetime_as_string",
    "datetime_as_epoch_ms",
    "optional_field_missing",
    "optional_field_null",
    "d_flag_missing",
    "d_flag_as_string",
    "number_as_string",
    "duplicate_connector_name",
    "duplicate_workspace_name",
    "duplicate_workflow_name",
    "dangling_dependency",
    "dangling_connector",
    "dangling_created_by",
    "diagram_invalid_json",
    "diagram_empty",
    "workflow_missing_from_tree",
    "tree_entry_without_workflow",
    "stale_summary",
    "oversized_workspace",
    "unknown_field",
)

# Old documents hold datetimes written by several generations of the backend and
# by hand-made imports; each of these is read by strangler.contract.
_DATETIME_TEXT: tuple[Callable[[datetime], str], ...] = (
    lambda moment: moment.strftime("%Y-%m-%d %H:%M:%S"),
    lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
    lambda moment: moment.strftime("%d/%m/%Y %H:%M"),
    lambda moment: moment.strftime("%a %b %d %Y %H:%M:%S"),
    lambda moment: moment.strftime("%m/%d/%Y %I:%M:%S %p"),
    lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
)

_EPOCH = datetime(1970, 1, 1)

_EXTRA_FIELDS: tuple[tuple[str, Any], ...] = (
    ("__v", 0),
    ("migratedFrom", "uzo-v1"),
    ("tmp_fix_2023", True),
    ("legacyNotes", "imported by hand"),
    ("isSample", False),
)


@dataclass(frozen=True)
class FieldSpec:
    """Which fields of a collection each field-level kind may touch.

    ``numbers`` are dotted paths (``connection_detail.port``).
    """

    datetimes: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()
    d_flag: bool = False
    created_by: bool = False


class Dirt:
    def __init__(self, rate: float, rng: random.Random, mint: IdMint) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"dirt rate {rate} is not between 0 and 1")
        self.rate = rate
        self.rng = rng
        self.mint = mint
        self.counts: dict[str, int] = dict.fromkeys(DIRT_KINDS, 0)

    @property
    def active(self) -> bool:
        return self.rate > 0.0

    def hit(self, kind: str) -> bool:
        """Whether to inject ``kind`` here; the caller must inject it when told to."""
        if self.rate <= 0.0:
            return False
        if self.counts[kind] == 0 or self.rng.random() < self.rate:
            self.counts[kind] += 1
            return True
        return False

    def apply(self, document: dict[str, Any], spec: FieldSpec) -> None:
        """Inject the field-level kinds into one document, in place."""
        if self.rate <= 0.0:
            return
        rng = self.rng
        # optional fields first, so that every later change stays visible in the document
        present = [name for name in spec.optional if name in document]
        if present and self.hit("optional_field_missing"):
            del document[rng.choice(present)]
        filled = [name for name in spec.optional if document.get(name) is not None]
        if filled and self.hit("optional_field_null"):
            document[rng.choice(filled)] = None
        for name in spec.datetimes:
            value = document.get(name)
            if not isinstance(value, datetime):
                continue
            if self.hit("datetime_as_string"):
                document[name] = rng.choice(_DATETIME_TEXT)(value)
            elif self.hit("datetime_as_epoch_ms"):
                document[name] = int((value - _EPOCH).total_seconds() * 1000)
        if spec.d_flag and "d_flag" in document:
            flag = document["d_flag"]
            # only live items lose the flag: a missing flag means "not deleted"
            if flag is False and self.hit("d_flag_missing"):
                del document["d_flag"]
            elif self.hit("d_flag_as_string"):
                document["d_flag"] = "true" if flag is True else "false"
        numbers = [path for path in spec.numbers if isinstance(_get(document, path), int)]
        if numbers and self.hit("number_as_string"):
            path = rng.choice(numbers)
            _set(document, path, str(_get(document, path)))
        if spec.created_by and document.get("created_by") and self.hit("dangling_created_by"):
            document["created_by"] = self.mint("usr_")
        if self.hit("unknown_field"):
            name, value = rng.choice(_EXTRA_FIELDS)
            document[name] = value


def _get(document: dict[str, Any], path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    target = document
    for part in parents:
        target = target[part]
    target[last] = value
