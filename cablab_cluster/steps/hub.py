"""The hub's stack: the bundle installed, its secrets checked, deployed, and waited for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from ..layout import SECRETS_DIR, SECRETS_SUBDIR, STACK, secrets_hub_reads, secrets_operator_copies
from ..spec import Cluster, Host, Hub, Role, TLSMode
from . import Input, InputKind, register

if TYPE_CHECKING:
    from ..render import Renderer


@dataclass(frozen=True)
class Params:
    hub: Hub
    secrets: tuple[str, ...]  # the files the hub reads from SECRETS_DIR


def inputs(c: Cluster, h: Host, p: Params) -> tuple[Input, ...]:
    return tuple(Input(InputKind.SECRET, SECRETS_DIR / name, "0600", name,
                       f"{SECRETS_SUBDIR}/{c.name}/{name} beside the spec (made by `cablab-cluster render`)",
                       local=f"{SECRETS_SUBDIR}/{c.name}/{name}")
                 for name in secrets_operator_copies(c))


def context(r: Renderer, p: Params) -> Mapping[str, object]:
    acme = ("acme",) if p.hub.tls.mode is TLSMode.LETSENCRYPT else ()  # port 80: certbot's next step needs it
    return {"bundle": [(n, m, t.rstrip("\n")) for n, m, t in r.bundle()], "cluster_name": r.c.name,
            "services": [f"{STACK}_{s}" for s in ("proxy", "hub", *acme)]}


STEP = register(
    __name__, kind="hub", order=140, title="JupyterHub stack (bundle, secrets, deploy)",
    applies=lambda c, h: Role.HUB in h.roles,
    params=lambda c, h: Params(hub=c.hub, secrets=secrets_hub_reads(c)),
    inputs=inputs, context=context,
)
