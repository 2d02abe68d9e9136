"""The row side of enrichment: fills the hash, size, version and signature columns of rows from a
cache of ImageFacts, on the pipeline thread, without I/O.

Facts come from a ``FactsWorker`` (live: this host; offline: ``--files-from``) or from ImageFacts
events in a recording. For one event's rows, ``complete`` (1) takes the worker's finished results,
(2) asks the worker for every path it has no facts for, (3) waits for them at most ``wait_seconds``,
(4) takes the results again and (5) fills the rows. The facts applied in (1) and (4) are handed to the
recorder as ImageFacts events *before* the event whose rows they completed, so a recording replays
to the same rows: the reader applies them at the same point, and rows are filled only in (5).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from etwsensor.enrich.facts import VERSION_KEYS, ImageFacts
from etwsensor.enrich.worker import FactsWorker
from etwsensor.events import RawEvent

FACTS_GUID = "b9ca8bb6-4ced-5ad3-a5b5-8f9d2d097412"  # uuid5(URL, "etwsensor:ImageFacts")
FACTS_PROVIDER = "etwsensor-ImageFacts"
FACTS_EVENT = "ImageFacts"

PROCESS, IMAGE, FILE = "DeviceProcessEvents", "DeviceImageLoadEvents", "DeviceFileEvents"
# Tables whose FolderPath is the file the row is about, and the file actions whose file still exists.
_OWN_TABLES = frozenset({PROCESS, IMAGE, FILE})
_FILE_ACTIONS_WITH_CONTENT = frozenset({"FileCreated", "FileModified", "FileRenamed"})
_ADDITIONAL = frozenset({PROCESS, FILE})  # the tables with an AdditionalFields column

# Every column enrichment fills, per table (docs/normalize.md lists where each comes from).
HASH_COLUMNS = ("SHA1", "SHA256", "MD5", "FileSize")
_VERSION_SUFFIXES = tuple(VERSION_KEYS.values())


def enriched_columns(table: str) -> list[str]:
    """The columns of ``table`` that image facts fill."""
    cols: list[str] = []
    if table in _OWN_TABLES:
        cols += HASH_COLUMNS
    if table == PROCESS:
        cols += [f"ProcessVersionInfo{s}" for s in _VERSION_SUFFIXES]
    cols += [f"InitiatingProcess{c}" for c in HASH_COLUMNS]
    cols += [f"InitiatingProcessVersionInfo{s}" for s in _VERSION_SUFFIXES]
    if table == PROCESS:
        cols += ["InitiatingProcessSignerType", "InitiatingProcessSignatureStatus"]
    if table in _ADDITIONAL:
        cols.append("AdditionalFields")
    return cols


def facts_event(facts: ImageFacts, ts: datetime) -> RawEvent:
    """ImageFacts as a recording event (docs/recording-format.md)."""
    fields: dict[str, Any] = {
        "Path": facts.path,
        "Size": facts.size,
        "SHA1": facts.sha1,
        "SHA256": facts.sha256,
        "MD5": facts.md5,
        **{f"VersionInfo{k}": v for k, v in facts.version.items()},
        "SignatureStatus": facts.signature_status,
        "Signer": facts.signer,
        "SignerType": facts.signer_type,
        "Error": facts.error,
        "SignatureType": facts.signature_type,
    }
    return RawEvent(guid=FACTS_GUID, provider=FACTS_PROVIDER, name=FACTS_EVENT, id=1, opcode=None,
                    version=0, ts=ts, pid=0, tid=0, cpu=0, fields=fields)  # fmt: skip


def facts_from_fields(fields: dict[str, Any]) -> ImageFacts:
    """The inverse of ``facts_event``; raises ValueError/TypeError on fields that do not fit."""
    path = fields["Path"]
    size = fields.get("Size")
    if not isinstance(path, str) or not (size is None or type(size) is int):
        raise TypeError("ImageFacts: Path must be a string and Size an integer or null")
    text = {k: v for k, v in fields.items() if isinstance(v, str)}
    version = {s: text[f"VersionInfo{s}"] for s in _VERSION_SUFFIXES if text.get(f"VersionInfo{s}")}
    return ImageFacts(
        path=path, size=size, sha1=text.get("SHA1", ""), sha256=text.get("SHA256", ""),
        md5=text.get("MD5", ""), version=version, signature_status=text.get("SignatureStatus", ""),
        signer=text.get("Signer", ""), signer_type=text.get("SignerType", ""), error=text.get("Error", ""),
        signature_type=text.get("SignatureType", ""),
    )  # fmt: skip


class Enricher:
    """Rows → rows with image facts. ``wait_seconds``: how long one event's rows may wait for facts
    being computed (None: until they are done, for offline replay)."""

    def __init__(
        self,
        worker: FactsWorker | None = None,
        wait_seconds: float | None = 0.010,
        max_facts: int = 16384,
        record: bool = False,
    ) -> None:
        self.worker = worker
        self.wait_seconds = wait_seconds
        self.record = record
        self._facts: dict[str, ImageFacts] = {}
        self._max_facts = max_facts
        self._pending: set[str] = set()
        self._absent: set[str] = set()  # paths the worker found no file for
        self.to_record: list[RawEvent] = []
        self.recorded_in = 0  # ImageFacts events read from the input
        self.rows_filled = 0
        self.rows_missing = 0  # rows with a path whose facts were not there in time
        self.waits = 0
        self.wait_timeouts = 0
        self.errors: dict[str, int] = {}

    # --- facts in ------------------------------------------------------------------------------

    def apply_event(self, ev: RawEvent) -> None:
        """An ImageFacts event from a recording."""
        self.recorded_in += 1
        self._put(facts_from_fields(ev.fields), ev.ts)

    def _put(self, facts: ImageFacts, ts: datetime) -> None:
        store = self._facts
        if store.get(facts.path) == facts:
            return
        if facts.error:
            self.errors[facts.error] = self.errors.get(facts.error, 0) + 1
        if facts.error == "not_found":
            # Not stored nor recorded (a row without facts is the same either way): only remembered,
            # so that its rows do not ask and wait again.
            if len(self._absent) >= self._max_facts:
                self._absent.clear()
            self._absent.add(facts.path)
            return
        if facts.path not in store and len(store) >= self._max_facts:
            del store[next(iter(store))]  # the oldest: the same order live and in replay
        store[facts.path] = facts
        if self.record:
            self.to_record.append(facts_event(facts, ts))

    def _drain(self, ts: datetime) -> None:
        worker = self.worker
        if worker is None:
            return
        for facts in worker.done():
            self._pending.discard(facts.path)
            self._put(facts, ts)

    def take_recorded(self) -> list[RawEvent]:
        """ImageFacts events to write before the event just processed."""
        out, self.to_record = self.to_record, []
        return out

    # --- rows ------------------------------------------------------------------------------------

    def complete(self, rows: Sequence[tuple[str, dict[str, Any]]], ts: datetime) -> None:
        """Fill ``rows`` (one event's) in place; see the module docstring for the order of steps."""
        worker = self.worker
        store = self._facts
        if worker is not None:
            self._drain(ts)
            wanted: set[str] | None = None
            absent = self._absent
            for table, row in rows:
                for path in _paths_of(table, row):
                    if path in store:
                        if table == FILE and not worker.synchronous:
                            worker.request(path)  # a file event: the file may have changed, look again
                        continue
                    if path in absent:
                        if table != FILE:
                            continue
                        absent.discard(path)  # a file event: it may exist now
                    if wanted is None:
                        wanted = set()
                    wanted.add(path)
            if wanted is not None:
                self._request(worker, wanted, ts)
        for table, row in rows:
            self._fill(table, row, store)

    def _request(self, worker: FactsWorker, wanted: set[str], ts: datetime) -> None:
        pending = self._pending
        for path in wanted - pending:
            if worker.request(path):
                pending.add(path)
        if worker.synchronous:
            self._drain(ts)
            return
        self.waits += 1
        wait = self.wait_seconds
        deadline = time.monotonic() + (wait if wait is not None else 3600.0)
        worker.wait(wanted, deadline)
        self._drain(ts)
        if wanted & self._pending:
            self.wait_timeouts += 1

    def _fill(self, table: str, row: dict[str, Any], store: dict[str, ImageFacts]) -> None:
        filled = missing = False
        own = row.get("FolderPath") if table in _OWN_TABLES else None
        if own and (table != FILE or row.get("ActionType") in _FILE_ACTIONS_WITH_CONTENT):
            facts = store.get(own)
            if facts is None:
                missing = True
            elif facts.size is not None:
                filled = True
                _put_hashes(row, "", facts)
                if table == PROCESS:
                    for suffix, value in facts.version.items():
                        row["ProcessVersionInfo" + suffix] = value
                if table in _ADDITIONAL and facts.signature_status:
                    _additional(row, facts)
        initiating = row.get("InitiatingProcessFolderPath")
        if initiating:
            facts = store.get(initiating)
            if facts is None:
                missing = True
            elif facts.size is not None:
                filled = True
                _put_hashes(row, "InitiatingProcess", facts)
                for suffix, value in facts.version.items():
                    row["InitiatingProcessVersionInfo" + suffix] = value
                if table == PROCESS and facts.signature_status:
                    row["InitiatingProcessSignatureStatus"] = facts.signature_status
                    row["InitiatingProcessSignerType"] = facts.signer_type or "Unknown"
        if filled:
            self.rows_filled += 1
        if missing:
            self.rows_missing += 1

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "facts": len(self._facts),
            "facts_from_input": self.recorded_in,
            "rows_filled": self.rows_filled,
            "rows_without_facts": self.rows_missing,
            "waits": self.waits,
            "wait_timeouts": self.wait_timeouts,
            "errors": dict(self.errors),
        }
        if self.worker is not None:
            out["worker"] = self.worker.stats()
        return out


def _paths_of(table: str, row: dict[str, Any]) -> list[str]:
    out: list[str] = []
    own = row.get("FolderPath") if table in _OWN_TABLES else None
    if own and (table != FILE or row.get("ActionType") in _FILE_ACTIONS_WITH_CONTENT) and "\\" in own:
        out.append(own)
    initiating = row.get("InitiatingProcessFolderPath")
    if initiating and "\\" in initiating:
        out.append(initiating)
    return out


def _put_hashes(row: dict[str, Any], prefix: str, facts: ImageFacts) -> None:
    row[prefix + "FileSize"] = facts.size
    if facts.sha1:
        row[prefix + "SHA1"] = facts.sha1
        row[prefix + "SHA256"] = facts.sha256
        row[prefix + "MD5"] = facts.md5


def _additional(row: dict[str, Any], facts: ImageFacts) -> None:
    """Signer and status of the row's own file into AdditionalFields (a JSON object as a string),
    keeping what is already there."""
    extra: dict[str, Any] = {}
    current = row.get("AdditionalFields")
    if isinstance(current, dict):
        extra = dict(current)
    elif isinstance(current, str) and current:
        try:
            parsed = json.loads(current)
            extra = parsed if isinstance(parsed, dict) else {"AdditionalFields": parsed}
        except ValueError:
            extra = {"AdditionalFields": current}
    extra["SignatureStatus"] = facts.signature_status
    if facts.signer:
        extra["Signer"] = facts.signer
        extra["SignerType"] = facts.signer_type
    if facts.signature_type:  # DeviceFileCertificateInfo's words: Embedded / Catalog, chain trusted or not
        extra["SignatureType"] = facts.signature_type
        extra["IsTrusted"] = facts.signature_status == "Valid"
    row["AdditionalFields"] = msgspec.json.encode(extra).decode()
