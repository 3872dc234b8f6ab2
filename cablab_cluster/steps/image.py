"""The images a host runs (the hub's where the hub runs, the notebooks' where they run): built,
pulled or loaded. One step per image."""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from .. import bundle as static
from ..layout import HUB_CONFIG, HUB_CONTAINER_DIR, SINGLEUSER_STACK, VERSIONS
from ..spec import Cluster, Host, Image, ImageSource, Role
from . import Input, InputKind, register
from .docker_engine import storage_driver

if TYPE_CHECKING:
    from ..render import Renderer


@dataclass(frozen=True)
class Params:
    key: str  # hub or singleuser
    image: Image


def params(c: Cluster, h: Host) -> list[Params]:
    images = []
    if Role.HUB in h.roles:
        images.append(Params("hub", c.hub.images.hub))
    if h in c.notebook_hosts:
        images.append(Params("singleuser", c.hub.images.singleuser))
    return images


IDENTITY_LABEL = "org.cablab.identity"
# The hub image's command (its CMD, and its service's in the stack): the bundle's config, mounted in
# its working directory (HUB_CONTAINER_DIR).
HUB_COMMAND = ("jupyterhub", "-f", str(HUB_CONFIG))

# Each image's Dockerfile template and what it includes: a change there is a new image of that kind.
_TEMPLATES = {"hub": ("_first_layer.Dockerfile.j2", "hub.Dockerfile.j2"),
              "singleuser": ("_first_layer.Dockerfile.j2", "singleuser.Dockerfile.j2")}


def image_identity(c: Cluster, key: str) -> str:
    """What makes cablab's image `key` what it is, known before it is built: its spec entry (base,
    packages, JupyterHub version), the
    users' uid/gid, the Dockerfile templates and the single-user stack and build context (the lock, the
    build-time edit, the entrypoint), or the hub's versions, working directory and command.
    The rendered Dockerfile labels the image with it (IDENTITY_LABEL); a node whose image under the
    tag carries it already needs no tarball, and one with another (an upgrade under the same tag) does."""
    image: Image = getattr(c.hub.images, key)
    templates = resources.files("cablab_cluster") / "templates" / "bundle"
    # what goes into the image: not its name, source or tarball path
    data = {"key": key, "image": image.model_dump(mode="json", exclude={"name", "source", "tarball"}),
            "users": [c.hub.users.uid, c.hub.users.gid],
            "templates": {n: (templates / n).read_text(encoding="utf-8") for n in _TEMPLATES[key]}}
    if key == "singleuser":
        data |= {"stack": list(SINGLEUSER_STACK),
                 "context": {name: static.text(name) for name in static.SINGLEUSER_CONTEXT}}
    else:
        data |= {"versions": VERSIONS, "workdir": str(HUB_CONTAINER_DIR), "command": list(HUB_COMMAND)}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def inputs(c: Cluster, h: Host, p: Params) -> tuple[Input, ...]:
    if p.image.source is not ImageSource.LOAD:
        return ()
    assert p.image.tarball is not None
    # Present only under the storage driver the engine step sets: images a box keeps under overlay2
    # are not there for devicemapper.
    driver = storage_driver(c.docker)
    return (Input(InputKind.IMAGE, p.image.tarball, "0644", p.key,
                  f"the saved image {p.image.name} (docker save {shlex.quote(p.image.name)} | gzip "
                  f"> {shlex.quote(p.image.tarball.name)})",
                  local=p.image.tarball.name,
                  unless=f"[ \"$(docker info --format '{{{{.Driver}}}}' 2>/dev/null)\" = {driver} ] && "
                         f"[ \"$(docker image inspect --format '{{{{index .Config.Labels \"{IDENTITY_LABEL}\"}}}}' "
                         f"{shlex.quote(p.image.name)} 2>/dev/null)\" = {image_identity(c, p.key)} ]"),)


def context(r: Renderer, p: Params) -> Mapping[str, object]:
    files = r.build_context(p.key) if p.image.source is ImageSource.BUILD else {}
    return {"context": sorted((n, t.rstrip("\n")) for n, t in files.items())}


STEP = register(__name__, kind="image", order=120, title=lambda p: f"{p.key} image {p.image.name} ({p.image.source.value})",
                params=params, inputs=inputs, context=context)
