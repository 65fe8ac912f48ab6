"""Malformed commands by the hundred: each is refused, nothing escapes, nothing is written.

Every generated command starts from a command that succeeds (checked by
`test_the_unbroken_base_commands_succeed`) and breaks exactly one thing: the command name, the
collection, the params' shape, one param's type, one required param, or one value of the recipe
data (out of range, bad semver, bad hash, unknown stage type, junk of the wrong type, a missing
required field). So a generated command that succeeds is a bug, not a badly generated case.
"""

from __future__ import annotations

import copy
import json
import math
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st

from foundry.adapters.bootstrap import build_commands
from foundry.domain.values.stages import STAGE_TYPES
from tests.conftest import EXAMPLE, count_events, drop_schema, pg_schema_url

R = "forge_recipes"
A = "forge_artifacts"
RID = "3f0c5a0e-6b1d-4c1e-9a57-2d9c0e7b6a11"  # the recipe every edit-like command targets
OTHER_ID = "9a1e2b3c-4d5e-4f60-8a7b-0c1d2e3f4a5b"  # never created

_BASE = json.loads(EXAMPLE.read_text())
# The example plus every optional block that has range rules, so that each rule can be broken.
VALID: dict[str, Any] = {
    **_BASE,
    "calibrationCorpus": {"name": "stdlib", "contentHash": "sha256:" + "ab" * 32,
                          "sizeBytes": 1024},
    "search": {"method": "binary", "quickEvalChunks": 10, "maxCandidates": 5,
               "confidenceThreshold": 0.95, "loraStepsIfNeeded": 500, "coverageThreshold": 0.85},
    "acceptanceCriteria": {"benchmarks": {"perplexity": {"min": 0.5}}},
    "hardware": {**_BASE["hardware"], "minVramGb": 1, "recommendedVramGb": 2,
                 "estimatedDurationMinutes": 5},
    "priorMetricBaselines": [{"metric": "perplexity", "value": 12.5, "source": "run 1",
                              "measuredAt": "2025-01-01", "measurementMethod": "wikitext"}],
    "evaluationBenchmarks": [{"name": "perplexity", "nShot": 0}],
    # stages: 0 prune, 1 train, 2 lora, 3 quant, 4 eval, 5 context-extend
    "stages": [*_BASE["stages"], {"type": "context-extend", "targetLength": 4096,
                                  "method": "yarn"}],
}
assert [s["type"] for s in VALID["stages"]] == [
    "prune", "train", "lora", "quant", "eval", "context-extend"
]

# -- the strict oracles (ASCII digits, no trailing newline: what semver.org and the doc say) --

STRICT_SEMVER = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
STRICT_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# -- junk of a given kind --------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | st.integers() | finite | st.text(max_size=10)
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8,
)
junk_lists = st.lists(junk, max_size=3)
junk_dicts = st.dictionaries(st.text(max_size=6), junk, max_size=3)
# Text that no lax coercion turns into a number, a bool, a enum member or a semver.
words = st.text(max_size=12).map(lambda s: "x" + s)
fractions = finite.filter(lambda x: x != int(x))
bools_as_neither = st.integers().filter(lambda i: i not in (0, 1)) | fractions

NOT_A: dict[str, st.SearchStrategy[Any]] = {
    # A value of any JSON type but the one named (None is left out: an update drops
    # top-level None fields, and several fields are optional).
    "str": st.booleans() | st.integers() | finite | junk_lists | junk_dicts,
    "enum": words | st.booleans() | st.integers() | finite | junk_lists | junk_dicts,
    "bool": words | bools_as_neither | junk_lists | junk_dicts,
    "int": words | fractions | junk_lists | junk_dicts,
    "float": words | junk_lists | junk_dicts,
    "list": st.text(max_size=10) | st.booleans() | st.integers() | finite | junk_dicts,
    "dict": st.text(max_size=10) | st.booleans() | st.integers() | finite | junk_lists,
    "int48": words | st.integers().filter(lambda i: i not in (4, 8)) | junk_lists | junk_dicts,
}

# -- breaking the recipe data -------------------------------------------------------------------

Path_ = tuple[str | int, ...]


def set_path(doc: dict[str, Any], path: Path_, value: Any) -> None:
    target: Any = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


def del_path(doc: dict[str, Any], path: Path_) -> None:
    target: Any = doc
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]


# (path, kind, inclusive min, inclusive max): every range rule of the recipe catalogue.
NUMERIC: list[tuple[Path_, str, float | None, float | None]] = [
    (("cycles",), "int", 1, None),
    (("stages", 0, "level"), "float", 0, 0.9),
    (("stages", 1, "steps"), "int", 1, None),
    (("stages", 1, "batchSize"), "int", 1, 64),
    (("stages", 1, "gradientAccumulation"), "int", 1, 16),
    (("stages", 1, "warmupRatio"), "float", 0, 1),
    (("stages", 1, "weightDecay"), "float", 0, 1),
    (("stages", 1, "maxGradientNorm"), "float", 0, 10),
    (("stages", 1, "sequenceLength"), "int", 128, 131072),
    (("stages", 2, "rank"), "int", 1, 256),
    (("stages", 2, "alpha"), "int", 1, 512),
    (("stages", 2, "dropout"), "float", 0, 1),
    (("stages", 2, "epochs"), "int", 1, 20),
    (("stages", 2, "batchSize"), "int", 1, 64),
    (("stages", 5, "targetLength"), "int", 1024, None),
    (("hardware", "minVramGb"), "float", 0, None),
    (("hardware", "recommendedVramGb"), "float", 0, None),
    (("hardware", "estimatedDurationMinutes"), "float", 0, None),
    (("calibrationCorpus", "sizeBytes"), "int", 0, None),
    (("search", "quickEvalChunks"), "int", 1, 50),
    (("search", "maxCandidates"), "int", 1, 20),
    (("search", "confidenceThreshold"), "float", 0.5, 0.999),
    (("search", "loraStepsIfNeeded"), "int", 100, 5000),
    (("search", "coverageThreshold"), "float", 0.5, 0.99),
    (("acceptanceCriteria", "benchmarks", "perplexity", "min"), "float", 0, 1),
    (("evaluationBenchmarks", 0, "nShot"), "int", 0, None),
]


def out_of_range(kind: str, lo: float | None, hi: float | None) -> st.SearchStrategy[Any]:
    options: list[st.SearchStrategy[Any]] = []
    if kind == "int":
        if lo is not None:
            options.append(st.integers(max_value=int(lo) - 1))
        if hi is not None:
            options.append(st.integers(min_value=int(hi) + 1))
        # Not a number at all: JSON has no NaN or Infinity, and neither is an integer.
        options.append(st.sampled_from([math.nan, math.inf, -math.inf]))
        return st.one_of(options)
    if lo is not None:  # nextafter: strictly below, so -0.0 is never drawn for a minimum of 0
        options.append(st.floats(max_value=math.nextafter(lo, -math.inf), allow_nan=False))
    if hi is not None:
        options.append(st.floats(min_value=math.nextafter(hi, math.inf), allow_nan=False))
    # NaN is in no range; Infinity is no finite quantity (and not JSON: a store could not
    # write it back out).
    options.append(st.sampled_from([math.nan, math.inf, -math.inf]))
    return st.one_of(options)


BAD_SEMVER = [
    "", "1", "1.0", "1.2", "1.2.3.4", "v1.2.3", "01.2.3", "1.02.3", "1.2.03", "-1.2.3",
    "1.2.3-", "1.2.3+", "1.2.3-01", "1.2.3-a..b", "1.2.3-beta_1", "latest", " 1.2.3",
    "1.2.3 ", "1.2.3\n", "1.2.3-rc.1\n", "1.2.3+build\n", "1\u0661.0.0", "\u0661.2.3",
]
BAD_HASHES = [
    "", "sha256:", "sha256:" + "a" * 63, "sha256:" + "a" * 65, "sha256:" + "A" * 64,
    "SHA256:" + "a" * 64, "sha1:" + "a" * 40, "a" * 64, "sha256:" + "g" * 64,
    "sha256: " + "a" * 63, " sha256:" + "a" * 64, "sha256:" + "a" * 64 + " ",
    "sha256:" + "a" * 64 + "\n", "md5:" + "a" * 32, "sha256:" + "\u0660" * 64,
]

# (path, kind) of values whose JSON type is fixed by the catalogue.
TYPED: list[tuple[Path_, str]] = [
    (("name",), "str"), (("description",), "str"), (("userSummary",), "str"),
    (("author",), "str"), (("license",), "str"), (("methodologyPaperUrl",), "str"),
    (("tags",), "list"), (("tags", 0), "str"), (("limitations",), "list"),
    (("limitations", 0), "str"),
    (("source",), "dict"), (("source", "baseModel"), "str"), (("source", "architecture"), "str"),
    (("source", "isMoE"), "bool"), (("source", "totalExperts"), "int"),
    (("stages",), "list"), (("stages", 0), "dict"), (("stages", 3), "dict"),
    (("stages", 0, "strategy"), "enum"), (("stages", 0, "minHeadsPerLayer"), "int"),
    (("stages", 0, "notes"), "str"), (("stages", 1, "scheduler"), "enum"),
    (("stages", 1, "precision"), "enum"), (("stages", 1, "learningRate"), "enum"),
    (("stages", 1, "optimizations"), "list"), (("stages", 2, "targetModules"), "list"),
    (("stages", 2, "quantize"), "bool"), (("stages", 2, "quantizeBits"), "int48"),
    (("stages", 2, "mergeAfter"), "bool"), (("stages", 3, "format"), "enum"),
    (("stages", 3, "quantTypes"), "list"), (("stages", 3, "quantTypes", 0), "str"),
    (("stages", 4, "benchmarks"), "list"), (("stages", 4, "benchmarks", 0), "dict"),
    (("stages", 4, "compareToBase"), "bool"), (("stages", 5, "method"), "enum"),
    (("quantTiers",), "list"), (("quantTiers", 0), "dict"), (("quantTiers", 0, "format"), "enum"),
    (("quantTiers", 0, "variants"), "list"), (("quantTiers", 0, "targetDevices"), "list"),
    (("evaluationBenchmarks",), "list"), (("evaluationBenchmarks", 0), "dict"),
    (("evaluationBenchmarks", 0, "name"), "str"),
    (("evaluationBenchmarks", 0, "submitToLeaderboard"), "bool"),
    (("hardware",), "dict"), (("hardware", "supportsCPU"), "bool"),
    (("hardware", "testedOn"), "list"), (("hardware", "deviceTargets"), "list"),
    (("cycles",), "int"), (("calibrationCorpus",), "dict"), (("calibrationCorpus", "name"), "str"),
    (("search",), "dict"), (("search", "method"), "enum"),
    (("search", "tryCompensationLora"), "bool"), (("acceptanceCriteria",), "dict"),
    (("acceptanceCriteria", "benchmarks"), "dict"),
    (("acceptanceCriteria", "benchmarks", "perplexity"), "dict"),
    (("priorMetricBaselines",), "list"), (("priorMetricBaselines", 0), "dict"),
    (("priorMetricBaselines", 0, "value"), "float"), (("target",), "dict"), (("outputs",), "dict"),
]

REQUIRED: list[Path_] = [
    ("name",), ("version",), ("source",), ("source", "baseModel"), ("source", "architecture"),
    ("stages", 0, "type"), ("stages", 0, "strategy"), ("stages", 0, "level"),
    ("stages", 3, "format"), ("stages", 3, "quantTypes"), ("stages", 4, "benchmarks"),
    ("stages", 4, "benchmarks", 0, "name"), ("stages", 5, "targetLength"), ("stages", 5, "method"),
    ("quantTiers", 0, "format"), ("quantTiers", 0, "variants"), ("evaluationBenchmarks", 0, "name"),
    ("calibrationCorpus", "name"), ("calibrationCorpus", "contentHash"),
    ("calibrationCorpus", "sizeBytes"), ("acceptanceCriteria", "benchmarks", "perplexity", "min"),
    ("priorMetricBaselines", 0, "metric"),
]

MISSING = object()  # marks a deleted field


@st.composite
def broken_recipe(draw: st.DrawFn) -> tuple[str, dict[str, Any], Path_]:
    """(what was broken, the full recipe with one thing broken, the path broken)."""
    doc = copy.deepcopy(VALID)
    kind = draw(st.sampled_from(
        ["range", "semver", "hash", "stage_type", "junk", "missing", "empty"]
    ))
    if kind == "range":
        path, num, lo, hi = draw(st.sampled_from(NUMERIC))
        value = draw(out_of_range(num, lo, hi))
    elif kind == "semver":
        path = ("version",)
        value = draw(
            st.sampled_from(BAD_SEMVER)
            | st.text(max_size=14).filter(lambda s: not STRICT_SEMVER.fullmatch(s))
            | st.integers() | finite | junk_lists | junk_dicts
        )
    elif kind == "hash":
        path = ("calibrationCorpus", "contentHash")
        hexish = st.text(alphabet="0123456789abcdefABCDEFg \n", max_size=70)
        value = draw(
            st.sampled_from(BAD_HASHES)
            | hexish.map(lambda h: "sha256:" + h).filter(lambda s: not STRICT_SHA256.fullmatch(s))
            | st.integers() | junk_lists | junk_dicts
        )
    elif kind == "stage_type":
        index = draw(st.integers(0, len(VALID["stages"])))  # the last one appends a stage
        path = ("stages", index, "type")
        if index == len(VALID["stages"]):
            doc["stages"].append({})
        value = draw(
            st.text(max_size=24).filter(lambda t: t not in STAGE_TYPES and t != "deliver")
            | st.sampled_from(["Prune", "prune ", "pruning", "lora\n", "LORA", "quant-",
                               "context_extend", "many-worlds", "evaluate"])
            | st.none() | st.integers() | junk_lists | junk_dicts
        )
    elif kind == "junk":
        path, of = draw(st.sampled_from(TYPED))
        value = draw(NOT_A[of])
    elif kind == "missing":
        path = draw(st.sampled_from(REQUIRED))
        value = MISSING
    else:  # "empty": a required string that must not be empty
        path = draw(st.sampled_from([("name",), ("calibrationCorpus", "name")]))
        value = ""
    if value is MISSING:
        del_path(doc, path)
    else:
        set_path(doc, path, value)
    return f"data-{kind} {'.'.join(map(str, path))} = {value!r}"[:300], doc, path


@st.composite
def bad_recipe_command(draw: st.DrawFn) -> tuple[str, str, Any]:
    """A data-carrying command whose recipe data has exactly one thing wrong."""
    why, doc, path = draw(broken_recipe())
    top = str(path[0])
    # A partial write sends only the broken top-level field; None removes a field in an update.
    partial = {top: doc.get(top)}
    command = draw(st.sampled_from(["data/create", "data/upsert", "data/update", "recipe/fork"]))
    if command == "data/create":
        params: dict[str, Any] = {"collection": R, "data": doc}
    elif command == "data/upsert":
        params = {"collection": R, "id": draw(st.sampled_from([RID, OTHER_ID])), "data": doc}
    elif command == "data/update":
        params = {"collection": R, "id": RID, "data": partial}
    else:
        params = {"id": RID, "data": partial}
    return why, command, params


# -- breaking the params ---------------------------------------------------------------------

BASES: dict[str, dict[str, Any]] = {
    "data/create": {"collection": R, "data": VALID},
    "data/read": {"collection": R, "id": RID},
    "data/update": {"collection": R, "id": RID, "data": {"description": "changed"}},
    "data/upsert": {"collection": R, "id": RID, "data": VALID},
    "data/delete": {"collection": R, "id": RID},
    "data/list": {"collection": R},
    "data/query": {"collection": R, "limit": 10},
    "data/count": {"collection": R},
    "data/history": {"collection": R, "id": RID},
    "recipe/fork": {"id": RID, "data": {"name": "child"}},
}
_WRITE = {"collection": "collection", "commandId": "cmdid", "author": "author",
          "reason": "reason"}
PARAMS: dict[str, dict[str, str]] = {
    "data/create": {**_WRITE, "data": "data", "id": "opt_uuid"},
    "data/read": {"collection": "collection", "id": "uuid"},
    "data/update": {**_WRITE, "id": "uuid", "data": "data", "expectedRevision": "posint"},
    "data/upsert": {**_WRITE, "id": "uuid", "data": "data", "expectedRevision": "posint"},
    "data/delete": {**_WRITE, "id": "uuid", "expectedRevision": "posint"},
    "data/list": {"collection": "collection", "filter": "filter", "orderBy": "orderBy",
                  "limit": "limit", "cursor": "cursor", "includeArchived": "bool"},
    "data/count": {"collection": "collection", "filter": "filter", "includeArchived": "bool"},
    "data/history": {"collection": "collection", "id": "uuid", "limit": "limit",
                     "afterRevision": "nonneg"},
    "recipe/fork": {"collection": "collection", "id": "uuid", "data": "data",
                    "commandId": "cmdid", "author": "author"},
}
PARAMS["data/query"] = PARAMS["data/list"]
REQUIRED_PARAMS: dict[str, list[str]] = {
    "data/create": ["collection", "data"], "data/read": ["collection", "id"],
    "data/update": ["collection", "id", "data"], "data/upsert": ["collection", "id", "data"],
    "data/delete": ["collection", "id"], "data/list": ["collection"],
    "data/query": ["collection"], "data/count": ["collection"],
    "data/history": ["collection", "id"], "recipe/fork": ["id"],
}

BAD_FILTERS: list[Any] = [
    {"name": {"$near": 1}}, {"$nor": [{"name": "a"}]}, {"$and": []}, {"$or": {"name": "a"}},
    {"$and": "name"}, {"name": {}}, {"bad path!": 1}, {"0": 1}, {"tags..0": 1},
    {"name": {"$in": []}}, {"name": {"$in": "abc"}}, {"name": {"$nin": [[1]]}},
    {"name": {"$regex": "("}}, {"name": {"$regex": 5}}, {"name": [1, 2]}, {"name": {"a": 1}},
    {"revision": "x"}, {"revision": {"$gt": "x"}}, {"archived": 1}, {"tags": {"$gt": True}},
    {"tags.0": {"$gt": None}}, {"revision": {"$contains": 1}}, {"createdAt": {"$gt": 5}},
    {"name": {"$contains": None}}, {"description": {"$eq": {"a": 1}}},
    {"name": {"$in": ["a"] * 501}},
]
_deep: Any = {"name": "a"}
for _ in range(12):
    _deep = {"$and": [_deep]}
BAD_FILTERS.append(_deep)

BAD_ORDERS: list[Any] = [
    [{"field": "name", "direction": "sideways"}], [{"direction": "asc"}], [{"field": 5}],
    [{"field": "bad path!"}], [{"field": "name"}, {"field": "name"}],
    [{"field": "id"}, {"field": "name"}], [{"field": f} for f in ("a", "b", "c", "d", "e")],
    ["name"], [None], [{"field": "name", "extra": 1}], [{"field": "0"}], [{"field": ""}],
]
NEAR_COLLECTIONS = ["Forge_Recipes", "forge_recipes ", " forge_recipes", "forge_recipe",
                    "recipes", "", "forge_recipes\n", "FORGE_ARTIFACTS", "forge_artifact"]
# forge_artifacts is a readable collection; writes to it, and its history or forks, are refused.
READS = {"data/read", "data/list", "data/query", "data/count"}


def bad_collection(command: str) -> st.SearchStrategy[Any]:
    valid = {R, A} if command in READS else {R}
    near = [*NEAR_COLLECTIONS, *([] if command in READS else [A])]
    return (st.sampled_from(near) | st.none() | st.booleans() | st.integers() | finite
            | junk_lists | junk_dicts | st.text(max_size=20).filter(lambda s: s not in valid))


def bad_param_value(kind: str, command: str) -> st.SearchStrategy[Any]:
    if kind == "collection":
        return bad_collection(command)
    non_str = st.booleans() | st.integers() | finite | junk_lists | junk_dicts
    not_uuid = st.text(min_size=1, max_size=40).filter(lambda s: not is_uuid(s))
    return {
        "uuid": non_str | st.none() | not_uuid,
        "opt_uuid": non_str | not_uuid,  # None (and "") mean "choose an id for me"
        "data": st.none() | st.text(max_size=10) | st.booleans() | st.integers() | finite
        | junk_lists,
        "cmdid": non_str | st.just("") | st.just("c" * 201),
        "author": non_str | st.none() | st.just("a" * 201),
        "reason": non_str | st.none() | st.just("r" * 2001),
        "posint": st.integers(max_value=0) | words | fractions | junk_lists | junk_dicts,
        "limit": st.integers(max_value=0) | st.integers(min_value=501) | words | fractions
        | st.none() | junk_lists | junk_dicts,
        "nonneg": st.integers(max_value=-1) | words | fractions | st.none() | junk_lists
        | junk_dicts,
        "bool": words | bools_as_neither | st.none() | junk_lists | junk_dicts,
        "cursor": st.booleans() | st.integers() | finite | junk_lists | junk_dicts
        | st.text(max_size=40),
        "filter": st.text(max_size=10) | st.booleans() | st.integers() | finite | junk_lists
        | st.sampled_from(BAD_FILTERS)
        | st.builds(
            lambda f, op, v: {f: {op: v}},
            st.sampled_from(["name", "tags", "source.baseModel", "revision", "cycles"]),
            st.text(max_size=8).map(lambda s: "$" + s).filter(
                lambda op: op not in ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt",
                                      "$lte", "$contains", "$regex")),
            scalars,
        ),
        "orderBy": st.text(max_size=10) | st.booleans() | st.integers() | finite | junk_dicts
        | st.sampled_from(BAD_ORDERS),
    }[kind]


@st.composite
def bad_params_command(draw: st.DrawFn) -> tuple[str, str, Any]:
    command = draw(st.sampled_from(sorted(BASES)))
    params = copy.deepcopy(BASES[command])
    how = draw(st.sampled_from(["wrong_type"] * 4 + ["missing", "extra", "not_a_dict"]))
    if how == "wrong_type":
        name = draw(st.sampled_from(sorted(PARAMS[command])))
        value = draw(bad_param_value(PARAMS[command][name], command))
        params[name] = value
        why = f"{name} = {value!r}"
    elif how == "missing":
        name = draw(st.sampled_from(REQUIRED_PARAMS[command]))
        params.pop(name, None)
        why = f"without {name}"
    elif how == "extra":
        name = draw(st.text(max_size=10).map(lambda s: "zz" + s))
        params[name] = draw(junk)
        why = f"unknown param {name!r}"
    else:
        params = draw(st.none() | st.booleans() | st.integers() | finite | st.text(max_size=20)
                      | junk_lists | st.just([params]))
        why = "params not an object"
    return f"{how}: {why}"[:300], command, params


@st.composite
def unknown_command(draw: st.DrawFn) -> tuple[str, str, Any]:
    known = set(build_commands().names())
    command = draw(
        st.sampled_from(["data/Create", "data/create ", " data/read", "data/", "/data/list",
                         "data\\list", "DATA/LIST", "data/teleport", "data/read/", "recipe/",
                         "recipe/forks", "data.list", "forge/unknown", ""])
        | st.text(max_size=20)
    )
    if command in known:
        command += "?"
    params = draw(st.sampled_from([copy.deepcopy(b) for b in BASES.values()]) | junk)
    return f"unknown command {command!r}", command, params


@st.composite
def wrong_collection(draw: st.DrawFn) -> tuple[str, str, Any]:
    command = draw(st.sampled_from(sorted(BASES)))
    collection = draw(bad_collection(command))
    params = {**copy.deepcopy(BASES[command]), "collection": collection}
    return f"collection {collection!r}", command, params


@st.composite
def malformed_command(draw: st.DrawFn) -> tuple[str, str, Any]:
    # Weighted: the recipe data has the most rules to break.
    kind = draw(st.sampled_from(["unknown"] * 2 + ["collection"] * 2 + ["params"] * 5
                                + ["recipe"] * 7))
    strategy = {"unknown": unknown_command(), "collection": wrong_collection(),
                "params": bad_params_command(), "recipe": bad_recipe_command()}[kind]
    return draw(strategy)


malformed_commands = malformed_command()


# -- the property ----------------------------------------------------------------------------


def assert_refused(foundry: Any, case: tuple[str, str, Any]) -> None:
    why, command, params = case
    note(f"{command} ({why})")
    event(why.split(" ")[0].rstrip(":"))  # the kind of break (--hypothesis-show-statistics)
    before = count_events(foundry)
    result = foundry.execute(command, copy.deepcopy(params))  # must not raise
    assert isinstance(result, dict), result
    assert result.get("success") is False, f"{command} ({why}) succeeded: {result}"
    assert isinstance(result.get("error"), str) and result["error"].strip(), result
    # Every case is a fault of the caller's input: anything else (internal_error,
    # store_unavailable) means the input got past validation and something below broke.
    assert result.get("errorCode") == "invalid_input", f"{command} ({why}): {result}"
    json.dumps(result, allow_nan=False)  # the envelope itself must be JSON
    assert count_events(foundry) == before, f"{command} ({why}) wrote events: {result}"


def seed(foundry: Any) -> Any:
    created = foundry.execute("data/create", {"collection": R, "id": RID, "data": VALID})
    assert created["success"], created
    return foundry


@pytest.fixture
def sqlite_foundry(tmp_path: Path) -> Iterator[Any]:
    from foundry.adapters.bootstrap import Foundry

    with Foundry.open(f"sqlite:///{tmp_path / 'foundry.db'}") as f:
        yield seed(f)


@pytest.fixture
def pg_foundry() -> Iterator[Any]:
    from foundry.adapters.bootstrap import Foundry

    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        with Foundry.open(pg_schema_url(schema)) as f:
            yield seed(f)
    finally:
        drop_schema(schema)


def _case(command: str, params: dict[str, Any], why: str) -> tuple[str, str, Any]:
    return why, command, params


def _with(path: Path_, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(VALID)
    set_path(doc, path, value)
    return doc


# Cases worth running on every run, whatever hypothesis draws.
EXPLICIT = [
    _case("data/create", {"collection": R, "data": _with(("version",), "1.2.3\n")},
          "semver with a trailing newline"),
    _case("data/create", {"collection": R, "data": _with(("version",), "1\u0661.0.0")},
          "semver with a non-ASCII digit"),
    _case("data/create",
          {"collection": R, "data": _with(("calibrationCorpus", "contentHash"),
                                          "sha256:" + "a" * 64 + "\n")},
          "hash with a trailing newline"),
    _case("data/update", {"collection": R, "id": RID,
                          "data": {"hardware": {"minVramGb": math.inf}}},
          "Infinity VRAM"),
    _case("data/list", {"collection": R, "filter": {"name": {"$near": 1}}}, "unknown operator"),
    _case("data/list", {"collection": R, "cursor": "garbage"}, "malformed cursor"),
]


@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=malformed_commands)
@example(case=EXPLICIT[0])
@example(case=EXPLICIT[1])
@example(case=EXPLICIT[2])
@example(case=EXPLICIT[3])
@example(case=EXPLICIT[4])
@example(case=EXPLICIT[5])
def test_malformed_commands_are_refused_and_write_nothing_on_sqlite(sqlite_foundry, case):
    assert_refused(sqlite_foundry, case)


@pytest.mark.postgres
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=malformed_commands)
@example(case=EXPLICIT[3])
def test_malformed_commands_are_refused_and_write_nothing_on_postgres(pg_foundry, case):
    assert_refused(pg_foundry, case)


def test_the_unbroken_base_commands_succeed(sqlite_foundry):
    """The generators break commands that work: without the break, each one succeeds."""
    order = [c for c in sorted(BASES) if c != "data/delete"] + ["data/delete"]
    # Recipe names are unique among live recipes (#16 item 6): each new recipe gets its own.
    def named(n: int) -> dict[str, Any]:
        return {**VALID, "name": f"unbroken-{n}"}

    for command in order:
        params = copy.deepcopy(BASES[command])
        if command == "data/create":
            params["data"] = named(0)
        result = sqlite_foundry.execute(command, params)
        assert result["success"], (command, result)
    upsert_new = {"collection": R, "id": OTHER_ID, "data": named(1)}
    assert sqlite_foundry.execute("data/upsert", copy.deepcopy(upsert_new))["success"]
    fresh = {"collection": R, "data": named(2)}
    rid = sqlite_foundry.execute("data/create", copy.deepcopy(fresh))["id"]
    for top in VALID:  # every partial write the recipe breaker sends, unbroken
        value = f"fork-{top}" if top == "name" else VALID[top]
        for command, params in [
            ("data/update", {"collection": R, "id": rid, "data": {top: VALID[top]}}),
            ("recipe/fork", {"id": rid, "data": {top: value}}),
        ]:
            result = sqlite_foundry.execute(command, copy.deepcopy(params))
            assert result["success"], (command, top, result)


@pytest.mark.parametrize(
    ("label", "data"),
    [
        ("NaN in a kept unknown field", {**VALID, "futureField": math.nan}),
        ("Infinity in a kept unknown field", {**VALID, "futureField": [math.inf]}),
        ("a NUL character in a string", {**VALID, "name": "tiny\x00forged"}),
        ("a lone surrogate in a string", {**VALID, "description": "bad \ud800 text"}),
    ],
)
def test_values_no_store_can_hold_are_refused_and_the_view_keeps_working(
    foundry, label, data
):
    """JSON parsers accept NaN/Infinity and "\\ud800"; PostgreSQL cannot store NUL in text or
    NaN in jsonb. Such a value must be refused up front: once its event is written, every later
    catch-up of the view fails on it and every read of every recipe fails with it."""
    seed(foundry)
    before = count_events(foundry)
    result = foundry.execute("data/create", {"collection": R, "data": data})
    assert result["success"] is False and result["errorCode"] == "invalid_input", (label, result)
    assert count_events(foundry) == before, label
    read = foundry.execute("data/read", {"collection": R, "id": RID})
    assert read["success"] and read["found"], (label, read)
