"""The Vagrantfile reads the lab specs: `vagrant validate` passes for both variants (libvirt,
and without provider config as on a VirtualBox workstation) and a wrong variant is named.
Needs the vagrant binary (lab/host-setup.sh installs it); the lab runs it in its `up` phase too."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("vagrant") is None,
                                reason="vagrant is not installed (lab/host-setup.sh installs it)")


def validate(variant: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CABLAB_VARIANT": variant, "VAGRANT_DOTFILE_PATH": str(tmp_path / ".vagrant"),
           "VAGRANT_CHECKPOINT_DISABLE": "1", "VAGRANT_NO_COLOR": "1"}
    return subprocess.run(["vagrant", "validate", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=300)


@pytest.mark.parametrize("variant", ["ubuntu", "centos", "centos-dm"])
def test_vagrant_validate(variant, tmp_path):
    for args in ((), ("--ignore-provider",)):
        out = validate(variant, tmp_path, *args)
        assert out.returncode == 0 and "validated successfully" in out.stdout, out.stdout + out.stderr


def test_unknown_variant_is_named(tmp_path):
    out = validate("nope", tmp_path)
    assert out.returncode != 0
    assert "CABLAB_VARIANT=nope" in out.stdout + out.stderr
