"""Windows event log records (EVTX, Winlogbeat/ECS JSON, flat Sysmon JSON) as RawEvents.

Every reader of Windows events turns a record into the same RawEvent: ``provider`` is the event
provider's name (``Microsoft-Windows-Sysmon``, ``Microsoft-Windows-Security-Auditing``), ``name`` the
event's name below (``ProcessCreate``), ``id`` the event id, ``fields`` the record's EventData with
Sysmon's and the Security log's own field names, and ``ts`` the time the event happened (Sysmon's
``UtcTime`` when there is one, else the record's TimeCreated). So the EVTX file and a JSON export of
the same events are the same stream for the normalizer (etwsensor/normalize/windows_events.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from etwsensor.decode.decoder import DecodeStats
from etwsensor.events import RawEvent
from etwsensor.sources.header import RecordingHeader

SYSMON = "Microsoft-Windows-Sysmon"
SECURITY = "Microsoft-Windows-Security-Auditing"
SYSMON_CHANNEL = "Microsoft-Windows-Sysmon/Operational"

# Event names; the events etwsensor maps to Defender rows are in MAPPED.
EVENT_NAMES: dict[str, dict[int, str]] = {
    SYSMON: {
        1: "ProcessCreate", 2: "FileCreateTime", 3: "NetworkConnect", 4: "ServiceStateChange",
        5: "ProcessTerminate", 6: "DriverLoad", 7: "ImageLoad", 8: "CreateRemoteThread",
        9: "RawAccessRead", 10: "ProcessAccess", 11: "FileCreate", 12: "RegistryAddOrDelete",
        13: "RegistryValueSet", 14: "RegistryRename", 15: "FileCreateStreamHash", 16: "ConfigChange",
        17: "PipeCreated", 18: "PipeConnected", 19: "WmiEventFilter", 20: "WmiEventConsumer",
        21: "WmiEventConsumerToFilter", 22: "DnsQuery", 23: "FileDelete", 24: "ClipboardChange",
        25: "ProcessTampering", 26: "FileDeleteDetected", 27: "FileBlockExecutable",
        28: "FileBlockShredding", 29: "FileExecutableDetected", 255: "Error",
    },
    SECURITY: {
        4688: "ProcessCreate", 4689: "ProcessExit", 4657: "RegistryValueModified", 4663: "ObjectAccess",
    },
}  # fmt: skip
# What the normalizer turns into rows (or uses to keep its process table right).
MAPPED: frozenset[tuple[str, int]] = frozenset(
    {(SYSMON, i) for i in (1, 5, 7, 11, 12, 13, 14, 23, 26)} | {(SECURITY, i) for i in (4688, 4689, 4657)}
)
# Providers known by their channel, for exports that name only the channel.
_CHANNEL_PROVIDERS = {SYSMON_CHANNEL.lower(): SYSMON, "security": SECURITY}


class RecordError(ValueError):
    """A record that is not a usable Windows event (no event id, no time): counted and skipped."""


def provider_of(provider: str, channel: str) -> str:
    return provider or _CHANNEL_PROVIDERS.get(channel.lower(), channel)


def parse_time(text: Any) -> datetime:
    """ISO-8601 or Sysmon's ``2020-10-27 20:00:14.320`` (UTC) to an aware datetime."""
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=UTC)
    if not isinstance(text, str) or not text:
        raise RecordError(f"no usable time: {text!r}")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        from etwsensor.rules.scalars import parse_datetime

        parsed = parse_datetime(text)
        if parsed is None:
            raise RecordError(f"not a time: {text!r}") from None
        return parsed
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def as_int(value: Any, default: int = 0) -> int:
    """Numbers as EVTX, ECS and flat JSON write them: 123, "123", "0x7b"."""
    if type(value) is int:
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text, 16) if text[:2].lower() == "0x" else int(text)
        except ValueError:
            return default
    return default


class WindowsEventSource:
    """What the EVTX and JSON readers share: the header (the readers set the host from the first
    record, as Defender writes DeviceName: lower case), the counts per provider and event id, and the
    damage list."""

    kind = "windows-events"

    def __init__(self) -> None:
        self.header = RecordingHeader(comment="Windows event log")
        self.stats = DecodeStats()
        self._damage: list[Any] = []
        self.skipped = 0  # records of events no table takes: counted per id, not yielded

    @property
    def damage(self) -> list[Any]:
        return self._damage

    def counted_only(self, provider: str, channel: str, event_id: int, version: int, guid: str = "") -> bool:
        """Count an event no table takes and say so (True): readers then skip it without building it.
        ``skipped`` counts them, so ``events`` plus ``skipped`` is every record read."""
        provider = provider_of(provider, channel)
        if event_id < 0 or (provider, event_id) in MAPPED:
            return False
        name = EVENT_NAMES.get(provider, {}).get(event_id, "")
        self.stats.entry(guid, event_id, None, version, provider, name or str(event_id), False).count += 1
        self.skipped += 1
        return True

    def make_event(
        self,
        provider: str,
        channel: str,
        event_id: int,
        version: int,
        created: Any,
        fields: Mapping[str, Any],
        pid: int = 0,
        tid: int = 0,
        guid: str = "",
    ) -> RawEvent:
        """One RawEvent, counted per provider and event id. Raises RecordError when unusable."""
        provider = provider_of(provider, channel)
        if event_id < 0:
            raise RecordError("no event id")
        name = EVENT_NAMES.get(provider, {}).get(event_id, "")
        counter = self.stats.entry(
            guid, event_id, None, version, provider, name or str(event_id), (provider, event_id) in MAPPED
        )
        counter.count += 1
        utc = fields.get("UtcTime") if provider == SYSMON else None
        ts = parse_time(utc if utc else created)
        return RawEvent(
            guid=guid.strip("{}").lower(),
            provider=provider,
            name=name,
            id=event_id,
            opcode=None,
            version=version,
            ts=ts,
            pid=pid,
            tid=tid,
            cpu=0,
            fields=fields if isinstance(fields, dict) else dict(fields),
        )
