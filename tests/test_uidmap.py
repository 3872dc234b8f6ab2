"""Each user's uid (cablab_cluster/uidmap.py): allocated once from hub.users.uid_base, append-only,
never reused, kept 0600 beside the secrets and checked like them; what render ships to the hub."""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner

from cablab_cluster import uidmap
from cablab_cluster.cli import cli
from cablab_cluster.plan import make_plan
from cablab_cluster.render import render_plan
from cablab_cluster.secretstore import secrets_dir
from cablab_cluster.spec import SpecError, load_spec


def uids_file(spec):
    return secrets_dir(spec) / uidmap.UIDS_FILE


def with_users(spec_dir, *names: str) -> None:
    """The userlist: `names`, and erin and frank (the lab spec's overrides name them)."""
    (spec_dir / "userlist.lab").write_text("".join(f"{n}\n" for n in (*names, "erin", "frank")))


def test_allocation_in_name_order_from_the_base():
    m = uidmap.allocate({}, ["bob", "Alice", "carol"], 20000)
    assert m.uids == {"alice": 20000, "bob": 20001, "carol": 20002} and m.new == ("alice", "bob", "carol")
    assert m.of("ALICE") == 20000 and m.org_base == 120000


def test_known_uids_are_kept_and_new_users_come_after_the_highest():
    m = uidmap.allocate({"zed": 20005, "amy": 20001}, ["amy", "bea"], 20000)
    assert m.uids == {"zed": 20005, "amy": 20001, "bea": 20006} and m.new == ("bea",)


def test_nobody_is_never_given():
    m = uidmap.allocate({"a": 65533}, ["b"], 65000)
    assert m.uids["b"] == 65536


def test_render_writes_the_map_0600_and_appends_only(write_spec, spec_dir):
    with_users(spec_dir, "alice admin", "bob")
    path = write_spec()
    runner = CliRunner()
    result = runner.invoke(cli, ["render", str(path), "--out", str(spec_dir / "out")])
    assert result.exit_code == 0, result.output
    spec = load_spec(path)
    f = uids_file(spec)
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert uidmap.parse(f.read_text(), f, 20000) == {"alice": 20000, "bob": 20001, "erin": 20002, "frank": 20003}
    assert "new alice 20000, bob 20001, erin 20002, frank 20003" in result.output
    first = f.read_bytes()
    # the same userlist again: nothing changes
    assert runner.invoke(cli, ["render", str(path), "--out", str(spec_dir / "out")]).exit_code == 0
    assert f.read_bytes() == first
    # bob leaves, carol comes: bob's uid stays his (never reused), carol gets the next one
    with_users(spec_dir, "alice admin", "carol")
    result = runner.invoke(cli, ["render", str(path), "--out", str(spec_dir / "out")])
    assert result.exit_code == 0, result.output
    after = {"alice": 20000, "bob": 20001, "erin": 20002, "frank": 20003, "carol": 20004}
    assert uidmap.parse(f.read_text(), f, 20000) == after
    hub = json.loads((spec_dir / "out" / "hub" / "cablab.json").read_text())["spawner"]
    assert hub["uids"] == after
    assert hub["org_uids"]["first"] == 120000
    node1 = (spec_dir / "out" / "node1.sh").read_text()
    assert "home_owner carol 20004" in node1 and "home_owner bob" not in node1  # homes for the userlist's users
    # bob comes back: his old uid
    with_users(spec_dir, "alice admin", "bob", "carol")
    assert runner.invoke(cli, ["render", str(path), "--out", str(spec_dir / "out")]).exit_code == 0
    assert uidmap.resolve(load_spec(path)).of("bob") == 20001


def test_validate_writes_no_map(write_spec, spec_dir):
    path = write_spec()
    assert CliRunner().invoke(cli, ["validate", str(path)]).exit_code == 0
    assert not uids_file(load_spec(path)).exists()


def test_the_rendered_files_follow_the_stored_map(write_spec, spec_dir):
    with_users(spec_dir, "alice admin", "bob")
    spec = load_spec(write_spec())
    os.makedirs(secrets_dir(spec), mode=0o700)
    uids_file(spec).write_text("bob: 20007\n")
    uids_file(spec).chmod(0o600)
    files = render_plan(make_plan(spec), uidmap.resolve(spec))
    assert json.loads(files["hub/cablab.json"])["spawner"]["uids"] == {"alice": 20008, "bob": 20007, "erin": 20009,
                                                                       "frank": 20010}


@pytest.mark.parametrize("content, message", [
    ("bob: 20001\nalice: 20001\n", "already bob's"),
    ("bob: 120000\n", "organisation members"),
    ("bob: 0\n", "no valid uid"),
    ("bob: 65534\n", "no valid uid"),
    ("bob: true\n", "no valid uid"),
    ("'b$(touch /tmp/p)': 20001\n", "not a lower-case GitHub login"),
    ("[1, 2]\n", "not a mapping"),
    ("bob: [\n", "not valid YAML"),
])
def test_a_bad_map_is_refused_naming_the_file(write_spec, spec_dir, content, message):
    spec = load_spec(write_spec())
    os.makedirs(secrets_dir(spec), mode=0o700)
    uids_file(spec).write_text(content)
    uids_file(spec).chmod(0o600)
    with pytest.raises(SpecError, match=message):
        uidmap.resolve(spec)
    result = CliRunner().invoke(cli, ["render", str(spec.path), "--out", str(spec_dir / "out")])
    assert result.exit_code == 2 and uidmap.UIDS_FILE in result.output, result.output
    assert not (spec_dir / "out").exists()


@pytest.mark.parametrize("loose", [0o644, 0o620])
def test_a_loose_map_is_refused(write_spec, loose):
    """A map others could write would hand alice bob's uid (and his home)."""
    spec = load_spec(write_spec())
    os.makedirs(secrets_dir(spec), mode=0o700)
    uids_file(spec).write_text("bob: 20001\n")
    uids_file(spec).chmod(loose)
    with pytest.raises(SpecError, match="not 0600"):
        uidmap.resolve(spec)


def test_a_symlinked_map_is_refused(write_spec, tmp_path):
    spec = load_spec(write_spec())
    os.makedirs(secrets_dir(spec), mode=0o700)
    target = tmp_path / "elsewhere"
    target.write_text("bob: 20001\n")
    uids_file(spec).symlink_to(target)
    with pytest.raises(SpecError, match="symlink"):
        uidmap.resolve(spec)


@pytest.mark.parametrize("base, ok", [(20000, True), (999, False), (2**31, False), ("x", False), (900, False)])
def test_uid_base_is_validated(write_spec, base, ok):
    path = write_spec(lambda d: d["hub"]["users"].update(uid_base=base))
    if ok:
        load_spec(path)
    else:
        with pytest.raises(SpecError, match="hub.users.uid_base"):
            load_spec(path)


def test_uid_base_must_leave_the_images_uid_out(write_spec):
    path = write_spec(lambda d: d["hub"]["users"].update(uid_base=1000))
    with pytest.raises(SpecError, match="include the image's uid 1000"):
        load_spec(path)
