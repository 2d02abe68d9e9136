"""duckdb-kql's IR module (``duckdb_kql.ir``) without the rest of duckdb-kql.

The compiler and the compiled-rule cache only need the IR's node classes. Importing them the
ordinary way runs duckdb-kql's package ``__init__``, which loads its ANTLR lexer and parser
(~100 ms): a warm start, where every rule's IR comes from the cache, would pay that for nothing.
``ir.py`` imports nothing from its package at run time, so it is loaded on its own here, under
its own name in ``sys.modules``: the cache's pickles resolve their classes to it, and when the
front end later imports the whole package (a rule to parse), the package's ``from . import ir``
finds this same module, so there is one set of classes either way. If the stand-alone load fails
(another duckdb-kql layout), the package is imported the ordinary way.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import TYPE_CHECKING

NAME = "duckdb_kql.ir"


def _load_alone() -> ModuleType:
    if NAME in sys.modules:
        return sys.modules[NAME]
    if "duckdb_kql" in sys.modules:  # the whole package is there already
        import duckdb_kql.ir

        return duckdb_kql.ir
    package = importlib.util.find_spec("duckdb_kql")  # finds the package without running it
    locations = package.submodule_search_locations if package else None
    spec = importlib.util.spec_from_file_location(NAME, f"{locations[0]}/ir.py") if locations else None
    if spec is None or spec.loader is None:
        raise ImportError(NAME)
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module  # before running it: dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[NAME]
        raise
    return module


def _load() -> ModuleType:
    try:
        return _load_alone()
    except Exception:  # a layout this does not know: the ordinary import, slower but right
        import duckdb_kql.ir

        return duckdb_kql.ir


if TYPE_CHECKING:
    from duckdb_kql import ir as ir
else:
    ir = _load()


def full_package() -> ModuleType:
    """The whole duckdb-kql package (parser, lowering), with ``duckdb_kql.ir`` set to this IR."""
    import duckdb_kql

    if getattr(duckdb_kql, "ir", None) is not ir:
        duckdb_kql.ir = ir  # type: ignore[attr-defined]  # a submodule loaded before its package
    return duckdb_kql
