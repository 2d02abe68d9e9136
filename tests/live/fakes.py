"""Fakes of the Windows layer: a host and ETW sessions that replay the perfview .etl."""

from __future__ import annotations

import threading
from collections.abc import Callable

from etwsensor.decode import load_providers
from etwsensor.sources.live.callback import RecordCallback
from etwsensor.sources.live.health import SessionStats
from etwsensor.sources.live.plan import TracePlan
from tests.live.records import etl_records, event_record

UNC_DEVICE = "\\Device\\LanmanRedirector\\;Z:0\\srv\\share"


class FakeHost:
    def __init__(self) -> None:
        self.drives = {"C:": "\\Device\\HarddiskVolume3", "Z:": UNC_DEVICE}
        self.lookups: list[str] = []

    def logical_drives(self) -> list[str]:
        return [*self.drives, "Q:"]

    def query_dos_device(self, drive: str) -> str | None:
        return self.drives.get(drive)

    def lookup_account_sid(self, sid: str) -> str | None:
        self.lookups.append(sid)
        return {"S-1-5-21-1-2-3-1001": "CONTOSO\\alice"}.get(sid)

    def profile_sids(self) -> list[str]:
        return ["S-1-5-18", "S-1-5-21-1-2-3-1001"]

    def host_name(self) -> str:
        return "ws01"

    def os_build(self) -> str:
        return "10.0.26100"


class FakeSessions:
    """Sessions whose "ETW thread" feeds the .etl's records through the real callback; the kernel session
    is reported gone once (a tamper), then restarts."""

    def __init__(self, plan: TracePlan, callback: RecordCallback) -> None:
        self.plan = plan
        self.callback = callback
        self.on_consumer_end: Callable[[str], None] | None = None
        self.thread: threading.Thread | None = None
        self.fed = 0
        self.calls: list[str] = []
        self.kernel = plan.session_names()[0]
        self.gone_once = True

    def start(self) -> None:
        self.calls.append("start")
        known = {p.guid for p in load_providers()}

        def feed() -> None:
            for rec in etl_records():
                if rec.guid in known:
                    live = event_record(rec)  # alive while the callback copies it
                    self.callback((0, live.pointer()))
                    self.fed += 1

        self.thread = threading.Thread(target=feed)
        self.thread.start()

    def stop(self) -> None:
        self.calls.append("stop")
        if self.thread is not None:
            self.thread.join()

    def query(self, name: str) -> SessionStats | None:
        if name == self.kernel and self.gone_once:
            self.gone_once = False
            return None
        return SessionStats(events_lost=0)

    def restart(self, name: str) -> bool:
        self.calls.append(f"restart {name}")
        return True
