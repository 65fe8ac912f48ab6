"""The rebuild's FastDecoder gives exactly what the library's mapper gives, or lets the mapper
decode (and raise) for the events it cannot prove it decodes alike."""

from __future__ import annotations

import datetime as dt
import math
import zlib
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.compressor import ZlibCompressor
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    Notification,
    UUIDAsHex,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foundry.projections.replay import FastDecoder


class Probe(Aggregate):
    class Happened(Aggregate.Event):
        payload: Any

    class Versioned(Aggregate.Event):
        payload: Any
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["payload"] = {"upcast": state["payload"]}


def make_mapper(compressor: Any = None) -> Mapper[Any]:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return Mapper(transcoder, compressor=compressor)


MAPPER = make_mapper()
TOPIC = f"{__name__}:Probe.Happened"


def canon(value: Any) -> Any:
    """A form that `==` compares by type and order too (1, 1.0 and True differ; NaN == NaN)."""
    if isinstance(value, dict):
        return ("dict", [(k, canon(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [canon(v) for v in value])
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, repr(value))


def outcome(decode: Any, note: Notification) -> Any:
    try:
        event = decode(note)
    except Exception as e:  # the error itself is what is compared
        return ("raised", type(e).__name__, str(e))
    return ("event", type(event).__name__, canon(event.__dict__))


def note_for(state: bytes, topic: str = TOPIC, version: int = 1) -> Notification:
    return Notification(id=1, originator_id=uuid4(), originator_version=version, topic=topic,
                        state=state)


def stored(payload: Any, mapper: Mapper[Any] = MAPPER) -> Notification:
    event = Probe.Happened(originator_id=uuid4(), originator_version=3,
                           timestamp=dt.datetime.now(dt.UTC), payload=payload)
    s = mapper.to_stored_event(event)
    return Notification(id=7, originator_id=s.originator_id,
                        originator_version=s.originator_version, topic=s.topic, state=s.state)


def assert_same(note: Notification, mapper: Mapper[Any] = MAPPER) -> FastDecoder:
    fast = FastDecoder(mapper)
    assert outcome(fast, note) == outcome(mapper.to_domain_event, note)
    return fast


KEYS = st.sampled_from(["_type_", "_data_", "a", "timestamp", "é", "class_version"]) | st.text(
    max_size=6)
TEXT = st.sampled_from(["uuid_hex", "datetime_iso", "decimal_str", "nope", "_type_", "\\u005f",
                        "12345678901234567890"]) | st.text(max_size=12)
LEAVES = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=2**62, max_value=2**70)
    | st.integers(min_value=-(2**70), max_value=-(2**62)) | st.floats() | TEXT | st.uuids()
    | st.datetimes(timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5))]))
    | st.decimals(allow_nan=False)
)
PAYLOADS = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4)
    | st.fixed_dictionaries({"_type_": TEXT, "_data_": inner}),
    max_leaves=25,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PAYLOADS)
def test_any_payload_decodes_as_the_library_decodes_it(payload):
    assert_same(stored(payload))


def test_an_ordinary_event_takes_the_fast_path():
    payload = {"id": uuid4(), "at": dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
               "price": Decimal("1.10"), "nested": [{"x": 1.5, "y": None, "z": "é"}]}
    fast = assert_same(stored(payload))
    assert fast.fallbacks == 0  # typed values inside the payload: walked, not the mapper's
    fast = assert_same(stored({"name": "r", "n": 3, "tags": ["a"], "ok": True}))
    assert fast.fallbacks == 0
    event = fast(stored({"name": "r"}))
    assert isinstance(event, Probe.Happened) and isinstance(event.timestamp, dt.datetime)
    assert isinstance(event.originator_id, UUID) and event.originator_version == 3


TS = b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-01-02T03:04:05+00:00"},'


@pytest.mark.parametrize("state", [
    TS + b'"payload":{"\\u005ftype_":"uuid_hex","_data_":"' + uuid4().hex.encode() + b'"}}',
    TS + b'"payload":"a \\"_type_\\" in a string"}',
    TS + b'"payload":NaN}',
    TS + b'"payload":-Infinity}',
    TS + b'"payload":1e400}',
    TS + b'"payload":123456789012345678901234567890}',
    TS + b'"payload":-9223372036854775809}',
    TS + b'"payload":18446744073709551615}',
    TS + b'"payload":"\\ud800"}',
    TS + b'"payload":{"_type_":"nope","_data_":1}}',
    TS + b'"payload":{"_type_":["x"],"_data_":1}}',
    TS + b'"payload":1,"payload":2}',
    TS + b'"class_version":1,"payload":1}',
    b'{"_type_":"uuid_hex","_data_":"' + uuid4().hex.encode() + b'"}',
    b'{"timestamp":{"_type_":"datetime_iso","_data_":"not a date"},"payload":1}',
    b'[1, 2]',
    b'"text"',
    b'{"payload": 1',
    b'\xef\xbb\xbf{"payload":1}',
    b'{"payload":"\xff"}',
    b'',
], ids=lambda s: s[-40:].decode("utf-8", "replace"))
def test_unusual_stored_states_decode_or_fail_as_with_the_mapper(state):
    assert_same(note_for(state))


def test_an_upcast_event_class_goes_through_the_mapper():
    state = TS + b'"originator_topic":"x","payload":5}'
    fast = assert_same(note_for(state, topic=f"{__name__}:Probe.Versioned"))
    assert fast.fallbacks == 1
    assert fast(note_for(state, topic=f"{__name__}:Probe.Versioned")).payload == {"upcast": 5}


def test_a_compressed_store_is_decoded_by_the_mapper():
    mapper = make_mapper(ZlibCompressor())
    note = stored({"a": 1}, mapper)
    assert zlib.decompress(note.state).startswith(b"{")
    fast = assert_same(note, mapper)
    assert fast.enabled is False and fast.fallbacks == 1
