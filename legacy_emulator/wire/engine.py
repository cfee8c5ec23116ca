"""The wire server's engine: MongoDB commands answered over a mongomock store.

One method per command PyMongo sends for what this project does (the handshake, sessions,
find/getMore/killCursors, insert/update/delete with upserts and bulk, findAndModify,
aggregate, count, distinct, indexes, collections, drop), each taking the command document
and returning the reply document as MongoDB would. Every write is also appended to the
:class:`~legacy_emulator.wire.changes.ChangeLog`, from which ``$changeStream`` cursors read.

mongomock is not thread safe: every access to it runs under one lock. A change stream's
awaitData ``getMore`` waits outside that lock, so a waiting stream never stalls the
server's other clients.
"""

from __future__ import annotations

import copy
import itertools
import os
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import mongomock
from bson import ObjectId
from mongomock import filtering
from pymongo.errors import WriteError

from legacy_emulator.wire.changes import (
    DEFAULT_HISTORY,
    ChangeLog,
    CommandError,
    StreamCursor,
    update_description,
)

__all__ = ["MAX_WIRE_VERSION", "CommandEngine", "CommandError"]

MAX_WIRE_VERSION = 21  # MongoDB 7.0
DEFAULT_BATCH = 101
_MAX_AWAIT_SECONDS = 10.0

Document = dict[str, Any]


def _plain(value: Any) -> Any:
    """Request documents arrive as OrderedDicts; mongomock and replies want plain dicts."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _keys(spec: Any) -> list[tuple[str, Any]]:
    return list(spec.items()) if isinstance(spec, Mapping) else list(spec or ())


def _is_operator_update(update: Any) -> bool:
    return isinstance(update, Mapping) and any(str(k).startswith("$") for k in update)


class _Cursor:
    def __init__(self, ns: str, documents: list[Document]) -> None:
        self.ns = ns
        self.documents = documents
        self.offset = 0

    def take(self, count: int) -> list[Document]:
        batch = self.documents[self.offset : self.offset + count]
        self.offset += len(batch)
        return batch

    @property
    def exhausted(self) -> bool:
        return self.offset >= len(self.documents)


class CommandEngine:
    def __init__(self, *, history: int = DEFAULT_HISTORY) -> None:
        from strangler.mongo import patch_memory_store

        patch_memory_store()  # the in-process store's faster reads, for its engine too
        self.client: mongomock.MongoClient = mongomock.MongoClient()
        self.lock = threading.RLock()
        self.log = ChangeLog(history)
        self._cursors: dict[int, _Cursor | StreamCursor] = {}
        self._cursor_ids = itertools.count(1_000_001)
        self._connection_ids = itertools.count(1)
        self._started = datetime.now(UTC)
        self._commands: dict[str, Callable[[str, Document], Document]] = {
            "hello": self._hello,
            "ismaster": self._hello,
            "isMaster": self._hello,
            "ping": lambda db, cmd: {"ok": 1},
            "buildInfo": self._build_info,
            "buildinfo": self._build_info,
            "getParameter": lambda db, cmd: {"ok": 1},
            "getLog": lambda db, cmd: {"totalLinesWritten": 0, "log": [], "ok": 1},
            "endSessions": lambda db, cmd: {"ok": 1},
            "killSessions": lambda db, cmd: {"ok": 1},
            "serverStatus": self._server_status,
            "listDatabases": self._list_databases,
            "listCollections": self._list_collections,
            "create": self._create,
            "drop": self._drop,
            "dropDatabase": self._drop_database,
            "insert": self._insert,
            "update": self._update,
            "delete": self._delete,
            "findAndModify": self._find_and_modify,
            "findandmodify": self._find_and_modify,
            "find": self._find,
            "getMore": self._get_more,
            "killCursors": self._kill_cursors,
            "aggregate": self._aggregate,
            "count": self._count,
            "distinct": self._distinct,
            "createIndexes": self._create_indexes,
            "listIndexes": self._list_indexes,
            "dropIndexes": self._drop_indexes,
        }

    # --- entry point ----------------------------------------------------------------------

    def handle(self, db: str, command: Mapping[str, Any]) -> Document:
        """The reply to one command (never raises: failures are ``ok: 0`` replies)."""
        name = next(iter(command), "")
        handler = self._commands.get(name)
        if handler is None:
            return CommandError(59, "CommandNotFound", f"no such command: '{name}'").reply()
        try:
            if name == "getMore":  # may wait for change events: not under the lock
                return handler(db, _plain(command))
            with self.lock:
                return handler(db, _plain(command))
        except CommandError as exc:
            return exc.reply()
        except mongomock.OperationFailure as exc:
            code = exc.code or 2
            return {"ok": 0, "errmsg": str(exc), "code": code, "codeName": "BadValue"}
        except (NotImplementedError, TypeError, ValueError, KeyError) as exc:
            return {
                "ok": 0,
                "errmsg": f"{type(exc).__name__}: {exc}",
                "code": 2,
                "codeName": "BadValue",
            }

    def database(self, name: str) -> Any:
        return self.client[name]

    # --- handshake and server -----------------------------------------------------------------

    def _hello(self, db: str, cmd: Document) -> Document:
        return {
            "helloOk": True,
            "ismaster": True,
            "isWritablePrimary": True,
            "maxBsonObjectSize": 16 * 1024 * 1024,
            "maxMessageSizeBytes": 48_000_000,
            "maxWriteBatchSize": 100_000,
            "localTime": datetime.now(UTC).replace(tzinfo=None),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": next(self._connection_ids),
            "minWireVersion": 0,
            "maxWireVersion": MAX_WIRE_VERSION,
            "readOnly": False,
            "ok": 1,
        }

    def _build_info(self, db: str, cmd: Document) -> Document:
        return {
            "version": "7.0.0-strangler-test-double",
            "versionArray": [7, 0, 0, 0],
            "gitVersion": "strangler",
            "bits": 64,
            "maxBsonObjectSize": 16 * 1024 * 1024,
            "ok": 1,
        }

    def _server_status(self, db: str, cmd: Document) -> Document:
        uptime = (datetime.now(UTC) - self._started).total_seconds()
        return {
            "host": os.uname().nodename,
            "uptime": uptime,
            "process": "strangler-mongod",
            "ok": 1,
        }

    # --- databases and collections ------------------------------------------------------------

    def _list_databases(self, db: str, cmd: Document) -> Document:
        names = self.client.list_database_names()
        return {
            "databases": [{"name": n, "sizeOnDisk": 0, "empty": False} for n in names],
            "totalSize": 0,
            "ok": 1,
        }

    def _list_collections(self, db: str, cmd: Document) -> Document:
        names = self.database(db).list_collection_names()
        entries = [
            {"name": n, "type": "collection", "options": {}, "info": {"readOnly": False}}
            for n in sorted(names)
        ]
        wanted = cmd.get("filter") or {}
        entries = [e for e in entries if filtering.filter_applies(wanted, e)]
        return self._first_batch(f"{db}.$cmd.listCollections", entries, cmd)

    def _create(self, db: str, cmd: Document) -> Document:
        name = cmd["create"]
        if name in self.database(db).list_collection_names():
            raise CommandError(48, "NamespaceExists", f"Collection {db}.{name} already exists.")
        self.database(db).create_collection(name)
        return {"ok": 1}

    def _drop(self, db: str, cmd: Document) -> Document:
        name = cmd["drop"]
        if name not in self.database(db).list_collection_names():
            raise CommandError(26, "NamespaceNotFound", "ns not found")
        self.database(db).drop_collection(name)
        self.log.append("drop", db, name, None, None, None)
        return {"ns": f"{db}.{name}", "nIndexesWas": 1, "ok": 1}

    def _drop_database(self, db: str, cmd: Document) -> Document:
        for name in self.database(db).list_collection_names():
            self.log.append("drop", db, name, None, None, None)
        self.client.drop_database(db)
        return {"dropped": db, "ok": 1}

    # --- writes -------------------------------------------------------------------------------

    def _lookup(self, db: str) -> Callable[[str, Any], Document | None]:
        def lookup(coll: str, key: Any) -> Document | None:
            with self.lock:
                found: Document | None = self.database(db)[coll].find_one({"_id": key})
            return found

        return lookup

    def _insert(self, db: str, cmd: Document) -> Document:
        coll = self.database(db)[cmd["insert"]]
        ordered = cmd.get("ordered", True)
        inserted, errors = 0, []
        for index, document in enumerate(cmd.get("documents", [])):
            document.setdefault("_id", ObjectId())
            try:
                coll.insert_one(document)
            except mongomock.DuplicateKeyError as exc:
                errors.append(_duplicate(index, exc))
                if ordered:
                    break
                continue
            inserted += 1
            self.log.append("insert", db, coll.name, document["_id"], None, copy.deepcopy(document))
        reply: Document = {"n": inserted, "ok": 1}
        if errors:
            reply["writeErrors"] = errors
        return reply

    def _update_one_document(
        self, db: str, coll: Any, key: Any, update: Any, array_filters: Any
    ) -> bool:
        """Apply ``update`` to the document ``key``; log it; whether it changed."""
        before = coll.find_one({"_id": key})
        options = {"array_filters": array_filters} if array_filters else {}
        if _is_operator_update(update):
            coll.update_one({"_id": key}, update, **options)
        else:
            coll.replace_one({"_id": key}, update)
        after = coll.find_one({"_id": key})
        if after == before:
            return False
        if _is_operator_update(update):
            description = update_description(before or {}, after or {})
            self.log.append("update", db, coll.name, key, before, after, description)
        else:
            self.log.append("replace", db, coll.name, key, before, after)
        return True

    def _update(self, db: str, cmd: Document) -> Document:
        coll = self.database(db)[cmd["update"]]
        ordered = cmd.get("ordered", True)
        matched = modified = 0
        upserted: list[Document] = []
        errors: list[Document] = []
        for index, spec in enumerate(cmd.get("updates", [])):
            query, update = spec.get("q") or {}, spec.get("u") or {}
            if isinstance(update, list):
                raise CommandError(9, "FailedToParse", "pipeline updates are not supported")
            try:
                keys = [
                    d["_id"]
                    for d in coll.find(query, {"_id": 1}).limit(0 if spec.get("multi") else 1)
                ]
                if not keys and spec.get("upsert"):
                    result = (
                        coll.update_one(query, update, upsert=True)
                        if _is_operator_update(update)
                        else coll.replace_one(query, update, upsert=True)
                    )
                    key = result.upserted_id
                    matched += 1
                    upserted.append({"index": index, "_id": key})
                    self.log.append("insert", db, coll.name, key, None, coll.find_one({"_id": key}))
                    continue
                matched += len(keys)
                for key in keys:
                    modified += self._update_one_document(
                        db, coll, key, update, spec.get("arrayFilters")
                    )
            except mongomock.DuplicateKeyError as exc:
                errors.append(_duplicate(index, exc))
                if ordered:
                    break
            except WriteError as exc:
                errors.append({"index": index, "code": exc.code or 2, "errmsg": str(exc)})
                if ordered:
                    break
        reply: Document = {"n": matched, "nModified": modified, "ok": 1}
        if upserted:
            reply["upserted"] = upserted
        if errors:
            reply["writeErrors"] = errors
        return reply

    def _delete(self, db: str, cmd: Document) -> Document:
        coll = self.database(db)[cmd["delete"]]
        deleted = 0
        for spec in cmd.get("deletes", []):
            limit = int(spec.get("limit", 0))
            for document in list(coll.find(spec.get("q") or {}).limit(limit)):
                coll.delete_one({"_id": document["_id"]})
                deleted += 1
                self.log.append("delete", db, coll.name, document["_id"], document, None)
        return {"n": deleted, "ok": 1}

    def _find_and_modify(self, db: str, cmd: Document) -> Document:
        coll = self.database(db)[cmd.get("findAndModify") or cmd["findandmodify"]]
        query, sort = cmd.get("query") or {}, _keys(cmd.get("sort"))
        found = (
            list(coll.find(query).sort(sort).limit(1)) if sort else list(coll.find(query).limit(1))
        )
        before = found[0] if found else None
        fields = cmd.get("fields")
        if cmd.get("remove"):
            if before is not None:
                coll.delete_one({"_id": before["_id"]})
                self.log.append("delete", db, coll.name, before["_id"], before, None)
            return {
                "lastErrorObject": {"n": int(before is not None)},
                "value": _project(before, fields),
                "ok": 1,
            }
        update = cmd.get("update") or {}
        if before is None:
            if not cmd.get("upsert"):
                return {
                    "lastErrorObject": {"n": 0, "updatedExisting": False},
                    "value": None,
                    "ok": 1,
                }
            reply = self._update(
                db, {"update": coll.name, "updates": [{"q": query, "u": update, "upsert": True}]}
            )
            key = reply["upserted"][0]["_id"]
            after = coll.find_one({"_id": key})
            return {
                "lastErrorObject": {"n": 1, "updatedExisting": False, "upserted": key},
                "value": _project(after if cmd.get("new") else None, fields),
                "ok": 1,
            }
        self._update_one_document(db, coll, before["_id"], update, cmd.get("arrayFilters"))
        after = coll.find_one({"_id": before["_id"]})
        return {
            "lastErrorObject": {"n": 1, "updatedExisting": True},
            "value": _project(after if cmd.get("new") else before, fields),
            "ok": 1,
        }

    # --- reads and cursors -------------------------------------------------------------------

    def _first_batch(self, ns: str, documents: list[Document], cmd: Document) -> Document:
        batch_size = (cmd.get("cursor") or {}).get("batchSize", cmd.get("batchSize"))
        size = DEFAULT_BATCH if batch_size is None else int(batch_size) or len(documents)
        cursor = _Cursor(ns, documents)
        first = cursor.take(size)
        cursor_id = 0
        if not cursor.exhausted and not cmd.get("singleBatch"):
            cursor_id = next(self._cursor_ids)
            self._cursors[cursor_id] = cursor
        return {"cursor": {"id": cursor_id, "ns": ns, "firstBatch": first}, "ok": 1}

    def _find(self, db: str, cmd: Document) -> Document:
        coll = self.database(db)[cmd["find"]]
        cursor = coll.find(cmd.get("filter") or {}, cmd.get("projection"))
        if cmd.get("sort"):
            cursor = cursor.sort(_keys(cmd["sort"]))
        if cmd.get("skip"):
            cursor = cursor.skip(int(cmd["skip"]))
        limit = int(cmd.get("limit") or 0)
        if limit:
            cursor = cursor.limit(abs(limit))
        documents = list(cursor)
        if limit < 0:
            cmd = {**cmd, "singleBatch": True}
        return self._first_batch(f"{db}.{coll.name}", documents, cmd)

    def _get_more(self, db: str, cmd: Document) -> Document:
        cursor_id = int(cmd["getMore"])
        with self.lock:
            cursor = self._cursors.get(cursor_id)
        if cursor is None:
            raise CommandError(43, "CursorNotFound", f"cursor id {cursor_id} not found")
        size = int(cmd.get("batchSize") or 0)
        if isinstance(cursor, StreamCursor):
            wait = min(float(cmd.get("maxTimeMS") or 1000) / 1000, _MAX_AWAIT_SECONDS)
            try:
                events, token = cursor.batch(size or 1000, wait)
            except CommandError:
                with self.lock:
                    self._cursors.pop(cursor_id, None)
                raise
            return {
                "cursor": {
                    "id": cursor_id,
                    "ns": f"{cursor.db}.{cursor.coll}",
                    "nextBatch": events,
                    "postBatchResumeToken": token,
                },
                "ok": 1,
            }
        with self.lock:
            batch = cursor.take(size or len(cursor.documents))
            if cursor.exhausted:
                self._cursors.pop(cursor_id, None)
                cursor_id = 0
        return {"cursor": {"id": cursor_id, "ns": cursor.ns, "nextBatch": batch}, "ok": 1}

    def _kill_cursors(self, db: str, cmd: Document) -> Document:
        killed: list[int] = []
        missing: list[int] = []
        for cursor_id in cmd.get("cursors", []):
            (killed if self._cursors.pop(int(cursor_id), None) is not None else missing).append(
                cursor_id
            )
        return {
            "cursorsKilled": killed,
            "cursorsNotFound": missing,
            "cursorsAlive": [],
            "cursorsUnknown": [],
            "ok": 1,
        }

    def _aggregate(self, db: str, cmd: Document) -> Document:
        pipeline = list(cmd.get("pipeline") or [])
        target = cmd["aggregate"]
        if pipeline and "$changeStream" in pipeline[0]:
            return self._change_stream(db, None if target == 1 else target, pipeline, cmd)
        if target == 1:
            raise CommandError(73, "InvalidNamespace", "aggregate: 1 is for $changeStream only")
        documents = list(self.database(db)[target].aggregate(pipeline))
        return self._first_batch(f"{db}.{target}", documents, cmd)

    def _change_stream(
        self, db: str, coll: str | None, pipeline: list[Document], cmd: Document
    ) -> Document:
        options = pipeline[0]["$changeStream"] or {}
        token = options.get("resumeAfter") or options.get("startAfter")
        if token is not None:
            position = self.log.position_of(token)
        elif options.get("startAtOperationTime") is not None:
            position = self.log.position_at(options["startAtOperationTime"])
        else:
            position = self.log.last_seq
        stages = pipeline[1:]
        unsupported = [next(iter(stage)) for stage in stages if next(iter(stage)) != "$match"]
        if unsupported:
            raise CommandError(
                9,
                "FailedToParse",
                f"this test double serves $changeStream with $match only, not {unsupported}",
            )
        matches = [stage["$match"] for stage in stages]

        def match(event: Document) -> bool:
            return all(filtering.filter_applies(m, event) for m in matches)

        cursor = StreamCursor(
            self.log,
            db,
            coll,
            position,
            full_document=options.get("fullDocument", "default"),
            before_change=options.get("fullDocumentBeforeChange", "off"),
            match=match if matches else None,
            lookup=self._lookup(db),
        )
        size = (cmd.get("cursor") or {}).get("batchSize")
        events, post_token = cursor.batch(1000 if size is None else int(size), 0.0)
        cursor_id = next(self._cursor_ids)
        self._cursors[cursor_id] = cursor
        ns = f"{db}.{coll}" if coll else f"{db}.$cmd.aggregate"
        return {
            "cursor": {
                "id": cursor_id,
                "ns": ns,
                "firstBatch": events,
                "postBatchResumeToken": post_token,
            },
            "ok": 1,
        }

    def _count(self, db: str, cmd: Document) -> Document:
        coll = self.database(db)[cmd["count"]]
        cursor = coll.find(cmd.get("query") or {})
        if cmd.get("skip"):
            cursor = cursor.skip(int(cmd["skip"]))
        if cmd.get("limit"):
            cursor = cursor.limit(abs(int(cmd["limit"])))
        return {"n": len(list(cursor)), "ok": 1}

    def _distinct(self, db: str, cmd: Document) -> Document:
        coll = self.database(db)[cmd["distinct"]]
        return {"values": coll.distinct(cmd["key"], cmd.get("query") or {}), "ok": 1}

    # --- indexes ------------------------------------------------------------------------------

    def _create_indexes(self, db: str, cmd: Document) -> Document:
        coll = self.database(db)[cmd["createIndexes"]]
        existed = cmd["createIndexes"] in self.database(db).list_collection_names()
        before = len(coll.index_information())
        for index in cmd.get("indexes", []):
            options = {k: v for k, v in index.items() if k not in ("key", "v")}
            coll.create_index(_keys(index["key"]), **options)
        return {
            "createdCollectionAutomatically": not existed,
            "numIndexesBefore": before,
            "numIndexesAfter": len(coll.index_information()),
            "ok": 1,
        }

    def _list_indexes(self, db: str, cmd: Document) -> Document:
        name = cmd["listIndexes"]
        if name not in self.database(db).list_collection_names():
            raise CommandError(26, "NamespaceNotFound", f"ns does not exist: {db}.{name}")
        entries = []
        for index_name, info in self.database(db)[name].index_information().items():
            entry = {"v": 2, "key": dict(info["key"]), "name": index_name}
            entry.update({k: v for k, v in info.items() if k not in ("key", "v")})
            entries.append(entry)
        return self._first_batch(f"{db}.{name}", entries, cmd)

    def _drop_indexes(self, db: str, cmd: Document) -> Document:
        coll = self.database(db)[cmd["dropIndexes"]]
        index = cmd.get("index")
        if index == "*":
            coll.drop_indexes()
        else:
            coll.drop_index(index if isinstance(index, str) else _keys(index))
        return {"ok": 1}


def _duplicate(index: int, exc: Exception) -> Document:
    return {"index": index, "code": 11000, "errmsg": f"E11000 duplicate key error: {exc}"}


def _project(document: Document | None, fields: Any) -> Document | None:
    if document is None or not fields:
        return document
    included = {k for k, v in fields.items() if v}
    if included:
        kept = {k: v for k, v in document.items() if k in included or k == "_id"}
        if fields.get("_id") == 0:
            kept.pop("_id", None)
        return kept
    return {k: v for k, v in document.items() if fields.get(k, 1)}
