"""Loading a spec: YAML read safely (no anchors or aliases, size and depth
limits, regular UTF-8 files only), validated by the model and the cross-field
rules, the userlist and the files it names read, every problem reported at once.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import AliasEvent

from ..userlist import UserlistError, parse_userlist
from .model import Cluster, LoadedSpec, TLSMode
from .problems import Problem, SpecError, _from_pydantic, _with_line, excerpt, quoted
from .rules import cross_checks


class _NoAliasComposer(Composer):
    """Refuses anchors and aliases before anything is expanded: a spec has no use
    for them, and nested aliases ("billion laughs") expand exponentially."""

    def compose_node(self, parent: object, index: object) -> object:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ComposerError(None, None, "anchors and aliases (&name, *name, <<: *name) are not allowed in a spec",
                                event.start_mark)
        return super().compose_node(parent, index)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")  # round-trip: keeps line/column of every node
    yaml.allow_duplicate_keys = False
    yaml.Composer = _NoAliasComposer
    yaml.max_depth = 50  # a spec nests about 5 deep
    return yaml


MAX_SPEC_BYTES = 1 << 20  # 1 MiB: a 100-host spec is about 20 KiB
MAX_USERLIST_BYTES = 256 << 10  # 256 KiB: about 6000 users
MAX_CA_BUNDLE_BYTES = 512 << 10  # 512 KiB: the whole Mozilla bundle is ~220 KiB


class InputFileError(ValueError):
    """A file the spec needs is missing, not a regular file, too large, not UTF-8, or unreadable."""

    def __init__(self, path: Path, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def read_input(path: Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes (never blocks on a FIFO or device)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InputFileError(path, f"cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses a directory itself
        os.close(fd)
        raise InputFileError(path, f"not a regular file: not a {what}")
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise InputFileError(path, f"cannot be read: {exc.strerror}") from None
    if len(data) > limit:
        raise InputFileError(path, f"larger than {_size(limit)}: not a {what}")
    return data


def read_text(path: Path, limit: int, what: str = "file") -> str:
    """`read_input` decoded as UTF-8, or an InputFileError naming the file."""
    data = read_input(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(path, f"not UTF-8 text (byte {exc.start})") from None


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def load_spec(path: Path | str) -> LoadedSpec:
    """Read, parse and validate a spec file. Raises SpecError with every problem."""
    path = Path(path)
    try:
        text = read_text(path, MAX_SPEC_BYTES, "spec")
    except InputFileError as exc:
        raise SpecError([Problem("(file)", exc.reason, "give the path of a cluster spec: "
                                                       "a YAML file (UTF-8) of at most 1 MiB")], str(path)) from None
    return loads_spec(text, path)


def loads_spec(text: str, path: Path) -> LoadedSpec:
    source = str(path)
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError([Problem("(file)", f"larger than {_size(MAX_SPEC_BYTES)}: not a spec",
                                 "a cluster spec is a few KiB of YAML")], source)
    try:
        data = _yaml().load(text)
    except MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        hint = ("write the value out where it is used" if "alias" in str(exc.problem) else "fix the YAML syntax")
        raise SpecError([Problem("(yaml)", f"not valid YAML: {excerpt(exc.problem, 200)}", hint, line)],
                        source) from None
    except Exception as exc:  # duplicate keys and friends
        raise SpecError([Problem("(yaml)", f"not valid YAML: {excerpt(exc, 200)}", "fix the YAML syntax")],
                        source) from None
    if not isinstance(data, dict):
        raise SpecError([Problem("(top)", "the spec must be a mapping of keys", "start from `cablab-cluster init`")], source)

    try:
        cluster = Cluster.model_validate(_plain(data))
    except ValidationError as exc:
        raise SpecError([_from_pydantic(err, data) for err in exc.errors()], source) from None

    problems = [_with_line(p, data) for p in cross_checks(cluster)]
    userlist = None
    upath = cluster.hub.userlist if cluster.hub.userlist.is_absolute() else path.parent / cluster.hub.userlist
    try:
        userlist = parse_userlist(read_text(upath, MAX_USERLIST_BYTES, "userlist"), str(upath))
    except InputFileError as exc:
        problems.append(_with_line(Problem("hub.userlist", str(exc),
                                           "a userlist is a UTF-8 text file: one GitHub user per line, "
                                           "`name admin` for admins"), data))
    except UserlistError as exc:
        for err in exc.errors:
            problems.append(_with_line(Problem("hub.userlist", err, "each line is `name` or `name admin`; "
                                                                     "# starts a comment"), data))
    else:
        for name in cluster.hub.users.overrides if userlist.users else ():
            if name.lower() not in {u.name.lower() for u in userlist.users}:
                problems.append(_with_line(Problem(f"hub.users.overrides.{name}", f"{name!r} is not in the userlist "
                                                   f"{upath.name}", "add the user to the userlist, or remove the "
                                                   "override"), data))
        if not userlist.users:
            problems.append(_with_line(Problem("hub.userlist", f"{upath} names no user; JupyterHub would admit nobody",
                                               "add at least one GitHub user, e.g. `alice admin`"), data))
    problems += [_with_line(p, data) for p in _file_checks(cluster, path.parent)]
    acme_ca, ca_problems = _acme_ca(cluster, path.parent)
    problems += [_with_line(p, data) for p in ca_problems]
    if problems:
        raise SpecError(problems, source)
    assert userlist is not None
    return LoadedSpec(cluster=cluster, path=path, userlist=userlist, acme_ca=acme_ca)


def _acme_ca(c: Cluster, base: Path) -> tuple[str, list[Problem]]:
    """hub.tls.acme_ca_bundle's certificates as PEM text (embedded in the hub host's script), or why not."""
    bundle = c.hub.tls.acme_ca_bundle
    if bundle is None or c.hub.tls.mode is not TLSMode.LETSENCRYPT:
        return "", []
    from cryptography import x509

    key, hint = "hub.tls.acme_ca_bundle", "give a PEM file of the ACME server's CA certificate(s)"
    try:
        text = read_text(bundle if bundle.is_absolute() else base / bundle, MAX_CA_BUNDLE_BYTES, "PEM CA bundle")
        certs = x509.load_pem_x509_certificates(text.encode("ascii"))
    except InputFileError as exc:
        return "", [Problem(key, str(exc), hint)]
    except ValueError:  # no PEM certificate, or a malformed one, or non-ASCII
        return "", [Problem(key, f"{quoted(str(bundle))} holds no valid PEM certificate", hint)]
    from cryptography.hazmat.primitives.serialization import Encoding

    # Re-encoded: only certificates reach the host, whatever else (comments, keys) the file holds.
    return "".join(cert.public_bytes(Encoding.PEM).decode("ascii") for cert in certs), []


def _plain(node: object) -> object:
    """ruamel's commented containers → plain dicts/lists (pydantic wants plain)."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node



def _is_file(p: Path) -> bool:
    """Path.is_file() that says no, not OSError, for a name the system refuses (too long, ...)."""
    try:
        return p.is_file()
    except OSError:
        return False


def _file_checks(c: Cluster, base: Path) -> list[Problem]:
    """Files the spec points to on the operator's machine must exist."""
    out = []
    secret = c.hub.auth.github.client_secret_file
    if not _is_file(secret if secret.is_absolute() else base / secret):
        out.append(Problem("hub.auth.github.client_secret_file", f"{quoted(str(secret))} does not exist",
                           "save the GitHub OAuth app's client secret in that file (mode 0600)"))
    if c.hub.tls.mode is TLSMode.PROVIDED:
        for key in ("cert", "key"):
            p = getattr(c.hub.tls, key)
            if p is not None and not _is_file(p if p.is_absolute() else base / p):
                out.append(Problem(f"hub.tls.{key}", f"{quoted(str(p))} does not exist",
                                   "give the path of an existing PEM file"))
    return out

