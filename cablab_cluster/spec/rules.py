"""Cross-field rules: what pydantic cannot see from one field alone.

Each topic is a small function of the validated Cluster returning its Problems
(key path, message, hint; the loader adds the spec line); `cross_checks` runs
them all, in a fixed order, so that every problem is reported at once.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from .. import bundle

from .model import (DOCKER_ROOT, MIN_MEMORY, ORG_UIDS, USERLIST_UIDS, Cluster, EngineSource, ImageSource, Role, Seed,
                    StorageDriver, TLSMode, Users, Variant, _is_ip, memory_bytes, system_path)
from .problems import Problem


def cross_checks(c: Cluster) -> list[Problem]:
    """Rules that involve more than one field. Each returns a path, message and hint."""
    out: list[Problem] = []
    for rule in (host_rules, storage_rules, share_rules, user_mount_rules):
        out += rule(c)
    out += _operation_checks(c.hub.users)
    out += uid_rules(c.hub.users)
    for rule in (tls_rules, auth_rules, image_rules):
        out += rule(c)
    return out


def _share_index(c: Cluster) -> dict[str, int]:
    """Share name → index of the first share with that name."""
    index: dict[str, int] = {}
    for i, s in enumerate(c.shares):
        index.setdefault(s.name, i)
    return index


def host_rules(c: Cluster) -> list[Problem]:
    """Unique names and addresses, one swarm role per node, 1 or 3 managers, one NFS server, the hub on a manager."""
    out: list[Problem] = []
    names: dict[str, int] = {}
    addrs: dict[str, int] = {}
    for i, h in enumerate(c.hosts):
        if h.name in names:
            out.append(Problem(f"hosts[{i}].name", f"{h.name!r} is already the name of hosts[{names[h.name]}]",
                               "give every host a unique name"))
        names.setdefault(h.name, i)
        if str(h.address) in addrs:
            out.append(Problem(f"hosts[{i}].address", f"{h.address} is already the address of hosts[{addrs[str(h.address)]}]",
                               "give every host its own address"))
        addrs.setdefault(str(h.address), i)
        if len(set(h.roles)) != len(h.roles):
            out.append(Problem(f"hosts[{i}].roles", "a role is listed twice", "list each role once"))
        swarm_roles = {Role.MANAGER, Role.WORKER} & set(h.roles)
        storage_only = set(h.roles) == {Role.NFS_SERVER}
        if len(swarm_roles) != 1 and not storage_only:
            out.append(Problem(f"hosts[{i}].roles", "needs exactly one of `manager` or `worker`",
                               "a swarm node is `manager` or `worker` (not both); only a storage host outside "
                               "the swarm has `nfs-server` alone"))
        if Role.NFS_SERVER in h.roles and Role.WORKER in h.roles:
            out.append(Problem(f"hosts[{i}].roles", "an NFS server cannot be a swarm worker: the managers mount its "
                                                    "shares before it could join (it needs their join token)",
                               "make the NFS server a manager, or a storage host outside the swarm "
                               "(roles: [nfs-server])"))

    managers = [i for i, h in enumerate(c.hosts) if h.is_manager]
    if len(managers) not in (1, 3):
        why = ("2 managers need both alive for a raft quorum, so they tolerate no failure and are worse than 1"
               if len(managers) == 2 else f"{len(managers)} managers")
        out.append(Problem("hosts", f"{len(managers)} managers: swarm needs 1 or 3 ({why})",
                           "make 1 host a manager (simple) or 3 (tolerates one failure)"))

    nfs = [i for i, h in enumerate(c.hosts) if Role.NFS_SERVER in h.roles]
    if len(nfs) != 1:
        out.append(Problem("hosts", f"{len(nfs)} hosts have the role nfs-server; exactly one must",
                           "add `nfs-server` to the roles of one host"))
    hubs = [i for i, h in enumerate(c.hosts) if Role.HUB in h.roles]
    if len(hubs) != 1:
        out.append(Problem("hosts", f"{len(hubs)} hosts have the role hub; exactly one must",
                           "add `hub` to the roles of one manager"))
    for i in hubs:
        if not c.hosts[i].is_manager:
            out.append(Problem(f"hosts[{i}].roles", "the hub must run on a manager (it creates swarm services)",
                               "add `hub` to a manager's roles instead"))
    return out


def storage_rules(c: Cluster) -> list[Problem]:
    """Docker's engine and storage: EL needs Docker's repository; lvm and devicemapper need a disk, devicemapper
    a Docker < 25."""
    out: list[Problem] = []
    storage = c.docker.storage
    if storage.driver is not StorageDriver.OVERLAY2 and not storage.disks:
        out.append(Problem("docker.storage.disks", f"storage driver {storage.driver.value} needs a disk",
                           "name the extra disk, e.g. `disks: [/dev/vdb, /dev/sdb]`"))
    if c.variant is Variant.CENTOS and c.docker.source is EngineSource.DISTRO and not c.lab:
        # EL 9 ships no Docker engine (only podman): the run would stop at docker_engine.
        out.append(Problem("docker.source", "variant centos (Rocky/Alma/RHEL 9) has no distribution Docker engine",
                           "set `docker.source: docker-repo` (Docker's rhel repository, docker-ce)"))
    if storage.driver is StorageDriver.DEVICEMAPPER and (c.docker.major is None or c.docker.major >= 25):
        got = f"version {c.docker.version}" if c.docker.version else "no version pin"
        out.append(Problem("docker.version", f"devicemapper-direct-lvm needs Docker < 25 ({got}); "
                                             "Docker 25 removed the devicemapper driver",
                           "pin an older engine (e.g. `version: \"20.10\"`) or use `storage.driver: lvm`"))
    return out


def share_rules(c: Cluster) -> list[Problem]:
    """Unique share names and mounts, never over Docker's root or a system directory, one share per seed."""
    out: list[Problem] = []
    share_names: dict[str, int] = {}
    for i, s in enumerate(c.shares):
        if s.name in share_names:
            out.append(Problem(f"shares[{i}].name", f"{s.name!r} is already the name of shares[{share_names[s.name]}]",
                               "give every share a unique name"))
        share_names.setdefault(s.name, i)
        if DOCKER_ROOT == s.mount or DOCKER_ROOT in s.mount.parents:
            out.append(Problem(f"shares[{i}].mount", "NFS must never be mounted over Docker's data root: "
                                                     "Docker's volume database is per daemon",
                               "mount the share elsewhere, e.g. /srv/cablab/<name>"))
        elif system_path(s.mount):
            out.append(Problem(f"shares[{i}].mount", f"{s.mount} is a system directory; mounting a share there "
                                                     "would hide or replace the system's own files",
                               f"mount the share in a directory of its own, e.g. /srv/cablab/{s.name}"))
        if system_path(s.path):
            out.append(Problem(f"shares[{i}].path", f"{s.path} is a system directory; the NFS server would chown "
                                                    "and export it to the cluster",
                               f"share a directory of its own, e.g. /srv/nfs/{s.name}"))
        for opt in s.options:
            if opt.split("=")[0] in {"rw", "ro", "root_squash", "no_root_squash", "all_squash"}:
                out.append(Problem(f"shares[{i}].options", f"{opt!r} is set by `read_only` / `root_squash`",
                                   "remove it from options and use those keys"))
    for kind in Seed:
        seeded = [i for i, s in enumerate(c.shares) if s.seed is kind]
        for i in seeded[1:]:
            out.append(Problem(f"shares[{i}].seed", f"shares[{seeded[0]}] is already seeded with {kind.value}",
                               "seed one share with each"))
    mounts = [s.mount for s in c.shares]
    if len(set(mounts)) != len(mounts):
        out.append(Problem("shares", "two shares use the same mount point", "give every share its own mount"))
    return out


def user_mount_rules(c: Cluster) -> list[Problem]:
    """The users' home share exists and is writable; user mounts name shares, outside system directories, unique."""
    out: list[Problem] = []
    share_names = _share_index(c)
    users = c.hub.users
    if users.home_share not in share_names:
        out.append(Problem("hub.users.home_share", f"no share named {users.home_share!r}",
                           f"use one of: {', '.join(share_names) or '(define shares first)'}"))
    elif c.shares[share_names[users.home_share]].read_only:
        out.append(Problem("hub.users.home_share", f"share {users.home_share!r} is read-only; homes must be writable",
                           "set `read_only: false` on it or pick another share"))
    targets = [users.home_target]
    target_keys = ["hub.users.home_target"]
    for i, m in enumerate(users.read_only_mounts):
        if m.share not in share_names:
            out.append(Problem(f"hub.users.read_only_mounts[{i}].share", f"no share named {m.share!r}",
                               f"use one of: {', '.join(share_names) or '(define shares first)'}"))
        targets.append(m.target)
        target_keys.append(f"hub.users.read_only_mounts[{i}].target")
    for key, target in zip(target_keys, targets):
        if system_path(target):
            out.append(Problem(key, f"{target} is a system directory of the user's container",
                               "mount it in a directory of its own, e.g. /home/jovyan/data"))
    if len(set(targets)) != len(targets):
        out.append(Problem("hub.users", "two user mounts use the same target", "give each mount its own target"))
    return out


def tls_rules(c: Cluster) -> list[Problem]:
    """letsencrypt needs a DNS name and an email; cert/key exactly in mode `provided`."""
    out: list[Problem] = []
    tls = c.hub.tls
    if tls.mode is TLSMode.LETSENCRYPT:
        if _is_ip(c.hub.public_host):
            out.append(Problem("hub.public_host", "Let's Encrypt issues certificates for DNS names, not IP addresses",
                               "use a DNS name that resolves to the hub host, or `tls.mode: self-signed`"))
        if not tls.email:
            out.append(Problem("hub.tls.email", "letsencrypt needs a contact email", "add `email: you@example.org`"))
    if tls.acme_ca_bundle is not None and tls.mode is not TLSMode.LETSENCRYPT:
        out.append(Problem("hub.tls.acme_ca_bundle", f"acme_ca_bundle is only read in mode `letsencrypt` "
                                                     f"(mode is {tls.mode.value})",
                           "remove it or set `mode: letsencrypt`"))
    if tls.mode is TLSMode.PROVIDED:
        for key in ("cert", "key"):
            if getattr(tls, key) is None:
                out.append(Problem(f"hub.tls.{key}", f"tls mode `provided` needs `{key}`",
                                   f"give the path of the PEM {'full chain' if key == 'cert' else 'private key'}"))
    else:
        for key in ("cert", "key"):
            if getattr(tls, key) is not None:
                out.append(Problem(f"hub.tls.{key}", f"cert/key are only read in mode `provided` "
                                                     f"(mode is {tls.mode.value})",
                                   "remove them or set `mode: provided`"))
    return out


def auth_rules(c: Cluster) -> list[Problem]:
    """The lab password login only on lab clusters."""
    out: list[Problem] = []
    if c.hub.auth.lab_password and not c.lab:
        out.append(Problem("hub.auth.lab_password", "the lab password login is for lab clusters only",
                           "remove `lab_password` (real clusters log in with GitHub), or set `lab: true` on a lab spec"))
    return out


def image_rules(c: Cluster) -> list[Problem]:
    """A tarball exactly with source `load`, and a file, not /."""
    out: list[Problem] = []
    locked = bundle.locked("jupyterhub")
    if c.hub.images.hub.jupyterhub != locked:
        out.append(Problem("hub.images.hub.jupyterhub", f"JupyterHub {c.hub.images.hub.jupyterhub} is not the locked "
                                                        f"version: the single-user lock pins jupyterhub {locked}",
                           f"use `jupyterhub: \"{locked}\"` (or drop the key), or lock the single-user stack for the new "
                           "version first (lab/images/lock-singleuser.sh)"))
    for key, image in (("hub", c.hub.images.hub), ("singleuser", c.hub.images.singleuser)):
        if image.source is ImageSource.LOAD and image.tarball is None:
            out.append(Problem(f"hub.images.{key}.tarball", "source `load` needs the tarball's path on the nodes",
                               "add `tarball: /var/cache/cablab/images/<name>.tar`"))
        if image.tarball is not None and image.tarball == PurePosixPath("/"):
            out.append(Problem(f"hub.images.{key}.tarball", "/ is a directory, not a saved image",
                               "give the file, e.g. `tarball: /var/cache/cablab/images/<name>.tar`"))
        if image.source is not ImageSource.LOAD and image.tarball is not None:
            out.append(Problem(f"hub.images.{key}.tarball", f"a tarball is only read with source `load` "
                                                            f"(source is {image.source.value})",
                               "remove it or set `source: load`"))
    return out


def _operation_checks(users: Users) -> list[Problem]:
    """Culling and resources: a pass at least once per timeout, memory sizes a server can
    live with, and nothing reserved beyond its limit (by default and for each override)."""
    out = []
    cull = users.cull
    if cull.enabled and cull.every > cull.timeout:
        out.append(Problem("hub.users.cull.every", f"a pass every {cull.every} s is longer than the idle timeout "
                                                   f"({cull.timeout} s): servers would live up to twice as long",
                           f"set `every` to at most {cull.timeout} (a tenth of the timeout is usual)"))
    scopes = [("hub.users", None)] + [(f"hub.users.overrides.{name}", name) for name in users.overrides]
    for key, name in scopes:
        own = users.overrides.get(name) if name else None
        for part in ("limits", "reservations"):
            res = getattr(own if own else users, part)
            if res.memory is not None and memory_bytes(res.memory) < MIN_MEMORY:
                out.append(Problem(f"{key}.{part}.memory", f"{res.memory} is too little for a notebook server",
                                   "give at least 64M (a server with a kernel needs about 200M)"))
        eff = users.resources(name)
        lim, res = eff.limits, eff.reservations
        if lim.memory and res.memory and memory_bytes(res.memory) > memory_bytes(lim.memory):
            out.append(Problem(f"{key}.reservations.memory", f"reserves {res.memory}, more than the limit "
                                                             f"{lim.memory}", "reserve at most the limit"))
        if lim.cpus is not None and res.cpus is not None and res.cpus > lim.cpus:
            out.append(Problem(f"{key}.reservations.cpus", f"reserves {res.cpus:g} CPUs, more than the limit "
                                                           f"{lim.cpus:g}", "reserve at most the limit"))
    return out


def uid_rules(users: Users) -> list[Problem]:
    """The image's uid and the nobody uids lie outside the users' uid ranges."""
    top = users.uid_base + USERLIST_UIDS + ORG_UIDS
    if users.uid_base <= users.uid < top:
        return [Problem("hub.users.uid_base", f"the users' uids {users.uid_base}..{top - 1} include the image's uid "
                                              f"{users.uid} (hub.users.uid)",
                        f"set uid_base above {users.uid} (the default 20000 is)")]
    return []
