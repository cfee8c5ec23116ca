"""Connector secrets: sealed with AES-256-GCM, bound to their row, rotatable."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from migrators.backfill import backfill_entity
from migrators.cli_secrets import rotate_secrets
from migrators.crypto import SecretBox, SecretError, associated_data, split_secrets
from migrators.entities.connectors import SPECS, open_secret
from migrators.registry import default_registry
from strangler.mongo import Database

CONNECTORS = SPECS[0]


def test_sealed_secret_opens_only_on_its_own_row(box: SecretBox) -> None:
    ciphertext, kid = box.seal(b"hunter2", associated_data("cn_000000000001"))
    assert b"hunter2" not in ciphertext
    assert box.open(ciphertext, kid, associated_data("cn_000000000001")) == b"hunter2"
    with pytest.raises(SecretError, match="another row"):
        box.open(ciphertext, kid, associated_data("cn_000000000002"))


def test_tampered_ciphertext_and_unknown_key_are_refused(box: SecretBox) -> None:
    bound = associated_data("cn_000000000001")
    ciphertext, kid = box.seal(b"hunter2", bound)
    flipped = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    with pytest.raises(SecretError):
        box.open(flipped, kid, bound)
    with pytest.raises(SecretError, match="does not hold"):
        box.open(ciphertext, "k-retired", bound)


def test_same_secret_same_row_seals_identically_distinct_secrets_do_not(box: SecretBox) -> None:
    bound = associated_data("cn_000000000001")
    assert box.seal(b"a", bound) == box.seal(b"a", bound)
    assert box.seal(b"a", bound)[0][1:13] != box.seal(b"b", bound)[0][1:13]  # nonces differ
    assert box.seal(b"a", bound) != box.seal(b"a", associated_data("cn_000000000002"))


def test_key_material_is_never_in_repr(box: SecretBox) -> None:
    assert "k1" in repr(box)
    assert all(base not in repr(box) for base in ("==", "key="))


def test_credential_keys_are_split_from_connection_detail() -> None:
    public, secret = split_secrets(
        {"host": "h", "port": 5432, "password": "p", "API_KEY": "a", "private_key": "k"}
    )
    assert public == {"host": "h", "port": 5432}
    assert secret == {"password": "p", "API_KEY": "a", "private_key": "k"}


async def test_rotate_reseals_under_the_new_key_resumably(
    legacy_db: Database, clean_pg: asyncpg.Connection, dirty_seed: object, key_factory: Any
) -> None:
    old = key_factory("old")
    both = key_factory("old", "new")
    both = type(both)(keys={"old": old.keys["old"], "new": both.keys["new"]}, active="new")
    for spec in default_registry():
        await backfill_entity(legacy_db, clean_pg, spec, SecretBox(old).context())
    originals = {
        d["connector_id"]: d["connection_detail"] async for d in legacy_db["connectors"].find({})
    }
    box = SecretBox(both)
    first = await rotate_secrets(clean_pg, box, batch_size=5, max_batches=1)  # interrupted
    assert first.rotated == 5 and first.remaining > 0
    rest = await rotate_secrets(clean_pg, box, batch_size=5)
    assert rest.remaining == 0 and first.rotated + rest.rotated == len(originals)
    assert (await rotate_secrets(clean_pg, box)).rotated == 0  # idempotent
    rows = await clean_pg.fetch("SELECT * FROM connectors")
    assert {r["secret_key_id"] for r in rows} == {"new"}
    # the old key is no longer needed: the new key alone opens every secret
    ctx = SecretBox(type(both)(keys={"new": both.keys["new"]}, active="new")).context()
    for row in rows:
        secret = open_secret(dict(row), ctx)
        assert secret["password"] == originals[row["connector_id"]]["password"]
