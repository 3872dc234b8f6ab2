"""The single-user image's edit of JupyterHub's imports (cablab_cluster/bundle/lazy_hub_imports.py),
applied here to a copy of the JupyterHub this suite runs (the lock's version)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jupyterhub
import pytest

from cablab_cluster.bundle import LAZY_IMPORTS, lazy_hub_imports, locked, text

SCRIPT = Path(lazy_hub_imports.__file__)


def copy_of_jupyterhub(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    shutil.copytree(Path(jupyterhub.__file__).parent, site / "jupyterhub",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return site / "jupyterhub"


def in_copy(site: Path, *args: str) -> subprocess.CompletedProcess:
    """Python with the copy first on the path (it shadows the installed JupyterHub)."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})


def test_written_for_the_locked_jupyterhub():
    assert lazy_hub_imports.FOR_VERSION == locked("jupyterhub") == jupyterhub.__version__
    assert text(LAZY_IMPORTS) == SCRIPT.read_text()


# What JupyterHub's single-user extension imports of JupyterHub outside its own package, at its top
# (jupyterhub/singleuser/extension.py and mixins.py; the package itself needs jupyter-server, which
# this suite has not: the image's build runs --verify on the extension).
EXTENSION_IMPORTS = ("jupyterhub.httpclient", "jupyterhub.log", "jupyterhub.services.auth", "jupyterhub.utils")
PROBE = (f"import sys; sys.path.insert(0, {str(SCRIPT.parent)!r}); import lazy_hub_imports as m; "
         f"print(m.imported_hub_only({EXTENSION_IMPORTS!r}))")


def test_what_the_extension_imports_loads_no_database_layer_once_edited(tmp_path):
    package = copy_of_jupyterhub(tmp_path)
    before = in_copy(package.parent, "-c", PROBE)
    assert before.returncode == 0, before.stderr
    assert {"sqlalchemy", "alembic", "jupyterhub.orm", "jupyterhub.handlers"} <= set(eval(before.stdout))
    applied = in_copy(package.parent, str(SCRIPT), str(package))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip() == "lazy_hub_imports: edited log.py, metrics.py, scopes.py, utils.py"
    after = in_copy(package.parent, "-c", PROBE)
    assert after.returncode == 0 and after.stdout.strip() == "[]", after.stderr + after.stdout


def test_verify_fails_while_the_extension_cannot_be_imported_quietly(tmp_path):
    """--verify imports the real extension: here, without jupyter-server, it fails (exit 1), never
    passes by not looking."""
    package = copy_of_jupyterhub(tmp_path)
    lazy_hub_imports.apply(package)
    assert in_copy(package.parent, str(SCRIPT), "--verify").returncode != 0


def test_the_hub_side_still_finds_what_moved(tmp_path):
    """What the edits made lazy is there when the hub's code asks for it: the ORM through scopes, the
    rollback of catch_db_error on a database error, log_request's health-check handler."""
    package = copy_of_jupyterhub(tmp_path)
    lazy_hub_imports.apply(package)
    probe = """
import asyncio, logging, sys
from jupyterhub import scopes, utils, log
assert "sqlalchemy" not in sys.modules
assert scopes.orm.User.__tablename__ == "users" and callable(scopes.roles.get_roles_for)
assert scopes.sa.inspect is __import__("sqlalchemy").inspect
from sqlalchemy.exc import OperationalError
class Handler:
    log = logging.getLogger("t")
    rolled = False
    class db:
        @staticmethod
        def rollback():
            Handler.rolled = True
    @utils.catch_db_error
    def fails(self):
        raise OperationalError("select", {}, Exception("db gone"))
asyncio.run(Handler().fails())
assert Handler.rolled
assert log._health_check_handler() is __import__("tornado.web").web.StaticFileHandler
from jupyterhub.handlers.pages import HealthCheckHandler
assert log._health_check_handler() is HealthCheckHandler
import jupyterhub.app  # the hub's whole application still imports
print("ok")
"""
    done = in_copy(package.parent, "-c", probe)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_another_jupyterhub_is_refused_and_nothing_is_edited(tmp_path):
    package = copy_of_jupyterhub(tmp_path)
    scopes = package / "scopes.py"
    scopes.write_text(scopes.read_text().replace("from . import orm, roles\n", "from . import orm\nfrom . import roles\n"))
    originals = {name: (package / name).read_text() for name in lazy_hub_imports.EDITS}
    with pytest.raises(lazy_hub_imports.NotApplicable, match="jupyterhub/scopes.py: 'from . import orm, roles'"):
        lazy_hub_imports.apply(package)
    assert {name: (package / name).read_text() for name in lazy_hub_imports.EDITS} == originals  # all or none
    assert lazy_hub_imports.main([str(package)]) == 1
    assert lazy_hub_imports.main([]) == 2


def test_the_single_user_build_runs_it_and_verifies():
    from cablab_cluster.plan import make_plan
    from cablab_cluster.render import Renderer
    from cablab_cluster.spec import load_spec

    context = Renderer(make_plan(load_spec(Path(__file__).parents[1] / "lab" / "ubuntu.yml"))).build_context("singleuser")
    assert context[LAZY_IMPORTS] == text(LAZY_IMPORTS)
    dockerfile = context["Dockerfile"]
    assert f"COPY {LAZY_IMPORTS} /tmp/{LAZY_IMPORTS}" in dockerfile
    edit, verify = dockerfile.index(f'/tmp/{LAZY_IMPORTS} "$hub"'), dockerfile.index(f"/tmp/{LAZY_IMPORTS} --verify")
    assert edit < dockerfile.index('compileall -q -f --invalidation-mode unchecked-hash "$hub"') < verify
