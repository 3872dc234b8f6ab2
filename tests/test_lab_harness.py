"""The lab harness's report (lab/harness.py); the lab itself needs VMs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from cablab_cluster.plan import make_plan
from cablab_cluster.spec import load_spec
from lab.harness import PHASES, Gates, Report, reference_seconds, stray_domains


def test_the_budget_is_converge_idempotence_and_verify_only():
    r = Report("ubuntu", phases={"up": 200.0, "provision": 250.0, "idempotence": 60.0, "verify": 400.0,
                                 "drills": 540.0, "bench": 900.0})
    assert r.budget() == 710.0
    assert Report("ubuntu", phases={"verify": 400.0}).budget() is None


def test_the_bench_and_the_upgrade_come_after_the_drills():
    """Outside the converge + verify budget; the upgrade last, as it leaves the cluster upgraded."""
    assert PHASES[-3:] == ("drills", "bench", "upgrade")



LAB = Path(__file__).parent.parent / "lab"


def _gates(gated: bool = True) -> Gates:
    return Gates(make_plan(load_spec(LAB / "ubuntu.yml")), gated=gated)


def test_joiners_start_when_the_first_manager_logged_its_swarm_not_when_its_script_ended():
    gates = _gates()
    assert gates.wait("node1", timeout=1) == []
    got: dict = {}
    t = threading.Thread(target=lambda: got.update(node2=gates.wait("node2", timeout=30)))
    t.start()
    on_line = gates.watcher("node1")
    on_line("[cablab node1] step 6/12 nfs_server: changed (created /srv/nfs/homes) in 3.6 s\n")
    gates.watcher("node2")("[cablab node1] step 9/12 swarm_init: ok, no change, in 1 s\n")  # another host's stream
    on_line("[cablab node1] step 8/12 nfs_mounts: changed (mounted) in 9.0 s\n")
    t.join(1.5)
    assert t.is_alive(), "node2 started before node1's swarm existed"
    on_line("[cablab node1] step 9/12 swarm_init: ok, no change, in 9.2 s\n")
    t.join(5)
    assert got == {"node2": ["node1 nfs_server", "node1 swarm_init"]}
    assert not gates.ended["node1"].is_set()  # node1's hub step still runs: node2 did not wait for it


def test_a_failed_first_manager_stops_the_joiners():
    gates = _gates()
    gates.finished("node1", ok=False)
    assert gates.wait("node2", timeout=5) is None


def test_a_first_manager_that_ended_well_lets_the_joiners_go_without_its_lines():
    gates = _gates()
    gates.finished("node1", ok=True)
    assert gates.wait("node3", timeout=5) == ["node1 nfs_server", "node1 swarm_init"]


def test_the_second_run_waits_for_nobody():
    assert _gates(gated=False).wait("node3", timeout=1) == []


LISTED = """96bea6e7-b9c4-4edb-accf-ddbe812f5e90 cablab-lab-ubuntu-node1
ef57219e-c3d0-478d-994b-915d600ecf5b cablab-lab-ubuntu-node2
1111111e-c3d0-478d-994b-915d600ecf5b cablab-lab-centos-node1
"""
VOLUMES = """ Name                          Path
------------------------------------------------
 cablab-lab-ubuntu-node1.img   /var/lib/libvirt/images/cablab-lab-ubuntu-node1.img
 cablab-lab-ubuntu-node3.img   /var/lib/libvirt/images/cablab-lab-ubuntu-node3.img
"""
DOMAINS = {f"node{i}": f"cablab-lab-ubuntu-node{i}" for i in (1, 2, 3)}


def test_vms_this_checkout_does_not_own_are_strays_and_its_own_are_not():
    """CI failed once on `vagrant up`: another checkout's lab VMs held the names."""
    own = {"node1": "96bea6e7-b9c4-4edb-accf-ddbe812f5e90", "node2": None, "node3": None}
    assert stray_domains(DOMAINS, own, LISTED, VOLUMES) == [
        ("cablab-lab-ubuntu-node2", None),      # defined, but not by this checkout
        (None, "cablab-lab-ubuntu-node3.img"),  # a disk whose VM is gone
    ]


def test_a_lab_of_another_variant_is_left_alone_and_owned_vms_are_kept():
    owned = {"node1": "96bea6e7-b9c4-4edb-accf-ddbe812f5e90", "node2": "ef57219e-c3d0-478d-994b-915d600ecf5b"}
    assert stray_domains(DOMAINS, owned, LISTED, "") == []  # cablab-lab-centos-node1 is not ubuntu's


def test_a_joiner_gets_its_own_inputs_and_script_while_it_waits_and_the_tokens_after(tmp_path):
    """The first provision: a worker's image and script go up while the first manager runs; the
    worker token, relayed from the manager, only once its swarm_init has logged; then its script runs."""
    import time
    from types import SimpleNamespace

    from lab.harness import Lab

    plan = make_plan(load_spec(LAB / "ubuntu.yml"))
    lab = Lab.__new__(Lab)
    lab.plan, lab.rendered = plan, tmp_path
    events: list[tuple[str, str]] = []

    def ssh(host, command, **kwargs):
        if "cablab-provision" in command:
            events.append(("run", host))
        return SimpleNamespace(returncode=1 if "sh -c" in command else 0, stdout="{}")  # nothing baked

    lab.ssh = ssh
    lab.upload = lambda host, local, path, mode: events.append(("upload", path))
    lab.relay = lambda source, host, path, mode: events.append(("relay", path))
    lab._local = lambda item: tmp_path / item.path.name
    gates = Gates(plan)
    t = threading.Thread(target=lab._provision_gated, args=("node2", gates, {}, True), daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while ("upload", "/usr/local/sbin/cablab-provision") not in events and time.monotonic() < deadline:
            time.sleep(0.01)
        assert events == [("upload", "/var/cache/cablab/images/singleuser.tar.gz"),
                          ("upload", "/usr/local/sbin/cablab-provision")]  # node1 has not got far yet
        on_line = gates.watcher("node1")
        on_line("[cablab node1] step 6/12 nfs_server: changed (created /srv/nfs/homes) in 3.6 s\n")
        on_line("[cablab node1] step 9/12 swarm_init: changed (swarm initialised) in 11.2 s\n")
        t.join(10)
        assert not t.is_alive()
        assert events[2:] == [("relay", "/etc/cablab/swarm/worker.token"), ("run", "node2")]
    finally:
        gates.finished("node1", False)  # a thread still waiting gives up at once
        t.join(10)


def test_provision_runs_share_one_ssh_connection_per_vm_and_end_it(tmp_path, monkeypatch):
    """Inside `multiplexed()` every ssh and scp names a ControlPath (one master per VM); at its end
    each master is told to exit; outside it, commands open their own connection as before."""
    import lab.harness as harness
    from lab.harness import Lab

    lab = Lab.__new__(Lab)
    lab.ssh_config, lab._control_dir = tmp_path / "ssh-config", None
    ran: list[list[str]] = []
    monkeypatch.setattr(harness, "sh", lambda cmd, **kw: ran.append(cmd))
    exits: list[list[str]] = []
    monkeypatch.setattr(harness.subprocess, "run", lambda cmd, **kw: exits.append(cmd))

    lab.ssh("node1", "true")
    assert not any("ControlPath" in a for a in ran[-1])
    with lab.multiplexed():
        control = lab._control_dir
        lab.ssh("node1", "true")
        lab.upload("node2", tmp_path / "f", "/etc/f")
        (control / "node1").touch()  # the masters ssh would have made
        (control / "node2").touch()
    for cmd in ran[1:]:
        assert "ControlMaster=auto" in cmd and f"ControlPath={control}/%n" in cmd, cmd
    assert ran[2][0] == "scp"
    assert sorted(c[-1] for c in exits) == ["node1", "node2"] and all("-O" in c for c in exits)
    assert lab._control_dir is None and not control.exists()
    lab.ssh("node1", "true")
    assert not any("ControlPath" in a for a in ran[-1])


# --- images and box, built side by side ----------------------------------------------------


class FakeBoxProc:
    def __init__(self):
        self.terminated = threading.Event()

    def poll(self):
        return 143 if self.terminated.is_set() else None

    def terminate(self):
        self.terminated.set()


def _building_lab(tmp_path, monkeypatch, image_fails: str = ""):
    """A Lab whose commands are played here: the base build, the box's build.sh (it waits for the
    tarballs, as the real one does after its own phases), and each image's build (a tarball
    written after a moment, or a failure). Returns (lab, the events in order)."""
    from lab import harness

    monkeypatch.setattr(harness, "CACHE", tmp_path)
    events: list[str] = []
    lock = threading.Lock()

    def note(what: str) -> None:
        with lock:
            events.append(what)

    box = FakeBoxProc()

    def sh(cmd, *, env=None, capture=False, prefix="", started=None, **_):
        import subprocess

        if cmd[:2] == ["docker", "image"]:
            return subprocess.CompletedProcess(cmd, 0, "sha256:base\n" if "{{.Id}}" in cmd else "1000", "")
        if cmd[-1].endswith("build-base.sh"):
            note("base built")
        elif cmd[1].endswith("boxes/build.sh"):
            tarballs = [Path(t) for t in env["CABLAB_BAKED_IMAGES"].split()]
            if started is None:  # alone, after the images: they are there, nothing is waited for
                assert env["CABLAB_BAKED_IMAGES_WAIT"] == "0" and all(t.exists() for t in tarballs)
            else:
                assert env["CABLAB_BAKED_IMAGES_WAIT"] == str(harness.IMAGES_WAIT)
                started(box)
            note("box started")
            while not all(t.exists() for t in tarballs):
                if box.terminated.wait(0.01):
                    note("box stopped")
                    raise harness.LabError("build.sh: terminated")
            note("box built")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    def build_image(self, key, name, context, tarball):
        note(f"{key} building")
        time.sleep(0.2)
        if key == image_fails:
            raise harness.LabError(f"docker build {name} failed")
        tarball.write_bytes(b"image")
        note(f"{key} saved")

    monkeypatch.setattr(harness, "sh", sh)
    monkeypatch.setattr(harness, "image_context", lambda plan, rendered, key: [])
    monkeypatch.setattr(harness.Lab, "_build_image", build_image)
    monkeypatch.setattr(harness.Lab, "baked_packages", lambda self: ["docker.io"])
    lab = object.__new__(harness.Lab)
    lab.spec = load_spec(LAB / "ubuntu.yml")
    lab.plan, lab.rendered, lab.images = None, tmp_path, {}
    lab.box, lab.flavour, lab.report = "cablab/bookworm-baked", "baked", Report("ubuntu")
    lab._box_build, lab._box_procs = None, []
    return lab, events


def test_the_box_builds_beside_both_images_and_ends_after_them(tmp_path, monkeypatch):
    lab, events = _building_lab(tmp_path, monkeypatch)
    lab.build_images(box_beside=True)
    assert events[:2] == ["base built", "box started"]  # the tarballs' names need the base image only
    assert {"hub building", "singleuser building"} == set(events[2:4])  # both at once
    lab.build_box()
    assert events[-1] == "box built" and set(events[4:6]) == {"hub saved", "singleuser saved"}
    assert sorted(p.name.split("-")[0] for p in tmp_path.joinpath("images").iterdir()) == ["hub", "singleuser"]
    assert "MB saved+gzip" in lab.report.notes["image singleuser"]


def test_a_failed_image_stops_the_box_beside_it(tmp_path, monkeypatch):
    import pytest

    from lab import harness

    lab, events = _building_lab(tmp_path, monkeypatch, image_fails="hub")
    with pytest.raises(harness.LabError, match="docker build cablab/hub:lab failed"):
        lab.build_images(box_beside=True)
    assert "box stopped" in events and "box built" not in events
    assert lab._box_build is None


def test_cached_images_build_nothing_and_the_box_alone_after_them(tmp_path, monkeypatch):
    lab, events = _building_lab(tmp_path, monkeypatch)
    lab.build_images(box_beside=True)
    lab.build_box()
    events.clear()
    lab.build_images(box_beside=True)
    assert events == ["base built"]
    lab.build_box()  # not started beside: build.sh runs now (its cache says whether it builds)
    assert events == ["base built", "box started", "box built"]


def test_the_reference_loop_gives_this_machines_wall_and_cpu_seconds():
    small = reference_seconds(n=200_000, runs=2)
    assert set(small) == {"wall", "cpu"} and small["wall"] > 0 and small["cpu"] > 0
    assert small["cpu"] <= small["wall"] * 1.5 + 0.01  # one thread: its CPU time is about its wall time
    larger = reference_seconds(n=2_000_000, runs=1)
    assert larger["cpu"] > small["cpu"]  # the figure grows with the work: it measures the loop
