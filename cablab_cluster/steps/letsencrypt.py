"""The hub's certificate from Let's Encrypt (certbot), with a deploy hook and the renewal timer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from ..spec import Hub, Role, TLSMode
from . import Packages, register

if TYPE_CHECKING:
    from ..render import Renderer


PACKAGES: Packages = {"apt": ("certbot",), "dnf": ("certbot",)}
# EL: certbot is EPEL's, and EPEL's packages need CRB (CodeReady Builder): both are enabled first.
# Rocky/Alma: the `crb` repository (dnf config-manager) and epel-release from their extras; RHEL: the
# CodeReady Builder repository (subscription-manager) and EPEL's release package from Fedora.
EPEL_RELEASE = "epel-release"
EPEL_RELEASE_URL = "https://dl.fedoraproject.org/pub/epel/epel-release-latest-{el}.noarch.rpm"
CONFIG_MANAGER: Packages = {"dnf": ("dnf-plugins-core",)}  # dnf config-manager


@dataclass(frozen=True)
class Params:
    hub: Hub


def context(r: Renderer, p: Params) -> Mapping[str, object]:
    return {"epel_release": EPEL_RELEASE, "epel_release_url": EPEL_RELEASE_URL.format(el="$el"),
            "config_manager": CONFIG_MANAGER}


STEP = register(
    __name__, kind="letsencrypt", order=130, title="Let's Encrypt certificate and renewal",
    applies=lambda c, h: Role.HUB in h.roles and c.hub.tls.mode is TLSMode.LETSENCRYPT,
    params=lambda c, h: Params(hub=c.hub), packages=PACKAGES, context=context,
)
