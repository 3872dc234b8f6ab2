"""A real Jupyter client for the cluster checks: a kernel started through a user's
server (REST) and driven over its websocket with the Jupyter messaging protocol,
as JupyterLab does (the-littlest-jupyterhub's integration test does the same)."""

from __future__ import annotations

import json
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import websocket  # websocket-client

# While a long execution is silent (no output), the checks call `keepalive` this often: a request
# through the proxy is activity the hub sees, so the idle culler leaves the server alone.
KEEPALIVE = 30.0


@dataclass
class Execution:
    """What one execute_request produced on iopub."""

    stdout: str = ""
    stderr: str = ""
    results: list[Any] = field(default_factory=list)  # text/plain of execute_result / display_data
    error: Optional[str] = None  # "ename: evalue" + traceback

    def check(self, what: str) -> "Execution":
        assert self.error is None, f"{what} failed in the kernel:\n{self.error}\nstdout:\n{self.stdout[-2000:]}"
        return self


class KernelSocketClosed(ConnectionError):
    """The server (or the proxy) closed the kernel's websocket in the middle of an execution."""


class Kernel:
    """One kernel of a user's server, reached through the hub's proxy with the user's API token."""

    def __init__(self, ws_url: str, host_header: str, token: str, context: ssl.SSLContext, server_hostname: str,
                 kernel_id: str, timeout: float = 120.0, keepalive: Optional[Callable[[], Any]] = None):
        self.kernel_id = kernel_id
        self.keepalive = keepalive
        self.session = uuid.uuid4().hex
        self.ws = websocket.create_connection(
            ws_url, header=[f"Authorization: token {token}"], host=host_header, timeout=timeout,
            sslopt={"context": context, "server_hostname": server_hostname})

    def close(self) -> None:
        self.ws.close()

    def pump(self, seconds: float) -> None:
        """Read the websocket for `seconds` while nothing runs: websocket-client answers the server's
        pings as it reads (a socket left unread for 90 s is closed by jupyter-server); what arrives is
        dropped. A closed socket raises KernelSocketClosed."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.ws.settimeout(left)
            try:
                raw = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                return
            if raw == "":  # websocket-client's recv() of a close frame
                raise KernelSocketClosed("the kernel's websocket was closed while the check waited between executions")

    def _message(self, msg_type: str, content: dict) -> dict:
        return {
            "header": {"msg_id": uuid.uuid4().hex, "username": "cablab-verify", "session": self.session,
                       "msg_type": msg_type, "version": "5.3", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ")},
            "parent_header": {}, "metadata": {}, "content": content, "channel": "shell", "buffers": [],
        }

    def execute(self, code: str, timeout: float = 300.0) -> Execution:
        """Run `code`; wait for the kernel to go idle after it; collect its outputs."""
        msg = self._message("execute_request", {"code": code, "silent": False, "store_history": False,
                                                "user_expressions": {}, "allow_stdin": False,
                                                "stop_on_error": True})
        msg_id = msg["header"]["msg_id"]
        self.ws.send(json.dumps(msg))
        out = Execution()
        began = last_message = time.monotonic()
        deadline = began + timeout
        longest_keepalive = 0.0  # the socket is not read (nor its pings answered) while one runs
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the kernel did not finish in {timeout:.0f} s: {code[:200]!r}")
            self.ws.settimeout(min(left, KEEPALIVE) if self.keepalive else left)
            try:
                raw = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                if self.keepalive is None:
                    raise
                asked = time.monotonic()
                self.keepalive()
                longest_keepalive = max(longest_keepalive, time.monotonic() - asked)
                continue
            now = time.monotonic()
            if raw == "":  # websocket-client's recv() of a close frame
                raise KernelSocketClosed(
                    f"the kernel's websocket was closed {now - began:.1f} s into the execution, "
                    f"{now - last_message:.1f} s after its last message; the longest keepalive request "
                    f"meanwhile took {longest_keepalive:.1f} s (jupyter-server closes a websocket after 90 s "
                    f"without a pong): {code[:120]!r}")
            last_message = now
            reply = json.loads(raw)
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = reply["msg_type"], reply["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    out.stdout += content["text"]
                else:
                    out.stderr += content["text"]
            elif kind in ("execute_result", "display_data"):
                out.results.append(content["data"].get("text/plain"))
            elif kind == "error":
                out.error = f"{content['ename']}: {content['evalue']}\n" + "\n".join(content.get("traceback", []))
            elif kind == "status" and content["execution_state"] == "idle" and reply["channel"] == "iopub":
                return out

    def json_of(self, code: str, what: str, timeout: float = 300.0) -> Any:
        """Run code that prints one JSON document as its last stdout line; return it."""
        result = self.execute(code, timeout).check(what)
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        assert lines, f"{what}: the kernel printed nothing (stderr: {result.stderr[-1000:]})"
        return json.loads(lines[-1])
