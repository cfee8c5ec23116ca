"""Load a production ``mongoexport`` into the store exactly as found, and write one.

A directory holds one file per collection, ``<collection>.json`` (or
``.jsonl``/``.ndjson``): Extended JSON, one document per line, relaxed or
canonical, or a single ``--jsonArray`` array. Values are decoded with PyMongo's
``bson.json_util`` so that dates, 64-bit integers, ObjectIds and decimals come
back as the BSON types they were.

Nothing is dropped silently: a line that is not a valid Extended JSON object, a
document the store refuses, an unknown or duplicated file each becomes a
:class:`LoadProblem` (file, line, reason) while the rest keeps loading, and the
CLI exits non-zero when :attr:`LoadSummary.problems` is not empty.

Files are read and written synchronously: loading and dumping are batch
commands that own their event loop, and the store calls in between are what
the loop waits on.
"""

from __future__ import annotations

import json
import pathlib
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import bson
from bson import json_util
from bson.errors import BSONError
from bson.json_util import (
    CANONICAL_JSON_OPTIONS,
    RELAXED_JSON_OPTIONS,
    DatetimeConversion,
    JSONOptions,
)
from pymongo.errors import BulkWriteError, PyMongoError

from legacy_emulator.generator_plan import COLLECTIONS
from strangler.errors import DataError
from strangler.mongo import Database

__all__ = [
    "EXPORT_SUFFIXES",
    "ExportError",
    "LoadProblem",
    "LoadSummary",
    "dump_export",
    "load_export",
]

Document = dict[str, Any]
Progress = Callable[[str, int, int], None]

EXPORT_SUFFIXES = (".json", ".jsonl", ".ndjson")
BATCH = 1000

# Naive UTC datetimes, as PyMongo returns BSON dates; dates outside Python's
# range stay DatetimeMS instead of failing, so every stored value survives.
_READ_OPTIONS = JSONOptions(tz_aware=False, datetime_conversion=DatetimeConversion.DATETIME_AUTO)
_DECODE_ERRORS = (ValueError, TypeError, KeyError, OverflowError, BSONError)


class ExportError(DataError):
    """The export directory cannot be read or written at all."""


@dataclass(frozen=True)
class LoadProblem:
    file: str
    line: int | None  # None: the whole file
    reason: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class LoadSummary:
    counts: dict[str, int]
    problems: list[LoadProblem] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        total = sum(self.counts.values())
        lines = [f"loaded {total:,} documents in {self.elapsed_seconds:.1f} s"]
        lines += [f"  {name:<18} {count:>10,}" for name, count in self.counts.items()]
        if self.problems:
            lines.append(f"  {len(self.problems)} problem(s), nothing else was skipped:")
            lines += [f"    {problem}" for problem in self.problems[:50]]
            if len(self.problems) > 50:
                lines.append(f"    ... and {len(self.problems) - 50} more")
        return lines


def _reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):  # its own line number counts from the element
        return f"not Extended JSON: {exc.msg} (column {exc.colno})"
    return f"not Extended JSON: {exc}"


def _decoder() -> json.JSONDecoder:
    def hook(pairs: list[tuple[str, Any]]) -> Any:
        return json_util.object_pairs_hook(pairs, _READ_OPTIONS)

    return json.JSONDecoder(object_pairs_hook=hook)


def _choose_files(
    directory: pathlib.Path, known: Iterable[str]
) -> tuple[dict[str, pathlib.Path], list[LoadProblem]]:
    if not directory.is_dir():
        raise ExportError(f"{directory} is not a directory; give the folder mongoexport wrote into")
    wanted = set(known)
    chosen: dict[str, pathlib.Path] = {}
    problems: list[LoadProblem] = []
    for path in sorted(directory.iterdir()):
        if path.is_dir() or path.name.startswith("."):
            continue
        if path.suffix not in EXPORT_SUFFIXES:
            problems.append(LoadProblem(path.name, None, "not an export file; not loaded"))
        elif path.stem not in wanted:
            problems.append(
                LoadProblem(
                    path.name, None, f"{path.stem!r} is not a legacy collection; not loaded"
                )
            )
        elif path.stem in chosen:
            problems.append(
                LoadProblem(
                    path.name,
                    None,
                    f"{chosen[path.stem].name} already holds {path.stem}; not loaded",
                )
            )
        else:
            chosen[path.stem] = path
    return chosen, problems


def _count_lines(path: pathlib.Path) -> int:
    lines = 0
    last = b"\n"
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


def _first_character(path: pathlib.Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(4096).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    return head[:1]


def _read_lines(
    path: pathlib.Path, decoder: json.JSONDecoder
) -> Iterator[tuple[int, Document | LoadProblem]]:
    """(line number, document or problem) for a one-document-per-line file."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8").lstrip("\ufeff").strip()
            except UnicodeDecodeError as exc:
                yield number, LoadProblem(path.name, number, f"not UTF-8 ({exc.reason})")
                continue
            if not text:
                continue
            try:
                value = decoder.decode(text)
            except _DECODE_ERRORS as exc:
                yield number, LoadProblem(path.name, number, _reason(exc))
                continue
            if not isinstance(value, dict):
                kind = type(value).__name__
                yield number, LoadProblem(path.name, number, f"a {kind}, not a document")
                continue
            yield number, value


_LINE_WITH_OBJECT = re.compile(r"^([ \t]*),?[ \t]*\{", re.MULTILINE)


def _next_element(text: str, failed_at: int) -> int:
    """Where the element after a broken one starts: the next line that opens an
    object no deeper than the broken element did (nested objects of a
    pretty-printed array sit deeper), else the closing bracket."""
    column = failed_at - (text.rfind("\n", 0, failed_at) + 1)
    next_line = text.find("\n", failed_at)
    if next_line >= 0:
        for match in _LINE_WITH_OBJECT.finditer(text, next_line + 1):
            if len(match.group(1)) <= column:
                return match.start()
    closing = text.rfind("]")
    return closing if closing > failed_at else len(text)


def _read_array(
    path: pathlib.Path, decoder: json.JSONDecoder
) -> Iterator[tuple[int, Document | LoadProblem]]:
    """Documents of a ``--jsonArray`` file, decoded one element at a time.

    After an element that cannot be decoded, reading resumes at the next line
    that starts an object, so one bad element costs only itself.
    """
    try:
        text = path.read_text(encoding="utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        yield 1, LoadProblem(path.name, None, f"not UTF-8 ({exc.reason}); nothing loaded")
        return
    position = text.index("[") + 1
    line = 1 + text.count("\n", 0, position)
    end = len(text)
    closed = False
    while position < end:
        character = text[position]
        if character in " \t\r\n,":
            line += character == "\n"
            position += 1
            continue
        if character == "]":
            closed = True
            break
        try:
            value, stop = decoder.raw_decode(text, position)
        except _DECODE_ERRORS as exc:
            # a syntax error knows its own line; a bad value ($date, $oid) is on the element's
            where = exc.lineno if isinstance(exc, json.JSONDecodeError) else line
            yield line, LoadProblem(path.name, where, _reason(exc))
            stop = _next_element(text, position)
        else:
            if isinstance(value, dict):
                yield line, value
            else:
                yield (
                    line,
                    LoadProblem(path.name, line, f"a {type(value).__name__}, not a document"),
                )
        line += text.count("\n", position, stop)
        position = stop
    if not closed:
        yield line, LoadProblem(path.name, line, "the array is not closed with ']'")


async def _insert(
    db: Database, collection: str, batch: list[tuple[int, Document]], file: str
) -> tuple[int, list[LoadProblem]]:
    """Insert a batch; each document the store refuses becomes a problem with its line."""
    problems: list[LoadProblem] = []
    ready: list[tuple[int, Document]] = []
    for number, document in batch:
        try:
            bson.encode(document)  # what the driver would refuse before sending
        except _DECODE_ERRORS as exc:
            problems.append(LoadProblem(file, number, f"not storable as BSON: {exc}"))
        else:
            ready.append((number, document))
    inserted = 0
    while ready:
        try:
            await db[collection].insert_many([document for _, document in ready], ordered=True)
        except BulkWriteError as exc:
            # ordered: everything before the first refused document is written
            error = exc.details["writeErrors"][0]
            index = int(error["index"])
            inserted += index
            message = str(error.get("errmsg", exc)).split(",")[0]
            problems.append(LoadProblem(file, ready[index][0], f"refused by the store: {message}"))
            ready = ready[index + 1 :]
        except PyMongoError as exc:
            raise ExportError(
                f"the store failed while loading {file} near line {ready[0][0]}: {exc}"
            ) from exc
        else:
            inserted += len(ready)
            break
    return inserted, problems


async def load_export(
    db: Database,
    directory: pathlib.Path,
    progress: Progress | None = None,
    *,
    collections: Iterable[str] = COLLECTIONS,
    replace: bool = False,
) -> LoadSummary:
    """Load every ``<collection>.json`` of ``directory`` into ``db`` as found.

    The collections it fills must be empty, unless ``replace`` drops them
    first: loading on top of earlier data would only report every ``_id`` as
    a duplicate. ``progress`` is called as (collection, lines read, lines in
    the file).
    """
    started = time.perf_counter()
    files, problems = _choose_files(pathlib.Path(directory), collections)
    for collection in files:
        if replace:
            await db[collection].drop()
        elif await db[collection].count_documents({}) > 0:
            raise ExportError(
                f"collection {collection!r} already holds documents; load into an empty store "
                "or ask for the existing collections to be replaced"
            )
    counts: dict[str, int] = {}
    decoder = _decoder()
    for collection, path in files.items():
        counts[collection] = await _load_file(db, collection, path, decoder, problems, progress)
    return LoadSummary(counts, problems, time.perf_counter() - started)


async def _load_file(
    db: Database,
    collection: str,
    path: pathlib.Path,
    decoder: json.JSONDecoder,
    problems: list[LoadProblem],
    progress: Progress | None,
) -> int:
    """Load one file in batches; its problems are appended to ``problems``."""
    total = _count_lines(path)
    reader = _read_array if _first_character(path) == "[" else _read_lines
    loaded = 0
    batch: list[tuple[int, Document]] = []
    for number, item in reader(path, decoder):
        if isinstance(item, LoadProblem):
            problems.append(item)
            continue
        batch.append((number, item))
        if len(batch) >= BATCH:
            written, refused = await _insert(db, collection, batch, path.name)
            loaded, batch = loaded + written, []
            problems += refused
            if progress is not None:
                progress(collection, number, total)
    if batch:
        written, refused = await _insert(db, collection, batch, path.name)
        loaded += written
        problems += refused
    if progress is not None:
        progress(collection, total, total)
    return loaded


def _make_directory(target: pathlib.Path) -> pathlib.Path:
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {target}: {exc.strerror}") from exc
    return target


async def dump_export(
    db: Database,
    directory: pathlib.Path,
    collections: Iterable[str] | None = None,
    *,
    mode: Literal["relaxed", "canonical"] = "relaxed",
) -> dict[str, int]:
    """Write each collection as ``<collection>.json``, one Extended JSON document a line.

    This is what ``mongoexport`` writes (relaxed by default); returns the
    number of documents written per collection.
    """
    options = RELAXED_JSON_OPTIONS if mode == "relaxed" else CANONICAL_JSON_OPTIONS
    target = _make_directory(pathlib.Path(directory))
    names = sorted(await db.list_collection_names()) if collections is None else list(collections)
    written: dict[str, int] = {}
    for name in names:
        count = 0
        with (target / f"{name}.json").open("w", encoding="utf-8") as handle:
            async for document in db[name].find({}):
                handle.write(json_util.dumps(document, json_options=options))
                handle.write("\n")
                count += 1
        written[name] = count
    return written
