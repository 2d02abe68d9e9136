"""Catalog signatures: Windows signs most of its own files not inside the file but in a catalog.

A catalog (``Windows\\System32\\CatRoot\\{GUID}\\*.cat``) is a PKCS#7 SignedData whose content is a
Microsoft certificate trust list (CTL, OID 1.3.6.1.4.1.311.10.1): one member per file, tagged with the
file's Authenticode hash (SHA-1 or SHA-256) in hex and carrying it in an SpcIndirectDataContent
attribute. A file is catalog-signed when its Authenticode hash is a member of a catalog whose own
signature is intact.

``CatalogIndex`` reads every catalog of the given folders once, the first time it is asked (on the
image-facts worker, never on the pipeline thread), checks each catalog's signature (asn1crypto reads
the structure, ``cryptography`` checks the signer's signature, ``TrustStore`` the chain) and indexes
the member hashes. Damaged catalogs and catalogs whose signature does not verify are counted and left
out.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from asn1crypto import algos, cms, core, parser, x509

from etwsensor.enrich.trust import TrustStore, certificate

CTL_OID = "1.3.6.1.4.1.311.10.1"
_INDIRECT_DATA_OID = "1.3.6.1.4.1.311.2.1.4"
_MAX_CATALOG_SIZE = 64 * 1024 * 1024
_HASH_NAMES = {"sha1": "sha1", "sha256": "sha256", "sha384": "sha384", "sha512": "sha512"}


# --- the CTL structure (MS-CAESO), as asn1crypto definitions --------------------------------------------


class _AnySet(core.SetOf):  # type: ignore[misc]
    _child_spec = core.Any


class CatalogAttribute(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[list[Any]] = [("type", core.ObjectIdentifier), ("values", _AnySet)]


class CatalogAttributes(core.SetOf):  # type: ignore[misc]
    _child_spec = CatalogAttribute


class TrustedSubject(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[list[Any]] = [
        ("subject_identifier", core.OctetString),
        ("subject_attributes", CatalogAttributes, {"optional": True}),
    ]


class TrustedSubjects(core.SequenceOf):  # type: ignore[misc]
    _child_spec = TrustedSubject


class SubjectUsage(core.SequenceOf):  # type: ignore[misc]
    _child_spec = core.ObjectIdentifier


class CertificateTrustList(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[list[Any]] = [
        ("version", core.Integer, {"default": 0}),
        ("subject_usage", SubjectUsage),
        ("list_identifier", core.OctetString, {"optional": True}),
        ("sequence_number", core.Integer, {"optional": True}),
        ("ctl_this_update", x509.Time),
        ("ctl_next_update", x509.Time, {"optional": True}),
        ("subject_algorithm", algos.DigestAlgorithm),
        ("trusted_subjects", TrustedSubjects, {"optional": True}),
        ("ctl_extensions", x509.Extensions, {"explicit": 0, "optional": True}),
    ]


class SpcAttributeTypeAndOptionalValue(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[list[Any]] = [("type", core.ObjectIdentifier), ("value", core.Any, {"optional": True})]


class DigestInfo(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[list[Any]] = [("digest_algorithm", algos.DigestAlgorithm), ("digest", core.OctetString)]


class SpcIndirectDataContent(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[list[Any]] = [
        ("data", SpcAttributeTypeAndOptionalValue),
        ("message_digest", DigestInfo),
    ]


# --- one catalog -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CatalogSigner:
    """Who signed a catalog and whether the signature chains to a trusted root."""

    name: str  # the catalog's file name
    signer: str  # subject CN of the signing certificate
    organization: str
    trusted: bool


@dataclass(frozen=True, slots=True)
class Catalog:
    signer: CatalogSigner | None  # None: the catalog's own signature does not verify
    members: frozenset[bytes]  # Authenticode hashes (20 bytes SHA-1, 32 bytes SHA-256)


class CatalogError(ValueError):
    """Not a catalog, or one damaged past reading."""


def read_catalog(name: str, data: bytes, trust: TrustStore) -> Catalog:
    """The members and signer of a catalog file's bytes; CatalogError when it cannot be read."""
    try:
        info = cms.ContentInfo.load(data)
        if info["content_type"].native != "signed_data":
            raise CatalogError("not a PKCS#7 SignedData")
        signed = info["content"]
        encap = signed["encap_content_info"]
        if encap["content_type"].dotted != CTL_OID:
            raise CatalogError("not a certificate trust list")
        content = encap["content"]
        signed_bytes = bytes(content.contents)  # the CTL's value: what the signer's digest covers
        ctl = content.parse(CertificateTrustList)
        members = frozenset(_member_hashes(ctl))
        signer = _verify(name, signed, signed_bytes, trust)
    except CatalogError:
        raise
    except Exception as exc:  # asn1crypto raises ValueError/TypeError and more on damage
        raise CatalogError(f"damaged: {type(exc).__name__}") from exc
    return Catalog(signer=signer, members=members)


def _member_hashes(ctl: Any) -> Iterable[bytes]:
    """Each member's hash: its tag when the tag is the hash in hex (as Windows' own catalog database
    looks members up), else the digest of its SpcIndirectDataContent attribute (parsed only then:
    reading every attribute costs ten times more)."""
    subjects = ctl["trusted_subjects"]
    if isinstance(subjects, core.Void):
        return
    for subject in subjects:
        tag = _tag_hash(bytes(subject["subject_identifier"].native))
        if tag is not None:
            yield tag
            continue
        attributes = subject["subject_attributes"]
        if isinstance(attributes, core.Void):  # never .native: it would parse every value
            continue
        for attribute in attributes:
            if attribute["type"].dotted != _INDIRECT_DATA_OID:
                continue
            for value in attribute["values"]:
                digest = bytes(value.parse(SpcIndirectDataContent)["message_digest"]["digest"].native)
                if len(digest) in (20, 32):
                    yield digest


def _tag_hash(tag: bytes) -> bytes | None:
    """A member's tag: the hash in hex, UTF-16LE (what makecat writes), or the raw hash."""
    if len(tag) in (20, 32):
        return tag
    try:
        text = tag.decode("utf-16-le").rstrip("\0")
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw if len(raw) in (20, 32) else None


def _verify(name: str, signed: Any, signed_bytes: bytes, trust: TrustStore) -> CatalogSigner | None:
    """The signer when the one SignerInfo's digest matches the content and its signature verifies with
    the certificate it names; None otherwise."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    infos = signed["signer_infos"]
    if len(infos) != 1:
        return None
    info = infos[0]
    hash_name = _HASH_NAMES.get(info["digest_algorithm"]["algorithm"].native)
    if hash_name is None or isinstance(info["signed_attrs"], core.Void):
        return None
    digests = [a["values"][0].native for a in info["signed_attrs"] if a["type"].native == "message_digest"]
    if len(digests) != 1 or digests[0] != hashlib.new(hash_name, signed_bytes).digest():
        return None
    carried = signed["certificates"]
    certs = [] if isinstance(carried, core.Void) else [c.chosen for c in carried if c.name == "certificate"]
    sid = info["sid"]
    if sid.name != "issuer_and_serial_number":
        return None
    wanted = sid.chosen
    signer_asn1 = next((c for c in certs if c.serial_number == wanted["serial_number"].native
                        and c.issuer == wanted["issuer"]), None)  # fmt: skip
    if signer_asn1 is None:
        return None
    signer_cert = certificate(signer_asn1.dump())
    if signer_cert is None:
        return None
    attrs = parser.emit(0, 1, 17, info["signed_attrs"].contents)  # [0] IMPLICIT → SET OF, as signed
    algorithm = getattr(hashes, hash_name.upper())()
    key = signer_cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(bytes(info["signature"].native), attrs, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(bytes(info["signature"].native), attrs, ec.ECDSA(algorithm))
        else:
            return None
    except Exception:  # InvalidSignature, or a key/algorithm mismatch
        return None
    others = [c for c in (certificate(a.dump()) for a in certs) if c is not None]
    subject = signer_asn1.subject.native
    common_name = subject.get("common_name", signer_asn1.subject.human_friendly)
    organization = str(subject.get("organization_name", ""))
    return CatalogSigner(name=name, signer=str(common_name), organization=organization,
                         trusted=trust.chains(signer_cert, others))  # fmt: skip


# --- the index of a machine's catalogs ---------------------------------------------------------------------


class CatalogIndex:
    """Authenticode hash → signer of a valid catalog holding it, over every ``*.cat`` under ``folders``
    (``CatRoot\\{GUID}\\``). Built once, on the first lookup, by whichever thread asks (the facts
    worker)."""

    def __init__(self, folders: Iterable[Path], trust: TrustStore) -> None:
        self.folders = list(folders)
        self.trust = trust
        self._index: dict[bytes, CatalogSigner] | None = None
        self._lock = threading.Lock()
        # counters (read by the summary)
        self.catalogs = 0
        self.members = 0
        self.invalid = 0  # signature does not verify
        self.damaged = 0  # not readable as a catalog
        self.build_seconds = 0.0

    def lookup(self, digests: Iterable[bytes]) -> CatalogSigner | None:
        index = self._built()
        for digest in digests:
            found = index.get(digest)
            if found is not None:
                return found
        return None

    def empty(self) -> bool:
        return not self._built()

    def _built(self) -> dict[bytes, CatalogSigner]:
        if self._index is None:
            with self._lock:
                if self._index is None:
                    self._index = self._build()
        return self._index

    def _build(self) -> dict[bytes, CatalogSigner]:
        import time

        start = time.perf_counter()
        index: dict[bytes, CatalogSigner] = {}
        for path in self._catalog_files():
            try:
                if path.stat().st_size > _MAX_CATALOG_SIZE:
                    self.damaged += 1
                    continue
                catalog = read_catalog(path.name, path.read_bytes(), self.trust)
            except (OSError, CatalogError):
                self.damaged += 1
                continue
            if catalog.signer is None:
                self.invalid += 1
                continue
            self.catalogs += 1
            for digest in catalog.members:
                # a trusted catalog wins over an untrusted one naming the same file
                if digest not in index or (catalog.signer.trusted and not index[digest].trusted):
                    index[digest] = catalog.signer
        self.members = len(index)
        self.build_seconds = time.perf_counter() - start
        return index

    def _catalog_files(self) -> list[Path]:
        out: list[Path] = []
        for folder in self.folders:
            try:
                out += sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".cat" and p.is_file())
            except OSError:
                continue
        return out

    def stats(self) -> dict[str, object]:
        return {
            "folders": [str(f) for f in self.folders],
            "built": self._index is not None,
            "catalogs": self.catalogs,
            "members": self.members,
            "invalid": self.invalid,
            "damaged": self.damaged,
            "build_seconds": round(self.build_seconds, 3),
        }
