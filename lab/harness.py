"""The lab lifecycle, like Molecule: create → converge → idempotence → verify → destroy.

    python -m lab ubuntu|centos|centos-dm [--destroy passing|always|never] [--flavour baked|bare] [--drills] [--bench]

Each lab is a spec, lab/<lab>.yml: ubuntu (one manager), centos (three managers, Docker
on an LVM volume), centos-dm (centos with the seed's devicemapper thin pool).

Phases and their wall times go to lab/reports/<variant>.json and are printed:
host (host setup), images (hub and single-user at once; a box built in the same
run starts beside them), box (what is left of its build), up, provision, idempotence, verify, drills (with
--drills, or --from drills: fault drills, lab/drills.py), bench (with --bench, or
--from bench: benchmarks/spawn.py, outside the converge + verify budget), destroy.
A failed cluster stays up by default (`--destroy passing`), with the command
to reach it printed.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import vagrant

from cablab_cluster.layout import RUN_SUMMARY
from cablab_cluster.plan import Input, InputKind, Plan, make_plan
from cablab_cluster.render import Renderer
from cablab_cluster.secretstore import ensure_secrets, secrets_dir
from cablab_cluster.spec import TLSMode, Variant, load_spec
from lab import drills, pebble, upgrade

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "lab"
CACHE = Path(os.environ.get("CABLAB_CACHE", Path.home() / ".cache" / "cablab"))
BASE_IMAGE = "cablab/base:bookworm"
IMAGES_WAIT = 1800  # s a box built beside the images waits for their tarballs at most (build.sh)
PHASES = ("host", "images", "box", "up", "provision", "idempotence", "verify", "drills", "bench", "upgrade")
VARIANTS = ("ubuntu", "centos", "centos-dm")  # lab/<variant>.yml, provisioned with provision/<variant>/
# What a variant's distribution runs out of the box and the Debian box does not: EL 9 runs firewalld
# (the firewall step's firewalld branch then runs for real here); Ubuntu runs no firewall (ufw is
# installed inactive). Baked into the box disabled (lab/boxes/build.sh), started at `up`.
DISTRIBUTION_SERVICES = {Variant.CENTOS: ("firewalld",), Variant.UBUNTU: ()}


# This machine's speed, as a figure in the report beside the phases: a fixed pure-Python loop in a
# fresh interpreter, best of three. The lab's phases are CPU-bound emulation on this machine, and the
# same code's phases here have varied by half between runs hours apart (lab/README, fourteenth and
# fifteenth sessions); a budget read against this figure says whether the code or the machine moved.
REFERENCE_LOOP = "sum(i * i % 7 for i in range({n}))"
REFERENCE_N = 4_000_000


def reference_seconds(n: int = REFERENCE_N, runs: int = 3) -> dict[str, float]:
    """Wall and CPU seconds of REFERENCE_LOOP (best of `runs`), in a fresh interpreter each time."""
    code = ("import time\nw, c = time.perf_counter(), time.process_time()\n"
            + REFERENCE_LOOP.format(n=int(n))
            + "\nprint(time.perf_counter() - w, time.process_time() - c)")
    best: dict[str, float] = {}
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
        wall, cpu = (float(x) for x in out.split())
        if not best or wall < best["wall"]:
            best = {"wall": round(wall, 3), "cpu": round(cpu, 3)}
    return best


def log(msg: str) -> None:
    print(f"[lab {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class LabError(RuntimeError):
    pass


def sh(cmd: list[str] | str, *, env: dict | None = None, check: bool = True, capture: bool = False,
       prefix: str = "", timeout: float | None = None, cwd: Path | None = None,
       on_line: Callable[[str], None] | None = None,
       started: Callable[[subprocess.Popen], None] | None = None) -> subprocess.CompletedProcess:
    """Run a command; stream its output with a prefix unless captured (each line to `on_line` too;
    the process to `started`, so that another thread may stop it)."""
    shell = isinstance(cmd, str)
    if capture:
        proc = subprocess.run(cmd, shell=shell, env=env, text=True, capture_output=True, timeout=timeout, cwd=cwd,
                              check=False)
    else:
        p = subprocess.Popen(cmd, shell=shell, env=env, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, bufsize=1, cwd=cwd)
        if started is not None:
            started(p)
        lines = []
        assert p.stdout is not None
        for line in p.stdout:
            lines.append(line)
            print(f"{prefix}{line}", end="", flush=True)
            if on_line is not None:
                on_line(line)
        p.wait(timeout=timeout)
        proc = subprocess.CompletedProcess(cmd, p.returncode, "".join(lines), "")
    if check and proc.returncode != 0:
        tail = (proc.stdout or "")[-2000:] + (proc.stderr or "")[-2000:]
        raise LabError(f"command failed ({proc.returncode}): {cmd if shell else shlex.join(cmd)}\n{tail}")
    return proc


def image_context(plan: Plan, rendered: Path, key: str) -> list[Path]:
    """An image's build context as render defines it (the Dockerfile, + the lock for the
    single-user image), from the rendered tree: not the rest of the hub bundle beside it in hub/."""
    return [rendered / key / name for name in sorted(Renderer(plan).build_context(key))]


def image_digest(context: list[Path], base_id: str, name: str) -> str:
    """The cache key of an image. Comment lines do not change the image (they name the source
    spec, which differs between the variants): left out, so both variants share images and box."""
    content = "".join(f"{p.name}\n" + "".join(line for line in p.read_text().splitlines(True)
                                             if not line.startswith("#")) for p in context)
    return hashlib.sha256(content.encode() + base_id.encode() + name.encode()).hexdigest()[:16]


@dataclass
class Report:
    variant: str
    phases: dict[str, float] = field(default_factory=dict)
    notes: dict[str, object] = field(default_factory=dict)
    result: str = "running"

    @contextmanager
    def phase(self, name: str):
        log(f"phase {name} ...")
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = round(time.monotonic() - t0, 1)
            log(f"phase {name}: {self.phases[name]:.1f} s")
            self.save()

    # The lab's wall-time budget (issue 12 §4: <= 12 min with a cached box and images) covers
    # converge, idempotence and verify; the drills and the spawn benchmark are phases of their own.
    BUDGET_PHASES = ("provision", "idempotence", "verify")

    def budget(self) -> float | None:
        """provision + idempotence + verify (s), when all three ran."""
        if not all(p in self.phases for p in self.BUDGET_PHASES):
            return None
        return round(sum(self.phases[p] for p in self.BUDGET_PHASES), 1)

    def save(self) -> None:
        out = LAB / "reports"
        out.mkdir(exist_ok=True)
        (out / f"{self.variant}.json").write_text(json.dumps(self.__dict__, indent=2) + "\n")

    def print(self) -> None:
        print("\nphase            seconds")
        for k, v in self.phases.items():
            print(f"{k:<16} {v:>8.1f}")
        print(f"{'total':<16} {sum(self.phases.values()):>8.1f}")
        if self.budget() is not None:
            print(f"budget: {' + '.join(self.BUDGET_PHASES)} = {self.budget():.1f} s (target <= 720 s, cached box "
                  f"and images; drills and bench apart)")
        for k, v in self.notes.items():
            print(f"{k}: {v}")
        print(f"result: {self.result}  (report: lab/reports/{self.variant}.json)")


class Gates:
    """The first provision's order between hosts (plan.HostPlan.gates): each host's thread waits
    until every step it waits for has logged "step N/M <step>: ..." on its host, or that host's
    script has ended well; a host whose script failed fails those waiting on it. A host with
    `after` but no known gates waits for those hosts' whole scripts. Ungated (the second run):
    nobody waits."""

    LINE = re.compile(r"^\[cablab (?P<host>[^\]]+)\] step \d+/\d+ (?P<step>\S+): (changed|ok)")

    def __init__(self, plan: Plan, gated: bool = True):
        self.waits: dict[str, tuple[tuple[str, str], ...]] = {
            hp.host.name: (tuple((g.host, g.step) for g in hp.gates) if hp.gates
                           else tuple((a, "") for a in hp.after)) if gated else ()
            for hp in plan.hosts}
        self.done = {w: threading.Event() for ws in self.waits.values() for w in ws if w[1]}
        self.ended = {hp.host.name: threading.Event() for hp in plan.hosts}
        self.ok: dict[str, bool] = {}

    def wait(self, host: str, timeout: float = 3600) -> list[str] | None:
        """Block until `host` may start: what it waited for ("node1 swarm_init"), None if one failed."""
        deadline = time.monotonic() + timeout
        waited = []
        for up, step in self.waits[host]:
            event = self.done.get((up, step))
            while event is None or not event.is_set():
                if self.ended[up].is_set():
                    if not self.ok.get(up):
                        return None
                    break
                if time.monotonic() > deadline:
                    return None
                self.ended[up].wait(1)
            waited.append(f"{up} {step}".strip())
        return waited

    def watcher(self, host: str) -> Callable[[str], None]:
        def on_line(line: str) -> None:
            m = self.LINE.match(line)
            if m and m["host"] == host and (host, m["step"]) in self.done:
                self.done[(host, m["step"])].set()
        return on_line

    def finished(self, host: str, ok: bool) -> None:
        self.ok[host] = ok
        self.ended[host].set()


def stray_domains(domains: dict[str, str], own: dict[str, str | None], listed: str,
                  volumes: str) -> list[tuple[str | None, str | None]]:
    """(domain, None) for each lab VM name libvirt has under another id than this checkout's
    vagrant state records; (None, volume) for each lab disk whose VM is gone."""
    present = {}
    for line in listed.splitlines():
        parts = line.split()
        if len(parts) == 2:
            present[parts[1]] = parts[0]
    vols = {line.split()[0] for line in volumes.splitlines()[2:] if line.split()}
    out: list[tuple[str | None, str | None]] = []
    for host, domain in domains.items():
        if domain in present:
            if present[domain] != own.get(host):
                out.append((domain, None))
        elif f"{domain}.img" in vols:
            out.append((None, f"{domain}.img"))
    return out


class Lab:
    def __init__(self, variant: str, flavour: str, box: str | None):
        self.variant = variant
        self.spec_path = LAB / f"{variant}.yml"
        self.spec = load_spec(self.spec_path)
        self.plan: Plan = make_plan(self.spec)
        self.flavour = flavour
        self.box = box or os.environ.get("CABLAB_BOX") or f"cablab/bookworm-{flavour}"
        self.state = ROOT / ".vagrant" / variant
        self.ssh_config = self.state / "ssh-config"
        self.env = {**os.environ, "CABLAB_VARIANT": variant, "CABLAB_BOX": self.box,
                    "VAGRANT_DOTFILE_PATH": str(self.state), "VAGRANT_DEFAULT_PROVIDER": "libvirt",
                    "VAGRANT_CHECKPOINT_DISABLE": "1", "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
                    "VAGRANT_NO_COLOR": "1"}
        self.report = Report(variant)
        self.images: dict[str, Path] = {}
        self._box_build: tuple[threading.Thread, list[BaseException]] | None = None  # built beside the images
        self._box_procs: list[subprocess.Popen] = []
        self._control_dir: Path | None = None  # set while `multiplexed()`
        self.rendered = ROOT / "provision" / variant  # the render the images and provisioners come from
        # python-vagrant runs the vagrant CLI in the repository with our environment;
        # stderr passes through, `up` streams its stdout line by line.
        self.machines = vagrant.Vagrant(root=str(ROOT), env=self.env, quiet_stdout=False, quiet_stderr=False)

    # -- vagrant -------------------------------------------------------------
    def _ssh_options(self) -> list[str]:
        opts = ["-F", str(self.ssh_config)]
        if self._control_dir is not None:
            opts += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_dir}/%n",
                     "-o", "ControlPersist=300"]
        return opts

    @contextmanager
    def multiplexed(self):
        """ssh and scp share one master connection per VM while this lasts: a new connection costs
        the guest a key exchange (seconds under TCG, and the provision makes ~20 a host). Only around
        the provision runs: a master does not outlive a VM's reboot (the drills)."""
        with tempfile.TemporaryDirectory(prefix="cablab-ssh-") as d:
            self._control_dir = Path(d)
            try:
                yield
            finally:
                for sock in self._control_dir.iterdir():
                    subprocess.run(["ssh", *self._ssh_options(), "-O", "exit", sock.name],
                                   capture_output=True, timeout=30, check=False)
                self._control_dir = None

    def ssh(self, host: str, command: str, *, capture: bool = True, check: bool = True,
            prefix: str = "", on_line: Callable[[str], None] | None = None) -> subprocess.CompletedProcess:
        return sh(["ssh", *self._ssh_options(), host, command], capture=capture, check=check,
                  prefix=prefix, on_line=on_line)

    def upload(self, host: str, src: Path, dest: str, mode: str = "0644") -> None:
        """Copy a file of this machine to the VM as root (scp to /tmp, then install)."""
        tmp = f"/tmp/cablab-upload-{src.name}"
        sh(["scp", "-q", *self._ssh_options(), str(src), f"{host}:{tmp}"])
        self.ssh(host, f"sudo install -D -m {mode} {shlex.quote(tmp)} {shlex.quote(dest)} && rm -f {shlex.quote(tmp)}")

    def relay(self, source: str, host: str, path: str, mode: str) -> None:
        """Copy a (small, text) file from one VM to the same path on another, as root."""
        text = self.ssh(source, f"sudo cat {shlex.quote(path)}").stdout.strip()
        self.ssh(host, f"sudo install -d -m 0700 {shlex.quote(str(Path(path).parent))} && "
                       f"echo {shlex.quote(text)} | sudo install -m {mode} /dev/stdin {shlex.quote(path)}")

    # -- phases --------------------------------------------------------------
    def host_setup(self) -> None:
        sh(["bash", str(LAB / "host-setup.sh")], prefix="  host| ")

    def baked_packages(self) -> list[str]:
        """Every apt package the lab's provisioners may install (every variant: one box)."""
        names: set[str] = set()
        for variant in VARIANTS:
            for hp in make_plan(load_spec(LAB / f"{variant}.yml")).hosts:
                for step in hp.steps:
                    names.update(step.packages.get("apt", ()))
        for services in DISTRIBUTION_SERVICES.values():
            names.update(services)  # the Debian package of each is named as its service
        return sorted(names)

    def _box_command(self, images_wait: int = 0) -> tuple[list[str], dict[str, str]] | None:
        """lab/boxes/build.sh for the locally built box (None: a box given with --box/CABLAB_BOX)."""
        if not self.box.startswith("cablab/bookworm-"):
            return None
        env = {**os.environ, "CABLAB_BAKED_PACKAGES": " ".join(self.baked_packages()),
               "CABLAB_BAKED_IMAGES": " ".join(str(self.images[k]) for k in sorted(self.images)),
               "CABLAB_BAKED_IMAGES_WAIT": str(images_wait)}
        return ["bash", str(LAB / "boxes" / "build.sh"), self.flavour], env

    def build_box(self) -> None:
        """The locally built box; `baked` also holds the packages and the images (loaded
        at build time on this host, instead of `docker load` under TCG in every VM). If it was
        started beside the images (build_images), what is left of it."""
        if self._box_build is not None:
            thread, error = self._box_build
            thread.join()
            self._box_build = None
            if error:
                raise error[0]
            return
        command = self._box_command()
        if command is not None:
            sh(command[0], env=command[1], prefix="  box| ")

    def _start_box_beside(self) -> None:
        """Start the box's build in the background while the images build: lab/boxes/build.sh does
        everything that does not need them first (debootstrap, packages, disk, the GRUB boot: ~2 min
        here), then waits for their tarballs. A failed image build stops it (_stop_box)."""
        command = self._box_command(images_wait=IMAGES_WAIT)
        if command is None:
            return
        error: list[BaseException] = []

        def run() -> None:
            try:
                sh(command[0], env=command[1], prefix="  box| ", started=self._box_procs.append)
            except BaseException as exc:  # noqa: BLE001  # raised by build_box in the main thread
                error.append(exc)

        log("box: building beside the images (it waits for their tarballs once it needs them)")
        thread = threading.Thread(target=run, name="box-build", daemon=True)
        self._box_build = (thread, error)
        thread.start()

    def _stop_box(self) -> None:
        if self._box_build is None:
            return
        for proc in self._box_procs:
            if proc.poll() is None:
                proc.terminate()  # build.sh cleans up (its TERM trap runs its EXIT trap)
        self._box_build[0].join(timeout=120)
        self._box_build = None

    def build_images(self, box_beside: bool = False) -> None:
        """Build hub and single-user images from the rendered Dockerfiles, save them gzipped,
        cached by Dockerfile + base image. The two build at once (their steps wait on apt, PyPI
        and npm much of the time); with `box_beside`, the box's build starts beside them as soon
        as the tarballs' names are known (the base image built)."""
        sh(["bash", str(LAB / "images" / "build-base.sh")], prefix="  base| ")
        base_id = sh(["docker", "image", "inspect", "--format", "{{.Id}}", BASE_IMAGE], capture=True).stdout.strip()
        (CACHE / "images").mkdir(parents=True, exist_ok=True)
        todo: dict[str, tuple[str, list[Path], Path]] = {}
        for key in ("hub", "singleuser"):
            image = getattr(self.spec.cluster.hub.images, key)
            context = image_context(self.plan, self.rendered, key)
            tarball = CACHE / "images" / f"{key}-{image_digest(context, base_id, image.name)}.tar.gz"
            self.images[key] = tarball
            if not tarball.exists():
                todo[key] = (image.name, context, tarball)
        if box_beside and todo:
            self._start_box_beside()
        try:
            if todo:
                with ThreadPoolExecutor(len(todo)) as pool:
                    futures = [pool.submit(self._build_image, key, *todo[key]) for key in todo]
                for future in futures:
                    future.result()  # the first failure, once both have ended
        except BaseException:
            self._stop_box()
            raise
        for key in ("hub", "singleuser"):
            image = getattr(self.spec.cluster.hub.images, key)
            tarball = self.images[key]
            size = sh(["docker", "image", "inspect", "--format", "{{.Size}}", image.name], capture=True,
                      check=False).stdout.strip()
            self.report.notes[f"image {key}"] = (f"{image.name}: {int(size) / 1e6:.0f} MB raw, " if size.isdigit()
                                                 else f"{image.name}: ") + \
                f"{tarball.stat().st_size / 1e6:.0f} MB saved+gzip ({tarball.name})"

    def _build_image(self, key: str, name: str, context: list[Path], tarball: Path) -> None:
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="cablab-ctx-") as ctx:
            # The rendered build context + extra-ca/: this host's CAs (PyPI/npm may sit
            # behind a TLS-intercepting proxy), trusted by the build stages only.
            for p in context:
                shutil.copy(p, Path(ctx) / p.name)
            (Path(ctx) / "extra-ca").mkdir()
            for crt in Path("/usr/local/share/ca-certificates").glob("*.crt"):
                shutil.copy(crt, Path(ctx) / "extra-ca" / crt.name)
            sh(["docker", "build", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", name, ctx],
               env={**os.environ, "DOCKER_BUILDKIT": "0"}, prefix=f"  build {key}| ")
        tmp = tarball.with_suffix(f".tmp{os.getpid()}")
        with gzip.open(tmp, "wb", compresslevel=1) as fh:
            save = subprocess.Popen(["docker", "save", name], stdout=subprocess.PIPE)
            assert save.stdout is not None
            shutil.copyfileobj(save.stdout, fh, 1 << 20)
            if save.wait() != 0:
                raise LabError(f"docker save {name} failed")
        tmp.rename(tarball)  # complete: the box's build may take it now
        log(f"image {name}: built and saved in {time.monotonic() - t0:.0f} s")

    def domain_name(self, host: str) -> str:
        """libvirt's name of a lab VM (the Vagrantfile's `cablab-<cluster name>-` prefix)."""
        return f"cablab-{self.spec.cluster.name}-{host}"

    def clear_strays(self) -> None:
        """Remove this lab's VMs and disks that this checkout's vagrant state does not own
        (another checkout's lab, or state lost): `vagrant up` would refuse their names."""
        listed = sh(["virsh", "list", "--all", "--uuid", "--name"], capture=True).stdout
        volumes = sh(["virsh", "vol-list", "default"], capture=True, check=False).stdout
        names = {h.name: self.domain_name(h.name) for h in self.spec.cluster.hosts}
        own = {host: drills.vagrant_id(self.state, host) for host in names}
        for domain, volume in stray_domains(names, own, listed, volumes):
            if domain:
                log(f"removing VM {domain}: another lab's, not this checkout's ({self.state})")
                sh(["virsh", "destroy", domain], check=False, capture=True)
                sh(["virsh", "undefine", domain, "--remove-all-storage"], capture=True)
            elif volume:
                log(f"removing disk {volume}: left by a lab VM that no longer exists")
                sh(["virsh", "vol-delete", "--pool", "default", volume], capture=True)

    def up(self) -> None:
        sh(["vagrant", "validate"], env=self.env, cwd=ROOT, prefix="  vagrant| ")
        self.clear_strays()
        for line in self.machines.up(provision=False, stream_output=True):
            print(f"  vagrant| {line}", end="" if line.endswith("\n") else "\n", flush=True)
        self.state.mkdir(parents=True, exist_ok=True)
        cfg = self.machines.ssh_config()
        cfg = cfg.replace("LogLevel FATAL", "LogLevel ERROR")
        self.ssh_config.write_text(cfg + "\nHost *\n  ServerAliveInterval 30\n  ConnectTimeout 30\n")
        self.distribution_services()

    def distribution_services(self) -> None:
        """Start what the variant's distribution runs by default (DISTRIBUTION_SERVICES), on every
        VM at once; already running: nothing changes."""
        services = DISTRIBUTION_SERVICES[self.spec.cluster.variant]
        if not services:
            return
        command = "sudo systemctl enable --now " + " ".join(shlex.quote(s) for s in services)
        results: dict[str, int] = {}

        def start(host: str) -> None:
            results[host] = self.ssh(host, command, capture=False, check=False, prefix=f"  {host}| ").returncode

        threads = [threading.Thread(target=start, args=(h.name,)) for h in self.spec.cluster.hosts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        failed = sorted(h for h, rc in results.items() if rc != 0)
        if failed:
            raise LabError(f"could not start {', '.join(services)} on {', '.join(failed)}")
        log(f"{', '.join(services)} running on every VM, as {self.spec.cluster.variant.value}'s distribution has it")

    def cube_tarball(self) -> Path:
        """The synthetic cube as the operator makes it (`cablab-cluster cube --tarball`), cached
        by the generator's source."""
        from cablab_cluster import cube

        key = hashlib.sha256(Path(cube.__file__).read_bytes()).hexdigest()[:16]
        tarball = CACHE / "seed" / f"{cube.CUBE_NAME.removesuffix('.zarr')}-{key}.tar.gz"
        if not tarball.exists():
            t0 = time.monotonic()
            cube.cube_tarball(tarball)
            log(f"synthetic cube: {tarball.stat().st_size / 1e6:.1f} MB in {time.monotonic() - t0:.0f} s")
        return tarball

    def _local(self, item: Input) -> Path:
        """Where the lab keeps what an operator would bring: the file to upload for an input."""
        if item.kind is InputKind.SECRET:
            return secrets_dir(self.spec) / item.key
        if item.kind is InputKind.IMAGE:
            return self.images[item.key]
        if item.kind is InputKind.CUBE:
            return self.cube_tarball()
        raise LabError(f"no local source for {item.kind.value} inputs ({item.path})")

    def _inputs(self, host: str, relayed: bool) -> None:
        """What the operator copies by hand on a real cluster: the plan's inputs of the host, those
        from this machine (relayed=False: any time) or those relayed from another host (relayed=True:
        once that host has made them, e.g. the first manager's swarm tokens)."""
        for item in self.plan.for_host(host).inputs:
            if bool(item.from_host) != relayed:
                continue
            if item.unless and self.ssh(host, f"sudo sh -c {shlex.quote(item.unless)}", check=False).returncode == 0:
                log(f"{host}: {item.path} not needed ({item.unless})")  # e.g. an image baked into the box
            elif item.from_host:
                self.relay(item.from_host, host, str(item.path), item.mode)
            else:
                self.upload(host, self._local(item), str(item.path), item.mode)

    def _provision_host(self, host: str, results: dict, upload: bool,
                        on_line: Callable[[str], None] | None = None) -> None:
        t0 = time.monotonic()
        if upload:
            self._inputs(host, relayed=True)
        out = self.ssh(host, "sudo /usr/local/sbin/cablab-provision", capture=False, check=False,
                       prefix=f"  {host}| ", on_line=on_line)
        # The script's own summary of the run (RUN_SUMMARY), not its log lines (those are for people).
        got = self.ssh(host, f"sudo cat {RUN_SUMMARY}", check=False)
        run = json.loads(got.stdout) if got.returncode == 0 else {}
        steps = run.get("steps", [])
        results[host] = {"rc": out.returncode, "seconds": round(time.monotonic() - t0, 1),
                         "result": run.get("result"), "error": run.get("error"),
                         "steps": run.get("total"), "changed": run.get("changed"),
                         "changed_steps": [s["name"] for s in steps if s["changed"]],
                         "step_seconds": {s["name"]: s["seconds"] for s in steps}}

    @property
    def acme(self) -> bool:
        """The spec gets its certificate from the lab's pebble (lab/pebble.py)."""
        return self.spec.cluster.hub.tls.mode is TLSMode.LETSENCRYPT

    def acme_roots(self) -> Path:
        """pebble running (started if not), and the root it issues under now, saved for the checks."""
        pebble.ensure(self.spec.cluster, log=log)
        return pebble.roots(self.spec.cluster, CACHE / "pebble" / f"{self.variant}-roots.pem")

    def provision(self, upload: bool = True) -> dict:
        results: dict = {}
        if self.acme:
            self.acme_roots()  # certbot on the hub host asks it during the hub's run
        if upload:
            # What `cablab-cluster render` does beside the spec: generated once, then kept.
            actions = ensure_secrets(self.spec)
            log("secrets: " + ", ".join(f"{a.name} {a.action}" for a in actions))
        # The first run follows the plan's gates: a host starts once the steps it waits for on
        # earlier hosts have logged their line (the NFS server's exports, the first manager's swarm
        # and tokens), so the hub's start runs beside the joiners. The second run changes nothing:
        # every host runs it at once.
        gates = Gates(self.plan, gated=upload)
        threads = [threading.Thread(target=self._provision_gated, args=(hp.host.name, gates, results, upload))
                   for hp in self.plan.hosts]
        with self.multiplexed():
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        failed = [hp.host.name for hp in self.plan.hosts if results.get(hp.host.name, {}).get("rc") != 0]
        if failed:
            raise LabError(f"provisioning failed on {', '.join(failed)}: {results}")
        return results

    def _provision_gated(self, host: str, gates: Gates, results: dict, upload: bool) -> None:
        try:
            if upload:  # while it waits: its script and what needs no other host (measured: ~35 s a worker)
                self._inputs(host, relayed=False)
                self.upload(host, self.rendered / f"{host}.sh", "/usr/local/sbin/cablab-provision", "0755")
            waited = gates.wait(host)
            if waited is None:
                results[host] = {"rc": None, "result": "not run", "error": "a host it waits for failed"}
                return
            if waited:
                log(f"{host}: starts after {', '.join(waited)}")
            self._provision_host(host, results, upload, on_line=gates.watcher(host))
        finally:
            gates.finished(host, results.get(host, {}).get("rc") == 0)

    def verify(self) -> None:
        # As an operator would: the checks shipped in the package, through `cablab-cluster verify`.
        reports = LAB / "reports"
        timings = reports / "verify-timings.json"
        timings.unlink(missing_ok=True)
        # letsencrypt: the checks trust exactly the root pebble issues under (CABLAB_ACME_ROOTS).
        acme = {"CABLAB_ACME_ROOTS": str(self.acme_roots())} if self.acme else {}
        try:
            sh([sys.executable, "-m", "cablab_cluster.cli", "verify", str(self.spec_path), "--ssh-config",
                str(self.ssh_config), "--", "-v", "-p", "no:cacheprovider", "--durations=8"],
               env={**os.environ, "CABLAB_REPORT_DIR": str(reports), **acme}, prefix="  verify| ")
        finally:
            if timings.exists():  # what the checks measured (spawns, kernel, notebooks, browser)
                self.report.notes["verify timings (s)"] = json.loads(timings.read_text())

    def bench(self) -> None:
        """The spawn benchmark (issue 12) as an operator runs it on any cluster; its figures go to
        lab/reports/spawn-<variant>.json and, summed up, to the lab's report."""
        out = LAB / "reports" / f"spawn-{self.variant}.json"
        out.unlink(missing_ok=True)
        try:
            sh([sys.executable, str(ROOT / "benchmarks" / "spawn.py"), str(self.spec_path), "--ssh-config",
                str(self.ssh_config), "--report", str(out), "--vms-here"], prefix="  bench| ")
        finally:
            if out.exists():
                got = json.loads(out.read_text())
                self.report.notes["spawn benchmark"] = {
                    k: got.get(k) for k in ("hub", "floor", "hub_over_floor_p50", "direct", "direct_over_floor_p50",
                                             "hub_over_direct_p50", "first", "first_new_homes", "first_over_hub_p50",
                                             "paired", "hub_within_target", "host_cpu_per_spawn", "breakdown", "capacity")}

    def destroy(self) -> None:
        self.machines.destroy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variant", choices=VARIANTS)
    ap.add_argument("--destroy", choices=["passing", "always", "never"], default="passing")
    ap.add_argument("--flavour", choices=["baked", "bare"], default=os.environ.get("CABLAB_FLAVOUR", "baked"))
    ap.add_argument("--box", help="vagrant box (default: the locally built cablab/bookworm-<flavour>)")
    ap.add_argument("--from", dest="start", choices=PHASES, default=PHASES[0],
                    help="start at this phase, on the VMs an earlier run left up (like molecule converge/verify)")
    ap.add_argument("--drills", action="store_true",
                    help="after verify, the fault drills (lab/drills.py): hub killed, worker lost, manager rebooted, "
                         "and with three managers a manager lost")
    ap.add_argument("--bench", action="store_true",
                    help="last, the spawn benchmark (benchmarks/spawn.py): hub vs the Docker-API floor, capacity")
    ap.add_argument("--upgrade", action="store_true",
                    help="last, the upgrade pass (lab/upgrade.py): a changed spec re-rendered and re-provisioned, "
                         "the hub rolls, old servers keep running, new ones get the new image")
    args = ap.parse_args(argv)

    lab = Lab(args.variant, args.flavour, args.box)
    r = lab.report
    r.notes["box"] = lab.box
    ok = False
    todo = PHASES[PHASES.index(args.start):]
    try:
        if "host" in todo:
            with r.phase("host"):
                lab.host_setup()
        r.notes["reference loop (s)"] = {"before": reference_seconds()}
        if "box" in todo or "provision" in todo:  # baked into the box, uploaded if missing (cached: ~1 s)
            with r.phase("images"):  # with the box's build beside them when the box is built too
                lab.build_images(box_beside="box" in todo)
        if "box" in todo:
            with r.phase("box"):  # what is left of it once the images are done
                lab.build_box()
        if "up" in todo:
            with r.phase("up"):
                lab.up()
        if "provision" in todo:
            with r.phase("provision"):
                r.notes["provision"] = lab.provision()
        if "idempotence" in todo:
            with r.phase("idempotence"):
                second = lab.provision(upload=False)
            r.notes["idempotence"] = second
            changed = {h: v["changed_steps"] for h, v in second.items() if v["changed"] != 0}
            if "provision" in r.phases:
                ratio = r.phases["idempotence"] / max(r.phases["provision"], 1e-9)
                r.notes["idempotence/provision"] = f"{ratio:.1%} (target <= 10%)"
            if changed:
                raise LabError(f"second provision changed something: {changed}")
        if "verify" in todo:
            with r.phase("verify"):
                lab.verify()
            r.notes["reference loop (s)"]["after verify"] = reference_seconds()
        if (args.drills and "drills" in todo) or args.start == "drills":
            with r.phase("drills"):
                drills.run(lab)
        if args.bench or args.start == "bench":
            with r.phase("bench"):
                lab.bench()
        if args.upgrade or args.start == "upgrade":
            with r.phase("upgrade"):
                upgrade.run(lab)
        ok = True
        r.result = "passed"
    except (LabError, drills.DrillFailed, subprocess.SubprocessError, OSError) as exc:
        r.result = f"failed: {str(exc)[:2000]}"
        log(r.result)
    finally:
        if args.destroy == "always" or (args.destroy == "passing" and ok):
            with r.phase("destroy"):
                try:
                    lab.destroy()
                except (LabError, subprocess.SubprocessError) as exc:
                    log(f"destroy failed: {exc}")
        elif lab.ssh_config.exists():
            c = lab.spec.cluster
            log(f"cluster left up: ssh -F {lab.ssh_config} {c.first_manager.name}   |   "
                f"CABLAB_VARIANT={args.variant} VAGRANT_DOTFILE_PATH={lab.state} vagrant destroy -f")
            if ok and c.hub.auth.lab_password:
                # The lab as a local dev cluster: where to point a browser, and as whom.
                users = ", ".join(u.name + (" (admin)" if u.admin else "") for u in lab.spec.userlist.users)
                log(f"hub: {c.hub.public_url}/hub/login (self-signed: {secrets_dir(lab.spec) / 'tls.crt'})")
                log(f"users: {users}; password: {secrets_dir(lab.spec) / 'lab_password'}")
        r.save()
        r.print()
    return 0 if ok else 1
