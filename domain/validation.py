"""Turning pydantic validation errors into InvalidInputError with field paths and rules."""

from __future__ import annotations

from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError

from foundry.domain.errors import InvalidInputError


def field_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    parts = [prefix] if prefix else []
    parts += [str(p) for p in loc]
    return ".".join(parts) or "params"


def invalid_from(error: ValidationError, prefix: str = "") -> InvalidInputError:
    """The first error names the field; every error is listed in `details`."""
    details = [
        {"field": field_path(prefix, e["loc"]), "rule": _rule(e)} for e in error.errors()
    ]
    first = details[0]
    return InvalidInputError(first["field"], first["rule"], details=details)


def _rule(e: Any) -> str:
    if e["type"] == "extra_forbidden":
        return "unknown field (not part of this command's params)"
    if e["type"] == "missing":
        return "required field is missing"
    return str(e["msg"])


M = TypeVar("M", bound=BaseModel)


def validate_model(model: type[M], data: Any, prefix: str = "") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise invalid_from(e, prefix) from None


def parse_uuid(value: str, field: str = "id") -> UUID:
    try:
        return UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise InvalidInputError(field, f"must be a UUID, got {value!r}") from None
