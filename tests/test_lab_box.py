"""lab/boxes/build.sh: its settings are checked before anything is built; its wait for the images."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

BUILD = Path(__file__).resolve().parent.parent / "lab" / "boxes" / "build.sh"


def build(**env: str) -> subprocess.CompletedProcess:
    """build.sh baked with these variables, its cache where nothing can be written."""
    return subprocess.run(["bash", str(BUILD), "baked"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CABLAB_BOX_CACHE": "/nonexistent/cablab-box-cache", **env})


def test_an_unknown_mitigations_value_is_refused_before_any_work():
    out = build(CABLAB_BOX_MITIGATIONS="sometimes")
    assert out.returncode == 2, out.stderr
    assert "CABLAB_BOX_MITIGATIONS=sometimes: use off or auto" in out.stderr


def test_a_wait_for_the_images_that_is_not_a_number_is_refused_before_any_work():
    out = build(CABLAB_BAKED_IMAGES_WAIT="soon")
    assert out.returncode == 2, out.stderr
    assert "CABLAB_BAKED_IMAGES_WAIT=soon: a number of seconds" in out.stderr


def test_a_missing_image_is_refused_before_any_work_unless_it_is_awaited(tmp_path):
    missing = tmp_path / "hub-0123.tar.gz"
    # Past the images' check, the tools' one stops the build: no debootstrap on this PATH.
    out = build(CABLAB_BAKED_IMAGES=str(missing), PATH="/usr/bin:/bin")
    assert out.returncode == 2 and f"{missing} is missing or empty" in out.stderr
    out = build(CABLAB_BAKED_IMAGES=str(missing), PATH="/usr/bin:/bin", CABLAB_BAKED_IMAGES_WAIT="600")
    assert out.returncode == 1 and "is missing or empty" not in out.stderr
    assert "debootstrap missing: run lab/host-setup.sh first" in out.stderr


def _wait_for_images(tarballs: list[Path], wait: int, appear_after: float | None) -> subprocess.CompletedProcess:
    """build.sh's own wait_for_images (its text), with its log and die, for tarballs that appear
    (renamed into place, as the harness saves them) `appear_after` s from now, or never."""
    text = BUILD.read_text()
    function = text[text.index("wait_for_images() {"):]
    function = function[:function.index("\n}\n") + 3]
    maker = "" if appear_after is None else (
        f"(sleep {appear_after}; for t in \"${{BAKED_IMAGES[@]}}\"; do echo x >\"$t.tmp\"; mv \"$t.tmp\" \"$t\"; done) &\n")
    script = ("set -euo pipefail\nlog() { echo \"log: $*\"; }\ndie() { echo \"die: $*\" >&2; exit 1; }\n"
              f"BAKED_IMAGES=({' '.join(str(t) for t in tarballs)})\nIMAGES_WAIT={wait}\n{function}"
              f"{maker}wait_for_images\necho ready\n")
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


def test_the_box_waits_for_images_built_beside_it(tmp_path):
    tarballs = [tmp_path / "hub-1.tar.gz", tmp_path / "singleuser-2.tar.gz"]
    out = _wait_for_images(tarballs, wait=30, appear_after=1.5)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["log: waiting for the images being built: hub-1.tar.gz singleuser-2.tar.gz",
                                       "ready"]


def test_the_box_gives_up_on_images_that_never_come(tmp_path):
    out = _wait_for_images([tmp_path / "hub-1.tar.gz"], wait=2, appear_after=None)
    assert out.returncode == 1
    assert "die: the images hub-1.tar.gz did not appear in 2 s (CABLAB_BAKED_IMAGES_WAIT)" in out.stderr
