"""lab/boxes/build.sh: the guest kernel's mitigations setting is checked before anything is built."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

BUILD = Path(__file__).resolve().parent.parent / "lab" / "boxes" / "build.sh"


def test_an_unknown_mitigations_value_is_refused_before_any_work():
    out = subprocess.run(["bash", str(BUILD), "baked"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "CABLAB_BOX_MITIGATIONS": "sometimes",
                              "CABLAB_BOX_CACHE": "/nonexistent/cablab-box-cache"})
    assert out.returncode == 2, out.stderr
    assert "CABLAB_BOX_MITIGATIONS=sometimes: use off or auto" in out.stderr
