"""Image facts for rows: hashes, file size, PE version resource and Authenticode signature.

``facts`` computes them from bytes; ``files`` finds the bytes (this host, or ``--files-from``);
``worker`` computes off the pipeline thread within a budget; ``enricher`` fills rows from its cache
without I/O, and turns facts into recording events and back. docs/enrich.md describes it all.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from etwsensor.enrich.enricher import (
    FACTS_EVENT,
    FACTS_GUID,
    FACTS_PROVIDER,
    Enricher,
    enriched_columns,
    facts_event,
    facts_from_fields,
)
from etwsensor.enrich.facts import ImageFacts, Signatures, compute_facts
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
    "Signatures",
    "compute_facts",
    "enriched_columns",
    "facts_event",
    "facts_from_fields",
    "live_enricher",
    "offline_enricher",
    "parse_files_from",
]


def offline_enricher(
    files_from: str, budget: Budget | None = None, trusted_roots: Path | None = None
) -> Enricher:
    """The enricher of ``replay --files-from``: facts computed from the collected files, synchronously
    (offline there is no deadline: every row gets the facts its files give). Signatures chain to the
    bundled Microsoft roots and ``trusted_roots``; the collection's own catalogs (``CatRoot``) sign
    the files that carry no signature."""
    locator = CollectedFiles(parse_files_from(files_from))
    signatures = collected_signatures(files_from, trusted_roots)
    worker = FactsWorker(locator, budget or Budget(max_bytes_per_second=0), synchronous=True,
                         signatures=signatures)  # fmt: skip
    return Enricher(worker, wait_seconds=None)


CATROOT = "\\Windows\\System32\\CatRoot"


@functools.lru_cache(maxsize=4)
def collected_signatures(files_from: str, trusted_roots: Path | None = None) -> Signatures:
    """Trusted roots and the catalog index of a collection, made once per run (every input of a replay
    shares them; the index itself is read on first use)."""
    from etwsensor.enrich.catalogs import CatalogIndex
    from etwsensor.enrich.trust import build_trust

    locator = CollectedFiles(parse_files_from(files_from))
    trust = build_trust(trusted_roots)
    found = (locator.locate(key + CATROOT) for key in sorted(locator.roots))
    return Signatures(trust, CatalogIndex([f for f in found if f is not None and f.is_dir()], trust))


def host_signatures(trusted_roots: Path | None = None) -> Signatures:
    """Live: the bundled roots, the machine's root store and ``trusted_roots``; on Windows the
    machine's catalogs."""
    from etwsensor.enrich.catalogs import CatalogIndex
    from etwsensor.enrich.trust import build_trust

    trust = build_trust(trusted_roots, machine=True)
    root = os.environ.get("SYSTEMROOT", "")
    folders = [Path(root) / "System32" / "CatRoot"] if sys.platform == "win32" and root else []
    return Signatures(trust, CatalogIndex(folders, trust))


def live_enricher(
    wait_ms: float = 10,
    max_mb_per_second: float = 32,
    max_file_size_mb: float = 64,
    record: bool = False,
    trusted_roots: Path | None = None,
) -> tuple[Enricher, FactsWorker]:
    """The enricher of live tracing: this host's files, a budgeted worker thread (started here; close it
    at the end), rows waiting at most ``wait_ms`` for facts; ``record``: facts go into the recording."""
    budget = Budget(max_bytes_per_second=max_mb_per_second * 1024 * 1024,
                    max_file_size=int(max_file_size_mb * 1024 * 1024))  # fmt: skip
    worker = FactsWorker(HostFiles(), budget, signatures=host_signatures(trusted_roots))
    worker.start()
    return Enricher(worker, wait_seconds=wait_ms / 1000, record=record), worker
