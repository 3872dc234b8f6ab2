"""The cluster's secrets, kept in one directory beside the spec.

`secrets/<cluster>/` holds every file the hub host needs in /etc/cablab/secrets:
generated once and kept across renders (cookie secret, self-signed TLS, lab
password) or copied from where the spec points (GitHub client secret, provided
TLS). Directory 0700, files 0600. Never rendered into scripts or images: the
rendered output does not depend on them, so it stays byte-identical.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets as pysecrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .plan import secret_names
from .spec import LoadedSpec, Problem, SpecError, TLSMode

CERT_DAYS = 825


@dataclass(frozen=True)
class SecretAction:
    name: str
    action: str  # generated | copied | kept | updated


def secrets_dir(spec: LoadedSpec) -> Path:
    return spec.base_dir / "secrets" / spec.cluster.name


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def tls_names(spec: LoadedSpec) -> tuple[list[str], list[str]]:
    """DNS names and IP addresses the hub's self-signed certificate must carry."""
    hub = spec.cluster.hub
    dns, ips = [], [str(spec.cluster.hub_host.address)]
    try:
        ips.insert(0, str(ipaddress.ip_address(hub.public_host)))
    except ValueError:
        dns.append(hub.public_host)
    dns.append(spec.cluster.hub_host.name)
    return sorted(set(dns)), sorted(set(ips))


def self_signed(spec: LoadedSpec) -> tuple[bytes, bytes]:
    dns, ips = tls_names(spec)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spec.cluster.hub.public_host),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"cablab-cluster {spec.cluster.name}")])
    now = dt.datetime.now(dt.timezone.utc)
    san = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def _cert_matches(cert_pem: bytes, spec: LoadedSpec) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    dns, ips = tls_names(spec)
    have_dns = sorted(san.get_values_for_type(x509.DNSName))
    have_ips = sorted(str(i) for i in san.get_values_for_type(x509.IPAddress))
    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)
    return have_dns == dns and have_ips == ips and cert.not_valid_after_utc > soon


def check_provided(spec: LoadedSpec) -> list[Problem]:
    """A provided certificate and key must parse and belong together."""
    tls = spec.cluster.hub.tls
    if tls.mode is not TLSMode.PROVIDED:
        return []
    assert tls.cert is not None and tls.key is not None
    try:
        certs = x509.load_pem_x509_certificates(spec.resolve(tls.cert).read_bytes())
    except ValueError:
        return [Problem("hub.tls.cert", f"{tls.cert} holds no PEM certificate", "give the PEM full chain")]
    try:
        key = serialization.load_pem_private_key(spec.resolve(tls.key).read_bytes(), password=None)
    except (ValueError, TypeError):
        return [Problem("hub.tls.key", f"{tls.key} holds no unencrypted PEM private key",
                        "give the PEM private key without a passphrase")]
    if certs[0].public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        return [Problem("hub.tls.key", "the key does not belong to the first certificate of hub.tls.cert",
                        "give the key the certificate was issued for")]
    return []


def ensure_secrets(spec: LoadedSpec) -> list[SecretAction]:
    """Create or refresh the secrets directory. Raises SpecError before writing anything."""
    problems = check_provided(spec)
    if problems:
        raise SpecError(problems, str(spec.path))
    c = spec.cluster
    d = secrets_dir(spec)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    actions: list[SecretAction] = []

    def put(name: str, data: bytes, action: str) -> None:
        path = d / name
        if path.exists() and path.read_bytes() == data:
            os.chmod(path, 0o600)
            actions.append(SecretAction(name, "kept"))
            return
        _write(path, data)
        actions.append(SecretAction(name, action))

    def keep_or(name: str, make) -> None:
        path = d / name
        if path.exists() and path.stat().st_size:
            os.chmod(path, 0o600)
            actions.append(SecretAction(name, "kept"))
        else:
            _write(path, make())
            actions.append(SecretAction(name, "generated"))

    keep_or("cookie_secret", lambda: (pysecrets.token_hex(32) + "\n").encode())
    keep_or("proxy_token", lambda: (pysecrets.token_hex(32) + "\n").encode())

    put("github_client_secret", spec.resolve(c.hub.auth.github.client_secret_file).read_bytes(), "copied")

    tls = c.hub.tls
    if tls.mode is TLSMode.SELF_SIGNED:
        crt = d / "tls.crt"
        if crt.exists() and (d / "tls.key").exists() and _cert_matches(crt.read_bytes(), spec):
            actions += [SecretAction("tls.crt", "kept"), SecretAction("tls.key", "kept")]
        else:
            cert_pem, key_pem = self_signed(spec)
            _write(d / "tls.key", key_pem)
            _write(crt, cert_pem)
            actions += [SecretAction("tls.crt", "generated"), SecretAction("tls.key", "generated")]
    elif tls.mode is TLSMode.PROVIDED:
        assert tls.cert is not None and tls.key is not None
        put("tls.crt", spec.resolve(tls.cert).read_bytes(), "copied")
        put("tls.key", spec.resolve(tls.key).read_bytes(), "copied")

    if c.hub.auth.lab_password:
        keep_or("lab_password", lambda: (pysecrets.token_urlsafe(18) + "\n").encode())

    missing = [n for n in secret_names(c) if not (d / n).exists()]
    assert not missing, f"secret store incomplete: {missing}"
    return actions
