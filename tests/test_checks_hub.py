"""The checks' hub client against a local HTTPS server: the hub host's address, the public
name as SNI and Host header, the spec's self-signed certificate, cookies, xsrf, a dropped
keep-alive connection."""

from __future__ import annotations

import json
import ssl
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cablab_cluster.checks.hub import HubSession, StreamRefused, event_stream_messages, failure_message, spawn_outcome
from cablab_cluster.checks.tls import hub_tls_context
from cablab_cluster.secretstore import self_signed
from cablab_cluster.spec import TLSMode, load_spec

PUBLIC = "hub.cablab.test"
XSRF = "xsrf-token-1"


class FakeHub(BaseHTTPRequestHandler):
    """JupyterHub's login form and REST API as far as the checks use them (JupyterHub >= 4.1: API calls
    authenticated by cookie need X-XSRFToken)."""

    protocol_version = "HTTP/1.1"  # keep-alive, as configurable-http-proxy

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.serve()

    def do_POST(self) -> None:
        self.serve()

    def serve(self) -> None:
        hub = self.server  # type: ignore[assignment]
        self.on_connection = getattr(self, "on_connection", 0) + 1
        if hub.drop_second and self.on_connection == 2:
            self.close_connection = True  # an idle connection the proxy closes: no response at all
            return
        hub.seen.append({"path": self.path, "host": self.headers["Host"], "cookie": self.headers["Cookie"],
                         "xsrf": self.headers["X-XSRFToken"]})
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        cookies = dict(c.strip().split("=", 1) for c in (self.headers["Cookie"] or "").split(";") if "=" in c)
        if self.path == "/hub/login" and self.command == "GET":
            return self.reply(200, b"<form>", [f"_xsrf={XSRF}; Path=/hub/; Secure"])
        if self.path == "/hub/login":
            form = dict(urllib.parse.parse_qsl(body.decode()))
            if form.get("_xsrf") != cookies.get("_xsrf") or form.get("password") != "right":
                return self.reply(403, b"login refused")
            return self.reply(302, b"", ["jupyterhub-hub-login=s3ss; Path=/hub/; Secure; HttpOnly"],
                              {"Location": "/hub/home"})
        if self.path.endswith("/server/progress"):
            return self.progress()
        if self.path.startswith("/hub/api/"):
            if "jupyterhub-hub-login" not in cookies or self.headers["X-XSRFToken"] != cookies.get("_xsrf"):
                return self.reply(403, b'{"status": 403, "message": "Forbidden"}')
            sent = json.loads(body) if body else None
            return self.reply(200, json.dumps({"method": self.command, "path": self.path, "json": sent}).encode())
        self.reply(404, b"not found")

    def progress(self) -> None:
        """JupyterHub's spawn progress for alice: an event, a keep-alive, then (once the test opens
        `hub.gate`, else a complaint after 5 s) the ready event, and the stream ends. Anyone else is not starting: 400."""
        if "/users/alice/" not in self.path:
            return self.reply(400, b'{"status": 400, "message": "bob is not starting..."}')
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self.wfile.write(b'data: {"progress": 50, "message": "Server requested"}\n\n\n\n: a comment\n\n')
        self.wfile.flush()
        if not self.server.gate.wait(5):  # a client that waits for the end before reading sees this
            self.wfile.write(b'data: {"progress": 99, "message": "the client never read the first event"}\n\n')
        self.wfile.write(b'data: {"progress": 100, "ready": true, "url": "/user/alice/"}\n\n')
        self.wfile.flush()

    def reply(self, status: int, body: bytes, cookies: list[str] = (), headers: dict[str, str] = {}) -> None:
        self.send_response(status)
        for cookie in cookies:
            self.send_header("Set-Cookie", cookie)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def cluster_tls(write_spec, tmp_path: Path):
    """The lab spec with a DNS public name, and its self-signed certificate in a secrets directory."""
    loaded = load_spec(write_spec(lambda d: d["hub"].update(public_host=PUBLIC)))
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    cert, key = self_signed(loaded)
    (secrets / "tls.crt").write_bytes(cert)
    (secrets / "tls.key").write_bytes(key)
    return loaded.cluster, secrets


@pytest.fixture
def hub(cluster_tls):
    """A fake hub on 127.0.0.1 serving the spec's certificate; `.sni` lists the names clients asked for."""
    _, secrets = cluster_tls
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(secrets / "tls.crt", secrets / "tls.key")
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    server.daemon_threads = True
    server.seen, server.sni, server.drop_second = [], [], False
    server.gate = threading.Event()
    ctx.sni_callback = lambda sock, name, _ctx: server.sni.append(name)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def session(hub, cluster_tls):
    cluster, secrets = cluster_tls
    with HubSession("127.0.0.1", hub.server_address[1], PUBLIC, hub_tls_context(cluster, secrets)) as s:
        yield s


def test_address_with_the_public_name_as_sni_and_host_header(session, hub):
    response = session.request("GET", "/hub/login")
    assert (response.status, response.status_code, response.text) == (200, 200, "<form>")
    assert hub.sni == [PUBLIC]
    assert hub.seen[0]["host"] == f"{PUBLIC}:{hub.server_address[1]}"
    assert str(response) == "HTTP 200: <form>"


def test_login_keeps_cookies_and_api_sends_the_xsrf_header(session, hub):
    response = session.login("alice", "right")
    assert response.status == 302 and response.headers["Location"] == "/hub/home"
    assert session.cookie("_xsrf") == XSRF and session.cookie("jupyterhub-hub-login") == "s3ss"
    response = session.api("POST", "/users/alice/server", {"node": "node2"})
    assert response.status == 200, str(response)
    assert response.json() == {"method": "POST", "path": "/hub/api/users/alice/server", "json": {"node": "node2"}}
    assert hub.seen[-1]["xsrf"] == XSRF


def test_api_without_login_is_refused_and_a_wrong_password_sets_no_cookie(session):
    assert session.api("GET", "/users/alice").status == 403
    assert session.login("alice", "wrong").status == 403
    assert session.cookie("jupyterhub-hub-login") is None


def test_a_dropped_keep_alive_connection_is_retried_once(session, hub):
    hub.drop_second = True  # the second request on every connection gets no response
    assert session.request("GET", "/hub/login").status == 200
    assert session.request("GET", "/hub/login").status == 200  # dropped, then sent again on a new connection
    assert len(hub.seen) == 2


def test_the_certificate_is_checked_against_the_public_name(hub, cluster_tls):
    cluster, secrets = cluster_tls
    with HubSession("127.0.0.1", hub.server_address[1], "elsewhere.test", hub_tls_context(cluster, secrets)) as s:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            s.request("GET", "/hub/login")


def test_environment_proxies_and_ca_bundles_are_ignored(session, monkeypatch, tmp_path):
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    fresh = HubSession(session.address, session.port, session.public_host, session.context)
    assert fresh.request("GET", "/hub/login").status == 200
    fresh.close()


def test_handshake_returns_the_version_and_the_served_certificate(session, cluster_tls):
    _, secrets = cluster_tls
    version, der = session.handshake()
    assert version in ("TLSv1.2", "TLSv1.3")
    assert der == x509.load_pem_x509_certificate((secrets / "tls.crt").read_bytes()).public_bytes(Encoding.DER)


def test_letsencrypt_against_a_test_acme_server_trusts_exactly_its_roots(hub, cluster_tls, monkeypatch, tmp_path):
    """$CABLAB_ACME_ROOTS (the lab's pebble root): the served chain is verified against it, name included."""
    cluster, secrets = cluster_tls
    tls = cluster.hub.tls.model_copy(update={"mode": TLSMode.LETSENCRYPT, "email": "ops@example.org",
                                             "acme_directory": "https://192.168.57.1:14000/dir"})
    le = cluster.model_copy(update={"hub": cluster.hub.model_copy(update={"tls": tls})})
    monkeypatch.setenv("CABLAB_ACME_ROOTS", str(secrets / "tls.crt"))  # the fake hub's issuer: itself
    with HubSession("127.0.0.1", hub.server_address[1], PUBLIC, hub_tls_context(le, secrets)) as s:
        assert s.request("GET", "/hub/login").status == 200
    other = tmp_path / "other-root.pem"
    other.write_bytes((Path(__file__).parent.parent / "lab" / "pebble" / "ca.pem").read_bytes())
    monkeypatch.setenv("CABLAB_ACME_ROOTS", str(other))
    with HubSession("127.0.0.1", hub.server_address[1], PUBLIC, hub_tls_context(le, secrets)) as s:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            s.request("GET", "/hub/login")
    monkeypatch.delenv("CABLAB_ACME_ROOTS")  # unset: no root to verify against (a staging CA is trusted nowhere)
    assert hub_tls_context(le, secrets).verify_mode == ssl.CERT_NONE


def test_events_arrive_one_by_one_while_the_stream_is_open(session, hub):
    events = session.events("/hub/api/users/alice/server/progress", {"Authorization": "token t"})
    first = next(events)  # before the hub has written the rest: the stream is read as it comes
    assert first == {"progress": 50, "message": "Server requested"}
    assert not hub.gate.is_set()
    hub.gate.set()
    assert list(events) == [{"progress": 100, "ready": True, "url": "/user/alice/"}]  # blank lines and comments skipped
    assert hub.sni == [PUBLIC] and hub.seen[-1]["host"] == f"{PUBLIC}:{hub.server_address[1]}"


def test_an_event_stream_refused_raises_with_the_answer(session):
    with pytest.raises(StreamRefused) as refused:
        list(session.events("/hub/api/users/bob/server/progress"))
    assert refused.value.response.status == 400
    assert "bob is not starting" in refused.value.response.text


def test_event_stream_messages_of_a_failed_spawn():
    text = ('data: {"progress": 50, "message": "pending"}\n\n'
            'data: {"progress": 100, "failed": true, "message": "Spawn failed: node node3 cannot take a new server"}\n\n'
            ': keepalive\n'
            'data: not json\n'
            'data: [1, 2]\n')
    events = event_stream_messages(text)
    assert [e["progress"] for e in events] == [50, 100]
    assert events[-1]["failed"] is True and "node3" in events[-1]["message"]
    assert failure_message(text) == "Spawn failed: node node3 cannot take a new server"
    assert failure_message('data: {"progress": 50, "message": "pending"}\n') == ""


def test_the_spawn_outcome_is_ready_from_the_stream_and_unknown_when_it_is_refused(session, hub):
    hub.gate.set()
    assert spawn_outcome(session, "alice") == ""
    assert spawn_outcome(session, "bob") is None  # 400: not starting; the caller polls
