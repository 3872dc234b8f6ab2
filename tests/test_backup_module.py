"""The hub's backup module (cablab_cluster/bundle/cablab_backup.py), run by backup.sh in the hub."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from cablab_cluster.bundle import cablab_backup, text


def test_backup_db_copies_a_database_in_use(tmp_path):
    src, dst = tmp_path / "jupyterhub.sqlite", tmp_path / "backup.sqlite"
    db = sqlite3.connect(src)
    db.execute("create table users (name text)")
    db.executemany("insert into users values (?)", [("alice",), ("bob",)])
    db.commit()
    db.execute("insert into users values ('uncommitted')")  # the hub is writing meanwhile
    assert cablab_backup.main(["backup-db", str(src), str(dst)]) == 0
    db.rollback()
    db.close()
    copy = sqlite3.connect(dst)
    assert sorted(r[0] for r in copy.execute("select name from users")) == ["alice", "bob"]
    copy.close()
    assert dst.stat().st_mode & 0o777 == 0o600 and not (tmp_path / "backup.sqlite.part").exists()
    assert cablab_backup.main(["backup-db", str(src)]) == 2


def test_runs_as_a_script_on_the_standard_library_alone(tmp_path):
    """As backup.sh runs it: a file beside the hub's config, no JupyterHub (nor this package) imported."""
    script = tmp_path / "cablab_backup.py"
    script.write_text(text("cablab_backup.py"))
    src, dst = tmp_path / "db.sqlite", tmp_path / "copy.sqlite"
    sqlite3.connect(src).close()
    probe = ("import runpy, sys; sys.argv = [sys.argv[1], 'backup-db', sys.argv[2], sys.argv[3]]\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit as e:\n    rc = e.code\n"
             "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in "
             "('jupyterhub', 'sqlalchemy', 'dockerspawner', 'oauthenticator', 'cablab_cluster')))")
    out = subprocess.run([sys.executable, "-I", "-c", probe, str(script), str(src), str(dst)],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0 []" and dst.is_file()


def test_the_backup_script_calls_it_where_the_stack_puts_it():
    from cablab_cluster.plan import make_plan
    from cablab_cluster.render import render_plan
    from cablab_cluster.spec.load import load_spec

    files = render_plan(make_plan(load_spec(Path(__file__).parents[1] / "lab" / "ubuntu.yml")))
    assert "python3 /srv/jupyterhub/cablab_backup.py backup-db" in files["hub/backup.sh"]
    assert "cablab_hub.py backup-db" not in files["hub/backup.sh"]
    assert "target: /srv/jupyterhub/cablab_backup.py" in files["hub/stack.yml"]
    assert files["hub/cablab_backup.py"] == text("cablab_backup.py")
