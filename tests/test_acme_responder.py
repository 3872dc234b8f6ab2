"""Port 80 in letsencrypt mode (cablab_cluster/bundle/acme_responder.py): the challenge, the redirect, refusals."""

from __future__ import annotations

import http.client
import os
import threading
from pathlib import Path

import pytest

from cablab_cluster.bundle import acme_responder as responder

PUBLIC = "https://hub.example.org"
TOKEN = "Ab-0_9zZ" * 5


@pytest.fixture(scope="module")
def webroot(tmp_path_factory) -> Path:
    tmp_path = tmp_path_factory.mktemp("acme")
    challenges = tmp_path / "webroot" / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True)
    (challenges / TOKEN).write_text(f"{TOKEN}.thumbprint")
    (tmp_path / "secret.txt").write_text("not for the world")
    (challenges / "link").symlink_to(tmp_path / "secret.txt")
    return tmp_path / "webroot"


@pytest.fixture(scope="module")
def server(webroot: Path):
    srv = responder.make_server(str(webroot), PUBLIC, 0, host="127.0.0.1")
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def ask(server, method: str, target: str, host: str = "hub.example.org") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host)
    conn.endheaders()
    response = conn.getresponse()
    response.body = response.read()  # type: ignore[attr-defined]
    conn.close()
    return response


def test_the_challenge_is_served(server):
    got = ask(server, "GET", f"/.well-known/acme-challenge/{TOKEN}")
    assert (got.status, got.body) == (200, f"{TOKEN}.thumbprint".encode())
    assert got.getheader("Content-Type") == "text/plain"


def test_head_has_no_body(server):
    got = ask(server, "HEAD", f"/.well-known/acme-challenge/{TOKEN}")
    assert got.status == 200 and got.body == b""


def test_an_unknown_token_is_404(server):
    assert ask(server, "GET", "/.well-known/acme-challenge/nosuchtoken").status == 404


@pytest.mark.parametrize("target", [
    "/.well-known/acme-challenge/../../secret.txt",
    "/.well-known/acme-challenge/..%2f..%2fsecret.txt",
    "/.well-known/acme-challenge/%2e%2e/%2e%2e/secret.txt",
    "/.well-known/acme-challenge/./" + TOKEN,
    "/.well-known/acme-challenge/" + TOKEN + "/",
    "/.well-known/acme-challenge/" + TOKEN + ".txt",
    "/.well-known/acme-challenge/",
    "/.well-known/acme-challenge/link",  # a symlink out of the webroot is not followed
    "/.well-known/acme-challenge/a%00b",
    "/.well-known/acme-challenge/" + "a" * 300,
])
def test_anything_but_a_token_under_the_challenge_path_is_refused(server, target):
    got = ask(server, "GET", target)
    assert got.status == 404 and b"not for the world" not in got.body


def test_a_challenge_is_only_read(server):
    assert ask(server, "POST", f"/.well-known/acme-challenge/{TOKEN}").status == 404


@pytest.mark.parametrize(("target", "location"), [
    ("/", f"{PUBLIC}/"),
    ("/hub/login?next=%2Fhub%2F", f"{PUBLIC}/hub/login?next=%2Fhub%2F"),
    ("//evil.example/x", f"{PUBLIC}/evil.example/x"),  # never a scheme-relative Location
    ("http://evil.example/y?z=1", f"{PUBLIC}/y?z=1"),  # absolute form: the path only
    ("/.well-known/other", f"{PUBLIC}/.well-known/other"),
])
def test_everything_else_is_redirected_to_https_on_the_public_host(server, target, location):
    got = ask(server, "GET", target, host="evil.example")  # the Host header is never used
    assert got.status == 301
    assert got.getheader("Location") == location


def test_other_methods_are_redirected_too(server):
    got = ask(server, "POST", "/hub/api")
    assert (got.status, got.getheader("Location")) == (301, f"{PUBLIC}/hub/api")


def test_challenge_file_builds_paths_from_tokens_only(tmp_path):
    assert responder.challenge_file(str(tmp_path), f"/.well-known/acme-challenge/{TOKEN}") == \
        os.path.join(str(tmp_path), ".well-known", "acme-challenge", TOKEN)
    for bad in ("/.well-known/acme-challenge/a/b", "/.well-known/acme-challenge/..", "/x/" + TOKEN,
                "/.well-known/acme-challenge/a b", "/.well-known/acme-challenge/é"):
        assert responder.challenge_file(str(tmp_path), bad) is None


def test_oversized_or_special_files_are_not_served(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * (responder.MAX_BODY + 1))
    assert responder.read_challenge(str(big)) is None
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert responder.read_challenge(str(fifo)) is None
    assert responder.read_challenge(str(tmp_path)) is None


def test_main_wants_an_https_public_url(capsys):
    with pytest.raises(SystemExit) as exc:
        responder.main(["--webroot", "/tmp", "--public-url", "http://hub.example.org"])
    assert exc.value.code == 2
