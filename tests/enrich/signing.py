"""Test certificates and Windows catalog files made here: a test CA (openssl), a code-signing certificate
it issues, and .cat files built as makecat lays them out (a CTL of Authenticode hashes in an unsigned
PKCS#7, asn1crypto) then signed by osslsigncode, which also checks them ("File is signed in catalog")."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import lief
import pytest
from asn1crypto import cms, core, x509

from etwsensor.enrich.catalogs import (
    CTL_OID,
    CatalogAttribute,
    CertificateTrustList,
    SpcIndirectDataContent,
    TrustedSubject,
)

_PE_IMAGE_DATA = "1.3.6.1.4.1.311.2.1.15"
_INDIRECT_DATA = "1.3.6.1.4.1.311.2.1.4"
_CATALOG_LIST = "1.3.6.1.4.1.311.12.1.1"
_CATALOG_MEMBER = "1.3.6.1.4.1.311.12.1.2"
# SpcPeImageData { flags BIT STRING '', file [0] { [2] { [0] "" } } }: what osslsigncode insists on finding
_PE_IMAGE_VALUE = bytes.fromhex("3009030100a004a2028000")


def need_tools() -> None:
    if not (shutil.which("osslsigncode") and shutil.which("openssl")):
        pytest.skip("osslsigncode/openssl not installed (.ci/run installs them)")


@dataclass(frozen=True)
class Signer:
    ca: Path  # the test CA's certificate (PEM): the root to trust
    cert: Path  # the code-signing certificate the CA issued
    key: Path
    chain: Path  # cert + CA, as a signature carries them


def _run(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True)


def make_signer(folder: Path, name: str = "etwsensor catalog signer") -> Signer:
    """A test CA and a code-signing certificate it issued, under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
         "-out", str(ca), "-days", "30", "-subj", "/O=etwsensor tests/CN=etwsensor test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign")  # fmt: skip
    key, csr, cert = folder / "signer.key", folder / "signer.csr", folder / "signer.pem"
    _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
         "-subj", f"/O=etwsensor tests/CN={name}")  # fmt: skip
    ext = folder / "ext.cnf"
    ext.write_text("extendedKeyUsage=codeSigning\n")
    _run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
         "-out", str(cert), "-days", "30", "-extfile", str(ext))  # fmt: skip
    chain = folder / "chain.pem"
    chain.write_bytes(cert.read_bytes() + ca.read_bytes())
    return Signer(ca=ca, cert=cert, key=key, chain=chain)


def authentihash(path: Path, algorithm: str = "sha256") -> bytes:
    binary = lief.PE.parse(str(path))
    assert binary is not None
    algo = lief.PE.ALGORITHMS.SHA_256 if algorithm == "sha256" else lief.PE.ALGORITHMS.SHA_1
    return bytes(binary.authentihash(algo))


def make_catalog(files: list[Path], out: Path, signer: Signer, algorithm: str = "sha256") -> Path:
    """A catalog of ``files`` (their Authenticode ``algorithm`` hashes), signed by ``signer``."""
    return make_catalog_of([authentihash(path, algorithm) for path in files], out, signer, algorithm)


def make_catalog_of(digests: list[bytes], out: Path, signer: Signer, algorithm: str = "sha256") -> Path:
    """A catalog whose members are ``digests`` (Authenticode hashes), signed by ``signer``."""
    members = []
    for digest in digests:
        indirect = SpcIndirectDataContent({
            "data": {"type": _PE_IMAGE_DATA, "value": core.Any.load(_PE_IMAGE_VALUE)},
            "message_digest": {"digest_algorithm": {"algorithm": algorithm}, "digest": digest},
        })  # fmt: skip
        attribute = CatalogAttribute({"type": _INDIRECT_DATA, "values": [core.Any.load(indirect.dump())]})
        members.append(TrustedSubject({"subject_identifier": digest.hex().upper().encode("utf-16-le"),
                                       "subject_attributes": [attribute]}))  # fmt: skip
    ctl = CertificateTrustList({
        "subject_usage": [_CATALOG_LIST],
        "list_identifier": out.stem.encode().ljust(16, b"\0")[:16],
        "ctl_this_update": x509.Time({"utc_time": datetime(2026, 1, 1, tzinfo=UTC)}),
        "subject_algorithm": {"algorithm": _CATALOG_MEMBER},
        "trusted_subjects": members,
    })  # fmt: skip

    class _Content(core.Sequence):  # PKCS#7 ContentInfo with the CTL as [0] EXPLICIT content
        _fields: ClassVar[list[Any]] = [
            ("content_type", core.ObjectIdentifier),
            ("content", CertificateTrustList, {"explicit": 0}),
        ]

    encap = cms.ContentInfo.load(_Content({"content_type": CTL_OID, "content": ctl}).dump())
    signed_data = cms.SignedData(
        {"version": "v1", "digest_algorithms": [], "encap_content_info": encap, "signer_infos": []}
    )
    unsigned = cms.ContentInfo({"content_type": "signed_data", "content": signed_data})
    out.parent.mkdir(parents=True, exist_ok=True)
    draft = out.with_suffix(".unsigned")
    draft.write_bytes(unsigned.dump())
    out.unlink(missing_ok=True)
    _run("osslsigncode", "sign", "-certs", str(signer.chain), "-key", str(signer.key), "-h", algorithm,
         "-in", str(draft), "-out", str(out))  # fmt: skip
    draft.unlink()
    return out


def osslsigncode_in_catalog(path: Path, catalog: Path, ca: Path) -> bool:
    """osslsigncode's own verdict: ``path`` is signed in ``catalog`` by a chain to ``ca``."""
    args = ["osslsigncode", "verify", "-CAfile", str(ca), "-in", str(path), "-catalog", str(catalog)]
    r = subprocess.run(args, capture_output=True, text=True)
    return r.returncode == 0 and "File is signed in catalog" in r.stdout
