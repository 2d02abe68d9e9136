"""A fast front end for the KQL that pySigma's Kusto backend writes: ``Table\\n| where <predicate>``.

duckdb-kql's front end (Microsoft's Kql.g4 grammar through ANTLR's pure-Python runtime) takes about
11 ms per converted Sigma rule, which made a cold load of the SigmaHQ Windows rules take tens of
seconds. The backend writes a small, closed subset of KQL: one table, one ``where``, ``and``/``or``,
``not(...)``, parentheses, ``column <op> literal``, ``column in~ (...)``/``has_all (...)`` and
``isnull(column)``-style tests. This module parses exactly that subset into the same duckdb-kql IR the
full front end gives (``tests/rules/test_kql_subset.py`` checks equality on whole rule corpora) and
returns None for anything else, which then goes through the full front end.
"""

from __future__ import annotations

import re
from typing import Any

from etwsensor.rules.kqlir import ir

_HEAD = re.compile(r"\s*([A-Za-z_]\w*)\s*\n?\s*\|\s*where\s+", re.S)
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\\n]|\\.)*")
    | (?P<num>-?\d+(?:\.\d+)?(?![\w.]))
    | (?P<op>matches\s+regex|=~|==|!=|!~|<=|>=|<|>|in~|!in~|\(|\)|,)
    | (?P<word>[A-Za-z_]\w*)
    )""",
    re.X,
)
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r"}
_WORD_OPS = {
    "contains",
    "contains_cs",
    "startswith",
    "startswith_cs",
    "endswith",
    "endswith_cs",
    "has",
    "has_cs",
}
_SYMBOL_OPS = {"=~", "==", "!=", "!~", "<", "<=", ">", ">=", "matches regex"}
_CHECKS = {"isnull", "isnotnull", "isempty", "isnotempty"}
_LISTS = {"in~": (False, True), "!in~": (True, True)}


class _Leave(Exception):
    """The text is outside the subset: the full front end parses it."""


def _unquote(token: str) -> str:
    body = token[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1] if i + 1 < len(body) else ""
            if nxt not in _ESCAPES:
                raise _Leave  # e.g. "\*": Kql.g4 rejects it, and says so with a position
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos, end = 0, len(text)
    while pos < end:
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise _Leave
        pos = m.end()
        if m.group("str") is not None:
            out.append(("lit", ir.Literal(_unquote(m.group("str")), "string")))
        elif m.group("num") is not None:
            n = m.group("num")
            out.append(("lit", ir.Literal(float(n), "real") if "." in n else ir.Literal(int(n), "long")))
        elif m.group("op") is not None:
            op = re.sub(r"\s+", " ", m.group("op"))
            out.append(("op", op))
        else:
            out.append(("word", m.group("word")))
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, Any]]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, Any]:
        if self.i >= len(self.tokens):
            raise _Leave
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, kind: str, value: Any = None) -> Any:
        k, v = self.take()
        if k != kind or (value is not None and v != value):
            raise _Leave
        return v

    def expr(self) -> ir.Expr:
        left = self.conjunction()
        while self.peek() == ("word", "or"):
            self.i += 1
            left = ir.BinaryOp("or", left, self.conjunction())
        return left

    def conjunction(self) -> ir.Expr:
        left = self.unary()
        while self.peek() == ("word", "and"):
            self.i += 1
            left = ir.BinaryOp("and", left, self.unary())
        return left

    def unary(self) -> ir.Expr:
        kind, value = self.take()
        if kind == "op" and value == "(":
            inner = self.expr()
            self.expect("op", ")")
            return inner
        if kind != "word":
            raise _Leave
        nxt = self.peek()
        if value == "not" and nxt == ("op", "("):
            self.i += 1
            inner = self.expr()
            self.expect("op", ")")
            return ir.FunctionCall("not", (inner,))
        if value in _CHECKS and nxt == ("op", "("):
            self.i += 1
            column = self.expect("word")
            self.expect("op", ")")
            return ir.FunctionCall(value, (ir.ColumnRef(column),))
        if value in ("and", "or", "not"):
            raise _Leave
        return self.comparison(ir.ColumnRef(value))

    def comparison(self, column: ir.ColumnRef) -> ir.Expr:
        kind, op = self.take()
        if kind == "word" and op in ("has_all", "has_any"):
            return ir.HasList(column, self.items(), op == "has_all", None)
        if kind == "op" and op in _LISTS:
            negated, insensitive = _LISTS[op]
            return ir.InList(column, self.items(), negated, insensitive, None)
        if (kind == "word" and op in _WORD_OPS) or (kind == "op" and op in _SYMBOL_OPS):
            lit_kind, literal = self.take()
            if lit_kind != "lit":
                raise _Leave
            return ir.BinaryOp(op, column, literal)
        raise _Leave

    def items(self) -> tuple[ir.Expr, ...]:
        self.expect("op", "(")
        out: list[ir.Expr] = []
        while True:
            kind, value = self.take()
            if kind != "lit":
                raise _Leave
            out.append(value)
            kind, value = self.take()
            if (kind, value) == ("op", ")"):
                return tuple(out)
            if (kind, value) != ("op", ","):
                raise _Leave


def parse_where_query(kql: str) -> ir.Query | None:
    """duckdb-kql's IR for ``Table | where <predicate>`` in the backend's subset, else None."""
    head = _HEAD.match(kql)
    if head is None:
        return None
    try:
        parser = _Parser(_tokens(kql[head.end() :]))
        predicate = parser.expr()
        if parser.peek() is not None:
            return None
    except (_Leave, RecursionError):
        return None
    return ir.Query(ir.TableRef(head.group(1), None, None), [ir.Where(predicate)], [], [])
