"""Cluster checks, written once for the lab VMs and for real clusters.

    pytest tests/cluster --spec SPEC.yml --ssh-config FILE [--secrets DIR]
    cablab-cluster verify SPEC.yml --ssh-config FILE [--secrets DIR] [-- pytest args]

Every host of the spec is reached as `ssh://<name>` through FILE, an OpenSSH
config with a `Host <name>` entry per host (what `vagrant ssh-config` writes);
commands run with sudo (the vagrant user is not root). The hub is reached
directly over HTTPS from this machine, at the hub host's address, presenting
itself as `hub.public_host` (SNI and Host header), as a browser would.

Without --spec every check here is skipped: the fast suite never needs a cluster.

Tests use the fixtures below, never module globals: `spec`, `cluster`,
`secrets`, `nodes` (run commands on hosts), `wait_until`, `hub_client`
(a new HTTPS session with the hub). Host parameters are filled from the spec:
a test that takes `swarm_host`, `any_host`, `nfs_client`, `notebook_host`,
`share`, `read_only_share` or `squashed_share` (writable, root_squash) runs
once for each.
"""

from __future__ import annotations

import fnmatch
import http.client
import http.cookiejar
import importlib.util
import json
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import pytest

from cablab_cluster.secretstore import secrets_dir as default_secrets_dir
from cablab_cluster.spec import (
    LETSENCRYPT_PRODUCTION,
    Cluster,
    Host,
    LoadedSpec,
    SpecError,
    TLSMode,
    load_spec,
)

HERE = Path(__file__).resolve().parent
SPEC_KEY = pytest.StashKey[LoadedSpec]()
HOW_TO_RUN = ("cluster checks need a live cluster: "
              "`cablab-cluster verify SPEC.yml --ssh-config FILE` "
              "(or `pytest tests/cluster --spec SPEC.yml --ssh-config FILE`)")

T = TypeVar("T")


# --------------------------------------------------------------------------
# Options, and filling host parameters from the spec


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    group = parser.getgroup("cablab", "cablab cluster checks (tests/cluster)")
    group.addoption("--spec", metavar="SPEC.yml", default=None,
                    help="cablab cluster spec to check; without it tests/cluster is skipped")
    group.addoption("--secrets", metavar="DIR", default=None,
                    help="the spec's secrets directory (default: <spec dir>/secrets/<cluster name>/)")
    if not _testinfra_plugin_loaded(pluginmanager):
        # testinfra's pytest plugin defines --ssh-config; without testinfra,
        # accept it here so that the user gets our error, not argparse's.
        group.addoption("--ssh-config", dest="ssh_config", metavar="FILE", default=None,
                        help="OpenSSH config with a `Host <name>` entry for every host of the spec")


def _testinfra_plugin_loaded(pluginmanager: pytest.PytestPluginManager) -> bool:
    return any(getattr(p, "__name__", "") == "testinfra.plugin" for p in pluginmanager.get_plugins())


def pytest_configure(config: pytest.Config) -> None:
    spec_path = config.getoption("spec", None)
    if not spec_path:
        return
    if importlib.util.find_spec("testinfra") is None:
        raise pytest.UsageError("the cluster checks need pytest-testinfra: pip install -e '.[lab]'")
    ssh_config = config.getoption("ssh_config", None)
    if not ssh_config:
        raise pytest.UsageError("--spec needs --ssh-config FILE: an OpenSSH config with a `Host <name>` entry "
                                "for every host of the spec (e.g. `vagrant ssh-config > FILE`)")
    if not Path(ssh_config).exists():
        raise pytest.UsageError(f"--ssh-config {ssh_config}: no such file")
    try:
        loaded = load_spec(spec_path)
    except SpecError as exc:
        raise pytest.UsageError("\n".join([f"--spec {spec_path} is not a valid spec:", *exc.lines()])) from None
    config.stash[SPEC_KEY] = loaded


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SPEC_KEY in config.stash:
        return
    skip = pytest.mark.skip(reason=HOW_TO_RUN)
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(skip)


def _host_params(c: Cluster) -> dict[str, tuple[tuple[Any, ...], list[str]]]:
    server = c.nfs_server
    hosts = {
        "any_host": c.hosts,
        "swarm_host": c.swarm_hosts,
        "nfs_client": tuple(h for h in c.swarm_hosts if h != server),
        "notebook_host": c.notebook_hosts,
    }
    out = {k: (v, [h.name for h in v]) for k, v in hosts.items()}
    shares = {
        "share": c.shares,
        "read_only_share": tuple(s for s in c.shares if s.read_only),
        "squashed_share": tuple(s for s in c.shares if s.root_squash and not s.read_only),
    }
    out |= {k: (v, [s.name for s in v]) for k, v in shares.items()}
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    loaded = metafunc.config.stash.get(SPEC_KEY, None)
    if loaded is None:
        return  # skipped at collection (no --spec): nothing to fill in
    for name, (values, ids) in _host_params(loaded.cluster).items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, values, ids=ids)


# --------------------------------------------------------------------------
# Helpers: waiting, remote commands


def wait_until(check: Callable[[], Optional[T]], timeout: float, what: str, interval: float = 5.0) -> T:
    """Call `check` until it returns something truthy and return that; fail after `timeout` s.

    `check` may raise to give up at once (e.g. a server that failed to start).
    """
    deadline = time.monotonic() + timeout
    last: Optional[T] = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


@dataclass(frozen=True)
class Mounted:
    """One line of findmnt: what is mounted at a target."""

    target: str
    source: str
    fstype: str
    options: tuple[str, ...]


def ssh_config_hosts(text: str) -> list[str]:
    """The `Host` patterns of an OpenSSH config (negations dropped)."""
    patterns = []
    for raw in text.splitlines():
        key, *rest = re.split(r"[\s=]+", raw.split("#", 1)[0].strip(), maxsplit=1) + [""]
        if key.lower() == "host":
            patterns += [p.strip('"') for p in rest[0].split() if not p.startswith("!")]
    return patterns


def missing_from_ssh_config(text: str, names: list[str]) -> list[str]:
    """Host names that no `Host` pattern of the config matches ([] if it uses `Match` or `Include`,
    which only ssh itself can follow)."""
    if any(re.match(r"\s*(match|include)\b", line, re.IGNORECASE) for line in text.splitlines()):
        return []
    patterns = ssh_config_hosts(text)
    return [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in patterns)]


class Nodes:
    """The spec's hosts over SSH: testinfra's ssh:// backend through the given config, with sudo."""

    def __init__(self, ssh_config: str, control_dir: Path):
        self.ssh_config = ssh_config
        self.control_dir = control_dir
        self._hosts: dict[str, Any] = {}

    def __getitem__(self, host: Host | str) -> Any:
        """The testinfra host for a spec host (or its name)."""
        import testinfra

        name = host if isinstance(host, str) else host.name
        if name not in self._hosts:
            # One master connection per host (ControlPath), reused by every command.
            self._hosts[name] = testinfra.get_host(f"ssh://{name}", ssh_config=self.ssh_config, sudo=True,
                                                   controlpath=str(self.control_dir / name))
        return self._hosts[name]

    def close(self) -> None:
        """End the master connections (else they linger for ControlPersist)."""
        for name in self._hosts:
            subprocess.run(["ssh", "-F", self.ssh_config, "-o", f"ControlPath={self.control_dir / name}",
                            "-O", "exit", name], capture_output=True, timeout=30, check=False)

    def try_run(self, host: Host | str, command: str, *args: str) -> Any:
        """Run a command as root; the CommandResult (rc, stdout, stderr), whatever its exit status.

        With `args`, `command` is a %-template and every arg is shell-quoted (write a literal % as %%).
        """
        return self[host].run(command, *args)

    def run(self, host: Host | str, command: str, *args: str) -> str:
        """Run a command as root, fail unless it exits 0; its stdout without the trailing newline."""
        result = self.try_run(host, command, *args)
        if result.rc != 0:
            name = host if isinstance(host, str) else host.name
            shown = command % tuple(shlex.quote(a) for a in args) if args else command
            raise AssertionError(f"on {name}: `{shown}` exited {result.rc}: "
                                 f"{(result.stderr.strip() or result.stdout.strip())[-2000:]}")
        return result.stdout.rstrip("\n")

    def mounted(self, host: Host | str, path: str) -> Optional[Mounted]:
        """What is mounted exactly at `path`, or None if `path` is not a mount point."""
        out = self.try_run(host, "findmnt -n -r -o TARGET,SOURCE,FSTYPE,OPTIONS --target %s", path).stdout
        lines = [line.split(" ") for line in out.splitlines() if line.strip()]
        if not lines:
            return None
        target, source, fstype, options = (lines[-1] + ["", "", "", ""])[:4]
        if unescape(target) != path:
            return None
        return Mounted(unescape(target), unescape(source), fstype, tuple(options.split(",")))

    def fstab(self, host: Host | str) -> list[Mounted]:
        """The entries of /etc/fstab (what would be mounted where)."""
        entries = []
        for raw in self.run(host, "cat /etc/fstab").splitlines():
            fields = raw.split("#", 1)[0].split()
            if len(fields) >= 4:
                source, target, fstype, options = fields[:4]
                entries.append(Mounted(unescape(target), unescape(source), fstype, tuple(options.split(","))))
        return entries


def unescape(field: str) -> str:
    """findmnt -r and /etc/fstab escape blanks and the like: \\x20 (findmnt) or \\040 (fstab)."""
    field = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), field)
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


# --------------------------------------------------------------------------
# Helpers: HTTPS with the hub


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.text[:300]}"


class _Connection(http.client.HTTPSConnection):
    """TCP to an address, TLS for a name: the hub host's address, the hub's public name."""

    def __init__(self, address: str, port: int, server_name: str, context: ssl.SSLContext, timeout: float):
        super().__init__(address, port, context=context, timeout=timeout)
        self._server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        context: ssl.SSLContext = self._context  # type: ignore[attr-defined]
        self.sock = context.wrap_socket(self.sock, server_hostname=self._server_name)


class _Headers:
    """What http.cookiejar wants from a response: info() -> the headers."""

    def __init__(self, headers: http.client.HTTPMessage):
        self._headers = headers

    def info(self) -> http.client.HTTPMessage:
        return self._headers


def hub_tls_context(cluster: Cluster, secrets: Path) -> ssl.SSLContext:
    """The client context that trusts the hub's certificate as the spec makes it.

    self-signed: only the spec's own certificate (secrets/tls.crt);
    provided: system CAs, plus the provided chain itself (a private CA is fine);
    letsencrypt: system CAs (no verification against a non-production ACME
    directory such as staging: its CA is not trusted anywhere; the name is
    still checked from the certificate by the tests).
    """
    tls = cluster.hub.tls
    crt = secrets / "tls.crt"
    if tls.mode is TLSMode.SELF_SIGNED:
        assert crt.is_file(), f"{crt} is missing: the self-signed certificate comes from `cablab-cluster render`"
        ctx = ssl.create_default_context(cafile=str(crt))
        # Our self-signed certificate (CA:true, no key usage) is its own trust anchor;
        # Python >= 3.13 turns on strict X.509 checks that would refuse it.
        ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
        return ctx
    ctx = ssl.create_default_context()
    if tls.mode is TLSMode.PROVIDED and crt.is_file():
        ctx.load_verify_locations(cafile=str(crt))
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    elif tls.mode is TLSMode.LETSENCRYPT and tls.acme_directory != LETSENCRYPT_PRODUCTION:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class HubSession:
    """A browser for the hub: HTTPS to the hub host's address as `public_host`, with cookies.

    Redirects are not followed. Cookie-authenticated API calls carry the
    `_xsrf` cookie's value as X-XSRFToken, as JupyterHub's own pages do.
    """

    user_agent = "cablab-cluster-verify"

    def __init__(self, address: str, port: int, public_host: str, context: ssl.SSLContext, timeout: float = 60.0):
        self.address = address
        self.port = port
        self.public_host = public_host
        self.context = context
        self.timeout = timeout
        host = f"[{public_host}]" if ":" in public_host else public_host
        self.netloc = host if port == 443 else f"{host}:{port}"
        self.cookies = http.cookiejar.CookieJar()

    @classmethod
    def for_cluster(cls, cluster: Cluster, secrets: Path) -> "HubSession":
        return cls(str(cluster.hub_host.address), cluster.hub.port, cluster.hub.public_host,
                   hub_tls_context(cluster, secrets))

    def handshake(self, context: Optional[ssl.SSLContext] = None) -> tuple[str, bytes]:
        """A bare TLS handshake: (protocol version, the served certificate in DER)."""
        with socket.create_connection((self.address, self.port), timeout=self.timeout) as raw:
            with (context or self.context).wrap_socket(raw, server_hostname=self.public_host) as tls:
                return tls.version() or "", tls.getpeercert(binary_form=True) or b""

    def request(self, method: str, path: str, body: Optional[bytes] = None,
                headers: Optional[dict[str, str]] = None) -> Response:
        req = urllib.request.Request(f"https://{self.netloc}{path}", method=method)
        self.cookies.add_cookie_header(req)
        send = {"Host": self.netloc, "User-Agent": self.user_agent, "Accept": "*/*", **(headers or {})}
        cookie = req.get_header("Cookie")
        if cookie:
            send["Cookie"] = cookie
        conn = _Connection(self.address, self.port, self.public_host, self.context, self.timeout)
        try:
            conn.request(method, path, body=body, headers=send)
            resp = conn.getresponse()
            data = resp.read()
            self.cookies.extract_cookies(_Headers(resp.headers), req)  # type: ignore[arg-type]
            return Response(resp.status, resp.headers, data)
        finally:
            conn.close()

    def cookie(self, name: str) -> Optional[str]:
        return next((c.value for c in self.cookies if c.name == name), None)

    def login(self, username: str, password: str) -> Response:
        """The login form: GET /hub/login for the _xsrf cookie, POST the form. A success is a 302."""
        page = self.request("GET", "/hub/login")
        assert page.status == 200, f"GET /hub/login: {page}"
        xsrf = self.cookie("_xsrf")
        assert xsrf, "GET /hub/login set no _xsrf cookie"
        form = urllib.parse.urlencode({"username": username, "password": password, "_xsrf": xsrf}).encode()
        return self.request("POST", "/hub/login", form, {"Content-Type": "application/x-www-form-urlencoded"})

    def api(self, method: str, path: str, data: Any = None) -> Response:
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


# --------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def spec(pytestconfig: pytest.Config) -> LoadedSpec:
    return pytestconfig.stash[SPEC_KEY]


@pytest.fixture(scope="session")
def cluster(spec: LoadedSpec) -> Cluster:
    return spec.cluster


@pytest.fixture(scope="session")
def secrets(pytestconfig: pytest.Config, spec: LoadedSpec) -> Path:
    given = pytestconfig.getoption("secrets", None)
    return Path(given) if given else default_secrets_dir(spec)


@pytest.fixture(scope="session")
def nodes(pytestconfig: pytest.Config, cluster: Cluster):
    ssh_config = pytestconfig.getoption("ssh_config")
    missing = missing_from_ssh_config(Path(ssh_config).read_text(encoding="utf-8", errors="replace"),
                                      [h.name for h in cluster.hosts])
    if missing:
        pytest.fail(f"{ssh_config} has no `Host` entry for {', '.join(missing)}: every host of the spec is "
                    f"reached as `ssh <name>` through it (e.g. `vagrant ssh-config > {ssh_config}`)", pytrace=False)
    # Short: a socket path has about 100 bytes (a long $TMPDIR would overflow it).
    control_dir = Path(tempfile.mkdtemp(prefix="cablab-ssh-", dir="/tmp" if Path("/tmp").is_dir() else None))
    hosts = Nodes(ssh_config, control_dir)
    yield hosts
    hosts.close()
    shutil.rmtree(control_dir, ignore_errors=True)


@pytest.fixture(name="wait_until", scope="session")
def _wait_until() -> Callable[..., Any]:
    return wait_until


@pytest.fixture(scope="session")
def hub_client(cluster: Cluster, secrets: Path) -> Callable[[], HubSession]:
    """hub_client() -> a new HubSession (its own cookies) with the cluster's hub."""
    return lambda: HubSession.for_cluster(cluster, secrets)
