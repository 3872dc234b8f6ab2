"""The swarm steps: the overlay network (encrypted by default; a network that differs from the
spec is recreated when unused, else the run stops with the exact commands), the hub's node
label, and the join token as a file. Fixtures (spec in, commands out) and runs against a
stateful stand-in of the docker CLI (tests/fakes/docker: not a real Docker)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from cablab_cluster.plan import make_plan
from cablab_cluster.render import Renderer
from cablab_cluster.spec import load_spec

FAKES = Path(__file__).parent / "fakes"
LAB = Path(__file__).parent.parent / "lab"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the provisioners refuse to run without root")


def step_text(r: Renderer, host: str, kind: str) -> str:
    hp = r.plan.for_host(host)
    return r.step(next(s for s in hp.steps if s.kind == kind))


def script(r: Renderer, host: str, body: str, tmp: Path) -> Path:
    hp = r.plan.for_host(host)
    steps = [s for s in hp.steps if s.kind == body.split("\n", 1)[0].removeprefix("step ")]
    path = tmp / "t.sh"
    path.write_text(r.render_template("prelude.sh.j2", host=hp.host, steps=steps, after=(), why_after="")
                    + body + r.render_template("footer.sh.j2"))
    return path


def run(path: Path, tmp: Path, docker: dict | None = None) -> subprocess.CompletedProcess:
    bin_dir, state = tmp / "bin", tmp / "state"
    bin_dir.mkdir(exist_ok=True)
    state.mkdir(exist_ok=True)
    shutil.copy(FAKES / "docker", bin_dir / "docker")
    if docker is not None:
        (state / "docker.json").write_text(json.dumps(docker))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_STATE": str(state),
           "CABLAB_LOG": str(tmp / "log"), "CABLAB_STATE_DIR": str(tmp / "cablab")}
    return subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env)


def docker_state(tmp: Path) -> dict:
    return json.loads((tmp / "state" / "docker.json").read_text())


def lab() -> Renderer:
    return Renderer(make_plan(load_spec(LAB / "ubuntu.yml")))


# -- the overlay network -----------------------------------------------------

def test_the_overlay_is_encrypted_by_default_and_esp_is_open(write_spec):
    r = Renderer(make_plan(load_spec(write_spec(lambda d: d["swarm"].pop("attachable")))))
    assert r.c.swarm.encrypted is True
    assert "  run docker network create --driver overlay --attachable --opt encrypted swarmnet\n" \
        in step_text(r, "node1", "swarm_network")
    assert "  want_protocols=(esp)\n" in step_text(r, "node2", "firewall")
    plain = Renderer(make_plan(load_spec(write_spec(lambda d: d["swarm"].update(encrypted=False)))))
    assert "  run docker network create --driver overlay --attachable swarmnet\n" \
        in step_text(plain, "node1", "swarm_network")


@needs_root
def test_a_missing_network_is_created_once(tmp_path):
    r = lab()
    path = script(r, "node1", step_text(r, "node1", "swarm_network"), tmp_path)
    first = run(path, tmp_path, {})
    assert first.returncode == 0, first.stderr
    assert docker_state(tmp_path)["networks"]["swarmnet"] == {"id": "id0swarmnet", "attachable": True,
                                                               "encrypted": True}
    second = run(path, tmp_path)
    assert second.stdout.splitlines()[-1] == "[cablab node1] done: 1 steps, 0 changed"


@needs_root
def test_an_unused_network_that_differs_is_recreated(tmp_path):
    r = lab()
    path = script(r, "node1", step_text(r, "node1", "swarm_network"), tmp_path)
    proc = run(path, tmp_path, {"networks": {"swarmnet": {"id": "old", "attachable": True, "encrypted": False}},
                                "services": {"other": ["elsewhere"]}})
    assert proc.returncode == 0, proc.stderr
    assert "recreated overlay network swarmnet (overlay true plain -> overlay true encrypted)" in proc.stdout
    assert docker_state(tmp_path)["networks"]["swarmnet"]["encrypted"] is True


@needs_root
def test_a_network_in_use_stops_the_run_with_the_exact_commands(tmp_path):
    r = lab()
    path = script(r, "node1", step_text(r, "node1", "swarm_network"), tmp_path)
    services = {"cablab_hub": ["old"], "cablab_proxy": ["swarmnet"], "jupyter-alice": ["swarmnet"],
                "unrelated": ["other"]}
    proc = run(path, tmp_path, {"networks": {"swarmnet": {"id": "old", "attachable": True, "encrypted": False}},
                                "services": services})
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "The overlay network swarmnet is overlay true plain, the spec wants overlay true encrypted; "
        "services use it: cablab_hub cablab_proxy jupyter-alice.",
        "To recreate it (the hub and every user's server stop; homes and the hub's database are kept), on this host:",
        "  docker stack rm cablab",
        "  docker service rm jupyter-alice",
        "then, once the services are gone (docker service ls), run this script again: it recreates swarmnet "
        "and deploys the hub.",
        "[cablab node1] ERROR in step swarm_network: overlay network swarmnet is 'overlay true plain', the spec "
        "wants 'overlay true encrypted', and services use it: see the commands above"]
    assert docker_state(tmp_path)["networks"]["swarmnet"]["encrypted"] is False  # nothing changed


# -- the hub's node label ----------------------------------------------------

def label_block(r: Renderer) -> str:
    hub = step_text(r, "node1", "hub")
    start = hub.index("# The stack's services are pinned")
    return "step hub\n" + hub[start:hub.index("if [ \"$(/opt/cablab/hub/deploy.sh)\"")]


@needs_root
def test_the_hub_host_labels_itself_and_no_other_node_keeps_the_label(tmp_path):
    r = lab()
    path = script(r, "node1", label_block(r), tmp_path)
    nodes = {"self": {"labels": {}}, "old-hub": {"labels": {"cablab.hub": "true", "keep": "x"}}}
    proc = run(path, tmp_path, {"nodes": nodes})
    assert proc.returncode == 0, proc.stderr
    assert docker_state(tmp_path)["nodes"] == {"self": {"labels": {"cablab.hub": "true"}},
                                               "old-hub": {"labels": {"keep": "x"}}}
    again = run(path, tmp_path)
    assert again.stdout.splitlines()[-1] == "[cablab node1] done: 1 steps, 0 changed"


# -- the heartbeat period -------------------------------------------------------

def init_script(r: Renderer, tmp: Path) -> Path:
    body = step_text(r, "node1", "swarm_init").replace("/etc/cablab/swarm", str(tmp / "swarm"))
    return script(r, "node1", body, tmp)


@needs_root
def test_a_new_swarm_starts_with_the_specs_heartbeat(tmp_path):
    r = lab()
    assert r.c.swarm.heartbeat == 10
    proc = run(init_script(r, tmp_path), tmp_path, {"swarm": "inactive"})
    assert proc.returncode == 0, proc.stderr
    assert docker_state(tmp_path)["heartbeat_ns"] == 10_000_000_000
    assert "swarm update" not in (tmp_path / "state" / "calls").read_text()


@needs_root
def test_a_swarm_with_another_heartbeat_gets_the_specs_once(tmp_path):
    path = init_script(lab(), tmp_path)
    proc = run(path, tmp_path, {"swarm": "active"})  # made before the key: dockerd's 5 s
    assert proc.returncode == 0, proc.stderr
    assert "heartbeat period set to 10 s" in proc.stdout + (tmp_path / "log").read_text()
    assert docker_state(tmp_path)["heartbeat_ns"] == 10_000_000_000
    again = run(path, tmp_path)
    assert again.stdout.splitlines()[-1] == "[cablab node1] done: 1 steps, 0 changed"


def test_the_heartbeat_keeps_a_lost_server_noticed_within_a_minute(write_spec):
    from cablab_cluster.spec import SpecError

    assert load_spec(write_spec(lambda d: d["swarm"].pop("heartbeat", None))).cluster.swarm.heartbeat == 5
    with pytest.raises(SpecError) as e:
        load_spec(write_spec(lambda d: d["swarm"].update(heartbeat=15)))
    assert "swarm.heartbeat: Input should be less than or equal to 14 (hint: write 14 or less: three missed " \
        "heartbeats mark a node down" in str(e.value)
    with pytest.raises(SpecError):
        load_spec(write_spec(lambda d: d["swarm"].update(heartbeat="10; reboot")))


# -- the join token ------------------------------------------------------------

def join_script(tmp: Path) -> Path:
    r = lab()
    body = step_text(r, "node2", "swarm_join").replace("/etc/cablab/swarm", str(tmp / "swarm"))
    return script(r, "node2", body, tmp)


COPY = ("ssh node1 'sudo cat /etc/cablab/swarm/worker.token' | ssh node2 'sudo install -d -m 0700 /etc/cablab/swarm"
        " && sudo install -m 0600 /dev/stdin /etc/cablab/swarm/worker.token'")


def test_the_join_token_is_a_file_input_with_its_copy_command():
    plan = lab().plan
    (token,) = [i for i in plan.for_host("node2").inputs if i.kind.value == "join-token"]
    assert (str(token.path), token.mode, token.from_host) == ("/etc/cablab/swarm/worker.token", "0600", "node1")
    assert token.copy_command("node2") == COPY
    text = step_text(lab(), "node2", "swarm_join")
    assert "CABLAB_SWARM_TOKEN" not in text
    assert "ensure_dir /etc/cablab/swarm 0:0 0700\n" in text


@needs_root
def test_without_its_token_a_joining_host_stops_and_says_how_to_copy_it(tmp_path):
    path = join_script(tmp_path)
    proc = run(path, tmp_path, {"swarm": "inactive", "control": "false"})
    assert proc.returncode == 1
    copy = COPY.replace("/etc/cablab/swarm", str(tmp_path / "swarm"))  # the test's token directory
    assert proc.stderr.splitlines()[:2] == ["Copy the worker join token from node1, on your machine:", f"  {copy}"]
    assert stat.S_IMODE((tmp_path / "swarm").stat().st_mode) == 0o700  # made by the step, root's only

    (tmp_path / "swarm" / "worker.token").write_text("SWMTKN-right\n")
    proc = run(path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "joined the swarm as worker" in proc.stdout
    assert stat.S_IMODE((tmp_path / "swarm" / "worker.token").stat().st_mode) == 0o600
    assert "SWMTKN-right" not in (tmp_path / "log").read_text()  # the token stays out of the log
    again = run(path, tmp_path)
    assert again.stdout.splitlines()[-1] == "[cablab node2] done: 1 steps, 0 changed"
