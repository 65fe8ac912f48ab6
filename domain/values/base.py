"""Base classes for the value types: frozen pydantic models, camelCase on the wire.

Input accepts both camelCase (the wire) and snake_case (Python callers). Output
(``model_dump(by_alias=True)``) is always camelCase, which is what `.alloy.json` files use.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel

SHA256_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}\Z")
SEMVER_PATTERN = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?\Z",
    re.ASCII,  # \d is [0-9]: semver digits are ASCII
)


class Frozen(BaseModel):
    """An immutable value. Unknown fields are refused."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-native camelCase form, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Open(Frozen):
    """An immutable value that keeps fields it does not know.

    Real alloys carry fields this project has no model for yet; dropping them would lose data
    on a round trip, so the authored types keep them as extras.
    """

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        """Real alloys write `null` for an optional field they leave out (`"hardware": null`):
        it means absent, so the field takes its default. The import remembers where the nulls
        were, so that an export gives them back."""
        if isinstance(data, dict) and any(v is None for v in data.values()):
            return {k: v for k, v in data.items() if v is not None}
        return data


def _check_sha256(value: str) -> str:
    if not SHA256_PATTERN.match(value):
        msg = "must be 'sha256:' followed by 64 lowercase hex digits"
        raise ValueError(msg)
    return value


def _check_semver(value: str) -> str:
    if not SEMVER_PATTERN.match(value):
        msg = "must be a semantic version MAJOR.MINOR.PATCH (e.g. 1.2.0), see semver.org"
        raise ValueError(msg)
    return value


# A JSON number that stays what it was: 24 stays 24 (int), 0.5 stays 0.5, so that a file
# read and written again keeps its values exactly.
Number = int | float

Sha256 = Annotated[str, AfterValidator(_check_sha256)]
SemVer = Annotated[str, AfterValidator(_check_semver)]
