"""The native extension benchmark's pure parts (benchmarks/extension.py); its starts need Docker."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from benchmarks import extension
from benchmarks.spawn import floor_task_template


def test_the_stub_hub_says_the_locked_version_and_takes_activity(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("aiohttp==3.14.5\nJupyterHub==6.1.1\n")
    assert extension.locked_jupyterhub(lock) == "6.1.1"
    assert extension.locked_jupyterhub() == next(  # the image's own lock
        line.split("==")[1] for line in extension.LOCK.read_text().splitlines() if line.startswith("jupyterhub=="))
    hub = extension.StubHub("6.1.1")
    try:
        with urllib.request.urlopen(hub.api_url + "/") as r:
            assert r.headers["X-JupyterHub-Version"] == "6.1.1" and json.load(r) == {"version": "6.1.1"}
        post = urllib.request.Request(hub.api_url + "/users/bench/activity", data=b'{"servers": {}}', method="POST")
        with urllib.request.urlopen(post) as r:
            assert r.status == 200 and json.load(r) == {}
    finally:
        hub.close()


def test_the_two_starts_are_the_spawners_and_the_spawn_benchmarks_floor():
    hub = extension.create_command("hub", "img:1", "c1", 18888, 1.0, "http://127.0.0.1:9/hub/api")
    assert hub[:2] == ["docker", "create"] and "--cpus=1" in hub and ["--network", "host"] == hub[4:6]
    assert "/home/jovyan:uid=1000,gid=100,mode=0700" in hub
    assert hub[-3:] == ["img:1", "jupyterhub-singleuser", "--ServerApp.root_dir=/home/jovyan"]
    env = dict(hub[i + 1].split("=", 1) for i, a in enumerate(hub) if a == "--env")
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/user/bench/"
    assert env["JUPYTERHUB_SERVICE_URL"] == "http://127.0.0.1:18888/user/bench/"
    assert env["JUPYTERHUB_API_URL"] == "http://127.0.0.1:9/hub/api"
    assert env["JUPYTERHUB_ACTIVITY_URL"] == "http://127.0.0.1:9/hub/api/users/bench/activity"
    floor = extension.create_command("floor", "img:1", "c2", 18889, 0.5, "http://127.0.0.1:9/hub/api")
    assert "--cpus=0.5" in floor and "--env" not in floor
    assert floor[floor.index("img:1") + 1:] == floor_task_template({}, "/home/jovyan", 18889)["ContainerSpec"]["Args"]
    assert extension.answer_url("hub", 5) == "http://127.0.0.1:5/user/bench/api"
    assert extension.answer_url("floor", 5) == "http://127.0.0.1:5/api"


def test_the_first_answer_is_any_status_once_the_server_listens():
    port = extension.free_port()
    url = f"http://127.0.0.1:{port}/api"
    assert extension.first_answer(url, timeout=0.2) is None  # nothing listens

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), NotFound)
    threading.Timer(0.3, server.serve_forever).start()  # bound now, answering 0.3 s later
    try:
        t0 = time.monotonic()
        answered = extension.first_answer(url, timeout=10)
        assert answered is not None and answered - t0 >= 0.25
    finally:
        server.shutdown()
        server.server_close()


def test_the_report_gives_both_the_ratio_and_the_difference():
    r = extension.Report("img:1", 1.0, "now")
    r.starts = {"hub": [1.8, 1.7, 1.75], "floor": [1.5, 1.45, 1.55]}
    r.failures = ["hub #4: no answer within 60 s"]
    r.summarize()
    assert (r.hub.p50, r.floor.p50, r.hub_over_floor_p50, r.extension_s) == (1.75, 1.5, 1.167, 0.25)
    table = r.table()
    assert "hub's way (jupyterhub-singleuser)   3  1.750  1.700  1.800" in table
    assert "hub's way / floor p50: 1.167; the extension: 0.250 s" in table and "failed: hub #4" in table
    empty = extension.Report("img:1", 1.0, "now")
    empty.summarize()
    assert empty.hub_over_floor_p50 is None and empty.extension_s is None and "—" in empty.table()


def test_a_report_is_printed_and_written_as_json(tmp_path, capsys):
    r = extension.Report("img:1", 1.0, "now")
    r.starts = {"hub": [0.66], "floor": [0.57]}
    out = extension.publish(r, str(tmp_path / "sub" / "x.json"), "unused.json")
    assert out == tmp_path / "sub" / "x.json"
    assert json.loads(out.read_text())["hub_over_floor_p50"] == 1.158  # summarized before it was written
    printed = capsys.readouterr().out
    assert "the extension: 0.090 s" in printed and f"report: {out}" in printed


def _fake_site(root, sleeps: dict[str, float]) -> None:
    """Stand-ins for the image's modules: jupyter_server's app, jupyter_core's config path (one
    directory under `root`, enabling `fakeext` and JupyterHub's own, disabling `offext`), aiohttp and
    the single-user extension (which imports aiohttp, as JupyterHub's does), each sleeping as told."""
    def module(path: str, body: str = "") -> None:
        f = root / path
        f.parent.mkdir(parents=True, exist_ok=True)
        name = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        f.write_text(f"import time\ntime.sleep({sleeps.get(name, 0)})\n{body}")

    for pkg in ("jupyter_server", "jupyter_core", "jupyterhub", "jupyterhub/singleuser"):
        module(f"{pkg}/__init__.py")
    module("jupyter_server/serverapp.py")
    module("jupyter_core/paths.py", f"def jupyter_config_path():\n    return [{str(root / 'etc')!r}]\n")
    module("fakeext.py")
    module("offext.py", "raise SystemExit('a disabled extension was imported')\n")
    module("aiohttp.py")
    module("jupyterhub/singleuser/extension.py", "import aiohttp\n")
    conf = root / "etc" / "jupyter_server_config.d"
    conf.mkdir(parents=True)
    (conf / "a.json").write_text(json.dumps({"ServerApp": {"jpserver_extensions": {
        "fakeext": True, "offext": False, "jupyterhub": True}}}))


def test_the_import_probe_times_the_extension_after_what_the_floor_imports_itself(tmp_path):
    """IMPORT_PROBE run for real (this python, stand-in modules): the floor's app and its enabled
    extensions come first and are not counted; aiohttp is counted apart and inside the extension's
    figure; a disabled extension and JupyterHub's own are not imported first."""
    import subprocess
    import sys

    _fake_site(tmp_path, {"jupyter_server.serverapp": 0.3, "fakeext": 0.3, "aiohttp": 0.05,
                          "jupyterhub.singleuser.extension": 0.02})
    done = subprocess.run([sys.executable, "-c", extension.IMPORT_PROBE], capture_output=True, text=True,
                          cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    got = extension.probe_result(done.stdout, done.stderr, done.returncode)
    assert got["preloaded"] == ["fakeext"]
    assert 50 <= got["aiohttp_ms"] < 300  # the floor's own 0.6 s are not in it
    assert got["aiohttp_ms"] + 20 <= got["extension_ms"] < 300


def test_a_failed_probe_is_said_and_the_table_gives_the_imports():
    try:
        extension.probe_result("", "ModuleNotFoundError: No module named 'aiohttp'", 1)
    except RuntimeError as e:
        assert "No module named 'aiohttp'" in str(e)
    else:
        raise AssertionError("a failed probe passed")
    r = extension.Report("img:1", 1.0, "now")
    r.starts = {"hub": [0.66], "floor": [0.57]}
    r.imports = {"extension_ms": [53.0, 50.2, 55.1], "aiohttp_ms": [42.0, 40.1, 43.0]}
    r.preloaded = ["jupyter_lsp", "jupyterlab"]
    r.summarize()
    table = r.table()
    assert "the extension's imports beyond the floor's own (n=3): p50 53.0 ms (50.2-55.1), of which aiohttp " \
           "42.0 ms (40.1-43.0)" in table
    assert "imported first, as jupyter-server does: jupyter_server.serverapp, jupyter_lsp, jupyterlab" in table
    none = extension.Report("img:1", 1.0, "now")
    none.summarize()
    assert "imports" not in none.table()
