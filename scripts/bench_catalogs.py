#!/usr/bin/env python3
"""Catalog signatures: the cost of reading a machine's catalogs once, and of one lookup.

    python scripts/bench.py catalogs [--catalogs K] [--members M] [--repeat N]

Makes K catalog files of M members each (random SHA-256 Authenticode hashes; a test CA from openssl,
signed by osslsigncode, as tests/enrich/signing.py does) under bench-data/ (git-ignored, made once), then
times ``CatalogIndex`` reading them all (parse, signature and chain check, index), best of N, and the
added cost for a file without an embedded signature (LIEF's SHA-256 and SHA-1 Authenticode hashes of
tests/data/pe/w64.exe and the lookup). One core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_catroot(folder: Path, catalogs: int, members: int) -> Path:
    from tests.enrich.signing import make_catalog_of, make_signer

    done = folder / "done"
    if done.exists():
        return folder
    signer = make_signer(folder / "ca")
    guid = folder / "CatRoot" / "{F750E6C3-38EE-11D1-85E5-00C04FC295EE}"
    for i in range(catalogs):
        digests = [os.urandom(32) for _ in range(members)]
        make_catalog_of(digests, guid / f"Package_{i:05d}.cat", signer)
    done.write_text("ok\n")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalogs", type=int, default=200)
    ap.add_argument("--members", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from etwsensor.enrich import Signatures, compute_facts
    from etwsensor.enrich.catalogs import CatalogIndex
    from etwsensor.enrich.trust import build_trust

    folder = make_catroot(ROOT / "bench-data" / f"catalogs-{args.catalogs}x{args.members}", args.catalogs,
                          args.members)  # fmt: skip
    catroot = folder / "CatRoot"
    size = sum(p.stat().st_size for p in catroot.rglob("*.cat"))
    t0 = time.perf_counter()
    trust = build_trust(folder / "ca" / "ca.pem")
    trust_s = time.perf_counter() - t0
    best = float("inf")
    index = CatalogIndex([catroot], trust)
    for _ in range(args.repeat):
        index = CatalogIndex([catroot], trust)
        t0 = time.perf_counter()
        index.lookup([])
        best = min(best, time.perf_counter() - t0)
    stats = index.stats()
    pe = (ROOT / "tests" / "data" / "pe" / "w64.exe").read_bytes()
    with_catalogs, without = Signatures(trust, index), Signatures(trust)
    lookups = 200
    t0 = time.perf_counter()
    for _ in range(lookups):
        compute_facts("w64.exe", pe, with_catalogs)
    per_with = (time.perf_counter() - t0) / lookups
    t0 = time.perf_counter()
    for _ in range(lookups):
        compute_facts("w64.exe", pe, without)
    per_without = (time.perf_counter() - t0) / lookups
    json.dump({
        "bench": "catalogs",
        "catalogs": stats["catalogs"], "members": stats["members"], "bytes": size,
        "trust_store_load_s": round(trust_s, 3),
        "index_build_s": round(best, 3),
        "catalogs_per_s": round(stats["catalogs"] / best),
        "members_per_s": round(stats["members"] / best),
        "unsigned_pe_facts_ms_with_catalogs": round(per_with * 1000, 3),
        "unsigned_pe_facts_ms_without": round(per_without * 1000, 3),
        "load_average": os.getloadavg(),
    }, sys.stdout, indent=2)  # fmt: skip
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
