"""The NFS server's homes (steps/nfs_server): each userlist user's home made as root, owned by their
uid, 0700; a home of the image's uid moved to it, idempotently; anyone else's left alone.
Runs the rendered lines under bash as root in a temporary directory, the prelude's helpers included."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cablab_cluster.plan import make_plan
from cablab_cluster.render import render_plan
from cablab_cluster.spec import load_spec

LAB = Path(__file__).parent.parent / "lab"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chowns to other uids: needs root")


def homes_part(homes: Path) -> str:
    script = render_plan(make_plan(load_spec(LAB / "ubuntu.yml")))["node1.sh"]
    prelude = script[script.index("log() {"):script.index('[ "$(id -u)" = 0 ]')]
    body = script[script.index("homes=/srv/nfs/homes"):script.index("\nstep seed_shares")]
    return (f"set -euo pipefail\nCABLAB_HOST=t\nSTEP_NOTES=()\nCABLAB_LOG=/dev/null\n{prelude}\n"
            f"{body.replace('homes=/srv/nfs/homes', f'homes={homes}', 1)}\n"
            'printf "note: %s\\n" "${STEP_NOTES[@]}"\n')


def run(homes: Path) -> list[str]:
    out = subprocess.run(["bash", "-c", homes_part(homes)], capture_output=True, text=True, check=True).stdout
    return [line.removeprefix("note: ") for line in out.splitlines() if line.startswith("note: ") and line != "note: "]


def uid(name: str) -> int:
    """A first render's map: the userlist's users in name order from uid_base (cablab_cluster.uidmap)."""
    spec = load_spec(LAB / "ubuntu.yml")
    names = sorted({n.lower() for n in spec.userlist.allowed})
    return spec.cluster.hub.users.uid_base + names.index(name)


def owner(p: Path) -> tuple[int, int]:
    st = os.lstat(p)
    return st.st_uid, st.st_mode & 0o7777


def test_homes_are_made_migrated_and_left_alone(tmp_path):
    homes = tmp_path / "homes"
    homes.mkdir()
    alice = homes / "alice"  # the image's uid 1000 owned every home before
    (alice / "work").mkdir(parents=True)
    (alice / "work" / "a.ipynb").write_text("{}")
    (alice / "cube").symlink_to("/mnt/cablab/cube")
    (alice / "foreign").write_text("x")
    for p in (alice, alice / "work", alice / "work" / "a.ipynb"):
        os.chown(p, 1000, 100)
    os.lchown(alice / "cube", 1000, 100)
    os.chown(alice / "foreign", 4242, 100)
    alice.chmod(0o755)
    bob = homes / "bob"  # someone else's: not ours to move
    bob.mkdir()
    os.chown(bob, 5555, 100)

    notes = run(homes)
    assert "home alice moved from uid 1000 to 20000" in notes and f"home carol (uid {uid('carol')})" in notes
    assert owner(alice) == (20000, 0o700)
    assert owner(alice / "work" / "a.ipynb")[0] == 20000 and os.lstat(alice / "cube").st_uid == 20000
    assert owner(alice / "foreign")[0] == 4242  # not the old uid's: kept
    assert owner(bob) == (5555, 0o755)
    assert owner(homes / "carol") == (uid("carol"), 0o700)
    assert run(homes) == []  # a second run changes nothing
    (homes / "carol").chmod(0o750)  # her own, opened by hand: closed again
    assert run(homes) == [f"mode 0700 on {homes / 'carol'}"]
    assert owner(homes / "carol") == (uid("carol"), 0o700)


def test_a_home_of_the_hubs_range_moves_to_the_map_uid(tmp_path):
    """An organisation member later added to the userlist: the hub's uid (>= uid_base + 100000) → the map's."""
    homes = tmp_path / "homes"
    (homes / "dave").mkdir(parents=True)
    (homes / "dave" / "f").write_text("x")
    os.chown(homes / "dave", 120000, 100)
    os.chown(homes / "dave" / "f", 120000, 100)
    run(homes)
    assert owner(homes / "dave")[0] == uid("dave") and owner(homes / "dave" / "f")[0] == uid("dave")
