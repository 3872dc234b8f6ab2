"""The hub from this machine, over HTTPS to the hub host's address as
`hub.public_host`: the login page, the certificate, TLS 1.2+ only, and the
GitHub OAuth redirect (not followed: GitHub may be unreachable)."""

from __future__ import annotations

import ipaddress
import ssl
import urllib.parse
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cablab_cluster.plan import STACK
from cablab_cluster.spec import TLSMode

pytestmark = pytest.mark.cluster

# Client-side refusals: this machine's OpenSSL would not even offer the protocol.
LOCAL_REFUSALS = {"NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE", "NO_SUITABLE_SIGNATURE_ALGORITHM"}


@pytest.fixture(scope="module")
def hub(hub_client):
    return hub_client()


def unverified(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that speaks exactly `version` and accepts any certificate (the version is under test)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is deprecated: that is the point
        ctx.minimum_version = version
        ctx.maximum_version = version
    try:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL 3 offer TLS 1.1 at all
    except ssl.SSLError:
        pass
    return ctx


def names_of(cert: x509.Certificate) -> tuple[set[str], set[ipaddress._BaseAddress]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)), set(san.get_values_for_type(x509.IPAddress))


def covers(cert: x509.Certificate, host: str) -> bool:
    dns, ips = names_of(cert)
    try:
        return ipaddress.ip_address(host) in ips
    except ValueError:
        parent = host.split(".", 1)[1] if "." in host else ""
        return host in dns or (bool(parent) and f"*.{parent}" in dns)


def test_login_page(hub):
    response = hub.request("GET", "/hub/login")
    assert response.status == 200, str(response)
    hsts = response.headers.get("strict-transport-security", "")
    assert hsts.startswith("max-age=") and int(hsts.split("=")[1].split(";")[0]) >= 31536000, \
        f"the hub's pages should tell browsers to use HTTPS only (HSTS), got {hsts!r}"


def test_plain_http_is_redirected_to_https(cluster, hub):
    """Port 80 answers with a redirect to the same path over HTTPS (the proxy's --redirect-port; in
    letsencrypt mode the acme service, which also answers the ACME challenge), unless off port 443."""
    if cluster.hub.port != 443:
        pytest.skip("the hub is not on 443: port 80 is not the hub's")
    import httpx

    with httpx.Client(trust_env=False, timeout=60) as plain:
        response = plain.get(f"http://{hub.address}:80/hub/login?next=%2Fhub%2F",
                             headers={"Host": cluster.hub.public_host})
    assert response.status_code in (301, 302, 307, 308), f"HTTP {response.status_code}: {response.text[:200]}"
    location = urllib.parse.urlsplit(response.headers["location"])
    public = urllib.parse.urlsplit(f"https://{hub.netloc}/")
    # configurable-http-proxy names the port even when it is the default (https://host:443/...);
    # the acme service (letsencrypt) redirects to the public URL, which does not
    assert (location.scheme, location.hostname, location.port or 443) == ("https", public.hostname, 443), location
    assert location.path == "/hub/login" and location.query == "next=%2Fhub%2F", location


def test_served_certificate(hub, cluster, secrets):
    _, der = hub.handshake()
    served = x509.load_der_x509_certificate(der)
    assert covers(served, cluster.hub.public_host), f"the hub's certificate does not name {cluster.hub.public_host}"
    if cluster.hub.tls.mode is not TLSMode.LETSENCRYPT:  # else certbot made it on the hub host
        want = x509.load_pem_x509_certificates((secrets / "tls.crt").read_bytes())[0]
        assert der == want.public_bytes(Encoding.DER), f"the hub serves another certificate than {secrets}/tls.crt"


def test_tls_1_1_is_refused(hub):
    try:
        version, _ = hub.handshake(unverified(ssl.TLSVersion.TLSv1_1))
    except ssl.SSLError as exc:
        if exc.reason in LOCAL_REFUSALS:
            pytest.skip(f"this machine's OpenSSL cannot offer TLS 1.1 ({exc.reason}): the check would prove nothing")
        return  # refused by the hub (protocol version alert)
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
        return  # refused by the hub (connection dropped)
    pytest.fail(f"the hub accepted a {version} handshake: only TLS 1.2 and newer may be served")


def test_tls_1_2_is_accepted(hub):
    version, _ = hub.handshake(unverified(ssl.TLSVersion.TLSv1_2))
    assert version == "TLSv1.2"


def test_oauth_login_redirects_to_github(hub, cluster):
    response = hub.request("GET", "/hub/oauth_login")
    assert response.status == 302, str(response)
    location = urllib.parse.urlsplit(response.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "github.com", "/login/oauth/authorize")
    query = urllib.parse.parse_qs(location.query)
    assert query.get("client_id") == [cluster.hub.auth.github.client_id]
    assert query.get("redirect_uri") == [cluster.hub.oauth_callback_url]


def test_hub_service_runs_on_the_hub_host(nodes, cluster):
    service = f"{STACK}_hub"
    manager = nodes[cluster.first_manager]
    image = manager.check_output("docker service inspect --format %s %s",
                                 "{{.Spec.TaskTemplate.ContainerSpec.Image}}", service)
    assert image.split("@")[0] == cluster.hub.images.hub.name
    tasks = manager.check_output("docker service ps --filter desired-state=running --format %s %s",
                                 "{{.Node}} {{.CurrentState}}", service).splitlines()
    assert len(tasks) == 1, f"{service} tasks meant to run: {tasks}"
    node, state = tasks[0].split(" ", 1)
    assert node == cluster.hub_host.name
    assert state.startswith("Running"), f"{service} on {node}: {state}"
