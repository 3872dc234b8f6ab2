"""The lab's ACME server: Debian's `pebble`, on this host, for a spec in `tls.mode: letsencrypt`.

pebble listens where the spec's `hub.tls.acme_directory` points (the libvirt network's host
address, which the VMs reach), validates HTTP-01 challenges on port 80 of the address that
`pebble-challtestsrv` (its DNS, on loopback) gives for every name: the hub host's. Its own HTTPS
listener uses the lab's test PKI in lab/pebble/ (the spec's `hub.tls.acme_ca_bundle` is its CA,
so certbot on the hub trusts it). pebble makes a new issuing root at every start and publishes
it at its management endpoint (`/roots/0`); `roots()` saves it for the checks.

Both daemons keep running across the harness's phases (a restart would change the root under a
certificate already issued); they are recorded like lab/host-setup.sh's daemons, so
lab/host-teardown.sh stops them. `python -m lab.pebble make-pki` remakes lab/pebble/ (test only:
its key is public, like pebble's own test certificates).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from cablab_cluster.spec import Cluster

PKI = Path(__file__).resolve().parent / "pebble"
STATE = Path("/run/cablab-host")
MANAGEMENT_PORT = 15000
DNS = "127.0.0.1:8053"  # pebble-challtestsrv: every A query answers the hub host's address
DNS_MANAGEMENT = "127.0.0.1:8055"
# Test PKI: the listener's names. The lab networks' host addresses (vagrant-libvirt gives the host .1).
LISTENER_IPS = ("127.0.0.1", "192.168.56.1", "192.168.57.1")


def comm(name: str) -> str:
    """The name /proc/<pid>/comm shows (15 characters), as lab/host-teardown.sh compares it."""
    return name[:15]


def _alive(pidfile: Path, name: str) -> bool:
    try:
        pid = int(pidfile.read_text().strip())
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return Path(f"/proc/{pid}/comm").read_text().strip() == comm(name) and state != "Z"
    except (OSError, ValueError, IndexError):
        return False


def _wait(address: str, what: str, seconds: float = 30) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} does not listen on {address} after {seconds:.0f} s")


def _start(name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
    pidfile = STATE / f"{name}.pid"
    if _alive(pidfile, name):
        return
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    pidfile.write_text(f"{proc.pid}\n")
    started = STATE / "started"
    entry = f"{comm(name)} {pidfile}"
    if entry not in (started.read_text().splitlines() if started.exists() else []):
        with started.open("a") as fh:
            fh.write(entry + "\n")


def listen_address(c: Cluster) -> str:
    """host:port of the spec's ACME directory: where pebble listens."""
    url = urlsplit(c.hub.tls.acme_directory)
    return f"{url.hostname}:{url.port or 443}"


def config(c: Cluster) -> dict:
    host = listen_address(c).rsplit(":", 1)[0]
    return {"pebble": {"listenAddress": listen_address(c), "managementListenAddress": f"{host}:{MANAGEMENT_PORT}",
                       "certificate": str(PKI / "listener.pem"), "privateKey": str(PKI / "listener.key"),
                       "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
                       "externalAccountBindingRequired": False}}


def ensure(c: Cluster, log=print) -> None:
    """pebble and its DNS running for cluster `c` (started unless they already run)."""
    STATE.mkdir(parents=True, exist_ok=True)
    conf = STATE / "pebble.json"
    conf.write_text(json.dumps(config(c), indent=2))
    _start("pebble-challtestsrv", ["pebble-challtestsrv", "-dns01", DNS, "-http01", "", "-https01", "",
                                   "-tlsalpn01", "", "-defaultIPv6", "", "-defaultIPv4", str(c.hub_host.address),
                                   "-management", DNS_MANAGEMENT],
           dict(os.environ), Path("/var/log/cablab-pebble-challtestsrv.log"))
    _wait(DNS_MANAGEMENT, "pebble-challtestsrv")
    # No random sleeps before validations, no random nonce rejections: the lab wants speed, not chaos.
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    _start("pebble", ["pebble", "-config", str(conf), "-dnsserver", DNS], env, Path("/var/log/cablab-pebble.log"))
    _wait(listen_address(c), "pebble")
    log(f"pebble: ACME at {c.hub.tls.acme_directory}, every name resolved to {c.hub_host.address}")


def roots_url(c: Cluster) -> str:
    return f"https://{listen_address(c).rsplit(':', 1)[0]}:{MANAGEMENT_PORT}/roots/0"


def roots(c: Cluster, dest: Path) -> Path:
    """Save the root pebble issues under now (the checks trust it for the hub's certificate)."""
    ctx = ssl.create_default_context(cafile=str(PKI / "ca.pem"))
    with urllib.request.urlopen(roots_url(c), context=ctx, timeout=30) as r:
        pem = r.read()
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(pem)
    return dest


def make_pki(d: Path = PKI, days: int = 3650) -> None:
    """The listener's test CA and certificate (CA:FALSE leaf for LISTENER_IPS and localhost)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cablab lab pebble listener CA (test only)")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    names = [x509.DNSName("localhost"), *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in LISTENER_IPS)]
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cablab lab pebble")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    d.mkdir(parents=True, exist_ok=True)
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "listener.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (d / "listener.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))


if __name__ == "__main__":
    if sys.argv[1:] != ["make-pki"]:
        sys.exit("usage: python -m lab.pebble make-pki")
    make_pki()
