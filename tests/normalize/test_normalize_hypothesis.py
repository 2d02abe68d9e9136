"""Arbitrary orders of constructed events (out of order, missing starts, duplicated ends, missing
fields): the normalizer never crashes, and every row it writes fits its table."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from normalize_builders import T0, classic_start, ev, image_load, manifest_start

from etwsensor.events import DecodeStatus, RawEvent
from etwsensor.normalize import Normalizer, full_row, validate_row

VOL = "\\Device\\HarddiskVolume3"
PIDS = st.sampled_from([4, 700, 2000, 4242, 4243])
HANDLES = st.sampled_from([0, 0x10, 0x20, 0x30])
PATHS = st.sampled_from(
    [
        "",
        VOL + "\\Users\\a\\keylog.txt",
        "\\Device\\HarddiskVolume9\\x.dll",
        "\\Device\\Mup\\;LanmanRedirector\\;Z:00000000000abcde\\srv\\share\\f",
        "\\SystemRoot\\System32\\drivers\\kbdhook.sys",
        "\\??\\C:\\Temp\\a.exe",
        "relative\\name",
    ]
)
KEYS = st.sampled_from(
    ["", "\\REGISTRY\\MACHINE\\SOFTWARE\\A", "\\REGISTRY\\USER\\S-1-5-21-1\\Software", "Sub\\Key"]
)
KF, KR = "Microsoft-Windows-Kernel-File", "Microsoft-Windows-Kernel-Registry"


@st.composite
def events(draw: st.DrawFn) -> RawEvent:
    pid, other = draw(PIDS), draw(PIDS)
    ms = draw(st.floats(min_value=0, max_value=2000, allow_nan=False))
    h, h2, path, key = draw(HANDLES), draw(HANDLES), draw(PATHS), draw(KEYS)
    options = draw(st.integers(min_value=0, max_value=5)) << 24 | draw(st.sampled_from([0, 1, 0x1000]))
    kind = draw(st.integers(min_value=0, max_value=21))
    made: RawEvent = [
        lambda: classic_start(pid, other, "a.exe", "C:\\a.exe -x", ms=ms, key=h or None),
        lambda: classic_start(pid, other, "b.exe", "", ms=ms, name="DCStart"),
        lambda: manifest_start(pid, other, path, ms=ms),
        lambda: manifest_start(pid, other, path, ms=ms, name="ProcessRundown"),
        lambda: ev("Process", "End", ms, pid=pid, ProcessId=pid, UniqueProcessKey=h),
        lambda: ev(
            "Microsoft-Windows-Kernel-Process", "ProcessStop", ms, pid=pid, ProcessID=pid, CreateTime=T0
        ),
        lambda: image_load(pid, path, h, ms=ms),
        lambda: image_load(pid, path, h, ms=ms, name="DCStart"),
        lambda: image_load(pid, path, h, ms=ms, name="UnLoad"),
        lambda: ev(
            KF,
            draw(st.sampled_from(["Create", "CreateNewFile"])),
            ms,
            pid=pid,
            Irp=h2,
            FileObject=h,
            CreateOptions=options,
            FileName=path,
        ),
        lambda: ev(
            KF,
            draw(st.sampled_from(["Close", "Cleanup", "Write", "SetDelete"])),
            ms,
            pid=pid,
            Irp=h2,
            FileObject=h,
            FileKey=h2,
        ),
        lambda: ev(
            KF,
            draw(st.sampled_from(["DeletePath", "RenamePath"])),
            ms,
            pid=pid,
            Irp=h2,
            FileObject=h,
            FileKey=h2,
            FilePath=path,
        ),
        lambda: ev(KF, "OperationEnd", ms, pid=pid, Irp=h2, Status=draw(st.sampled_from([0, 0xC0000022]))),
        lambda: ev(
            KF, draw(st.sampled_from(["NameCreate", "NameDelete"])), ms, pid=pid, FileKey=h, FileName=path
        ),
        lambda: ev(
            "FileIo",
            draw(st.sampled_from(["Name", "FileRundown", "FileDelete"])),
            ms,
            pid=pid,
            FileObject=h,
            FileName=path,
        ),
        lambda: ev(
            "FileIo", "Create", ms, pid=pid, IrpPtr=h2, FileObject=h, CreateOptions=options, OpenPath=path
        ),
        lambda: ev(
            "FileIo",
            draw(st.sampled_from(["Write", "Delete", "Close", "Cleanup"])),
            ms,
            pid=pid,
            IrpPtr=h2,
            FileObject=h,
            FileKey=h2,
        ),
        lambda: ev(
            KR,
            draw(st.sampled_from(["CreateKey", "OpenKey"])),
            ms,
            pid=pid,
            BaseObject=h2,
            KeyObject=h,
            Status=0,
            Disposition=draw(st.sampled_from([1, 2])),
            BaseName=key,
            RelativeName=key,
        ),
        lambda: ev(
            KR,
            "SetValueKey",
            ms,
            pid=pid,
            KeyObject=h,
            Status=0,
            Type=draw(st.integers(0, 12)),
            KeyName=key,
            ValueName="v",
            CapturedData=draw(st.binary(max_size=12)),
        ),
        lambda: ev(
            KR,
            draw(st.sampled_from(["DeleteKey", "DeleteValueKey", "CloseKey"])),
            ms,
            pid=pid,
            KeyObject=h,
            Status=0,
            KeyName=key,
            ValueName="v",
        ),
        lambda: ev(
            "Registry",
            draw(st.sampled_from(["KCBCreate", "KCBDelete", "Create", "SetValue", "Delete"])),
            ms,
            pid=pid,
            Status=0,
            KeyHandle=h,
            KeyName=key,
        ),
        lambda: ev(
            "SystemConfigEx", "VolumeMapping", ms, pid=0, NtPath="\\Device\\HarddiskVolume9\\", DosPath="Z:\\"
        ),
    ][kind]()
    # Some events lose fields (truncated by a broken decoder) or arrive undecoded.
    for name in draw(st.lists(st.sampled_from(sorted(made.fields) or ["x"]), max_size=2)):
        made.fields.pop(name, None)
    if draw(st.integers(0, 30)) == 0:
        made.status = DecodeStatus.ERROR
    return made


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(), max_size=60), st.booleans())
def test_arbitrary_event_orders_never_crash_and_rows_fit_their_tables_constructed(
    stream: list[RawEvent], duplicate: bool
) -> None:
    if duplicate:  # duplicated ends and starts, replayed out of order
        stream = stream + list(reversed(stream))
    normalizer = Normalizer()
    rows: list[tuple[str, dict[str, Any]]] = []
    for event in stream:
        rows.extend(normalizer.process(event))
    rows.extend(normalizer.flush())
    for table, row in rows:
        validate_row(table, full_row(table, row))
    report_ids = [row["ReportId"] for _, row in rows]
    assert report_ids == sorted(set(report_ids))
    stats = normalizer.stats()
    assert sum(sum(actions.values()) for actions in stats["rows"].values()) == len(rows)
    assert stats["events"] == len(stream)
    assert stats["bad_events"] == 0, normalizer.error_samples


def test_wrongly_typed_fields_are_counted_not_raised_constructed() -> None:
    normalizer = Normalizer()
    bad = ev(KF, "Create", 1, FileObject=None, CreateOptions="x", FileName=7, Irp=[])
    assert normalizer.process(bad) == ()
    assert normalizer.stats()["bad_events"] == 1
    assert "Microsoft-Windows-Kernel-File/Create" in normalizer.error_samples[0]
    # and the stream goes on
    out = normalizer.process(manifest_start(4242, 2000, VOL + "\\a.exe", ms=2000 + 1))
    out = [*out, *normalizer.flush()]
    assert [t for t, _ in out] == ["DeviceProcessEvents"]
    assert timedelta(0) <= out[0][1]["Timestamp"] - T0
