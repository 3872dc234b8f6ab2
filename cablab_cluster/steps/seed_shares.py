"""Seeded shares: the synthetic cube and the sample notebooks, only while a share is empty."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Mapping

from ..layout import CUBE_NAME, CUBE_TARBALL
from ..spec import Cluster, Host, Role, Seed, Share
from . import Input, InputKind, register

if TYPE_CHECKING:
    from ..render import Renderer


@dataclass(frozen=True)
class Params:
    shares: tuple[Share, ...]  # those with a seed


def sample_notebooks() -> list[tuple[str, str]]:
    """(file name, content) of the sample notebooks shipped in cablab_cluster/samples/."""
    folder = resources.files("cablab_cluster").joinpath("samples")
    if not folder.is_dir():
        return []
    return sorted((f.name, f.read_text(encoding="utf-8").rstrip("\n")) for f in folder.iterdir()
                  if f.name.endswith(".ipynb"))


def inputs(c: Cluster, h: Host, p: Params) -> tuple[Input, ...]:
    if not any(s.seed is Seed.SYNTHETIC_CUBE for s in p.shares):
        return ()
    return (Input(InputKind.CUBE, CUBE_TARBALL, "0644", CUBE_NAME,
                  f"made by `cablab-cluster cube --tarball {CUBE_TARBALL.name}`", local=CUBE_TARBALL.name,
                  unless=f"test -s {shlex.quote(str(CUBE_TARBALL))}"),)


def context(r: Renderer, p: Params) -> Mapping[str, object]:
    return {"cube_tarball": CUBE_TARBALL, "cube_name": CUBE_NAME, "samples": sample_notebooks()}


STEP = register(
    __name__, kind="seed_shares", order=70, title="sample data and notebooks on empty shares",
    applies=lambda c, h: Role.NFS_SERVER in h.roles and any(s.seed for s in c.shares),
    params=lambda c, h: Params(shares=tuple(s for s in c.shares if s.seed)),
    inputs=inputs, context=context,
)
