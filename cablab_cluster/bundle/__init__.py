"""Static files of the hub bundle, shipped as they are (never templated).

- `cablab_hub.py`: the hub's own Python (resolver, lab login, spawn hook,
  `configure`), delivered to the hub as a swarm config beside
- `jupyterhub_config.py`: static; it reads the rendered data file `cablab.json`
  and calls `cablab_hub.configure` (the-littlest-jupyterhub's configurer model).
- `singleuser-constraints.txt`: the single-user image's lock, one file for every
  node's build; `lazy_hub_imports.py`: run in that build, it moves four module-level imports of
  the locked JupyterHub so that a user's server does not load the hub's database layer;
  `singleuser-start.sh`: the image's entrypoint (under tini), which seeds a new home with what the
  build made once for everyone (matplotlib's font list).
"""

from __future__ import annotations

from importlib.resources import files


def text(name: str) -> str:
    """A static bundle file's content."""
    return files(__package__).joinpath(name).read_text(encoding="utf-8")


LOCK = "singleuser-constraints.txt"
LAZY_IMPORTS = "lazy_hub_imports.py"  # the single-user image's build-time edit of JupyterHub's imports
START = "singleuser-start.sh"  # the single-user image's entrypoint: seeds new homes, then runs the server
# The single-user image's build context besides its Dockerfile (and extra-ca/): what makes the image.
SINGLEUSER_CONTEXT = (LOCK, LAZY_IMPORTS, START)


def locked(name: str) -> str:
    """The version of `name` in the single-user lock (KeyError if it is not pinned there)."""
    for line in text(LOCK).splitlines():
        pkg, _, version = line.partition("==")
        if pkg.strip().lower().replace("_", "-") == name.lower().replace("_", "-") and version:
            return version.strip()
    raise KeyError(f"{name} is not in {LOCK}")
