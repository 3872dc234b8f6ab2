"""The checks' kernel client (cablab_cluster/checks/kernel.py) against a fake websocket."""

from __future__ import annotations

import json

import pytest
import websocket

from cablab_cluster.checks import kernel as kmod


class FakeWS:
    """Silent for `silent` recv() calls (timeouts), then answers the last request: stdout, idle."""

    def __init__(self, silent: int):
        self.silent = silent
        self.sent: list[dict] = []
        self.timeouts: list[float] = []
        self.queue: list[dict] = []

    def send(self, text: str) -> None:
        msg = json.loads(text)
        self.sent.append(msg)
        parent = {"msg_id": msg["header"]["msg_id"]}
        self.queue = [{"parent_header": parent, "msg_type": "stream", "channel": "iopub",
                       "content": {"name": "stdout", "text": "42\n"}},
                      {"parent_header": parent, "msg_type": "status", "channel": "iopub",
                       "content": {"execution_state": "idle"}}]

    def settimeout(self, t: float) -> None:
        self.timeouts.append(t)

    def recv(self) -> str:
        if self.silent:
            self.silent -= 1
            raise websocket.WebSocketTimeoutException("silent")
        return json.dumps(self.queue.pop(0))


def kernel(ws: FakeWS, keepalive=None) -> kmod.Kernel:
    k = kmod.Kernel.__new__(kmod.Kernel)
    k.kernel_id, k.session, k.ws, k.keepalive = "k", "s", ws, keepalive
    return k


def test_a_silent_execution_keeps_the_server_active():
    pokes = []
    ws = FakeWS(silent=3)
    assert kernel(ws, lambda: pokes.append(1)).execute("work()", timeout=600).stdout == "42\n"
    assert len(pokes) == 3  # once per silent KEEPALIVE seconds
    assert max(ws.timeouts) <= kmod.KEEPALIVE


def test_without_keepalive_a_silence_is_a_timeout():
    with pytest.raises(websocket.WebSocketTimeoutException):
        kernel(FakeWS(silent=1)).execute("work()", timeout=600)


class ClosingWS(FakeWS):
    """Answers one stream message, then the server's close frame (websocket-client's recv() gives '')."""

    def recv(self) -> str:
        if self.silent:
            return super().recv()
        return json.dumps(self.queue.pop(0)) if len(self.queue) > 1 else ""


def test_a_websocket_closed_mid_execution_says_so_with_its_timings():
    pokes = []
    with pytest.raises(kmod.KernelSocketClosed) as closed:
        kernel(ClosingWS(silent=2), lambda: pokes.append(1)).execute("run_samples()", timeout=600)
    message = str(closed.value)
    assert "the kernel's websocket was closed" in message and "the longest keepalive request" in message
    assert "run_samples()" in message and len(pokes) == 2
    assert isinstance(closed.value, ConnectionError)


def test_pumping_between_executions_reads_the_socket_and_notices_a_close():
    ws = FakeWS(silent=1)
    kernel(ws).pump(0.5)  # a read that times out: nothing arrived, the pings were answered
    assert ws.timeouts and ws.timeouts[0] <= 0.5
    closed = ClosingWS(silent=0)
    closed.queue = [{"msg_type": "status"}]
    with pytest.raises(kmod.KernelSocketClosed, match="while the check waited between executions"):
        kernel(closed).pump(5)
