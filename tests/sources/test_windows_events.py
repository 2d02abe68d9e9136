"""Windows event logs as inputs: real Sysmon / Security EVTX files and Winlogbeat's ECS documents of the
same events (tests/data/windows, see NOTICE.md) give identical rows; damage is reported, reading goes on.

The ECS documents were made by Winlogbeat's own modules from these EVTX files, not by etwsensor, so the
equality checks our EVTX reading and our ECS reading against an independent rendering of the same events.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from etwsensor.normalize import iter_rows
from etwsensor.normalize.models import full_row, validate_row
from etwsensor.sources import open_source, source_kind
from etwsensor.sources.evtx import EvtxSource
from etwsensor.sources.rowfile import row_to_json

DATA = Path(__file__).parent.parent / "data" / "windows"
PAIRS = sorted(p.name.removesuffix(".evtx.gz") for p in DATA.glob("*.evtx.gz"))


def unpack(name: str, tmp: Path) -> Path:
    out = tmp / name.removesuffix(".gz")
    out.write_bytes(gzip.decompress((DATA / name).read_bytes()))
    return out


def rows_of(path: Path) -> list[dict[str, object]]:
    return [{"$table": t, **row_to_json(full_row(t, r))} for t, r in iter_rows(path)]


@pytest.mark.parametrize("name", PAIRS)
def test_evtx_and_winlogbeat_ecs_give_identical_rows(name: str, tmp_path: Path) -> None:
    evtx = unpack(f"{name}.evtx.gz", tmp_path)
    golden = unpack(f"{name}.golden.json.gz", tmp_path)  # a JSON array, as Beats writes its golden files
    ndjson = tmp_path / f"{name}.ndjson"  # and the same documents as JSON Lines, as a SIEM exports them
    ndjson.write_text("".join(json.dumps(d) + "\n" for d in json.loads(golden.read_text())))
    assert source_kind(evtx) == "evtx" and source_kind(golden) == source_kind(ndjson) == "windows-json"
    from_evtx = rows_of(evtx)
    assert from_evtx == rows_of(golden) == rows_of(ndjson)
    for table, row in iter_rows(evtx):  # every row fits its table's model (types, no unknown columns)
        validate_row(table, row)


def test_rows_from_the_real_sysmon_events(tmp_path: Path) -> None:
    rows = rows_of(unpack("sysmon-12-processcreate.evtx.gz", tmp_path))
    assert len(rows) == 1
    r = rows[0]
    assert r["$table"] == "DeviceProcessEvents" and r["ActionType"] == "ProcessCreated"
    assert r["DeviceName"] == "vagrant" and r["Timestamp"] == "2020-10-27T20:00:14.3200000Z"
    assert r["FileName"] == "notepad.exe" and r["FolderPath"] == "C:\\Windows\\System32\\notepad.exe"
    assert r["ProcessId"] == 3616 and r["ProcessCommandLine"] == '"C:\\Windows\\system32\\notepad.exe" '
    assert (r["AccountDomain"], r["AccountName"], r["ProcessIntegrityLevel"]) == (
        "VAGRANT",
        "vagrant",
        "Medium",
    )
    assert r["SHA1"] == "b6d237154f2e528f0b503b58b025862d66b02b73" and r["LogonId"] == 0x2C9E7
    assert r["ProcessVersionInfoOriginalFileName"] == "NOTEPAD.EXE"
    assert r["ProcessVersionInfoFileDescription"] == "Notepad" and r["CreatedProcessSessionId"] == 1
    # the parent is known only from this event: what it says of it fills the Initiating* columns
    assert r["InitiatingProcessFileName"] == "explorer.exe" and r["InitiatingProcessId"] == 4212
    assert r["InitiatingProcessFolderPath"] == "C:\\Windows\\explorer.exe"
    assert r["InitiatingProcessCommandLine"] == "C:\\Windows\\Explorer.EXE"

    reg = rows_of(unpack("sysmon-11-registry.evtx.gz", tmp_path))
    assert {r["ActionType"] for r in reg} == {"RegistryValueSet"}
    first = reg[0]
    assert (
        first["RegistryKey"] == "HKEY_CURRENT_USER\\S-1-5-21-1067164964-2079179834-2367582738-1000\\Software"
    )
    assert (first["RegistryValueName"], first["RegistryValueType"], first["RegistryValueData"]) == (
        "Key 1",
        "Dword",
        "4",
    )
    assert {(r["RegistryValueType"], r["RegistryValueData"]) for r in reg} >= {("Binary", ""), ("QWord", "5")}
    assert first["InitiatingProcessFileName"] == "regedit.exe" and first["InitiatingProcessId"] == 6072

    image = rows_of(unpack("sysmon-12-loadimage.evtx.gz", tmp_path))[0]
    assert image["$table"] == "DeviceImageLoadEvents" and image["FileName"] == "IDStore.dll"
    assert image["SHA256"] == "4808f1101f4e42387d8ddb7a355668bae3bf6f781c42d3bcd82e23446b1deb3e"
    assert image["InitiatingProcessFileName"] == "dllhost.exe"

    deleted = rows_of(unpack("sysmon-11-filedelete.evtx.gz", tmp_path))
    assert {(r["$table"], r["ActionType"]) for r in deleted} == {("DeviceFileEvents", "FileDeleted")}
    assert (
        deleted[0]["FileName"] == "test.test.exe" and deleted[0]["MD5"] == "199e1cf5b2250bd515ecccf4ca686301"
    )

    sec = rows_of(unpack("security-windows2019_4688_Process_Created.evtx.gz", tmp_path))[0]
    assert sec["FileName"] == "wevtutil.exe" and sec["ProcessId"] == 0x11CC
    assert sec["ProcessCommandLine"] == '"C:\\Windows\\system32\\wevtutil.exe" cl Security'
    assert sec["ProcessIntegrityLevel"] == "High" and sec["ProcessTokenElevation"] == "TokenElevationTypeFull"
    assert sec["AccountSid"] == "S-1-5-21-1610636575-2290000098-1654242922-1000"
    assert sec["InitiatingProcessFileName"] == "powershell.exe" and sec["InitiatingProcessId"] == 0x122C


def test_events_without_a_table_are_counted_per_id(tmp_path: Path) -> None:
    source = open_source(unpack("sysmon-9.01.evtx.gz", tmp_path))
    made = sum(1 for _ in source.events())
    assert made == 3 + 5 and made + source.skipped == 32  # events no table takes are counted, not built
    counts = {(e.provider, e.id, e.name): (e.count, e.known) for e in source.stats.by_event.values()}
    assert counts[("Microsoft-Windows-Sysmon", 1, "ProcessCreate")] == (3, True)
    assert counts[("Microsoft-Windows-Sysmon", 3, "NetworkConnect")] == (16, False)
    assert source.damage == []


def test_a_corrupt_chunk_is_reported_and_the_next_chunk_read(tmp_path: Path) -> None:
    good = unpack("sysmon-10.2-dns.evtx.gz", tmp_path)  # 156 records in three chunks: 1-74, 75-143, 144-156
    data = bytearray(good.read_bytes())
    chunk = 4096 + 65536
    assert data[chunk : chunk + 8] == b"ElfChnk\x00"
    data[chunk + 600 : chunk + 2000] = b"\xff" * 1400
    bad = tmp_path / "bad.evtx"
    bad.write_bytes(data)
    source = EvtxSource(bad)
    events = list(source.events())
    assert events == [] and source.skipped == 74 + 13  # DNS queries: counted per id, never built
    assert [d.where for d in source.damage] == ["records 75..143"]
    assert "skipped" in str(source.damage[0]) and str(bad) in str(source.damage[0])


def test_malformed_json_records_are_counted_with_their_number(tmp_path: Path) -> None:
    golden = json.loads(unpack("sysmon-11-registry.golden.json.gz", tmp_path).read_text())
    path = tmp_path / "winlogbeat.ndjson"
    bad_time = dict(golden[1], **{"@timestamp": "not a time"})
    bad_time["winlog"] = dict(bad_time["winlog"], event_id="12")  # no UtcTime to fall back on
    path.write_text(
        json.dumps(golden[0])
        + "\n"
        + "{broken\n"
        + json.dumps(bad_time)
        + "\n"
        + json.dumps(golden[2])
        + "\n"
    )
    source = open_source(path)
    events = list(source.events())
    assert len(events) == 2
    assert [d.where for d in source.damage] == ["item 2", "item 3"]


def test_file_kinds_by_content(tmp_path: Path) -> None:
    evtx = unpack("sysmon-12-loadimage.evtx.gz", tmp_path)
    renamed = tmp_path / "System"  # KAPE keeps the names; a copy may lose the extension
    renamed.write_bytes(evtx.read_bytes())
    assert source_kind(renamed) == "evtx"
    flat = tmp_path / "otrf.json"
    flat.write_text(json.dumps({"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational"}) + "\n")
    assert source_kind(flat) == "windows-json"
    rows = tmp_path / "DeviceProcessEvents.json"
    rows.write_text(json.dumps([{"Timestamp": "2024-01-01T00:00:00", "ActionType": "ProcessCreated"}]))
    assert source_kind(rows) == "rows"
    assert source_kind(tmp_path / "export.csv") == "rows"


def test_a_file_cut_inside_a_chunk_is_reported(tmp_path: Path) -> None:
    whole = unpack("sysmon-9.01.evtx.gz", tmp_path).read_bytes()
    cut = tmp_path / "cut.evtx"
    cut.write_bytes(whole[: 4096 + 30000])  # what a collection copied from a live, growing log may hold
    source = EvtxSource(cut)
    assert list(source.events()) == []
    assert [d.where for d in source.damage] == ["offset 0x1000"]
    assert "truncated" in source.damage[0].message and "chunk 0" in source.damage[0].message


def test_hostile_json_items_are_reported_not_raised(tmp_path: Path) -> None:
    golden = json.loads(unpack("sysmon-12-processcreate.golden.json.gz", tmp_path).read_text())
    odd = json.loads(json.dumps(golden[0]))
    odd["process"]["command_line"] = "notepad \udc80.txt"  # a lone surrogate, as JSON can spell one
    path = tmp_path / "hostile.ndjson"
    path.write_text(
        "[" * 100_000 + "\n" + b"\xff\xfe{}\n".decode("latin-1") + json.dumps(odd) + "\n", encoding="utf-8"
    )
    source = open_source(path)
    events = list(source.events())
    assert len(events) == 1 and events[0].fields["CommandLine"] == "notepad \ufffd.txt"
    assert [d.where for d in source.damage] == ["item 1", "item 2"]
