"""Let's Encrypt, before the hub's stack: certbot, its webroot, the deploy hook, the renewal timer,
and a temporary self-signed certificate so that the proxy can start before the first issuance.

Port 80 belongs to the stack's `acme` service (bundle/acme_responder.py), which serves the webroot's
challenges: certbot never binds port 80 itself (`--webroot`), so renewals run beside the live hub.
The certificate itself is obtained after the stack runs, by the step `letsencrypt_issue`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from ..layout import ACME_CA, ACME_WEBROOT
from ..spec import Cluster, Host, Hub, Role, TLSMode
from . import Packages, register

if TYPE_CHECKING:
    from ..render import Renderer


PACKAGES: Packages = {"apt": ("certbot", "openssl"), "dnf": ("certbot", "openssl")}
# EL: certbot is EPEL's, and EPEL's packages need CRB (CodeReady Builder): both are enabled first.
# Rocky/Alma: the `crb` repository (dnf config-manager) and epel-release from their extras; RHEL: the
# CodeReady Builder repository (subscription-manager) and EPEL's release package from Fedora.
EPEL_RELEASE = "epel-release"
EPEL_RELEASE_URL = "https://dl.fedoraproject.org/pub/epel/epel-release-latest-{el}.noarch.rpm"
CONFIG_MANAGER: Packages = {"dnf": ("dnf-plugins-core",)}  # dnf config-manager

if TYPE_CHECKING:
    from ..render import Renderer

TEMPORARY_DAYS = 30  # the stand-in certificate's validity: issuance replaces it within minutes


@dataclass(frozen=True)
class Params:
    hub: Hub


def context(r: Renderer, p: Params) -> Mapping[str, object]:
    return {"webroot": str(ACME_WEBROOT), "acme_ca": r.plan.spec.acme_ca.rstrip("\n"), "acme_ca_file": str(ACME_CA),
            "temporary_days": TEMPORARY_DAYS,
            "epel_release": EPEL_RELEASE, "epel_release_url": EPEL_RELEASE_URL.format(el="$el"),
            "config_manager": CONFIG_MANAGER}


def applies(c: Cluster, h: Host) -> bool:
    return Role.HUB in h.roles and c.hub.tls.mode is TLSMode.LETSENCRYPT


STEP = register(
    __name__, kind="letsencrypt", order=130, title="Let's Encrypt: certbot, webroot, deploy hook, renewal timer",
    applies=applies, params=lambda c, h: Params(hub=c.hub), packages=PACKAGES, context=context,
)
