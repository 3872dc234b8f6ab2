"""The upgrade pass's spec change (lab/upgrade.py): a valid spec whose render rolls the hub and
rebuilds the single-user image only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cablab_cluster.plan import make_plan
from cablab_cluster.render import render_plan
from cablab_cluster.spec import load_spec
from lab.upgrade import ADDED_PACKAGE, CULL_TIMEOUT_STEP, upgraded_spec

LAB = Path(__file__).parent.parent / "lab"


@pytest.mark.parametrize("variant", ["ubuntu", "centos"])
def test_the_upgraded_spec_changes_a_package_and_a_hub_setting(tmp_path, variant):
    for name in ("userlist.lab", "github-client-secret.lab"):
        shutil.copy(LAB / name, tmp_path / name)
    shutil.copytree(LAB / "pebble", tmp_path / "pebble")  # the centos lab's ACME CA, named relative to the spec
    original = load_spec(LAB / f"{variant}.yml")
    text = upgraded_spec((LAB / f"{variant}.yml").read_text())
    assert upgraded_spec(text).count(ADDED_PACKAGE) == 1  # the package is added once
    path = tmp_path / f"{variant}.yml"
    path.write_text(text)
    upgraded = load_spec(path)
    assert upgraded.cluster.name == original.cluster.name  # the same secrets directory
    assert upgraded.cluster.hub.images.singleuser.packages[-1] == ADDED_PACKAGE
    assert upgraded.cluster.hub.users.cull.timeout == original.cluster.hub.users.cull.timeout + CULL_TIMEOUT_STEP

    before, after = render_plan(make_plan(original)), render_plan(make_plan(upgraded))
    assert ADDED_PACKAGE in after["singleuser/Dockerfile"] and ADDED_PACKAGE not in before["singleuser/Dockerfile"]
    assert after["hub/Dockerfile"].splitlines()[4:] == before["hub/Dockerfile"].splitlines()[4:]  # no hub rebuild
    assert json.loads(after["hub/cablab.json"])["cull"]["timeout"] == upgraded.cluster.hub.users.cull.timeout
    assert after["hub/stack.yml"] != before["hub/stack.yml"]  # the single-user identity: the hub rolls
    hub = original.cluster.hub_host.name
    assert after[f"{hub}.sh"] != before[f"{hub}.sh"]


def test_the_old_server_is_kept_active_while_the_upgrade_runs():
    """The lab's first upgrade lost its old server to the idle culler while the nodes loaded the new
    image for ten minutes: requests go to it through the proxy until the checks are done."""
    import time

    from lab.upgrade import kept_active

    class User:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str]] = []

        def server_request(self, method: str, path: str):
            self.calls.append((method, path))
            if len(self.calls) == 2:
                raise OSError("the hub rolls")  # a failed request does not end the keepalive

    user = User()
    stop = kept_active(user, every=0.05)  # type: ignore[arg-type]
    time.sleep(0.5)
    stop.set()
    seen = len(user.calls)
    time.sleep(0.2)
    assert seen >= 4 and set(user.calls) == {("GET", "api/status")}
    assert len(user.calls) <= seen + 1  # stopped
