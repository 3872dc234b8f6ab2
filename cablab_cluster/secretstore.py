"""The cluster's secrets, kept in one directory beside the spec.

`secrets/<cluster>/` holds every file the hub host needs in /etc/cablab/secrets:
generated once and kept across renders (cookie secret, self-signed TLS, lab
password) or copied from where the spec points (GitHub client secret, provided
TLS). Never rendered into scripts or images: the rendered output does not
depend on them, so it stays byte-identical.

What is found there is not trusted blindly: the directory must be 0700 and the
files 0600, owned by the user running cablab-cluster, and none may be a symlink
(else anyone who could write there could plant a cookie secret, or make us
overwrite another file). Files are written under random names and renamed into
place, and one render at a time holds `secrets/.<cluster>.lock`.

`check_secrets` makes every check without writing anything (`validate` calls
it); `ensure_secrets` makes them again under the lock, then writes.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import ipaddress
import os
import secrets as pysecrets
import stat
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import layout
from .layout import COOKIE_SECRET, GITHUB_CLIENT_SECRET, LAB_PASSWORD, METRICS_TOKEN, PROXY_TOKEN, TLS_CERT, TLS_KEY
from .spec import InputFileError, LoadedSpec, Problem, SpecError, TLSMode, excerpt, read_input

CERT_DAYS = 397  # the CA/Browser Forum's maximum for a leaf certificate
RENEW_DAYS = 30  # a self-signed certificate expiring sooner is regenerated
COOKIE_HEX = 64  # JupyterHub's cookie secret: 32 bytes, hex-encoded
MIN_TOKEN = 32  # characters of the proxy token
MIN_PASSWORD = 16  # characters of the lab password
MAX_SECRET_BYTES = 4096  # a GitHub client secret is 40 characters
MAX_PEM_BYTES = 1 << 20
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
STORED = layout.SECRET_FILES


@dataclass(frozen=True)
class SecretAction:
    name: str
    action: str  # generated | copied | kept | updated


def secrets_dir(spec: LoadedSpec) -> Path:
    return spec.base_dir / layout.SECRETS_SUBDIR / spec.cluster.name


def read_lab_password(directory: Path) -> str:
    """The lab password kept in a secrets directory (`secrets_dir`), for the tools that log in with it."""
    return (directory / LAB_PASSWORD).read_text(encoding="utf-8").strip()


def _lock_path(spec: LoadedSpec) -> Path:
    return secrets_dir(spec).parent / f".{spec.cluster.name}.lock"


# --------------------------------------------------------------------------
# What the store holds, checked


@dataclass
class _State:
    """Everything read for one render: the spec's input files and the store's files."""

    client_secret: Optional[bytes] = None
    cert: Optional[bytes] = None
    key: Optional[bytes] = None
    stored: dict[str, Optional[bytes]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def _owner_hint(path: Path) -> str:
    return (f"it must belong to uid {os.geteuid()} (the user running cablab-cluster) with no group/other "
            f"access: check nobody planted anything in it, then `chown` and `chmod go= {path}`, or delete it "
            "to have it regenerated")


def _dir_problems(path: Path, loose: int) -> list[Problem]:
    """A directory of the store: a real directory of ours, no `loose` mode bits."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return []
    if stat.S_ISLNK(st.st_mode):
        return [Problem(str(path), "is a symlink; the secrets directory must be a real directory",
                        "remove the symlink (cablab-cluster creates the directory)")]
    if not stat.S_ISDIR(st.st_mode):
        return [Problem(str(path), "is not a directory", "move it away (cablab-cluster creates the directory)")]
    if st.st_uid != os.geteuid():
        return [Problem(str(path), f"belongs to uid {st.st_uid}, not to uid {os.geteuid()}", _owner_hint(path))]
    if st.st_mode & loose:
        return [Problem(str(path), f"has mode {stat.S_IMODE(st.st_mode):04o}; others could plant or read secrets",
                        _owner_hint(path))]
    return []


def _stored(path: Path) -> tuple[Optional[bytes], list[Problem]]:
    """A file of the store: None if absent; a regular 0600 file of ours, never followed if a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, []
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, [Problem(str(path), "is a symlink; secrets are never read or written through one",
                                  "delete the symlink (the secret is regenerated or copied again)")]
        return None, [Problem(str(path), f"cannot be read: {exc.strerror}", _owner_hint(path))]
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, [Problem(str(path), "is not a regular file", "delete it")]
        if st.st_uid != os.geteuid():
            return None, [Problem(str(path), f"belongs to uid {st.st_uid}, not to uid {os.geteuid()}",
                                  _owner_hint(path))]
        if st.st_mode & 0o077:
            return None, [Problem(str(path), f"has mode {stat.S_IMODE(st.st_mode):04o}, not 0600",
                                  _owner_hint(path))]
        return fh.read(MAX_PEM_BYTES + 1), []


def _content_problem(path: Path, data: bytes) -> Optional[Problem]:
    """Kept secrets must still be good secrets (an empty file is regenerated)."""
    text = data.strip()
    name = path.name
    if name == COOKIE_SECRET:
        try:
            ok = len(text) == COOKIE_HEX and len(bytes.fromhex(text.decode("ascii"))) == COOKIE_HEX // 2
        except ValueError:
            ok = False
        if not ok:
            return Problem(str(path), f"is not {COOKIE_HEX} hex digits (JupyterHub's cookie secret is 32 bytes)",
                           "delete it to have a new one generated (users log in again)")
    elif name in (PROXY_TOKEN, METRICS_TOKEN) and len(text) < MIN_TOKEN:
        return Problem(str(path), f"is shorter than {MIN_TOKEN} characters",
                       "delete it to have a new one generated")
    elif name == LAB_PASSWORD and len(text) < MIN_PASSWORD:
        return Problem(str(path), f"is shorter than {MIN_PASSWORD} characters",
                       "delete it to have a new one generated")
    return None


def _source(spec: LoadedSpec, key: str, path: Path, limit: int, what: str,
            problems: list[Problem]) -> Optional[bytes]:
    """A file the spec points to, read with a size bound; a problem under `key` if it cannot be."""
    try:
        data = read_input(spec.resolve(path), limit, what)
    except InputFileError as exc:
        problems.append(Problem(key, str(exc), f"give the path of a readable {what}"))
        return None
    if not data.strip():
        problems.append(Problem(key, f"{spec.resolve(path)} is empty", f"put the {what} in it"))
        return None
    return data


def _inspect(spec: LoadedSpec) -> _State:
    """Read and check everything a render uses. Writes nothing."""
    c = spec.cluster
    s = _State()
    s.client_secret = _source(spec, "hub.auth.github.client_secret_file", c.hub.auth.github.client_secret_file,
                              MAX_SECRET_BYTES, "client secret", s.problems)
    tls = c.hub.tls
    if tls.mode is TLSMode.PROVIDED:
        assert tls.cert is not None and tls.key is not None
        s.cert = _source(spec, "hub.tls.cert", tls.cert, MAX_PEM_BYTES, "PEM certificate chain", s.problems)
        s.key = _source(spec, "hub.tls.key", tls.key, MAX_PEM_BYTES, "PEM private key", s.problems)
        if s.cert is not None and s.key is not None:
            s.problems += provided_problems(spec, s.cert, s.key)
    d = secrets_dir(spec)
    s.problems += _dir_problems(d.parent, 0o022) + _dir_problems(d, 0o077)
    if s.problems:
        return s
    lock = _lock_path(spec)
    if os.path.lexists(lock):
        s.problems += _stored(lock)[1]
    for name in STORED:
        data, problems = _stored(d / name)
        s.problems += problems
        if data:
            problem = _content_problem(d / name, data)
            s.problems += [problem] if problem else []
        s.stored[name] = data
    return s


def check_secrets(spec: LoadedSpec) -> list[Problem]:
    """Every check `ensure_secrets` makes (input files, provided TLS, the store), writing nothing."""
    return _inspect(spec).problems


# --------------------------------------------------------------------------
# Certificates


def _spki(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _weak(key: object) -> Optional[str]:
    """Why a public key is too weak for the hub's TLS, or None."""
    if isinstance(key, rsa.RSAPublicKey):
        return None if key.key_size >= MIN_RSA_BITS else f"an RSA key of {key.key_size} bits (at least {MIN_RSA_BITS})"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return None if key.curve.key_size >= MIN_EC_BITS else \
            f"an EC key on {key.curve.name} ({key.curve.key_size} bits, at least {MIN_EC_BITS})"
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return None
    return f"a {type(key).__name__.removeprefix('_')} key (use RSA, EC or Ed25519)"


def _san(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return (sorted(n.lower() for n in san.get_values_for_type(x509.DNSName)),
            sorted(str(i) for i in san.get_values_for_type(x509.IPAddress)))


def _names_host(cert: x509.Certificate, host: str) -> bool:
    """Whether the certificate's subjectAltName covers `host` (a DNS name, one-label wildcard, or IP)."""
    dns, ips = _san(cert)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        host = host.lower()
        return any(n == host or (n.startswith("*.") and "." in host and host.split(".", 1)[1] == n[2:])
                   for n in dns)
    return any(ipaddress.ip_address(i) == ip for i in ips)


def provided_problems(spec: LoadedSpec, cert_pem: bytes, key_pem: bytes) -> list[Problem]:
    """A provided certificate: valid now, for hub.public_host, a strong key, and the key that goes with it."""
    host = spec.cluster.hub.public_host
    try:
        leaf = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError:
        return [Problem("hub.tls.cert", f"{spec.cluster.hub.tls.cert} holds no PEM certificate",
                        "give the PEM full chain")]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return [Problem("hub.tls.key", f"{spec.cluster.hub.tls.key} holds no unencrypted PEM private key",
                        "give the PEM private key without a passphrase")]
    out = []
    now = dt.datetime.now(dt.timezone.utc)
    if leaf.not_valid_before_utc > now:
        out.append(Problem("hub.tls.cert", f"the certificate is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
                           "give a certificate valid now (or check this machine's clock)"))
    if leaf.not_valid_after_utc <= now:
        out.append(Problem("hub.tls.cert", f"the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d} UTC",
                           "renew it, or use `tls.mode: letsencrypt`"))
    if not _names_host(leaf, host):
        dns, ips = _san(leaf)
        names = excerpt(", ".join(dns + ips), 120) or "no name (no subjectAltName)"
        out.append(Problem("hub.tls.cert", f"the certificate is for {names}, not for hub.public_host {host}",
                           f"give a certificate whose subjectAltName includes {host}"))
    weak = _weak(leaf.public_key())
    if weak:
        out.append(Problem("hub.tls.cert", f"the certificate has {weak}", "give a certificate for a stronger key"))
    weak = _weak(key.public_key())  # type: ignore[attr-defined]
    if weak:
        out.append(Problem("hub.tls.key", f"the key is {weak}", "use an RSA key of 2048+ bits, EC P-256+ or Ed25519"))
    elif _spki(leaf.public_key()) != _spki(key.public_key()):  # type: ignore[attr-defined]
        out.append(Problem("hub.tls.key", "the key does not belong to the first certificate of hub.tls.cert",
                           "give the key the certificate was issued for"))
    return out


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
    """A self-signed server (leaf) certificate: CA:FALSE, serverAuth, at most CERT_DAYS."""
    dns, ips = tls_names(spec)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spec.cluster.hub.public_host),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"cablab-cluster {spec.cluster.name}")])
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    san = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def _self_signed_ok(cert_pem: Optional[bytes], key_pem: Optional[bytes], spec: LoadedSpec) -> bool:
    """Keep a stored self-signed pair only if it is a leaf for today's names, matches, and is not expiring."""
    if not cert_pem or not key_pem:
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.ExtensionNotFound):
        return False
    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=RENEW_DAYS)
    return (not ca and _san(cert) == tls_names(spec) and cert.not_valid_after_utc > soon
            and _spki(cert.public_key()) == _spki(key.public_key()))  # type: ignore[attr-defined]


# --------------------------------------------------------------------------
# Writing


def _write(d: Path, name: str, data: bytes) -> None:
    """Write `d/name` atomically: a fresh random name (O_EXCL|O_NOFOLLOW, 0600), then rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, d / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _locked(spec: LoadedSpec) -> Iterator[None]:
    """One render at a time per secrets directory (flock on secrets/.<cluster>.lock)."""
    fd = os.open(_lock_path(spec), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _raise(spec: LoadedSpec, problems: list[Problem]) -> None:
    if problems:
        raise SpecError(problems, str(spec.path))


def ensure_secrets(spec: LoadedSpec) -> list[SecretAction]:
    """Create or refresh the secrets directory. Raises SpecError before writing anything."""
    _raise(spec, check_secrets(spec))
    c = spec.cluster
    d = secrets_dir(spec)
    d.parent.mkdir(mode=0o700, exist_ok=True)
    _raise(spec, _dir_problems(d.parent, 0o022))
    with _locked(spec):
        if not os.path.lexists(d):
            d.mkdir(mode=0o700)
        s = _inspect(spec)  # again under the lock: another render may have written meanwhile
        _raise(spec, s.problems)
        actions: list[SecretAction] = []

        def put(name: str, data: bytes, action: str) -> None:
            if s.stored[name] == data:
                actions.append(SecretAction(name, "kept"))
            else:
                _write(d, name, data)
                actions.append(SecretAction(name, action))

        def keep_or(name: str, make: Callable[[], bytes]) -> None:
            if s.stored[name]:
                actions.append(SecretAction(name, "kept"))
            else:
                _write(d, name, make())
                actions.append(SecretAction(name, "generated"))

        keep_or(COOKIE_SECRET, lambda: (pysecrets.token_hex(COOKIE_HEX // 2) + "\n").encode())
        keep_or(PROXY_TOKEN, lambda: (pysecrets.token_hex(32) + "\n").encode())
        keep_or(METRICS_TOKEN, lambda: (pysecrets.token_hex(32) + "\n").encode())  # Prometheus' /hub/metrics
        assert s.client_secret is not None
        put(GITHUB_CLIENT_SECRET, s.client_secret, "copied")

        tls = c.hub.tls
        if tls.mode is TLSMode.SELF_SIGNED:
            if _self_signed_ok(s.stored[TLS_CERT], s.stored[TLS_KEY], spec):
                actions += [SecretAction(TLS_CERT, "kept"), SecretAction(TLS_KEY, "kept")]
            else:
                cert_pem, key_pem = self_signed(spec)
                _write(d, TLS_KEY, key_pem)
                _write(d, TLS_CERT, cert_pem)
                actions += [SecretAction(TLS_CERT, "generated"), SecretAction(TLS_KEY, "generated")]
        elif tls.mode is TLSMode.PROVIDED:
            assert s.cert is not None and s.key is not None
            put(TLS_CERT, s.cert, "copied")
            put(TLS_KEY, s.key, "copied")

        if c.hub.auth.lab_password:
            keep_or(LAB_PASSWORD, lambda: (pysecrets.token_urlsafe(18) + "\n").encode())

    missing = [n for n in layout.secrets_operator_copies(c) if not (d / n).exists()]
    assert not missing, f"secret store incomplete: {missing}"
    return actions
