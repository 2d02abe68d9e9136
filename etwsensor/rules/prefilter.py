"""Prefilter needles: literals one of which a row must contain for a ``where`` to be true.

A needle is (column, lower-cased literal, exact). The rule set looks needles up before running a
branch, so most rows cost a dict or substring test instead of a compiled predicate. Also the
literal analysis of regular expressions that gives ``matches regex`` its needle.
"""

from __future__ import annotations

from etwsensor.rules import scalars as S
from etwsensor.rules.irnorm import flatten_logical
from etwsensor.rules.kqlir import ir
from etwsensor.rules.scope import Scope, constant_value, string_column

_NEEDLE_OPS = {
    "contains",
    "contains_cs",
    "startswith",
    "startswith_cs",
    "endswith",
    "endswith_cs",
    "==",
    "=~",
    "has",
    "has_cs",
    "hasprefix",
    "hassuffix",
    "hasprefix_cs",
    "hassuffix_cs",
}


_LOW_SELECTIVITY = frozenset(
    {
        "ActionType",
        "DeviceName",
        "RegistryValueType",
        "InitiatingProcessAccountName",
        "AccountName",
        "AccountDomain",
        "InitiatingProcessAccountDomain",
        "ProcessIntegrityLevel",
        "InitiatingProcessIntegrityLevel",
        # Most images on a host are Microsoft's: "Microsoft Corporation", "Microsoft® Windows® …".
        "ProcessVersionInfoCompanyName",
        "ProcessVersionInfoProductName",
        "InitiatingProcessVersionInfoCompanyName",
        "InitiatingProcessVersionInfoProductName",
    }
)
# (column, lower-cased literal, exact): the column's lower-cased text equals (exact) or contains it.
Needle = tuple[str, str, bool]


def needle_group(node: ir.Expr, scope: Scope) -> frozenset[Needle] | None:
    """(column, literal) pairs one of which must hold for ``node`` to be true, or None.

    Only positive tests of string *columns* of the input give needles; anything else (negation,
    computed values, non-string columns) gives None: no guarantee, the branch always runs.
    """
    if isinstance(node, ir.BinaryOp):
        if node.op == "and":
            best: frozenset[Needle] | None = None
            for t in flatten_logical(node, "and"):
                n = needle_group(t, scope)
                if n is not None and (best is None or _weaker(best, n)):
                    best = n
            return best
        if node.op == "or":
            acc: set[Needle] = set()
            for t in flatten_logical(node, "or"):
                n = needle_group(t, scope)
                if n is None:
                    return None
                acc |= n
            return frozenset(acc)
        if node.op == "matches regex":
            column = string_column(node.left, scope)
            pattern = _string_col_const(node.left, node.right, scope)
            literal = regex_literal(pattern) if pattern is not None else None
            if column is None or literal is None:
                return None
            return frozenset({(column, literal.lower(), False)})
        if node.op in _NEEDLE_OPS:
            column = string_column(node.left, scope)
            text = _string_col_const(node.left, node.right, scope)
            if text is not None and node.op.startswith("has"):
                text = _strip_punct(text)
            if column is None or not text:
                return None
            return frozenset({(column, text.lower(), node.op in ("==", "=~"))})
        return None
    if isinstance(node, ir.InList) and not node.negated and node.subquery is None:
        column = string_column(node.value, scope)
        items = _const_strings(node.items, scope)
        if column is None or not items or not all(items):
            return None
        return frozenset((column, i.lower(), True) for i in items)
    if isinstance(node, ir.HasList) and node.subquery is None:
        column = string_column(node.value, scope)
        items = _const_strings(node.items, scope)
        if column is None or not items:
            return None
        stripped = [_strip_punct(i).lower() for i in items]
        if node.require_all:
            longest = max(stripped, key=len)
            return frozenset({(column, longest, False)}) if longest else None
        if not all(stripped):
            return None
        return frozenset((column, i, False) for i in stripped)
    return None


# (string column, RE2 pattern): the raw column text matches the pattern somewhere.
RegexNeedle = tuple[str, str]


def regex_group(node: ir.Expr, scope: Scope) -> frozenset[RegexNeedle] | None:
    """(column, pattern) pairs one of which must match for ``node`` to be true, or None.

    For the conditions ``needle_group`` cannot index (a regex with no certain literal): a
    ``matches regex`` of a constant pattern on a string column, an ``or`` of them, or any
    conjunct of an ``and`` that gives one.
    """
    if not isinstance(node, ir.BinaryOp):
        return None
    if node.op == "and":
        for t in flatten_logical(node, "and"):
            group = regex_group(t, scope)
            if group is not None:
                return group
        return None
    if node.op == "or":
        acc: set[RegexNeedle] = set()
        for t in flatten_logical(node, "or"):
            group = regex_group(t, scope)
            if group is None:
                return None
            acc |= group
        return frozenset(acc)
    if node.op == "matches regex":
        column = string_column(node.left, scope)
        pattern = _string_col_const(node.left, node.right, scope)
        if column is None or pattern is None:
            return None
        return frozenset({(column, pattern)})
    return None


_REGEX_ESCAPED_LITERAL = frozenset("\\.+*?()|[]{}^$/-:#&~=!<>'\" ,;%@`")
_QUANTIFIERS = "?*+{"


def regex_literal(pattern: str) -> str | None:
    """The longest literal every match of ``pattern`` must contain (3+ characters), or None.

    Conservative: only the top level is read (a group or class ends a run), any top-level ``|``,
    ``(?x)`` or ``\\Q`` gives up, and a character made optional by ``?``, ``*`` or ``{0`` is
    dropped. Case does not matter: the prefilter compares lower-cased text.
    """
    if "(?x" in pattern or "\\Q" in pattern:
        return None
    runs: list[str] = []
    run: list[str] = []
    i, n = 0, len(pattern)

    def cut() -> None:
        if run:
            runs.append("".join(run))
            run.clear()

    while i < n:
        ch = pattern[i]
        literal: str | None = None
        step = 1
        if ch == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            step = 2
            if nxt in _REGEX_ESCAPED_LITERAL:
                literal = nxt
        elif ch == "|":
            return None
        elif ch in "([":
            close = ")" if ch == "(" else "]"
            depth, j = 0, i
            while j < n:
                c = pattern[j]
                if c == "\\":
                    j += 2
                    continue
                if c == ch and ch == "(":
                    depth += 1
                elif c == close:
                    depth -= 1
                    if depth <= 0:
                        break
                j += 1
            step = j - i + 1
        elif ch == "{":
            close_at = pattern.find("}", i)
            step = (close_at - i + 1) if close_at > i else 1
        elif ch not in ".^$?*+}":
            literal = ch
        nxt_ch = pattern[i + step] if i + step < n else ""
        if literal is None:
            cut()
            i += step
            continue
        optional = nxt_ch in ("?", "*") or pattern.startswith("{0", i + step)
        if optional:
            cut()
        else:
            run.append(literal)
            if nxt_ch in _QUANTIFIERS:
                cut()
        i += step
    cut()
    best = max(runs, key=len, default="")
    return best if len(best) >= 3 else None


def _strip_punct(s: str) -> str:
    # has ignores leading/trailing punctuation, so only the inner part is certain to occur.
    start, end = 0, len(s)
    while start < end and not s[start].isalnum():
        start += 1
    while end > start and not s[end - 1].isalnum():
        end -= 1
    return s[start:end]


MAX_NEEDLE_GROUPS = 3


def best_groups(groups: list[frozenset[Needle]]) -> list[frozenset[Needle]]:
    """The most selective needle groups (each is a necessary condition, so any subset is too).

    An ActionType-only group is kept as well: it is cheap (a dict lookup) and live tracing reads
    it to subscribe only to the events a rule can match.
    """
    # Groups on few-valued columns (ActionType) come last whatever their score, then groups with a
    # needle most rows contain: they pass most rows.
    unique = sorted(dict.fromkeys(groups), key=lambda g: (_weakness(g), _score(g)))
    best = unique[:MAX_NEEDLE_GROUPS]
    action = next((g for g in unique if all(c == "ActionType" for c, _n, _e in g)), None)
    if action is not None and action not in best:
        best.append(action)
    return best


# Text that most rows of any Windows host contain: profile, temp and system folders, executable
# suffixes, the Run-key path, the images that start most processes. A substring needle found inside
# one of them (``\\appdata\\``, ``user``, ``.exe``, ``\\cmd.exe``) passes a large share of rows,
# however long it is, so a group with one is a poor first filter. Lower-cased, as needles are.
_COMMON_TEXT = (
    "c:\\users\\",
    "\\appdata\\local\\temp\\",
    "\\appdata\\roaming\\",
    "\\appdata\\locallow\\",
    "\\downloads\\",
    "\\documents\\",
    "c:\\windows\\system32\\",
    "c:\\windows\\syswow64\\",
    "c:\\windows\\winsxs\\",
    "c:\\program files\\",
    "c:\\program files (x86)\\",
    "c:\\programdata\\",
    "\\software\\microsoft\\windows\\currentversion\\",
    ".exe",
    ".dll",
    "c:\\windows\\system32\\cmd.exe",
    "c:\\windows\\system32\\conhost.exe",
    "c:\\windows\\system32\\svchost.exe",
    "c:\\windows\\system32\\rundll32.exe",
    "c:\\windows\\system32\\windowspowershell\\v1.0\\powershell.exe",
    "c:\\windows\\explorer.exe",
)


def _is_common(needle: str, exact: bool) -> bool:
    return not exact and any(needle in text for text in _COMMON_TEXT)


def _weakness(ns: frozenset[Needle]) -> int:
    """How surely most rows satisfy a group: 2 on a few-valued column (ActionType), 1 with a short
    ASCII substring or a substring of text most rows contain, else 0."""
    if any(c in _LOW_SELECTIVITY for c, _n, _e in ns):
        return 2
    return int(any((not e and len(n) < 3 and n.isascii()) or _is_common(n, e) for _c, n, e in ns))


def _score(ns: frozenset[Needle]) -> float:
    """Lower is rarer: fewer, longer, exact needles on columns with many distinct values."""
    if not ns:
        return float("inf")
    # A column with a handful of values (ActionType) passes most rows whatever the needle.
    weak = 50.0 if any(c in _LOW_SELECTIVITY for c, _n, _e in ns) else 1.0
    exact = 0.25 if all(e for _c, _n, e in ns) else 1.0  # a dict lookup, and rarer
    return weak * exact * len(ns) / (1 + min(len(n) for _c, n, _e in ns))


def _weaker(current: frozenset[Needle], candidate: frozenset[Needle]) -> bool:
    """Prefer the needle set that is rarer: less weak, then fewer and longer needles."""
    return (_weakness(candidate), _score(candidate)) < (_weakness(current), _score(current))


def _string_col_const(left: ir.Expr, right: ir.Expr, scope: Scope) -> str | None:
    if string_column(left, scope) is None:
        return None
    is_const, value = constant_value(right, scope)
    if not is_const or not isinstance(value, str):
        return None
    return value


def _const_strings(items: tuple[ir.Expr, ...], scope: Scope) -> list[str] | None:
    out: list[str] = []
    for item in items:
        is_const, value = constant_value(item, scope)
        if not is_const:
            return None
        for v in S.flatten(value):
            if not isinstance(v, str):
                return None
            out.append(v)
    return out
