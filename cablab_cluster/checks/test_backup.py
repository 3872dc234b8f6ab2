"""Backup and restore on the hub host: back up, lose the hub's database and a file in a home,
restore; the user's API token (kept only in the database) works again and the file is back.
Runs /opt/cablab/hub/backup.sh and restore.sh as an operator would. Lab clusters only
(`hub.auth.lab_password`); the homes part needs the hub host to be the NFS server.

With the scientist's day selected too, the whole of it runs in a lane (conftest.py: `lanes`) while
that day's sample notebooks run (early.py: `HubRestart`): a restore restarts the hub, and those
notebooks ask it nothing. The check here then claims the lane's outcome."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Callable, Optional

import pytest

from cablab_cluster.layout import HUB_DATA, HUB_DB, HUB_DIR, HUB_LOG_DIR, STACK

from .early import HUB_RESTART_TIMEOUT, HubRestart
from .spawner import deployed_uids
from .test_notebook import user_token

pytestmark = pytest.mark.cluster

TARGET = "/var/backups/cablab-check"
BACKUP_LANE = "backup"  # conftest.py: `lanes`


def backup_and_restore(session, username: str, cluster, nodes, hub_client: Callable[[], Any],
                       wait_until, window: Optional[HubRestart] = None) -> dict[str, float]:
    """The check's flow; its timings. With a `window`, it marks `restored()` once restore.sh has put
    the database and the homes back (the caller marks `done()`)."""
    hub = nodes[cluster.hub_host]
    homes_here = cluster.nfs_server == cluster.hub_host
    token = user_token(session, username)
    home = f"{cluster.share(cluster.hub.users.home_share).path}/{username}"
    probe, content = f"{home}/backup-check.txt", uuid.uuid4().hex
    users = cluster.hub.users
    beside = " (beside the scientist's samples)" if window is not None and window.opened_by_day else ""
    timings: dict[str, float] = {}
    # The user's own uid (the map's, as deployed), never the image's: the home is theirs.
    uid = deployed_uids(nodes, cluster)[username.lower()]
    if homes_here:
        hub.check_output("install -d -o %s -g %s -m 0700 %s", str(uid), str(users.gid), home)
        hub.check_output("printf %%s %s > %s && chown %s:%s %s", content, probe, str(uid), str(users.gid), probe)
    try:
        t0 = time.monotonic()
        backup = hub.check_output("%s/backup.sh %s", str(HUB_DIR), TARGET).splitlines()[-1]
        timings["backup.sh" + beside] = round(time.monotonic() - t0, 1)
        listed = hub.check_output("ls %s", backup).split()
        assert {"manifest.txt", HUB_DB, "secrets.tar.gz", "bundle.tar.gz"} <= set(listed), listed
        assert ("homes.tar.gz" in listed) == homes_here, listed

        # Disaster: the database and the user's file are gone.
        hub.check_output("rm -f %s", str(HUB_DATA / HUB_DB))
        if homes_here:
            hub.check_output("rm -f %s", probe)

        t0 = time.monotonic()
        said = hub.check_output("%s/restore.sh %s", str(HUB_DIR), backup)
        timings["restore.sh" + beside] = round(time.monotonic() - t0, 1)
        if window is not None:
            window.restored()
        # The hub's log from before the restore is kept (scaling it to 0 takes its task's lines from
        # `docker service logs`): the file restore.sh names holds the stopped hub's own start, each line
        # as `docker service logs --timestamps` gives it (the time, then the task).
        saved = re.search(r"^saved the hub's log to (\S+)$", said, re.MULTILINE)
        assert saved and saved.group(1).startswith(f"{HUB_LOG_DIR}/"), said
        assert hub.check_output("stat -c %%a:%%U %s", saved.group(1)) == "600:root"
        kept = hub.check_output("cat %s", saved.group(1))
        assert re.search(rf"^\S+ {STACK}_hub\.1\.\w+@\S+ +\| .*JupyterHub is now running", kept, re.MULTILINE), kept[-2000:]

        def token_works() -> bool:
            try:
                response = hub_client().request("GET", "/hub/api/user", headers={"Authorization": f"token {token}"})
            except Exception:  # the hub is restarting
                return False
            return response.status == 200 and response.json().get("name") == username

        t0 = time.monotonic()
        wait_until(token_works, HUB_RESTART_TIMEOUT,
                   f"the hub to accept {username}'s token again (it is only in the database)", interval=1.0)
        timings["hub answering again after restore.sh" + beside] = round(time.monotonic() - t0, 1)
        if homes_here:
            assert hub.check_output("cat %s", probe) == content
            assert hub.check_output("stat -c %%u:%%g %s", probe) == f"{uid}:{users.gid}"
            assert hub.check_output("stat -c %%u %s", home) == str(uid)  # the home stays the user's
    finally:
        hub.run("rm -rf %s", TARGET)
        if homes_here:
            hub.run("rm -f %s", probe)
    return timings


def test_backup_then_restore_brings_back_the_database_and_a_home_file(session, username, cluster, nodes,
                                                                      hub_client, wait_until, early, lanes,
                                                                      timings):
    lane = lanes.get(BACKUP_LANE)
    if lane is None:
        timings.update(backup_and_restore(session, username, cluster, nodes, hub_client, wait_until))
        return
    early.hub_restart.never()  # every other check has ended: if the day never opened the window, now
    timings.update(lane.claim())
