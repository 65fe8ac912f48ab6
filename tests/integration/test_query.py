"""foundry.projections.query against real SQLite and PostgreSQL tables, checked with a Python
reference: on hand-made tables, and through Foundry.execute on both stores ($regex included)."""

from __future__ import annotations

import json
import operator
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foundry.projections.query import (
    CompiledQuery,
    QueryError,
    TableSpec,
    compile_count,
    compile_list,
    make_cursor,
    sqlite_regexp,
)

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"

# -- pure-Python reference semantics --------------------------------------------------------------


def get(doc: Any, path: str) -> Any:
    """Value at a dotted path; None for JSON null and for a missing path alike."""
    cur = doc
    for seg in path.split("."):
        if isinstance(cur, dict) and not seg.isdigit() and seg in cur:
            cur = cur[seg]
        elif isinstance(cur, list) and seg.isdigit() and int(seg) < len(cur):
            cur = cur[int(seg)]
        else:
            return None
    return cur


def is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def eq(x: Any, v: Any) -> bool:
    if v is None:
        return x is None
    if isinstance(v, bool):
        return isinstance(x, bool) and x == v
    if is_num(v):
        return is_num(x) and x == v
    return isinstance(x, str) and x == v


CMP: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le,
}


def cond(x: Any, op: str, v: Any) -> bool:
    if op == "$eq":
        return eq(x, v)
    if op == "$ne":
        return not eq(x, v)
    if op == "$in":
        return any(eq(x, a) for a in v)
    if op == "$nin":
        return not any(eq(x, a) for a in v)
    if op in CMP:
        same = (is_num(x) and is_num(v)) or (isinstance(x, str) and isinstance(v, str))
        return same and CMP[op](x, v)
    if op == "$contains":
        if isinstance(x, list):
            return any(eq(e, v) for e in x)
        return isinstance(x, str) and isinstance(v, str) and v in x
    assert op == "$regex"
    return isinstance(x, str) and re.search(reference_pattern(v), x, RE_FLAGS) is not None


# PostgreSQL's `~` semantics, written with Python's own `re` (not with query_regex, which this
# checks): `.` crosses newlines, classes are ASCII, `$` is the end of the string only.
RE_FLAGS = re.DOTALL | re.ASCII


def reference_pattern(pattern: str) -> str:
    return re.sub(r"(?<!\\)\$", r"\\Z", pattern)


def matches(doc: dict[str, Any], flt: Mapping[str, Any]) -> bool:
    for key, value in flt.items():
        if key == "$and":
            ok = all(matches(doc, f) for f in value)
        elif key == "$or":
            ok = any(matches(doc, f) for f in value)
        else:
            ops = value if isinstance(value, dict) else {"$eq": value}
            ok = all(cond(get(doc, key), op, arg) for op, arg in ops.items())
        if not ok:
            return False
    return True


def rank(x: Any) -> tuple[int, Any]:
    """Sort key: null < numbers < strings < false < true < arrays/objects (which tie)."""
    if x is None:
        return (0, 0)
    if isinstance(x, bool):
        return (4 if x else 3, 0)
    if is_num(x):
        return (1, x)
    if isinstance(x, str):
        return (2, x)
    return (5, 0)


def ref_list(docs: list[dict[str, Any]], flt: Mapping[str, Any] | None,
             order: Sequence[tuple[str, str]], key: str = "id") -> list[str]:
    rows = [d for d in docs if matches(d, flt or {})]
    for path, direction in reversed(order):  # stable sorts, least significant key first
        rows.sort(key=lambda d, p=path: rank(get(d, p)), reverse=direction == "desc")
    return [d[key] for d in rows]


# -- the scenario dataset, stored in both databases ---------------------------------------------

MISSING = object()
NAMES = ["Alpha", "alpha", "beta", "Émile", "zeta", "Zulu", "_under", None, "beta"]
BASES = ["llama-3", "mistral", "qwen2", None]
TAGS: list[Any] = [["nlp", "lora"], [], ["vision"], MISSING, ["nlp", 3, True], ["lora"], "nlp-str"]
NOTES: list[Any] = ["x", 3, True, None, MISSING, ["a"], {"k": 1}, 2.5, "abc", False, "10", 10]
LOSSES: list[Any] = [0.5, 0.1, None, 1.25, MISSING, 3]


def make_doc(i: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": f"m{i:03d}",
        "name": NAMES[i % 9],
        "size": (i * 7) % 11 if i % 6 else None,
        "score": [0.5, 0.25, 1.0, 0.75, 2, None][i % 5],
        "active": [True, False, None][i % 3],
        "createdAt": f"2024-01-{1 + (i * 5) % 28:02d}T{(i * 3) % 24:02d}:00:00+00:00",
        "source": {"baseModel": BASES[i % 4], "kind": ["hf", "local"][i % 2]},
        "metrics": {"loss": LOSSES[i % 6], "epochs": i % 4},
        "tags": TAGS[i % 7],
        "note": NOTES[i % 12],
    }
    if i % 10 == 7:
        del doc["source"]
    if i % 5 == 0:  # keys that are SQL words: "null" must not become an SQL NULL path element
        doc["meta"] = {"null": i % 3, "select": "x" * (i % 4)}
    for parent in (doc, doc["metrics"]):
        for k in [k for k, v in parent.items() if v is MISSING]:
            del parent[k]
    return doc


ALL_DOCS = [make_doc(i) for i in range(52)]
ARCHIVED = {d["id"] for i, d in enumerate(ALL_DOCS) if i % 13 == 5}
DOCS = [d for d in ALL_DOCS if d["id"] not in ARCHIVED]
COLUMNS = {
    "id": ("id", "text"), "name": ("name", "text"), "size": ("size", "int"),
    "score": ("score", "real"), "active": ("active", "bool"),
    "createdAt": ("created_at", "timestamp"), "source.baseModel": ("base_model", "text"),
}


@dataclass
class Db:
    dialect: Any
    conn: Any
    spec: TableSpec

    def rows(self, q: CompiledQuery) -> list[tuple[str, dict[str, Any]]]:
        out = self.conn.execute(q.sql, q.params).fetchall()
        return [(r[0], json.loads(r[1]) if isinstance(r[1], str) else r[1]) for r in out]

    def compile(self, flt: Any = None, order_by: Any = None, limit: int = 500,
                cursor: str | None = None) -> CompiledQuery:
        return compile_list(self.spec, self.dialect, filter=flt, order_by=order_by, limit=limit,
                            cursor=cursor, select="id, doc")

    def ids(self, flt: Any = None, order_by: Any = None) -> list[str]:
        return [i for i, _ in self.rows(self.compile(flt, order_by))]


def _row(doc: dict[str, Any]) -> tuple[Any, ...]:
    archived = 1 if doc["id"] in ARCHIVED else 0
    return (*(get(doc, p) for p in COLUMNS), archived)


def _sqlite(path: str) -> Iterator[Db]:
    conn = sqlite3.connect(path)
    conn.create_function("regexp", 2, sqlite_regexp, deterministic=True)
    conn.execute(
        "CREATE TABLE models (id TEXT PRIMARY KEY, name TEXT, size INTEGER, score REAL,"
        " active INTEGER, created_at TEXT, base_model TEXT, archived INTEGER NOT NULL, doc TEXT)"
    )
    conn.executemany("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [(*_row(d), json.dumps(d)) for d in ALL_DOCS])
    yield Db("sqlite", conn, TableSpec("models", "doc", COLUMNS, "id", "archived = 0"))
    conn.close()


def _postgres() -> Iterator[Db]:
    import psycopg
    from psycopg.types.json import Jsonb

    table = f"query_test_{uuid.uuid4().hex[:12]}"
    conn = psycopg.connect(PG_DSN, autocommit=True)
    conn.execute(
        f'CREATE TABLE {table} (id text COLLATE "C" PRIMARY KEY, name text COLLATE "C",'
        " size bigint, score double precision, active boolean, created_at timestamptz,"
        f' base_model text COLLATE "C", archived integer NOT NULL, doc jsonb NOT NULL)'
    )
    try:
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                            [(*_row(d), Jsonb(d)) for d in ALL_DOCS])
        yield Db("postgres", conn, TableSpec(table, "doc", COLUMNS, "id", "archived = 0"))
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.close()


DIALECTS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module", params=DIALECTS)
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Db]:
    if request.param == "sqlite":
        yield from _sqlite(str(tmp_path_factory.mktemp("query") / "models.db"))
    else:
        yield from _postgres()


# -- scenarios -----------------------------------------------------------------------------------

FILTERS: list[dict[str, Any]] = [
    {}, {"name": "alpha"}, {"name": {"$eq": "Alpha"}}, {"name": None}, {"name": {"$ne": "beta"}},
    {"name": {"$ne": None}}, {"name": {"$in": ["zeta", "Zulu", None]}},
    {"name": {"$nin": ["zeta", "beta"]}}, {"name": {"$gt": "Zulu"}},
    {"name": {"$gte": "a", "$lt": "z"}}, {"name": {"$contains": "lph"}},
    {"name": {"$regex": "^[A-Z]"}}, {"id": {"$lt": "m010"}},
    {"size": 3}, {"size": {"$gt": 4, "$lte": 9}}, {"size": {"$in": [1, 2, 3]}},
    {"size": {"$nin": [1, 2]}}, {"size": None}, {"score": {"$gte": 0.75}}, {"score": 2},
    {"score": {"$lt": 1}}, {"active": True}, {"active": False}, {"active": {"$ne": True}},
    {"active": None}, {"active": {"$in": [False, None]}},
    {"createdAt": {"$gte": "2024-01-10T00:00:00+00:00", "$lt": "2024-01-20T00:00:00+00:00"}},
    {"source.baseModel": "qwen2"}, {"source.baseModel": {"$regex": "^(llama|qwen)"}},
    {"source.baseModel": {"$contains": "stra"}}, {"source.baseModel": None},
    {"source.kind": "hf"}, {"source.kind": {"$ne": "hf"}}, {"source": None},
    {"metrics.loss": {"$gt": 0.2}}, {"metrics.loss": None}, {"metrics.loss": {"$in": [0.5, 3]}},
    {"metrics.loss": 3.0}, {"metrics.epochs": {"$lte": 1}}, {"metrics.epochs": 2.0},
    {"tags": {"$contains": "nlp"}}, {"tags": {"$contains": 3}}, {"tags": {"$contains": True}},
    {"tags": {"$contains": "str"}}, {"tags": {"$ne": None}}, {"tags.0": "nlp"},
    {"tags.1": {"$gte": "m"}}, {"note": 3}, {"note": "3"}, {"note": True}, {"note": 1},
    {"note": {"$gt": 2}}, {"note": {"$gt": "a"}}, {"note": {"$lt": "5"}}, {"note": {"$ne": 3}},
    {"note": None}, {"note": {"$nin": [3, "x", None]}}, {"note": {"$regex": "^[0-9]+$"}},
    {"note": {"$contains": "a"}}, {"note.k": 1}, {"missing.deep.path": None},
    {"missing": {"$ne": None}}, {"meta.null": 0}, {"meta.null": None},
    {"meta.select": {"$gte": "xx"}}, {"$or": [{"size": 3}, {"tags": {"$contains": "vision"}}]},
    {"$and": [{"active": True}, {"$or": [{"name": "beta"}, {"score": {"$gt": 0.5}}]}]},
    {"name": "beta", "size": {"$ne": None}},
]

ORDERS: list[list[dict[str, Any]]] = [
    [], [{"field": "name"}], [{"field": "name", "direction": "DESC"}],
    [{"field": "size", "direction": "desc"}, {"field": "name"}],
    [{"field": "active"}, {"field": "score", "direction": "desc"}],
    [{"field": "note"}], [{"field": "note", "direction": "desc"}],
    [{"field": "metrics.loss"}, {"field": "source.kind", "direction": "desc"}],
    [{"field": "createdAt", "direction": "desc"}],
    [{"field": "meta.null", "direction": "desc"}, {"field": "meta.select"}],
    [{"field": "tags.0"}, {"field": "metrics.epochs", "direction": "desc"},
     {"field": "source.baseModel"}, {"field": "id", "direction": "desc"}],
]


@pytest.mark.parametrize("flt", FILTERS, ids=[json.dumps(f) for f in FILTERS])
def test_filter_matches_reference(db: Db, flt: dict[str, Any]) -> None:
    expected = ref_list(DOCS, flt, [("id", "asc")])
    assert db.ids(flt) == expected
    count = compile_count(db.spec, db.dialect, filter=flt)
    assert db.conn.execute(count.sql, count.params).fetchone()[0] == len(expected)


def test_typed_json_semantics_by_hand(db: Db) -> None:
    assert db.ids({"note": 3}) == ["m001", "m013", "m025", "m037", "m049"]
    assert db.ids({"note": "10"}) == ["m010", "m022", "m034", "m046"]
    assert db.ids({"note": 10}) == ["m011", "m023", "m035", "m047"]
    assert db.ids({"note": True}) == ["m002", "m014", "m026", "m038", "m050"]
    # "abc" and ["a"]; m005 and m044 would match but are archived
    assert db.ids({"note": {"$contains": "a"}}) == ["m008", "m017", "m020", "m029", "m032", "m041"]
    assert "m005" not in db.ids({})  # archived rows are hidden by base_where


@pytest.mark.parametrize("order_by", ORDERS, ids=[json.dumps(o) for o in ORDERS])
def test_order_and_paging(db: Db, order_by: list[dict[str, Any]]) -> None:
    flt = {"name": {"$ne": "zeta"}}
    full = db.compile(flt, order_by)
    assert full.order[-1][0] == "id"
    expected = ref_list(DOCS, flt, full.order)
    assert [i for i, _ in db.rows(full)] == expected
    seen: list[str] = []
    cursor = None
    for _ in range(len(expected) + 2):
        rows = db.rows(db.compile(flt, order_by, limit=7, cursor=cursor))
        assert len(rows) <= 8  # LIMIT limit + 1
        seen += [i for i, _ in rows[:7]]
        if len(rows) <= 7:
            break
        last_id, last_doc = rows[6]
        cursor = make_cursor([get(last_doc, p) for p, _ in full.order[:-1]], last_id, full.order)
    assert seen == expected


def test_cursor_refused_for_other_order_and_malformed(db: Db) -> None:
    q = db.compile(order_by=[{"field": "size"}])
    good = make_cursor([3], "m010", q.order)
    assert db.rows(db.compile(order_by=[{"field": "size"}], cursor=good))
    with pytest.raises(QueryError, match="different orderBy") as err:
        db.compile(order_by=[{"field": "size", "direction": "desc"}], cursor=good)
    assert err.value.field == "cursor"
    bad = [
        "!!!", "abc", make_cursor([], "m1", [("id", "asc")]), make_cursor(["x"], "m1", q.order),
        make_cursor([3], None, q.order), "eyJvIjoxfQ",
    ]
    for cursor in bad:
        with pytest.raises(QueryError) as err:
            db.compile(order_by=[{"field": "size"}], cursor=cursor)
        assert err.value.field == "cursor", cursor


@pytest.mark.parametrize(("kwargs", "field", "text"), [
    ({"flt": {"name": {"$foo": 1}}}, "name", "$foo"),
    ({"flt": {"name": {"a": 1}}}, "name", "allowed: $eq, $ne, $in"),
    ({"flt": {"$nor": [{"a": 1}]}}, "$nor", "$and"),
    ({"flt": {"$or": []}}, "$or", "non-empty"),
    ({"flt": {"name": {"$in": []}}}, "name", "non-empty list"),
    ({"flt": {"tags": {"$nin": "x"}}}, "tags", "non-empty list"),
    ({"flt": {"tags": ["a"]}}, "tags", "JSON scalar"),
    ({"flt": {"size": "3"}}, "size", "int"),
    ({"flt": {"score": float("nan")}}, "score", "real"),
    ({"flt": {"active": {"$gt": True}}}, "active", "number or string"),
    ({"flt": {"size": {"$contains": 1}}}, "size", "$contains"),
    ({"flt": {"note": {"$contains": None}}}, "note", "null"),
    ({"flt": {"note": {"$regex": "("}}}, "note", "$regex outside the supported subset"),
    ({"flt": {"note": {"$regex": "\\bword"}}}, "note", "$regex outside the supported subset"),
    ({"flt": {"name": {"$in": ["x"] * 500}, "$or": [{"size": i} for i in range(4_600)]}},
     "filter", "bound values"),
    ({"flt": {"createdAt": "yesterday"}}, "createdAt", "timestamp"),
    ({"flt": {"a..b": 1}}, "a..b", "invalid field path"),
    ({"flt": {"source.base-model": 1}}, "source.base-model", "invalid field path"),
    ({"flt": {"0.x": 1}}, "0.x", "invalid field path"),
    ({"flt": {"x'); DROP TABLE models; --": 1}}, "x'); DROP TABLE models; --", "invalid"),
    ({"limit": 0}, "limit", "1 to 500"),
    ({"limit": 501}, "limit", "1 to 500"),
    ({"order_by": [{"field": "name"}] * 5}, "orderBy", "at most 4"),
    ({"order_by": [{"field": "name", "direction": "up"}]}, "orderBy[0].direction", "asc"),
    ({"order_by": [{"field": "tags.x y"}]}, "tags.x y", "invalid field path"),
    ({"order_by": [{"field": "id"}, {"field": "name"}]}, "id", "last"),
    ({"order_by": [{"field": "name", "dir": "asc"}]}, "orderBy[0]", "field, direction"),
    ({"order_by": [{"direction": "asc"}]}, "orderBy[0].field", "field path"),
    ({"order_by": {"field": "name"}}, "orderBy", "list"),
    ({"flt": [{"name": "a"}]}, "filter", "object"),
])
def test_query_errors_name_the_field(db: Db, kwargs: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(QueryError) as err:
        db.compile(**kwargs)
    assert err.value.field == field
    assert text in err.value.rule
    assert str(err.value) == f"{field}: {err.value.rule}"


def test_sql_is_parameterised(db: Db) -> None:
    q = db.compile({"name": "O'Brien; DROP TABLE models", "tags": {"$contains": "x'"}},
                   [{"field": "note"}], cursor=None)
    assert "O'Brien" not in q.sql and "x'" not in q.sql
    assert q.sql.endswith("LIMIT ?" if db.dialect == "sqlite" else "LIMIT %s")
    assert q.params[-1] == 501
    assert db.rows(q) == []


def test_make_cursor_normalises_values() -> None:
    import datetime as dt
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    order = [("createdAt", "desc"), ("tags", "asc"), ("id", "asc")]
    assert make_cursor([when, ["a", "b"]], uuid.UUID(int=1), order) == make_cursor(
        [when.isoformat(), []], str(uuid.UUID(int=1)), order)
    with pytest.raises(ValueError, match="expected 2 sort values"):
        make_cursor([when], "k", order)


def test_unknown_dialect() -> None:
    spec = TableSpec("t", "doc", {}, "id")
    with pytest.raises(QueryError) as err:
        compile_count(spec, "mysql", filter=None)  # type: ignore[arg-type]
    assert err.value.field == "dialect"


def test_sqlite_regexp() -> None:
    # It takes query_regex's Python spelling (what compile_list binds), not the raw pattern.
    assert sqlite_regexp("^a.c\\Z", "abc")
    assert not sqlite_regexp("b", None)
    assert not sqlite_regexp("1", 1)
    assert sqlite_regexp("b", "abc")


# -- property: SQLite agrees with the reference on random data, filters and orders -------------

SMALL_SPEC = TableSpec("t", "doc", {"n": ("n", "int"), "s": ("s", "text"), "k": ("k", "text")},
                       "k")
# sampled_from, not integers()/text(): few distinct values, so rows tie and filters hit often
TEXT = st.sampled_from(["", "a", "ab", "B", "é", "10", "ba"])
SCALARS: list[Any] = [None, True, False, -1, 0, 1, 2, 0.5, 1.0, "", "a", "ab", "B", "é", "10"]
JSON_SCALAR = st.sampled_from(SCALARS)
FIELD_VALUE = st.one_of(st.sampled_from([*SCALARS, MISSING, {"x": 1}]),
                        st.lists(JSON_SCALAR, max_size=3))
PATHS = ["n", "s", "a", "b.c", "t", "t.0", "zz"]
VALUES = {"n": st.sampled_from([None, -1, 0, 1, 2]),
          "s": st.sampled_from([None, "a", "ab", "B", "é"])}


def _doc_strategy() -> st.SearchStrategy[dict[str, Any]]:
    def build(n: Any, s: Any, a: Any, c: Any, t: Any) -> dict[str, Any]:
        doc = {"n": n, "s": s, "a": a, "b": {"c": c}, "t": t}
        return {k: v for k, v in doc.items() if v is not MISSING and v != {"c": MISSING}}
    mostly_list = st.one_of(st.lists(JSON_SCALAR, min_size=1, max_size=3), FIELD_VALUE)
    return st.builds(build, VALUES["n"], VALUES["s"], FIELD_VALUE, FIELD_VALUE, mostly_list)


def _condition(path: str) -> st.SearchStrategy[dict[str, Any]]:
    value = VALUES.get(path, JSON_SCALAR)
    ordered = {"n": st.integers(-2, 3), "s": TEXT}.get(path, st.sampled_from(SCALARS[3:]))
    ops: list[st.SearchStrategy[Any]] = [
        value, st.fixed_dictionaries({"$eq": value}), st.fixed_dictionaries({"$ne": value}),
        st.builds(lambda v: {"$in": v}, st.lists(value, min_size=1, max_size=3)),
        st.builds(lambda v: {"$nin": v}, st.lists(value, min_size=1, max_size=3)),
        st.builds(lambda o, v: {o: v}, st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), ordered),
    ]
    if path != "n":
        contained = TEXT if path == "s" else JSON_SCALAR.filter(lambda v: v is not None)
        ops += [st.fixed_dictionaries({"$contains": contained}),
                st.fixed_dictionaries({"$regex": st.sampled_from(["^a", "b$", "[0-9]", "é|B"])})]
    return st.one_of(ops).map(lambda c: {path: c})


FILTER = st.recursive(
    st.sampled_from(PATHS).flatmap(_condition),
    lambda sub: st.one_of(st.builds(lambda fs: {"$and": fs}, st.lists(sub, min_size=1, max_size=3)),
                          st.builds(lambda fs: {"$or": fs}, st.lists(sub, min_size=1, max_size=3))),
    max_leaves=4,
)
ORDER_BY = st.lists(st.builds(lambda f, d: {"field": f, "direction": d},
                              st.sampled_from(PATHS), st.sampled_from(["asc", "desc"])),
                    max_size=3, unique_by=lambda e: e["field"])


DOCS_ST = st.lists(_doc_strategy(), min_size=3, max_size=16)


def _small_db(docs: list[dict[str, Any]]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.create_function("regexp", 2, sqlite_regexp, deterministic=True)
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, s TEXT, doc TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)",
                     [(d["k"], d.get("n"), d.get("s"), json.dumps(d)) for d in docs])
    return conn


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=DOCS_ST, flt=FILTER)
def test_sqlite_filter_matches_reference(docs: list[dict[str, Any]], flt: dict[str, Any]) -> None:
    docs = [{**d, "k": f"k{i:02d}"} for i, d in enumerate(docs)]
    conn = _small_db(docs)
    q = compile_list(SMALL_SPEC, "sqlite", filter=flt, order_by=None, limit=500, cursor=None,
                     select="k")
    expected = ref_list(docs, flt, q.order, key="k")
    assert [k for (k,) in conn.execute(q.sql, q.params)] == expected
    count = compile_count(SMALL_SPEC, "sqlite", filter=flt)
    assert conn.execute(count.sql, count.params).fetchone()[0] == len(expected)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=DOCS_ST, flt=st.one_of(st.just({}), FILTER), limit=st.integers(1, 4),
       order_by=ORDER_BY.filter(bool))
def test_sqlite_order_and_paging_match_reference(
    docs: list[dict[str, Any]], flt: dict[str, Any], order_by: list[dict[str, Any]], limit: int
) -> None:
    docs = [{**d, "k": f"k{i:02d}"} for i, d in enumerate(docs)]
    conn = _small_db(docs)

    def page(cursor: str | None) -> tuple[CompiledQuery, list[tuple[str, Any]]]:
        q = compile_list(SMALL_SPEC, "sqlite", filter=flt, order_by=order_by, limit=limit,
                         cursor=cursor, select="k, doc")
        return q, [(k, json.loads(doc)) for k, doc in conn.execute(q.sql, q.params)]

    q, rows = page(None)
    expected = ref_list(docs, flt, q.order, key="k")
    seen: list[str] = []
    for _ in range(len(docs) + 1):  # a seek that does not advance must fail, not hang
        seen += [k for k, _ in rows[:limit]]
        if len(rows) <= limit:
            break
        k, doc = rows[limit - 1]
        q, rows = page(make_cursor([get(doc, p) for p, _ in q.order[:-1]], k, q.order))
    assert seen == expected


# -- property: both stores agree with the reference through Foundry.execute, $regex included ----

# Values chosen where the engines differ: a final newline ($), a newline (.), non-ASCII digits
# and letters (\d, \w), tabs (\s), metacharacters as literals.
RECIPE_TEXTS = ["alpha", "Alpha-2", "tiny\n", "a\nb", "x٣y", "é_1", "tab\there", "cost $5",
                "{x}", "[a]", "b.c", "", "AB12", "zz\r\n", "q?q", "10", "Ω"]
REGEX_ATOMS = ["a", "b", "A", "1", "é", "x", ".", "\\.", "\\$", "\\{", "\\[", "\\?", "\\d", "\\w",
               "\\s", "\\D", "\\W", "\\S", "[a-c]", "[^a]", "[\\d_]", "[A-Z0-9]", "\\n", "\\t"]
QUANTS = ["", "", "", "*", "+", "?", "{2}", "{1,}", "{0,2}"]


def _regex_strategy() -> st.SearchStrategy[str]:
    atom = st.builds(lambda a, q: a + q, st.sampled_from(REGEX_ATOMS), st.sampled_from(QUANTS))
    seq = st.lists(atom, min_size=1, max_size=4).map("".join)
    group = st.builds(lambda a, b, q: f"({a}|{b}){q}", seq, seq, st.sampled_from(QUANTS))
    body = st.lists(st.one_of(seq, group), min_size=1, max_size=2).map("".join)
    return st.builds(lambda pre, b, post: pre + b + post,
                     st.sampled_from(["", "", "^"]), body, st.sampled_from(["", "", "$"]))


REGEX = _regex_strategy()


def _recipe_doc(i: int, text: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": f"r{i:02d}", "version": f"1.{i % 3}.0", "description": text,
                           "tags": [t for t in RECIPE_TEXTS[i % 5: i % 5 + (i % 3)]],
                           "cycles": 1 + i % 4,
                           "source": {"baseModel": f"org/m{i % 4}", "architecture": "qwen3_5"}}
    if i % 2:
        doc["author"] = RECIPE_TEXTS[(i * 7) % len(RECIPE_TEXTS)]
    return doc


RECIPE_DOCS = [_recipe_doc(i, t) for i, t in enumerate(RECIPE_TEXTS)]
RECIPE_PATHS = ["description", "author", "tags.0", "name", "source.baseModel"]


def _recipe_condition(path: str) -> st.SearchStrategy[dict[str, Any]]:
    text = st.sampled_from(RECIPE_TEXTS)
    ops = [text, st.fixed_dictionaries({"$ne": text}),
           st.builds(lambda v: {"$in": v}, st.lists(text, min_size=1, max_size=3)),
           st.fixed_dictionaries({"$regex": REGEX}), st.fixed_dictionaries({"$regex": REGEX})]
    return st.one_of(ops).map(lambda c: {path: c})


RECIPE_FILTER = st.recursive(
    st.sampled_from(RECIPE_PATHS).flatmap(_recipe_condition),
    lambda sub: st.one_of(st.builds(lambda fs: {"$and": fs}, st.lists(sub, min_size=1, max_size=2)),
                          st.builds(lambda fs: {"$or": fs}, st.lists(sub, min_size=1, max_size=2))),
    max_leaves=3,
)


@dataclass
class RecipeStore:
    foundry: Any
    stored_docs: list[dict[str, Any]]

    def execute(self, command: str, params: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.foundry.execute(command, params)
        return result


@pytest.fixture(scope="module", params=DIALECTS)
def recipe_store(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecipeStore]:
    """One store per dialect holding RECIPE_DOCS, created through Foundry.execute."""
    from foundry.adapters.bootstrap import Foundry
    from tests.conftest import drop_schema, ok, pg_schema_url

    schema = f"q_{uuid.uuid4().hex[:16]}"
    url = (f"sqlite:///{tmp_path_factory.mktemp('recipes') / 'foundry.db'}"
           if request.param == "sqlite" else pg_schema_url(schema))
    try:
        with Foundry.open(url) as foundry:
            for doc in RECIPE_DOCS:
                ok(foundry.execute("data/create", {"collection": "forge_recipes", "data": doc}))
            # The reference reads what was stored (defaults filled in, e.g. author "").
            stored = ok(foundry.execute("data/list", {
                "collection": "forge_recipes", "limit": 100}))["items"]
            assert len(stored) == len(RECIPE_DOCS)
            yield RecipeStore(foundry, stored)
    finally:
        if request.param == "postgres":
            drop_schema(schema)


def _listed_names(foundry: Any, flt: dict[str, Any]) -> list[str]:
    from tests.conftest import ok

    listed = ok(foundry.execute("data/list", {"collection": "forge_recipes", "filter": flt,
                                              "limit": 100}))
    return sorted(item["name"] for item in listed["items"])


@settings(max_examples=150, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(flt=RECIPE_FILTER)
def test_data_list_matches_reference_on_both_stores(recipe_store: Any,
                                                    flt: dict[str, Any]) -> None:
    expected = sorted(d["name"] for d in recipe_store.stored_docs if matches(d, flt))
    assert _listed_names(recipe_store, flt) == expected, flt


@pytest.mark.parametrize(("pattern", "expected"), [
    ("^tiny$", []),                 # Python's `$` alone would match before the final \n
    ("^tiny\\n$", ["r02"]),
    ("a.b", ["r03"]),               # `.` crosses the newline, as in PostgreSQL
    ("^x\\dy$", []),                # \d is ASCII: the Arabic-Indic three is not a digit
    ("^x\\Dy$", ["r04"]),
    ("\\$5", ["r07"]), ("\\{x\\}", ["r08"]), ("^[A-Z]{2}[0-9]+$", ["r12"]), ("\\r\\n$", ["r13"]),
])
def test_regex_on_both_stores_by_hand(recipe_store: Any, pattern: str,
                                      expected: list[str]) -> None:
    assert _listed_names(recipe_store, {"description": {"$regex": pattern}}) == expected


@pytest.mark.parametrize("pattern", [
    "(",                # invalid everywhere
    "\\bword",          # Python: a word boundary; PostgreSQL: a backspace
    "a{",               # Python: a literal; PostgreSQL: an error
    "(?i)alpha",        # flags
    "(a)\\1",           # back-references
    "[[:alpha:]]",      # PostgreSQL only
    "(?=a)",            # Python only
    "a*?",              # non-greedy
    "x" * 600,          # too long
])
def test_a_regex_outside_the_subset_is_invalid_input_naming_the_field(
        recipe_store: Any, pattern: str) -> None:
    result = recipe_store.execute("data/list", {
        "collection": "forge_recipes", "filter": {"description": {"$regex": pattern}}})
    assert result["success"] is False, result
    assert result["errorCode"] == "invalid_input", result
    assert result["error"].startswith("description: $regex"), result


def test_a_query_with_too_many_bound_values_is_invalid_input(recipe_store: Any) -> None:
    """PostgreSQL stops at 65,535 parameters; the cap answers first, on both stores."""
    flt = {"$or": [{"name": {"$in": [f"n{i}-{j}" for j in range(500)]}} for i in range(140)]}
    result = recipe_store.execute("data/list", {"collection": "forge_recipes", "filter": flt})
    assert result["success"] is False and result["errorCode"] == "invalid_input", result
    assert "filter" in result["error"] and "bound values" in result["error"], result
    # Just under the cap still runs.
    flt = {"$or": [{"name": {"$in": [f"n{i}-{j}" for j in range(450)]}} for i in range(10)]}
    assert recipe_store.execute("data/list", {"collection": "forge_recipes",
                                              "filter": flt})["success"]


def test_a_pattern_that_backtracks_too_long_is_stopped_and_named_as_the_callers_error(
        tmp_path: Any) -> None:
    """SQLite searches in Python, where `(x+x+)+y` backtracks exponentially on a long run of x:
    the query's regex budget stops it, and the caller gets invalid_input, not a pinned CPU or a
    store error. (PostgreSQL's engine answers the same pattern at once: there it just runs.)"""
    import time

    from foundry.adapters.bootstrap import Foundry
    from foundry.projections.query_regex import QUERY_BUDGET_SECONDS
    from tests.conftest import ok

    with Foundry.open(f"sqlite:///{tmp_path / 'foundry.db'}") as foundry:
        ok(foundry.execute("data/create", {"collection": "forge_recipes", "data": {
            **_recipe_doc(0, "x" * 3000)}}))
        started = time.monotonic()
        result = foundry.execute("data/list", {
            "collection": "forge_recipes", "filter": {"description": {"$regex": "(x+x+)+y"}}})
        took = time.monotonic() - started
        assert result["success"] is False and result["errorCode"] == "invalid_input", result
        assert result["error"].startswith("filter: $regex: the pattern ran longer than"), result
        # Without the budget this search would not end in our lifetime; the engine checks its
        # clock now and then, and this machine may be busy: a generous bound.
        assert QUERY_BUDGET_SECONDS <= took < 60, took
        # The store is fine afterwards.
        assert ok(foundry.execute("data/list", {"collection": "forge_recipes"}))["count"] == 1


def test_a_value_longer_than_the_subject_limit_is_not_searched() -> None:
    from foundry.projections.document_view import _execute_query
    from foundry.projections.query_regex import MAX_SUBJECT_CHARS, parse

    conn = sqlite3.connect(":memory:")
    conn.create_function("regexp", 2, sqlite_regexp, deterministic=True)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("INSERT INTO t VALUES (?)", ["a" * (MAX_SUBJECT_CHARS + 1)])
    with pytest.raises(QueryError) as err:
        _execute_query(conn.cursor(), "SELECT v FROM t WHERE v REGEXP ?", [parse("a").python])
    assert err.value.field == "filter" and "longer than" in err.value.rule
