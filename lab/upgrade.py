"""The upgrade pass on a provisioned lab cluster (a drill-like phase, after verify or the drills).

    python -m lab ubuntu --upgrade              # the whole lab, then the upgrade pass
    python -m lab ubuntu --from upgrade         # only the upgrade pass, on VMs an earlier run left up

What an operator does to upgrade, and what must hold afterwards:

1. A user's server runs and has a file in its home (the "old server").
2. The spec changes: a single-user package is added (`hub.images.singleuser.packages`) and a hub
   setting changes (`hub.users.cull.timeout`); re-rendered, the images rebuilt from the new render,
   the new image tarballs copied to the nodes, every host's provisioner run again in plan order.
3. The hub rolled (a new task of the hub service) onto the new settings; the old server kept running
   (the same task) and still serves the file; stopped and started again, the user's server runs the
   new single-user image (the node's current image ID, not the old one) with the home intact.
4. A second run of every provisioner changes nothing.

The upgraded spec is written beside the lab's spec (same cluster name, so the same secrets) as
`lab/.<variant>-upgraded.yml`, and the render into `.vagrant/<variant>/upgraded/`; the cluster is
left upgraded. Results go to the lab report (`notes["upgrade"]`).
"""

from __future__ import annotations

import io
import shlex
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML

from cablab_cluster.checks.spawner import service_name
from cablab_cluster.layout import HUB_DIR
from cablab_cluster.plan import STACK, make_plan
from cablab_cluster.render import render_plan, write_tree
from cablab_cluster.spec import load_spec
from lab.drills import START_TIMEOUT, Cluster, DrillFailed, HubUser, log, wait_for

if TYPE_CHECKING:
    from lab.harness import Lab

# A small pure-Python package that is in no lock of ours: the new image has it, the old one not.
ADDED_PACKAGE = "tqdm==4.67.1"
CULL_TIMEOUT_STEP = 600  # s added to hub.users.cull.timeout: a hub setting that changes the hub's config


def upgraded_spec(text: str) -> str:
    """The lab spec with the upgrade's two changes, written back by the YAML emitter (comments kept)."""
    yaml = YAML()  # round-trip
    data = yaml.load(text)
    images = data["hub"].setdefault("images", {})
    singleuser = images.setdefault("singleuser", {"name": "cablab/singleuser:1.0"})
    packages = list(singleuser.get("packages", []))
    if ADDED_PACKAGE not in packages:
        packages.append(ADDED_PACKAGE)
    singleuser["packages"] = packages
    cull = data["hub"]["users"].setdefault("cull", {})
    cull["timeout"] = int(cull.get("timeout", 3600)) + CULL_TIMEOUT_STEP
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _image_id(cl: Cluster, host: str, ref: str) -> str:
    out = cl.run(host, f"sudo docker image inspect --format '{{{{.Id}}}}' {shlex.quote(ref)}", check=False)
    return out.stdout.strip()


def _server_image(cl: Cluster, host: str, service: str) -> str:
    """The image ID of the service's running container on `host`."""
    out = cl.run(host, "sudo docker inspect --format '{{.Image}}' $(sudo docker ps -q --filter "
                       f"label=com.docker.swarm.service.name={shlex.quote(service)})", check=False)
    return out.stdout.strip()


KEEPALIVE_EVERY = 30.0  # s, well inside any cull timeout


def kept_active(user: HubUser, every: float = KEEPALIVE_EVERY) -> threading.Event:
    """A request to the user's server through the proxy every `every` s (activity the hub records)
    until the returned event is set."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every):
            try:
                user.server_request("GET", "api/status")
            except Exception:  # noqa: BLE001, S110  # the checks after it say what is wrong with the server
                pass

    threading.Thread(target=run, name="upgrade-keepalive", daemon=True).start()
    return stop


def run(lab: Lab) -> dict[str, Any]:
    c = lab.spec.cluster
    if not c.hub.auth.lab_password:
        raise DrillFailed("the upgrade pass drives a lab user: the spec needs hub.auth.lab_password")
    result: dict[str, Any] = lab.report.notes.setdefault("upgrade", {})  # type: ignore[assignment]
    cl = Cluster(lab)
    user = HubUser(lab)
    service = service_name(user.name)
    ref = c.hub.images.singleuser.name
    note, text = f"upgrade-{uuid.uuid4().hex[:8]}.txt", uuid.uuid4().hex
    keepalive: threading.Event | None = None
    try:
        wait_for(user.login_page_up, 300, "the hub's login page", interval=5)
        user.login()
        user.stop()
        t0 = time.monotonic()
        started = user.start()
        if started.status not in (201, 202):
            raise DrillFailed(f"starting {user.name}'s server: {started}")
        user.wait_ready("before the upgrade")
        user.write_file(note, text)
        # Kept active while the upgrade runs (the nodes' `docker load` takes minutes under emulation):
        # the idle culler must not be what stops the old server.
        keepalive = kept_active(user)
        old_task = cl.running_task(service)
        hub_task = cl.running_task(f"{STACK}_hub")
        if old_task is None or hub_task is None:
            raise DrillFailed(f"before the upgrade: server task {old_task}, hub task {hub_task}")
        old_image = _server_image(cl, old_task.node, service)
        log(f"old server {old_task.id[:12]} on {old_task.node}, image {old_image[:19]}; hub task {hub_task.id[:12]}")

        # The operator's upgrade: a new spec, a new render, new images, every provisioner again.
        if not lab.images:  # --from upgrade: the images of the current render (cached), to compare
            lab.build_images()
        spec_path = lab.spec_path.with_name(f".{lab.variant}-upgraded.yml")
        spec_path.write_text(upgraded_spec(lab.spec_path.read_text(encoding="utf-8")), encoding="utf-8")
        lab.spec_path, lab.spec = spec_path, load_spec(spec_path)
        lab.plan = make_plan(lab.spec)
        lab.rendered = lab.state / "upgraded"
        write_tree(render_plan(lab.plan), lab.rendered, spec_path)
        t1 = time.monotonic()
        before = dict(lab.images)
        lab.build_images()
        result["images s"] = round(time.monotonic() - t1, 1)
        result["new images"] = sorted(k for k in lab.images if lab.images[k] != before.get(k))
        # The new tarballs go where the plan says they are needed: a node whose image under the
        # tag lacks the new image's identity label (steps/image.py), as an operator's README says.
        t1 = time.monotonic()
        first = lab.provision()
        result["provision s"] = round(time.monotonic() - t1, 1)
        result["changed"] = {h: v["changed_steps"] for h, v in first.items()}

        # The hub rolled onto the new settings; the old server kept running.
        def rolled() -> bool | None:
            task = cl.running_task(f"{STACK}_hub")
            return task is not None and task.id != hub_task.id

        result["hub rolled s"] = wait_for(rolled, START_TIMEOUT, "a new hub task", interval=5)[1]
        timeout = lab.spec.cluster.hub.users.cull.timeout
        config = cl.run(c.hub_host.name, f"sudo grep -c '\"timeout\": {timeout}' {HUB_DIR}/cablab.json", check=False)
        if config.stdout.strip() != "1":
            raise DrillFailed(f"the hub's config does not have the new cull timeout {timeout}")
        wait_for(user.login_page_up, 300, "the hub's login page after the roll", interval=5)
        still = cl.running_task(service)
        if still is None or still.id != old_task.id:
            raise DrillFailed(f"the old server did not keep running: {old_task} -> {still}")
        if user.read_file(note) != text:
            raise DrillFailed(f"the old server does not serve ~/{note} after the upgrade")
        keepalive.set()

        # New spawns get the new image, the home is intact.
        user.stop()
        started = user.start()
        if started.status not in (201, 202):
            raise DrillFailed(f"starting {user.name}'s server after the upgrade: {started}")
        result["new server ready s"] = user.wait_ready("after the upgrade")
        task = cl.running_task(service)
        if task is None:
            raise DrillFailed(f"{user.name}'s new server has no running task")
        new_image, current = _server_image(cl, task.node, service), _image_id(cl, task.node, ref)
        if not new_image or new_image != current or new_image == old_image:
            raise DrillFailed(f"the new server runs {new_image[:19]}, the node's {ref} is {current[:19]}, "
                              f"the old server ran {old_image[:19]}")
        if user.read_file(note) != text:
            raise DrillFailed(f"~/{note} is not in the home after the upgrade")
        user.stop()

        second = lab.provision(upload=False)
        changed = {h: v["changed_steps"] for h, v in second.items() if v["changed"] != 0}
        if changed:
            raise DrillFailed(f"a second provision after the upgrade changed something: {changed}")
        result["upgrade s"] = round(time.monotonic() - t0, 1)
    except Exception as exc:
        result["failed"] = str(exc)[:500]
        raise
    finally:
        if keepalive is not None:
            keepalive.set()
        user.close()
        lab.report.save()
    log(f"upgrade: {result}")
    return result

