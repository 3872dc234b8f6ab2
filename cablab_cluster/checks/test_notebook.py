"""The notebook a scientist comes for, end to end through the hub's HTTPS front door:
log in, start a server, run code in a real kernel (over its websocket, as JupyterLab
does) that reads the data cube, `pip install --user` a package, write into the home;
stop; start again on another node, find the file and the package there, and run every
sample notebook top to bottom. Lab clusters only (`hub.auth.lab_password`): real
clusters log in through GitHub, which these checks cannot drive."""

from __future__ import annotations

import json
import math
import time
import uuid

import pytest

from .early import HUB_RESTART_TIMEOUT
from .kernel import Kernel
from .spawner import deployed_uids
from .test_user import START_TIMEOUT, UserServer, check_read_only_mounts, container, placement

pytestmark = pytest.mark.cluster

CUBE_SEED = "synthetic-cube"


def user_token(session, username: str) -> str:
    response = session.api("POST", f"/users/{username}/tokens", {"note": "cablab-cluster verify", "expires_in": 3600})
    assert response.status in (200, 201), f"creating an API token for {username}: {response}"
    return response.json()["token"]


def open_kernel(session, username: str, token: str) -> Kernel:
    """Start a python3 kernel in the user's server (REST), connect to its websocket."""
    headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    response = session.request("POST", f"/user/{username}/api/kernels", json.dumps({"name": "python3"}).encode(),
                               headers)
    assert response.status == 201, f"starting a kernel in {username}'s server: {response}"
    kernel_id = response.json()["id"]
    url = f"wss://{session.address}:{session.port}/user/{username}/api/kernels/{kernel_id}/channels"
    return Kernel(url, session.netloc, token, session.context, session.public_host, kernel_id,
                  timeout=START_TIMEOUT, keepalive=lambda: keep_active(session, username, token))


def keep_active(session, username: str, token: str) -> None:
    """A request to the user's server through the proxy: activity the hub records (the idle culler
    stops servers without any; a check that waits on a server calls this)."""
    session.request("GET", f"/user/{username}/api/status", headers={"Authorization": f"token {token}"})


# Code run in the kernels. Each prints one JSON line.
READ_CUBE = """
import json, math, os, xarray as xr
ds = xr.open_zarr(os.path.expanduser({path!r}))
points = {points!r}
values = [float(ds[v].isel(time=t).sel(lat=la, lon=lo).values) for v, t, la, lo in points]
mean = float(ds.air_temperature_2m.isel(time=0).mean(dtype="float64").values)
print(json.dumps({{"values": [None if math.isnan(x) else x for x in values], "mean": mean,
                  "variables": sorted(ds.data_vars), "sizes": dict(ds.sizes)}}))
"""

# A wheel made on the spot (no index needed), installed the way a user does it.
PIP_INSTALL_USER = """
import base64, hashlib, json, site, subprocess, sys, zipfile
name, version = "cablab_probe", "1.0"
files = {{f"{{name}}.py": "VALUE = {token!r}\\n",
         f"{{name}}-{{version}}.dist-info/METADATA": "Metadata-Version: 2.1\\nName: cablab-probe\\nVersion: 1.0\\n",
         f"{{name}}-{{version}}.dist-info/WHEEL":
             "Wheel-Version: 1.0\\nGenerator: cablab\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}}
record = [f"{{p}},sha256={{base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b'=').decode()}},"
          f"{{len(t.encode())}}" for p, t in files.items()]
files[f"{{name}}-{{version}}.dist-info/RECORD"] = "\\n".join(record + [f"{{name}}-{{version}}.dist-info/RECORD,,"]) + "\\n"
wheel = f"/tmp/{{name}}-{{version}}-py3-none-any.whl"
with zipfile.ZipFile(wheel, "w") as z:
    for p, t in files.items():
        z.writestr(p, t)
# --force-reinstall: an earlier run's cablab_probe 1.0 (another VALUE) may be in ~/.local already.
r = subprocess.run([sys.executable, "-m", "pip", "install", "--user", "--force-reinstall", "--no-index", "--no-deps", wheel],
                   capture_output=True, text=True)
print(json.dumps({{"rc": r.returncode, "out": r.stdout[-800:], "err": r.stderr[-800:],
                  "user_site": site.getusersitepackages()}}))
"""

WRITE_HOME = """
import json, os, pathlib
p = pathlib.Path.home() / "lab-check.txt"
p.write_text({token!r})
print(json.dumps({{"path": str(p), "uid": os.getuid(), "home": str(pathlib.Path.home())}}))
"""

READ_BACK = """
import json, pathlib, cablab_probe
print(json.dumps({"file": (pathlib.Path.home() / "lab-check.txt").read_text(),
                  "probe": cablab_probe.VALUE, "probe_file": cablab_probe.__file__}))
"""

# Every sample notebook top to bottom in this one kernel (IPython's run_cell: magics, inline plots),
# each from an empty namespace in its own directory, as nbconvert --execute would run it; the
# libraries the notebooks import are loaded once, not once per notebook and kernel. In a function:
# its locals outlive the namespace resets.
RUN_SAMPLES = """
def _run_samples():
    import glob, json, os, time
    from IPython import get_ipython
    shell, here, done = get_ipython(), os.getcwd(), {}
    for nb in sorted(glob.glob(os.path.expanduser("~/samples/*.ipynb"))):
        with open(nb, encoding="utf-8") as fh:
            cells = [c for c in json.load(fh)["cells"] if c["cell_type"] == "code"]
        shell.reset(new_session=False)
        os.chdir(os.path.dirname(nb))
        t0, err = time.monotonic(), ""
        for i, cell in enumerate(cells):
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            result = shell.run_cell(source, store_history=False)
            if not result.success:
                e = result.error_before_exec or result.error_in_exec
                err = f"cell {i}: {type(e).__name__}: {e}"
                break
        done[os.path.basename(nb)] = {"rc": 1 if err else 0, "seconds": round(time.monotonic() - t0, 1),
                                      "err": err}
    os.chdir(here)
    print(json.dumps(done))


_run_samples()
"""


@pytest.fixture(scope="module")
def cube_share(cluster):
    share = next((s for s in cluster.shares if s.seed is not None and s.seed.value == CUBE_SEED), None)
    if share is None:
        pytest.skip("no share is seeded with the synthetic cube: its values are unknown here")
    target = next((m.target for m in cluster.hub.users.read_only_mounts if m.share == share.name), None)
    if target is None:
        pytest.skip(f"share {share.name} (the synthetic cube) is not mounted into users' servers")
    return share, target


def test_a_scientists_day(session, username, early, nodes, cluster, cube_share, wait_until, timings):
    """Kernel reads the cube; pip --user and a file survive a restart on another node; samples run.
    Day one's server was started on the first node at the session's start (conftest.py: `early`).
    While the samples run (a kernel whose websocket is open, through the proxy), the backup check may
    restart the hub (early.py: `HubRestart`): the day asks the hub nothing and writes nothing into
    the home until that restore is done, and stops its server once the hub answers again."""
    from cablab_cluster import cube  # the generator's reference values (the `cube` extra)
    from cablab_cluster.render import sample_notebooks

    users = cluster.hub.users
    hosts = cluster.notebook_hosts
    first, second = hosts[0], hosts[1 % len(hosts)]
    _, cube_target = cube_share
    server = UserServer(session, username, wait_until, poll=1.0)  # each stop and start holds up the rest
    window = early.hub_restart
    started = early.claim(username)
    if started is None:
        server.stop()
    token = uuid.uuid4().hex
    api_token = user_token(session, username)
    try:
        # --- day one, on the first notebook node -------------------------------------------
        t0 = time.monotonic()
        if started is None:
            server.start(first.name)
        spawn = started.seconds if started else round(time.monotonic() - t0, 1)
        timings["spawn (REST start -> ready), first node" + (" (early, alongside others)" if started else "")] = spawn
        assert (server.model() or {}).get("ready"), f"{username}'s server is not ready on day one"
        assert placement(nodes, cluster, username) == first.name
        cid = container(nodes, first, username)
        check_read_only_mounts(nodes, first, cid, cluster)

        t0 = time.monotonic()
        kernel = open_kernel(session, username, api_token)
        try:
            first_result = kernel.json_of("import json; print(json.dumps(6 * 7))", "a first computation")
            timings["kernel start -> first result"] = round(time.monotonic() - t0, 1)
            assert first_result == 42

            t0 = time.monotonic()
            points = [(p.variable, p.time_index, p.lat, p.lon) for p in cube.REFERENCE_POINTS]
            got = kernel.json_of(READ_CUBE.format(path=f"{cube_target}/{cube.CUBE_NAME}", points=points),
                                 "reading the cube with xarray")
            timings["open the cube + read the reference values"] = round(time.monotonic() - t0, 1)
            assert got["variables"] == sorted(cube.VARIABLE_NAMES)
            for p, value in zip(cube.REFERENCE_POINTS, got["values"]):
                if math.isnan(p.value):
                    assert value is None, f"{p.variable} at {p.lat},{p.lon} should be NaN (ocean), got {value}"
                else:
                    assert value == pytest.approx(p.value, rel=1e-6), f"{p} read {value}"
            assert got["mean"] == pytest.approx(cube.REFERENCE_GLOBAL_MEAN_T2M_T0, abs=1e-3)

            pip = kernel.json_of(PIP_INSTALL_USER.format(token=token), "pip install --user")
            assert pip["rc"] == 0, f"pip install --user failed: {pip['err'] or pip['out']}"
            assert pip["user_site"].startswith(str(users.home_target) + "/.local/"), pip["user_site"]
            wrote = kernel.json_of(WRITE_HOME.format(token=token), "writing a file in the home")
            uid = deployed_uids(nodes, cluster)[username.lower()]  # the user's own, not the image's
            assert wrote["uid"] == uid != users.uid and wrote["home"] == str(users.home_target)
        finally:
            kernel.close()
        home = cluster.share(users.home_share)
        on_share = f"{home.path}/{username}/lab-check.txt"  # the hook makes the home with the raw login
        assert nodes.run(cluster.nfs_server, "stat -c %%u:%%g %s", on_share) == f"{uid}:{users.gid}", \
            f"{on_share} on the NFS server should belong to {username}'s uid {uid}"
        assert nodes.run(cluster.nfs_server, "stat -c %%a %s", f"{home.path}/{username}") == "700"
        server.stop()

        # --- the next day, on the other node ----------------------------------------------
        t0 = time.monotonic()
        server.start(second.name)
        timings["spawn (REST start -> ready), second node"] = round(time.monotonic() - t0, 1)
        assert placement(nodes, cluster, username) == second.name
        kernel = open_kernel(session, username, api_token)  # the hub checked the token: the server keeps it
        try:
            window.open()  # the hub may restart now: this kernel's websocket is all the day uses
            back = kernel.json_of(READ_BACK, "reading the file and importing the --user package")
            assert back["file"] == token, f"the file written on {first.name} reads differently on {second.name}"
            assert back["probe"] == token and back["probe_file"].startswith(f"{users.home_target}/.local/")

            # sample 03 writes into the home; the lane may wait minutes for the other checks: keep the
            # kernel's websocket read meanwhile (jupyter-server closes it after 90 s of unanswered pings)
            window.wait_restored(HUB_RESTART_TIMEOUT, meanwhile=kernel.pump)
            t0 = time.monotonic()
            ran = kernel.json_of(RUN_SAMPLES, "running the sample notebooks", timeout=3600)
            timings["sample notebooks (all, one kernel)"] = round(time.monotonic() - t0, 1)
        finally:
            kernel.close()
        expected = [name for name, _ in sample_notebooks()]
        assert sorted(ran) == expected, f"~/samples holds {sorted(ran)}, cablab-cluster ships {expected}"
        for name, result in ran.items():
            timings[f"sample {name}"] = result["seconds"]
            assert result["rc"] == 0, f"{name} failed in {username}'s server:\n{result['err']}"
    finally:
        try:
            window.wait_done(HUB_RESTART_TIMEOUT)  # the hub answers again
        finally:
            server.stop()
