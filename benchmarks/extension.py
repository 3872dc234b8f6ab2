"""JupyterHub's single-user extension in a server's start, natively on this machine's Docker (issue 12).

    python benchmarks/extension.py [--image cablab/singleuser:lab] [--runs 5] [--cpus 1] [--imports] [--report FILE]

The spawn benchmark (benchmarks/spawn.py) splits the hub's spawn against the floor in two: direct /
floor, the hub's own service spec started without the hub against the same image as a plain
`jupyter-server`, is JupyterHub's single-user extension in the server's own start. On the lab every
Python start runs under emulation (~11 x slower), so this asks whether that part is the emulation's.

It starts the single-user image on this machine's Docker (no VM, no swarm), the two ways in turn,
`--runs` times each: as the spawner runs it (`jupyterhub-singleuser` with JupyterHub's variables; a
stub hub on loopback answers the extension's version check and activity reports) and as the spawn
benchmark's floor (the same `jupyter-server` arguments). Each container is created first, then
timed from `docker start` to the server's first HTTP answer at its API (`/user/<name>/api`, `/api`),
asked every 10 ms from here; host network, `--cpus`, the image's uid, a fresh tmpfs home. Prints
p50/min/max of both, the ratio of the p50s and their difference; never asserts a time.

With `--imports`, also what the extension's imports add: in a fresh container each time, the image's
python imports what `jupyter-server` imports itself (its app and the enabled server extensions),
then times aiohttp and the rest of `jupyterhub.singleuser.extension` (IMPORT_PROBE).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.spawn import Summary, floor_task_template, ratio, server_api_path  # noqa: E402

LOCK = ROOT / "cablab_cluster" / "bundle" / "singleuser-constraints.txt"
USER = "bench"
HOME = "/home/jovyan"  # the image's HOME (and the spawner's notebook_dir)
KINDS = ("hub", "floor")

# Run by the image's python (`--imports`): what the floor's `jupyter-server` imports itself first
# (its app and the server extensions enabled in jupyter's config path, JupyterHub's left out), then
# aiohttp (JupyterHub 6's HTTP client), then the rest of JupyterHub's single-user extension, each
# timed. One JSON line: what the extension's imports add to the floor's start.
IMPORT_PROBE = r"""
import glob, json, os, time
import jupyter_server.serverapp
from jupyter_core.paths import jupyter_config_path
enabled = set()
for d in jupyter_config_path():
    for f in sorted(glob.glob(os.path.join(d, "jupyter_server_config.d", "*.json"))):
        with open(f) as fh:
            exts = json.load(fh).get("ServerApp", {}).get("jpserver_extensions", {})
        enabled |= {m for m, on in exts.items() if on and not m.startswith("jupyterhub")}
for m in sorted(enabled):
    __import__(m)
t = time.perf_counter()
import aiohttp
a = time.perf_counter() - t
t = time.perf_counter()
import jupyterhub.singleuser.extension
b = time.perf_counter() - t
print(json.dumps({"aiohttp_ms": round(a * 1e3, 1), "extension_ms": round((a + b) * 1e3, 1),
                  "preloaded": sorted(enabled)}))
"""


def import_probe(image: str, timeout: float = 120) -> dict[str, Any]:
    """IMPORT_PROBE in a fresh container of `image` (no network, the image's user): its JSON line."""
    done = docker("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", IMPORT_PROBE,
                  timeout=timeout)
    return probe_result(done.stdout, done.stderr, done.returncode)


def probe_result(stdout: str, stderr: str, rc: int) -> dict[str, Any]:
    lines = stdout.strip().splitlines()
    if rc != 0 or not lines:
        raise RuntimeError(f"the import probe failed ({rc}): {(stderr or stdout).strip()[-300:]}")
    return json.loads(lines[-1])


def locked_jupyterhub(lock: Path = LOCK) -> str:
    """The JupyterHub version the single-user image is built with (its lock): what the stub hub says
    it is, so that the extension's version check finds no mismatch to warn about."""
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line.lower().startswith("jupyterhub=="):
            return line.split("==", 1)[1].strip()
    raise SystemExit(f"{lock}: no jupyterhub== line")


class StubHub:
    """The hub's API as the single-user extension asks it at a start: GET /hub/api/ (the version
    check) and POST .../activity, on 127.0.0.1 (the containers share this machine's network)."""

    def __init__(self, version: str):
        body = json.dumps({"version": version}).encode()

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, payload: bytes) -> None:
                self.send_response(200)
                self.send_header("X-JupyterHub-Version", version)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._answer(body)

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.api_url = f"http://127.0.0.1:{self.port}/hub/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def hub_env(api_url: str, port: int, user: str = USER) -> dict[str, str]:
    """The variables the spawner gives a user's server (those the extension reads at its start)."""
    prefix = server_api_path(user)[: -len("api")]  # /user/<name>/
    return {
        "JUPYTERHUB_API_TOKEN": "b" * 32, "JUPYTERHUB_API_URL": api_url,
        "JUPYTERHUB_ACTIVITY_URL": f"{api_url}/users/{user}/activity",
        "JUPYTERHUB_BASE_URL": "/", "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}{prefix}", "JUPYTERHUB_USER": user,
        "JUPYTERHUB_SERVER_NAME": "", "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{user}", "JUPYTERHUB_HOST": "",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback", "JUPYTERHUB_DEFAULT_URL": "/lab",
    }


def create_command(kind: str, image: str, name: str, port: int, cpus: float, api_url: str) -> list[str]:
    """`docker create` of one start: the spawner's way (`hub`) or the spawn benchmark's floor."""
    cmd = ["docker", "create", "--name", name, "--network", "host", f"--cpus={cpus:g}",
           "--tmpfs", f"{HOME}:uid=1000,gid=100,mode=0700", "--label", "cablab-bench=extension"]
    if kind == "hub":
        for key, value in sorted(hub_env(api_url, port).items()):
            cmd += ["--env", f"{key}={value}"]
        return cmd + [image, "jupyterhub-singleuser", f"--ServerApp.root_dir={HOME}"]
    if kind == "floor":
        return cmd + [image, *floor_task_template({}, HOME, port)["ContainerSpec"]["Args"]]
    raise ValueError(f"kind: {kind!r}")


def answer_url(kind: str, port: int) -> str:
    return f"http://127.0.0.1:{port}" + server_api_path(USER if kind == "hub" else None)


def answers(url: str) -> bool:
    """Whether an HTTP server answers at `url` now (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def first_answer(url: str, timeout: float, every: float = 0.01) -> Optional[float]:
    """The monotonic time of `url`'s first HTTP answer (any status), None after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(url):
            return time.monotonic()
        time.sleep(every)
    return None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Report:
    image: str
    cpus: float
    when: str
    starts: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    failures: list[str] = field(default_factory=list)
    hub: Optional[Summary] = None
    floor: Optional[Summary] = None
    hub_over_floor_p50: Optional[float] = None
    extension_s: Optional[float] = None  # hub p50 - floor p50
    # --imports: IMPORT_PROBE's figures, one per run (ms), and the modules imported before them
    imports: dict[str, list[float]] = field(default_factory=lambda: {"extension_ms": [], "aiohttp_ms": []})
    preloaded: list[str] = field(default_factory=list)
    extension_imports: Optional[Summary] = None
    aiohttp_import: Optional[Summary] = None

    def summarize(self) -> None:
        self.hub, self.floor = Summary.of(self.starts["hub"]), Summary.of(self.starts["floor"])
        self.hub_over_floor_p50 = ratio(self.hub.p50, self.floor.p50)
        if self.hub.p50 is not None and self.floor.p50 is not None:
            self.extension_s = round(self.hub.p50 - self.floor.p50, 3)
        if self.imports["extension_ms"]:
            self.extension_imports = Summary.of(self.imports["extension_ms"])
            self.aiohttp_import = Summary.of(self.imports["aiohttp_ms"])

    def table(self) -> str:
        def f(x: Optional[float]) -> str:
            return "—" if x is None else f"{x:.3f}"

        rows = [f"{self.image} on this machine's Docker, --cpus {self.cpus:g}: docker start -> first answer (s)",
                "                                   n    p50    min    max"]
        for name, s in (("hub's way (jupyterhub-singleuser)", self.hub), ("floor (jupyter-server)", self.floor)):
            if s is not None:
                rows.append(f"{name:<33} {s.n:>3} {f(s.p50):>6} {f(s.min):>6} {f(s.max):>6}")
        rows.append(f"hub's way / floor p50: {self.hub_over_floor_p50 if self.hub_over_floor_p50 is not None else '—'}"
                    f"; the extension: {f(self.extension_s)} s")
        if self.extension_imports is not None and self.aiohttp_import is not None:
            e, a = self.extension_imports, self.aiohttp_import
            rows.append(f"the extension's imports beyond the floor's own (n={e.n}): p50 {e.p50:.1f} ms "
                        f"({e.min:.1f}-{e.max:.1f}), of which aiohttp {a.p50:.1f} ms ({a.min:.1f}-{a.max:.1f})")
            rows.append(f"  imported first, as jupyter-server does: jupyter_server.serverapp, "
                        f"{', '.join(self.preloaded) or 'no enabled server extension'}")
        rows += [f"failed: {x}" for x in self.failures]
        return "\n".join(rows)


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def one_start(kind: str, image: str, cpus: float, api_url: str, timeout: float) -> float:
    port = free_port()
    name = f"cablab-bench-ext-{kind}-{os.getpid()}-{port}"
    made = subprocess.run(create_command(kind, image, name, port, cpus, api_url), capture_output=True, text=True)
    if made.returncode != 0:
        raise RuntimeError(f"docker create: {made.stderr.strip()[:300]}")
    try:
        t0 = time.monotonic()
        started = docker("start", name)
        if started.returncode != 0:
            raise RuntimeError(f"docker start: {started.stderr.strip()[:300]}")
        answered = first_answer(answer_url(kind, port), timeout)
        if answered is None:
            logs = docker("logs", "--tail", "5", name)
            raise RuntimeError(f"no answer within {timeout:g} s: {(logs.stdout + logs.stderr).strip()[-300:]}")
        return answered - t0
    finally:
        docker("rm", "-f", name)


def publish(report: Any, path: Optional[str], default_name: str) -> Path:
    """Summarize `report` (a dataclass), print its table, write it as JSON to `path` (default:
    lab/reports/`default_name`); the path written. Shared with benchmarks/native_start.py."""
    report.summarize()
    print(report.table())
    out = Path(path) if path else ROOT / "lab" / "reports" / default_name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    print(f"report: {out}")
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", default="cablab/singleuser:lab", help="the single-user image (default: the lab's)")
    ap.add_argument("--runs", type=int, default=5, help="starts of each kind, in turn (default 5)")
    ap.add_argument("--cpus", type=float, default=1.0, help="docker --cpus, as the lab's per-user limit (default 1)")
    ap.add_argument("--timeout", type=float, default=60.0, help="s to wait for a server's answer")
    ap.add_argument("--report", help="JSON report (default: lab/reports/extension.json)")
    ap.add_argument("--imports", action="store_true", help="""also time, --runs times in fresh containers,
        what the extension's imports add once the floor's own are done (aiohttp apart)""")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    if docker("image", "inspect", args.image).returncode != 0:
        print(f"extension: no image {args.image} in this machine's Docker (the lab's images phase builds "
              "cablab/singleuser:lab)", file=sys.stderr)
        return 2
    hub = StubHub(locked_jupyterhub())
    report = Report(args.image, args.cpus, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    try:
        for i in range(args.runs):
            for kind in KINDS if i % 2 == 0 else KINDS[::-1]:  # alternate which goes first
                try:
                    took = one_start(kind, args.image, args.cpus, hub.api_url, args.timeout)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    report.failures.append(f"{kind} #{i + 1}: {exc}")
                    print(f"[extension] {kind} #{i + 1}: failed: {exc}", flush=True)
                    continue
                report.starts[kind].append(round(took, 3))
                print(f"[extension] {kind} #{i + 1}/{args.runs}: {took:.3f} s", flush=True)
    finally:
        hub.close()
    for i in range(args.runs if args.imports else 0):
        try:
            got = import_probe(args.image)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            report.failures.append(f"imports #{i + 1}: {exc}")
            print(f"[extension] imports #{i + 1}: failed: {exc}", flush=True)
            continue
        report.imports["extension_ms"].append(got["extension_ms"])
        report.imports["aiohttp_ms"].append(got["aiohttp_ms"])
        report.preloaded = got["preloaded"]
        print(f"[extension] imports #{i + 1}/{args.runs}: the extension {got['extension_ms']} ms, "
              f"aiohttp {got['aiohttp_ms']} ms", flush=True)
    publish(report, args.report, "extension.json")
    return 1 if report.failures and not (report.starts["hub"] and report.starts["floor"]) else 0


if __name__ == "__main__":
    sys.exit(main())
