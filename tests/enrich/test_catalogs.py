"""Catalog signatures: Windows catalog files made here (tests/enrich/signing.py), checked by osslsigncode,
read by etwsensor's CatalogIndex; the root of trust decides Valid or Unknown."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etwsensor.enrich import Signatures, compute_facts
from etwsensor.enrich.catalogs import CatalogError, CatalogIndex, read_catalog
from etwsensor.enrich.trust import TrustStore, build_trust, read_trusted_roots
from tests.enrich.signing import (
    Signer,
    authentihash,
    make_catalog,
    make_signer,
    need_tools,
    osslsigncode_in_catalog,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "pe"
W64, CLI64, T64 = DATA / "w64.exe", DATA / "cli-64.exe", DATA / "t64.exe"


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    need_tools()
    return make_signer(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def catroot(tmp_path_factory: pytest.TempPathFactory, signer: Signer) -> Path:
    """CatRoot with two catalogs, as Windows lays them out: w64.exe by SHA-256, cli-64.exe by SHA-1."""
    root = tmp_path_factory.mktemp("CatRoot")
    folder = root / "{F750E6C3-38EE-11D1-85E5-00C04FC295EE}"
    make_catalog([W64], folder / "Package_1.cat", signer, "sha256")
    make_catalog([CLI64], folder / "Package_2.cat", signer, "sha1")
    return root


def _signatures(catroot: Path, trust: TrustStore) -> Signatures:
    return Signatures(trust, CatalogIndex([catroot], trust))


def test_osslsigncode_agrees_the_files_are_in_the_catalogs(catroot: Path, signer: Signer) -> None:
    folder = next(catroot.iterdir())
    assert osslsigncode_in_catalog(W64, folder / "Package_1.cat", signer.ca)
    assert osslsigncode_in_catalog(CLI64, folder / "Package_2.cat", signer.ca)
    assert not osslsigncode_in_catalog(T64, folder / "Package_1.cat", signer.ca)


def test_a_catalog_signed_file_is_valid_when_the_root_is_trusted(catroot: Path, signer: Signer) -> None:
    trust = build_trust(signer.ca)
    signatures = _signatures(catroot, trust)
    for path in (W64, CLI64):  # SHA-256 and SHA-1 members
        facts = compute_facts(str(path), path.read_bytes(), signatures)
        assert (facts.signature_status, facts.signature_type) == ("Valid", "Catalog"), path.name
        assert facts.signer == "etwsensor catalog signer" and facts.signer_type == "Unknown"
    stats = signatures.catalogs.stats() if signatures.catalogs else {}
    assert stats["catalogs"] == 2 and stats["members"] == 2 and stats["invalid"] == 0


def test_an_intact_catalog_under_an_untrusted_root_is_unknown(catroot: Path) -> None:
    facts = compute_facts(str(W64), W64.read_bytes(), _signatures(catroot, build_trust()))
    assert (facts.signature_status, facts.signature_type) == ("Unknown", "Catalog")
    assert facts.signer == "etwsensor catalog signer"


def test_a_file_in_no_catalog_stays_unsigned(catroot: Path, signer: Signer) -> None:
    facts = compute_facts(str(T64), T64.read_bytes(), _signatures(catroot, build_trust(signer.ca)))
    assert (facts.signature_status, facts.signature_type, facts.signer) == ("Unsigned", "", "")


def test_a_changed_file_is_no_longer_in_its_catalog(catroot: Path, signer: Signer) -> None:
    data = bytearray(W64.read_bytes())
    data[0x400] ^= 0x01  # code: covered by the Authenticode hash
    facts = compute_facts("w64.exe", bytes(data), _signatures(catroot, build_trust(signer.ca)))
    assert facts.signature_status == "Unsigned"


def test_a_tampered_catalog_is_left_out(tmp_path: Path, signer: Signer) -> None:
    good = make_catalog([W64], tmp_path / "good" / "a.cat", signer)
    data = bytearray(good.read_bytes())
    where = data.find(authentihash(W64))  # a member's hash: covered by the catalog's signature
    assert where > 0
    data[where] ^= 0xFF
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "a.cat").write_bytes(bytes(data))
    (bad_dir / "junk.cat").write_bytes(b"\x30\x03\x02\x01")  # not a catalog at all
    assert not osslsigncode_in_catalog(W64, bad_dir / "a.cat", signer.ca)
    trust = build_trust(signer.ca)
    index = CatalogIndex([bad_dir], trust)
    facts = compute_facts(str(W64), W64.read_bytes(), Signatures(trust, index))
    assert facts.signature_status == "Unsigned"
    assert index.stats() | {"build_seconds": 0} == {
        "folders": [str(bad_dir)], "built": True, "catalogs": 0, "members": 0, "invalid": 1, "damaged": 1,
        "build_seconds": 0,
    }  # fmt: skip


def test_the_index_is_read_once_on_first_use(
    catroot: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import etwsensor.enrich.catalogs as catalogs

    reads: list[str] = []
    real = catalogs.read_catalog

    def counted(name: str, data: bytes, trust: TrustStore) -> object:
        reads.append(name)
        return real(name, data, trust)

    monkeypatch.setattr(catalogs, "read_catalog", counted)
    trust = build_trust(signer.ca)
    index = CatalogIndex([catroot], trust)
    assert reads == [] and index.stats()["built"] is False  # nothing read before a file asks
    for _ in range(3):
        compute_facts(str(W64), W64.read_bytes(), Signatures(trust, index))
    assert sorted(reads) == ["Package_1.cat", "Package_2.cat"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=4000), flip=st.integers(min_value=0, max_value=4000))
def test_damaged_catalogs_are_errors_never_crashes(catroot: Path, cut: int, flip: int) -> None:
    data = bytearray((next(catroot.iterdir()) / "Package_1.cat").read_bytes())
    data[flip % len(data)] ^= 0x5A
    data = data[: max(1, len(data) - cut)]
    try:
        catalog = read_catalog("x.cat", bytes(data), TrustStore())
    except CatalogError:
        return
    assert catalog.signer is None or not catalog.signer.trusted


def test_trusted_roots_file_errors(tmp_path: Path) -> None:
    from etwsensor.enrich.trust import TrustError

    (tmp_path / "empty.pem").write_text("no certificate here\n")
    for bad in (tmp_path / "missing.pem", tmp_path / "empty.pem"):
        with pytest.raises(TrustError):
            read_trusted_roots(bad)


def test_a_catalog_naming_a_signed_file_comes_first(tmp_path: Path, signer: Signer) -> None:
    # signed both ways, as many Windows files are: Get-AuthenticodeSignature reports the catalog
    import subprocess

    signed = tmp_path / "t64-signed.exe"
    subprocess.run(["osslsigncode", "sign", "-certs", str(signer.chain), "-key", str(signer.key),
                    "-h", "sha256", "-in", str(T64), "-out", str(signed)],
                   check=True, capture_output=True)  # fmt: skip
    make_catalog([signed], tmp_path / "CatRoot" / "{GUID}" / "t64.cat", signer)
    data = signed.read_bytes()
    trusted = build_trust(signer.ca)
    both = compute_facts("t64.exe", data, _signatures(tmp_path / "CatRoot", trusted))
    assert (both.signature_status, both.signature_type) == ("Valid", "Catalog")
    alone = compute_facts("t64.exe", data, Signatures(trusted))
    assert (alone.signature_status, alone.signature_type) == ("Valid", "Embedded")
    # an untrusted catalog does not hide the embedded signature
    untrusted = compute_facts("t64.exe", data, _signatures(tmp_path / "CatRoot", build_trust()))
    assert (untrusted.signature_status, untrusted.signature_type) == ("Unknown", "Embedded")
