"""JSON documents as exports hold them: JSON Lines, one JSON array, or one wrapper object.

Wrappers: Elasticsearch search results (``hits.hits[]._source``), the Defender API
(``{"Schema": …, "Results": [...]}``), OData (``{"value": [...]}``) and the Log Analytics query API
(``{"tables": [{"columns": [...], "rows": [[...]]}]}``). ``iter_objects`` yields ``(number, item)``:
the line number for JSON Lines, the item number otherwise; an item that is not a JSON object is
yielded as a ``BadItem`` so the reader can count and report it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from etwsensor.sources.text import clean_strings

_SNIFF_BYTES = 1 << 20
_SNIFF_LINES = 50


@dataclass(frozen=True, slots=True)
class BadItem:
    reason: str


def _open(path: Path) -> IO[bytes]:
    raw = path.open("rb")
    if path.name.lower().endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)  # type: ignore[no-any-return]
    return raw


def _first_char(head: bytes) -> str:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return chr(text[0]) if text else ""


def is_wrapper(doc: Any) -> bool:
    """An API answer or search result that holds the items (see the module doc), not an item."""
    if not isinstance(doc, dict):
        return False
    hits = doc.get("hits")
    if isinstance(hits, dict) and isinstance(hits.get("hits"), list):
        return True
    return any(isinstance(doc.get(k), list) for k in ("Results", "value", "tables"))


def _unwrap(doc: Any) -> list[Any]:
    """The items of a whole-file document."""
    if isinstance(doc, list):
        return doc
    if not isinstance(doc, dict):
        return [doc]
    hits = doc.get("hits")
    if isinstance(hits, dict) and isinstance(hits.get("hits"), list):
        return [h.get("_source", h) if isinstance(h, dict) else h for h in hits["hits"]]
    for key in ("Results", "value"):
        if isinstance(doc.get(key), list):
            return list(doc[key])
    tables = doc.get("tables")
    if isinstance(tables, list):
        items: list[Any] = []
        for table in tables:
            if not isinstance(table, dict):
                continue
            names = [c.get("name") if isinstance(c, dict) else c for c in table.get("columns") or []]
            items.extend(dict(zip(names, row, strict=False)) for row in table.get("rows") or [])
        return items
    return [doc]


def _line_object(head: bytes) -> dict[str, Any] | None:
    """The first of the first lines that is a JSON object (a damaged first line does not hide a JSON
    Lines file)."""
    for line in head.lstrip(b"\xef\xbb\xbf \t\r\n").split(b"\n")[:_SNIFF_LINES]:
        if line.strip()[:1] != b"{":
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            return obj
    return None


def first_object(path: Path) -> dict[str, Any] | None:
    """The first JSON object of the file (for telling its kind), or None when there is none."""
    with _open(path) as fh:
        head = fh.read(_SNIFF_BYTES)
    obj = _line_object(head)
    if obj is not None:
        return next((i for i in _unwrap(obj) if isinstance(i, dict)), None) if is_wrapper(obj) else obj
    if _first_char(head) not in ("{", "["):
        return None
    try:
        items = _unwrap(json.loads(_whole(path)))
    except (ValueError, RecursionError):
        return None
    return next((i for i in items if isinstance(i, dict)), None)


def _whole(path: Path) -> bytes:
    with _open(path) as fh:
        return fh.read()  # type: ignore[no-any-return]


def _is_json_lines(path: Path) -> bool:
    with _open(path) as fh:
        head = fh.read(_SNIFF_BYTES)
    obj = _line_object(head)
    return obj is not None and not is_wrapper(obj)


def iter_objects(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadItem]]:
    if _is_json_lines(path):
        with _open(path) as fh:
            for number, raw in enumerate(fh, start=1):
                line = raw.strip()
                if not line:
                    continue
                try:
                    obj = clean_strings(json.loads(line))
                except ValueError as exc:
                    yield number, BadItem(f"not JSON: {exc}")
                    continue
                except RecursionError:
                    yield number, BadItem("nested too deeply")
                    continue
                if isinstance(obj, dict) and isinstance(obj.get("_source"), dict):
                    obj = obj["_source"]
                yield number, obj if isinstance(obj, dict) else BadItem("not a JSON object")
        return
    try:
        items = _unwrap(clean_strings(json.loads(_whole(path))))
    except ValueError as exc:
        yield 1, BadItem(f"not JSON: {exc}")
        return
    except RecursionError:
        yield 1, BadItem("nested too deeply")
        return
    for number, obj in enumerate(items, start=1):
        yield number, obj if isinstance(obj, dict) else BadItem("not a JSON object")
