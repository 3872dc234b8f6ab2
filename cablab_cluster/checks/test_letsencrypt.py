"""`tls.mode: letsencrypt`: the certificate comes from the ACME server, port 80 answers the HTTP-01
challenge and redirects the rest, and a forced renewal rolls the proxy onto a new certificate while a
user's server keeps running and stays routed. Against a test ACME server (the lab's pebble) the
served chain is verified against its root ($CABLAB_ACME_ROOTS, saved by the lab harness).
The renewal check has a userlist user of its own (lab/userlist.lab: gina)."""

from __future__ import annotations

import secrets as random
import shlex
import time
import urllib.parse

import httpx
import pytest
from cryptography import x509

from cablab_cluster.layout import ACME_CA, ACME_WEBROOT, LETSENCRYPT_LIVE, STACK
from cablab_cluster.spec import LETSENCRYPT_PRODUCTION, TLSMode

from .spawner import service_name
from .test_notebook import user_token
from .test_user import UserServer
from .tls import ACME_ROOTS_ENV, acme_roots

pytestmark = pytest.mark.cluster
RENEWAL_USER = "gina"
ROLL_TIMEOUT = 600  # s: certbot + deploy + the proxy's new task, under emulation


@pytest.fixture(scope="module", autouse=True)
def letsencrypt(cluster):
    if cluster.hub.tls.mode is not TLSMode.LETSENCRYPT:
        pytest.skip(f"tls.mode is {cluster.hub.tls.mode.value}: no ACME here")


@pytest.fixture(scope="module")
def hub(hub_client):
    return hub_client()


def served(hub) -> x509.Certificate:
    """The certificate the proxy serves now (the handshake verifies it as the spec's trust says)."""
    return x509.load_der_x509_certificate(hub.handshake()[1])


def plain(cluster, path: str) -> httpx.Response:
    with httpx.Client(trust_env=False, timeout=60) as client:
        return client.get(f"http://{cluster.hub_host.address}:80{path}", headers={"Host": cluster.hub.public_host})


def test_the_served_certificate_is_issued_by_the_acme_server(hub, cluster):
    if cluster.hub.tls.acme_directory != LETSENCRYPT_PRODUCTION and acme_roots() is None:
        pytest.skip(f"a test ACME server's root is needed to verify the chain: set {ACME_ROOTS_ENV} "
                    "(the lab harness saves pebble's)")
    cert = served(hub)  # verified against the ACME server's root, name checked
    assert cert.issuer != cert.subject, "the proxy still serves the self-signed stand-in: see the provision log"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [cluster.hub.public_host]


def test_port_80_serves_the_challenge_and_only_tokens(cluster, nodes):
    token = "cablab-verify-" + random.token_urlsafe(8)
    file = ACME_WEBROOT / ".well-known" / "acme-challenge" / token
    host = nodes[cluster.hub_host]
    host.run_expect([0], "sh -c %s", f"printf %s {shlex.quote(token + '.key')} > {shlex.quote(str(file))}")
    try:
        got = plain(cluster, f"/.well-known/acme-challenge/{token}")
        assert (got.status_code, got.text) == (200, token + ".key"), got
        # Traversal never serves a file: the encoded form reaches the responder as it is (404); the
        # literal `..` form is folded by the HTTP client to /etc/hostname before sending, which the
        # responder redirects like any other path (the raw form is unit-tested in test_acme_responder).
        hostname = host.check_output("cat /etc/hostname")
        for bad, statuses in (("/.well-known/acme-challenge/../../../../etc/hostname", (301, 404)),
                              ("/.well-known/acme-challenge/%2e%2e%2f%2e%2e%2fetc%2fhostname", (404,))):
            answer = plain(cluster, bad)
            assert answer.status_code in statuses and hostname not in answer.text, (bad, answer)
    finally:
        host.run("rm -f %s", str(file))
    got = plain(cluster, "/hub/login?next=%2Fhub%2F")
    assert got.status_code == 301, got
    location = urllib.parse.urlsplit(got.headers["location"])
    assert (location.scheme, location.hostname, location.path, location.query) == \
        ("https", cluster.hub.public_host, "/hub/login", "next=%2Fhub%2F")


def test_a_forced_renewal_rolls_the_proxy_and_keeps_a_users_server_and_route(
        hub, hub_client, password, spec, cluster, nodes, wait_until, timings):
    if RENEWAL_USER not in {u.name for u in spec.userlist.users}:
        pytest.skip(f"{RENEWAL_USER} is not in the userlist: this check needs a user of its own")
    browser = hub_client().logged_in(RENEWAL_USER, password)
    server = UserServer(browser, RENEWAL_USER, wait_until)
    server.stop()
    server.start(cluster.notebook_hosts[-1].name)
    token = user_token(browser, RENEWAL_USER)
    status = f"/user/{RENEWAL_USER}/api/status"
    auth = {"Authorization": f"token {token}"}
    manager = nodes[cluster.first_manager]
    task = f"docker service ps -q --filter desired-state=running {service_name(RENEWAL_USER)}"
    try:
        assert browser.request("GET", status, headers=auth).status == 200
        task_before = manager.check_output(task)
        serial_before = served(hub).serial_number

        # What certbot's timer does, at once (no tty: without the flag certbot first sleeps up to 8 min).
        ca = f"REQUESTS_CA_BUNDLE={ACME_CA} " if spec.acme_ca else ""
        t0 = time.monotonic()
        renew = nodes[cluster.hub_host].run(
            f"env {ca}certbot renew --force-renewal --no-random-sleep-on-renew --cert-name %s",
            cluster.hub.public_host)
        assert renew.rc == 0, f"certbot renew: {renew.stderr[-2000:]}"
        live = LETSENCRYPT_LIVE / cluster.hub.public_host / "cert.pem"
        renewed = x509.load_pem_x509_certificate(nodes[cluster.hub_host].check_output("cat %s", str(live)).encode())
        assert renewed.serial_number != serial_before, "certbot renewed nothing"

        def rolled():
            try:
                return served(hub).serial_number == renewed.serial_number
            except OSError:  # the proxy's task is being replaced
                return False

        wait_until(rolled, ROLL_TIMEOUT, "the proxy to serve the renewed certificate", interval=2)
        timings["renewal: proxy serves the new certificate"] = round(time.monotonic() - t0, 1)

        def routed():
            return browser.request("GET", status, headers=auth).status == 200

        t1 = time.monotonic()
        wait_until(routed, 60, f"{RENEWAL_USER}'s route through the new proxy", interval=1)
        timings["renewal: user's route back after the roll"] = round(time.monotonic() - t1, 1)
        assert manager.check_output(task) == task_before, f"{RENEWAL_USER}'s server was restarted by the renewal"
        # The rolled-off secrets are pruned: one TLS certificate secret left, the one in use.
        secrets = manager.check_output("docker secret ls --filter %s --format %s",
                                       f"label=com.docker.stack.namespace={STACK}", "{{.Name}}").split()
        assert len([s for s in secrets if s.startswith(f"{STACK}_tls_crt_")]) == 1, secrets
    finally:
        server.stop()
