"""Stage 3 — render: a plan becomes files. Pure: `render_plan` returns
{relative path: text}; `write_tree` puts them in place all at once.

One template per step kind (templates/steps/), shared by both variants; every
host script is prelude + its steps + footer. The hub bundle (Dockerfiles,
jupyterhub_config.py, stack file, deploy script) is rendered once and both
embedded in the hub host's script and written beside it for review.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Mapping

import jinja2

from .plan import (
    HUB_DATA,
    HUB_DIR,
    IMAGE_DIR,
    SECRETS_DIR,
    STACK,
    SWARM_TOKEN_DIR,
    Mount,
    Plan,
    Step,
    StepKind,
    hub_secrets,
)
from .spec import Cluster, ImageSource, StorageDriver

# Versions baked into the images (the fast suite tests the config against these).
VERSIONS = {
    "jupyterhub": "6.1.1",
    "dockerspawner": "14.0.0",
    "oauthenticator": "17.4.0",
    "jupyter_server": "2.21.1",
    "chp": "5.1.0",  # the newest whose dependencies accept bookworm's node 18
}
INTERNAL_PORT = 8443  # the proxy's public port inside its container
PROXY_API_PORT = 8001
HEREDOC_END = "CABLAB_EOF"


def _pyset(values: list) -> str:
    return "{" + ", ".join(repr(v) for v in sorted(values)) + "}" if values else "set()"


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cablab_cluster", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        # `{#` is bash's `${#array[@]}`: move Jinja's comments out of its way.
        comment_start_string="<#",
        comment_end_string="#>",
    )
    env.filters["q"] = lambda v: shlex.quote(str(v))
    env.filters["pyrepr"] = repr
    env.filters["pyset"] = _pyset
    return env


ENV = _env()


def _mount_options(m: Mount, nfs_version: str) -> str:
    access = "ro" if m.share.read_only else "rw"
    if m.bind:
        return f"bind,{access}" if m.share.read_only else "bind"
    return f"nfsvers={nfs_version},{access},hard,noatime,_netdev"


def _fstab(step: Step) -> list[str]:
    """fstab lines of the mounts (their fields are validated: no whitespace, no newline)."""
    version = str(step.params["nfs_version"])
    return [f"{m.source} {m.target} {m.fstype} {_mount_options(m, version)} 0 0" for m in step.params["mounts"]]


def _daemon_json(c: Cluster) -> str:
    storage = c.docker.storage
    cfg: dict = {
        "log-driver": "json-file",
        "log-opts": {"max-size": "20m", "max-file": "3"},
    }
    if storage.driver is StorageDriver.DEVICEMAPPER:
        cfg["storage-driver"] = "devicemapper"
        cfg["storage-opts"] = [
            # device-mapper doubles a '-' inside a VG name: vg-a → /dev/mapper/vg--a-thinpool
            f"dm.thinpooldev=/dev/mapper/{storage.volume_group.replace('-', '--')}-thinpool",
            "dm.use_deferred_removal=true",
            "dm.use_deferred_deletion=true",
        ]
    else:
        cfg["storage-driver"] = "overlay2"
    return json.dumps(cfg, indent=2, sort_keys=True)


def _storage_driver(c: Cluster) -> str:
    return "devicemapper" if c.docker.storage.driver is StorageDriver.DEVICEMAPPER else "overlay2"


def _exports(step: Step) -> list[str]:
    clients = step.params["clients"]
    lines = []
    for s in step.params["shares"]:
        opts = ["ro" if s.read_only else "rw", *s.options, "root_squash" if s.root_squash else "no_root_squash"]
        if clients:
            lines.append(f"{s.path} " + " ".join(f"{h.address}({','.join(opts)})" for h in clients))
        else:
            lines.append(f"# {s.path}: no other host to export to")
    return lines


class Renderer:
    """Renders one plan. Holds the pieces several files share."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.c = plan.cluster
        self.spec_name = plan.spec.path.name
        self.home_root = str(self.c.share(self.c.hub.users.home_share).mount)
        self.secrets = hub_secrets(self.c)

    def _ctx(self, **extra: object) -> dict:
        return {
            "cluster": self.c,
            "spec_name": self.spec_name,
            "versions": VERSIONS,
            "stack": STACK,
            "hub_dir": HUB_DIR,
            "hub_data": HUB_DATA,
            "secrets_dir": SECRETS_DIR,
            "token_dir": SWARM_TOKEN_DIR,
            "image_dir": IMAGE_DIR,
            "internal_port": INTERNAL_PORT,
            "home_root": self.home_root,
            **extra,
        }

    def _t(self, name: str, **extra: object) -> str:
        text = ENV.get_template(name).render(self._ctx(**extra))
        if HEREDOC_END in text and not name.endswith(".sh.j2"):
            raise ValueError(f"{name} renders the heredoc terminator {HEREDOC_END}")
        return text

    # -- hub bundle --------------------------------------------------------
    def dockerfile(self, key: str) -> str:
        image = getattr(self.c.hub.images, key)
        return self._t(f"bundle/{key}.Dockerfile.j2", image=image, users=self.c.hub.users)

    def jupyterhub_config(self) -> str:
        c, hub = self.c, self.c.hub
        notebook_nodes = [h.name for h in c.notebook_hosts]
        return self._t(
            "bundle/jupyterhub_config.py.j2",
            userlist=self.plan.spec.userlist,
            github=hub.auth.github,
            callback_url=hub.oauth_callback_url,
            lab_password=hub.auth.lab_password,
            hub_service=f"{STACK}_hub",
            public_url=hub.public_url,
            proxy_api_url=f"http://{STACK}_proxy:{PROXY_API_PORT}",
            singleuser_image=hub.images.singleuser.name,
            network=c.swarm.network,
            users=hub.users,
            read_only_volumes={str(c.share(m.share).mount): str(m.target) for m in hub.users.read_only_mounts},
            notebook_nodes=notebook_nodes,
            placement=["node.role == worker"] if c.workers else ["node.role == manager"],
        )

    def stack(self) -> str:
        return self._t("bundle/stack.yml.j2", hub_image=self.c.hub.images.hub.name, port=self.c.hub.port,
                       proxy_api_port=PROXY_API_PORT,
                       network=self.c.swarm.network, secrets=self.secrets, hub_host=self.c.hub_host.name)

    def deploy(self) -> str:
        return self._t("bundle/deploy.sh.j2", secrets=self.secrets)

    def bundle(self) -> list[tuple[str, str, str]]:
        """(name in HUB_DIR, mode, content) for the hub host."""
        return [
            ("jupyterhub_config.py", "0644", self.jupyterhub_config()),
            ("stack.yml", "0644", self.stack()),
            ("deploy.sh", "0755", self.deploy()),
            ("userlist", "0644", self.plan.spec.userlist.render()),
        ]

    # -- host scripts ------------------------------------------------------
    def step(self, step: Step) -> str:
        params: dict = dict(step.params)
        if step.kind is StepKind.DOCKER_ENGINE:
            params.update(daemon_json=_daemon_json(self.c), storage_driver=_storage_driver(self.c))
        elif step.kind is StepKind.NFS_SERVER:
            params["exports"] = _exports(step)
        elif step.kind is StepKind.NFS_MOUNTS:
            params["fstab"] = _fstab(step)
        elif step.kind is StepKind.IMAGE:
            image = params["image"]
            params["dockerfile"] = self.dockerfile(str(params["key"])).rstrip("\n") \
                if image.source is ImageSource.BUILD else ""
        elif step.kind is StepKind.HUB:
            params.update(bundle=[(n, m, t.rstrip("\n")) for n, m, t in self.bundle()],
                          cluster_name=self.c.name)
        return self._t(step.template, **params)

    def host_script(self, name: str) -> str:
        hp = self.plan.for_host(name)
        parts = [self._t("prelude.sh.j2", host=hp.host, steps=hp.steps, after=hp.after, why_after=hp.why_after)]
        parts += [self.step(s) for s in hp.steps]
        parts.append(self._t("footer.sh.j2"))
        return "\n".join(p.rstrip("\n") + "\n" for p in parts)

    def readme(self) -> str:
        images = [("hub", self.c.hub.images.hub), ("singleuser", self.c.hub.images.singleuser)]
        return self._t("bundle/README.j2", plan=self.plan, hub=self.c.hub, hub_host=self.c.hub_host,
                       first_manager=self.c.first_manager, images=images)

    def files(self) -> dict[str, str]:
        files = {f"{hp.host.name}.sh": self.host_script(hp.host.name) for hp in self.plan.hosts}
        files["README"] = self.readme()
        files["hub/Dockerfile"] = self.dockerfile("hub")
        files["singleuser/Dockerfile"] = self.dockerfile("singleuser")
        for name, _, text in self.bundle():
            files[f"hub/{name}"] = text
        return files


def render_plan(plan: Plan) -> dict[str, str]:
    """Every output file of a plan, by path relative to the output directory."""
    return Renderer(plan).files()


EXECUTABLE = {".sh"}


def write_tree(files: Mapping[str, str], out: Path) -> None:
    """Replace `out` with exactly `files`, all at once: a failure leaves the old tree."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for rel, text in sorted(files.items()):
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            path.chmod(0o755 if PurePosixPath(rel).suffix in EXECUTABLE else 0o644)
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
