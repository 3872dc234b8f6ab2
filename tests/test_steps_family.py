"""Per OS family, the exact commands of each step: spec + family in, commands out (pyinfra's
operation fixtures, in our terms), for apt and dnf, in the fast suite.

Each case renders a spec, then runs every host's script twice under bash as root in a throw-away
sandbox (tests/families/sandbox.sh: namespaces, an overlay root, /etc/os-release of the family's
distribution) where every OS command (dnf, rpm, apt-get, apt-mark, getenforce, setsebool,
restorecon, systemctl, firewall-cmd, lvm, docker, ...) is a recording stub that keeps state
(tests/families/stub.sh): what the first run installed, held, locked, labelled or enabled, the
second run sees. The calls of each step, for both runs, are compared with
tests/fixtures/families/<case>.json (`CABLAB_UPDATE_SNAPSHOTS=1` to accept a change), and the
second run must change nothing.

This is NOT a real EL (or Debian) run: no Rocky/Alma mirror is reachable here, so the dnf and
SELinux branches run against stubs that answer the way the real tools answer. It proves the flow
(which commands, in which order, guarded by which checks) and idempotence, not that Rocky's
packages or policy behave as the stubs do; the Vagrantfile's public-box path does that on a
workstation that can download `bento/rockylinux-9`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cablab_cluster.layout import secrets_hub_reads
from cablab_cluster.spec import Variant
from cablab_cluster.steps.docker_engine import OFFLINE_DROPIN, OFFLINE_DROPIN_TEXT, daemon_json, engine_labels
from cablab_cluster.steps.preflight import DISTRIBUTIONS
from cablab_cluster.plan import make_plan
from cablab_cluster.render import render_plan
from cablab_cluster.spec import load_spec

HERE = Path(__file__).parent
SPECS = HERE / "fixtures" / "specs"
LAB = HERE.parent / "lab"
FIXTURES = HERE / "fixtures" / "families"
SANDBOX = HERE / "families" / "sandbox.sh"
UPDATE = os.environ.get("CABLAB_UPDATE_SNAPSHOTS") == "1"

STUB_NAMES = ("docker dpkg-query dpkg rpm apt-get apt-cache apt-mark dnf subscription-manager systemctl mount umount "
              "mountpoint findmnt exportfs ufw firewall-cmd hostname curl certbot vgs vgcreate pvcreate lvs lvcreate "
              "lvconvert lvchange mkfs.xfs blkid lsblk xfs_info ss sleep stat timedatectl getenforce selinuxenabled "
              "getsebool setsebool restorecon")

ROCKY_9 = ('NAME="Rocky Linux"\nVERSION="9.4 (Blue Onyx)"\nID="rocky"\nID_LIKE="rhel centos fedora"\n'
           'VERSION_ID="9.4"\nPRETTY_NAME="Rocky Linux 9.4 (Blue Onyx)"')
DEBIAN_12 = ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n'
             'VERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian')

# A call that changes the host: none may come from a second run.
CHANGING = re.compile(r"^(apt-get install|dnf install|dnf versionlock (add|delete)|apt-mark (hold|unhold)|setsebool"
                      r"|restorecon -R|systemctl (enable|start|restart|reload|stop)|firewall-cmd .*--(add|new|remove)-"
                      r"|pvcreate|vgcreate|lvcreate|lvconvert|lvchange|mkfs|mount |docker (swarm (init|join) "
                      r"|network create|pull|build|load|stack deploy)\b|certbot|curl|exportfs -ra|hostname \S"
                      r"|dnf config-manager|subscription-manager)")


@dataclass(frozen=True)
class Case:
    spec: Path
    family: str
    os_release: str
    selinux: str = "Enforcing"  # what getenforce says (dnf hosts)
    firewall: str = "none"  # firewalld: its unit is active (systemctl is-active)
    hosts: tuple[str, ...] = ()  # () = every host
    refused: bool = False  # the preflight refuses the host
    marks: tuple[str, ...] = ()  # what the host already has, in the stub's terms ("fs /dev/vdb")
    files: tuple[tuple[str, str], ...] = ()  # files the host already has: (path, content)


# daemon.json as the release before engine labels wrote it on the centos lab's nodes.
_centos = load_spec(LAB / "centos.yml").cluster
CENTOS_DAEMON_JSON_UNLABELLED = daemon_json(_centos.docker) + "\n"
CENTOS_DAEMON_JSON_LABELLED = daemon_json(_centos.docker, engine_labels(_centos, _centos.host("node2"))) + "\n"

CASES = {
    "el9-selinux.dnf": Case(SPECS / "el9-selinux.yml", "dnf", ROCKY_9, firewall="firewalld"),
    "letsencrypt-docker-repo.apt": Case(SPECS / "letsencrypt-docker-repo.yml", "apt", DEBIAN_12),
    # The seed's thin pool for devicemapper, Docker 20.10 from Docker's rhel repository, on a worker.
    "three-managers-devicemapper.dnf": Case(SPECS / "three-managers-devicemapper.yml", "dnf", ROCKY_9,
                                            firewall="firewalld", hosts=("vm4",)),
    # The centos lab: a Debian 12 box stands in for EL (lab: true), docker.io from Debian.
    "lab-centos.apt": Case(LAB / "centos.yml", "apt", DEBIAN_12, hosts=("node2",)),
    # A running lab node provisioned by the release before engine labels: its daemon.json has none.
    "lab-centos-labels.apt": Case(LAB / "centos.yml", "apt", DEBIAN_12, hosts=("node2",),
                                  marks=("active docker", "enabled docker"),
                                  files=(("/etc/docker/daemon.json", CENTOS_DAEMON_JSON_UNLABELLED),
                                         (OFFLINE_DROPIN, OFFLINE_DROPIN_TEXT + "\n"))),
    # A running node provisioned before the offline-image drop-in (daemon.json as now): Docker restarts.
    "lab-centos-offline.apt": Case(LAB / "centos.yml", "apt", DEBIAN_12, hosts=("node2",),
                                   marks=("active docker", "enabled docker"),
                                   files=(("/etc/docker/daemon.json", CENTOS_DAEMON_JSON_LABELLED),)),
    # The same with another change besides (its log options): Docker restarts.
    "lab-centos-restart.apt": Case(LAB / "centos.yml", "apt", DEBIAN_12, hosts=("node2",),
                                   marks=("active docker", "enabled docker"),
                                   files=(("/etc/docker/daemon.json",
                                           CENTOS_DAEMON_JSON_UNLABELLED.replace('"20m"', '"10m"')),)),
    # An EL spec on a Debian host: refused by the preflight before anything changes.
    "el9-selinux-on-debian.apt": Case(SPECS / "el9-selinux.yml", "apt", DEBIAN_12, hosts=("w1",), refused=True),
}


@dataclass
class Run:
    rc: int
    calls: list[tuple[str, str]] = field(default_factory=list)  # (step, command line)
    output: str = ""
    summary: dict = field(default_factory=dict)

    def by_step(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for step, line in self.calls:
            out.setdefault(step, []).append(line)
        return out


def instrument(script: str) -> str:
    """The script with the running step exported to the stubs (they log it with each call)."""
    old = 'step() { finish_step; STEP_NO=$((STEP_NO + 1)); STEP_NAME=$1;'
    assert old in script
    return script.replace(old, old + " export CABLAB_STUB_STEP=$1;")


def sandbox_env(spec, host: str, case: Case) -> dict[str, str]:
    c = spec.cluster
    hp = make_plan(spec).for_host(host)
    mounts = [m for s in hp.steps if s.kind == "nfs_mounts" for m in s.params.mounts]
    images = [i for i in (c.hub.images.hub, c.hub.images.singleuser) if i.tarball]
    return {
        "STUB_NAMES": STUB_NAMES, "PATH": os.environ["PATH"], "OS_RELEASE": case.os_release,
        "STUB_CONTROL": "true" if hp.host.is_manager else "false",
        "STUB_PIN": c.docker.version or "20.10",
        "STUB_DRIVER": "devicemapper" if c.docker.storage.driver.value.startswith("devicemapper") else "overlay2",
        "STUB_FINDMNT": "".join(f"{m.target}\t{m.source}\n" for m in mounts),
        "STUB_SECRETS": " ".join(secrets_hub_reads(c)),
        "STUB_FILES": "\n".join(str(i.tarball) for i in images),
        "STUB_LOADS": "\n".join(f"{i.tarball} {i.name}" for i in images),
        "STUB_DISKS": "\n".join(str(d) for d in c.docker.storage.disks[:1]),
        "STUB_FW": case.firewall, "STUB_SELINUX": case.selinux, "STUB_MARKS": "\n".join(case.marks),
    }


def run_twice(script: str, env: dict[str, str], family: str, files: tuple[tuple[str, str], ...] = ()) -> list[Run]:
    with tempfile.TemporaryDirectory(prefix="cablab-family-") as work, \
            tempfile.TemporaryDirectory(prefix="cablab-family-pre-") as pre:
        for name, text in files:
            path = Path(pre) / name.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        env = {**env, "STUB_PRE": pre} if files else env
        path = Path(work) / "script.sh"
        path.write_text(instrument(script), encoding="utf-8")
        box = Path(work) / "box"
        box.mkdir()
        proc = subprocess.run(["unshare", "-m", "-u", "-i", "-n", "-p", "-f", "--propagation", "private",
                               "bash", str(SANDBOX), str(box), str(path), family],
                              capture_output=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    runs = []
    for part in proc.stdout.decode(errors="replace").split("\x1c")[:2]:
        head, _, rest = part.partition("\n")
        calls_raw, output, summary = rest.split("\x1d")
        m = re.fullmatch(r"run=\d rc=(\d+)", head)
        assert m, head
        calls = [(rec.split("\x1f")[0], shlex.join(rec.split("\x1f")[1:-1])) for rec in calls_raw.split("\x1e") if rec]
        runs.append(Run(int(m[1]), calls, output, json.loads(summary) if summary.strip() else {}))
    return runs


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, list[Run]]]:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("the sandbox needs root and unshare (namespaces, overlay)")
    out: dict[str, dict[str, list[Run]]] = {}
    for name, case in CASES.items():
        spec = load_spec(case.spec)
        files = render_plan(make_plan(spec))
        hosts = case.hosts or tuple(h.name for h in spec.cluster.hosts)
        out[name] = {h: run_twice(files[f"{h}.sh"], sandbox_env(spec, h, case), case.family, case.files)
                     for h in hosts}
    return out


def fixture_of(runs: dict[str, list[Run]]) -> dict:
    return {host: {f"run {i}": r.by_step() for i, r in enumerate(rs, 1)} for host, rs in runs.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_steps_commands_per_family(results, name):
    got = fixture_of(results[name])
    path = FIXTURES / f"{name}.json"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    expected = json.loads(path.read_text(encoding="utf-8"))
    for host in expected:
        for run in expected[host]:
            for step in sorted(set(expected[host][run]) | set(got[host][run])):
                assert got[host][run].get(step) == expected[host][run].get(step), \
                    f"{name}: {host} {run} step {step} (CABLAB_UPDATE_SNAPSHOTS=1 to accept)"
    assert got == expected


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if not c.refused))
def test_the_second_run_changes_nothing(results, name):
    for host, (first, second) in results[name].items():
        assert first.rc == 0 and "done:" in first.output, f"{host}:\n{first.output[-3000:]}"
        assert second.rc == 0 and "done: " in second.output and ", 0 changed" in second.output, second.output[-3000:]
        assert second.summary["changed"] == 0
        assert not [line for _, line in second.calls if CHANGING.match(line)], host
        assert [line for _, line in first.calls if CHANGING.match(line)], host  # the pattern can match


def test_the_el_flow(results):
    """dnf family, SELinux enforcing, firewalld: what a Rocky 9 host is asked to do, in order."""
    hub, w1 = (results["el9-selinux.dnf"][h][0] for h in ("hub", "w1"))
    steps = hub.by_step()
    # The preflight only reads.
    assert not [line for line in steps["preflight"] if CHANGING.match(line)]
    assert "getenforce" in steps["preflight"]
    # EPEL and CRB before certbot; the certificate is asked for after the stack runs (port 80's responder).
    le = steps["letsencrypt"]
    assert le.index("dnf config-manager --set-enabled crb") < le.index("dnf install -y epel-release") \
        < le.index("dnf install -y certbot openssl")
    assert any(line.startswith("certbot certonly --webroot") for line in steps["letsencrypt_issue"])
    # Docker's repository, the pin installed and then locked.
    engine = steps["docker_engine"]
    assert "dnf install -y python3-dnf-plugin-versionlock" in engine
    assert engine.index("dnf install -y docker-ce-24.0.0-1.el9 docker-ce-cli containerd.io") \
        < engine.index("dnf versionlock add docker-ce")
    # The new XFS labelled after it is mounted; containers confined on the worker, not on the hub host.
    lvm = w1.by_step()["docker_lvm"]
    assert lvm.index("mount /var/lib/docker") < lvm.index("restorecon -R /var/lib/docker")
    w1_engine = w1.by_step()["docker_engine"]
    assert "setsebool -P container_use_nfs 1" in w1_engine and "setsebool -P virt_use_nfs 1" in w1_engine
    notes = {s["name"]: s["notes"] for s in w1.summary["steps"]}
    assert "wrote /etc/docker/daemon.json" in notes["docker_engine"]
    assert "apt" not in " ".join(line for _, line in hub.calls + w1.calls)


def test_the_apt_flow_holds_the_pin_and_keeps_unattended_upgrades_off_docker(results):
    hub = results["letsencrypt-docker-repo.apt"]["hub"][0]
    engine = hub.by_step()["docker_engine"]
    assert engine.index("apt-get install -y --no-install-recommends --allow-downgrades "
                        "'docker-ce=5:28.1.0-1~debian.12~bookworm' docker-ce-cli containerd.io apparmor") \
        < engine.index("apt-mark hold docker-ce")
    notes = {s["name"]: s["notes"] for s in hub.summary["steps"]}
    assert "wrote /etc/apt/apt.conf.d/51cablab-docker" in notes["docker_engine"]
    assert not [line for _, line in hub.calls if line.split()[0] in ("getenforce", "setsebool", "restorecon", "dnf")]


def test_the_centos_lab_runs_on_its_debian_stand_in(results):
    first = results["lab-centos.apt"]["node2"][0]
    assert "WARNING: lab spec: variant centos expects a dnf host; Debian GNU/Linux 12 (bookworm) (apt) stands in" \
        in first.output
    assert "docker.io" in " ".join(first.by_step()["docker_engine"])


def test_an_el_spec_on_debian_is_refused_before_anything_changes(results):
    first, second = results["el9-selinux-on-debian.apt"]["w1"]
    for run in (first, second):
        assert run.rc == 1
        assert ("preflight: variant centos expects Rocky Linux 9 or AlmaLinux 9 or RHEL 9 (dnf); this host is "
                "Debian GNU/Linux 12 (bookworm) (apt): render the spec with variant ubuntu for it") in run.output
        assert "ERROR in step preflight: preflight found 1 problem(s), listed above; nothing was changed" in run.output
        assert {step for step, _ in run.calls} <= {"preflight"}
        assert not [line for _, line in run.calls if CHANGING.match(line)]
        assert run.summary["result"] == "failed" and run.summary["failed_step"] == "preflight"


def test_the_readme_table_is_the_preflights():
    """README's variant ⇄ distribution table names exactly the preflight's distributions per variant."""
    readme = (HERE.parent / "README.md").read_text(encoding="utf-8")
    for v in Variant:
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{v.value}` | ") and "|---" not in line)
        names = [d.name for d in DISTRIBUTIONS if d.family == v.family]
        assert row.split(" | ")[1] == ", ".join(names), row
        assert row.split(" | ")[2] == v.family, row


DEBIAN_11 = DEBIAN_12.replace('VERSION_ID="12"', 'VERSION_ID="11"').replace("12 (bookworm)", "11 (bullseye)")

REFUSALS = {
    "unsupported distribution": (
        Case(SPECS / "letsencrypt-docker-repo.yml", "apt", DEBIAN_11, hosts=("w1",)),
        ["unsupported distribution Debian GNU/Linux 11 (bullseye) (debian 11): supported are Debian 12, "
         "Ubuntu 22.04, Ubuntu 24.04, Rocky Linux 9, AlmaLinux 9, RHEL 9"]),
    "a disk that is not empty": (
        Case(SPECS / "el9-selinux.yml", "dnf", ROCKY_9, hosts=("w1",), marks=("fs /dev/vdb",)),
        ["/dev/vdb (docker.storage.disks) holds a filesystem, LVM or partitions and no volume group docker: "
         "wipe it (wipefs -a /dev/vdb) or name another disk"]),
    "a lab spec's distro Docker on EL, and its disk missing": (
        Case(LAB / "centos.yml", "dnf", ROCKY_9, hosts=("node2",)),
        ["docker.source distro: Rocky Linux 9.4 (Blue Onyx) ships no Docker engine: set docker.source: docker-repo",
         "none of docker.storage.disks (/dev/vdb /dev/sdb) is a block device here"]),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_the_preflight_refuses_with_one_line_per_problem(name):
    """Every problem on a line of its own, exit 1, no call but the preflight's reads, the same again."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("the sandbox needs root and unshare (namespaces, overlay)")
    case, lines = REFUSALS[name]
    spec = load_spec(case.spec)
    host = case.hosts[0]
    env = sandbox_env(spec, host, case)
    if "missing" in name:
        env["STUB_DISKS"] = ""
    for run in run_twice(render_plan(make_plan(spec))[f"{host}.sh"], env, case.family):
        assert run.rc == 1
        got = [line.split("] preflight: ", 1)[1] for line in run.output.splitlines() if "] preflight: " in line]
        assert got == lines
        assert f"ERROR in step preflight: preflight found {len(lines)} problem(s)" in run.output
        assert {step for step, _ in run.calls} <= {"preflight"}
        assert not [line for _, line in run.calls if CHANGING.match(line)]


def test_a_change_of_engine_labels_alone_reloads_docker_and_keeps_its_containers(results):
    """A node provisioned before engine labels: its daemon.json gains them with a reload (SIGHUP), so
    every user's kernel on it keeps running; any other change to daemon.json still restarts Docker."""
    labels = results["lab-centos-labels.apt"]["node2"]
    engine = labels[0].by_step()["docker_engine"]
    assert "systemctl reload docker" in engine and "systemctl restart docker" not in engine
    notes = {s["name"]: s["notes"] for s in labels[0].summary["steps"]}
    assert "reloaded docker for its engine labels" in notes["docker_engine"]
    restart = results["lab-centos-restart.apt"]["node2"][0].by_step()["docker_engine"]
    assert "systemctl restart docker" in restart and "systemctl reload docker" not in restart


def test_swarm_tasks_never_pull_and_the_drop_in_that_says_so_restarts_docker_once(results):
    """Every node's Docker runs with DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 (a drop-in of docker.service):
    a node provisioned before it restarts Docker once for it, and a second run changes nothing."""
    first, second = results["lab-centos-offline.apt"]["node2"]
    engine = first.by_step()["docker_engine"]
    assert engine.index("systemctl daemon-reload") < engine.index("systemctl restart docker")
    assert "systemctl reload docker" not in engine
    notes = {s["name"]: s["notes"] for s in first.summary["steps"]}
    assert f"wrote {OFFLINE_DROPIN}" in notes["docker_engine"]
    assert "restarted docker for cablab-images.conf" in notes["docker_engine"]
    assert "systemctl restart docker" not in second.by_step().get("docker_engine", [])

