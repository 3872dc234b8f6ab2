"""The hub's deploy script (templates/bundle/deploy.sh.j2) run for real, as root, in the sandbox of
tests/hostile/ with a recording docker stub: what rolls the hub, when the database is backed up and
migrated, and which swarm configs and secrets are pruned.

The stub's state files stand for the hub host: /var/lib/cablab-stub-image holds the hub image's ID,
/var/lib/cablab-stub-jupyterhub the JupyterHub version `jupyterhub --version` prints in it,
/var/lib/cablab-stub-jupyterhub-label the image's org.cablab.jupyterhub label (none: an image built elsewhere).
"""

from __future__ import annotations

import shlex

from pathlib import Path

import pytest

from cablab_cluster.layout import (HUB_DATA, HUB_DIR, HUB_IMAGE_RECORD, HUB_LOG_DIR, STATE_DIR, UPGRADE_BACKUPS,
                                   secrets_hub_reads)
from cablab_cluster.plan import make_plan
from cablab_cluster.render import Renderer
from cablab_cluster.spec import load_spec

from test_hostile import Run, _run

LAB = Path(__file__).parent.parent / "lab"

pytestmark = pytest.mark.skipif(not Path("/proc/self/ns/mnt").exists(), reason="needs namespaces")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(make_plan(load_spec(LAB / "ubuntu.yml")))


def run_flow(r: Renderer, *steps: str) -> Run:
    """The bundle installed on the sandbox's hub host, then `steps` (bash); `deploy NAME` runs deploy.sh,
    printing `== NAME: deployed|unchanged` and marking the call log with `docker mark NAME`."""
    lines = ["set -euo pipefail", f"install -d -m 0755 {HUB_DIR} {STATE_DIR}", f"install -d -m 0700 {HUB_DATA}"]
    for name, mode, text in r.bundle():
        lines += [f"cat >{HUB_DIR}/{name} <<'CABLAB_EOF'", text.rstrip("\n"), "CABLAB_EOF", f"chmod {mode} {HUB_DIR}/{name}"]
    lines += ["echo sha256:image1 >/var/lib/cablab-stub-image",
              f'deploy() {{ docker mark "$1"; echo "== $1: $({HUB_DIR}/deploy.sh)"; }}', *steps]
    run = _run("\n".join(lines) + "\n", {"STUB_SECRETS": " ".join(secrets_hub_reads(r.c)), "STUB_FILES": "",
                                         "STUB_DISKS": "", "STUB_FINDMNT": "", "STUB_CONTROL": "true",
                                         "STUB_PIN": "24.0", "STUB_DRIVER": "overlay2"}, "apt")
    assert run.rc == 0, run.output
    return run


def between(run: Run, start: str, end: str | None = None) -> list[tuple[str, ...]]:
    """The calls after `docker mark start` and before `docker mark end`."""
    marks = [i for i, c in enumerate(run.calls) if c[:2] == ("docker", "mark")]
    names = [run.calls[i][2] for i in marks]
    first = marks[names.index(start)] + 1
    last = marks[names.index(end)] if end else len(run.calls)
    return list(run.calls[first:last])


def kinds(calls: list[tuple[str, ...]]) -> list[str]:
    """Each docker call as its first two words (`stack deploy`, `service scale`, `run upgrade-db`)."""
    out = []
    for c in calls:
        if c[0] != "docker":
            continue
        if c[1] == "run":
            out.append("run " + c[c.index("jupyterhub") + 1])
        else:
            out.append(" ".join(c[1:3]))
    return out


def test_first_deploy_records_the_image_and_needs_no_migration(renderer):
    run = run_flow(renderer, "deploy first", f"cat {HUB_IMAGE_RECORD}", "deploy again")
    assert "== first: deployed" in run.output and "== again: unchanged" in run.output
    assert "image1 6.1.1" in run.output  # the record: image ID and JupyterHub version
    first = kinds(between(run, "first", "again"))
    assert "stack deploy" in first and "run upgrade-db" not in first and "service scale" not in first
    assert "stack deploy" not in kinds(between(run, "again"))  # same image: no roll


def test_a_rebuilt_image_under_the_same_tag_rolls_the_hub_after_a_backup(renderer):
    run = run_flow(renderer, "deploy first", f"echo db >{HUB_DATA}/jupyterhub.sqlite",
                   "echo sha256:image2 >/var/lib/cablab-stub-image", "deploy rebuilt",
                   f"ls {UPGRADE_BACKUPS}", f"cat {HUB_IMAGE_RECORD}")
    assert "== rebuilt: deployed" in run.output
    assert "backed up the hub to " + str(UPGRADE_BACKUPS) in run.output
    assert "cablab-hub-lab-ubuntu-" in run.output  # backup.sh's directory
    assert "image2 6.1.1" in run.output
    rebuilt = kinds(between(run, "rebuilt"))
    assert "stack deploy" in rebuilt
    # the same JupyterHub: a rolling update, no stop and no migration
    assert "run upgrade-db" not in rebuilt and "service scale" not in rebuilt


def test_a_new_jupyterhub_version_stops_the_hub_and_migrates_before_it_starts(renderer):
    run = run_flow(renderer, "deploy first", f"echo db >{HUB_DATA}/jupyterhub.sqlite",
                   "echo sha256:image2 >/var/lib/cablab-stub-image", "echo 6.2.0 >/var/lib/cablab-stub-jupyterhub",
                   "deploy upgrade", f"cat {HUB_IMAGE_RECORD}", "deploy again")
    assert "upgraded the hub database from JupyterHub 6.1.1 to 6.2.0" in run.output
    upgrade = kinds(between(run, "upgrade", "again"))
    assert upgrade.index("service scale") < upgrade.index("run upgrade-db") < upgrade.index("stack deploy")
    call = next(c for c in between(run, "upgrade", "again") if "upgrade-db" in c)
    assert "image2" in " ".join(call) and f"{HUB_DATA}:/srv/jupyterhub/data" in call  # the new image, the hub's data
    assert "image2 6.2.0" in run.output
    assert "== again: unchanged" in run.output


def test_cablab_s_hub_image_tells_its_version_by_label_without_starting_a_container(renderer):
    """The label (set and checked by hub.Dockerfile's build) saves a container start per new image
    (~20-30 s under the lab's emulation); an image without it is asked, as before."""
    run = run_flow(renderer, "echo 6.1.1 >/var/lib/cablab-stub-jupyterhub-label", "deploy first",
                   f"echo db >{HUB_DATA}/jupyterhub.sqlite", "echo sha256:image2 >/var/lib/cablab-stub-image",
                   "echo 6.2.0 >/var/lib/cablab-stub-jupyterhub-label", "deploy upgrade", f"cat {HUB_IMAGE_RECORD}")
    assert "run --version" not in kinds(between(run, "first")), "a labelled image was started to ask its version"
    assert "upgraded the hub database from JupyterHub 6.1.1 to 6.2.0" in run.output
    assert "image2 6.2.0" in run.output
    unlabelled = run_flow(renderer, "deploy first")
    assert "run --version" in kinds(between(unlabelled, "first"))
    no_value = run_flow(renderer, "echo '<no value>' >/var/lib/cablab-stub-jupyterhub-label", "deploy first",
                        f"cat {HUB_IMAGE_RECORD}")
    assert "run --version" in kinds(between(no_value, "first")) and "image1 6.1.1" in no_value.output


def test_the_hub_image_label_is_the_version_it_installs_and_checks(renderer):
    dockerfile = renderer.build_context("hub")["Dockerfile"]
    version = renderer.c.hub.images.hub.jupyterhub
    assert f"jupyterhub=={version} " in dockerfile
    assert f'test "$(/opt/jupyterhub/bin/jupyterhub --version)" = {version}' in dockerfile
    assert f"LABEL org.cablab.jupyterhub={version}\n" in dockerfile


def test_configs_and_secrets_no_service_uses_are_removed(renderer):
    current = "$(grep -o 'CABLAB_SHA_CABLAB_JSON=[0-9a-f]*' /var/lib/cablab/hub/deployed | cut -d= -f2)"
    run = run_flow(renderer, "deploy first",
                   f'printf "cablab_cablab_json_0123456789ab\\ncablab_cablab_json_{current}\\n" >/var/lib/cablab-stub-configs',
                   "printf 'cablab_cookie_secret_0123456789ab\\n' >/var/lib/cablab-stub-secrets",
                   "echo sha256:image2 >/var/lib/cablab-stub-image", "deploy second")
    removed = [c[1:] for c in between(run, "second") if c[0] == "docker" and c[2:3] == ("rm",)]
    assert removed == [("config", "rm", "cablab_cablab_json_0123456789ab"),
                       ("secret", "rm", "cablab_cookie_secret_0123456789ab")]


def test_the_stack_carries_the_image_identities(renderer, tmp_path):
    stack = renderer.stack()
    assert stack.count("CABLAB_HUB_IMAGE_ID: ${CABLAB_HUB_IMAGE_ID}") == 2  # hub and proxy
    # the hub's (a new users' image rolls the hub) and the anchor's (it runs that image)
    assert stack.count(f"CABLAB_SINGLEUSER_IDENTITY: {renderer.singleuser_identity()}") == 2
    # a changed single-user package is a new identity, so a new stack file and a roll
    text = (LAB / "ubuntu.yml").read_text()
    for name in ("userlist.lab", "github-client-secret.lab"):
        (tmp_path / name).write_text((LAB / name).read_text())
    changed = tmp_path / "ubuntu.yml"
    changed.write_text(text.replace("    singleuser:\n", "    singleuser:\n      packages: [tqdm==4.67.1]\n", 1))
    other = Renderer(make_plan(load_spec(changed)))
    assert other.c.hub.images.singleuser.packages == ("tqdm==4.67.1",)
    assert other.singleuser_identity() != renderer.singleuser_identity()
    assert other.stack() != stack


# The restore tests' start: the hub deployed, a database in place ("db"), and `$b` its backup.
BACKED_UP = ("deploy first", f"echo db >{HUB_DATA}/jupyterhub.sqlite",
             f"b=$({HUB_DIR}/backup.sh /var/backups/t --without-homes | tail -n 1)")


def test_a_restore_stops_the_hub_and_starts_the_same_stack_again_or_deploys_a_restored_bundle(renderer):
    """restore.sh: the hub scaled to 0 while the database is replaced; then back to one replica of the
    stack as it stands, or, with --with-config (secrets and bundle restored too), deployed again."""
    run = run_flow(renderer, *BACKED_UP,
                   f"echo lost >{HUB_DATA}/jupyterhub.sqlite",
                   "docker mark restore", f'{HUB_DIR}/restore.sh "$b"', f"cat {HUB_DATA}/jupyterhub.sqlite",
                   "docker mark with-config", f'{HUB_DIR}/restore.sh "$b" --with-config')
    plain = [" ".join(c[1:]) for c in between(run, "restore", "with-config")]
    assert [c for c in plain if c.startswith("service scale")] == [
        "service scale --detach=false cablab_hub=0", "service scale --detach cablab_hub=1"], plain
    # The hub's log is kept before its task goes: scaling to 0 takes its lines from `docker service logs`.
    assert plain.index("service logs --timestamps --no-trunc cablab_hub") < plain.index(
        "service scale --detach=false cablab_hub=0"), plain
    assert not [c for c in plain if c.startswith("stack deploy")]
    assert "\ndb\n" in run.output  # the database is the backup's
    config = kinds(between(run, "with-config"))
    assert config.index("service logs") < config.index("service scale") < config.index("stack deploy")
    assert [" ".join(c[1:]) for c in between(run, "with-config") if c[1:3] == ("service", "scale")] == [
        "service scale --detach=false cablab_hub=0"]


def test_a_restore_keeps_the_hub_log_it_would_lose_and_restores_even_when_it_cannot(renderer):
    """restore.sh saves `docker service logs` of the hub into HUB_LOG_DIR, 0600 in a 0700 directory,
    one file per restore, before the scale to 0 removes the task; where the log cannot be read it
    says so and restores all the same."""
    run = run_flow(renderer, *BACKED_UP,
                   f'{HUB_DIR}/restore.sh "$b"',
                   f"stat -c 'dir %a' {HUB_LOG_DIR}; for f in {HUB_LOG_DIR}/hub-before-restore-*.log; do "
                   "stat -c 'file %a' \"$f\"; cat \"$f\"; done",
                   f"rm -f {HUB_LOG_DIR}/*; echo lost >{HUB_DATA}/jupyterhub.sqlite; : >/var/lib/cablab-stub-nologs",
                   f'{HUB_DIR}/restore.sh "$b" 2>&1', f"cat {HUB_DATA}/jupyterhub.sqlite")
    first, second = run.output.split("could not save", 1) if "could not save" in run.output else (run.output, "")
    assert f"saved the hub's log to {HUB_LOG_DIR}/hub-before-restore-" in first
    assert "dir 700" in first and "file 600" in first
    assert "2026-11-28T10:00:00.000000000Z cablab_hub.1.stubtask@stubnode    | [I JupyterHub app:1] stub hub line" in first  # as docker gave them
    assert "restoring anyway" in second and second.rstrip().endswith("db")  # restored all the same


def test_a_restore_keeps_the_newest_saved_logs_and_nothing_else_goes(renderer):
    """The saved logs do not pile up: after its own, restore.sh keeps the newest RESTORE_LOGS_KEPT of
    them (their names sort by time) and removes older ones, whatever their names hold; other files in
    HUB_LOG_DIR stay."""
    from cablab_cluster.render import RESTORE_LOGS_KEPT

    older = [f"hub-before-restore-20200101T0000{i:02d}Z.log" for i in range(RESTORE_LOGS_KEPT + 1)]
    odd = "hub-before-restore-2019 it's Z.log"  # the oldest: a blank and a quote in its name
    others = ["other.log", "hub-before-restore-notes.log"]
    run = run_flow(renderer, *BACKED_UP, f"install -d -m 0700 {HUB_LOG_DIR}",
                   *(f"echo old >{HUB_LOG_DIR}/{name}" for name in older), f"echo old >{shlex.quote(f'{HUB_LOG_DIR}/{odd}')}",
                   *(f"echo mine >{HUB_LOG_DIR}/{name}" for name in others), f"cd {HUB_LOG_DIR}; echo b >b.log",
                   f'{HUB_DIR}/restore.sh "$b" >/dev/null', f"echo listed; ls -1 {HUB_LOG_DIR}")
    listed = run.output.split("listed\n", 1)[1].splitlines()
    saved = sorted(n for n in listed if n.startswith("hub-before-restore-") and n.endswith("Z.log"))
    assert len(saved) == RESTORE_LOGS_KEPT and {*others, "b.log"} <= set(listed), listed
    assert odd not in saved and saved[:-1] == older[2:], saved  # the three oldest went: twelve, and the restore's own
    assert saved[-1] > older[-1], saved  # the restore's own is kept


def test_a_restore_does_not_wait_for_a_hanging_log_stream(renderer, monkeypatch):
    """`docker service logs` can hang at its stream's end (docker/cli#4678): restore.sh bounds it
    (render.RESTORE_LOG_TIMEOUT_S, read when the bundle is rendered; 1 s here), keeps what it gave, says
    so and restores."""
    import cablab_cluster.render as render

    monkeypatch.setattr(render, "RESTORE_LOG_TIMEOUT_S", 1)
    run = run_flow(renderer, *BACKED_UP,
                   f"echo lost >{HUB_DATA}/jupyterhub.sqlite; : >/var/lib/cablab-stub-logs-hang",
                   f"s=$(date +%s); {HUB_DIR}/restore.sh \"$b\" 2>&1; echo took $(( $(date +%s) - s ))",
                   f"cat {HUB_LOG_DIR}/hub-before-restore-*.log", f"cat {HUB_DATA}/jupyterhub.sqlite")
    assert "took over 1 s; what it gave is in" in run.output and "restoring anyway" in run.output
    took = int(run.output.split("\ntook ", 1)[1].split()[0])
    print(f"restore.sh took {took} s with the log stream hanging")
    assert took < 30, run.output  # the stub would wait for ever
    assert "| partial line" in run.output and run.output.rstrip().endswith("db")
