import stat

from cryptography import x509

from cablab_cluster.secretstore import ensure_secrets, secrets_dir
from cablab_cluster.spec import load_spec


def mode(p):
    return stat.S_IMODE(p.stat().st_mode)


def test_generated_once_kept_across_renders_0600(write_spec):
    spec = load_spec(write_spec())
    first = {a.name: a.action for a in ensure_secrets(spec)}
    assert first == {"cookie_secret": "generated", "proxy_token": "generated", "github_client_secret": "copied", "tls.crt": "generated",
                     "tls.key": "generated", "lab_password": "generated"}
    d = secrets_dir(spec)
    assert mode(d) == 0o700
    assert {p.name: mode(p) for p in d.iterdir()} == {n: 0o600 for n in first}
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    assert len(bytes.fromhex(before["cookie_secret"].decode().strip())) == 32
    again = {a.name: a.action for a in ensure_secrets(spec)}
    assert set(again.values()) == {"kept"}
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


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
