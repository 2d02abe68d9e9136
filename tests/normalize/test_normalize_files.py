"""DeviceFileEvents from constructed Kernel-File and classic FileIo events."""

from __future__ import annotations

from normalize_builders import classic_start, ev, of, run

KF = "Microsoft-Windows-Kernel-File"
VOL = "\\Device\\HarddiskVolume3"
PROFILE = VOL + "\\Users\\alice\\AppData\\Roaming\\"
CREATE, OPEN, OPEN_IF, OVERWRITE_IF = 2, 1, 3, 5


def k_create(
    fo: int, path: str, disposition: int, ms: float = 1, irp: int = 0, extra: int = 0, name: str = "Create"
):
    return ev(
        KF,
        name,
        ms,
        pid=3000,
        version=1,
        Irp=irp or fo + 1,
        FileObject=fo,
        IssuingThreadId=1,
        CreateOptions=(disposition << 24) | extra,
        CreateAttributes=0,
        ShareAccess=7,
        FileName=path,
    )


def k(name: str, ms: float = 2, **fields: object):
    return ev(KF, name, ms, pid=3000, version=1, **fields)


def proc():
    return classic_start(3000, 4, "powershell.exe", "powershell.exe -c keylogger", ms=0)


def test_create_disposition_decides_file_created_constructed() -> None:
    rows, _ = run(
        [
            proc(),
            k_create(0x100, PROFILE + "keylog.txt", CREATE),
            k_create(0x101, PROFILE + "opened.txt", OPEN),
            k_create(0x102, PROFILE + "openif.txt", OPEN_IF),
            k_create(0x103, PROFILE + "over.txt", OVERWRITE_IF),
            k_create(0x104, PROFILE + "dir", CREATE, extra=0x1),
        ]
    )
    created = of(rows, "DeviceFileEvents", "FileCreated")
    assert [r["FolderPath"] for r in created] == [
        "C:\\Users\\alice\\AppData\\Roaming\\keylog.txt",
        "C:\\Users\\alice\\AppData\\Roaming\\over.txt",
    ]
    assert created[0]["FileName"] == "keylog.txt"
    assert created[0]["InitiatingProcessCommandLine"] == "powershell.exe -c keylogger"


def test_create_new_file_counts_open_if_once_constructed() -> None:
    rows, _ = run(
        [
            k_create(0x200, PROFILE + "key.log", OPEN_IF, irp=0x900),
            k_create(0x200, PROFILE + "key.log", OPEN_IF, irp=0x900, name="CreateNewFile"),
            k_create(0x201, PROFILE + "a.txt", CREATE, irp=0x901),
            k_create(0x201, PROFILE + "a.txt", CREATE, irp=0x901, name="CreateNewFile"),
        ]
    )
    assert [r["FileName"] for r in of(rows, "DeviceFileEvents", "FileCreated")] == ["key.log", "a.txt"]


def test_operation_end_failure_drops_the_create_constructed() -> None:
    rows, _ = run(
        [
            k("OperationEnd", 0, Irp=0x1, ExtraInformation=0, Status=0),  # OP_END is in the trace
            k_create(0x300, PROFILE + "ok.txt", CREATE, irp=0x10, ms=1),
            k_create(0x301, PROFILE + "denied.txt", CREATE, irp=0x11, ms=1),
            k("OperationEnd", 2, Irp=0x11, ExtraInformation=0, Status=0xC0000022),
            k("OperationEnd", 3, Irp=0x10, ExtraInformation=0, Status=0),
            k_create(0x302, PROFILE + "no-end-seen.txt", CREATE, irp=0x12, ms=4),
        ]
    )
    # the create whose OperationEnd never came is reported at flush rather than lost
    assert [r["FileName"] for r in of(rows, "DeviceFileEvents", "FileCreated")] == [
        "ok.txt",
        "no-end-seen.txt",
    ]


def test_first_write_is_file_modified_constructed() -> None:
    rows, _ = run(
        [
            k_create(0x400, PROFILE + "notes.txt", OPEN),
            *[
                k(
                    "Write",
                    2 + i,
                    ByteOffset=0,
                    Irp=i,
                    FileObject=0x400,
                    FileKey=0xF400,
                    IssuingThreadId=1,
                    IOSize=10,
                    IOFlags=0,
                    ExtraFlags=0,
                )
                for i in range(3)
            ],
            k("NameCreate", 5, FileKey=0xF500, FileName=PROFILE + "opened-before.txt"),
            k(
                "Write",
                6,
                ByteOffset=0,
                Irp=9,
                FileObject=0x500,
                FileKey=0xF500,
                IssuingThreadId=1,
                IOSize=1,
                IOFlags=0,
                ExtraFlags=0,
            ),
        ]
    )
    modified = of(rows, "DeviceFileEvents", "FileModified")
    assert [r["FileName"] for r in modified] == ["notes.txt", "opened-before.txt"]


def test_deletes_one_row_per_irp_and_delete_on_close_constructed() -> None:
    rows, _ = run(
        [
            k_create(0x600, PROFILE + "a.tmp", OPEN),
            k(
                "SetDelete",
                2,
                Irp=0x77,
                FileObject=0x600,
                FileKey=0,
                ExtraInformation=0,
                IssuingThreadId=1,
                InfoClass=13,
            ),
            k(
                "DeletePath",
                2,
                Irp=0x77,
                FileObject=0x600,
                FileKey=0,
                ExtraInformation=0,
                IssuingThreadId=1,
                InfoClass=13,
                FilePath=PROFILE + "a.tmp",
            ),
            k_create(0x601, PROFILE + "b.tmp", OPEN, extra=0x1000, ms=3),
            k("Cleanup", 4, Irp=0x78, FileObject=0x601, FileKey=0, IssuingThreadId=1),
            k("Close", 5, Irp=0x79, FileObject=0x601, FileKey=0, IssuingThreadId=1),
        ]
    )
    assert [r["FileName"] for r in of(rows, "DeviceFileEvents", "FileDeleted")] == ["a.tmp", "b.tmp"]


def test_rename_takes_previous_path_from_cache_constructed() -> None:
    rows, _ = run(
        [
            k_create(0x700, PROFILE + "draft.txt", OPEN),
            k(
                "RenamePath",
                2,
                Irp=0x80,
                FileObject=0x700,
                FileKey=0,
                ExtraInformation=0,
                IssuingThreadId=1,
                InfoClass=10,
                FilePath=PROFILE + "keystrokes.txt",
            ),
        ]
    )
    row = of(rows, "DeviceFileEvents", "FileRenamed")[0]
    assert row["FolderPath"] == "C:\\Users\\alice\\AppData\\Roaming\\keystrokes.txt"
    assert row["PreviousFileName"] == "draft.txt"
    assert row["PreviousFolderPath"] == "C:\\Users\\alice\\AppData\\Roaming\\draft.txt"


def test_close_evicts_the_file_object_constructed() -> None:
    _, norm = run(
        [
            k_create(0x800, PROFILE + "x", OPEN),
            k("Close", 2, Irp=1, FileObject=0x800, FileKey=0, IssuingThreadId=1),
        ]
    )
    assert len(norm.files.objects) == 0


def c(name: str, ms: float = 1, **fields: object):
    return ev("FileIo", name, ms, pid=3000, version=3, **fields)


def test_classic_fileio_makes_rows_without_kernel_file_constructed() -> None:
    rows, _ = run(
        [
            c("FileRundown", 0, FileObject=0xF1, FileName=PROFILE + "old.txt"),
            c(
                "Create",
                1,
                IrpPtr=1,
                FileObject=0x900,
                TTID=1,
                CreateOptions=CREATE << 24,
                FileAttributes=0,
                ShareAccess=0,
                OpenPath=PROFILE + "keylog.txt",
            ),
            c("Write", 2, Offset=0, IrpPtr=2, FileObject=0x901, FileKey=0xF1, TTID=1, IoSize=1, IoFlags=0),
            c("Delete", 3, IrpPtr=3, FileObject=0x902, FileKey=0xF1, ExtraInfo=0, TTID=1, InfoClass=13),
        ]
    )
    assert [(r["ActionType"], r["FileName"]) for r in of(rows, "DeviceFileEvents")] == [
        ("FileCreated", "keylog.txt"),
        ("FileModified", "old.txt"),
        ("FileDeleted", "old.txt"),
    ]


def test_with_kernel_file_classic_fileio_only_names_constructed() -> None:
    rows, _ = run(
        [
            k("NameCreate", 0, FileKey=0xAA, FileName=PROFILE + "n.txt"),
            c(
                "Create",
                1,
                IrpPtr=1,
                FileObject=0x900,
                TTID=1,
                CreateOptions=CREATE << 24,
                FileAttributes=0,
                ShareAccess=0,
                OpenPath=PROFILE + "classic.txt",
            ),
        ]
    )
    assert of(rows, "DeviceFileEvents") == []
