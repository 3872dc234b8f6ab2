"""Images: the single-user image on every host that runs notebooks, the hub
image on the hub host (built, pulled or loaded there by the provisioners)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.cluster


def image_id(nodes, host, name: str) -> str:
    result = nodes[host].run("docker image inspect --format '{{.Id}}' %s", name)
    assert result.rc == 0, f"image {name} is not on {host.name}: {result.stderr.strip()}"
    return result.stdout.strip()


def test_singleuser_image_on_notebook_host(notebook_host, nodes, cluster):
    assert image_id(nodes, notebook_host, cluster.hub.images.singleuser.name).startswith("sha256:")


def test_hub_image_on_hub_host(nodes, cluster):
    assert image_id(nodes, cluster.hub_host, cluster.hub.images.hub.name).startswith("sha256:")
