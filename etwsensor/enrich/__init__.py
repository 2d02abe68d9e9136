"""Image facts for rows: hashes, file size, PE version resource and Authenticode signature.

``facts`` computes them from bytes; ``files`` finds the bytes (this host, or ``--files-from``);
``worker`` computes off the pipeline thread within a budget; ``enricher`` fills rows from its cache
without I/O, and turns facts into recording events and back. docs/enrich.md describes it all.
"""

from __future__ import annotations

from etwsensor.enrich.enricher import (
    FACTS_EVENT,
    FACTS_GUID,
    FACTS_PROVIDER,
    Enricher,
    enriched_columns,
    facts_event,
    facts_from_fields,
)
from etwsensor.enrich.facts import ImageFacts, compute_facts
from etwsensor.enrich.files import CollectedFiles, FilesFromError, HostFiles, parse_files_from
from etwsensor.enrich.worker import Budget, FactsWorker

__all__ = [
    "FACTS_EVENT",
    "FACTS_GUID",
    "FACTS_PROVIDER",
    "Budget",
    "CollectedFiles",
    "Enricher",
    "FactsWorker",
    "FilesFromError",
    "HostFiles",
    "ImageFacts",
    "compute_facts",
    "enriched_columns",
    "facts_event",
    "facts_from_fields",
    "live_enricher",
    "offline_enricher",
    "parse_files_from",
]


def offline_enricher(files_from: str, budget: Budget | None = None) -> Enricher:
    """The enricher of ``replay --files-from``: facts computed from the collected files, synchronously
    (offline there is no deadline: every row gets the facts its files give)."""
    locator = CollectedFiles(parse_files_from(files_from))
    worker = FactsWorker(locator, budget or Budget(max_bytes_per_second=0), synchronous=True)
    return Enricher(worker, wait_seconds=None)


def live_enricher(
    wait_ms: float = 10, max_mb_per_second: float = 32, max_file_size_mb: float = 64, record: bool = False
) -> tuple[Enricher, FactsWorker]:
    """The enricher of live tracing: this host's files, a budgeted worker thread (started here; close it
    at the end), rows waiting at most ``wait_ms`` for facts; ``record``: facts go into the recording."""
    budget = Budget(max_bytes_per_second=max_mb_per_second * 1024 * 1024,
                    max_file_size=int(max_file_size_mb * 1024 * 1024))  # fmt: skip
    worker = FactsWorker(HostFiles(), budget)
    worker.start()
    return Enricher(worker, wait_seconds=wait_ms / 1000, record=record), worker
