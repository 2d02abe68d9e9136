"""Image facts: what Defender's rows say about a file besides its path.

``compute_facts(data)`` hashes the bytes (MD5, SHA1, SHA256), reads the PE version resource with
pefile and checks an embedded Authenticode signature with LIEF, its chain against trusted roots
(``trust``) and, for a file without one, whether a catalog signs it (``catalogs``). Bad input is a
result, never an exception: a file that is not a PE, or a PE whose headers or resources are damaged,
gets its hashes and size and an ``error`` naming what could not be read.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from etwsensor.enrich.catalogs import CatalogIndex
    from etwsensor.enrich.trust import TrustStore

# The version-resource keys (StringFileInfo) → the suffix of Defender's *VersionInfo* columns.
VERSION_KEYS: dict[str, str] = {
    "CompanyName": "CompanyName",
    "ProductName": "ProductName",
    "ProductVersion": "ProductVersion",
    "InternalName": "InternalFileName",
    "OriginalFilename": "OriginalFileName",
    "FileDescription": "FileDescription",
}
_MZ = b"MZ"
_SECURITY = 4  # IMAGE_DIRECTORY_ENTRY_SECURITY
_RESOURCE = 2  # IMAGE_DIRECTORY_ENTRY_RESOURCE

# Signature status and signer type, in Defender's words (InitiatingProcessSignatureStatus / SignerType).
# Unknown also stands for an intact signature whose chain ends at an untrusted root (WinVerifyTrust's
# CERT_E_UNTRUSTEDROOT, Get-AuthenticodeSignature's UnknownError).
VALID, INVALID, UNSIGNED, UNKNOWN = "Valid", "Invalid", "Unsigned", "Unknown"
# Where the signature was read (DeviceFileCertificateInfo's SignatureType).
EMBEDDED, CATALOG = "Embedded", "Catalog"

logging.getLogger("pefile").setLevel(logging.ERROR)


class ImageFacts(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The facts of one file at one moment. ``error`` is "" when everything could be read, else one of
    ``not_found``, ``unreadable``, ``too_large`` (size only), ``not_pe`` (hashes only) or
    ``malformed_pe`` (hashes, and what the damaged PE still gave)."""

    path: str  # as the rows name it (DOS form)
    size: int | None = None
    sha1: str = ""
    sha256: str = ""
    md5: str = ""
    version: dict[str, str] = msgspec.field(default_factory=dict)  # Defender column suffix → value
    signature_status: str = ""  # Valid / Invalid / Unsigned / Unknown; "" when not a PE
    signer: str = ""  # subject CN (or full subject) of the signing certificate
    signer_type: str = ""  # OsVendor / Microsoft / Unknown
    signature_type: str = ""  # Embedded / Catalog; "" when no signature was found
    error: str = ""


@dataclass(frozen=True)
class Signatures:
    """How signatures are judged: the roots a chain must reach and, where a machine's catalogs are
    known (``CatRoot``), the index of the files they sign."""

    trust: TrustStore
    catalogs: CatalogIndex | None = None


_default: Signatures | None = None
_default_lock = threading.Lock()


def default_signatures() -> Signatures:
    """Bundled Microsoft roots, no catalogs (loaded once, on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            from etwsensor.enrich.trust import build_trust

            _default = Signatures(build_trust())
        return _default


def hashes(data: bytes) -> tuple[str, str, str]:
    """(md5, sha1, sha256) in lowercase hex, as Defender writes them."""
    return hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest(), hashlib.sha256(data).hexdigest()


def compute_facts(path: str, data: bytes, signatures: Signatures | None = None) -> ImageFacts:
    """The facts of a file whose whole content is ``data``; ``signatures``: trusted roots and catalogs
    (default: the bundled Microsoft roots, no catalogs)."""
    md5, sha1, sha256 = hashes(data)
    base: dict[str, Any] = {"path": path, "size": len(data), "md5": md5, "sha1": sha1, "sha256": sha256}
    if not data.startswith(_MZ):
        return ImageFacts(**base, error="not_pe")
    version, signed, error = _pe_facts(data)
    judge = signatures or default_signatures()
    status, signer, signer_type, kind = UNSIGNED, "", "", ""
    if not error and judge.catalogs is not None:
        # A catalog naming the file comes first, as Get-AuthenticodeSignature reports it (many of Windows'
        # files are signed both ways); an untrusted catalog only when the file carries no signature.
        status, signer, signer_type = _catalog_signature(data, judge.catalogs)
        kind = CATALOG if signer else ""
        if signed and status != VALID:
            status, signer, signer_type, kind = UNSIGNED, "", "", ""
    if signed and not kind:
        status, signer, signer_type = _signature(data, judge.trust)
        kind = EMBEDDED if signer else ""
    if error and status == UNSIGNED:
        status = UNKNOWN  # headers we could not read may hide a signature
    return ImageFacts(**base, version=version, signature_status=status, signer=signer,
                      signer_type=signer_type, signature_type=kind, error=error)  # fmt: skip


def _pe_facts(data: bytes) -> tuple[dict[str, str], bool, str]:
    """(version strings, has an embedded signature, error) from pefile; pefile raises on damage we
    cannot read past, and anything it raises is counted as a malformed PE."""
    import pefile

    if not _looks_like_pe(data):
        return {}, False, "malformed_pe"
    try:
        # Never pe.close(): with data= there is nothing to close, and it runs a full gc.collect()
        # (hundreds of ms with the rules loaded, holding the GIL the pipeline thread needs). pefile
        # still does so itself when it rejects a file, hence the cheap check above.
        pe = pefile.PE(data=data, fast_load=True)
    except Exception:  # pefile.PEFormatError, and whatever a hostile header provokes
        return {}, False, "malformed_pe"
    dirs = pe.OPTIONAL_HEADER.DATA_DIRECTORY
    sec = dirs[_SECURITY] if len(dirs) > _SECURITY else None
    signed = bool(sec is not None and sec.Size and 0 < sec.VirtualAddress < len(data))
    try:
        pe.parse_data_directories(directories=[_RESOURCE])
        version = _version_strings(pe)
    except Exception:
        return {}, signed, "malformed_pe"
    return version, signed, ""


def _looks_like_pe(data: bytes) -> bool:
    """MZ, then e_lfanew pointing inside the file at "PE\\0\\0" and room for the file header."""
    if len(data) < 0x40:
        return False
    lfanew = int.from_bytes(data[0x3C:0x40], "little")
    return lfanew + 24 <= len(data) and data[lfanew : lfanew + 4] == b"PE\0\0"


def _version_strings(pe: Any) -> dict[str, str]:
    """The six version strings from the first StringTable that has any (pefile decodes them as UTF-8)."""
    out: dict[str, str] = {}
    for info in getattr(pe, "FileInfo", None) or []:
        for entry in info:
            if getattr(entry, "Key", b"") != b"StringFileInfo":
                continue
            for table in getattr(entry, "StringTable", []):
                for key, value in table.entries.items():
                    name = VERSION_KEYS.get(_text(key))
                    if name and name not in out:
                        text = _text(value).rstrip("\x00").strip()
                        if text:
                            out[name] = text
    return out


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _signature(data: bytes, trust: TrustStore) -> tuple[str, str, str]:
    """(status, signer, signer type) of the embedded Authenticode signature, checked by LIEF: the
    file digest against the signed one and the signer's signature over it; then the signer's chain
    against ``trust``: Valid only when it reaches a trusted root, Unknown when it does not."""
    try:
        import lief

        lief.logging.disable()
        binary = lief.PE.parse(io.BytesIO(data))
        if binary is None:
            return UNKNOWN, "", ""
        # Certificate lifetimes are not judged: Windows accepts a timestamped signature whose
        # certificate has since expired, and LIEF calls a certificate of this very second "future".
        flags = binary.verify_signature(lief.PE.Signature.VERIFICATION_CHECKS.SKIP_CERT_TIME)
        signer, org = _signer_name(binary)
        ok = flags == lief.PE.Signature.VERIFICATION_FLAGS.OK
        trusted = ok and _trusted(binary, trust)
    except Exception:
        return UNKNOWN, "", ""
    status = (VALID if trusted else UNKNOWN) if ok else INVALID
    return status, signer, _signer_type(signer, org) if signer else ""


def _trusted(binary: Any, trust: TrustStore) -> bool:
    """The first signature's signer chains to a trusted root through the certificates it carries."""
    from etwsensor.enrich.trust import certificate

    for sig in binary.signatures:
        carried = [c for c in (certificate(bytes(x.raw)) for x in sig.certificates) if c is not None]
        for info in sig.signers:
            leaf = certificate(bytes(info.cert.raw)) if info.cert is not None else None
            return leaf is not None and trust.chains(leaf, carried)
    return False


def _catalog_signature(data: bytes, catalogs: CatalogIndex) -> tuple[str, str, str]:
    """(status, signer, signer type) from the catalog that holds the file's Authenticode hash
    (SHA-1 and SHA-256 both asked), or Unsigned."""
    if catalogs.empty():
        return UNSIGNED, "", ""
    try:
        import lief

        lief.logging.disable()
        binary = lief.PE.parse(io.BytesIO(data))
        if binary is None:
            return UNSIGNED, "", ""
        algorithms = (lief.PE.ALGORITHMS.SHA_256, lief.PE.ALGORITHMS.SHA_1)
        digests = [bytes(binary.authentihash(a)) for a in algorithms]
    except Exception:
        return UNSIGNED, "", ""
    found = catalogs.lookup(digests)
    if found is None:
        return UNSIGNED, "", ""
    return (VALID if found.trusted else UNKNOWN), found.signer, _signer_type(found.signer, found.organization)


def _signer_name(binary: Any) -> tuple[str, str]:
    """(CN, O) of the first signer's certificate."""
    for sig in binary.signatures:
        for info in sig.signers:
            cert = info.cert
            if cert is None:
                continue
            parts = dict(_rdns(cert.subject))
            return parts.get("CN", cert.subject), parts.get("O", "")
    return "", ""


def _rdns(subject: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for part in subject.split(", "):
        key, sep, value = part.partition("=")
        if sep:
            out.append((key.strip(), value.strip()))
    return out


# The subjects (CN) of the certificates Microsoft signs Windows' own files with.
OS_VENDOR_SIGNERS = frozenset({"Microsoft Windows", "Microsoft Windows Publisher"})


def _signer_type(signer: str, org: str) -> str:
    """OsVendor for Windows' own signing certificates, Microsoft for Microsoft's others, else Unknown."""
    if org != "Microsoft Corporation":
        return "Unknown"
    return "OsVendor" if signer in OS_VENDOR_SIGNERS else "Microsoft"
