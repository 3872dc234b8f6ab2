"""The images a host runs (the hub's where the hub runs, the notebooks' where they run): built,
pulled or loaded. One step per image."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

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
                         f"docker image inspect {shlex.quote(p.image.name)} >/dev/null 2>&1"),)


def context(r: Renderer, p: Params) -> Mapping[str, object]:
    files = r.build_context(p.key) if p.image.source is ImageSource.BUILD else {}
    return {"context": sorted((n, t.rstrip("\n")) for n, t in files.items())}


STEP = register(__name__, kind="image", order=120, title=lambda p: f"{p.key} image {p.image.name} ({p.image.source.value})",
                params=params, inputs=inputs, context=context)
