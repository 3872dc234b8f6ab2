"""The secrets store: generated once and kept, never trusted blindly, one render at a time; TLS."""

import datetime as dt
import ipaddress
import os
import stat
import threading

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from cablab_cluster.cli import cli
from cablab_cluster.secretstore import check_secrets, ensure_secrets, read_lab_password, secrets_dir
from cablab_cluster.spec import SpecError, load_spec


def mode(p):
    return stat.S_IMODE(p.stat().st_mode)


def test_generated_once_kept_across_renders_0600(write_spec):
    spec = load_spec(write_spec())
    first = {a.name: a.action for a in ensure_secrets(spec)}
    assert first == {"cookie_secret": "generated", "proxy_token": "generated", "metrics_token": "generated",
                     "github_client_secret": "copied", "tls.crt": "generated",
                     "tls.key": "generated", "lab_password": "generated"}
    d = secrets_dir(spec)
    assert mode(d) == 0o700
    assert {p.name: mode(p) for p in d.iterdir()} == {n: 0o600 for n in first}
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    assert len(bytes.fromhex(before["cookie_secret"].decode().strip())) == 32
    again = {a.name: a.action for a in ensure_secrets(spec)}
    assert set(again.values()) == {"kept"}
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    # What the checks, the drills and the bench log in with: the stored line, without its newline.
    assert read_lab_password(d) == before["lab_password"].decode().strip() and "\n" not in read_lab_password(d)
    assert len(read_lab_password(d)) >= 16


def test_self_signed_cert_names_the_hub_and_is_renewed_when_the_name_changes(write_spec):
    spec = load_spec(write_spec())
    ensure_secrets(spec)
    cert = x509.load_pem_x509_certificate((secrets_dir(spec) / "tls.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["192.168.56.11"]
    assert san.get_values_for_type(x509.DNSName) == ["node1"]
    assert cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value == "192.168.56.11"

    spec2 = load_spec(write_spec(lambda d: d["hub"].update(public_host="hub.lab.test")))
    actions = {a.name: a.action for a in ensure_secrets(spec2)}
    assert actions["tls.crt"] == "generated" and actions["cookie_secret"] == "kept"
    cert = x509.load_pem_x509_certificate((secrets_dir(spec2) / "tls.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["hub.lab.test", "node1"]


def test_github_secret_follows_its_file(write_spec, spec_dir):
    spec = load_spec(write_spec())
    ensure_secrets(spec)
    (spec_dir / "github-client-secret.lab").write_text("rotated\n")
    actions = {a.name: a.action for a in ensure_secrets(spec)}
    assert actions["github_client_secret"] == "copied"
    assert (secrets_dir(spec) / "github_client_secret").read_text() == "rotated\n"


# -- what is found in the store is checked, not trusted ---------------------


def refused(spec) -> str:
    with pytest.raises(SpecError) as exc:
        ensure_secrets(spec)
    assert check_secrets(spec), "validate must refuse it too"
    return str(exc.value)


@pytest.fixture
def store(write_spec):
    spec = load_spec(write_spec())
    ensure_secrets(spec)
    return spec, secrets_dir(spec)


def test_a_loose_directory_is_refused_with_its_planted_secret(store):
    spec, d = store
    d.chmod(0o777)
    (d / "cookie_secret").write_text("ab" * 32 + "\n")  # planted: a forged login cookie key
    assert f"{d}: has mode 0777; others could plant or read secrets" in refused(spec)


@pytest.mark.parametrize("name", ["cookie_secret", "tls.key", "github_client_secret"])
def test_a_loose_or_foreign_file_is_refused(store, name):
    spec, d = store
    (d / name).chmod(0o644)
    assert f"{d / name}: has mode 0644, not 0600" in refused(spec)
    (d / name).chmod(0o600)
    os.chown(d / name, 12345, 12345)
    assert f"{d / name}: belongs to uid 12345, not to uid {os.geteuid()}" in refused(spec)


def test_a_foreign_directory_is_refused(store):
    spec, d = store
    os.chown(d, 12345, 12345)
    assert f"{d}: belongs to uid 12345" in refused(spec)


def test_a_symlinked_secret_is_refused(store, tmp_path):
    spec, d = store
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    (d / "proxy_token").unlink()
    (d / "proxy_token").symlink_to(victim)
    assert f"{d / 'proxy_token'}: is a symlink" in refused(spec)
    assert victim.read_text() == "precious\n"


def test_a_planted_temp_symlink_is_not_followed(store, tmp_path):
    spec, d = store
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (d / "proxy_token").unlink()
    (d / ".proxy_token.tmp").symlink_to(victim)
    assert {a.name: a.action for a in ensure_secrets(spec)}["proxy_token"] == "generated"
    assert victim.read_text() == "precious\n"
    assert not (d / "proxy_token").is_symlink()


@pytest.mark.parametrize("name, content, message", [
    ("cookie_secret", "a\n", "is not 64 hex digits"),
    ("cookie_secret", "zz" * 32 + "\n", "is not 64 hex digits"),
    ("proxy_token", "short\n", "is shorter than 32 characters"),
    ("metrics_token", "short\n", "is shorter than 32 characters"),
    ("lab_password", "pw\n", "is shorter than 16 characters"),
], ids=["cookie-1-byte", "cookie-not-hex", "proxy-token-short", "metrics-token-short", "lab-password-short"])
def test_a_weak_kept_secret_is_refused(store, name, content, message):
    spec, d = store
    (d / name).write_text(content)
    assert f"{d / name}: {message}" in refused(spec)


def test_an_empty_secret_is_regenerated(store):
    spec, d = store
    (d / "cookie_secret").write_text("")
    assert {a.name: a.action for a in ensure_secrets(spec)}["cookie_secret"] == "generated"
    assert len(bytes.fromhex((d / "cookie_secret").read_text())) == 32


def test_the_lock_is_beside_the_store_not_in_it(store):
    spec, d = store
    assert (d.parent / ".lab-ubuntu.lock").is_file() and mode(d.parent / ".lab-ubuntu.lock") == 0o600
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["cookie_secret", "proxy_token", "metrics_token", "github_client_secret", "tls.crt", "tls.key", "lab_password"])


def test_two_renders_at_once_agree(write_spec):
    spec = load_spec(write_spec())
    d = secrets_dir(spec)
    for _ in range(20):
        errors: list[BaseException] = []

        def run():
            try:
                ensure_secrets(spec)
            except BaseException as exc:  # noqa: BLE001 — collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(bytes.fromhex((d / "cookie_secret").read_text())) == 32
        assert not [p.name for p in d.iterdir() if p.name.startswith(".")], "temp files left"
        for p in d.iterdir():
            p.unlink()


# -- TLS ---------------------------------------------------------------------

NOW = dt.datetime.now(dt.timezone.utc)


def pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_cert(*names: str, key=None, start=NOW - dt.timedelta(days=1), days=90, ca=False) -> tuple[bytes, bytes]:
    """A self-issued certificate for `names` (DNS names or IPs), and its key, as PEM."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, names[0])])
    san = []
    for n in names:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            san.append(x509.DNSName(n))
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(key, algorithm))
    return cert.public_bytes(serialization.Encoding.PEM), pem_key(key)


def provided(spec_dir, write_spec, cert: bytes, key: bytes, host: str = "hub.example.org"):
    (spec_dir / "hub.crt").write_bytes(cert)
    (spec_dir / "hub.key").write_bytes(key)
    return write_spec(lambda d: d["hub"].update(public_host=host,
                                               tls={"mode": "provided", "cert": "hub.crt", "key": "hub.key"}))


@pytest.mark.parametrize("make, host, expected", [
    (lambda: make_cert("hub.example.org", start=NOW - dt.timedelta(days=100), days=90), "hub.example.org",
     "hub.tls.cert: the certificate expired on"),
    (lambda: make_cert("hub.example.org", start=NOW + dt.timedelta(days=2)), "hub.example.org",
     "hub.tls.cert: the certificate is not valid before"),
    (lambda: make_cert("other.example.org", "*.example.com"), "hub.example.org",
     "hub.tls.cert: the certificate is for *.example.com, other.example.org, not for hub.public_host hub.example.org"),
    (lambda: make_cert("*.example.org"), "a.b.example.org", "not for hub.public_host a.b.example.org"),
    (lambda: make_cert("192.168.56.11"), "hub.example.org", "not for hub.public_host hub.example.org"),
    (lambda: make_cert("hub.example.org"), "192.168.56.11", "not for hub.public_host 192.168.56.11"),
    (lambda: make_cert("hub.example.org", key=rsa.generate_private_key(65537, 1024)), "hub.example.org",
     "hub.tls.key: the key is an RSA key of 1024 bits (at least 2048)"),
    (lambda: (make_cert("hub.example.org")[0], pem_key(ec.generate_private_key(ec.SECP256R1()))),
     "hub.example.org", "hub.tls.key: the key does not belong to the first certificate"),
    (lambda: (make_cert("hub.example.org", key=ed25519.Ed25519PrivateKey.generate())[0],
              pem_key(ed25519.Ed25519PrivateKey.generate())),
     "hub.example.org", "hub.tls.key: the key does not belong to the first certificate"),
], ids=["expired", "not-yet-valid", "other-name", "wildcard-one-label", "ip-for-dns", "dns-for-ip", "rsa-1024",
        "mismatched-key", "mismatched-ed25519"])
def test_a_bad_provided_certificate_is_exit_2_naming_the_key(make, host, expected, spec_dir, write_spec, tmp_path):
    spec = provided(spec_dir, write_spec, *make(), host=host)
    for args in (("validate", spec), ("render", spec, "--out", tmp_path / "out")):
        r = CliRunner().invoke(cli, [str(a) for a in args])
        assert r.exit_code == 2, r.output
        assert expected in r.output, r.output
    assert not (tmp_path / "out").exists() and not (spec_dir / "secrets").exists()


@pytest.mark.parametrize("make, host", [
    (lambda: make_cert("hub.example.org", key=ed25519.Ed25519PrivateKey.generate()), "hub.example.org"),
    (lambda: make_cert("hub.example.org", key=rsa.generate_private_key(65537, 2048)), "hub.example.org"),
    (lambda: make_cert("*.example.org"), "hub.example.org"),
    (lambda: make_cert("192.168.56.11"), "192.168.56.11"),
], ids=["ed25519", "rsa-2048", "wildcard", "ip"])
def test_a_good_provided_certificate_is_copied(make, host, spec_dir, write_spec, tmp_path):
    cert, key = make()
    spec = provided(spec_dir, write_spec, cert, key, host=host)
    r = CliRunner().invoke(cli, ["render", str(spec), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert (spec_dir / "secrets" / "lab-ubuntu" / "tls.key").read_bytes() == key


def test_self_signed_is_a_short_lived_server_leaf(store):
    spec, d = store
    cert = x509.load_pem_x509_certificate((d / "tls.crt").read_bytes())
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(days=397)


@pytest.mark.parametrize("replace", [
    lambda d: (d / "tls.key").write_bytes(pem_key(ec.generate_private_key(ec.SECP256R1()))),
    lambda d: [(d / n).write_bytes(b) for n, b in
               zip(("tls.crt", "tls.key"), make_cert("192.168.56.11", "node1", days=20))],
    lambda d: [(d / n).write_bytes(b) for n, b in
               zip(("tls.crt", "tls.key"), make_cert("192.168.56.11", "node1", days=800, ca=True))],
], ids=["key-mismatch", "expires-within-30-days", "old-ca-true"])
def test_self_signed_is_regenerated_when_it_no_longer_fits(store, replace):
    spec, d = store
    replace(d)
    actions = {a.name: a.action for a in ensure_secrets(spec)}
    assert actions["tls.crt"] == actions["tls.key"] == "generated"
    cert = x509.load_pem_x509_certificate((d / "tls.crt").read_bytes())
    key = serialization.load_pem_private_key((d / "tls.key").read_bytes(), None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        key.public_key().public_bytes(serialization.Encoding.DER, spki)
