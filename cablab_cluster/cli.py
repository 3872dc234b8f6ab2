"""cablab-cluster: init, validate, plan, render.

Exit status: 0 ok, 2 invalid input (every problem listed, nothing written),
1 anything else.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console
from rich.table import Table
from ruamel.yaml import YAML

from .layout import SECRETS_SUBDIR
from .plan import make_plan, removal
from .render import out_problems, render_plan, write_tree
from .secretstore import check_secrets, ensure_secrets, secrets_dir
from .uidmap import UIDS_FILE, ensure_uids
from .uidmap import resolve as resolve_uids
from .spec import LoadedSpec, SpecError, TLSMode, load_spec

# emoji=False: a value such as `a:x:b` is printed as written, not as an emoji.
out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def _load(path: str) -> LoadedSpec:
    try:
        return load_spec(path)
    except SpecError as exc:
        _fail(exc)


def _checked(path: str) -> tuple[LoadedSpec, dict[str, str]]:
    """Every check render makes before writing (spec, files, secrets store, rendering), writing nothing."""
    loaded = _load(path)
    problems = check_secrets(loaded)
    if problems:
        _fail(SpecError(problems, path))
    try:
        files = render_plan(make_plan(loaded), resolve_uids(loaded))
    except SpecError as exc:
        _fail(exc)
    return loaded, files


def _protected(spec: LoadedSpec) -> dict[str, Path]:
    """What `render --out` must never replace: the spec, the files it points to, the secrets."""
    hub = spec.cluster.hub
    paths: dict[str, Path] = {
        "the spec": spec.path,
        "hub.userlist": spec.resolve(hub.userlist),
        "hub.auth.github.client_secret_file": spec.resolve(hub.auth.github.client_secret_file),
        "the secrets directory": secrets_dir(spec),
    }
    if hub.tls.mode is TLSMode.PROVIDED and hub.tls.cert is not None and hub.tls.key is not None:
        paths.update({"hub.tls.cert": spec.resolve(hub.tls.cert), "hub.tls.key": spec.resolve(hub.tls.key)})
    return paths


def _fail(exc: SpecError) -> NoReturn:
    for line in exc.lines():
        err.print(line, markup=False)
    err.print(f"{len(exc.problems)} problem(s); nothing was written.", style="red")
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cablab-cluster")
def cli() -> None:
    """One cluster spec -> per-host shell provisioners for a JupyterHub on a Docker swarm."""


def main() -> None:
    """Entry point: anything unexpected is exit status 1 with one line, not a traceback."""
    try:
        cli(standalone_mode=True)
    except Exception as exc:  # noqa: BLE001 — the last line of defence of a CLI
        err.print(f"error: {exc}", markup=False)
        sys.exit(1)


# What `init` puts in the client secret file: validate accepts it (the spec is complete), and
# validate and render say that GitHub logins fail until the real secret replaces it.
PLACEHOLDER_SECRET = "REPLACE-ME-with-the-client-secret-of-your-GitHub-OAuth-app"


def _write_new(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write `path` unless it exists (then leave it); True if written."""
    if path.exists():
        return False
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return True


def ensure_gitignore(folder: Path, entries: list[str]) -> list[str]:
    """Add to folder/.gitignore the entries it lacks (never rewrites a line); the ones added."""
    path = folder / ".gitignore"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    have = {line.strip() for line in text.splitlines()}
    missing = [e for e in entries if e not in have]
    if missing:
        header = "" if text else "# Written by cablab-cluster init: secrets stay out of version control.\n"
        sep = "" if not text or text.endswith("\n") else "\n"
        path.write_text(text + sep + header + "".join(f"{e}\n" for e in missing), encoding="utf-8")
    return missing


def _placeholder_warning(spec: LoadedSpec) -> None:
    path = spec.resolve(spec.cluster.hub.auth.github.client_secret_file)
    try:
        placeholder = path.read_text(encoding="utf-8", errors="replace").strip() == PLACEHOLDER_SECRET
    except OSError:
        return
    if placeholder:
        err.print(f"warning: hub.auth.github.client_secret_file: {path} still holds init's placeholder; GitHub "
                  "logins fail until it holds your OAuth app's client secret (one line, mode 0600)", markup=False)


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="cluster.yml")
@click.option("--force", is_flag=True, help="Overwrite an existing spec (the other files are never overwritten).")
def init(path: Path, force: bool) -> None:
    """Write a commented example spec, a userlist, a placeholder client secret (0600) and a
    .gitignore for the secrets beside it: `validate` accepts the result."""
    if path.exists() and not force:
        err.print(f"{path} exists; use --force to overwrite it.")
        sys.exit(2)
    example = (Path(__file__).parent / "example.yml").read_text(encoding="utf-8")
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(example, encoding="utf-8")
    written = [str(path)]
    userlist = folder / "userlist"
    if _write_new(userlist, "# GitHub users allowed to log in; `admin` makes an admin.\nalice admin\nbob\n"):
        written.append(str(userlist))
    secret_name = str(YAML(typ="safe").load(example)["hub"]["auth"]["github"]["client_secret_file"])
    secret = folder / secret_name
    if _write_new(secret, PLACEHOLDER_SECRET + "\n", 0o600):
        written.append(f"{secret} (a placeholder, mode 0600)")
    if ensure_gitignore(folder, [f"/{SECRETS_SUBDIR}/", f"/{secret_name}"]):
        written.append(str(folder / ".gitignore"))
    out.print("wrote " + ", ".join(written), markup=False)
    out.print(f"next: edit {path}; put your GitHub OAuth app's client secret in {secret} (replacing the "
              f"placeholder, one line, mode 0600); then `cablab-cluster validate {path}`", markup=False)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
def validate(spec: str) -> None:
    """Check a spec; print every problem."""
    loaded, _ = _checked(spec)
    _placeholder_warning(loaded)
    c = loaded.cluster
    out.print(f"{spec}: ok — cluster {c.name} ({c.variant.value}), {len(c.hosts)} hosts, "
              f"{len(c.managers)} manager(s), {len(loaded.userlist.users)} user(s)", markup=False)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
def plan(spec: str) -> None:
    """Print the per-host steps and the order to run the hosts in."""
    p = make_plan(_load(spec))
    out.print(f"cluster {p.cluster.name} ({p.cluster.variant.value}): run the hosts in this order", style="bold")
    for i, hp in enumerate(p.hosts, 1):
        after = f"after {', '.join(hp.after)} ({hp.why_after})" if hp.after else "first"
        out.print(f"\n{i}. {hp.host.name} {hp.host.address}  [{', '.join(r.value for r in hp.host.roles)}]  {after}",
                  markup=False, style="bold")
        table = Table(box=None, show_header=False, padding=(0, 2))
        for col in ("n", "step", "what"):
            table.add_column(col, overflow="fold")
        for n, s in enumerate(hp.steps, 1):
            table.add_row(str(n), s.kind, s.title)
        out.print(table)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory, replaced as a whole: new, empty, or an earlier render's output.")
def render(spec: str, out_dir: Path) -> None:
    """Write every host's provisioner and the hub bundle to --out; keep secrets beside the spec."""
    loaded, files = _checked(spec)
    problems = out_problems(out_dir, _protected(loaded))
    try:
        if problems:
            raise SpecError(problems, spec)
        actions = ensure_secrets(loaded)
        uids = ensure_uids(loaded)
        files = render_plan(make_plan(loaded), uids)  # the map as written (another render may have grown it)
        write_tree(files, out_dir, loaded.path)
    except SpecError as exc:
        _fail(exc)
    out.print(f"rendered {len(files)} files to {out_dir}/ (run order in {out_dir}/README)", markup=False)
    _placeholder_warning(loaded)
    summary = ", ".join(f"{a.name} {a.action}" for a in actions)
    out.print(f"secrets in {secrets_dir(loaded)}/ (0600): {summary}", markup=False)
    if uids.new:
        out.print(f"uids in {secrets_dir(loaded)}/{UIDS_FILE}: new " +
                  ", ".join(f"{n} {uids.uids[n]}" for n in uids.new), markup=False)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.argument("host")
def drain(spec: str, host: str) -> None:
    """Print the commands that take worker HOST out of the swarm (runs nothing itself)."""
    loaded = _load(spec)
    c = loaded.cluster
    try:
        commands = removal(c, host)
    except SpecError as exc:
        _fail(SpecError(exc.problems, spec))
    out.print(f"# Removing {host} from cluster {c.name}: run these as root, in order (docker on {c.first_manager.name} "
              "is the swarm's manager).", markup=False)
    for n, cmd in enumerate(commands, 1):
        out.print(f"# {n}. on {cmd.host}: {cmd.why}", markup=False)
        out.print(cmd.command, markup=False)
    out.print(f"# {len(commands) + 1}. remove {host} from {spec}, render again, and run every remaining host's "
              "provisioner: its NFS exports and firewall rules are withdrawn.", markup=False)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--ssh-config", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="OpenSSH config with a `Host <name>` entry for every host (e.g. `vagrant ssh-config`).")
@click.option("--secrets", "secrets", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The spec's secrets directory (default: secrets/<cluster>/ beside the spec).")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def verify(spec: str, ssh_config: Path, secrets: Path | None, pytest_args: tuple[str, ...]) -> None:
    """Check a provisioned cluster against its spec (the checks in cablab_cluster.checks; pytest args after --)."""
    _load(spec)
    try:
        import pytest  # with pytest-testinfra, in the lab extra; only verify needs it
    except ImportError:
        err.print("verify needs the lab extra: pip install 'cablab-cluster[lab]'", markup=False)
        sys.exit(1)

    # The checks ship in the package: pytest collects them by module name, wherever
    # the package is installed; -p loads their plugin even where entry points are not
    # read (PYTEST_DISABLE_PLUGIN_AUTOLOAD, a source tree on PYTHONPATH).
    args = ["--pyargs", "cablab_cluster.checks", "-p", "cablab_cluster.checks.plugin",
            "--spec", str(Path(spec).resolve()), "--ssh-config", str(ssh_config.resolve())]
    if secrets is not None:
        args += ["--secrets", str(secrets.resolve())]
    sys.exit(int(pytest.main([*args, *pytest_args])))


@cli.command("cube")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write esdc-8d-2deg-synthetic.zarr into (a previous cube there is replaced).")
@click.option("--tarball", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a deterministic .tar.gz of the cube (for the NFS server's cube share).")
def cube_command(out_dir: Path, tarball: Path | None) -> None:
    """Write the synthetic data cube users explore at ~/cube (needs the `cube` extra)."""
    from rich.progress import Progress

    try:
        from . import cube
    except ImportError as exc:
        err.print(f"the cube generator needs the `cube` extra ({exc.name or exc} is not installed): "
                  "pip install 'cablab-cluster[cube]'", markup=False)
        sys.exit(2)
    target = out_dir / cube.CUBE_NAME
    problems = []
    if target.exists() and not cube.is_cube(target) and (not target.is_dir() or any(target.iterdir())):
        problems.append(f"--out: {target} exists and is not a cube cablab-cluster wrote; "
                        "move it away or choose another --out")
    if tarball is not None and tarball.exists() and not cube.is_cube_tarball(tarball):
        problems.append(f"--tarball: {tarball} exists and is not a cube tarball; move it away or choose another file")
    if problems:
        for line in problems:
            err.print(line, markup=False)
        err.print(f"{len(problems)} problem(s); nothing was written.", style="red")
        sys.exit(2)
    steps = [*cube.VARIABLE_NAMES, "write zarr"] + (["tarball"] if tarball else [])
    with Progress(console=out, transient=True) as progress:
        task = progress.add_task("cube", total=len(steps))

        def step(name: str) -> None:
            progress.update(task, description=name, completed=steps.index(name))

        path = cube.write_cube(out_dir, progress=step)
        if tarball is not None:
            step("tarball")
            cube.cube_tarball(tarball, path)
        progress.update(task, completed=len(steps))
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    out.print(f"wrote {path} ({size / 1e6:.1f} MB, {len(cube.VARIABLE_NAMES)} variables, "
              f"key {cube.content_key(path)[:12]})", markup=False)
    if tarball is not None:
        out.print(f"wrote {tarball} ({tarball.stat().st_size / 1e6:.1f} MB, sha256 {cube.content_key(tarball)})",
                  markup=False)


if __name__ == "__main__":  # pragma: no cover
    main()
