"""Semantic version precedence (semver.org section 11), enough to say "strictly greater"."""

from __future__ import annotations

from foundry.domain.values.base import SEMVER_PATTERN

_Key = tuple[int, int, int, tuple[tuple[int, int | str], ...]]


def semver_key(version: str) -> _Key:
    """A sort key with semver precedence; build metadata is ignored, as the spec says."""
    match = SEMVER_PATTERN.match(version)
    if match is None:
        msg = f"not a semantic version: {version!r}"
        raise ValueError(msg)
    major, minor, patch, pre = int(match[1]), int(match[2]), int(match[3]), match[4]
    if pre is None:
        # A release sorts after every pre-release of the same version.
        return (major, minor, patch, ((2, ""),))
    parts: list[tuple[int, int | str]] = [
        (0, int(p)) if p.isdigit() else (1, p) for p in pre.split(".")
    ]
    return (major, minor, patch, (*parts,)) if parts else (major, minor, patch, ())


def is_greater(candidate: str, current: str) -> bool:
    """True when `candidate` has strictly higher precedence than `current`."""
    return _compare(semver_key(candidate), semver_key(current)) > 0


def _compare(a: _Key, b: _Key) -> int:
    if a[:3] != b[:3]:
        return 1 if a[:3] > b[:3] else -1
    pa, pb = a[3], b[3]
    if pa == ((2, ""),) or pb == ((2, ""),):
        return (pa == ((2, ""),)) - (pb == ((2, ""),))
    for x, y in zip(pa, pb, strict=False):
        if x != y:
            return 1 if x > y else -1
    return (len(pa) > len(pb)) - (len(pa) < len(pb))
