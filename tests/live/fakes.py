"""A fake host for the live header (device map, SIDs, names); ETW itself is tests/live/simadvapi.py."""

from __future__ import annotations

from etwsensor.sources.live.hostfacts import TokenInfo

UNC_DEVICE = "\\Device\\LanmanRedirector\\;Z:0\\srv\\share"


class FakeHost:
    def __init__(self, os_pointer_size: int = 8) -> None:
        self.drives = {"C:": "\\Device\\HarddiskVolume3", "Z:": UNC_DEVICE}
        self.lookups: list[str] = []
        self.pointer_size = os_pointer_size
        self.accounts = {"S-1-5-21-1-2-3-1001": "CONTOSO\\alice"}  # SID → name; others do not resolve
        self.tokens: dict[int, TokenInfo] = {}  # pid → token; other pids have exited
        self.token_reads: list[int] = []

    def logical_drives(self) -> list[str]:
        return [*self.drives, "Q:"]

    def query_dos_device(self, drive: str) -> str | None:
        return self.drives.get(drive)

    def lookup_account_sid(self, sid: str) -> str | None:
        self.lookups.append(sid)
        return self.accounts.get(sid)

    def process_token(self, pid: int) -> TokenInfo | None:
        self.token_reads.append(pid)
        return self.tokens.get(pid)

    def profile_sids(self) -> list[str]:
        return ["S-1-5-18", "S-1-5-21-1-2-3-1001"]

    def host_name(self) -> str:
        return "ws01"

    def os_build(self) -> str:
        return "10.0.26100"

    def os_pointer_size(self) -> int:
        return self.pointer_size
