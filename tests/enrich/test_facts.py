"""Image facts of real PE files that registries ship, checked against independent tools: coreutils'
sha1sum/sha256sum/md5sum for the hashes, LIEF's own resource parser for the version strings (etwsensor
reads them with pefile), osslsigncode for signatures made and broken here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import lief
import pytest

from etwsensor.enrich import Signatures, compute_facts
from etwsensor.enrich.trust import build_trust

DATA = Path(__file__).resolve().parents[1] / "data" / "pe"
PE_FILES = sorted(DATA.glob("*.exe")) + sorted(DATA.glob("*.efi"))


def _sum(tool: str, path: Path) -> str:
    return subprocess.run([tool, str(path)], check=True, capture_output=True, text=True).stdout.split()[0]


def _lief_version(path: Path) -> dict[str, str]:
    binary = lief.PE.parse(str(path))
    assert binary is not None
    rm = binary.resources_manager
    if not getattr(rm, "has_version", False):
        return {}
    names = {"CompanyName": "CompanyName", "ProductName": "ProductName", "ProductVersion": "ProductVersion",
             "InternalName": "InternalFileName", "OriginalFilename": "OriginalFileName",
             "FileDescription": "FileDescription"}  # fmt: skip
    out: dict[str, str] = {}
    versions = rm.version  # every LIEF object kept referenced while its children are read
    first = versions[0]
    string_info = first.string_file_info
    tables = list(string_info.children)
    for table in tables:
        entries = list(table.entries)
        for entry in entries:
            if entry.key in names and entry.value:
                out.setdefault(names[entry.key], entry.value)
    return out


@pytest.mark.parametrize("path", PE_FILES, ids=lambda p: p.name)
def test_hashes_and_size_match_coreutils(path: Path) -> None:
    facts = compute_facts(str(path), path.read_bytes())
    assert facts.size == path.stat().st_size
    assert facts.sha1 == _sum("sha1sum", path)
    assert facts.sha256 == _sum("sha256sum", path)
    assert facts.md5 == _sum("md5sum", path)
    assert facts.error == ""


@pytest.mark.parametrize("path", PE_FILES, ids=lambda p: p.name)
def test_version_strings_match_lief(path: Path) -> None:
    facts = compute_facts(str(path), path.read_bytes())
    assert facts.version == _lief_version(path)


def test_distlib_launcher_version_resource() -> None:
    facts = compute_facts("C:\\x\\t64.exe", (DATA / "t64.exe").read_bytes())
    assert facts.version == {
        "CompanyName": "Simple Launcher User",
        "FileDescription": "Simple Launcher Executable",
        "InternalFileName": "t64.exe",
        "OriginalFileName": "t64.exe",
        "ProductName": "Simple Launcher",
        "ProductVersion": "1.1.0.14",
    }
    assert facts.signature_status == "Unsigned" and facts.signer == ""


def test_a_launcher_without_version_resource_has_none() -> None:
    facts = compute_facts("cli-64.exe", (DATA / "cli-64.exe").read_bytes())
    assert facts.version == {} and facts.error == "" and facts.signature_status == "Unsigned"


def test_microsoft_signed_shim_is_intact_but_its_uefi_root_is_not_a_windows_root() -> None:
    # The shim's chain ends at "Microsoft Corporation Third Party Marketplace Root", a UEFI firmware root
    # that is not in Microsoft's Trusted Root Program list: intact, but Windows would not call it valid.
    facts = compute_facts("shimx64.efi", (DATA / "shimx64.efi").read_bytes())
    assert facts.signature_status == "Unknown"
    assert facts.signature_type == "Embedded"
    assert facts.signer == "Microsoft Windows UEFI Driver Publisher"
    assert facts.signer_type == "Microsoft"


def test_a_changed_byte_breaks_the_shim_signature() -> None:
    data = bytearray((DATA / "shimx64.efi").read_bytes())
    data[0x1000] ^= 0xFF  # inside the first section: covered by the signed digest
    facts = compute_facts("shimx64.efi", bytes(data))
    assert facts.signature_status == "Invalid"


def test_not_a_pe_and_a_cut_pe_are_counted_not_raised() -> None:
    text = compute_facts("C:\\notes.txt", b"hello")
    assert text.error == "not_pe" and text.sha256 and text.version == {} and text.signature_status == ""
    cut = compute_facts("C:\\cut.exe", (DATA / "t64.exe").read_bytes()[:300])
    assert cut.error == "malformed_pe" and cut.size == 300 and cut.signature_status == "Unknown"


# --- signatures made here with osslsigncode, checked by it too ---------------------------------------


@pytest.fixture(scope="module")
def signed_launcher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not (shutil.which("osslsigncode") and shutil.which("openssl")):
        pytest.skip("osslsigncode/openssl not installed (.ci/run installs them)")
    d = tmp_path_factory.mktemp("sign")
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "30", "-subj", "/O=etwsensor tests/CN=etwsensor test signer",
                    "-addext", "extendedKeyUsage=codeSigning"], check=True, capture_output=True)  # fmt: skip
    out = d / "t64-signed.exe"
    sign = ["osslsigncode", "sign", "-certs", str(cert), "-key", str(key), "-h", "sha256",
            "-in", str(DATA / "t64.exe"), "-out", str(out)]  # fmt: skip
    subprocess.run(sign, check=True, capture_output=True)
    return out, cert


def _osslsigncode_ok(path: Path, cert: Path) -> bool:
    r = subprocess.run(["osslsigncode", "verify", "-CAfile", str(cert), "-in", str(path)],
                       capture_output=True, text=True)  # fmt: skip
    return r.returncode == 0


def test_a_signature_made_here_is_valid_as_osslsigncode_says(signed_launcher: tuple[Path, Path]) -> None:
    path, cert = signed_launcher
    facts = compute_facts(str(path), path.read_bytes(), Signatures(build_trust(cert)))
    assert _osslsigncode_ok(path, cert)  # with the self-signed certificate as its trusted root
    assert (facts.signature_status, facts.signature_type) == ("Valid", "Embedded")
    assert facts.signer == "etwsensor test signer" and facts.signer_type == "Unknown"
    assert facts.version["OriginalFileName"] == "t64.exe"


def test_a_self_signed_signature_is_intact_but_not_trusted(signed_launcher: tuple[Path, Path]) -> None:
    path, _ = signed_launcher
    r = subprocess.run(["osslsigncode", "verify", "-in", str(path)], capture_output=True, text=True)
    assert r.returncode != 0  # osslsigncode too: no trusted root, although the digest matches
    facts = compute_facts(str(path), path.read_bytes())  # the bundled Microsoft roots only
    assert (facts.signature_status, facts.signature_type) == ("Unknown", "Embedded")
    assert facts.signer == "etwsensor test signer"


def test_a_chain_through_the_test_ca_is_trusted_only_with_that_ca(tmp_path: Path) -> None:
    from tests.enrich.signing import make_signer, need_tools

    need_tools()
    signer = make_signer(tmp_path / "ca", name="etwsensor chained signer")
    out = tmp_path / "t64-chained.exe"
    subprocess.run(["osslsigncode", "sign", "-certs", str(signer.chain), "-key", str(signer.key),
                    "-h", "sha256", "-in", str(DATA / "t64.exe"), "-out", str(out)],
                   check=True, capture_output=True)  # fmt: skip
    assert _osslsigncode_ok(out, signer.ca)
    data = out.read_bytes()
    assert compute_facts("t64.exe", data, Signatures(build_trust(signer.ca))).signature_status == "Valid"
    other = make_signer(tmp_path / "other")  # a CA of the same name but another key: no chain
    assert compute_facts("t64.exe", data, Signatures(build_trust(other.ca))).signature_status == "Unknown"
    # a certificate given as a trusted root is an anchor itself, self-signed or not
    assert compute_facts("t64.exe", data, Signatures(build_trust(signer.cert))).signature_status == "Valid"


def test_a_tampered_signed_file_is_invalid_as_osslsigncode_says(
    signed_launcher: tuple[Path, Path], tmp_path: Path
) -> None:
    path, cert = signed_launcher
    data = bytearray(path.read_bytes())
    data[0x400] ^= 0x01  # first byte of .text
    bad = tmp_path / "tampered.exe"
    bad.write_bytes(bytes(data))
    assert not _osslsigncode_ok(bad, cert)
    assert compute_facts(str(bad), bytes(data)).signature_status == "Invalid"
