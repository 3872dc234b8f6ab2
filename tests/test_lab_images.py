"""The lab's image cache keys: every variant shares the images (and so one baked box)."""

from __future__ import annotations

from pathlib import Path

import pytest

vagrant = pytest.importorskip("vagrant")  # the lab extra (python-vagrant): lab.harness imports it

from cablab_cluster.plan import make_plan  # noqa: E402
from cablab_cluster.spec import load_spec  # noqa: E402
from lab.harness import VARIANTS, image_context, image_digest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("key", ["hub", "singleuser"])
def test_every_variant_shares_each_image(key):
    digests = set()
    for variant in VARIANTS:
        spec = load_spec(ROOT / "lab" / f"{variant}.yml")
        context = image_context(make_plan(spec), ROOT / "provision" / variant, key)
        assert [p.name for p in context][0] == "Dockerfile"
        digests.add(image_digest(context, "sha256:base", getattr(spec.cluster.hub.images, key).name))
    assert len(digests) == 1


def test_the_hub_image_key_ignores_the_bundle_beside_its_dockerfile():
    spec = load_spec(ROOT / "lab" / "ubuntu.yml")
    context = image_context(make_plan(spec), ROOT / "provision" / "ubuntu", "hub")
    assert [p.name for p in context] == ["Dockerfile"]  # not cablab.json, stack.yml, ... (they differ per cluster)


def test_a_real_change_changes_the_key(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = tmp_path / "a" / "Dockerfile", tmp_path / "b" / "Dockerfile"
    a.write_text("# from ubuntu.yml\nFROM x\nRUN true\n")
    b.write_text("# from centos.yml\nFROM x\nRUN true\n")
    assert image_digest([a], "base", "n") == image_digest([b], "base", "n")  # comments only
    b.write_text("FROM x\nRUN false\n")
    assert image_digest([a], "base", "n") != image_digest([b], "base", "n")
