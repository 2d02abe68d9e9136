"""Kusto scalar semantics as plain functions (``reference/kql_semantics.md``).

These are the leaves the compiled plans call on every row, so they are small and allocate little.
Null is Python ``None``; strings are never null in Kusto, so a missing string is ``""``.
Three-valued logic: a predicate is ``True``, ``False`` or ``None`` and ``where`` keeps only ``True``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import re2

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- conversions to text ---------------------------------------------------------------------


def as_text(value: Any) -> str:
    """The string Kusto compares when a string operator gets a non-string operand."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, timedelta):
        return format_timespan(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return str(value)


def format_datetime(value: datetime) -> str:
    """ISO-8601 UTC with ``Z``, 7 fractional digits like Kusto when there is a fraction."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}0"
    return text + "Z"


def format_timespan(value: timedelta) -> str:
    """Kusto's ``[-][d.]hh:mm:ss[.fffffff]`` form."""
    total_us = (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
    sign = "-" if total_us < 0 else ""
    total_us = abs(total_us)
    days, rest = divmod(total_us, 86400 * 1_000_000)
    secs, us = divmod(rest, 1_000_000)
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    text = f"{sign}{f'{days}.' if days else ''}{h:02d}:{m:02d}:{s:02d}"
    return text + (f".{us:06d}0" if us else "")


# --- regex tests --------------------------------------------------------------------------------


QUIET = re2.Options()
QUIET.log_errors = False  # a bad pattern is reported once, as the rule's error, not by absl on stderr


def re2_reason(exc: Exception) -> str:
    """An RE2 error as text (google-re2 gives bytes)."""
    arg = exc.args[0] if exc.args else exc
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


def regex_tester(pattern: str) -> Callable[[str], bool]:
    """``text -> does RE2 find pattern in it``; raises ``re2.error`` for a bad pattern.

    The public ``search`` builds a Match object and maps byte offsets back to characters on every
    call (microseconds); a yes/no test needs neither, so this calls the compiled RE2 object
    directly when the installed google-re2 exposes it, and falls back to ``search`` otherwise.
    """
    regex = re2.compile(pattern, QUIET)
    raw = getattr(regex, "_regexp", None)
    anchor = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
    null_span = getattr(re2, "_NULL_SPAN", None)
    if raw is None or anchor is None or null_span is None or not hasattr(raw, "Match"):
        search = regex.search
        return lambda text: search(text) is not None
    match = raw.Match

    def test(text: str) -> bool:
        data = text.encode("utf-8")
        return bool(match(anchor, data, 0, len(data))[0] != null_span)

    return test


# --- the has family: term matching ---------------------------------------------------------------


# Below this many needles ``str.endswith(tuple)`` (a scan, ~20 ns a needle) is as fast.
AFFIX_INDEX_MIN = 8


def _is_file_name_suffix(needle: str) -> bool:
    return needle.startswith("\\") and "\\" not in needle[1:]


def suffix_tester(needles: tuple[str, ...]) -> Callable[[str], bool]:
    """``lambda s: s.endswith(needles)`` for many needles, by a few set lookups instead of a scan.

    Sigma's ``endswith "\\x.exe"`` lists are hundreds long: a needle that is one leading
    backslash and a name matches exactly when the text's last path segment is that name; the
    other needles are looked up by the text's tail of each needle length.
    """
    if len(needles) < AFFIX_INDEX_MIN or "" in needles:
        return lambda s: s.endswith(needles)
    names = frozenset(n[1:] for n in needles if _is_file_name_suffix(n))
    by_len: dict[int, set[str]] = {}
    for n in needles:
        if not _is_file_name_suffix(n):
            by_len.setdefault(len(n), set()).add(n)
    tails = tuple((-length, frozenset(ns)) for length, ns in sorted(by_len.items()))

    def test(s: str) -> bool:
        if names:
            cut = s.rfind("\\")
            if cut >= 0 and s[cut + 1 :] in names:
                return True
        for start, bucket in tails:  # noqa: SIM110 - no generator frame on the hot path
            # A text shorter than the needles gives itself: never one of them.
            if s[start:] in bucket:
                return True
        return False

    return test


def prefix_tester(needles: tuple[str, ...]) -> Callable[[str], bool]:
    """``lambda s: s.startswith(needles)`` for many needles: one set lookup per needle length."""
    if len(needles) < AFFIX_INDEX_MIN or "" in needles:
        return lambda s: s.startswith(needles)
    by_len: dict[int, set[str]] = {}
    for n in needles:
        by_len.setdefault(len(n), set()).add(n)
    heads = tuple((length, frozenset(ns)) for length, ns in sorted(by_len.items()))

    def test(s: str) -> bool:
        for length, bucket in heads:  # noqa: SIM110 - no generator frame on the hot path
            if s[:length] in bucket:
                return True
        return False

    return test


def _is_term_char(ch: str) -> bool:
    # Kusto: terms are maximal runs of alphanumeric characters; "_" is not one (oracle decides).
    return ch.isalnum()


is_term_char = _is_term_char  # for the automaton path of has_any (rules.multimatch)


def has_term(haystack: str, needle_lower: str) -> bool:
    """``haystack has needle``, case-insensitive; ``needle_lower`` is already lower-cased.

    The needle must occur with its alphanumeric ends on term boundaries; an end that is
    punctuation has no boundary requirement (Kusto ignores leading/trailing punctuation).
    """
    return has_term_cs(haystack.lower(), needle_lower)


def has_term_cs(haystack: str, needle: str) -> bool:
    """``has_cs``: the same term rule, case-sensitive."""
    if not needle:
        return True
    n = len(needle)
    check_left = _is_term_char(needle[0])
    check_right = _is_term_char(needle[-1])
    end = len(haystack)
    start = haystack.find(needle)
    while start >= 0:
        stop = start + n
        if (not check_left or start == 0 or not _is_term_char(haystack[start - 1])) and (
            not check_right or stop == end or not _is_term_char(haystack[stop])
        ):
            return True
        start = haystack.find(needle, start + 1)
    return False


def has_prefix(haystack: str, needle: str) -> bool:
    """``hasprefix`` (case already folded by the caller): some term starts with the needle."""
    start = haystack.find(needle)
    while start >= 0:
        if start == 0 or not _is_term_char(haystack[start - 1]):
            return True
        start = haystack.find(needle, start + 1)
    return False


def has_suffix(haystack: str, needle: str) -> bool:
    """``hassuffix``: some term ends with the needle."""
    end = len(haystack)
    start = haystack.find(needle)
    while start >= 0:
        stop = start + len(needle)
        if stop == end or not _is_term_char(haystack[stop]):
            return True
        start = haystack.find(needle, start + 1)
    return False


# --- null-aware comparisons and arithmetic ---------------------------------------------------


def eq(a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None if a is None and b is None else False
    return bool(a == b)


def ne(a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None if a is None and b is None else True
    return bool(a != b)


def flatten(values: Any) -> list[Any]:
    """``in``/``has_any`` arguments: nested dynamic arrays are flattened."""
    out: list[Any] = []
    stack = [values]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def int_div(a: int, b: int) -> int | None:
    if b == 0:
        return None
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def arith(op: str, a: Any, b: Any) -> Any:
    """``+ - * / %`` with Kusto's sticky nulls and datetime/timespan rules."""
    if a is None or b is None:
        return None
    try:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            if isinstance(a, timedelta) and isinstance(b, timedelta):
                return a / b if b else None
            if isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool):
                return int_div(a, b)
            return a / b if b else (math.copysign(math.inf, a) if a else math.nan)
        if op == "%":
            if isinstance(a, int) and isinstance(b, int):
                return None if b == 0 else int(math.fmod(a, b))
            return math.fmod(a, b) if b else None
    except (TypeError, OverflowError, ValueError):
        return None
    raise ValueError(op)


def compare(op: str, a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    try:
        if op == "<":
            return bool(a < b)
        if op == "<=":
            return bool(a <= b)
        if op == ">":
            return bool(a > b)
        if op == ">=":
            return bool(a >= b)
    except TypeError:
        return None
    raise ValueError(op)


# --- literals and conversions ------------------------------------------------------------------

_SPAN_UNITS: dict[str, float] = {
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "ms": 1e-3,
    "milli": 1e-3,
    "millis": 1e-3,
    "millisecond": 1e-3,
    "milliseconds": 1e-3,
    "microsecond": 1e-6,
    "microseconds": 1e-6,
    "tick": 1e-7,
    "ticks": 1e-7,
}
_SPAN_LITERAL = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_SPAN_CLOCK = re.compile(r"^\s*(-)?(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,7}))?)?\s*$")


def parse_timespan(text: str) -> timedelta | None:
    """``1.5h``, ``100ms``, ``2`` (days), ``1.02:03:04.5``; None when it is not a timespan."""
    m = _SPAN_LITERAL.match(text)
    if m:
        unit = (m.group(2) or "d").lower()
        if unit not in _SPAN_UNITS:
            return None
        return timedelta(seconds=float(m.group(1)) * _SPAN_UNITS[unit])
    m = _SPAN_CLOCK.match(text)
    if m:
        neg, d, h, mi, s, frac = m.groups()
        span = timedelta(
            days=int(d or 0),
            hours=int(h),
            minutes=int(mi),
            seconds=int(s or 0),
            microseconds=int((frac or "0").ljust(7, "0")[:6]),
        )
        return -span if neg else span
    return None


def parse_datetime(text: str) -> datetime | None:
    """ISO-8601-ish text to an aware UTC datetime; a missing offset means UTC."""
    t = text.strip()
    if not t:
        return None
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    t = t.replace(" ", "T", 1) if "T" not in t else t
    # Python accepts at most 6 fractional digits; Kusto writes up to 7.
    m = re.match(r"^(.*?\.\d{6})\d+(.*)$", t)
    if m:
        t = m.group(1) + m.group(2)
    try:
        value = datetime.fromisoformat(t)
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def to_long(value: Any) -> int | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else int(value)
    if isinstance(value, datetime):
        return int((value - EPOCH) / timedelta(microseconds=1)) * 10
    if isinstance(value, timedelta):
        return int(value / timedelta(microseconds=1)) * 10
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            return None
        return None if math.isnan(f) or math.isinf(f) else int(f)


def to_real(value: Any) -> float | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, (bool, int, float)):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def to_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    text = as_text(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    return None


def to_datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return parse_datetime(value)
    return None


def to_timespan(value: Any) -> timedelta | None:
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_timespan(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(microseconds=value / 10)  # a number is ticks
    return None


def parse_json(value: Any) -> Any:
    """``parse_json``/``todynamic``: JSON text to a value; text that is not JSON stays a string."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def is_empty(value: Any) -> bool:
    return value is None or value == ""


def bin_value(value: Any, size: Any) -> Any:
    """``bin``/``floor``: round down to a multiple of ``size``; null or non-positive size gives null."""
    if value is None or size is None:
        return None
    try:
        if isinstance(value, datetime):
            if not isinstance(size, timedelta) or size <= timedelta(0):
                return None
            return EPOCH + ((value - EPOCH) // size) * size
        if isinstance(value, timedelta):
            if not isinstance(size, timedelta) or size <= timedelta(0):
                return None
            return (value // size) * size
        if isinstance(size, bool) or size <= 0:
            return None
        result = math.floor(value / size) * size
        return int(result) if isinstance(value, int) and isinstance(size, int) else float(result)
    except (TypeError, ValueError, OverflowError):
        return None


def substring(text: str, start: int | None, length: int | None = None) -> str:
    if start is None:
        return ""
    start = max(0, start)
    if length is None:
        return text[start:]
    return text[start : start + max(0, length)]


def split(text: str, delimiter: str, index: int | None = None) -> list[Any] | None:
    parts: list[Any] = text.split(delimiter) if delimiter else [text]
    if index is None:
        return parts
    if index < 0 or index >= len(parts):
        return []
    return [parts[index]]


def extract(regex: Any, group: int, text: str) -> str:
    m = regex.search(text)
    if m is None:
        return ""
    try:
        return m.group(group) or ""
    except IndexError:
        return ""


def trim(regex_text: str, text: str) -> str:
    pattern = re2.compile(f"^(?:{regex_text})+|(?:{regex_text})+$", QUIET)
    return str(pattern.sub("", text))


def dynamic_path(value: Any, steps: tuple[str | int, ...]) -> Any:
    """``d.a[0]``: navigate; a missing property, an out-of-range index or a non-container is null."""
    if isinstance(value, str):
        value = parse_json(value)
    for step in steps:
        if isinstance(step, str):
            if not isinstance(value, dict):
                return None
            value = value.get(step)
        else:
            if not isinstance(value, list) or not -len(value) <= step < len(value):
                return None
            value = value[step]
        if value is None:
            return None
    return value
