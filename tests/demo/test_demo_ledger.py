"""The demo's lost-write rule: an acknowledged write counts as lost unless BOTH stores hold
its last acknowledged state."""

from __future__ import annotations

from strangler.demo_check import ledger_differences
from strangler.demo_traffic import Ledger


def _ledger() -> Ledger:
    ledger = Ledger(acknowledged=3)
    ledger.connectors["cn_1"] = {"description": "edited 2", "deleted": False,
                                 "test_status": "success", "tenant": "sub_1",
                                 "connector_id": "cn_1"}  # fmt: skip
    ledger.jobs["jb_1"] = {"workspace_id": "ws_1", "folder_id": "fd_1", "job_name": "j",
                           "deleted": True}  # fmt: skip
    return ledger


def _store(description: str, job_deleted: bool) -> dict:
    return {
        "connector": {
            "cn_1": {"description": description, "deleted": False, "test_status": "success"}
        },
        "job": {"jb_1": {"job_name": "j", "deleted": job_deleted}},
    }


def test_both_stores_holding_the_last_acknowledged_state_lose_nothing() -> None:
    stores = {"MongoDB": _store("edited 2", True), "PostgreSQL": _store("edited 2", True)}
    assert ledger_differences(_ledger(), stores) == []


def test_an_older_value_or_an_undone_delete_in_either_store_is_a_lost_write() -> None:
    stores = {"MongoDB": _store("edited 2", False), "PostgreSQL": _store("edited 1", True)}
    lost = ledger_differences(_ledger(), stores)
    assert len(lost) == 2
    assert any(line.startswith("connector cn_1") and "PostgreSQL" in line for line in lost)
    assert any(line.startswith("job jb_1") and "MongoDB" in line for line in lost)


def test_a_write_missing_from_a_store_is_lost() -> None:
    stores = {"MongoDB": _store("edited 2", True), "PostgreSQL": {"connector": {}, "job": {}}}
    assert len(ledger_differences(_ledger(), stores)) == 2
