"""What the domain tests share: replaying an aggregate's events the way the store does."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    UUIDAsHex,
)

Replay = Callable[[Sequence[DomainEventProtocol[Any]]], Any]


@pytest.fixture
def replay() -> Replay:
    """Rebuild an aggregate from its events after a round trip through the library's JSON
    mapper, as a reload from SQLite or PostgreSQL does: tuples come back as lists, so a state
    that is not JSON-native, or an event body that is not deterministic, shows up here."""
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    mapper: Mapper[Any] = Mapper(transcoder)

    def rebuild(events: Sequence[DomainEventProtocol[Any]]) -> Any:
        aggregate: Aggregate | None = None
        for e in events:
            aggregate = mapper.to_domain_event(mapper.to_stored_event(e)).mutate(aggregate)
        return aggregate

    return rebuild
