"""Provider definitions (providers/*.yaml) as validated pydantic models.

One file per ETW provider or classic kernel class: name, GUID, kind, keyword masks (or kernel enable
flags) and, per event, the ordered fields of every version with their wire types. The decoder, the
live-session plan and `etwsensor providers` all read these models, never the YAML directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from etwsensor.cachedir import cache_root, write_atomically
from etwsensor.errors import validation_reason

# Fixed-width wire types and their sizes; "Pointer" is the trace's pointer size.
FIXED_WIDTHS: dict[str, int] = {
    "UInt8": 1,
    "Int8": 1,
    "UInt16": 2,
    "Int16": 2,
    "UInt32": 4,
    "Int32": 4,
    "HexInt32": 4,
    "UInt64": 8,
    "Int64": 8,
    "HexInt64": 8,
    "Boolean": 4,
    "Float": 4,
    "Double": 8,
    "FILETIME": 8,
    "SYSTEMTIME": 16,
    "GUID": 16,
}
# Variable-width types: strings are NUL-terminated; SID is a bare SID; TokenUser is the classic
# Process UserSID blob (CORRECTIONS §2); Binary is counted by the earlier integer field named in `count`.
VARIABLE_TYPES = frozenset({"Pointer", "UnicodeString", "AnsiString", "SID", "TokenUser", "Binary"})
PARSED_CACHE_FORMAT = 1  # bump when what the cache holds for a provider file changes


class FieldDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: str
    count: str | None = None  # Binary only: the earlier field holding its length in bytes

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v in FIXED_WIDTHS or v in VARIABLE_TYPES:
            return v
        raise ValueError(f"unknown field type {v!r}")

    @model_validator(mode="after")
    def _binary_is_counted(self) -> FieldDef:
        if (self.type == "Binary") != (self.count is not None):
            raise ValueError(f"{self.name}: Binary fields, and only they, name a count field")
        return self

    @property
    def width(self) -> int | Literal["pointer", "variable"]:
        """Bytes on the wire: a number, the trace's pointer size, or variable."""
        if self.type == "Pointer":
            return "pointer"
        return FIXED_WIDTHS.get(self.type, "variable")

    @property
    def encoding(self) -> str | None:
        return {"UnicodeString": "utf-16-le", "AnsiString": "ansi"}.get(self.type)


class VersionDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=0, le=255)
    fields: tuple[FieldDef, ...]

    @model_validator(mode="after")
    def _counts_precede(self) -> VersionDef:
        seen: set[str] = set()
        for f in self.fields:
            if f.count is not None and f.count not in seen:
                raise ValueError(f"{f.name}: count field {f.count} must come before it")
            if f.name in seen:
                raise ValueError(f"duplicate field {f.name}")
            seen.add(f.name)
        return self


class EventDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int | None = None  # manifest providers
    opcode: int | None = None  # classic kernel classes
    name: str
    keywords: tuple[str, ...] = ()
    versions: tuple[VersionDef, ...]

    @property
    def key(self) -> int:
        return self.id if self.id is not None else (self.opcode or 0)

    def version(self, v: int) -> VersionDef | None:
        for vd in self.versions:
            if vd.version == v:
                return vd
        return None


class ProviderDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    guid: str
    kind: Literal["manifest", "classic"]
    keywords: dict[str, int] = Field(default_factory=dict)
    enable_flags: dict[str, int] = Field(default_factory=dict)
    events: tuple[EventDef, ...]

    @field_validator("guid")
    @classmethod
    def _guid(cls, v: str) -> str:
        v = v.strip("{}").lower()
        if not re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", v):
            raise ValueError(f"not a GUID: {v!r}")
        return v

    @model_validator(mode="after")
    def _keyed_by_kind(self) -> ProviderDef:
        keys: set[int] = set()
        for ev in self.events:
            if self.kind == "manifest" and (ev.id is None or ev.opcode is not None):
                raise ValueError(f"{ev.name}: manifest events are keyed by id")
            if self.kind == "classic" and (ev.opcode is None or ev.id is not None):
                raise ValueError(f"{ev.name}: classic events are keyed by opcode")
            if ev.key in keys:
                raise ValueError(f"{ev.name}: duplicate event {ev.key}")
            keys.add(ev.key)
            for kw in ev.keywords:
                if kw not in self.keywords:
                    raise ValueError(f"{ev.name}: unknown keyword {kw}")
        return self

    def event(self, key: int) -> EventDef | None:
        for ev in self.events:
            if ev.key == key:
                return ev
        return None


class ProviderFileError(ValueError):
    """A providers/*.yaml file that does not load: names the file and the reason."""


def providers_dir() -> Path:
    """providers/ as shipped in the wheel (etwsensor/_providers), else the source checkout's."""
    packaged = Path(str(resources.files("etwsensor").joinpath("_providers")))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "providers"


def _cache_path(raw: bytes) -> Path:
    key = hashlib.sha256(f"{PARSED_CACHE_FORMAT}\0".encode() + raw).hexdigest()
    return cache_root() / "providers" / f"{key}.msgpack"


def _cached(raw: bytes) -> ProviderDef | None:
    """The definition parsed from the same bytes before (msgpack: data only, nothing runs), or None."""
    try:
        return ProviderDef.model_validate(msgspec.msgpack.decode(_cache_path(raw).read_bytes()))
    except (OSError, ValueError, msgspec.MsgspecError):  # absent, damaged or stale: parsed again
        return None


def load_provider_file(path: Path) -> ProviderDef:
    """One provider file. Its parsed YAML is cached by the file's bytes: libyaml's parse still builds
    every node in Python (~20 ms for providers/ at each start), msgpack reads the same data in 1 ms."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProviderFileError(f"{path}: {exc}") from exc
    cached = _cached(raw)
    if cached is not None:
        return cached
    import yaml  # only for a file not read before: a warm start does not load PyYAML

    try:
        # libyaml when present: providers load at every start.
        data = yaml.load(raw.decode("utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        provider = ProviderDef.model_validate(data)
    except ValidationError as exc:
        raise ProviderFileError(f"{path}: {validation_reason(exc)}") from exc
    except (yaml.YAMLError, ValueError) as exc:
        raise ProviderFileError(f"{path}: {exc}") from exc
    with contextlib.suppress(TypeError, ValueError, msgspec.MsgspecError):
        packed = msgspec.msgpack.encode(data)
        if msgspec.msgpack.decode(packed) == data:  # only data that reads back the same
            write_atomically(_cache_path(raw), packed)
    return provider


@cache
def load_providers(directory: Path | None = None) -> tuple[ProviderDef, ...]:
    d = directory or providers_dir()
    files = sorted(d.glob("*.yaml"))
    if not files:
        raise ProviderFileError(f"{d}: no provider definitions found")
    return tuple(load_provider_file(p) for p in files)


def find_provider(name_or_guid: str, directory: Path | None = None) -> ProviderDef | None:
    needle = name_or_guid.strip("{}").lower()
    for p in load_providers(directory):
        if needle in (p.name.lower(), p.guid):
            return p
    return None
