"""The hub's certificate from Let's Encrypt (certbot), with a deploy hook and the renewal timer."""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import Hub, Role, TLSMode
from . import register


@dataclass(frozen=True)
class Params:
    hub: Hub


STEP = register(
    __name__, kind="letsencrypt", order=130, title="Let's Encrypt certificate and renewal",
    applies=lambda c, h: Role.HUB in h.roles and c.hub.tls.mode is TLSMode.LETSENCRYPT,
    params=lambda c, h: Params(hub=c.hub), packages={"apt": ("certbot",), "dnf": ("certbot",)},
)
