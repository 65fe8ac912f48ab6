"""Semantic version precedence (semver.org section 11): the rule behind "a pinned version may
only be edited to a strictly greater one"."""

from __future__ import annotations

import functools
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundry.domain.semver import is_greater, semver_key

# The ordered example of semver.org 11.4, each strictly lower than the next.
SPEC_ORDER = [
    "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
    "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "1.10.0", "2.0.0", "10.0.0",
]

numeric_id = st.integers(min_value=0, max_value=30).map(str)
alnum_id = st.from_regex(r"\A[a-z][a-z0-9-]{0,4}\Z")
prerelease = st.lists(numeric_id | alnum_id, min_size=1, max_size=3).map(".".join)
build = st.from_regex(r"\A[0-9a-z]{1,4}(\.[0-9a-z]{1,4})?\Z")
core = st.tuples(*[st.integers(min_value=0, max_value=12)] * 3).map(
    lambda t: f"{t[0]}.{t[1]}.{t[2]}")
versions = st.builds(
    lambda c, pre, b: c + (f"-{pre}" if pre else "") + (f"+{b}" if b else ""),
    core, st.none() | prerelease, st.none() | build,
)


def equal_precedence(a: str, b: str) -> bool:
    return not is_greater(a, b) and not is_greater(b, a)


def test_the_specs_own_example_is_in_strictly_increasing_order():
    for lower, higher in itertools.pairwise(SPEC_ORDER):
        assert is_greater(higher, lower), (higher, lower)
        assert not is_greater(lower, higher), (lower, higher)


def test_numbers_compare_as_numbers_not_as_text():
    assert is_greater("1.10.0", "1.9.0")
    assert is_greater("1.0.0-rc.10", "1.0.0-rc.9")


def test_a_release_is_greater_than_its_own_prerelease_but_not_the_next_ones():
    assert is_greater("2.0.0", "2.0.0-rc.1")
    assert is_greater("2.0.1-alpha", "2.0.0")
    assert is_greater("2.0.0-rc.1", "1.9.9")


def test_a_version_is_not_greater_than_itself():
    assert not is_greater("1.2.3", "1.2.3")
    assert not is_greater("1.2.3-beta.1", "1.2.3-beta.1")


def test_build_metadata_does_not_change_precedence():
    assert equal_precedence("1.2.3+build.5", "1.2.3")
    assert equal_precedence("1.2.3-rc.1+a", "1.2.3-rc.1+b")


@pytest.mark.parametrize("bad", ["1.2", "v1.2.3", "01.2.3", "1.2.3-", "1.2.3-01", "", "1.2.3 "])
def test_something_that_is_not_a_semantic_version_is_refused_naming_it(bad: str):
    with pytest.raises(ValueError, match="not a semantic version"):
        semver_key(bad)
    with pytest.raises(ValueError, match="not a semantic version"):
        is_greater(bad, "1.0.0")


@given(versions, versions)
def test_exactly_one_of_greater_lower_or_equal_holds(a: str, b: str):
    outcomes = [is_greater(a, b), is_greater(b, a), equal_precedence(a, b)]
    assert outcomes.count(True) == 1


@given(versions, versions, versions)
def test_greater_is_transitive(a: str, b: str, c: str):
    if is_greater(a, b) and is_greater(b, c):
        assert is_greater(a, c)


@given(st.lists(versions, min_size=2, max_size=8))
def test_the_sort_key_orders_exactly_as_is_greater_does(vs: list[str]):
    by_key = sorted(vs, key=semver_key)
    by_compare = sorted(vs, key=functools.cmp_to_key(
        lambda a, b: 1 if is_greater(a, b) else -1 if is_greater(b, a) else 0))
    assert [semver_key(v) for v in by_key] == [semver_key(v) for v in by_compare]
    for lower, higher in itertools.pairwise(by_key):
        assert not is_greater(lower, higher)


@given(core, prerelease)
def test_every_prerelease_is_lower_than_its_release_and_every_bump_is_greater(c: str, pre: str):
    major, minor, patch = (int(x) for x in c.split("."))
    assert is_greater(c, f"{c}-{pre}")
    for bumped in (f"{major}.{minor}.{patch + 1}", f"{major}.{minor + 1}.0", f"{major + 1}.0.0"):
        assert is_greater(bumped, c)
        assert is_greater(f"{bumped}-{pre}", c)
