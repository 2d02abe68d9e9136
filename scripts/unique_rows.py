# ruff: noqa: E501  (row templates read best on one line each)
"""Benchmark rows whose free-text columns never repeat: the worst case for the rule engine's memos.

    from unique_rows import unique_rows        # scripts/ on sys.path (bench_rules.py, tests load it by path)
    rows = unique_rows(20_000, seed=1)          # [(table, row), ...], deterministic for a seed

Shapes follow what Defender rows of a real Windows host look like, per table (the mix is a sensor's:
45 % image loads, 25 % file events, 20 % registry events, 10 % process creations):

* DeviceProcessEvents: the executables and command lines of a workstation and of attack tooling
  (cmd /c, PowerShell with -File/-Command/-EncodedCommand, rundll32 exports, schtasks, reg, wmic,
  certutil, browser renderers, svchost groups, msiexec, installers with their own names), under
  system folders, Program Files, user profiles and temp folders; parent command lines; account
  names; MD5/SHA1/SHA256; version-info fields.
* DeviceImageLoadEvents: DLLs from System32, WinSxS side-by-side folders, .NET native images,
  application folders and temp folders; the loading process's path and command line; hashes.
* DeviceRegistryEvents: Run keys, services, CLSID InprocServer32, per-user Explorer keys under
  the user's SID, policies; value names and data (paths, command lines, numbers, GUIDs).
* DeviceFileEvents: temp files, downloads, documents, prefetch files, scripts and executables
  dropped in profile folders, Defender scan files; the writing process.

Uniqueness: every value of every string column is new within one call, except the enumerations
(``ActionType``, integrity levels, token elevation, registry value type) and ``FileName``/
``InitiatingProcessFileName``, which are the last segment of a (unique) path and so take the
realistic repeated names. Each value carries a token that differs from row to row (hex, numbers,
GUIDs, words with digits); the generator checks it and draws again on a collision. Different seeds
give different values, so a benchmark pass on a new seed meets only values it has not seen.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

_PROCESS, _IMAGE, _FILE, _REGISTRY = (
    "DeviceProcessEvents",
    "DeviceImageLoadEvents",
    "DeviceFileEvents",
    "DeviceRegistryEvents",
)
MIX = ((_IMAGE, 0.45), (_FILE, 0.25), (_REGISTRY, 0.20), (_PROCESS, 0.10))
_ENUMS = frozenset(
    {"ActionType", "ProcessIntegrityLevel", "InitiatingProcessIntegrityLevel", "ProcessTokenElevation",
     "RegistryValueType", "FileName", "InitiatingProcessFileName", "InitiatingProcessParentFileName"}
)  # fmt: skip

_SYSTEM_EXES = ("svchost.exe", "conhost.exe", "dllhost.exe", "rundll32.exe", "cmd.exe", "powershell.exe",
                "wmiprvse.exe", "taskhostw.exe", "msiexec.exe", "reg.exe", "schtasks.exe", "wmic.exe",
                "certutil.exe", "net.exe", "whoami.exe", "mshta.exe", "regsvr32.exe", "sc.exe",
                "bitsadmin.exe", "tasklist.exe", "findstr.exe", "ping.exe", "nslookup.exe", "wevtutil.exe")  # fmt: skip
_APP_EXES = ("chrome.exe", "msedge.exe", "Teams.exe", "Code.exe", "OUTLOOK.EXE", "WINWORD.EXE", "EXCEL.EXE",
             "python.exe", "git.exe", "node.exe", "java.exe", "Zoom.exe", "slack.exe", "firefox.exe")  # fmt: skip
_WORDS = ("update", "setup", "helper", "agent", "sync", "report", "invoice", "backup", "driver", "service",
          "client", "launcher", "install", "patch", "runtime", "tool", "viewer", "monitor", "cache", "build")  # fmt: skip
_VENDORS = ("Contoso", "Fabrikam", "Northwind", "Adatum", "Litware", "Tailspin", "Wingtip", "Proseware",
            "Woodgrove", "Lucerne")  # fmt: skip
_DLLS = ("ntdll.dll", "kernel32.dll", "KernelBase.dll", "user32.dll", "gdi32.dll", "combase.dll", "ole32.dll",
         "advapi32.dll", "rpcrt4.dll", "ws2_32.dll", "crypt32.dll", "bcrypt.dll", "msvcrt.dll", "shell32.dll",
         "amsi.dll", "clr.dll", "wininet.dll", "dbghelp.dll", "comctl32.dll", "version.dll", "winhttp.dll",
         "samlib.dll", "vaultcli.dll", "dnsapi.dll", "mscoree.dll", "System.Management.Automation.ni.dll")  # fmt: skip
_EXTS = (".tmp", ".txt", ".docx", ".xlsx", ".pdf", ".zip", ".ps1", ".bat", ".vbs", ".js", ".exe", ".dll",
         ".lnk", ".log", ".dat", ".json", ".hta", ".iso")  # fmt: skip
_SERVICES = ("Schedule", "BITS", "wuauserv", "Dnscache", "LanmanServer", "WinDefend", "Spooler", "EventLog")


class _Gen:
    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.seen: dict[str, set[str]] = {}
        self.n = 0

    def hex(self, k: int) -> str:
        return f"{self.rnd.getrandbits(4 * k):0{k}x}"

    def tok(self) -> str:
        """A short token no other value of this call has: a word or letters with a row-unique part."""
        self.n += 1
        r = self.rnd.random()
        if r < 0.4:
            return f"{self.rnd.choice(_WORDS)}{self.n:x}{self.hex(2)}"
        if r < 0.7:
            return f"{self.hex(4)}{self.n:x}"
        return f"{self.rnd.choice(_VENDORS)}.{self.rnd.choice(_WORDS).title()}{self.n}"

    def guid(self) -> str:
        return f"{{{self.hex(8)}-{self.hex(4)}-{self.hex(4)}-{self.hex(4)}-{self.hex(12)}}}".upper()

    def user(self) -> str:
        return f"{self.rnd.choice(('j', 'a', 'm', 's', 'k'))}{self.rnd.choice(_WORDS)}{self.n:x}{self.hex(2)}"

    def sid(self) -> str:
        r = self.rnd.randint
        return f"S-1-5-21-{r(10**8, 4 * 10**9)}-{r(10**8, 4 * 10**9)}-{r(10**8, 4 * 10**9)}-{r(1000, 99999)}"

    def folder(self, user: str) -> str:
        c = self.rnd.random()
        t = self.tok()
        if c < 0.25:
            return rf"C:\Users\{user}\AppData\Local\Temp\{t}"
        if c < 0.45:
            return rf"C:\Program Files\{self.rnd.choice(_VENDORS)}\{t}"
        if c < 0.6:
            return rf"C:\Users\{user}\AppData\Roaming\{self.rnd.choice(_VENDORS)}\{t}"
        if c < 0.7:
            return rf"C:\ProgramData\{t}"
        if c < 0.8:
            return rf"C:\Users\{user}\Downloads\{t}"
        if c < 0.9:
            return rf"C:\Windows\Temp\{t}"
        return rf"\\fs{self.rnd.randint(1, 99)}.corp.local\share\{t}"

    def exe(self, user: str) -> tuple[str, str]:
        """(path, file name) of an executable: a system tool in a unique copy of System32's shape, an
        application in its own folder, or a tool with its own name."""
        c = self.rnd.random()
        if c < 0.45:  # a system tool: on a volume not mapped to a drive letter, or a copy elsewhere
            name = self.rnd.choice(_SYSTEM_EXES)
            if self.rnd.random() < 0.4:
                sub = self.rnd.choice(("System32", "SysWOW64", "System32\\WindowsPowerShell\\v1.0"))
                return rf"\Device\HarddiskVolume{self.n}\Windows\{sub}\{name}", name
            return rf"{self.folder(user)}\{name}", name
        if c < 0.75:
            name = self.rnd.choice(_APP_EXES)
            return rf"{self.folder(user)}\{name}", name
        name = f"{self.rnd.choice(_WORDS)}_{self.tok()}.exe"
        return rf"{self.folder(user)}\{name}", name

    def command_line(self, path: str, name: str, user: str) -> str:
        t, r = self.tok(), self.rnd
        low = name.lower()
        tmp = rf"C:\Users\{user}\AppData\Local\Temp\{self.tok()}"
        if low == "cmd.exe":
            return r.choice(
                (
                    f'cmd.exe /c echo {t} > "{tmp}.txt"',
                    rf"cmd /c copy \\srv{r.randint(1, 99)}\share\{t}.dat C:\ProgramData\{self.tok()}\ ",
                    f'"{path}" /c whoami /all >> {tmp}.log',
                    f"cmd.exe /c ping -n {r.randint(1, 9)} 10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)} & del {tmp}.bat",
                    f'C:\\Windows\\system32\\cmd.exe /d /c "{tmp}\\{t}.bat"',
                )
            )
        if low == "powershell.exe":
            enc = "".join(
                r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
                for _ in range(r.randint(40, 160))
            )
            return r.choice(
                (
                    f'powershell.exe -NoProfile -ExecutionPolicy Bypass -File "{tmp}\\{t}.ps1"',
                    f'powershell -c "Get-ChildItem -Path C:\\Users\\{user}\\Documents\\{t} -Recurse | Out-File {tmp}.txt"',
                    f"powershell.exe -NoP -NonI -W Hidden -EncodedCommand {enc}",
                    f'"{path}" -Command "Invoke-WebRequest -Uri https://{t}.example.net/{self.tok()} -OutFile {tmp}.zip"',
                    f'powershell -ep bypass -c "Set-ItemProperty -Path HKCU:\\Software\\{t} -Name {self.tok()} -Value 1"',
                )
            )
        if low == "rundll32.exe":
            return f"rundll32.exe {tmp}\\{t}.dll,{r.choice(('DllRegisterServer', 'Start', 'Run', 'EntryPoint'))}{self.n}"
        if low == "schtasks.exe":
            return f'schtasks /create /tn "{t}" /tr "C:\\ProgramData\\{self.tok()}.exe" /sc daily /st {r.randint(0, 23):02}:{r.randint(0, 59):02}'
        if low == "reg.exe":
            return rf"reg query HKLM\Software\{r.choice(_VENDORS)}\{t} /v {self.tok()}"
        if low == "wmic.exe":
            return f'wmic /node:"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}" process call create "{tmp}\\{t}.exe"'
        if low == "certutil.exe":
            return f"certutil -urlcache -split -f http://{t}.example.org/{self.tok()}.txt {tmp}.txt"
        if low == "svchost.exe":
            return f"C:\\Windows\\system32\\svchost.exe -k {t} -p -s {r.choice(_SERVICES)}{self.n}"
        if low == "msiexec.exe":
            return f'msiexec.exe /i "C:\\Users\\{user}\\Downloads\\{t}.msi" /qn'
        if low in ("chrome.exe", "msedge.exe"):
            return (
                f'"{path}" --type=renderer --lang=en-US --field-trial-handle={r.randint(1000, 9999)},'
                f"{self.hex(16)} --renderer-client-id={self.n} /prefetch:{r.randint(1, 9)}"
            )
        if low in ("python.exe", "node.exe", "java.exe", "git.exe"):
            return f'"{path}" {r.choice(("-m", "run", "-jar", "fetch"))} {self.folder(user)}\\{t}'
        if low in (
            "net.exe",
            "whoami.exe",
            "tasklist.exe",
            "findstr.exe",
            "nslookup.exe",
            "ping.exe",
            "sc.exe",
        ):
            return f"{name[:-4]} {r.choice(('user', 'group', 'view', '/v', 'query', '-n 2'))} {t}"
        return f'"{path}" {r.choice(("--update", "/S", "-silent", "--config", "/install"))} {t}'

    def hashes(self) -> dict[str, str]:
        return {"MD5": self.hex(32), "SHA1": self.hex(40), "SHA256": self.hex(64)}

    def version_info(self, prefix: str, name: str) -> dict[str, str]:
        vendor = f"{self.rnd.choice(_VENDORS)} {self.tok()}"
        return {
            f"{prefix}VersionInfoCompanyName": f"{vendor} Corporation",
            f"{prefix}VersionInfoProductName": f"{vendor} {self.rnd.choice(_WORDS).title()}",
            f"{prefix}VersionInfoProductVersion": f"{self.rnd.randint(1, 20)}.{self.rnd.randint(0, 9)}.{self.n}.{self.rnd.randint(0, 9999)}",
            f"{prefix}VersionInfoOriginalFileName": f"{name.rsplit('.', 1)[0]}.{self.tok()}.exe",
            f"{prefix}VersionInfoFileDescription": f"{self.rnd.choice(_WORDS).title()} {self.tok()}",
            f"{prefix}VersionInfoInternalFileName": f"{self.tok()}",
        }

    def initiating(self) -> dict[str, Any]:
        user = self.user()
        path, name = self.exe(user)
        return {
            "InitiatingProcessAccountName": user,
            "InitiatingProcessAccountDomain": f"CORP{self.n:x}",
            "InitiatingProcessAccountSid": self.sid(),
            "InitiatingProcessFileName": name,
            "InitiatingProcessFolderPath": path,
            "InitiatingProcessCommandLine": self.command_line(path, name, user),
            "InitiatingProcessId": self.rnd.randint(4, 60000),
            "InitiatingProcessParentFileName": self.rnd.choice(_SYSTEM_EXES + _APP_EXES),
            "InitiatingProcessIntegrityLevel": self.rnd.choice(("Medium", "High", "System")),
            "InitiatingProcessMD5": self.hex(32),
            "InitiatingProcessSHA1": self.hex(40),
            "InitiatingProcessSHA256": self.hex(64),
            **self.version_info("InitiatingProcess", name),
        }

    def process(self) -> dict[str, Any]:
        user = self.user()
        path, name = self.exe(user)
        return {
            "ActionType": "ProcessCreated",
            "FileName": name,
            "FolderPath": path,
            "ProcessCommandLine": self.command_line(path, name, user),
            "AccountName": user,
            "AccountDomain": f"DOM{self.n:x}",
            "AccountSid": self.sid(),
            "ProcessIntegrityLevel": self.rnd.choice(("Medium", "High", "System")),
            "ProcessTokenElevation": self.rnd.choice(("TokenElevationTypeDefault", "TokenElevationTypeFull")),
            "ProcessId": self.rnd.randint(4, 60000),
            "LogonId": self.rnd.randint(1000, 10**7),
            **self.hashes(),
            **self.version_info("Process", name),
        }

    def image(self, user: str) -> dict[str, Any]:
        r = self.rnd
        dll = r.choice(_DLLS)
        c = r.random()
        if c < 0.35:
            path = rf"C:\Windows\WinSxS\amd64_microsoft.windows.{self.tok()}_6595b64144ccf1df_10.0.{r.randint(10000, 26000)}.{self.n}_none_{self.hex(16)}\{dll}"
        elif c < 0.55:
            path = rf"C:\Windows\assembly\NativeImages_v4.0.30319_64\{self.tok()}\{self.hex(32)}\{dll}"
        elif c < 0.8:
            path = rf"{self.folder(user)}\{dll}"
        else:
            dll = f"{r.choice(_WORDS)}{self.tok()}.dll"
            path = rf"{self.folder(user)}\{dll}"
        return {"ActionType": "ImageLoaded", "FileName": dll, "FolderPath": path, **self.hashes()}

    def file(self, user: str) -> dict[str, Any]:
        r = self.rnd
        c = r.random()
        if c < 0.15:
            name = f"{r.choice(_SYSTEM_EXES + _APP_EXES).upper()}-{self.hex(8).upper()}.pf"
            folder = rf"C:\Windows\Prefetch\{self.tok()}"
        elif c < 0.25:
            name = f"{self.guid()}.bin"
            folder = rf"C:\ProgramData\Microsoft\Windows Defender\Scans\{self.tok()}"
        else:
            name = f"{r.choice(_WORDS)}_{self.tok()}{r.choice(_EXTS)}"
            folder = self.folder(user)
        return {
            "ActionType": r.choice(("FileCreated", "FileModified", "FileDeleted", "FileRenamed")),
            "FileName": name,
            "FolderPath": rf"{folder}\{name}",
            "RequestAccountName": f"{user}{self.hex(2)}",
            "RequestAccountDomain": f"CORP{self.n:x}",
            "RequestProcessAccountSid": self.sid(),
            **self.hashes(),
        }

    def registry(self, user: str) -> dict[str, Any]:
        r, t = self.rnd, self.tok()
        c = r.random()
        hive = rf"HKEY_CURRENT_USER\{self.sid()}"
        if c < 0.2:
            key = rf"{hive}\Software\Microsoft\Windows\CurrentVersion\Run\{t}"
        elif c < 0.4:
            key = rf"HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services\{t}\Parameters"
        elif c < 0.55:
            key = rf"HKEY_LOCAL_MACHINE\SOFTWARE\Classes\CLSID\{self.guid()}\InprocServer32"
        elif c < 0.75:
            key = rf"{hive}\Software\Microsoft\Windows\CurrentVersion\Explorer\{t}"
        elif c < 0.85:
            key = rf"HKEY_LOCAL_MACHINE\SOFTWARE\Policies\Microsoft\Windows\{t}"
        else:
            key = rf"{hive}\Software\{r.choice(_VENDORS)}\{t}\Settings"
        d = r.random()
        if d < 0.4:
            data = rf'"{self.folder(user)}\{self.tok()}.exe" /background'
        elif d < 0.7:
            data = f"{r.randint(0, 2**31)}{self.n:06}"
        elif d < 0.85:
            data = self.guid()
        else:
            data = rf"%SystemRoot%\System32\{self.tok()}.dll"
        return {
            "ActionType": r.choice(("RegistryValueSet", "RegistryKeyCreated", "RegistryValueDeleted")),
            "RegistryKey": key,
            "RegistryValueName": self.tok(),
            "RegistryValueData": data,
            "RegistryValueType": r.choice(("String", "Dword", "ExpandString")),
            "PreviousRegistryValueData": f"{self.tok()}",
        }


def _unique(table: str, row: dict[str, Any], seen: dict[str, set[str]]) -> bool:
    """Whether every string value outside the enumerations is new (then it is recorded)."""
    fresh = [(c, v) for c, v in row.items() if type(v) is str and c not in _ENUMS]
    if any(v in seen.get(c, ()) for c, v in fresh):
        return False
    for c, v in fresh:
        seen.setdefault(c, set()).add(v)
    return True


def unique_rows(
    n: int, seed: int = 1, mix: tuple[tuple[str, float], ...] = MIX
) -> list[tuple[str, dict[str, Any]]]:
    """``n`` rows of the four tables in ``mix`` proportions; no string value repeats (see module doc)."""
    g = _Gen(seed)
    t0 = datetime(2026, 4, 16, tzinfo=UTC) + timedelta(days=seed)
    rows: list[tuple[str, dict[str, Any]]] = []
    tables, weights = zip(*mix, strict=True)
    while len(rows) < n:
        table = g.rnd.choices(tables, weights)[0]
        user = g.user()
        own = (g.process() if table == _PROCESS else g.image(user) if table == _IMAGE
               else g.file(user) if table == _FILE else g.registry(user))  # fmt: skip
        i = len(rows)
        row = {
            "Timestamp": t0 + timedelta(milliseconds=i),
            "DeviceName": f"ws{g.n:x}.corp.local",
            "DeviceId": g.hex(40),
            "ReportId": i,
            **g.initiating(),
            **own,
        }
        if _unique(table, row, g.seen):
            rows.append((table, row))
    return rows
