"""Reading an application's events back for a rebuild, decoded without the library's mapper.

Why a hand-written decoder: the library's `Mapper.to_domain_event` is generic (any transcoder,
cipher, compressor, upcasting). It decodes with `json.JSONDecoder(object_hook=...)`, which
calls a Python function for every JSON object of every event; for a 1.75 KB recipe that was
the largest single cost of a rebuild (docs/performance.md). A rebuild is a bulk load of one
known format, so `FastDecoder` parses with orjson and then does exactly what the library's
`JSONTranscoder` object hook and `to_domain_event` do, only where that is cheap to prove:

* the transcoder is exactly the library's `JSONTranscoder` and there is no cipher or
  compressor (otherwise every event goes through the mapper);
* orjson accepts the bytes. It rejects what `json` accepts but is not strict JSON (NaN,
  Infinity, out-of-range floats, lone surrogates); those events go through the mapper, which
  decodes them (or raises) as it always did;
* no run of 19 or more digits: orjson silently turns integers outside 64 bits into floats,
  where `json` keeps a Python int. (Digits inside strings count too: only a slower event.)
* the object hook turns every object with exactly the keys `_type_` and `_data_` into the
  registered type (UUID, datetime, Decimal, ...), innermost first. Stored events put such
  values at the top level (the event's `timestamp`, UUID fields), so the decoder converts the
  top-level values and counts `"_type_"` in the raw bytes: if that count is larger, or the
  bytes contain a `\\u` escape that could spell a key, it walks the whole tree bottom-up as
  the hook would. The conversion itself is the library's own `Transcoding.decode`;
* event classes with a `class_version` above 1 (upcasting) go through the mapper.

Anything unexpected (an unknown `_type_`, a non-object state) falls back to the mapper for
that one event, so errors are the library's own. `tests/unit/test_rebuild_decoder.py` checks
the decoder against the mapper (a hypothesis property and the edge cases above),
`tests/integration/test_fast_rebuild.py` the decoded stores and rebuilt rows.

`read_pages` reads the rows `select_notifications` would return, by range of ids, with the
same statement shape (the recorder's table, schema and id conversion) but without building a
`Notification` per row, and on PostgreSQL in binary (see `_postgres_reader`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
from eventsourcing.persistence import (
    JSONTranscoder,
    Mapper,
    StoredEvent,
    Transcoding,
    find_id_convertor,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import resolve_topic
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

_LONG_DIGITS = b"1" * 19
# bytes.translate table: every ASCII digit -> b"1", every other byte -> b"0".
_DIGIT_MAP = bytes(0x31 if 0x30 <= b <= 0x39 else 0x30 for b in range(256))
_TYPE_KEY = b'"_type_"'

Item = tuple[Any, int]  # (domain event, notification id)


class FastDecoder:
    """Stored event -> domain event, identical to `mapper.to_domain_event`."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        transcoder = mapper.transcoder
        self.enabled = (type(transcoder) is JSONTranscoder and mapper.cipher is None
                        and mapper.compressor is None)
        self.names: dict[str, Transcoding] = (
            transcoder.names if isinstance(transcoder, JSONTranscoder) else {})
        # topic -> (event class, originator id convertor), or None: use the mapper.
        self._classes: dict[tuple[str, type], tuple[type, Callable[[Any], Any]] | None] = {}
        self.fallbacks = 0  # events the mapper decoded (for tests and benchmarks)

    def __call__(self, n: StoredEvent) -> Any:
        return self.decode(n.originator_id, n.originator_version, n.topic, n.state)

    def decode(self, originator_id: Any, originator_version: int, topic: str,
               state: bytes) -> Any:
        """The event stored with these values."""
        event = (self._fast(originator_id, originator_version, topic, state) if self.enabled
                 else None)
        if event is None:
            self.fallbacks += 1
            return self.mapper.to_domain_event(StoredEvent(
                originator_id=originator_id, originator_version=originator_version,
                topic=topic, state=state))
        return event

    def _class(self, topic: str, id_type: type) -> tuple[type, Callable[[Any], Any]] | None:
        key = (topic, id_type)
        try:
            return self._classes[key]
        except KeyError:
            pass
        cls = resolve_topic(topic)
        found = None
        if getattr(cls, "class_version", 1) == 1:
            found = (cls, find_id_convertor(cls, id_type))
        self._classes[key] = found
        return found

    def _fast(self, originator_id: Any, originator_version: int, topic: str,
              raw: bytes) -> Any:
        found = self._class(topic, type(originator_id))
        if found is None:
            return None
        if _LONG_DIGITS in raw.translate(_DIGIT_MAP):
            return None
        try:
            state = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if type(state) is not dict or "class_version" in state:
            return None
        try:
            state = self._transcode(raw, state)
        except Exception:  # the mapper decodes this event again and raises its own error
            return None
        if type(state) is not dict:
            return None
        cls, convert = found
        # The rest is `Mapper.to_domain_event` (eventsourcing 9.5.6), in the same order, so the
        # event's __dict__ has the same keys in the same order.
        state["originator_id"] = convert(originator_id)
        state["originator_version"] = originator_version
        event: Any = object.__new__(cls)
        object.__setattr__(event, "__dict__", state)
        return event

    def _transcode(self, raw: bytes, state: dict[str, Any]) -> Any:
        """What the library's object hook does to the parsed state."""
        total = raw.count(_TYPE_KEY)
        if not total:
            return state
        escaped = b"\\" in raw and b"\\u" in raw  # memchr first: most events have no "\\"
        if total == 1 and not escaped:  # the usual case: only the event's timestamp
            stamp = state.get("timestamp")
            if type(stamp) is dict and self._is_typed(stamp):
                state["timestamp"] = self.names[stamp["_type_"]].decode(stamp["_data_"])
                return state
        top = [k for k, v in state.items() if type(v) is dict and len(v) == 2
               and "_type_" in v and "_data_" in v]
        if len(top) != total or escaped or self._is_typed(state):
            return self._walk(state)
        for k in top:
            v = state[k]
            state[k] = self.names[v["_type_"]].decode(v["_data_"])
        return state

    @staticmethod
    def _is_typed(d: dict[str, Any]) -> bool:
        return len(d) == 2 and "_type_" in d and "_data_" in d

    def _walk(self, value: Any) -> Any:
        """The object hook applied bottom-up to every object, as `json` applies it."""
        if type(value) is list:
            return [self._walk(v) for v in value]
        if type(value) is dict:
            d = {k: self._walk(v) for k, v in value.items()}
            if self._is_typed(d):
                return self.names[d["_type_"]].decode(d["_data_"])
            return d
        return value


def read_pages(
    app: Any, topics: Sequence[str], *, start: int = 0, page_size: int = 1000,
    decoder: FastDecoder | None = None,
) -> Iterator[list[Item]]:
    """Pages of (event, notification id) after `start`, up to the head when called.

    Each read names its range of ids (`stop`): with only a start and a topic filter,
    PostgreSQL's planner (on a freshly loaded, not yet analyzed table) sorted every later row
    for each page, 130 ms per page of 5,000 at 100k events instead of 16. A range may hold
    fewer events than the page size (topics not selected), or none. Pages of 1,000 sort in
    memory (work_mem); 5,000 spilled to disk.
    """
    decode = (decoder or FastDecoder(app.mapper)).decode
    recorder = app.recorder
    if isinstance(recorder, PostgresApplicationRecorder):
        read = _postgres_reader(recorder, topics)
    elif isinstance(recorder, SQLiteApplicationRecorder):
        read = _sqlite_reader(recorder, topics)
    else:
        read = _library_reader(recorder, topics)
    head = recorder.max_notification_id() or 0
    position = start
    while position < head:
        stop = min(position + page_size, head)
        rows = read(position, stop)
        if rows:
            yield [(decode(oid, version, topic, state), nid)
                   for nid, oid, version, topic, state in rows]
        position = stop


Reader = Callable[[int, int], Sequence[tuple[int, Any, int, str, bytes]]]


def _library_reader(recorder: Any, topics: Sequence[str]) -> Reader:
    def read(after: int, stop: int) -> list[tuple[int, Any, int, str, bytes]]:
        notes = recorder.select_notifications(
            start=after, limit=stop - after, stop=stop, topics=tuple(topics),
            inclusive_of_start=False)
        return [(n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in notes]

    return read


def _sqlite_reader(recorder: SQLiteApplicationRecorder, topics: Sequence[str]) -> Reader:
    """The rows `select_notifications` reads, without building a `Notification` each (a third
    of the read's cost); ids converted by the recorder, as there."""
    statement = (
        f"SELECT rowid, originator_id, originator_version, topic, state "
        f"FROM {recorder.events_table_name} WHERE rowid > ? AND rowid <= ?"
        + (f" AND topic IN ({','.join('?' * len(topics))})" if topics else "")
        + " ORDER BY rowid")
    convert = recorder.convert_originator_id

    def read(after: int, stop: int) -> list[tuple[int, Any, int, str, bytes]]:
        with recorder.datastore.transaction(commit=False) as c:
            c.execute(statement, [after, stop, *topics])
            return [(r[0], convert(r[1]), r[2], r[3], r[4]) for r in c.fetchall()]

    return read


def _postgres_reader(recorder: PostgresApplicationRecorder, topics: Sequence[str]) -> Reader:
    """The rows `select_notifications` reads, in binary: the library's query asks for text, so
    PostgreSQL hex-encodes every state and the client decodes it again (100k recipe events:
    1.2 s read that way, 0.35 s in binary)."""
    statement = SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{} "
        "WHERE notification_id > %s AND notification_id <= %s"
        + (" AND topic = ANY(%s)" if topics else "") + " ORDER BY notification_id",
    ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
    topic_list = list(topics)

    def read(after: int, stop: int) -> list[tuple[int, Any, int, str, bytes]]:
        params: list[Any] = [after, stop, *([topic_list] if topics else [])]
        with recorder.datastore.get_connection() as conn, \
                conn.cursor(binary=True, row_factory=tuple_row) as curs:
            curs.execute(statement, params, prepare=True)
            return curs.fetchall()

    return read
