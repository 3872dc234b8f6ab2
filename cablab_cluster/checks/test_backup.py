"""Backup and restore on the hub host: back up, lose the hub's database and a file in a home,
restore; the user's API token (kept only in the database) works again and the file is back.
Runs /opt/cablab/hub/backup.sh and restore.sh as an operator would. Lab clusters only
(`hub.auth.lab_password`); the homes part needs the hub host to be the NFS server."""

from __future__ import annotations

import uuid

import pytest

from cablab_cluster.layout import HUB_DATA, HUB_DIR

from .spawner import deployed_uids
from .test_notebook import user_token

pytestmark = pytest.mark.cluster

TARGET = "/var/backups/cablab-check"
HUB_BACK = 900  # s: the hub restarts under emulation


def test_backup_then_restore_brings_back_the_database_and_a_home_file(session, username, cluster, nodes,
                                                                      hub_client, wait_until):
    hub = nodes[cluster.hub_host]
    homes_here = cluster.nfs_server == cluster.hub_host
    token = user_token(session, username)
    home = f"{cluster.share(cluster.hub.users.home_share).path}/{username}"
    probe, content = f"{home}/backup-check.txt", uuid.uuid4().hex
    users = cluster.hub.users
    # The user's own uid (the map's, as deployed), never the image's: the home is theirs.
    uid = deployed_uids(nodes, cluster)[username.lower()]
    if homes_here:
        hub.check_output("install -d -o %s -g %s -m 0700 %s", str(uid), str(users.gid), home)
        hub.check_output("printf %%s %s > %s && chown %s:%s %s", content, probe, str(uid), str(users.gid), probe)
    try:
        backup = hub.check_output("%s/backup.sh %s", str(HUB_DIR), TARGET).splitlines()[-1]
        listed = hub.check_output("ls %s", backup).split()
        assert {"manifest.txt", "jupyterhub.sqlite", "secrets.tar.gz", "bundle.tar.gz"} <= set(listed), listed
        assert ("homes.tar.gz" in listed) == homes_here, listed

        # Disaster: the database and the user's file are gone.
        hub.check_output("rm -f %s/jupyterhub.sqlite", str(HUB_DATA))
        if homes_here:
            hub.check_output("rm -f %s", probe)

        hub.check_output("%s/restore.sh %s", str(HUB_DIR), backup)

        def token_works() -> bool:
            try:
                response = hub_client().request("GET", "/hub/api/user", headers={"Authorization": f"token {token}"})
            except Exception:  # the hub is restarting
                return False
            return response.status == 200 and response.json().get("name") == username

        wait_until(token_works, HUB_BACK, f"the hub to accept {username}'s token again (it is only in the database)",
                   interval=1.0)
        if homes_here:
            assert hub.check_output("cat %s", probe) == content
            assert hub.check_output("stat -c %%u:%%g %s", probe) == f"{uid}:{users.gid}"
            assert hub.check_output("stat -c %%u %s", home) == str(uid)  # the home stays the user's
    finally:
        hub.run("rm -rf %s", TARGET)
        if homes_here:
            hub.run("rm -f %s", probe)
