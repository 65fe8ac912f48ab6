"""Validation helpers for handlers; they live in the domain (foundry.domain.validation) so that
every layer that takes input (commands, publishing's import) refuses it the same way."""

from __future__ import annotations

from foundry.domain.validation import field_path, invalid_from, parse_uuid, validate_model

__all__ = ["field_path", "invalid_from", "parse_uuid", "validate_model"]
