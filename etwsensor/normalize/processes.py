"""The process table: who is running, merged from the classic Process class and Kernel-Process.

A process is keyed by (pid, CreateTime) when Kernel-Process gives CreateTime, else by
(pid, UniqueProcessKey) from the classic class. A classic Start and a Kernel-Process ProcessStart
for the same pid within ``MERGE_WINDOW`` are one start: command line and SID come from the
classic event, CreateTime, elevation and integrity from the manifest one, and one
``ProcessCreated`` row is written. Rundown (classic DCStart, Kernel-Process ProcessRundown)
only fills the table, never makes rows.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from etwsensor.events import RawEvent
from etwsensor.normalize.accounts import INTEGRITY_LEVELS, TOKEN_ELEVATION_TYPES, AccountResolver
from etwsensor.normalize.paths import PathResolver, file_name_of
from etwsensor.normalize.rows import Handlers, Row, RowSink, path_unresolved

MERGE_WINDOW = timedelta(milliseconds=100)
# image_info suffixes that are the ProcessCreated row's own columns without a "Process" prefix
_OWN_COLUMNS = frozenset({"SHA1", "SHA256", "MD5", "FileSize"})
PROCESS_TABLE = "DeviceProcessEvents"
# The columns ``Process.initiating`` gives every row a process causes.
INITIATING_COLUMNS = frozenset({
    "InitiatingProcessAccountDomain", "InitiatingProcessAccountName", "InitiatingProcessAccountSid",
    "InitiatingProcessIntegrityLevel", "InitiatingProcessTokenElevation", "InitiatingProcessFileName",
    "InitiatingProcessId", "InitiatingProcessCommandLine", "InitiatingProcessCreationTime",
    "InitiatingProcessFolderPath", "InitiatingProcessParentId", "InitiatingProcessParentFileName",
    "InitiatingProcessParentCreationTime", "InitiatingProcessSessionId",
})  # fmt: skip


@dataclass(slots=True, eq=False)
class Process:
    pid: int
    parent_pid: int
    first_seen: datetime  # timestamp of the event that made it known
    rundown: bool  # known from rundown only: no ProcessCreated row, creation time may be unknown
    create_time: datetime | None = None
    unique_key: int | None = None
    file_name: str = ""
    folder_path: str = ""
    command_line: str = ""
    sid: str = ""
    account_domain: str = ""
    account_name: str = ""
    integrity: str = ""
    elevation: str = ""
    session_id: int | None = None
    parent: Process | None = None
    has_classic: bool = False
    has_manifest: bool = False
    path_guessed: bool = False  # folder_path taken from the command line; an image record wins
    ended: bool = False
    guid: str = ""  # Sysmon's ProcessGuid, when the process is known from Windows events
    logon_id: int | None = None
    # What the image's hashes and version info give, by column suffix ("SHA1",
    # "VersionInfoCompanyName", …): ``<suffix>`` or ``Process<suffix>`` on its ProcessCreated row,
    # ``InitiatingProcess<suffix>`` on the rows it causes.
    image_info: Row | None = None
    _initiating: Row | None = field(default=None, repr=False)

    def initiating(self) -> Row:
        """The InitiatingProcess* columns of rows this process causes (cached; shared, never mutate)."""
        cols = self._initiating
        if cols is None:
            parent = self.parent
            cols = self._initiating = {
                "InitiatingProcessAccountDomain": self.account_domain,
                "InitiatingProcessAccountName": self.account_name,
                "InitiatingProcessAccountSid": self.sid,
                "InitiatingProcessIntegrityLevel": self.integrity,
                "InitiatingProcessTokenElevation": self.elevation,
                "InitiatingProcessFileName": self.file_name,
                "InitiatingProcessId": self.pid,
                "InitiatingProcessCommandLine": self.command_line,
                "InitiatingProcessCreationTime": self.create_time,
                "InitiatingProcessFolderPath": self.folder_path,
                "InitiatingProcessParentId": self.parent_pid,
                "InitiatingProcessParentFileName": parent.file_name if parent else "",
                "InitiatingProcessParentCreationTime": parent.create_time if parent else None,
                "InitiatingProcessSessionId": self.session_id,
            }
            if self.image_info:
                for suffix, value in self.image_info.items():
                    cols["InitiatingProcess" + suffix] = value
        return cols

    @property
    def resolved(self) -> bool:
        return not path_unresolved(self.folder_path)

    def changed(self) -> None:
        self._initiating = None


def _folder_from_command_line(command_line: str, file_name: str) -> str:
    """The image path when the command line starts with it (classic events carry only the name)."""
    if not command_line or not file_name:
        return ""
    if command_line[0] == '"':
        end = command_line.find('"', 1)
        first = command_line[1:end] if end > 0 else ""
    else:
        first = command_line.split(" ", 1)[0]
    if len(first) > 3 and first[1] == ":" and first.lower().endswith("\\" + file_name.lower()):
        return first
    return ""


class ProcessTracker:
    """Feeds the process table from process events and writes DeviceProcessEvents rows."""

    def __init__(
        self,
        sink: RowSink,
        paths: PathResolver,
        accounts: AccountResolver,
        max_ended: int = 4096,
        max_processes: int = 65536,
    ) -> None:
        self._sink = sink
        self._paths = paths
        self._accounts = accounts
        self._by_pid: dict[int, Process] = {}
        self._ended: deque[Process] = deque()
        self._max_ended = max_ended
        self._max_processes = max_processes
        # starts waiting (at most MERGE_WINDOW of event time) for their other half
        self._pending: dict[int, Process] = {}
        self._by_guid: dict[str, Process] = {}
        self._classic_seen = False
        self._manifest_seen = False
        # starts that waited in vain while the other provider was never seen: it is not in this
        # stream, so later starts are written at once
        self._unpaired_classic = 0
        self._unpaired_manifest = 0
        # ProcessToken facts read live from the token (etwsensor-HostFacts), waiting for their start
        self._tokens: dict[int, tuple[datetime, str, str]] = {}
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def pending(self) -> dict[int, Process]:
        """Starts waiting for their other half (the dict itself; it is never replaced)."""
        return self._pending

    # --- lookups -------------------------------------------------------------------------------

    def get(self, pid: int) -> Process | None:
        proc = self._by_pid.get(pid)
        if proc is None:
            self.misses += 1
        else:
            self.hits += 1
        return proc

    def stats(self) -> dict[str, int]:
        return {
            "size": len(self._by_pid),
            "max_size": self._max_processes,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "pending_starts": len(self._pending),
        }

    def handlers(self) -> Handlers:
        return {
            ("Microsoft-Windows-Kernel-Process", "ProcessStart"): self._manifest_start,
            ("Microsoft-Windows-Kernel-Process", "ProcessRundown"): self._manifest_rundown,
            ("Microsoft-Windows-Kernel-Process", "ProcessStop"): self._manifest_stop,
            ("Process", "Start"): self._classic_start,
            ("Process", "DCStart"): self._classic_rundown,
            ("Process", "End"): self._classic_end,
            ("etwsensor-HostFacts", "ProcessToken"): self._token,
            ("etwsensor-HostFacts", "Account"): self._account,
        }

    # --- facts read from the live host (written into recordings before the start they belong to) ---

    def _token(self, ev: RawEvent) -> None:
        f = ev.fields
        pid = f["ProcessId"]
        if type(pid) is not int:
            raise TypeError("ProcessToken: ProcessId must be an integer")
        integrity = INTEGRITY_LEVELS.get(f.get("MandatoryLabel") or "", "")
        elevation = TOKEN_ELEVATION_TYPES.get(f.get("ProcessTokenElevationType") or 0, "")
        tokens = self._tokens
        if len(tokens) >= 4096 and pid not in tokens:
            del tokens[next(iter(tokens))]  # starts that never came: the oldest goes
        tokens[pid] = (ev.ts, integrity, elevation)

    def _with_token(self, proc: Process) -> None:
        """Integrity and elevation the start event lacks, from the token read live (the event wins).
        The token event has its start's timestamp: one left over from a start never seen is dropped."""
        token = self._tokens.pop(proc.pid, None) if self._tokens else None
        if token is not None and abs(token[0] - proc.first_seen) <= MERGE_WINDOW:
            proc.integrity = proc.integrity or token[1]
            proc.elevation = proc.elevation or token[2]
            proc.changed()

    def _account(self, ev: RawEvent) -> None:
        sid, account = ev.fields["Sid"], ev.fields["Account"]
        if not isinstance(sid, str) or not isinstance(account, str) or not sid or not account:
            raise TypeError("Account: Sid and Account must be non-empty strings")
        domain, name = self._accounts.add(sid, account)
        for proc in self._by_pid.values():  # processes already known by this SID name it from now on
            if proc.sid.upper() == sid.upper() and not proc.account_name:
                proc.account_domain, proc.account_name = domain, name
                proc.changed()

    # --- time ----------------------------------------------------------------------------------

    def advance(self, now: datetime) -> None:
        """Write the starts whose other half did not come within the merge window."""
        pending = self._pending
        while pending:
            pid, proc = next(iter(pending.items()))
            if proc.first_seen + MERGE_WINDOW >= now:
                return
            del pending[pid]
            if proc.has_classic and not self._manifest_seen:
                self._unpaired_classic += 1
            elif proc.has_manifest and not self._classic_seen:
                self._unpaired_manifest += 1
            self._emit_created(proc)

    def flush(self) -> None:
        for proc in list(self._pending.values()):
            self._emit_created(proc)
        self._pending.clear()

    # --- table maintenance ---------------------------------------------------------------------

    def _insert(self, proc: Process) -> None:
        by_pid = self._by_pid
        by_pid[proc.pid] = proc
        if len(by_pid) > self._max_processes:
            # Only reached when ends are lost: drop the oldest entry rather than grow forever.
            oldest = next(iter(by_pid))
            del by_pid[oldest]
            self.evictions += 1
        parent = by_pid.get(proc.parent_pid) if proc.parent_pid != proc.pid else None
        if parent is not None and not (
            parent.create_time and proc.create_time and parent.create_time > proc.create_time
        ):
            proc.parent = parent

    def _end(self, proc: Process) -> None:
        if proc.ended:
            return
        proc.ended = True
        ended = self._ended
        ended.append(proc)
        if len(ended) > self._max_ended:
            old = ended.popleft()
            if self._by_pid.get(old.pid) is old:
                del self._by_pid[old.pid]

    # --- field merging -------------------------------------------------------------------------

    def _apply_manifest(self, proc: Process, f: dict[str, Any]) -> None:
        proc.has_manifest = True
        create_time = f.get("CreateTime")
        if isinstance(create_time, datetime):
            proc.create_time = create_time
        image = f.get("ImageName")
        if image:
            proc.folder_path = self._paths.to_dos(image)
            proc.file_name = file_name_of(proc.folder_path)
            proc.path_guessed = False
        label = f.get("MandatoryLabel")
        if label:
            proc.integrity = INTEGRITY_LEVELS.get(label, "")
        elevation = f.get("ProcessTokenElevationType")
        if elevation is not None:
            proc.elevation = TOKEN_ELEVATION_TYPES.get(elevation, "")
        session = f.get("SessionID")
        if session is not None:
            proc.session_id = session
        proc.changed()

    def _apply_classic(self, proc: Process, f: dict[str, Any]) -> None:
        proc.has_classic = True
        key = f.get("UniqueProcessKey")
        if key is not None:
            proc.unique_key = key
        proc.command_line = f.get("CommandLine") or proc.command_line
        sid = f.get("UserSID") or ""
        if sid:
            proc.sid = sid
            proc.account_domain, proc.account_name = self._accounts.resolve(sid)
        if not proc.file_name:
            proc.file_name = f.get("ImageFileName") or ""
        if path_unresolved(proc.folder_path):
            guess = _folder_from_command_line(proc.command_line, proc.file_name)
            if guess:
                proc.folder_path = self._paths.to_dos(guess)
                proc.path_guessed = True
            elif not proc.folder_path:
                proc.folder_path = proc.file_name
        session = f.get("SessionId")
        if session is not None and proc.session_id is None:
            proc.session_id = session
        proc.changed()

    # --- starts --------------------------------------------------------------------------------

    def _manifest_start(self, ev: RawEvent) -> None:
        self._manifest_seen = True
        f = ev.fields
        pid = f.get("ProcessID")
        if pid is None:
            return
        if self._merge_late_half(pid, ev.ts, classic=False, fields=f):
            return
        proc = Process(pid=pid, parent_pid=f.get("ParentProcessID", -1), first_seen=ev.ts, rundown=False)
        self._apply_manifest(proc, f)
        self._with_token(proc)
        self._insert(proc)
        self._wait_or_emit(proc, self._classic_seen or not self._unpaired_manifest)

    def _classic_start(self, ev: RawEvent) -> None:
        self._classic_seen = True
        f = ev.fields
        pid = f.get("ProcessId")
        if pid is None:
            return
        if self._merge_late_half(pid, ev.ts, classic=True, fields=f):
            return
        proc = Process(pid=pid, parent_pid=f.get("ParentId", -1), first_seen=ev.ts, rundown=False)
        self._apply_classic(proc, f)
        self._with_token(proc)
        self._insert(proc)
        self._wait_or_emit(proc, self._manifest_seen or not self._unpaired_classic)

    def _wait_or_emit(self, proc: Process, wait: bool) -> None:
        earlier = self._pending.pop(proc.pid, None)
        if earlier is not None:  # the same pid started again before its partner came: write the first
            self._emit_created(earlier)
        if wait:
            self._pending[proc.pid] = proc
        else:
            self._emit_created(proc)

    def _merge_late_half(self, pid: int, ts: datetime, classic: bool, fields: dict[str, Any]) -> bool:
        """Fold this start into the other provider's start of the same pid if within the window."""
        proc = self._pending.get(pid)
        pending = proc is not None
        if proc is None:
            proc = self._by_pid.get(pid)
        if proc is None or proc.rundown or abs(ts - proc.first_seen) > MERGE_WINDOW:
            return False
        if proc.has_classic if classic else proc.has_manifest:
            return False  # same provider twice: a new start (pid reuse), not the other half
        first_path = proc.folder_path
        if classic:
            self._apply_classic(proc, fields)
        else:
            self._apply_manifest(proc, fields)
            if not fields.get("ImageName"):
                proc.folder_path = first_path
        self._with_token(proc)
        proc.first_seen = min(proc.first_seen, ts)
        if pending:
            del self._pending[pid]
            self._emit_created(proc)
        return True

    # --- rundown and ends ----------------------------------------------------------------------

    def _classic_rundown(self, ev: RawEvent) -> None:
        self._classic_seen = True
        f = ev.fields
        pid = f.get("ProcessId")
        if pid is None:
            return
        key = f.get("UniqueProcessKey")
        proc = self._by_pid.get(pid)
        # A rundown of a process already known (a start seen, or the other provider's rundown)
        # only completes it; a different key means the pid was reused.
        if proc is None or proc.unique_key not in (None, key):
            proc = Process(pid=pid, parent_pid=f.get("ParentId", -1), first_seen=ev.ts, rundown=True)
            self._apply_classic(proc, f)
            self._with_token(proc)
            self._insert(proc)
        elif not proc.has_classic:
            self._apply_classic(proc, f)

    def _manifest_rundown(self, ev: RawEvent) -> None:
        self._manifest_seen = True
        f = ev.fields
        pid = f.get("ProcessID")
        if pid is None:
            return
        create_time = f.get("CreateTime")
        proc = self._by_pid.get(pid)
        if proc is None or proc.create_time not in (None, create_time):
            proc = Process(pid=pid, parent_pid=f.get("ParentProcessID", -1), first_seen=ev.ts, rundown=True)
            self._apply_manifest(proc, f)
            self._with_token(proc)
            self._insert(proc)
        elif not proc.has_manifest:
            first_path = proc.folder_path
            self._apply_manifest(proc, f)
            if not f.get("ImageName"):
                proc.folder_path = first_path

    def _classic_end(self, ev: RawEvent) -> None:
        f = ev.fields
        proc = self._by_pid.get(f.get("ProcessId", -1))
        if proc is not None and proc.unique_key in (None, f.get("UniqueProcessKey")):
            self._end(proc)

    def _manifest_stop(self, ev: RawEvent) -> None:
        f = ev.fields
        proc = self._by_pid.get(f.get("ProcessID", -1))
        if proc is not None and proc.create_time in (None, f.get("CreateTime")):
            self._end(proc)

    def remap(self) -> None:
        """The device map grew (VolumeMapping records arrive after the rundown in merged .etl
        files): convert the image paths that are still in NT form."""
        for proc in self._by_pid.values():
            if proc.folder_path.startswith("\\") and not proc.folder_path.startswith("\\\\"):
                dos = self._paths.to_dos(proc.folder_path, count=False)
                if dos != proc.folder_path:
                    proc.folder_path = dos
                    proc.changed()

    # --- image rundown helps: the main module names the process image ----------------------------

    def learn_image(self, pid: int, path: str) -> None:
        """A module of ``pid`` at ``path`` (NT or DOS form): completes a process known only by its
        bare name, or whose path was only guessed from its command line."""
        proc = self._by_pid.get(pid)
        if proc is not None and proc.file_name and ("\\" not in proc.folder_path or proc.path_guessed):
            self._learn(proc, path)

    def image_loaded(self, pid: int, path: str) -> Process | None:
        """The process that loaded a module at ``path`` (DOS form): ``get`` and ``learn_image`` in one
        lookup, for the most frequent event of all."""
        proc = self._by_pid.get(pid)
        if proc is None:
            self.misses += 1
            return None
        self.hits += 1
        if proc.file_name and ("\\" not in proc.folder_path or proc.path_guessed):
            self._learn(proc, path)
        return proc

    def _learn(self, proc: Process, path: str) -> None:
        if file_name_of(path).lower() != proc.file_name.lower():
            return
        path = self._paths.to_dos(path, count=False)
        if path != proc.folder_path:
            proc.folder_path = path
            proc.path_guessed = False
            proc.changed()

    # --- processes known from Windows event logs (Sysmon, Security) -----------------------------

    def by_guid(self, guid: str) -> Process | None:
        proc = self._by_guid.get(guid)
        if proc is None:
            self.misses += 1
        else:
            self.hits += 1
        return proc

    def adopt(self, proc: Process, parent: Process | None = None) -> None:
        """Put a process that a Windows event describes into the table (by pid, and by its GUID
        when it has one); ``parent`` when the event names it for sure."""
        self._insert(proc)
        if parent is not None:
            proc.parent = parent
        if proc.guid:
            by_guid = self._by_guid
            by_guid[proc.guid] = proc
            if len(by_guid) > self._max_processes:
                del by_guid[next(iter(by_guid))]

    def created(self, proc: Process) -> None:
        """Write the ProcessCreated row of a process put in with ``adopt``."""
        self._emit_created(proc)

    def ended(self, proc: Process) -> None:
        self._end(proc)

    # --- rows ----------------------------------------------------------------------------------

    def _emit_created(self, proc: Process) -> None:
        parent = proc.parent
        row: Row = {"InitiatingProcessId": proc.parent_pid} if parent is None else dict(parent.initiating())
        row["FileName"] = proc.file_name
        row["FolderPath"] = proc.folder_path
        row["ProcessId"] = proc.pid
        row["ProcessCommandLine"] = proc.command_line
        row["ProcessCreationTime"] = proc.create_time
        row["AccountDomain"] = proc.account_domain
        row["AccountName"] = proc.account_name
        row["AccountSid"] = proc.sid
        row["ProcessIntegrityLevel"] = proc.integrity
        row["ProcessTokenElevation"] = proc.elevation
        row["CreatedProcessSessionId"] = proc.session_id
        if proc.logon_id is not None:
            row["LogonId"] = proc.logon_id
        if parent is not None and parent.logon_id is not None:
            row["InitiatingProcessLogonId"] = parent.logon_id
        if proc.image_info:
            for suffix, value in proc.image_info.items():
                row[suffix if suffix in _OWN_COLUMNS else "Process" + suffix] = value
        unresolved = parent is None or not proc.resolved
        self._sink.emit(PROCESS_TABLE, "ProcessCreated", proc.first_seen, row, unresolved)
