"""IR normalisation before compiling and caching: ``and``/``or`` chains flattened and balanced."""

from __future__ import annotations

import dataclasses
from typing import Any

from etwsensor.rules.kqlir import ir


def flatten_logical(node: ir.Expr, op: str) -> list[ir.Expr]:
    out: list[ir.Expr] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ir.BinaryOp) and n.op == op:
            stack.append(n.right)
            stack.append(n.left)
        else:
            out.append(n)
    return out


def _balanced(terms: list[ir.Expr], op: str) -> ir.Expr:
    if len(terms) == 1:
        return terms[0]
    mid = len(terms) // 2
    return ir.BinaryOp(op, _balanced(terms[:mid], op), _balanced(terms[mid:], op))


def _rebalance_value(value: Any) -> Any:
    if isinstance(value, list):
        return [_rebalance_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_rebalance_value(v) for v in value)
    if isinstance(value, ir.Node):
        return rebalance(value)
    return value


def rebalance(node: Any) -> Any:
    """The same IR with every ``and``/``or`` chain as a balanced tree.

    Sigma conversions write chains of a thousand ``or``s, which the parser nests a thousand deep:
    deep enough to overflow pickling (the compiled-rule cache) and any recursive walk. Both
    operators are associative in Kusto's three-valued logic, so this changes nothing else.
    """
    if isinstance(node, ir.BinaryOp) and node.op in ("and", "or"):
        return _balanced([rebalance(t) for t in flatten_logical(node, node.op)], node.op)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        changes = {}
        for f in dataclasses.fields(node):
            if not f.init:
                continue
            old = getattr(node, f.name)
            new = _rebalance_value(old)
            if new is not old:
                changes[f.name] = new
        return dataclasses.replace(node, **changes) if changes else node
    return node
