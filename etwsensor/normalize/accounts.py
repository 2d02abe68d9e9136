"""SIDs → accounts, mandatory labels → integrity levels, elevation types → Defender's names.

Account names for well-known SIDs are written the way Defender's own rows show them
(lower-case ``nt authority`` / ``system``); others come from the recording header's SID map.
"""

from __future__ import annotations

from collections.abc import Mapping

WELL_KNOWN_SIDS: dict[str, tuple[str, str]] = {
    "S-1-5-18": ("nt authority", "system"),
    "S-1-5-19": ("nt authority", "local service"),
    "S-1-5-20": ("nt authority", "network service"),
    "S-1-5-7": ("nt authority", "anonymous logon"),
    "S-1-5-90-0": ("window manager", "dwm-1"),
}

INTEGRITY_LEVELS: dict[str, str] = {
    "S-1-16-4096": "Low",
    "S-1-16-8192": "Medium",
    "S-1-16-12288": "High",
    "S-1-16-16384": "System",
}

TOKEN_ELEVATION_TYPES: dict[int, str] = {
    1: "TokenElevationTypeDefault",
    2: "TokenElevationTypeFull",
    3: "TokenElevationTypeLimited",
}


class AccountResolver:
    """SID → (domain, name) from the header's map, then the built-in well-known SIDs."""

    __slots__ = ("_known",)

    def __init__(self, sids: Mapping[str, str] | None = None) -> None:
        self._known: dict[str, tuple[str, str]] = dict(WELL_KNOWN_SIDS)
        for sid, account in (sids or {}).items():
            domain, sep, name = account.rpartition("\\")
            self._known[sid.upper()] = (domain, name) if sep else ("", account)

    def add(self, sid: str, account: str) -> tuple[str, str]:
        """A name learned while tracing (an etwsensor-HostFacts Account event); its (domain, name)."""
        domain, sep, name = account.rpartition("\\")
        pair = self._known[sid.upper()] = (domain, name) if sep else ("", account)
        return pair

    def resolve(self, sid: str) -> tuple[str, str]:
        """(AccountDomain, AccountName); ("", "") when the SID is unknown or empty."""
        if not sid:
            return ("", "")
        return self._known.get(sid.upper(), ("", ""))
