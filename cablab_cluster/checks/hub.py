"""A browser for the hub: HTTPS (httpx) to the hub host's address, presenting `hub.public_host`.

The hub is reached at the hub host's address (the public name may not resolve
from this machine, or resolve elsewhere) while presenting the public name as a
browser would: as the TLS server name (SNI, also the name the certificate is
checked against) and in the Host header.
"""

from __future__ import annotations

import json
import socket
import ssl
import urllib.parse
from pathlib import Path
from typing import Any, Iterator, Optional

import httpx

from cablab_cluster.spec import Cluster

from .tls import hub_tls_context

# What a request sent on a keep-alive connection that the server has just closed
# fails with: configurable-http-proxy (node) closes connections idle for 5 s,
# which is how often the checks poll. Such a request got no response, so it is
# sent once more, on a new connection.
DROPPED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def netloc(host: str, port: int, default_port: Optional[int] = 443) -> str:
    """host[:port] for a URL or a Host header ([v6] bracketed; the port left out when it is the default)."""
    bracketed = f"[{host}]" if ":" in host else host
    return bracketed if port == default_port else f"{bracketed}:{port}"


def event_data(line: str) -> Optional[dict[str, Any]]:
    """The JSON of one server-sent event line (`data: {...}`, JupyterHub's spawn progress); None for
    any other line (blank keep-alives, comments) or data that is not a JSON object."""
    if not line.startswith("data:"):
        return None
    try:
        data = json.loads(line[5:].strip())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def event_stream_messages(text: str) -> list[dict[str, Any]]:
    """The JSON events of a whole server-sent event stream, in order."""
    return [e for e in map(event_data, text.splitlines()) if e is not None]


def failure_message(text: str) -> str:
    """The message of the last `failed` event of a whole progress stream ("" if none failed)."""
    failed = [e for e in event_stream_messages(text) if e.get("failed")]
    return str(failed[-1].get("message", "")) if failed else ""


class StreamRefused(Exception):
    """An event stream answered with something other than 200 (e.g. JupyterHub's 400 for a server
    that is neither starting nor running); `.response` is the HubResponse (its body read)."""

    def __init__(self, response: "HubResponse"):
        super().__init__(str(response))
        self.response = response


def spawn_outcome(session: "HubSession", user: str, headers: Optional[dict[str, str]] = None) -> Optional[str]:
    """Wait on the hub's progress stream for `user`'s default server, as JupyterHub's spawn page
    does: "" once it says ready (the proxy has the route then), the hub's message if it says failed,
    None if it cannot say: refused (not starting), dropped, or ended without either (a hub that
    restarted); the caller then polls. One request for the whole start, where polling would ask
    the hub again and again and notice the server late. The hub ends it by its start_timeout."""
    try:
        for event in session.events(f"/hub/api/users/{user}/server/progress", headers):
            if event.get("failed"):
                return str(event.get("message") or "the spawn failed")
            if event.get("ready"):
                return ""
    except (StreamRefused, httpx.HTTPError, OSError):
        return None
    return None


class HubResponse:
    """An httpx.Response under the names the checks use: `.status`, `.text`, `.json()`, `.headers`.

    Every other attribute is httpx's (`.status_code`, `.content`, `.is_redirect`, ...).
    """

    def __init__(self, response: httpx.Response):
        self.response = response

    @property
    def status(self) -> int:
        return self.response.status_code

    def __getattr__(self, name: str) -> Any:
        return getattr(self.response, name)

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.response.text[:300]}"


class HubSession:
    """A browser for the hub, with its own cookies. Redirects are not followed.

    Cookie-authenticated API calls carry the `_xsrf` cookie's value as
    X-XSRFToken, as JupyterHub's own pages do (JupyterHub >= 4.1 answers 403
    without it).
    """

    user_agent = "cablab-cluster-verify"

    def __init__(self, address: str, port: int, public_host: str, context: ssl.SSLContext, timeout: float = 60.0):
        self.address = address
        self.port = port
        self.public_host = public_host
        self.context = context
        self.timeout = timeout
        self.netloc = netloc(public_host, port)
        self.client = httpx.Client(
            base_url=f"https://{netloc(address, port, default_port=None)}",
            headers={"Host": self.netloc, "User-Agent": self.user_agent, "Accept": "*/*"},
            verify=context,
            # This machine exports SSL_CERT_FILE, REQUESTS_CA_BUNDLE and maybe a proxy:
            # the hub is trusted through `context` only, and reached directly.
            trust_env=False,
            timeout=timeout,
            follow_redirects=False,
        )

    @classmethod
    def for_cluster(cls, cluster: Cluster, secrets: Path) -> "HubSession":
        return cls(str(cluster.hub_host.address), cluster.hub.port, cluster.hub.public_host,
                   hub_tls_context(cluster, secrets))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "HubSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def handshake(self, context: Optional[ssl.SSLContext] = None) -> tuple[str, bytes]:
        """A bare TLS handshake: (protocol version, the served certificate in DER)."""
        with socket.create_connection((self.address, self.port), timeout=self.timeout) as raw:
            with (context or self.context).wrap_socket(raw, server_hostname=self.public_host) as tls:
                return tls.version() or "", tls.getpeercert(binary_form=True) or b""

    def request(self, method: str, path: str, body: Optional[bytes] = None,
                headers: Optional[dict[str, str]] = None) -> HubResponse:
        """One request (`path` from the root, e.g. /hub/login), cookies kept; a dropped connection is retried once."""
        try:
            return self._send(method, path, body, headers)
        except DROPPED:
            return self._send(method, path, body, headers)

    def _send(self, method: str, path: str, body: Optional[bytes], headers: Optional[dict[str, str]]) -> HubResponse:
        return HubResponse(self.client.request(method, path, content=body, headers=headers,
                                               extensions={"sni_hostname": self.public_host}))

    def events(self, path: str, headers: Optional[dict[str, str]] = None) -> Iterator[dict[str, Any]]:
        """A server-sent event stream's JSON events as they arrive (`path` from the root): one request
        the server answers as things happen, e.g. /hub/api/users/<name>/server/progress, which
        JupyterHub ends with a `ready` or a `failed` event, as its spawn page reads it. The stream
        may stay quiet between events (the hub writes a keep-alive every 8 s); it ends when the
        server ends it. Anything but 200 raises StreamRefused; a dropped connection, httpx's error."""
        with self.client.stream("GET", path, headers={"Accept": "text/event-stream", **(headers or {})},
                                extensions={"sni_hostname": self.public_host}) as response:
            if response.status_code != 200:
                response.read()
                raise StreamRefused(HubResponse(response))
            for line in response.iter_lines():
                data = event_data(line)
                if data is not None:
                    yield data

    def cookie(self, name: str) -> Optional[str]:
        """The value of a cookie the hub set (the first one of that name, whatever its path)."""
        return next((c.value for c in self.client.cookies.jar if c.name == name), None)

    def login(self, username: str, password: str) -> HubResponse:
        """The login form: GET /hub/login for the _xsrf cookie, POST the form. A success is a 302."""
        page = self.request("GET", "/hub/login")
        assert page.status == 200, f"GET /hub/login: {page}"
        xsrf = self.cookie("_xsrf")
        assert xsrf, "GET /hub/login set no _xsrf cookie"
        form = urllib.parse.urlencode({"username": username, "password": password, "_xsrf": xsrf}).encode()
        return self.request("POST", "/hub/login", form, {"Content-Type": "application/x-www-form-urlencoded"})

    def logged_in(self, username: str, password: str) -> HubSession:
        """This session once logged in as `username` (fails the check unless the hub says 302 and sets
        its login cookie)."""
        response = self.login(username, password)
        assert response.status == 302 and self.cookie("jupyterhub-hub-login"), \
            f"logging in as {username} with the lab password: {response}"
        return self

    def api(self, method: str, path: str, data: Any = None) -> HubResponse:
        """/hub/api<path> with the session cookie and the xsrf header; `data` is sent as JSON."""
        headers = {"Accept": "application/json"}
        xsrf = self.cookie("_xsrf")
        if xsrf:
            headers["X-XSRFToken"] = xsrf
        body = None
        if data is not None:
            body = json.dumps(data).encode()
            headers["Content-Type"] = "application/json"
        return self.request(method, f"/hub/api{path}", body, headers)
