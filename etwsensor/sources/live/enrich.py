"""Host facts the live trace records in its header: device map, SID → account, host name, OS build.

Behind a small ``HostApi`` interface: ``WindowsHostApi`` calls kernel32/advapi32 (Windows only, loaded
lazily); tests pass a fake. The header makes the recording replay to identical rows elsewhere.
"""

from __future__ import annotations

import ctypes
import platform
import socket
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from etwsensor.events import RawEvent
from etwsensor.sources.header import HostInfo, RecordingHeader
from etwsensor.sources.live.hostfacts import TokenInfo

SYSTEM_CONFIG_EX = "9b79ee91-b5fd-41c0-a243-4248e266e9d0"  # VolumeMapping records (CORRECTIONS §3)
PROFILE_LIST = r"SOFTWARE\Microsoft\Windows NT\CurrentVersion\ProfileList"
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000  # enough for the token of any non-protected process
TOKEN_QUERY = 0x0008
TOKEN_ELEVATION_TYPE_CLASS = 18  # TOKEN_INFORMATION_CLASS TokenElevationType
TOKEN_INTEGRITY_LEVEL_CLASS = 25  # TokenIntegrityLevel: a TOKEN_MANDATORY_LABEL
FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)


class HostApi(Protocol):
    def logical_drives(self) -> list[str]:
        """Drive names such as "C:"."""

    def query_dos_device(self, drive: str) -> str | None:
        """The NT device behind a drive ("\\Device\\HarddiskVolume3"), None if it has none."""

    def lookup_account_sid(self, sid: str) -> str | None:
        """ "DOMAIN\\name" for a SID string, None when it does not resolve."""

    def profile_sids(self) -> list[str]:
        """SIDs with a user profile on this host (the accounts likely to run processes)."""

    def process_token(self, pid: int) -> TokenInfo | None:
        """Integrity RID, elevation type and creation time of a running process; None when it is gone
        (or cannot be opened)."""

    def host_name(self) -> str: ...

    def os_build(self) -> str: ...

    def os_pointer_size(self) -> int:
        """The OS's pointer size (8 on 64-bit Windows, even under a 32-bit Python): the kernel's records'."""


def device_map(api: HostApi) -> dict[str, str]:
    """NT device → drive letter for every logical drive (network drives have no local device: skipped)."""
    out: dict[str, str] = {}
    for drive in api.logical_drives():
        device = api.query_dos_device(drive)
        if device and device.startswith("\\Device\\"):
            out[device] = drive
    return out


class SidResolver:
    """SID → "DOMAIN\\name" through LookupAccountSid, cached (misses too: a lookup may ask a DC)."""

    def __init__(self, api: HostApi, limit: int = 4096) -> None:
        self._api = api
        self._limit = limit
        self.cache: dict[str, str | None] = {}

    def resolve(self, sid: str) -> str | None:
        if sid in self.cache:
            return self.cache[sid]
        account = self._api.lookup_account_sid(sid)
        if len(self.cache) < self._limit:
            self.cache[sid] = account
        return account

    def known(self) -> dict[str, str]:
        return {sid: account for sid, account in self.cache.items() if account}


def live_header(api: HostApi, pointer_size: int, sids: Iterable[str] = ()) -> RecordingHeader:
    """The header of a live trace: host, OS build, pointer size, device map, SID map, start time."""
    resolver = SidResolver(api)
    for sid in [*api.profile_sids(), *sids]:
        resolver.resolve(sid)
    from etwsensor.enrich.device import device_id_from_machine_guid, device_id_from_name

    name = api.host_name()
    machine_guid = getattr(api, "machine_guid", lambda: None)()  # optional in a HostApi
    device_id = device_id_from_machine_guid(machine_guid) if machine_guid else device_id_from_name(name)
    return RecordingHeader(
        host=HostInfo(name=name, device_id=device_id, os_build=api.os_build()),
        pointer_size=8 if pointer_size == 8 else 4,
        device_map=device_map(api),
        sids=resolver.known(),
        start=datetime.now(UTC),
    )


class DeviceMapWatch:
    """Notices volumes that arrive while tracing; each new mapping becomes a SystemConfigEx VolumeMapping
    event in the stream, so the normalizer learns it and the recording carries it for replay."""

    def __init__(self, api: HostApi, known: dict[str, str]) -> None:
        self._api = api
        self.known = dict(known)

    def changes(self) -> list[RawEvent]:
        now = datetime.now(UTC)
        out: list[RawEvent] = []
        for device, drive in device_map(self._api).items():
            if self.known.get(device) != drive:
                self.known[device] = drive
                fields = {"NtPath": device + "\\", "DosPath": drive + "\\"}
                out.append(
                    RawEvent(
                        guid=SYSTEM_CONFIG_EX,
                        provider="SystemConfigEx",
                        name="VolumeMapping",
                        id=None,
                        opcode=35,
                        version=0,
                        ts=now,
                        pid=0,
                        tid=0,
                        cpu=0,
                        fields=fields,
                    )
                )
        return out


# --- Windows -----------------------------------------------------------------------------------


class WindowsHostApi:
    """kernel32/advapi32 through ctypes; only constructed on Windows."""

    def __init__(self) -> None:
        from etwsensor.sources.live import win32

        self._k32: Any = win32.load("kernel32")  # every function with its argtypes/restype
        self._adv: Any = win32.load("advapi32")

    def logical_drives(self) -> list[str]:
        mask = self._k32.GetLogicalDrives()
        return [f"{chr(65 + i)}:" for i in range(26) if mask >> i & 1]

    def query_dos_device(self, drive: str) -> str | None:
        buf = ctypes.create_unicode_buffer(1024)
        n = self._k32.QueryDosDeviceW(drive, buf, len(buf))
        return buf.value if n else None

    def lookup_account_sid(self, sid: str) -> str | None:
        psid = ctypes.c_void_p()
        if not self._adv.ConvertStringSidToSidW(sid, ctypes.byref(psid)):
            return None
        try:
            name = ctypes.create_unicode_buffer(256)
            domain = ctypes.create_unicode_buffer(256)
            n_name, n_domain, use = ctypes.c_uint32(256), ctypes.c_uint32(256), ctypes.c_uint32()
            ok = self._adv.LookupAccountSidW(None, psid, name, ctypes.byref(n_name), domain,
                                             ctypes.byref(n_domain), ctypes.byref(use))  # fmt: skip
            if not ok:
                return None
            return f"{domain.value}\\{name.value}" if domain.value else name.value
        finally:
            self._k32.LocalFree(psid)

    def process_token(self, pid: int) -> TokenInfo | None:
        k32, adv = self._k32, self._adv
        handle = k32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid)
        if not handle:
            return None  # exited already (ERROR_INVALID_PARAMETER) or protected (ERROR_ACCESS_DENIED)
        try:
            times = [ctypes.c_uint64() for _ in range(4)]
            ok = k32.GetProcessTimes(handle, *(ctypes.byref(t) for t in times))
            created = FILETIME_EPOCH + timedelta(microseconds=times[0].value // 10) if ok else None
            token = ctypes.c_void_p()
            if not adv.OpenProcessToken(handle, TOKEN_QUERY, ctypes.byref(token)):
                return None
            try:
                size = ctypes.c_uint32()
                elevation = ctypes.c_uint32()
                ok = adv.GetTokenInformation(token, TOKEN_ELEVATION_TYPE_CLASS, ctypes.byref(elevation),
                                             4, ctypes.byref(size))  # fmt: skip
                elevation_type = elevation.value if ok else None
                label = ctypes.create_string_buffer(64)  # SID_AND_ATTRIBUTES, then the label's SID
                rid = None
                if adv.GetTokenInformation(token, TOKEN_INTEGRITY_LEVEL_CLASS, label, len(label),
                                           ctypes.byref(size)):  # fmt: skip
                    sid = ctypes.c_void_p.from_buffer(label).value  # TOKEN_MANDATORY_LABEL.Label.Sid
                    count = adv.GetSidSubAuthorityCount(sid).contents.value
                    rid = adv.GetSidSubAuthority(sid, count - 1).contents.value if count else None
            finally:
                k32.CloseHandle(token)
        finally:
            k32.CloseHandle(handle)
        return TokenInfo(rid, elevation_type, created)

    def profile_sids(self) -> list[str]:
        import winreg  # type: ignore[import-not-found,unused-ignore]

        out: list[str] = []
        try:
            key: Any = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, PROFILE_LIST)  # type: ignore[attr-defined,unused-ignore]
        except OSError:
            return out
        with key:
            i = 0
            while True:
                try:
                    out.append(winreg.EnumKey(key, i))  # type: ignore[attr-defined,unused-ignore]
                except OSError:
                    return out
                i += 1

    def host_name(self) -> str:
        return socket.gethostname()

    def machine_guid(self) -> str | None:
        """HKLM\\SOFTWARE\\Microsoft\\Cryptography\\MachineGuid: set at install, stable across renames."""
        import winreg  # type: ignore[import-not-found,unused-ignore]

        try:
            key: Any = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Cryptography",  # type: ignore[attr-defined,unused-ignore]
                                      0, winreg.KEY_READ | winreg.KEY_WOW64_64KEY)  # type: ignore[attr-defined,unused-ignore]  # fmt: skip
            with key:
                value, _ = winreg.QueryValueEx(key, "MachineGuid")  # type: ignore[attr-defined,unused-ignore]
        except OSError:
            return None
        return str(value) if value else None

    def os_build(self) -> str:
        return platform.version()

    def os_pointer_size(self) -> int:
        wow64 = ctypes.c_int32(0)
        if self._k32.IsWow64Process(self._k32.GetCurrentProcess(), ctypes.byref(wow64)) and wow64.value:
            return 8  # a 32-bit process on 64-bit Windows
        return ctypes.sizeof(ctypes.c_void_p)
