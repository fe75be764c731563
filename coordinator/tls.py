"""The coordinator's own certificate authority and server certificate.

On first start the coordinator makes a CA (an EC P-256 key, ten years) and signs a server
certificate for every name and address it serves on. Agents never trust the CA blindly: their join
string carries its SHA-256 (the "pin"), checked before any secret is sent (shared/tlspin.py).
The server certificate is re-issued whenever the machine gains a name or address it does not cover
(a new Thunderbolt bridge address, a DHCP change) or it nears its end; the CA, and so the pin,
stays the same.

Everything here uses the `cryptography` package: no hand-rolled crypto, no openssl subprocess.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from coordinator.netnames import is_ip
from shared.paths import write_secret
from shared.tlspin import anchor_of, fingerprint

CA_YEARS = 10
SERVER_DAYS = 397        # the longest validity clients commonly accept for a server certificate
RENEW_BEFORE_DAYS = 30


@dataclass(frozen=True)
class ServerTLS:
    certfile: Path      # the server certificate followed by its chain (what uvicorn serves)
    keyfile: Path
    anchor_pem: bytes   # the certificate clients pin: our CA, or the root of the operator's chain
    pin: str            # SHA-256 of the anchor (hex)
    generated: bool     # made by us (else the operator's --tls-cert)


def tls_dir(home: Path) -> Path:
    return home / "tls"


def ensure_server_tls(home: Path, names: list[str], *, cert: Path | None = None,
                      key: Path | None = None) -> ServerTLS:
    """The certificate to serve: the operator's (`cert`/`key`) or our own, made or renewed here."""
    if (cert is None) != (key is None):
        raise ValueError("give both --tls-cert and --tls-key, or neither")
    if cert is not None:
        pem = _read(cert, "--tls-cert")
        _read(key, "--tls-key")
        anchor = anchor_of(pem)
        return ServerTLS(cert, key, anchor, fingerprint(anchor), generated=False)
    folder = tls_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca_cert, ca_key = _ensure_ca(folder)
    certfile, keyfile = folder / "server.pem", folder / "server.key"
    if _needs_new_server_cert(certfile, keyfile, ca_cert, names):
        _issue_server_cert(certfile, keyfile, ca_cert, ca_key, names)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    return ServerTLS(certfile, keyfile, ca_pem, fingerprint(ca_pem), generated=True)


def ca_pin(home: Path) -> str | None:
    """The pin of this leader's own CA, if it has made one (for the CLI on the leader)."""
    path = tls_dir(home) / "ca.pem"
    try:
        return fingerprint(path.read_bytes())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- internals


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {path}: {exc.strerror}") from None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_secret(path, pem.decode().strip())


def _ensure_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = folder / "ca.pem", folder / "ca.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Jupiter"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Jupiter coordinator CA")])
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365 * CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(key_path, key)  # the key first: a cert without its key would be reused wrongly
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _san_entries(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def _covered(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {n.lower() for n in san.get_values_for_type(x509.DNSName)} | \
        {str(a) for a in san.get_values_for_type(x509.IPAddress)}


def _needs_new_server_cert(certfile: Path, keyfile: Path, ca: x509.Certificate, names: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(certfile.read_bytes())
    except (OSError, ValueError):
        return True
    if not keyfile.exists() or cert.issuer != ca.subject:
        return True
    if cert.not_valid_after_utc - _now() < dt.timedelta(days=RENEW_BEFORE_DAYS):
        return True
    wanted = {str(ipaddress.ip_address(n)) if is_ip(n) else n.lower() for n in names}
    return not wanted <= _covered(cert)


def _issue_server_cert(certfile: Path, keyfile: Path, ca: x509.Certificate, ca_key, names: list[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    common = next((n for n in names if not is_ip(n) and n != "localhost"), names[0] if names else "jupiter")
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common[:64])]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName(_san_entries(names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_key(keyfile, key)
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    tmp = certfile.with_name(certfile.name + ".new")
    tmp.write_bytes(chain)
    tmp.replace(certfile)
