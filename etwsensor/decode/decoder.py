"""Payload decoder: RawRecord (header + payload bytes) → RawEvent with typed fields.

Driven entirely by providers/: each (provider, event, version, pointer size) is compiled once into a
short list of steps. Runs of fixed-width fields become one ``struct.Struct.unpack_from`` call, so a
typical event costs a dict, one or two unpacks and a string decode. Pure: no I/O, no logging.
Nothing raises past ``decode``: bad payloads are counted per event and kept raw.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from etwsensor.decode import types as t
from etwsensor.decode.schema import FieldDef, ProviderDef, VersionDef, load_providers
from etwsensor.events import DecodeStatus, RawEvent, RawRecord

# A step reads one or more fields at `off` into `out` and returns the next offset.
Step = Callable[[bytes, int, dict[str, Any]], int]

_FORMATS = {
    "UInt8": "B",
    "Int8": "b",
    "UInt16": "H",
    "Int16": "h",
    "UInt32": "I",
    "Int32": "i",
    "HexInt32": "I",
    "UInt64": "Q",
    "Int64": "q",
    "HexInt64": "Q",
    "Boolean": "I",
    "Float": "f",
    "Double": "d",
    "FILETIME": "Q",
    "GUID": "16s",
}
_CONVERT: dict[str, Callable[[Any], Any]] = {"FILETIME": t.filetime, "GUID": t.guid, "Boolean": bool}


@dataclass(slots=True)
class EventCount:
    """Counters of one (provider, event, version), as `etwsensor inspect` reports them."""

    provider: str
    guid: str
    id: int | None
    opcode: int | None
    name: str
    version: int
    known: bool  # False: provider or event not in providers/ ("other")
    count: int = 0
    decode_errors: int = 0
    undecoded: int = 0

    def note(self, status: DecodeStatus) -> None:
        """Count an event whose status is not OK."""
        if status is DecodeStatus.ERROR:
            self.decode_errors += 1
        elif status is DecodeStatus.UNDECODED:
            self.undecoded += 1


@dataclass
class DecodeStats:
    by_event: dict[tuple[str, int | None, int | None, int], EventCount] = field(default_factory=dict)

    def entry(
        self,
        guid: str,
        id: int | None,
        opcode: int | None,
        version: int,
        provider: str,
        name: str,
        known: bool,
    ) -> EventCount:
        key = (guid, id, opcode, version)
        ec = self.by_event.get(key)
        if ec is None:
            ec = self.by_event[key] = EventCount(provider, guid, id, opcode, name, version, known)
        return ec

    def totals(self) -> dict[str, int]:
        ecs = self.by_event.values()
        return {
            "events": sum(e.count for e in ecs),
            "decode_errors": sum(e.decode_errors for e in ecs),
            "undecoded": sum(e.undecoded for e in ecs),
            "other": sum(e.count for e in ecs if not e.known),
        }

    def as_json(self) -> dict[str, Any]:
        rows = sorted(self.by_event.values(), key=lambda e: (e.provider, e.id or 0, e.opcode or 0, e.version))
        return {
            **self.totals(),
            "by_event": [
                {
                    "provider": e.provider,
                    "guid": e.guid,
                    "id": e.id,
                    "opcode": e.opcode,
                    "name": e.name,
                    "version": e.version,
                    "count": e.count,
                    "decode_errors": e.decode_errors,
                    "undecoded": e.undecoded,
                }
                for e in rows
            ],
        }


@dataclass(slots=True)
class _Plan:
    counter: EventCount
    provider: str
    name: str
    id: int | None
    opcode: int | None
    steps: tuple[Step, ...] | None  # None: not decodable (other, or unknown version)


def _group_step(
    fmt: str, names: tuple[str, ...], converts: tuple[tuple[str, Callable[[Any], Any]], ...]
) -> Step:
    s = struct.Struct("<" + fmt)
    size = s.size
    unpack = s.unpack_from
    if not converts:

        def plain(buf: bytes, off: int, out: dict[str, Any]) -> int:
            out.update(zip(names, unpack(buf, off)))  # noqa: B905 - same length by construction
            return off + size

        return plain

    def converted(buf: bytes, off: int, out: dict[str, Any]) -> int:
        out.update(zip(names, unpack(buf, off)))  # noqa: B905 - same length by construction
        for name, conv in converts:
            out[name] = conv(out[name])
        return off + size

    return converted


# Readers of the variable-width types: (payload, offset) -> (value, next offset).
Reader = Callable[[bytes, int], tuple[Any, int]]
_READERS: dict[str, Reader] = {
    "UnicodeString": t.utf16z,
    "AnsiString": t.ansiz,
    "SID": t.sid,
    "SYSTEMTIME": t.systemtime,
}


def _variable_step(f: FieldDef, pointer_size: int) -> Step:
    name = f.name
    if f.type == "Binary":
        count = f.count or ""

        def binary(buf: bytes, off: int, out: dict[str, Any]) -> int:
            out[name], off = t.counted_binary(buf, off, int(out[count]))
            return off

        return binary
    read = partial(t.token_user, pointer_size=pointer_size) if f.type == "TokenUser" else _READERS[f.type]

    def variable(buf: bytes, off: int, out: dict[str, Any]) -> int:
        out[name], off = read(buf, off)
        return off

    return variable


def compile_layout(vd: VersionDef, pointer_size: int) -> tuple[Step, ...]:
    """Turn one event version into steps: runs of fixed fields merged, variable fields one step each."""
    steps: list[Step] = []
    fmt: list[str] = []
    names: list[str] = []
    converts: list[tuple[str, Callable[[Any], Any]]] = []

    def flush() -> None:
        if fmt:
            steps.append(_group_step("".join(fmt), tuple(names), tuple(converts)))
            fmt.clear()
            names.clear()
            converts.clear()

    for f in vd.fields:
        code = ("Q" if pointer_size == 8 else "I") if f.type == "Pointer" else _FORMATS.get(f.type)
        if code is None:
            flush()
            steps.append(_variable_step(f, pointer_size))
            continue
        fmt.append(code)
        names.append(f.name)
        if f.type in _CONVERT:
            converts.append((f.name, _CONVERT[f.type]))
    flush()
    return tuple(steps)


class Decoder:
    """Decodes RawRecords of the providers in providers/; counts everything it sees."""

    def __init__(self, providers: Iterable[ProviderDef] | None = None) -> None:
        self._providers = {p.guid: p for p in (providers if providers is not None else load_providers())}
        self._plans: dict[tuple[str, bool, int, int, int], _Plan] = {}
        self.stats = DecodeStats()
        # (provider, event name) by GUID, then event id (manifest) or opcode (classic): ``identify``
        self._identities: tuple[dict[str, dict[int, tuple[str, str]]], ...] = ({}, {})  # [classic, manifest]
        for p in self._providers.values():
            table = self._identities[p.kind == "manifest"].setdefault(p.guid, {})
            for ev in p.events:
                table.setdefault(ev.key, (p.name, ev.name))  # the first, as ProviderDef.event finds it

    def provider(self, guid: str) -> ProviderDef | None:
        return self._providers.get(guid)

    @property
    def known_guids(self) -> frozenset[str]:
        """The provider and class GUIDs this decoder has events for; ``decode`` returns None for
        every record of any other GUID."""
        return frozenset(self._providers)

    def count_other(self, guid: str, manifest: bool, key: int, version: int, count: int) -> None:
        """Count ``count`` records of an unknown GUID that were never built, as ``decode`` would."""
        ids = (key, None) if manifest else (None, key)
        self.stats.entry(guid, ids[0], ids[1], version, guid, "", known=False).count += count

    def _plan(self, rec: RawRecord, key: int) -> _Plan:
        prov = self._providers.get(rec.guid)
        ev = prov.event(key) if prov is not None and (prov.kind == "manifest") == rec.manifest else None
        vd = ev.version(rec.version) if ev is not None else None
        ids = (key, None) if rec.manifest else (None, key)
        provider = prov.name if prov is not None else rec.guid
        name = ev.name if ev is not None else ""
        counter = self.stats.entry(
            rec.guid, ids[0], ids[1], rec.version, provider, name, known=ev is not None
        )
        steps = compile_layout(vd, rec.pointer_size) if vd is not None else None
        plan = _Plan(counter, provider, name, ids[0], ids[1], steps)
        self._plans[(rec.guid, rec.manifest, key, rec.version, rec.pointer_size)] = plan
        return plan

    def identify(self, rec: RawRecord) -> tuple[str, str] | None:
        """(provider, event name) of a record from its GUID and event id / classic opcode alone, without
        reading the payload or counting it (what the CPU ceiling sheds by, before ``decode``); None exactly
        when ``decode`` would return None."""
        if rec.manifest:
            table = self._identities[1].get(rec.guid)
            return table.get(rec.id) if table is not None else None
        table = self._identities[0].get(rec.guid)
        return table.get(rec.opcode) if table is not None else None

    def decode(self, rec: RawRecord) -> RawEvent | None:
        """The RawEvent of a record of a known event (status OK, ERROR or UNDECODED); None for others."""
        key = rec.id if rec.manifest else rec.opcode
        plan = self._plans.get((rec.guid, rec.manifest, key, rec.version, rec.pointer_size))
        if plan is None:
            plan = self._plan(rec, key)
        counter = plan.counter
        counter.count += 1
        steps = plan.steps
        if steps is None:
            if not counter.known:
                return None
            counter.undecoded += 1
            return _raw(plan, rec, DecodeStatus.UNDECODED)
        buf = rec.payload
        out: dict[str, Any] = {}
        off = 0
        try:
            for step in steps:
                off = step(buf, off, out)
        except (struct.error, t.DecodeFailure, ValueError, OverflowError):
            counter.decode_errors += 1
            return _raw(plan, rec, DecodeStatus.ERROR)
        return _event(plan, rec, out)


def _event(
    plan: _Plan,
    rec: RawRecord,
    fields: dict[str, Any],
    status: DecodeStatus = DecodeStatus.OK,
    payload: bytes | None = None,
) -> RawEvent:
    return RawEvent(
        guid=rec.guid,
        provider=plan.provider,
        name=plan.name,
        id=plan.id,
        opcode=plan.opcode,
        version=rec.version,
        ts=rec.ts,
        pid=rec.pid,
        tid=rec.tid,
        cpu=rec.cpu,
        fields=fields,
        status=status,
        payload=payload,
    )


def _raw(plan: _Plan, rec: RawRecord, status: DecodeStatus) -> RawEvent:
    """A record we know but could not decode: kept with its raw payload."""
    return _event(plan, rec, {}, status, rec.payload)
