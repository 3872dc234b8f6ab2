"""Stage 3 — render: a plan becomes files. Pure: `render_plan` returns
{relative path: text}; `write_tree` puts them in place all at once.

One template per step kind (templates/steps/), shared by both variants; every
host script is prelude + its steps + footer. The hub bundle (Dockerfiles,
jupyterhub_config.py, stack file, deploy script) is rendered once and both
embedded in the hub host's script and written beside it for review.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2
from ruamel.yaml import YAML

from . import bundle as static
from . import steps as step_units
from .layout import (
    ACME_WEBROOT,
    HUB_CONTAINER_DATA,
    HUB_CONFIG,
    HUB_CONTAINER_DIR,
    HUB_DATA,
    HUB_DB,
    HUB_DIR,
    HUB_IMAGE_RECORD,
    HUB_LABEL,
    HUB_LOG_DIR,
    HUB_ORG_UIDS,
    IMAGE_DIR,
    NODE_LABEL,
    NOTEBOOKS_LABEL,
    PROVISION_LOG,
    PROVISIONER,
    RUN_SUMMARY,
    SECRETS_DIR,
    SINGLEUSER_STACK,
    STACK,
    STATE_DIR,
    SWARM_TOKEN_DIR,
    TLS_CERT,
    TLS_KEY,
    UPGRADE_BACKUPS,
    VERSIONS,
    secrets_hub_reads,
)
from .plan import HostPlan, Plan, Step
from .spec import Cluster, ImageSource, Problem, SpecError, TLSMode
from .spec.model import ORG_UIDS
from .steps.image import HUB_COMMAND, image_identity
from .steps.seed_shares import sample_notebooks  # noqa: F401 - re-exported: the checks import it from here
from .uidmap import UidMap, fresh

CONSTRAINTS = static.LOCK
LAZY_IMPORTS = static.LAZY_IMPORTS
START = static.START
INTERNAL_PORT = 8443  # the proxy's public port inside its container
INTERNAL_HTTP_PORT = 8080  # the proxy's redirect of plain HTTP, or the acme responder (published as 80)
ACME_RESPONDER = "acme_responder.py"  # letsencrypt: port 80's challenge + redirect (bundle/, a swarm config)
NOBODY = "65534:65534"
ANCHOR_SERVICE = "anchor"  # in the stack: cablab_anchor, one task per notebook host (Renderer.anchor_service)
ANCHOR_MEMORY = "16M"  # tini and sleep: ~1 MiB
PROXY_API_PORT = 8001
# The hub ↔ proxy API network: the users' servers are not on it (traffic between containers of
# one overlay never passes a host's firewall, so the API must not be on theirs). Its own alias:
# the proxy binds its API to its address on this network only.
INTERNAL_NETWORK = "internal"  # in the stack: cablab_internal
PROXY_API_ALIAS = "proxy-api"
HEREDOC_END = "CABLAB_EOF"
# restore.sh's bound on saving the hub's log: `docker service logs` can hang at the stream's end
# (docker/cli#4678, open), and a restore must go on; what it gave by then stays in the file.
RESTORE_LOG_TIMEOUT_S = 60
RESTORE_LOGS_KEPT = 10  # restore.sh keeps the newest ten saved hub logs (~80 KB each on the lab) and removes older ones


def _step_template(name: str) -> tuple[str, str, Callable[[], bool]] | None:
    """`steps/<file>`: a step's template or a partial, beside the step modules."""
    if not name.startswith("steps/"):
        return None
    for folder in step_units.template_dirs():
        path = folder / name.removeprefix("steps/")
        if path.is_file():
            return path.read_text(encoding="utf-8"), str(path), lambda: True
    return None


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([jinja2.PackageLoader("cablab_cluster", "templates"),
                                    jinja2.FunctionLoader(_step_template)]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        # `{#` is bash's `${#array[@]}`: move Jinja's comments out of its way.
        comment_start_string="<#",
        comment_end_string="#>",
    )
    env.filters["q"] = shell_quote
    env.filters["package_words"] = step_units.package_words
    return env


def shell_quote(value: object) -> str:
    """The template filter `q`: one shell word, whatever the value holds."""
    return shlex.quote(str(value))


ENV = _env()


_locked = static.locked  # the version of a package in the single-user lock


def _compose(value: Any) -> Any:
    """Escape `$` in every string of a stack-file structure, except the placeholders we put in."""
    if isinstance(value, dict):
        return {k: _compose(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_compose(v) for v in value]
    if isinstance(value, str) and not isinstance(value, _Placeholder):
        return value.replace("$", "$$")
    return str(value) if isinstance(value, _Placeholder) else value


@dataclass(frozen=True)
class UserMountView:
    """A read-only share as a user's container sees it."""

    share: str
    host_path: str  # where the share is mounted on every node
    target: str  # where the user finds it (hub.users.read_only_mounts[].target)
    container_path: str  # where it is mounted in the container
    link: str = ""  # for a target inside the home: the symlink's path relative to the home


# Read-only shares whose target lies inside the home are mounted here and linked into the
# home: runc must lstat a mount point before mounting onto it, and as root on a
# root-squashed NFS home of mode 0700 it may not even look inside (EACCES).
CONTAINER_MOUNTS = PurePosixPath("/mnt/cablab")


def notebook_placement(c: Cluster) -> list[str]:
    """Swarm constraints that keep users' servers on the notebook hosts: the engine label each of them
    declares in its own daemon.json (steps/docker_engine.py), not a hostname (cloud-init may restore
    the metadata's) and not a list of the other hosts (constraints are ANDed: no "one of")."""
    return [f"engine.labels.{NOTEBOOKS_LABEL} == true"]


def user_mounts(c: Cluster) -> list[UserMountView]:
    home = c.hub.users.home_target
    out = []
    for m in c.hub.users.read_only_mounts:
        host_path = str(c.share(m.share).mount)
        if home in m.target.parents:
            rel = m.target.relative_to(home)
            out.append(UserMountView(m.share, host_path, str(m.target), str(CONTAINER_MOUNTS / rel), str(rel)))
        else:
            out.append(UserMountView(m.share, host_path, str(m.target), str(m.target)))
    return out


class _Placeholder(str):
    """A `${VAR}` that docker stack deploy must expand (set by deploy.sh)."""


def _content_named(names: Any, file_of: Any) -> dict[str, dict[str, str]]:
    """Swarm configs or secrets named after their content hash (deploy.sh sets CABLAB_SHA_*):
    a changed file gets a new name, so the services are rolled onto it."""
    return {n.replace(".", "_"): {"name": _Placeholder(f"{STACK}_{n.replace('.', '_')}_${{{_sha_var(n)}}}"),
                                  "file": file_of(n)} for n in names}


def _sha_var(filename: str) -> str:
    return "CABLAB_SHA_" + filename.replace(".", "_").upper()


def _dump_yaml(data: Mapping[str, Any]) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.width = 4096  # no folded lines: one command, one line
    yaml.sort_base_mapping_type_on_output = False  # keep our order
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()


@dataclass(frozen=True)
class RunbookHost:
    """One host's part of the README's run order: its files, then its script."""

    plan: HostPlan
    commands: tuple[tuple[str, str], ...]  # (what it is, the operator's command)

    @property
    def starts_when(self) -> str:
        """When its script may start before the scripts it runs after have ended (plan gates)."""
        if not self.plan.gates:
            return ""
        logged = " and ".join(f'{g.host} logged "step N/M {g.step}"' for g in self.plan.gates)
        return f"its script may start before theirs end: once {logged}"


def runbook(plan: Plan) -> tuple[tuple[RunbookHost, ...], ...]:
    """The operator's commands, wave by wave (plan.waves), run on their machine in the spec's
    directory with OUT set to the rendered directory."""
    waves = []
    for wave in plan.waves:
        hosts = []
        for hp in wave:
            name = hp.host.name
            commands = [(i.origin + (f" (not needed when this succeeds there: {i.unless})" if i.unless else ""),
                         i.copy_command(name)) for i in hp.inputs]
            install = f"sudo install -m 0755 /dev/stdin {shlex.quote(str(PROVISIONER))}"
            commands += [("its script", f"{shlex.join(['ssh', name, install])} < \"$OUT\"/{shlex.quote(name + '.sh')}"),
                         ("run it (as root)", shlex.join(["ssh", "-t", name, f"sudo {PROVISIONER}"]))]
            hosts.append(RunbookHost(hp, tuple(commands)))
        waves.append(tuple(hosts))
    return tuple(waves)


class Renderer:
    """Renders one plan. Holds the pieces several files share."""

    def __init__(self, plan: Plan, uids: UidMap | None = None):
        self.plan = plan
        self.uids = uids if uids is not None else fresh(plan.spec)
        self.c = plan.cluster
        self.spec_name = plan.spec.path.name
        self.home_root = str(self.c.share(self.c.hub.users.home_share).mount)
        self.secrets = secrets_hub_reads(self.c)

    def _ctx(self, **extra: object) -> dict:
        return {
            "cluster": self.c,
            "spec_name": self.spec_name,
            "versions": {**VERSIONS, "jupyterhub": self.c.hub.images.hub.jupyterhub},
            "stack": STACK,
            "hub_dir": HUB_DIR,
            "hub_data": HUB_DATA,
            "hub_db": HUB_DB,
            "hub_org_uids": HUB_ORG_UIDS,
            "hub_container_dir": HUB_CONTAINER_DIR,
            "hub_container_data": HUB_CONTAINER_DATA,
            "hub_label": HUB_LABEL,
            "secrets_dir": SECRETS_DIR,
            "token_dir": SWARM_TOKEN_DIR,
            "image_dir": IMAGE_DIR,
            "state_dir": STATE_DIR,
            "run_summary_file": RUN_SUMMARY.name,
            "provision_log": PROVISION_LOG,
            "internal_port": INTERNAL_PORT,
            "home_root": self.home_root,
            **extra,
        }

    def render_template(self, name: str, **extra: object) -> str:
        text = ENV.get_template(name).render(self._ctx(**extra))
        if HEREDOC_END in text and not name.endswith(".sh.j2"):
            raise ValueError(f"{name} renders the heredoc terminator {HEREDOC_END}")
        return text

    # -- hub bundle --------------------------------------------------------
    def build_context(self, key: str) -> dict[str, str]:
        """The files of an image's build context (besides extra-ca/), by name."""
        image = getattr(self.c.hub.images, key)
        files = {"Dockerfile": self.render_template(f"bundle/{key}.Dockerfile.j2", image=image, users=self.c.hub.users,
                                       stack=SINGLEUSER_STACK, constraints=CONSTRAINTS,
                                       lazy_imports=LAZY_IMPORTS, start=START,
                                       identity=image_identity(self.c, key), hub_command=list(HUB_COMMAND))}
        if key == "singleuser":
            files |= {name: static.text(name) for name in static.SINGLEUSER_CONTEXT}
        return files

    def dockerfile(self, key: str) -> str:
        return self.build_context(key)["Dockerfile"]

    def hub_data(self) -> dict[str, Any]:
        """cablab.json: everything the static jupyterhub_config.py + cablab_hub.py need."""
        c, hub = self.c, self.c.hub
        users = hub.users
        mounts = user_mounts(c)
        return {
            "cluster": c.name,
            "public_url": hub.public_url + "/",
            "proxy_api_url": f"http://{PROXY_API_ALIAS}:{PROXY_API_PORT}",
            "hub_connect_ip": f"{STACK}_hub",
            "db_url": f"sqlite:///{HUB_CONTAINER_DATA / HUB_DB}",  # HUB_DATA, mounted there
            "allowed_users": sorted(self.plan.spec.userlist.allowed),
            "admin_users": sorted(self.plan.spec.userlist.admins),
            "github": {
                "client_id": hub.auth.github.client_id,
                "callback_url": hub.oauth_callback_url,
                "allowed_organizations": sorted(hub.auth.github.allowed_organizations),
            },
            "lab_password": hub.auth.lab_password,
            "spawner": {
                "image": hub.images.singleuser.name,
                "network": c.swarm.network,
                "home_root": self.home_root,
                "home_target": str(users.home_target),
                # Each user's uid (the map's every user: a removed user's uid stays taken); members of
                # allowed_organizations outside it get one from the hub's own range (cablab_hub.OrgUids).
                "uids": dict(sorted(self.uids.uids.items())),
                "org_uids": {"first": self.uids.org_base, "count": ORG_UIDS,
                             "file": str(HUB_CONTAINER_DATA / HUB_ORG_UIDS)},
                "gid": users.gid,
                "default_url": "/lab",
                "read_only_volumes": {m.host_path: m.container_path for m in mounts},
                "home_links": {m.link: m.container_path for m in mounts if m.link},
                "notebook_nodes": [h.name for h in c.notebook_hosts],
                "node_label": NODE_LABEL,  # the engine label naming a node as the spec does
                "placement": notebook_placement(c),
            },
            # jupyterhub-idle-culler's settings (seconds).
            "cull": users.cull.model_dump(),
            # Each server's limits and reservations: the defaults, and every overridden user's own.
            "resources": {
                "default": users.resources().model_dump(),
                "users": {name.lower(): users.resources(name).model_dump() for name in sorted(users.overrides)},
            },
        }

    def hub_configs(self) -> dict[str, str]:
        """The hub's docker swarm configs: file name → content (content-named in the stack)."""
        return {
            HUB_CONFIG.name: static.text("jupyterhub_config.py"),
            "cablab_hub.py": static.text("cablab_hub.py"),
            "cablab_backup.py": static.text("cablab_backup.py"),  # backup.sh's, without JupyterHub's imports
            "cablab.json": json.dumps(self.hub_data(), indent=2, sort_keys=True) + "\n",
        }

    def configs(self) -> dict[str, str]:
        """Every swarm config of the stack: the hub's, and in letsencrypt mode port 80's responder."""
        extra = {ACME_RESPONDER: static.text(ACME_RESPONDER)} if self.c.hub.tls.mode is TLSMode.LETSENCRYPT else {}
        return {**self.hub_configs(), **extra}

    def acme_service(self, deploy: Mapping[str, Any]) -> dict[str, Any]:
        """letsencrypt: port 80 serves certbot's webroot challenges (read-only, as nobody) and
        redirects everything else to the public HTTPS URL (bundle/acme_responder.py)."""
        home = "/srv/acme"
        return {
            "image": self.c.hub.images.hub.name,
            "command": ["python3", f"{home}/{ACME_RESPONDER}", "--webroot", f"{home}/webroot",
                        "--public-url", self.c.hub.public_url, "--port", str(INTERNAL_HTTP_PORT)],
            "user": NOBODY,
            "volumes": [f"{ACME_WEBROOT}:{home}/webroot:ro"],
            "configs": [{"source": ACME_RESPONDER.replace(".", "_"), "target": f"{home}/{ACME_RESPONDER}",
                         "mode": 0o444}],
            "ports": [{"target": INTERNAL_HTTP_PORT, "published": 80, "protocol": "tcp", "mode": "host"}],
            "networks": [self.c.swarm.network],
            "deploy": dict(deploy),
        }

    def anchor_service(self) -> dict[str, Any]:
        """Holds the users' network open on every notebook host. Docker builds an attachable overlay's
        sandbox on a node (namespace, VXLAN, bridge, encryption keys) only when a container there
        joins it, and takes it down when the last one leaves: every first server on an idle node
        waited for that (~9 s of its start in the lab). This task only sleeps, as nobody, with no
        capability, a read-only root and no mount; it reserves nothing (the servers' capacity is
        unchanged). From the single-user image, which every notebook host has; a new one rolls it
        (its identity in the environment), so the old image is not kept alive by it."""
        return {
            "image": self.c.hub.images.singleuser.name,
            "command": ["sleep", "infinity"],  # under the image's entrypoint (tini), which passes it SIGTERM
            "user": NOBODY,
            "read_only": True,
            "cap_drop": ["ALL"],
            "environment": {"CABLAB_SINGLEUSER_IDENTITY": self.singleuser_identity()},
            "networks": [self.c.swarm.network],
            "deploy": {
                "mode": "global",
                "endpoint_mode": "dnsrr",  # nothing to balance: no virtual IP
                "placement": {"constraints": notebook_placement(self.c)},
                "resources": {"limits": {"memory": ANCHOR_MEMORY, "cpus": "0.05"}},
                "restart_policy": {"condition": "any", "delay": "10s"},
            },
        }

    def stack(self) -> str:
        """The hub's stack file, built as data and written by a YAML emitter."""
        c = self.c
        net = c.swarm.network
        # Pinned by a node label, set by the hub host's run (step hub): a hostname may change under us.
        placement = {"constraints": ["node.role == manager", f"node.labels.{HUB_LABEL} == true"]}
        deploy = {"replicas": 1, "placement": placement, "restart_policy": {"condition": "any", "delay": "5s"}}

        def secret_refs(names: tuple[str, ...]) -> list[dict[str, Any]]:
            return [{"source": n.replace(".", "_"), "target": n, "mode": 0o400} for n in names]

        # Plain HTTP on port 80 is redirected to HTTPS by the proxy, except in letsencrypt mode,
        # where the acme service answers the ACME http-01 challenge there and redirects the rest.
        letsencrypt = c.hub.tls.mode is TLSMode.LETSENCRYPT
        redirect = not letsencrypt and c.hub.port == 443
        # The API listens on the proxy's address on the internal network only (its alias resolves there
        # alone; dnsrr: to the task's own address, not a virtual IP), so the users' servers cannot reach it.
        proxy_cmd = " ".join([
            f"until api_ip=$(getent ahostsv4 {PROXY_API_ALIAS} | awk 'NR==1{{print $1}}') && [ -n \"$api_ip\" ];",
            "do sleep 1; done;",
            'CONFIGPROXY_AUTH_TOKEN="$(cat /run/secrets/proxy_token)" exec configurable-http-proxy',
            f'--ip 0.0.0.0 --port {INTERNAL_PORT} --api-ip "$api_ip" --api-port {PROXY_API_PORT}',
            f"--default-target http://{STACK}_hub:8081 --error-target http://{STACK}_hub:8081/hub/error",
            "--ssl-key /run/secrets/tls.key --ssl-cert /run/secrets/tls.crt",
            *([f"--redirect-port {INTERNAL_HTTP_PORT} --redirect-to {c.hub.port}"] if redirect else []),
        ])
        ports = [{"target": INTERNAL_PORT, "published": c.hub.port, "protocol": "tcp", "mode": "host"}]
        if redirect:
            ports.append({"target": INTERNAL_HTTP_PORT, "published": 80, "protocol": "tcp", "mode": "host"})
        configs = self.hub_configs()
        # The hub image's ID, read by deploy.sh on this host: a rebuilt image under the same tag
        # changes the tasks' spec, so swarm rolls them (the tag alone, with --resolve-image never, would not).
        image_id = {"CABLAB_HUB_IMAGE_ID": _Placeholder("${CABLAB_HUB_IMAGE_ID}")}
        stack = {
            "version": "3.8",
            "services": {
                # configurable-http-proxy: the public HTTPS endpoint (TLS >= 1.2), routes to the
                # hub and the users' servers; runs from the hub image, beside the hub.
                "proxy": {
                    "image": c.hub.images.hub.name,
                    "entrypoint": ["/bin/sh", "-c"],
                    "command": [proxy_cmd],
                    "environment": {"NODE_OPTIONS": "--tls-min-v1.2", **image_id},
                    "ports": ports,
                    # `net`: the users' servers (routes to them); internal: the hub's calls to the API.
                    "networks": {net: {}, INTERNAL_NETWORK: {"aliases": [PROXY_API_ALIAS]}},
                    "secrets": secret_refs(("proxy_token", TLS_CERT, TLS_KEY)),
                    "deploy": {**deploy, "endpoint_mode": "dnsrr"},
                },
                "hub": {
                    "image": c.hub.images.hub.name,
                    "command": list(HUB_COMMAND),
                    "environment": {**image_id, "CABLAB_SINGLEUSER_IDENTITY": self.singleuser_identity()},
                    "volumes": ["/var/run/docker.sock:/var/run/docker.sock", f"{HUB_DATA}:{HUB_CONTAINER_DATA}",
                                f"{self.home_root}:{self.home_root}"],
                    # `net`: the users' servers reach the hub's API (8081); internal: the proxy's API.
                    "networks": [net, INTERNAL_NETWORK],
                    "configs": [{"source": n.replace(".", "_"), "target": str(HUB_CONTAINER_DIR / n), "mode": 0o444}
                                for n in configs],
                    # Not the TLS pair (the proxy's): a renewed certificate rolls the proxy only.
                    "secrets": secret_refs(tuple(n for n in self.secrets if n not in (TLS_CERT, TLS_KEY))),
                    "deploy": deploy,
                },
                **({"acme": self.acme_service(deploy)} if letsencrypt else {}),
                ANCHOR_SERVICE: self.anchor_service(),
            },
            "networks": {net: {"external": True},
                         INTERNAL_NETWORK: {"driver": "overlay", "internal": True, "attachable": False,
                                            **({"driver_opts": {"encrypted": ""}} if c.swarm.encrypted else {})}},
            "configs": _content_named(self.configs(), lambda n: f"./{n}"),
            "secrets": _content_named(self.secrets, lambda n: f"{SECRETS_DIR}/{n}"),
        }
        header = (f"# Docker stack of the hub for cluster {c.name}; rendered by cablab-cluster from {self.spec_name}.\n"
                  f"# Deployed by {HUB_DIR}/deploy.sh, which sets the CABLAB_SHA_* variables: a changed\n"
                  "# secret or config gets a new name, so the services are rolled onto it; and\n"
                  "# CABLAB_HUB_IMAGE_ID: a rebuilt hub image rolls them too. CABLAB_SINGLEUSER_IDENTITY is\n"
                  "# the users' image as rendered: a new single-user image rolls the hub.\n")
        return header + _dump_yaml(_compose(stack))

    def backup_params(self) -> dict[str, Any]:
        """Where the homes are for backup.sh/restore.sh: on the hub host only if it is the NFS server."""
        server = self.c.nfs_server
        assert server is not None
        return {"homes_here": server == self.c.hub_host, "nfs_host": server.name,
                "homes_path": str(self.c.share(self.c.hub.users.home_share).path)}

    def deploy(self) -> str:
        return self.render_template("bundle/deploy.sh.j2", secrets=self.secrets, configs=list(self.configs()),
                                    image=self.c.hub.images.hub.name, hub_image_record=HUB_IMAGE_RECORD,
                                    upgrade_backups=UPGRADE_BACKUPS)

    def singleuser_identity(self) -> str:
        """What makes the users' image what it is, as known at render time: its spec entry and, when
        built, its build context (a changed package or lock is a new identity)."""
        image = self.c.hub.images.singleuser
        files = self.build_context("singleuser") if image.source is ImageSource.BUILD else {}
        data = json.dumps({"image": image.model_dump(mode="json"), "context": files}, sort_keys=True)
        return hashlib.sha256(data.encode()).hexdigest()[:12]

    def bundle(self) -> list[tuple[str, str, str]]:
        """(name in HUB_DIR, mode, content) for the hub host."""
        return [
            *((name, "0644", text) for name, text in self.configs().items()),
            ("stack.yml", "0644", self.stack()),
            ("deploy.sh", "0755", self.deploy()),
            ("backup.sh", "0755", self.render_template("bundle/backup.sh.j2", **self.backup_params())),
            ("restore.sh", "0755", self.render_template("bundle/restore.sh.j2", hub_log_dir=HUB_LOG_DIR,
                                                        log_timeout=RESTORE_LOG_TIMEOUT_S, logs_kept=RESTORE_LOGS_KEPT,
                                                        **self.backup_params())),
            ("userlist", "0644", self.plan.spec.userlist.render()),
        ]

    # -- host scripts ------------------------------------------------------
    def step(self, step: Step) -> str:
        """A step's script: its template with its parameters' fields and its extra context."""
        params = {f.name: getattr(step.params, f.name) for f in dataclasses.fields(step.params)}
        return self.render_template(f"steps/{step.type.template.name}", **params, packages=step.packages,
                       **step.type.context(self, step.params))

    def host_script(self, name: str) -> str:
        hp = self.plan.for_host(name)
        parts = [self.render_template("prelude.sh.j2", host=hp.host, steps=hp.steps, after=hp.after, why_after=hp.why_after)]
        parts += [self.step(s) for s in hp.steps]
        parts.append(self.render_template("footer.sh.j2"))
        return "\n".join(p.rstrip("\n") + "\n" for p in parts)

    def readme(self) -> str:
        return self.render_template("bundle/README.j2", plan=self.plan, hub=self.c.hub, run_summary=RUN_SUMMARY,
                                    runbook=runbook(self.plan))

    def files(self) -> dict[str, str]:
        files = {f"{hp.host.name}.sh": self.host_script(hp.host.name) for hp in self.plan.hosts}
        files["README"] = self.readme()
        for key in ("hub", "singleuser"):
            files.update({f"{key}/{name}": text for name, text in self.build_context(key).items()})
        for name, _, text in self.bundle():
            files[f"hub/{name}"] = text
        return files


def render_plan(plan: Plan, uids: UidMap | None = None) -> dict[str, str]:
    """Every output file of a plan, by path relative to the output directory; `uids`: the users' uids
    (uidmap.resolve; default: those a first render gives)."""
    return Renderer(plan, uids).files()


EXECUTABLE = {".sh"}
MARKER = ".cablab-rendered"  # in every output directory: what render may replace


def out_problems(out: Path, protected: Mapping[str, Path]) -> list[Problem]:
    """Why `out` must not be replaced by a render, if it must not.

    `protected` names what a render never deletes: the spec and the files it points to, the
    secrets directory. Replaced may be only a missing or empty directory, or one render wrote
    (it holds MARKER); never a symlink, the spec's directory or one around the protected files.
    """
    hint = "give --out a new directory, e.g. rendered/ beside the spec"
    if out.is_symlink():
        return [Problem("--out", f"{out} is a symlink; render replaces --out as a whole", hint)]
    target = out.resolve()
    for what, path in protected.items():
        path = path.resolve()
        if target == path or target in path.parents:
            return [Problem("--out", f"{out} holds {what} ({path}); render replaces --out as a whole", hint)]
        if path.is_dir() and path in target.parents:
            return [Problem("--out", f"{out} is inside {what} ({path})", hint)]
    if target.exists() and not target.is_dir():
        return [Problem("--out", f"{out} is not a directory", hint)]
    if target.is_dir() and any(target.iterdir()) and not (target / MARKER).is_file():
        return [Problem("--out", f"{out} is a non-empty directory render did not write (no {MARKER} in it); "
                                 "render replaces --out as a whole", f"{hint}, or empty it yourself")]
    return []


def write_tree(files: Mapping[str, str], out: Path, source: Path | None = None) -> None:
    """Replace `out` with exactly `files` and MARKER, all at once: a failure leaves the old tree.

    MARKER names `source`, the spec, relative to `out` (so the output stays byte-identical).
    Refuses (SpecError) what `out_problems` refuses without protected files; the caller checks those.
    """
    problems = out_problems(out, {})
    if problems:
        raise SpecError(problems, str(source or ""))
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    origin = f" from {os.path.relpath(source.resolve(), out)}" if source else ""
    marker = f"rendered by cablab-cluster{origin}; `cablab-cluster render` replaces this directory as a whole\n"
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for rel, text in sorted({**files, MARKER: marker}.items()):
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            path.chmod(0o755 if PurePosixPath(rel).suffix in EXECUTABLE else 0o644)
        os.chmod(tmp, 0o755)
        if out.exists():
            # Move the old tree into a fresh directory of our own, then delete that.
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            out.rename(trash / "old")
            tmp.rename(out)
            shutil.rmtree(trash)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
