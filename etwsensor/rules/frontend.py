"""KQL text → duckdb-kql IR, with every error turned into a 1-based line and column.

duckdb-kql (pinned) parses with Microsoft's Kql.g4 grammar and lowers to a typed IR. Its IR has
no positions, so names the compiler rejects (columns, tables, functions) are located again in
the token stream, inside the ``let`` statement (or the query body) they came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from etwsensor.rules.errors import CompileError
from etwsensor.rules.kqlir import full_package, ir

DUCKDB_KQL_VERSION = "1.1.2"


class FrontEndError(Exception):
    """A rule text failed; ``line`` and ``col`` are 1-based, relative to the KQL text."""

    def __init__(self, line: int, col: int, message: str) -> None:
        super().__init__(f"{line}:{col}: {message}")
        self.line = line
        self.col = col
        self.message = message


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    line: int  # 1-based
    col: int  # 0-based, as ANTLR gives it


class TokenIndex:
    """The default-channel tokens of a KQL text, and where each ``let`` statement spans."""

    def __init__(self, kql: str) -> None:
        from antlr4 import InputStream  # type: ignore[import-untyped]

        full_package()
        from duckdb_kql._antlr.KqlLexer import KqlLexer

        lexer = KqlLexer(InputStream(kql))
        lexer.removeErrorListeners()
        self.tokens = [_Token(t.text, t.line, t.column) for t in lexer.getAllTokens() if t.channel == 0]
        self.segments: dict[str | None, tuple[int, int]] = {}
        i, n = 0, len(self.tokens)
        body_start = 0
        while i < n:
            if self.tokens[i].text == "let" and i + 1 < n:
                name = self.tokens[i + 1].text.strip("[]'\"")
                j, depth = i + 1, 0
                while j < n:
                    t = self.tokens[j].text
                    if t in "([{":
                        depth += 1
                    elif t in ")]}":
                        depth -= 1
                    elif t == ";" and depth <= 0:
                        break
                    j += 1
                self.segments[name] = (i, j)
                i = j + 1
                body_start = i
                continue
            i += 1
        self.segments[None] = (body_start, n)

    def find(self, name: str, segment: str | None) -> tuple[int, int] | None:
        """1-based (line, col) of ``name`` in the segment, else anywhere, else None."""
        ranges = [self.segments.get(segment, (0, len(self.tokens))), (0, len(self.tokens))]
        for lo, hi in ranges:
            for t in self.tokens[lo:hi]:
                if t.text == name or t.text in (f"['{name}']", f'["{name}"]'):
                    return t.line, t.col + 1
        return None

    def start_of(self, segment: str | None) -> tuple[int, int]:
        lo, _hi = self.segments.get(segment, (0, 0))
        if lo < len(self.tokens):
            t = self.tokens[lo]
            return t.line, t.col + 1
        return 1, 1


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _construct_name(construct: str) -> str:
    """``ProjectReorderOperator`` → ``project-reorder``; ``function:foo`` → ``function 'foo'``."""
    if construct.startswith("function:"):
        return f"function '{construct.split(':', 1)[1]}'"
    if construct.endswith("Operator"):
        return "operator '" + _CAMEL.sub("-", construct.removesuffix("Operator")).lower() + "'"
    if construct.startswith("expression:"):
        return "expression " + _CAMEL.sub(" ", construct.split(":", 1)[1]).lower()
    return repr(construct)


def _short_expecting(message: str) -> str:
    """ANTLR lists every token it would have taken (~100 of them); the first few say enough."""
    head, sep, rest = message.partition("expecting {")
    if not sep:
        return message
    tokens, _close, tail = rest.partition("}")
    items = [t.strip() for t in tokens.split(",")]
    if len(items) <= 6:
        return message
    return f"{head}expecting one of {', '.join(items[:6])}, … ({len(items)} possibilities){tail}"


def parse(kql: str) -> ir.Query:
    """Lower ``kql`` to IR; raises :class:`FrontEndError` with a 1-based position."""
    duckdb_kql = full_package()  # the ANTLR parser: loaded on the first rule not in the cache
    from duckdb_kql.lower import lower

    try:
        return lower(kql)
    except duckdb_kql.KqlSyntaxError as exc:
        d = exc.diagnostics[0] if exc.diagnostics else None
        line, col = (d.span.line, d.span.column + 1) if d else (1, 1)
        message = d.message if d else str(exc)
        message = _short_expecting(message)
        if "expecting {<EOF>, ';'}" in message:
            message += " (a rule holds one query: this looks like a second query, or a let without ';')"
        raise FrontEndError(line, col, f"syntax error: {message}") from exc
    except duckdb_kql.KqlUnsupportedError as exc:
        line, col = (exc.span.line, exc.span.column + 1) if exc.span else (1, 1)
        what = _construct_name(exc.construct)
        hint = f" ({exc.hint})" if exc.hint and "wave" not in exc.hint else ""
        raise FrontEndError(line, col, f"unsupported {what}{hint}") from exc
    except duckdb_kql.KqlError as exc:
        raise FrontEndError(1, 1, str(exc)) from exc
    except RecursionError as exc:
        raise FrontEndError(1, 1, "query too deeply nested") from exc


def locate(kql: str, error: CompileError, index: TokenIndex | None = None) -> FrontEndError:
    """Turn a compiler error into a positioned one."""
    if error.position is not None:
        return FrontEndError(error.position[0], error.position[1], error.message)
    index = index or TokenIndex(kql)
    pos = index.find(error.anchor, error.segment) if error.anchor else None
    if pos is None:
        pos = index.start_of(error.segment)
    return FrontEndError(pos[0], pos[1], error.message)
