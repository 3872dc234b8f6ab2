"""Names the hub's spawner (dockerspawner's SwarmSpawner) gives a user's server."""

from __future__ import annotations

import string


def escaped_username(name: str) -> str:
    """dockerspawner's {username}, as DockerSpawner._escape makes it (dockerspawner 14):
    lower-case letters and digits kept, every other byte as -XX, then lower-cased."""
    from escapism import escape  # what dockerspawner itself uses; in the lab extra

    return escape(name, safe=set(string.ascii_lowercase + string.digits), escape_char="-").lower()


def service_name(name: str) -> str:
    """SwarmSpawner's service for a user's default server: name_template "{prefix}-{username}", prefix "jupyter"."""
    return f"jupyter-{escaped_username(name)}"


def deployed_uids(nodes, cluster) -> dict[str, int]:
    """Each userlist user's uid as the hub has it (cablab.json in the hub's bundle on the hub host)."""
    import json

    from cablab_cluster.layout import HUB_DIR

    data = json.loads(nodes[cluster.hub_host].check_output("cat %s", f"{HUB_DIR}/cablab.json"))
    return {name: int(uid) for name, uid in data["spawner"]["uids"].items()}
