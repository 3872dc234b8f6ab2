"""letsencrypt mode end to end on this machine's loopback, without VMs: Debian's `pebble` ACME server
(names resolved by `pebble-challtestsrv`), certbot --webroot, and port 80's responder
(bundle/acme_responder.py) answering the HTTP-01 challenge from the webroot certbot writes to.
Then a forced renewal runs the deploy hook, which installs a certificate with a new serial.

Skipped when pebble, pebble-challtestsrv or certbot is missing (`apt-get install pebble certbot`).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cablab_cluster.bundle import acme_responder

TOOLS = ("pebble", "pebble-challtestsrv", "certbot")
pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                reason=f"needs {', '.join(TOOLS)} (apt-get install pebble certbot)")
NAME = "hub.cablab.test"
HOOK = """#!/bin/sh
set -eu
install -m 0600 "$RENEWED_LINEAGE/fullchain.pem" "{out}/tls.crt"
install -m 0600 "$RENEWED_LINEAGE/privkey.pem" "{out}/tls.key"
echo deployed >>"{out}/deploys"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pebble_listener_pki(d: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and the certificate of pebble's own HTTPS listener (127.0.0.1)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cablab test ACME listener CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = d / "ca.pem", d / "pebble.pem", d / "pebble.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{what} did not listen on {port} within 20 s")


@pytest.fixture
def acme(tmp_path):
    """pebble (ACME on https://127.0.0.1:<port>/dir) + a DNS server that answers 127.0.0.1 for every name +
    the responder on pebble's HTTP-01 port, serving `webroot`."""
    ca, cert, key = pebble_listener_pki(tmp_path)
    ports = {k: free_port() for k in ("acme", "mgmt", "http", "tls", "dns", "dnsmgmt")}
    config = {"pebble": {"listenAddress": f"127.0.0.1:{ports['acme']}",
                         "managementListenAddress": f"127.0.0.1:{ports['mgmt']}",
                         "certificate": str(cert), "privateKey": str(key),
                         "httpPort": ports["http"], "tlsPort": ports["tls"],
                         "ocspResponderURL": "", "externalAccountBindingRequired": False}}
    (tmp_path / "pebble.json").write_text(json.dumps(config))
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    procs = []
    webroot = tmp_path / "webroot"
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
    server = acme_responder.make_server(str(webroot), f"https://{NAME}", ports["http"], host="127.0.0.1")
    served: list[str] = []
    handler = server.RequestHandlerClass
    original = handler.log_message
    handler.log_message = lambda self, fmt, *args: served.append(fmt % args)  # type: ignore[method-assign]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dns = subprocess.Popen(["pebble-challtestsrv", "-dns01", f"127.0.0.1:{ports['dns']}", "-http01", "",
                                "-https01", "", "-tlsalpn01", "", "-defaultIPv6", "",
                                "-defaultIPv4", "127.0.0.1", "-management", f"127.0.0.1:{ports['dnsmgmt']}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(dns)
        wait_port(ports["dnsmgmt"], dns, "pebble-challtestsrv")
        pebble = subprocess.Popen(["pebble", "-config", str(tmp_path / "pebble.json"),
                                   "-dnsserver", f"127.0.0.1:{ports['dns']}"],
                                  env=env, stdout=(tmp_path / "pebble.log").open("wb"), stderr=subprocess.STDOUT)
        procs.append(pebble)
        wait_port(ports["acme"], pebble, "pebble")
        yield {"dir": f"https://127.0.0.1:{ports['acme']}/dir", "ca": ca, "webroot": webroot, "served": served,
               "roots": f"https://127.0.0.1:{ports['mgmt']}/roots/0", "tmp": tmp_path}
    finally:
        server.shutdown()
        server.server_close()
        handler.log_message = original  # type: ignore[method-assign]
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def certbot(acme: dict, *args: str) -> subprocess.CompletedProcess:
    d = acme["tmp"] / "le"
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(acme["ca"])}  # as the hub host's drop-in sets it
    return subprocess.run(["certbot", *args, "--config-dir", str(d / "config"), "--work-dir", str(d / "work"),
                           "--logs-dir", str(d / "logs"), "--non-interactive"],
                          check=False, env=env, capture_output=True, text=True, timeout=120)


def leaf(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def test_certbot_webroot_through_the_responder_then_a_forced_renewal_runs_the_deploy_hook(acme):
    out = acme["tmp"] / "secrets"
    out.mkdir()
    hooks = acme["tmp"] / "le" / "config" / "renewal-hooks" / "deploy"
    hooks.mkdir(parents=True)
    (hooks / "cablab-hub.sh").write_text(HOOK.format(out=out))
    (hooks / "cablab-hub.sh").chmod(0o755)

    # As the step letsencrypt_issue runs it (same flags), then its hook run by hand once.
    got = certbot(acme, "certonly", "--webroot", "--webroot-path", str(acme["webroot"]), "--agree-tos",
                  "--email", "ops@example.org", "--server", acme["dir"], "--cert-name", NAME, "-d", NAME)
    assert got.returncode == 0, got.stderr[-3000:]
    assert any("/.well-known/acme-challenge/" in line and " 200 " in line for line in acme["served"]), acme["served"]
    lineage = acme["tmp"] / "le" / "config" / "live" / NAME
    subprocess.run([hooks / "cablab-hub.sh"], env={**os.environ, "RENEWED_LINEAGE": str(lineage)}, check=True)
    first = leaf(out / "tls.crt")
    san = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [NAME]

    # Issued by pebble: the chain verifies against the root pebble publishes (and names the host).
    ctx = ssl.create_default_context(cafile=str(acme["ca"]))
    with urllib.request.urlopen(acme["roots"], context=ctx, timeout=10) as r:
        root = r.read()
    (acme["tmp"] / "root.pem").write_bytes(root)
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(acme["tmp"] / "root.pem"), "-untrusted",
                             str(out / "tls.crt"), str(out / "tls.crt")], check=False,
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # A forced renewal reuses the webroot settings certbot saved, and runs the deploy hook: a new serial.
    acme["served"].clear()
    # (no tty: certbot would first sleep up to 8 min, as it does under its timer)
    got = certbot(acme, "renew", "--force-renewal", "--no-random-sleep-on-renew", "--cert-name", NAME)
    assert got.returncode == 0, got.stderr[-3000:]
    assert (out / "deploys").read_text().count("deployed") == 2
    second = leaf(out / "tls.crt")
    assert second.serial_number != first.serial_number
    renewal = (acme["tmp"] / "le" / "config" / "renewal" / f"{NAME}.conf").read_text()
    assert "authenticator = webroot" in renewal and acme["dir"] in renewal
