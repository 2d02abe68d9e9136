"""Damaged PE files: any byte changes in the headers, resource and certificate areas, and any cut, give
facts (hashes always) and never an exception."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etwsensor.enrich import compute_facts

DATA = Path(__file__).resolve().parents[1] / "data" / "pe"
LAUNCHER = (DATA / "t64.exe").read_bytes()
SIGNED = (DATA / "shimx64.efi").read_bytes()
ERRORS = {"", "malformed_pe", "not_pe"}


def _mutated(base: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    data = bytearray(base)
    for pos, value in edits:
        data[pos % len(data)] = value
    return bytes(data[:cut] if cut is not None else data)


_edits_in_headers = st.lists(st.tuples(st.integers(0, 0x400), st.integers(0, 255)), min_size=1, max_size=12)
_edits_anywhere = st.lists(st.tuples(st.integers(0, 1 << 24), st.integers(0, 255)), min_size=1, max_size=24)
_cut = st.none() | st.integers(0, 1 << 20)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=_edits_in_headers | _edits_anywhere, cut=_cut)
def test_damaged_launcher_gives_facts(edits: list[tuple[int, int]], cut: int | None) -> None:
    data = _mutated(LAUNCHER, edits, cut)
    facts = compute_facts("C:\\x.exe", data)
    assert facts.sha256 == hashlib.sha256(data).hexdigest() and facts.size == len(data)
    assert facts.error in ERRORS


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=_edits_in_headers | _edits_anywhere, cut=_cut)
def test_damaged_signed_file_gives_facts(edits: list[tuple[int, int]], cut: int | None) -> None:
    data = _mutated(SIGNED, edits, cut)
    facts = compute_facts("C:\\x.efi", data)
    assert facts.sha1 == hashlib.sha1(data).hexdigest()
    assert facts.error in ERRORS
    assert facts.signature_status in {"", "Valid", "Invalid", "Unsigned", "Unknown"}
