"""`$regex`: one documented subset, the same answers on SQLite (Python) and PostgreSQL (`~`).

Python's `re` and PostgreSQL's ARE engine agree on far less than they seem to: `$` matches
before a final newline in Python only, `.` crosses newlines in PostgreSQL only, `\\d`/`\\w`/`\\s`
follow Unicode in one and the locale in the other, `\\b` is a word boundary in one and a
backspace in the other, `{` alone is a literal in one and an error in the other. So a pattern
is parsed against the subset below and rewritten into two spellings with the same meaning; any
other pattern is refused up front (`QueryError` naming the field), on both stores alike.

The subset (a boolean "matches somewhere in the string", like `re.search` and `~`):

* literal characters; `\\` before any ASCII punctuation is that character; `\\t \\n \\r`
* `.` (any character, newlines included), `^` (start of string), `$` (end of string)
* `[...]` and `[^...]`: literal characters, ranges `a-z` (by code point), `\\d \\w \\s` and
  escaped punctuation inside; `[` inside must be escaped
* `\\d` `[0-9]`, `\\w` `[A-Za-z0-9_]`, `\\s` `[ \\t\\n\\r\\f\\v]` and `\\D \\W \\S` (ASCII only)
* groups `( )`, alternation `|` (no empty branch or group)
* quantifiers `* + ? {m} {m,} {m,n}` (m <= n <= 255) after an atom, one per atom

Not in it: back-references, lookaround, `(?...)` of any kind, non-greedy quantifiers, word
boundaries, `\\A \\Z`, POSIX `[[:alpha:]]`, hex or Unicode escapes, NUL.

The Python side runs on the `regex` package, whose `timeout` stops a pattern that backtracks
for too long (a `(a|aa)*b` on a long value); together with the length limits a filter cannot
pin a CPU. A query's regex work shares one budget (:func:`regex_budget`); running out raises
:class:`RegexBudgetError`, which the view reports as the caller's bad input.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import regex

MAX_PATTERN_CHARS = 512
MAX_SUBJECT_CHARS = 1_048_576  # the largest payload a command may carry
MAX_REPEAT = 255  # PostgreSQL's RE_DUP_MAX
QUERY_BUDGET_SECONDS = 2.0

_QUANT = "*+?"
_META = set(".^$|?*+()[]{}\\")
_CLASSES = {"d": "0-9", "w": "A-Za-z0-9_", "s": " \\t\\n\\r\\f\\v"}
_CONTROL = {"t": "\\t", "n": "\\n", "r": "\\r"}
_PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


class RegexSubsetError(ValueError):
    """The pattern is outside the documented subset; the message names the rule."""


class RegexBudgetError(RuntimeError):
    """A query's `$regex` work ran past its time budget, or met a value too long to search."""


@dataclass(frozen=True)
class Pattern:
    """One pattern in its two spellings."""

    source: str
    python: str
    postgres: str


@lru_cache(maxsize=512)
def parse(source: str) -> Pattern:
    """Check `source` against the subset; raises RegexSubsetError naming what is wrong."""
    if len(source) > MAX_PATTERN_CHARS:
        raise RegexSubsetError(f"the pattern is {len(source)} characters; at most "
                               f"{MAX_PATTERN_CHARS}")
    if "\x00" in source or any(0xD800 <= ord(c) <= 0xDFFF for c in source):
        raise RegexSubsetError("the pattern holds NUL or a lone surrogate")
    parser = _Parser(source)
    py, pg = parser.alternation(depth=0)
    if parser.i != len(source):
        raise RegexSubsetError(f"unbalanced ')' at position {parser.i}")
    return Pattern(source, py, pg)


@lru_cache(maxsize=256)
def _compiled(python: str) -> regex.Pattern[str]:
    return regex.compile(python, regex.DOTALL | regex.V0)


class _Budget(threading.local):
    deadline: float | None = None
    exceeded: str | None = None


_budget = _Budget()


@contextmanager
def regex_budget(seconds: float = QUERY_BUDGET_SECONDS) -> Iterator[_Budget]:
    """The time all `$regex` calls of one query may take together (this thread)."""
    outer = (_budget.deadline, _budget.exceeded)
    _budget.deadline, _budget.exceeded = time.monotonic() + seconds, None
    try:
        yield _budget
    finally:
        _budget.deadline, _budget.exceeded = outer


def sqlite_regexp(pattern: str, value: object) -> bool:
    """SQLite's `regexp(pattern, value)` (what `value REGEXP pattern` calls): False for NULL and
    non-strings; `pattern` is the Python spelling made by :func:`parse`. Raises
    RegexBudgetError (SQLite aborts the statement) when the query's budget runs out."""
    if not isinstance(value, str):
        return False
    if len(value) > MAX_SUBJECT_CHARS:
        _budget.exceeded = (f"a value of {len(value)} characters is longer than "
                            f"{MAX_SUBJECT_CHARS}, the most $regex searches")
        raise RegexBudgetError(_budget.exceeded)
    deadline = _budget.deadline
    timeout = None if deadline is None else max(deadline - time.monotonic(), 0.001)
    try:
        return _compiled(pattern).search(value, timeout=timeout) is not None
    except TimeoutError:
        _budget.exceeded = (f"the pattern ran longer than {QUERY_BUDGET_SECONDS:g} s over "
                            "the values it searched: simplify it (fewer nested repeats)")
        raise RegexBudgetError(_budget.exceeded) from None


class _Parser:
    """A recursive-descent reader of the subset that writes both spellings as it goes."""

    def __init__(self, source: str) -> None:
        self.s, self.i = source, 0

    def _fail(self, rule: str) -> RegexSubsetError:
        return RegexSubsetError(f"{rule} at position {self.i}")

    def _peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def _at_quantifier(self) -> bool:
        c = self._peek()
        return c != "" and c in "*+?{"

    def alternation(self, depth: int) -> tuple[str, str]:
        if depth > 20:
            raise self._fail("groups nested deeper than 20")
        branches = [self.sequence(depth)]
        while self._peek() == "|":
            self.i += 1
            branches.append(self.sequence(depth))
        if len(branches) > 1 and any(not py for py, _ in branches):
            raise self._fail("an empty alternative ('|' with nothing on one side)")
        return "|".join(b[0] for b in branches), "|".join(b[1] for b in branches)

    def sequence(self, depth: int) -> tuple[str, str]:
        py: list[str] = []
        pg: list[str] = []
        while self._peek() not in ("", "|", ")"):
            c = self._peek()
            if c in "^$":
                self.i += 1
                py.append("^" if c == "^" else "\\Z")
                pg.append(c)
                if self._at_quantifier():
                    raise self._fail(f"a quantifier after the anchor '{c}'")
                continue
            a_py, a_pg = self.atom(depth)
            q = self.quantifier()
            py.append(a_py + q)
            pg.append(a_pg + q)
        return "".join(py), "".join(pg)

    def atom(self, depth: int) -> tuple[str, str]:
        c = self._peek()
        if self._at_quantifier():
            raise self._fail(f"the quantifier '{c}' follows nothing it could repeat")
        if c in "]}":
            raise self._fail(f"a bare '{c}': escape it as '\\{c}'")
        self.i += 1
        if c == ".":
            return ".", "."
        if c == "(":
            if self._peek() == "?":
                raise self._fail("'(?' groups (lookaround, flags, named groups)")
            inner = self.alternation(depth + 1)
            if self._peek() != ")":
                raise self._fail("an unclosed '('")
            self.i += 1
            if not inner[0]:
                raise self._fail("an empty group '()'")
            return f"({inner[0]})", f"({inner[1]})"
        if c == "[":
            body = self.bracket()
            return body, body
        if c == "\\":
            return self.escape(in_bracket=False)
        return _literal(c), _literal(c)

    def escape(self, *, in_bracket: bool) -> tuple[str, str]:
        if self.i >= len(self.s):
            raise self._fail("a trailing '\\'")
        c = self.s[self.i]
        self.i += 1
        if c in _CLASSES:
            body = _CLASSES[c]
            return (body, body) if in_bracket else (f"[{body}]", f"[{body}]")
        if c.lower() in _CLASSES and not in_bracket:
            body = f"[^{_CLASSES[c.lower()]}]"
            return body, body
        if c in _CONTROL:
            return _CONTROL[c], _CONTROL[c]
        if c in _PUNCT:
            return "\\" + c, "\\" + c
        raise self._fail(f"the escape '\\{c}' is not in the subset")

    def bracket(self) -> str:
        out = ["["]
        if self._peek() == "^":
            out.append("^")
            self.i += 1
        items = 0
        while True:
            c = self._peek()
            if c == "":
                raise self._fail("an unclosed '['")
            if c == "]":
                if not items:
                    raise self._fail("an empty '[]': escape a literal ']' as '\\]'")
                self.i += 1
                return "".join(out) + "]"
            if c == "[":
                raise self._fail("a '[' inside '[...]': escape it as '\\['")
            lo = self._bracket_char()
            if lo is None:  # \d \w \s
                items += 1
                out.append(self.s_last)
                continue
            if self._peek() == "-" and self.i + 1 < len(self.s) and self.s[self.i + 1] != "]":
                self.i += 1
                hi = self._bracket_char()
                if hi is None:
                    raise self._fail("a range ending in a class escape")
                if ord(hi) < ord(lo):
                    raise self._fail(f"the range {lo!r}-{hi!r} runs backwards")
                out.append(f"{_in_bracket(lo)}-{_in_bracket(hi)}")
            else:
                out.append(_in_bracket(lo))
            items += 1

    def _bracket_char(self) -> str | None:
        """The next literal character of a bracket, or None for a class escape (its body is
        left in `s_last`)."""
        c = self.s[self.i]
        self.i += 1
        if c != "\\":
            return c
        if self.i >= len(self.s):
            raise self._fail("a trailing '\\'")
        e = self.s[self.i]
        if e in _CLASSES:
            self.i += 1
            self.s_last = _CLASSES[e]
            return None
        if e in _CONTROL:
            self.i += 1
            return {"t": "\t", "n": "\n", "r": "\r"}[e]
        if e in _PUNCT:
            self.i += 1
            return e
        raise self._fail(f"the escape '\\{e}' is not in the subset")

    def quantifier(self) -> str:
        c = self._peek()
        if c != "" and c in _QUANT:
            self.i += 1
            q = c
        elif c == "{":
            end = self.s.find("}", self.i)
            spec = self.s[self.i + 1:end] if end > 0 else ""
            lo, comma, hi = spec.partition(",")
            if end < 0 or not lo.isdigit() or (hi and not hi.isdigit()) \
                    or not lo.isascii() or not hi.isascii():
                raise self._fail("a '{' that is not a quantifier {m}, {m,} or {m,n}: "
                                 "escape a literal '{' as '\\{'")
            if int(lo) > MAX_REPEAT or (hi and not int(lo) <= int(hi) <= MAX_REPEAT):
                raise self._fail(f"a repeat count must be m <= n <= {MAX_REPEAT}")
            self.i = end + 1
            q = "{" + str(int(lo)) + ("," if comma else "") + (str(int(hi)) if hi else "") + "}"
        else:
            return ""
        if self._at_quantifier():
            raise self._fail("two quantifiers in a row (non-greedy or nested repeats)")
        return q

    s_last: str = ""


def _literal(c: str) -> str:
    """A literal character in both spellings: punctuation escaped, anything else as it is."""
    return "\\" + c if c in _PUNCT else c


def _in_bracket(c: str) -> str:
    if c in "\\]-^[":
        return "\\" + c
    return {"\t": "\\t", "\n": "\\n", "\r": "\\r"}.get(c, c)
