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
    "offline_enricher",
    "parse_files_from",
]


def offline_enricher(files_from: str, budget: Budget | None = None) -> Enricher:
    """The enricher of ``replay --files-from``: facts computed from the collected files, synchronously
    (offline there is no deadline: every row gets the facts its files give)."""
    locator = CollectedFiles(parse_files_from(files_from))
    worker = FactsWorker(locator, budget or Budget(max_bytes_per_second=0), synchronous=True)
    return Enricher(worker, wait_seconds=None)
