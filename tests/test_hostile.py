"""The hostile-input matrix: every string-like field of the spec × hostile payloads.

Each case either fails validation (exit 2) naming the field's key path, or renders;
then every rendered script is run for real under bash as root in a throw-away
sandbox (tests/hostile/sandbox.sh: namespaces, an overlay root, recording stubs for
every system command) and must not have run the payload: no marker file, and the
value reaches commands only whole, as one argument. The hub bundle files are parsed
back (YAML, Python) to exactly their intended structure.

The fields are found by walking the pydantic model, so a new field is covered
without editing this file. Every case is validated and rendered once (two worker
processes); identical scripts are run once.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import tokenize
import types
import typing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Union

import pytest
from pydantic import BaseModel
from ruamel.yaml import YAML

from cablab_cluster.layout import HUB_DATA, secrets_hub_reads
from cablab_cluster.plan import make_plan
from cablab_cluster.render import render_plan
from cablab_cluster.spec import Cluster, SpecError, load_spec

HERE = Path(__file__).parent
LAB = HERE.parent / "lab"
SANDBOX = HERE / "hostile" / "sandbox.sh"

# Each one runs `touch /tmp/p` (or breaks structure) if it is ever read as code.
PAYLOADS = {
    "squote": "x';touch /tmp/p;'",
    "dquote": 'x";touch /tmp/p;"',
    "dollar": "x$(touch /tmp/p)",
    "backtick": "x`touch /tmp/p`",
    "ifs": "x;touch${IFS}/tmp/p",
    "heredoc": "x\nCABLAB_EOF\ntouch /tmp/p\nCABLAB_EOF",
    "newline-yaml": "x\n      - /:/hostroot",
    "hash": "x #comment",
    "semicolon": "x;touch /tmp/p",
    "dotdot": "/srv/../var/lib/docker",
    "slash": "/",
    "unicode": "wörk-路径-∂",
    "long": "a" * 5000,
    "colons": ":x:0:0::/root:/bin/sh",
    "zone": "fe80::1%x$(touch${IFS}/tmp/p)",
    "yaml-alias": "*a",
    "yaml-anchor": "&a x",
    "yaml-map": "{a: b}",
    "yaml-list": "[a, b]",
    "option": "-- --foo",
    "expand": "x${HOME}",
    "glob": "x*?[a]",
    "cr-tab": "x\r\ty",
}

BASE: dict = {
    "name": "hostile",
    "variant": "ubuntu",
    "hosts": [
        {"name": "m1", "address": "10.9.0.1", "roles": ["manager", "nfs-server", "hub"]},
        {"name": "w1", "address": "10.9.0.2", "roles": ["worker"]},
    ],
    "docker": {"source": "docker-repo", "version": "24.0", "storage": {"driver": "lvm", "disks": ["/dev/vdb"]}},
    "shares": [
        {"name": "homes", "path": "/srv/nfs/homes", "mount": "/srv/cablab/homes", "owner": "1000:100",
         "options": ["sync"]},
        {"name": "cube", "path": "/srv/nfs/cube", "mount": "/srv/cablab/cube", "read_only": True},
    ],
    "hub": {
        "public_host": "hub.example.org",
        "images": {
            "hub": {"name": "cablab/hub:1.0", "source": "load", "tarball": "/var/cache/cablab/hub.tar"},
            "singleuser": {"name": "cablab/singleuser:1.0", "base": "debian:bookworm-slim",
                           "packages": ["jupyterlab==4.0.0"]},
        },
        "auth": {"github": {"client_id": "abc", "client_secret_file": "github-client-secret.lab",
                            "allowed_organizations": ["cablab"]}},
        "userlist": "userlist.lab",
        "tls": {"mode": "letsencrypt", "email": "ops@example.org"},
        "users": {"home_share": "homes", "read_only_mounts": [{"share": "cube", "target": "/home/jovyan/cube"}]},
    },
}

STUB_NAMES = ("touch docker dpkg-query dpkg rpm apt-get apt-cache apt-mark dnf systemctl mount umount mountpoint findmnt "
              "exportfs ufw firewall-cmd useradd groupadd hostname curl certbot vgs vgcreate pvcreate lvs lvcreate "
              "lvconvert lvchange mkfs.xfs blkid lsblk xfs_info ss sleep stat chown iptables ip6tables")


# --------------------------------------------------------------------------
# The fields, from the model


def _unwrap(tp: object) -> object:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp  # e.g. IPv4Address | IPv6Address: one string-like field
            tp = args[0]
        else:
            return tp


def _is_model(tp: object) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def string_fields(model: type[BaseModel] = Cluster, prefix: tuple = ()) -> list[tuple[tuple, bool]]:
    """(key path, is a list) of every field a string reaches: str, paths, addresses, enums, literals."""
    out: list[tuple[tuple, bool]] = []
    for name, info in model.model_fields.items():
        tp = _unwrap(info.annotation)
        if typing.get_origin(tp) in (tuple, list):
            elem = _unwrap(typing.get_args(tp)[0])
            if _is_model(elem):
                out += string_fields(elem, (*prefix, name, 0))
            elif elem not in (bool, int, float):
                out.append(((*prefix, name), True))
        elif _is_model(tp):
            out += string_fields(tp, (*prefix, name))
        elif tp not in (bool, int, float):
            out.append(((*prefix, name), False))
    return out


def key_path(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _get(data: object, loc: tuple) -> object:
    for part in loc:
        if isinstance(data, dict) and part in data or isinstance(data, list) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def _set(data: dict, loc: tuple, value: object) -> None:
    for part in loc[:-1]:
        data = data.setdefault(part, {}) if isinstance(data, dict) else data[part]
    data[loc[-1]] = value


@dataclass(frozen=True)
class Case:
    id: str
    loc: tuple
    value: str  # what the field (or its first list item) is set to

    @property
    def path(self) -> str:
        return key_path(self.loc)


def cases() -> list[Case]:
    out = []
    for loc, is_list in string_fields():
        base = _get(BASE, loc)
        base = base[0] if is_list and base else (None if is_list else base)
        for pid, payload in PAYLOADS.items():
            values = {"raw": payload}
            if isinstance(base, str):
                values["suffix"] = base + payload  # a plausible value with the payload behind it
            for mode, value in values.items():
                out.append(Case(f"{key_path(loc)}-{pid}-{mode}", loc + ((0,) if is_list else ()), value))
    return out


CASES = cases()


# --------------------------------------------------------------------------
# Validate and render each case once


@dataclass
class Result:
    rejected: list[str] | None = None  # the problem lines when validation refused it
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, dict[str, str]] = field(default_factory=dict)  # sandbox settings per host script
    home_root: str = ""
    network: str = ""
    public_url: str = ""
    error: str = ""


def _sandbox_env(spec) -> dict[str, dict[str, str]]:
    c = spec.cluster
    plan = make_plan(spec)
    tarballs = [str(i.tarball) for i in (c.hub.images.hub, c.hub.images.singleuser) if i.tarball]
    env = {}
    for hp in plan.hosts:
        mounts = [m for s in hp.steps if s.kind == "nfs_mounts" for m in s.params.mounts]
        env[f"{hp.host.name}.sh"] = {
            "STUB_CONTROL": "true" if hp.host.is_manager else "false",
            "STUB_PIN": c.docker.version or "24.0",
            "STUB_DRIVER": "devicemapper" if c.docker.storage.driver.value.startswith("devicemapper") else "overlay2",
            "STUB_FINDMNT": "".join(f"{m.target}\t{m.source}\n" for m in mounts),
            "STUB_SECRETS": " ".join(secrets_hub_reads(c)),
            "STUB_FILES": "\n".join(tarballs),
            "STUB_DISKS": "\n".join(c.docker.storage.disks),
        }
    return env


def _evaluate(batch: list[tuple[str, dict]]) -> list[tuple[str, Result]]:
    tmp = Path(tempfile.mkdtemp(prefix="cablab-hostile-"))
    for name in ("userlist.lab", "github-client-secret.lab"):
        shutil.copy(LAB / name, tmp / name)
    yaml = YAML()
    out = []
    try:
        for cid, data in batch:
            path = tmp / "cluster.yml"
            with path.open("w", encoding="utf-8") as fh:
                yaml.dump(data, fh)
            try:
                spec = load_spec(path)
            except SpecError as exc:
                out.append((cid, Result(rejected=exc.lines())))
                continue
            except Exception as exc:  # noqa: BLE001 - not exit 2: reported by the case's test
                out.append((cid, Result(error=f"validation raised {type(exc).__name__}: {exc}"[:300])))
                continue
            try:
                files = render_plan(make_plan(spec))
                c = spec.cluster
                out.append((cid, Result(files=files, env=_sandbox_env(spec), network=c.swarm.network,
                                        home_root=str(c.share(c.hub.users.home_share).mount),
                                        public_url=c.hub.public_url)))
            except Exception as exc:  # noqa: BLE001 - reported by the case's test
                out.append((cid, Result(error=f"{type(exc).__name__}: {exc}")))
    finally:
        shutil.rmtree(tmp)
    return out


def _data(case: Case) -> dict:
    data = copy.deepcopy(BASE)
    if case.loc[-1] == 0 and not isinstance(_get(data, case.loc[:-1]), list):
        _set(data, case.loc[:-1], [case.value])
    else:
        _set(data, case.loc, case.value)
    return data


# --------------------------------------------------------------------------
# Run every distinct rendered script in the sandbox


@dataclass(frozen=True)
class Run:
    rc: int
    injected: bool
    calls: tuple[tuple[str, ...], ...]
    output: str


def _run(script: str, env: dict[str, str], family: str) -> Run:
    with tempfile.TemporaryDirectory(prefix="cablab-sandbox-") as work:
        path = Path(work) / "script.sh"
        path.write_text(script, encoding="utf-8")
        box = Path(work) / "box"
        box.mkdir()
        proc = subprocess.run(
            ["unshare", "-m", "-u", "-i", "-n", "-p", "-f", "--propagation", "private",
             "bash", str(SANDBOX), str(box), str(path), family],
            capture_output=True, env={**env, "STUB_NAMES": STUB_NAMES, "STUB_FW": "firewalld" if family == "apt" else "ufw",
                                      "PATH": os.environ["PATH"]}, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    head, _, rest = proc.stdout.partition(b"\n")
    calls_raw, _, output = rest.partition(b"\x1d")
    m = re.fullmatch(rb"rc=(\d+) injected=(yes|no)", head)
    assert m, head
    calls = tuple(tuple(a.decode(errors="replace") for a in rec.split(b"\x1f")[:-1])
                  for rec in calls_raw.split(b"\x1e") if rec)
    return Run(int(m[1]), m[2] == b"yes", calls, output.decode(errors="replace"))


@dataclass
class Matrix:
    results: dict[str, Result]
    runs: dict[tuple[str, str], Run]  # (sha256 of script, family) → run
    seconds: float


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="session")
def matrix() -> Matrix:
    import time

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("the sandbox needs root and unshare (namespaces, overlay)")
    t0 = time.monotonic()
    batches = [[(c.id, _data(c)) for c in CASES[i::2]] for i in range(2)]
    results: dict[str, Result] = {}
    with ProcessPoolExecutor(2) as pool:
        for part in pool.map(_evaluate, batches):
            results.update(part)
    jobs = {}
    for r in results.values():
        for name, text in r.files.items():
            if name.endswith(".sh") and "/" not in name:
                for family in ("apt", "dnf"):
                    jobs.setdefault((_sha(text), family), (text, r.env[name], family))
    with ThreadPoolExecutor(2) as pool:
        runs = dict(zip(jobs, pool.map(lambda j: _run(*j), jobs.values())))
    return Matrix(results, runs, time.monotonic() - t0)


# --------------------------------------------------------------------------
# The checks


def check_stack(text: str, r: Result) -> None:
    stack = YAML(typ="safe").load(text)
    assert set(stack) == {"version", "services", "networks", "configs", "secrets"}
    assert set(stack["services"]) == {"proxy", "hub", "acme", "anchor"}  # the base spec is in letsencrypt mode
    assert stack["services"]["acme"]["volumes"] == ["/var/lib/cablab/acme:/srv/acme/webroot:ro"]
    command = stack["services"]["acme"]["command"]
    assert command[command.index("--public-url") + 1] == r.public_url  # one argument, whatever the host
    assert stack["services"]["hub"]["volumes"] == [
        "/var/run/docker.sock:/var/run/docker.sock", f"{HUB_DATA}:/srv/jupyterhub/data", f"{r.home_root}:{r.home_root}"]
    assert list(stack["networks"]) == [r.network, "internal"]  # the spec's, and the proxy API's own
    # docker stack deploy expands ${...}: only deploy.sh's own variables may be there.
    assert re.findall(r"\$\{([^}]*)\}", text) == [v for v in re.findall(r"\$\{([^}]*)\}", text)
                                                  if re.fullmatch(r"CABLAB_SHA_[A-Z_]+|CABLAB_HUB_IMAGE_ID", v)]


def check_python(text: str, value: str) -> None:
    """The config compiles, and the value is only ever inside a string literal (or a comment)."""
    compile(text, "jupyterhub_config.py", "exec")
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    code = list(text)
    for t in tokenize.generate_tokens(io.StringIO(text).readline):
        if t.type in (tokenize.STRING, tokenize.COMMENT):
            begin, end = starts[t.start[0] - 1] + t.start[1], starts[t.end[0] - 1] + t.end[1]
            code[begin:end] = " " * (end - begin)
    assert value not in "".join(code), f"{value!r} is code in jupyterhub_config.py"


def check_run(run: Run, value: str, name: str) -> None:
    assert not run.injected, f"{name}: the payload ran (marker file made)\n{run.output[-2000:]}"
    assert not any(c[0] == "touch" for c in run.calls), f"{name}: the payload ran touch: {run.calls}"
    for call in run.calls:
        for arg in call:
            if "tmp/p" in arg:  # a payload piece reaching a command is always the whole value
                assert value in arg, f"{name}: {call!r} got a piece of {value!r}"


def _marks(case: Case) -> list:
    return []


@pytest.mark.parametrize("case", [pytest.param(c, marks=_marks(c), id=c.id) for c in CASES])
def test_hostile_value_is_refused_or_inert(case, matrix):
    r = matrix.results[case.id]
    assert not r.error, r.error
    if r.rejected is not None:
        assert any(f": {case.path.rsplit('[0]', 1)[0] if case.path.endswith('[0]') else case.path}" in line
                   for line in r.rejected), r.rejected
        return
    for name, text in r.files.items():
        if name.endswith(".sh"):
            subprocess.run(["bash", "-n"], input=text.encode(), check=True)
        if name.endswith(".sh") and "/" not in name:
            for family in ("apt", "dnf"):
                check_run(matrix.runs[(_sha(text), family)], case.value, f"{name} ({family})")
    check_stack(r.files["hub/stack.yml"], r)
    check_python(r.files["hub/jupyterhub_config.py"], case.value)


def test_matrix_size_and_outcome(matrix, capsys):
    rendered = [c for c in CASES if matrix.results[c.id].rejected is None and not matrix.results[c.id].error]
    errors = [c.id for c in CASES if matrix.results[c.id].error]
    assert not errors, f"neither refused nor rendered: {errors[:10]}"
    assert len(CASES) >= 300 and len(PAYLOADS) >= 12
    # The unmodified spec runs every script to the end in both package families: the
    # stubs answer enough for the whole provisioner to execute, not just its first step.
    base = _evaluate([("base", copy.deepcopy(BASE))])[0][1]
    for name, text in base.files.items():
        if name.endswith(".sh") and "/" not in name:
            for family in ("apt", "dnf"):
                run = matrix.runs.get((_sha(text), family)) or _run(text, base.env[name], family)
                assert run.rc == 0 and "done:" in run.output, f"{name} ({family}):\n{run.output[-3000:]}"
    with capsys.disabled():
        print(f"\nhostile matrix: {len(CASES)} cases ({len(string_fields())} fields x {len(PAYLOADS)} payloads, "
              f"raw and suffixed), {len(CASES) - len(rendered)} refused by validation, {len(rendered)} rendered "
              f"and proven inert; {len(matrix.runs)} distinct script runs; {matrix.seconds:.1f} s")


def test_fields_are_found_from_the_model():
    paths = {key_path(loc) for loc, _ in string_fields()}
    assert {"shares[0].path", "shares[0].mount", "hosts[0].address", "hub.users.home_target",
            "hub.users.read_only_mounts[0].target", "hub.images.singleuser.packages",
            "docker.storage.disks", "docker.version", "nfs_version"} <= paths
    assert "hub.port" not in paths and "shares[0].read_only" not in paths


def test_the_sandbox_catches_an_injection():
    """The check can fail: an unquoted value in a script runs, and the sandbox sees it."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("the sandbox needs root and unshare")
    run = _run("#!/bin/bash\nx=ok\necho $(echo x$(touch /tmp/p))\nmkdir -p /etc/cablab-sandbox-test\n",
               {"STUB_CONTROL": "true", "STUB_PIN": "24.0", "STUB_DRIVER": "overlay2", "STUB_FINDMNT": "",
                "STUB_SECRETS": "", "STUB_FILES": "", "STUB_DISKS": ""}, "apt")
    assert run.injected and run.rc == 0
    assert not Path("/etc/cablab-sandbox-test").exists()  # the overlay kept the write


# --------------------------------------------------------------------------
# Bundle templates the lead is rewriting (stack.yml, jupyterhub_config.py, Dockerfiles)

SHELL_SPECIAL_REQUIREMENTS = ["jupyterlab>=4.0", "numpy<2", "ipywidgets[extra]==8.1.1", "pandas>=2,<3"]


def _render_with_packages(packages: list[str]) -> dict[str, str]:
    data = copy.deepcopy(BASE)
    data["hub"]["images"]["singleuser"]["packages"] = packages
    data["hub"]["images"]["hub"] = {"name": "cablab/hub:1.0", "packages": list(packages)}  # no YAML alias
    result = _evaluate([("pk", data)])[0][1]
    assert result.files, result
    return result.files


def run_words(dockerfile: str) -> list[str]:
    """The pip install RUN of a Dockerfile, split as sh would (operators such as > are words of their own)."""
    text = dockerfile.replace("\\\n", " ")
    line = next(l for l in text.splitlines() if l.startswith("RUN ") and "pip install" in l)
    lex = shlex.shlex(line[4:], posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    return list(lex)


@pytest.mark.parametrize("req", [
    *SHELL_SPECIAL_REQUIREMENTS, "jupyterlab==4.2.5"])
def test_dockerfile_requirements_are_one_word_each(req):
    files = _render_with_packages([req])
    for name in ("hub/Dockerfile", "singleuser/Dockerfile"):
        words = run_words(files[name])
        assert req in words, f"{name}: {req!r} split into {words}"
        assert shlex.quote(req) in files[name]  # and not a glob or redirection left to sh


def test_the_stack_and_config_checks_can_fail():
    r = Result(home_root="/srv/cablab/homes", network="swarmnet", public_url="https://hub.example.org")
    good = _evaluate([("base", copy.deepcopy(BASE))])[0][1].files
    check_stack(good["hub/stack.yml"], r)
    line = "    - /srv/cablab/homes:/srv/cablab/homes"
    assert line in good["hub/stack.yml"]
    bad = good["hub/stack.yml"].replace(line, f"{line}\n    - /:/hostroot")
    with pytest.raises(AssertionError):
        check_stack(bad, r)
    with pytest.raises(AssertionError):
        check_python("x = 1\nevil_value()\n", "evil_value()")
