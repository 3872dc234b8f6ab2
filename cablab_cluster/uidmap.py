"""Each user's uid: an append-only map kept beside the spec, like the secrets.

`secrets/<cluster>/uids.yml` maps every user the userlist ever named (lower case, as
JupyterHub normalises GitHub logins) to a uid of their own in
[`hub.users.uid_base`, `uid_base + USERLIST_UIDS`). A render reads it, gives each new
userlist user the next free uid (in name order, after the highest one given so far: a
uid is never given twice, a removed user's uid stays theirs), and `render` writes it back
(0600, under the secrets lock, checked like the secrets: a planted map would hand alice
bob's uid). The rendered files depend on the map, not on the store's state: `resolve`
writes nothing, so `validate` and `render` agree.

Members of `allowed_organizations` outside the userlist cannot be known at render time:
the hub gives them uids from `uid_base + USERLIST_UIDS` up, recorded on its own volume
(cablab_hub.OrgUids), so the two ranges never meet.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from .secretstore import _dir_problems, _locked, _stored, _write, secrets_dir
from .spec import LoadedSpec, Problem, SpecError
from .spec.model import ORG_UIDS, USERLIST_UIDS

UIDS_FILE = "uids.yml"
# Never given: nobody/nogroup (root_squash maps root to 65534: the hub would own that home) and (uid_t)-1/-2.
RESERVED = frozenset({65534, 65535, 2**32 - 2, 2**32 - 1})
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){0,38}$")  # a GitHub login, lower case
HEADER = ("# Each user's uid on cluster {name}: written by `cablab-cluster render`, append-only.\n"
          "# Never edit a uid or reuse one: it owns the user's home on the NFS share.\n")


@dataclass(frozen=True)
class UidMap:
    """Every user ever allocated → uid; `new`: those this render allocated (not yet in the file)."""

    uids: Mapping[str, int]
    new: tuple[str, ...] = ()
    base: int = 20000

    def of(self, user: str) -> int:
        return self.uids[user.lower()]

    @property
    def org_base(self) -> int:
        """Where the hub starts giving uids to organisation members."""
        return self.base + USERLIST_UIDS


def next_free(taken: Iterable[int], start: int) -> int:
    """The lowest uid >= start above every taken one, skipping the reserved ones."""
    uid = max([start - 1, *taken]) + 1
    while uid in RESERVED:
        uid += 1
    return uid


def allocate(known: Mapping[str, int], users: Iterable[str], base: int) -> UidMap:
    """`known` kept as is; each user not in it gets the next free uid of the userlist range, in name order."""
    uids = dict(known)
    in_range = [u for u in uids.values() if base <= u < base + USERLIST_UIDS]
    new = []
    for name in sorted({u.lower() for u in users} - set(uids)):
        uid = next_free(in_range, base)
        if uid >= base + USERLIST_UIDS:
            raise SpecError([Problem("hub.users.uid_base", f"no uid left for {name} below {base + USERLIST_UIDS}",
                                     "move uid_base to a free range and migrate the homes")], "")
        uids[name] = uid
        in_range.append(uid)
        new.append(name)
    return UidMap(uids=uids, new=tuple(new), base=base)


def parse(text: str, path: Path, base: int) -> dict[str, int]:
    """A stored map: names → distinct uids outside the organisation range. Raises SpecError."""
    where = str(path)
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise SpecError([Problem(where, f"is not valid YAML ({str(exc).splitlines()[0][:80]})",
                                 "restore it from a backup: it records which uid owns which home")], where) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError([Problem(where, "is not a mapping of user: uid", "restore it from a backup")], where)
    problems, seen = [], {}
    org = range(base + USERLIST_UIDS, base + USERLIST_UIDS + ORG_UIDS)
    for name, uid in data.items():
        key = f"{where}: {str(name)[:40]!r}"
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(Problem(key, "is not a lower-case GitHub login", "restore the file from a backup"))
        elif not isinstance(uid, int) or isinstance(uid, bool) or not 1000 <= uid < 2**31 or uid in RESERVED:
            problems.append(Problem(key, f"has no valid uid ({str(uid)[:20]!r})", "restore the file from a backup"))
        elif uid in seen:
            problems.append(Problem(key, f"has uid {uid}, already {seen[uid]}'s", "restore the file from a backup"))
        elif uid in org:
            problems.append(Problem(key, f"has uid {uid}, in the range the hub gives organisation members "
                                         f"({org.start}..{org.stop - 1})",
                                    "set hub.users.uid_base back to the value the map was made with"))
        else:
            seen[uid] = name
    if problems:
        raise SpecError(problems, where)
    return {str(k): int(v) for k, v in data.items()}


def dump(uids: Mapping[str, int], cluster: str) -> str:
    """The map's file: YAML by the emitter, by uid."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False
    buf = io.StringIO()
    yaml.dump(dict(sorted(uids.items(), key=lambda kv: kv[1])), buf)
    return HEADER.format(name=cluster) + buf.getvalue()


def _read(spec: LoadedSpec) -> dict[str, int]:
    d = secrets_dir(spec)
    problems = _dir_problems(d.parent, 0o022) + _dir_problems(d, 0o077)
    if problems:
        raise SpecError(problems, str(spec.path))
    data, problems = _stored(d / UIDS_FILE)
    if problems:
        raise SpecError(problems, str(spec.path))
    if data is None:
        return {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError([Problem(str(d / UIDS_FILE), "is not UTF-8", "restore it from a backup")], str(spec.path))
    return parse(text, d / UIDS_FILE, spec.cluster.hub.users.uid_base)


def resolve(spec: LoadedSpec) -> UidMap:
    """The stored map with the userlist's new users allocated. Writes nothing."""
    return allocate(_read(spec), spec.userlist.allowed, spec.cluster.hub.users.uid_base)


def fresh(spec: LoadedSpec) -> UidMap:
    """The map a first render makes (no stored map): what the fixtures and tests render with."""
    return allocate({}, spec.userlist.allowed, spec.cluster.hub.users.uid_base)


def ensure_uids(spec: LoadedSpec) -> UidMap:
    """`resolve`, then write the map if it grew (under the secrets lock). Raises SpecError before writing."""
    resolve(spec)
    d = secrets_dir(spec)
    d.parent.mkdir(mode=0o700, exist_ok=True)
    with _locked(spec):
        if not d.exists():
            d.mkdir(mode=0o700)
        m = resolve(spec)  # again under the lock: another render may have written meanwhile
        if m.new or not (d / UIDS_FILE).exists():
            _write(d, UIDS_FILE, dump(m.uids, spec.cluster.name).encode())
    return m
