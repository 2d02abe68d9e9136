"""The scalar function builtins of the expression compiler: name → (min args, max args, builder).

A builder receives the compiled arguments (closure, KQL type), the call node and the scope, and
returns the call's closure and result type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import re2

from etwsensor.rules import scalars as S
from etwsensor.rules.errors import CompileError
from etwsensor.rules.kqlir import ir
from etwsensor.rules.plan import Fn, Row
from etwsensor.rules.scope import Scope, const, constant_value, never_null, text_of

Args = list[tuple[Fn, str]]
Builder = Callable[[Args, ir.FunctionCall, Scope], tuple[Fn, str]]


def _unary(f: Callable[[Any], Any], result: str) -> Builder:
    def build(args: Args, _n: ir.FunctionCall, _s: Scope) -> tuple[Fn, str]:
        a = args[0][0]
        return (lambda r: f(a(r))), result

    return build


def _text_unary(f: Callable[[str], Any], result: str) -> Builder:
    def build(args: Args, _n: ir.FunctionCall, _s: Scope) -> tuple[Fn, str]:
        a = text_of(*args[0])
        return (lambda r: f(a(r))), result

    return build


def _b_not(args: Args, node: ir.FunctionCall, scope: Scope) -> tuple[Fn, str]:
    a = args[0][0]
    if never_null(node.args[0], scope):
        return (lambda r: not a(r)), "bool"
    return (lambda r: None if (v := a(r)) is None else not v), "bool"


def _b_strcat(args: Args, _n: ir.FunctionCall, _s: Scope) -> tuple[Fn, str]:
    parts = [text_of(f, t) for f, t in args]
    return (lambda r: "".join(p(r) for p in parts)), "string"


def _b_substring(args: Args, _n: ir.FunctionCall, _s: Scope) -> tuple[Fn, str]:
    text = text_of(*args[0])
    start = args[1][0]
    length = args[2][0] if len(args) > 2 else const(None)

    def sub(r: Row) -> str:
        s, st = text(r), S.to_long(start(r))
        if st is not None and st < 0:
            st = max(0, len(s) + st)
        return S.substring(s, st, S.to_long(length(r)) if len(args) > 2 else None)

    return sub, "string"


def _b_split(args: Args, _n: ir.FunctionCall, _s: Scope) -> tuple[Fn, str]:
    text, delim = text_of(*args[0]), text_of(*args[1])
    index = args[2][0] if len(args) > 2 else None
    if index is None:
        return (lambda r: S.split(text(r), delim(r))), "dynamic"
    idx = index
    return (lambda r: S.split(text(r), delim(r), S.to_long(idx(r)))), "dynamic"


def _b_extract(args: Args, node: ir.FunctionCall, scope: Scope) -> tuple[Fn, str]:
    _ok, pattern = constant_value(node.args[0], scope)
    regex = re2.compile(pattern, S.QUIET)
    group, text = args[1][0], text_of(*args[2])
    return (lambda r: S.extract(regex, S.to_long(group(r)) or 0, text(r))), "string"


def _b_replace_string(args: Args, _n: ir.FunctionCall, _s: Scope) -> tuple[Fn, str]:
    text, old, new = (text_of(*a) for a in args)
    return (
        lambda r: t.replace(o, new(r)) if (o := old(r)) and (t := text(r)) is not None else text(r)
    ), "string"


def _b_trim(args: Args, node: ir.FunctionCall, scope: Scope) -> tuple[Fn, str]:
    _ok, pattern = constant_value(node.args[0], scope)
    regex = re2.compile(f"^(?:{pattern})+|(?:{pattern})+$", S.QUIET)
    text = text_of(*args[1])
    return (lambda r: str(regex.sub("", text(r)))), "string"


def _b_iff(args: Args, _n: ir.FunctionCall, _s: Scope) -> tuple[Fn, str]:
    cond, (then, tt), (other, _ot) = args[0][0], args[1], args[2]
    return (lambda r: then(r) if cond(r) is True else other(r)), tt


def _b_case(args: Args, node: ir.FunctionCall, scope: Scope) -> tuple[Fn, str]:
    if len(args) % 2 == 0:
        raise CompileError(
            "case() needs pairs of predicate, value and a final else value",
            anchor="case",
            segment=scope.segment,
        )
    pairs = [(args[i][0], args[i + 1][0]) for i in range(0, len(args) - 1, 2)]
    otherwise = args[-1][0]

    def case(r: Row) -> Any:
        for pred, val in pairs:
            if pred(r) is True:
                return val(r)
        return otherwise(r)

    return case, args[1][1]


def _b_coalesce(args: Args, _n: ir.FunctionCall, _s: Scope) -> tuple[Fn, str]:
    fns = [f for f, _ in args]

    def coalesce(r: Row) -> Any:
        for f in fns:
            v = f(r)
            if v is not None and v != "":
                return v
        return fns[-1](r)

    return coalesce, args[0][1]


def _b_tostring(args: Args, _n: ir.FunctionCall, _s: Scope) -> tuple[Fn, str]:
    a = args[0][0]
    return (lambda r: S.as_text(a(r))), "string"


def _b_bin(args: Args, _n: ir.FunctionCall, _s: Scope) -> tuple[Fn, str]:
    (v, vt), (size, _) = args
    return (lambda r: S.bin_value(v(r), size(r))), vt


def _b_array_length(args: Args, _n: ir.FunctionCall, _s: Scope) -> tuple[Fn, str]:
    a = args[0][0]
    return (lambda r: len(v) if isinstance(v := a(r), list) else None), "long"


def _b_set_has_element(args: Args, _n: ir.FunctionCall, _s: Scope) -> tuple[Fn, str]:
    arr, item = args[0][0], args[1][0]
    return (lambda r: (item(r) in v) if isinstance(v := arr(r), list) else None), "bool"


def _b_strlen(args: Args, _n: ir.FunctionCall, _s: Scope) -> tuple[Fn, str]:
    a = text_of(*args[0])
    return (lambda r: len(a(r))), "long"


FUNCTIONS: dict[str, tuple[int, int, Builder]] = {
    "not": (1, 1, _b_not),
    "isempty": (1, 1, _unary(S.is_empty, "bool")),
    "isnotempty": (1, 1, _unary(lambda v: not S.is_empty(v), "bool")),
    "isnull": (1, 1, _unary(lambda v: v is None, "bool")),
    "isnotnull": (1, 1, _unary(lambda v: v is not None, "bool")),
    "tolower": (1, 1, _text_unary(str.lower, "string")),
    "toupper": (1, 1, _text_unary(str.upper, "string")),
    "strcat": (1, 64, _b_strcat),
    "strlen": (1, 1, _b_strlen),
    "substring": (2, 3, _b_substring),
    "split": (2, 3, _b_split),
    "extract": (3, 3, _b_extract),
    "replace_string": (3, 3, _b_replace_string),
    "trim": (2, 2, _b_trim),
    "iff": (3, 3, _b_iff),
    "iif": (3, 3, _b_iff),
    "case": (3, 255, _b_case),
    "coalesce": (2, 64, _b_coalesce),
    "tostring": (1, 1, _b_tostring),
    "toint": (1, 1, _unary(S.to_long, "int")),
    "tolong": (1, 1, _unary(S.to_long, "long")),
    "todouble": (1, 1, _unary(S.to_real, "real")),
    "toreal": (1, 1, _unary(S.to_real, "real")),
    "tobool": (1, 1, _unary(S.to_bool, "bool")),
    "toboolean": (1, 1, _unary(S.to_bool, "bool")),
    "todatetime": (1, 1, _unary(S.to_datetime, "datetime")),
    "totimespan": (1, 1, _unary(S.to_timespan, "timespan")),
    "bin": (2, 2, _b_bin),
    "floor": (2, 2, _b_bin),
    "array_length": (1, 1, _b_array_length),
    "set_has_element": (2, 2, _b_set_has_element),
    "parse_json": (1, 1, _unary(S.parse_json, "dynamic")),
    "todynamic": (1, 1, _unary(S.parse_json, "dynamic")),
}


SUPPORTED_FUNCTIONS: tuple[str, ...] = (*sorted(FUNCTIONS), "ago", "now")
