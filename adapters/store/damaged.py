"""A stored event that cannot be read back is named, never a traceback (#17 item 12).

A row whose state was garbled on disk (or by someone with write access to the database), whose
topic names no class, or whose state no longer decodes used to surface as `internal_error` from
every read that touched it. The mapper both applications use raises `EventDamagedError` instead,
naming the aggregate, the event's version and topic: the envelope says which row to look at.
What the damaged bytes held is not repeated (they may be anything).
"""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import Mapper, StoredEvent

from foundry.domain.errors import FoundryError


class EventDamagedError(FoundryError):
    """A stored event that cannot be decoded; names the row."""

    code = "event_damaged"

    def __init__(self, originator_id: Any, version: int, topic: str, cause: BaseException):
        self.originator_id, self.version, self.topic = str(originator_id), version, topic
        # The cause's class only: a decoder's message can quote the damaged bytes.
        super().__init__(
            f"stored event {version} of {self.originator_id} (topic {topic[:200]!r}) cannot "
            f"be decoded ({type(cause).__name__}): the row is damaged; `foundry audit` "
            "reports every such row")


class DamageNamingMapper(Mapper[Any]):
    """The library's mapper; a stored event it cannot decode raises `EventDamagedError`."""

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        try:
            return super().to_domain_event(stored_event)
        except Exception as e:
            raise EventDamagedError(stored_event.originator_id,
                                    stored_event.originator_version, stored_event.topic,
                                    e.__cause__ or e) from e
