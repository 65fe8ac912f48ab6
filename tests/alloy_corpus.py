"""Where the tests find `.alloy.json` files.

``FIXTURES``: the repository's own files (tests/fixtures/alloys), one per shape real alloys take;
tests always run against them, so a fresh clone needs nothing beside it.

The external conformance corpus (the real alloys published with the forge-alloy format) lives
outside the repository: ``$FOUNDRY_ALLOY_CORPUS``, else ``../shared/alloys`` beside it. A test
that reads it skips, saying where it looked, when it is absent; with
``FOUNDRY_REQUIRE_CORPUS=1`` (set by ``.ci/run``) that skip is a failure instead, so CI cannot
pass without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "alloys"
FIXTURE_FILES = sorted(FIXTURES.glob("*.alloy.json"))
EXECUTED_FIXTURE = FIXTURES / "executed-with-results.alloy.json"
DELIVER_FIXTURE = FIXTURES / "legacy-deliver.alloy.json"
NULLS_FIXTURE = FIXTURES / "explicit-nulls.alloy.json"

ENV_CORPUS = "FOUNDRY_ALLOY_CORPUS"
ENV_REQUIRE = "FOUNDRY_REQUIRE_CORPUS"


def corpus_dir() -> Path:
    """The conformance corpus directory (which may not exist)."""
    explicit = os.environ.get(ENV_CORPUS)
    return Path(explicit) if explicit else ROOT.parent / "shared" / "alloys"


def corpus_files() -> list[Path]:
    return sorted(corpus_dir().glob("*.alloy.json"))


def missing_corpus_reason() -> str:
    return (f"alloy conformance corpus not found: looked in {corpus_dir()} "
            f"(set {ENV_CORPUS} to a directory of .alloy.json files)")


def require_corpus() -> list[Path]:
    """The corpus files; skip (or, under FOUNDRY_REQUIRE_CORPUS=1, fail) when there are none."""
    files = corpus_files()
    if not files:
        if os.environ.get(ENV_REQUIRE) == "1":
            pytest.fail(missing_corpus_reason() + f"; {ENV_REQUIRE}=1 makes this a failure")
        pytest.skip(missing_corpus_reason())
    return files


def alloy_params(*, fixtures: bool = True) -> list[Any]:
    """pytest params: every fixture file (always), every corpus file (marked `corpus`), or one
    param that skips or fails saying where the corpus was looked for."""
    params: list[Any] = []
    if fixtures:
        params += [pytest.param(p, id="fixture-" + p.name.removesuffix(".alloy.json"))
                   for p in FIXTURE_FILES]
    corpus = corpus_files()
    params += [pytest.param(p, id="corpus-" + p.name.removesuffix(".alloy.json"))
               for p in corpus]
    if not corpus:
        params.append(pytest.param(None, id="corpus-missing"))
    return params


def alloy_or_skip(path: Path | None) -> Path:
    """The path of an `alloy_params` case; the `corpus-missing` case skips or fails here."""
    if path is None:
        require_corpus()
        raise AssertionError("unreachable: require_corpus found files it did not list")
    return path
