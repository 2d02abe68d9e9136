"""What a live trace reads from the host while tracing: a started process's token, a new SID's name.

ETW's classic Process events carry neither integrity level nor token elevation, and a SID first seen
after the trace started has no name in the recording header. ``HostFacts`` fills both through the
``HostApi``:

* **Tokens** are read synchronously when the start's record is decoded (``on_start``, before the reorder
  window holds it, so as early as the pipeline sees it): OpenProcess, OpenProcessToken, two
  GetTokenInformation calls, a few microseconds of kernel calls. A process already gone is normal
  (``gone``); one whose creation time is after its start event is a reused pid (``reused``): both leave
  the row without the columns. The facts become an ``etwsensor-HostFacts`` ProcessToken event with the
  start's timestamp, pushed into the reorder window just before the start, so the normalizer and the
  recording see it first.
* **SIDs** are looked up on one background thread (LookupAccountSid may ask a domain controller and
  block for seconds); the start waits in the reorder window meanwhile. When an event leaves the window,
  finished names go first as Account events; a start whose own SID is still being looked up waits for it
  at most ``wait_seconds``. SIDs that do not resolve are remembered, not recorded.

Replays read the same events at the same points, so they give the same rows (docs/recording-format.md).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from etwsensor.events import RawEvent

HOSTFACTS_GUID = "5236470b-4fde-5baf-91f0-931f546dfd26"  # uuid5(URL, "etwsensor:HostFacts")
HOSTFACTS_PROVIDER = "etwsensor-HostFacts"
KERNEL_PROCESS = "Microsoft-Windows-Kernel-Process"
# (provider, event) of process starts and rundowns, and the name of their pid field
_STARTS = {
    ("Process", "Start"): "ProcessId",
    ("Process", "DCStart"): "ProcessId",
    (KERNEL_PROCESS, "ProcessStart"): "ProcessID",
    (KERNEL_PROCESS, "ProcessRundown"): "ProcessID",
}
START_PROVIDERS = frozenset(p for p, _ in _STARTS)
PID_REUSE_SLACK = timedelta(seconds=1)  # a token created this long after its start event is another process
REREAD_WINDOW = timedelta(milliseconds=100)  # the other half of the same start (classic + Kernel-Process)
SID_WAIT_SECONDS = 0.010  # the longest a start waits for its own SID's name (as rows wait for image facts)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What ``HostApi.process_token`` reads: the integrity RID (0x2000 Medium …), TOKEN_ELEVATION_TYPE
    (1 Default, 2 Full, 3 Limited) and the process's creation time (UTC) to tell a reused pid."""

    integrity_rid: int | None
    elevation_type: int | None
    created: datetime | None = None


def _event(name: str, key: int, ts: datetime, pid: int, fields: dict[str, Any]) -> RawEvent:
    return RawEvent(guid=HOSTFACTS_GUID, provider=HOSTFACTS_PROVIDER, name=name, id=key, opcode=None,
                    version=0, ts=ts, pid=pid, tid=0, cpu=0, fields=fields)  # fmt: skip


def token_event(pid: int, info: TokenInfo, ts: datetime) -> RawEvent:
    label = f"S-1-16-{info.integrity_rid}" if info.integrity_rid is not None else ""
    elevation = info.elevation_type or 0
    fields = {"ProcessId": pid, "MandatoryLabel": label, "ProcessTokenElevationType": elevation}
    return _event("ProcessToken", 1, ts, pid, fields)


def account_event(sid: str, account: str, ts: datetime) -> RawEvent:
    return _event("Account", 2, ts, 0, {"Sid": sid, "Account": account})


class HostFacts:
    """Token and SID facts for the live loop; ``close`` at the end (stops the lookup thread)."""

    def __init__(self, api: Any, known_sids: set[str] | frozenset[str] = frozenset(),
                 wait_seconds: float | None = None, max_sids: int = 4096) -> None:  # fmt: skip
        self._api = api
        self._read_token = getattr(api, "process_token", None)  # optional in a HostApi
        self.wait_seconds = SID_WAIT_SECONDS if wait_seconds is None else wait_seconds
        self._max_sids = max_sids
        self._seen: set[str] = {s.upper() for s in known_sids}  # asked (or known from the header)
        self._pending: dict[str, Future[str | None]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._recent: dict[int, datetime] = {}  # pid → start timestamp of the last token read
        self.tokens = self.gone = self.reused = self.token_errors = 0
        self.token_seconds = 0.0
        self.token_max_seconds = 0.0
        self.resolved = self.unresolved = self.lookup_errors = self.sid_waits = self.sid_timeouts = 0
        self.sids_over_limit = 0

    # --- tokens (pipeline thread, at decode) ----------------------------------------------------

    def on_start(self, ev: RawEvent) -> RawEvent | None:
        """For a process start or rundown: the ProcessToken event to put before it, if it needs one."""
        pid_field = _STARTS.get((ev.provider, ev.name))
        if pid_field is None:
            return None
        f = ev.fields
        sid = f.get("UserSID")
        if sid and isinstance(sid, str):
            self._ask(sid)
        pid = f.get(pid_field)
        if type(pid) is not int or self._read_token is None:
            return None
        if f.get("MandatoryLabel") and f.get("ProcessTokenElevationType"):
            return None  # Kernel-Process carries them: nothing to read
        last = self._recent.get(pid)
        if last is not None and abs(ev.ts - last) <= REREAD_WINDOW:
            return None  # the other provider's half of a start already read
        if len(self._recent) >= 4096:
            self._recent.clear()
        self._recent[pid] = ev.ts
        started = time.perf_counter()
        try:
            info = self._read_token(pid)
        except Exception:  # a host-layer failure costs this row its columns, never the trace
            info = None
            self.token_errors += 1
        spent = time.perf_counter() - started
        self.token_seconds += spent
        self.token_max_seconds = max(self.token_max_seconds, spent)
        if info is None:
            self.gone += 1  # exited before we asked (or not ours to open): the row goes without
            return None
        if info.created is not None and info.created > ev.ts + PID_REUSE_SLACK:
            self.reused += 1
            return None
        self.tokens += 1
        return token_event(pid, info, ev.ts)

    # --- SIDs (lookups on a thread; results taken on the pipeline thread) ---------------------------

    def _ask(self, sid: str) -> None:
        key = sid.upper()
        if key in self._seen:
            return
        if len(self._seen) >= self._max_sids:
            self.sids_over_limit += 1
            return
        self._seen.add(key)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="etwsensor-sids")
        self._pending[sid] = self._pool.submit(self._api.lookup_account_sid, sid)

    def take_accounts(self, ev: RawEvent) -> list[RawEvent]:
        """Account events to put before ``ev`` (timestamped as it): every finished lookup; when ``ev`` is a
        start whose own SID is still looked up, after waiting for it at most ``wait_seconds``."""
        pending = self._pending
        if not pending:
            return []
        own = ev.fields.get("UserSID") if ev.provider == "Process" else None
        mine = pending.get(own) if isinstance(own, str) else None
        if mine is not None and not mine.done():
            self.sid_waits += 1
            wait_futures([mine], timeout=self.wait_seconds)
            if not mine.done():
                self.sid_timeouts += 1
        out: list[RawEvent] = []
        for sid, future in list(pending.items()):
            if not future.done():
                continue
            del pending[sid]
            try:
                account = future.result()
            except Exception:  # likewise: counted, the row goes without the name
                self.lookup_errors += 1
                continue
            if account:
                self.resolved += 1
                out.append(account_event(sid, account, ev.ts))
            else:
                self.unresolved += 1  # remembered in _seen: not asked again, not recorded
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict[str, Any]:
        return {
            "tokens_read": self.tokens,
            "processes_gone": self.gone,
            "pids_reused": self.reused,
            "token_errors": self.token_errors,
            "token_read_ms_total": round(self.token_seconds * 1000, 3),
            "token_read_ms_max": round(self.token_max_seconds * 1000, 3),
            "sids_resolved": self.resolved,
            "sids_unresolved": self.unresolved,
            "sid_lookup_errors": self.lookup_errors,
            "sid_lookups_pending": len(self._pending),
            "sid_waits": self.sid_waits,
            "sid_wait_timeouts": self.sid_timeouts,
            "sids_over_limit": self.sids_over_limit,
        }
