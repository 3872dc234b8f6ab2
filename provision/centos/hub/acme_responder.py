"""Port 80 of a hub in `tls.mode: letsencrypt`: the ACME HTTP-01 challenge, and a redirect to HTTPS.

    python3 acme_responder.py --webroot DIR --public-url https://hub.example.org [--port 8080]

GET/HEAD `/.well-known/acme-challenge/<token>` answers the file `<token>` of
`DIR/.well-known/acme-challenge/` (written there by `certbot certonly --webroot -w DIR`),
where the token is of the ACME token alphabet [A-Za-z0-9_-] only: no path is ever built
from anything else, so `..`, `/`, `%2e` and friends cannot leave the directory; a symlink
is not followed. Every other request gets a 301 to the same path and query under
`--public-url` (never the request's Host header: no open redirect).

Stdlib only: it runs in the hub image (`python3`) as its own swarm service with the webroot
bind-mounted read-only, as nobody, publishing port 80. Shipped as it is (never templated).
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import stat
import sys
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")  # RFC 8555 §8.1: base64url, no padding
MAX_BODY = 4096  # a key authorisation is the token, a dot and a 43-character thumbprint


def challenge_file(webroot: str, path: str) -> str | None:
    """The file that answers `path` if it is a challenge path with a well-formed token, else None."""
    if not path.startswith(CHALLENGE_PREFIX):
        return None
    token = path[len(CHALLENGE_PREFIX):]
    if not TOKEN.fullmatch(token):
        return None
    return os.path.join(webroot, ".well-known", "acme-challenge", token)


def read_challenge(file: str) -> bytes | None:
    """The content of a challenge file: a regular file, not a symlink, at most MAX_BODY bytes."""
    try:
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EACCES):
            return None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # no FIFO, device or directory
            return None
        data = os.read(fd, MAX_BODY + 1)
    finally:
        os.close(fd)
    return data if len(data) <= MAX_BODY else None


def redirect_location(public_url: str, request_target: str) -> str:
    """`public_url` + the request's path and query (an absolute-form target keeps only those)."""
    parts = urlsplit(request_target)
    path = parts.path if parts.path.startswith("/") else "/" + parts.path
    # `//evil.example/x` as a path would make a scheme-relative URL: collapse leading slashes.
    path = "/" + path.lstrip("/")
    return public_url.rstrip("/") + path + (f"?{parts.query}" if parts.query else "")


class Handler(BaseHTTPRequestHandler):
    server_version = "cablab-acme"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    webroot = "."
    public_url = "https://localhost"

    def _send(self, status: HTTPStatus, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _answer(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith(CHALLENGE_PREFIX):
            file = challenge_file(self.webroot, path)
            data = read_challenge(file) if file is not None and self.command in ("GET", "HEAD") else None
            if data is None:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", [("Content-Type", "text/plain")])
            else:
                self._send(HTTPStatus.OK, data, [("Content-Type", "text/plain")])
            return
        location = redirect_location(self.public_url, self.path)
        self._send(HTTPStatus.MOVED_PERMANENTLY, b"", [("Location", location)])

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _answer

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def make_server(webroot: str, public_url: str, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    handler = type("ConfiguredHandler", (Handler,), {"webroot": webroot, "public_url": public_url})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--webroot", required=True, help="certbot's --webroot-path (read-only is enough)")
    ap.add_argument("--public-url", required=True, help="where everything else is redirected, e.g. https://hub")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--host", default="0.0.0.0")
    args = ap.parse_args(argv)
    if urlsplit(args.public_url).scheme != "https":
        ap.error("--public-url must be https://...")
    server = make_server(args.webroot, args.public_url, args.port, args.host)
    sys.stderr.write(f"acme responder on {args.host}:{args.port}: challenges from {args.webroot}, "
                     f"everything else to {args.public_url}\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
