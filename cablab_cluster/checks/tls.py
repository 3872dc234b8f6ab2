"""The TLS client context that trusts the hub's certificate as the spec makes it."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from cablab_cluster.spec import LETSENCRYPT_PRODUCTION, Cluster, TLSMode

ACME_ROOTS_ENV = "CABLAB_ACME_ROOTS"


def hub_tls_context(cluster: Cluster, secrets: Path) -> ssl.SSLContext:
    """The client context that trusts the hub's certificate as the spec makes it.

    self-signed: only the spec's own certificate (secrets/tls.crt);
    provided: system CAs, plus the provided chain itself (a private CA is fine);
    letsencrypt: system CAs; with a non-production ACME directory, exactly the
    roots in $CABLAB_ACME_ROOTS (the lab saves the root its pebble issues under),
    else no verification (a staging CA is trusted nowhere; the name is still
    checked from the certificate by the tests).
    """
    tls = cluster.hub.tls
    crt = secrets / "tls.crt"
    if tls.mode is TLSMode.SELF_SIGNED:
        assert crt.is_file(), f"{crt} is missing: the self-signed certificate comes from `cablab-cluster render`"
        return self_signed_context(crt)
    ctx = ssl.create_default_context()
    if tls.mode is TLSMode.PROVIDED and crt.is_file():
        ctx.load_verify_locations(cafile=str(crt))
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    elif tls.mode is TLSMode.LETSENCRYPT and tls.acme_directory != LETSENCRYPT_PRODUCTION:
        roots = acme_roots()
        if roots is not None:
            return ssl.create_default_context(cafile=str(roots))
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def acme_roots() -> Path | None:
    """$CABLAB_ACME_ROOTS: the PEM roots of a test ACME server (pebble), if given."""
    value = os.environ.get(ACME_ROOTS_ENV)
    return Path(value) if value else None


def self_signed_context(crt: Path) -> ssl.SSLContext:
    """A client context that trusts exactly one self-signed certificate (and checks the name)."""
    ctx = ssl.create_default_context(cafile=str(crt))
    # Our self-signed certificate (CA:true, no key usage) is its own trust anchor;
    # Python >= 3.13 turns on strict X.509 checks that would refuse it.
    ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    return ctx
