"""providers/ against the Windows manifest dumps (tests/data/etw/*.tsv) and CORRECTIONS.md."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import msgspec
import pytest

from etwsensor.decode import schema
from etwsensor.decode.schema import (
    ProviderDef,
    ProviderFileError,
    load_provider_file,
    load_providers,
    providers_dir,
)

TSV = Path(__file__).parents[1] / "data" / "etw"
SIG = re.compile(r"^(?P<name>[^(]*)\((?P<fields>.*)\)$")


def tsv_rows(name: str) -> dict[tuple[str, int, int], tuple[str, list[tuple[str, str]]]]:
    """(class-or-provider, event id/opcode, version) -> (event name, [(field, tsv type)])."""
    rows = {}
    with (TSV / name).open(encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh, delimiter="\t"):
            m = SIG.match(r["event(fields)"])
            assert m
            fields = [tuple(p.split())[::-1] for p in m["fields"].split(",") if p.strip()]
            owner = r.get("category") or r["provider"]
            rows[(owner, int(r["event_id"]), int(r["version"]))] = (m["name"], fields)
    return rows


# Win32k's dump names its audit events only by task (task_01001...): the generator names them by API.
TASK_NAMES = {1001: "RegisterRawInputDevices", 1002: "SetWindowsHookEx", 1003: "GetAsyncKeyState"}


def by_name() -> dict[str, ProviderDef]:
    return {p.name: p for p in load_providers()}


def test_every_required_provider_is_defined() -> None:
    provs = by_name()
    expected = {
        "Microsoft-Windows-Kernel-Process": "22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716",
        "Microsoft-Windows-Kernel-File": "edd08927-9cc4-4e65-b970-c2560fb5c289",
        "Microsoft-Windows-Kernel-Registry": "70eb4f03-c1de-4f73-a051-33d13d5413bd",
        "Process": "3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c",
        "Image": "2cb15d1d-5fc1-11d2-abe1-00a0c911f518",
        "Registry": "ae53722e-c863-11d2-8659-00c04fa321a1",
        "FileIo": "90cbdc39-4a3e-11d1-84f4-0000f80464e3",
        "SystemConfigEx": "9b79ee91-b5fd-41c0-a243-4248e266e9d0",
        "SystemConfig": "01853a65-418f-4f36-aefc-dc0f1d2fd235",  # CPU only: the host name of .etl files
        "Microsoft-Windows-Kernel-EventTracing": "b675ec37-bdb6-4648-bc92-f3fdc74d3ca2",
        "Microsoft-Windows-Win32k": "8c416c79-d49b-4f01-a467-e56d3aa8234c",
        "etwsensor-ImageFacts": "b9ca8bb6-4ced-5ad3-a5b5-8f9d2d097412",  # etwsensor's own recording event
        "etwsensor-HostFacts": "5236470b-4fde-5baf-91f0-931f546dfd26",  # likewise: tokens, SID names
    }
    assert {n: p.guid for n, p in provs.items()} == expected


@pytest.mark.parametrize(
    ("provider", "ids"),
    [
        ("Microsoft-Windows-Kernel-Process", {1, 2, 5, 6, 15}),
        ("Microsoft-Windows-Kernel-File", set(range(10, 31))),
        ("Microsoft-Windows-Kernel-Registry", set(range(1, 16))),
        ("Microsoft-Windows-Kernel-EventTracing", {3, 11, 14, 15, 41}),  # the tamper watch's events
        ("Microsoft-Windows-Win32k", {1001, 1002, 1003}),  # DeviceEvents' API audit events, no others
    ],
)
def test_manifest_events_match_the_manifest_dump(provider: str, ids: set[int]) -> None:
    p = by_name()[provider]
    rows = tsv_rows(f"{provider}.tsv")
    assert {e.key for e in p.events} == ids
    for ev in p.events:
        tsv_versions = sorted(v for (_, eid, v) in rows if eid == ev.id)
        assert [v.version for v in ev.versions] == tsv_versions, ev.name
        for vd in ev.versions:
            name, fields = rows[(provider, ev.key, vd.version)]
            assert TASK_NAMES.get(ev.key, name.removeprefix("task_0").split("_V")[0]) == ev.name
            assert [f.name for f in vd.fields] == [n for n, _ in fields]
            for f, (_, tsv_type) in zip(vd.fields, fields, strict=True):
                # The manifest dump names the wire type exactly, but for counted Binary.
                assert f.type == tsv_type, (ev.name, vd.version, f.name)


def test_kernel_file_layouts_differ_between_v0_and_v1() -> None:
    create = by_name()["Microsoft-Windows-Kernel-File"].event(12)
    assert create is not None
    v0, v1 = create.version(0), create.version(1)
    assert v0 is not None and v1 is not None
    assert [f.name for f in v0.fields][:3] == ["Irp", "ThreadId", "FileObject"]
    assert [f.name for f in v1.fields][:3] == ["Irp", "FileObject", "IssuingThreadId"]
    for only_v0 in (10, 11, 24):
        ev = by_name()["Microsoft-Windows-Kernel-File"].event(only_v0)
        assert ev is not None and [v.version for v in ev.versions] == [0]


def test_registry_captured_data_is_counted_by_the_field_before_it() -> None:
    ev = by_name()["Microsoft-Windows-Kernel-Registry"].event(5)
    assert ev is not None and ev.name == "SetValueKey"
    fields = {f.name: f for f in ev.versions[0].fields}
    assert fields["CapturedData"].count == "CapturedDataSize"
    assert fields["PreviousData"].count == "PreviousDataCapturedSize"


CLASSIC = {
    "Process": ("{3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c}", {1, 2, 3, 4, 11, 39}),
    "Image": ("{2cb15d1d-5fc1-11d2-abe1-00a0c911f518}", {2, 3, 4, 10}),
    "Registry": (
        "{ae53722e-c863-11d2-8659-00c04fa321a1}",
        {10, 11, 12, 13, 14, 15, 16, 20, 22, 23, 24, 25, 27},
    ),
    "FileIo": (
        "{90cbdc39-4a3e-11d1-84f4-0000f80464e3}",
        {0, 32, 35, 36, 64, 65, 66, 67, 68, 69, 70, 71, 72, 74, 76, 79, 80, 81},
    ),
}
# CORRECTIONS.md §1: pointer-sized properties the classic dump writes as UInt32.
POINTERS = {
    "Process": {"UniqueProcessKey", "DirectoryTableBase"},
    "Image": {"ImageBase", "ImageSize", "DefaultBase"},
    "FileIo": {"IrpPtr", "FileObject", "FileKey", "ExtraInfo"},
    "Registry": {"KeyHandle"},
}


@pytest.mark.parametrize("klass", sorted(CLASSIC))
def test_classic_events_match_the_dump_with_corrections(klass: str) -> None:
    guid, opcodes = CLASSIC[klass]
    p = by_name()[klass]
    assert p.kind == "classic"
    assert {e.key for e in p.events} == opcodes
    rows = tsv_rows("Windows_Kernel_Trace.classic.tsv")
    for ev in p.events:
        dumped = sorted(v for (cat, op, v) in rows if cat == guid and op == ev.opcode and v >= 2)
        assert [v.version for v in ev.versions] == dumped, ev.name
        for vd in ev.versions:
            _, fields = rows[(guid, ev.key, vd.version)]
            assert [f.name for f in vd.fields] == [n for n, _ in fields]
            for f, (name, tsv_type) in zip(vd.fields, fields, strict=True):
                if name in POINTERS.get(klass, set()) or (klass, name, vd.version) == ("FileIo", "TTID", 2):
                    assert f.type == "Pointer" and f.width == "pointer", (ev.name, name)
                elif tsv_type == "UInt32":
                    assert f.width == 4, (ev.name, vd.version, name)
                elif tsv_type == "String":
                    want = "AnsiString" if (klass, name) == ("Process", "ImageFileName") else "UnicodeString"
                    assert f.type == want, (ev.name, name)
                elif tsv_type == "Object":
                    assert (name, f.type) == ("UserSID", "TokenUser")


def test_classic_opcode_names_follow_corrections() -> None:
    provs = by_name()
    names = {(p.name, e.key): e.name for p in provs.values() for e in p.events}
    assert names[("Process", 1)] == "Start" and names[("Process", 3)] == "DCStart"
    assert names[("Process", 39)] == "Defunct" and names[("Image", 10)] == "Load"
    assert names[("FileIo", 79)] == "DeletePath"  # "DletePath" in the dump
    assert names[("Registry", 25)] == "KCBRundownEnd"
    assert names[("SystemConfigEx", 35)] == "VolumeMapping"
    assert names[("SystemConfigEx", 33)] == "SystemPaths"


def test_transaction_id_width_changes_between_fileio_v2_and_v3() -> None:
    create = by_name()["FileIo"].event(64)
    assert create is not None
    ttid = {vd.version: next(f for f in vd.fields if f.name == "TTID") for vd in create.versions}
    assert ttid[2].type == "Pointer" and ttid[3].type == "UInt32"


def test_a_broken_provider_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "Bad.yaml"
    bad.write_text("name: Bad\nguid: not-a-guid\nkind: manifest\nevents: []\n")
    with pytest.raises(ProviderFileError, match=r"Bad\.yaml.*not a GUID"):
        load_provider_file(bad)
    bad.write_text(
        "name: Bad\nguid: 22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716\nkind: manifest\nevents:\n"
        "  - {id: 1, name: X, versions: [{version: 0, fields: [{name: A, type: Quux}]}]}\n"
    )
    with pytest.raises(ProviderFileError, match="unknown field type 'Quux'"):
        load_provider_file(bad)


def test_win32k_audit_events_are_enabled_by_the_audit_keyword_only() -> None:
    p = by_name()["Microsoft-Windows-Win32k"]
    assert p.keywords == {"AuditApiCalls": 0x400}
    assert {e.name: e.keywords for e in p.events} == {
        "RegisterRawInputDevices": ("AuditApiCalls",),
        "SetWindowsHookEx": ("AuditApiCalls",),
        "GetAsyncKeyState": ("AuditApiCalls",),
    }
    rows = tsv_rows("Microsoft-Windows-Win32k.tsv")
    # The dump has many more Win32k events (and 1000, SetWinEventHook, on the same keyword): not decoded.
    assert len({eid for (_, eid, _) in rows}) > 100 and ("Microsoft-Windows-Win32k", 1000, 0) in rows


def test_parsed_provider_files_are_cached_and_a_bad_entry_is_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETWSENSOR_CACHE_DIR", str(tmp_path / "cache"))
    files = sorted(providers_dir().glob("*.yaml"))
    parsed = [load_provider_file(f) for f in files]
    entries = [schema._cache_path(f.read_bytes()) for f in files]
    assert all(e.is_file() for e in entries)
    # The entry is what is read: an edited one shows through (the cache is trusted like the user's home).
    edited = msgspec.msgpack.decode(entries[0].read_bytes()) | {"name": "FromTheCache"}
    entries[0].write_bytes(msgspec.msgpack.encode(edited))
    assert load_provider_file(files[0]).name == "FromTheCache"
    for damage in (
        b"",
        b"\xc1 not msgpack",
        msgspec.msgpack.encode({"name": "x"}),
        msgspec.msgpack.encode([1]),
    ):
        for e in entries:
            e.write_bytes(damage)
        assert [load_provider_file(f) for f in files] == parsed  # parsed again from the YAML
        assert [ProviderDef.model_validate(msgspec.msgpack.decode(e.read_bytes())) for e in entries] == parsed
