"""Let's Encrypt, after the hub's stack runs: the first certificate (certbot --webroot, the challenge
answered on port 80 by the stack's `acme` service), then the hub's TLS secrets from it (the deploy
hook: the proxy rolls off the temporary self-signed certificate). Renewals: certbot's timer, same hook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from ..layout import ACME_CA, ACME_WEBROOT, LETSENCRYPT_LIVE
from ..spec import Hub
from . import register
from .letsencrypt import applies

if TYPE_CHECKING:
    from ..render import Renderer

HOOK = "/etc/letsencrypt/renewal-hooks/deploy/cablab-hub.sh"  # written by the step letsencrypt


@dataclass(frozen=True)
class Params:
    hub: Hub


def context(r: Renderer, p: Params) -> Mapping[str, object]:
    return {"webroot": str(ACME_WEBROOT), "acme_ca_file": str(ACME_CA) if r.plan.spec.acme_ca else "",
            "live": str(LETSENCRYPT_LIVE / p.hub.public_host), "hook": HOOK}


STEP = register(
    __name__, kind="letsencrypt_issue", order=150, title="Let's Encrypt: the first certificate, then the proxy's",
    applies=applies, params=lambda c, h: Params(hub=c.hub), context=context,
)
