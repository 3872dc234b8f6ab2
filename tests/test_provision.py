"""provision/ holds the lab specs rendered; reviewers read real diffs there."""

from pathlib import Path

import pytest

from cablab_cluster.plan import make_plan
from cablab_cluster.render import MARKER, render_plan
from cablab_cluster.spec import load_spec

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize("variant", sorted(p.stem for p in (ROOT / "lab").glob("*.yml")))  # every lab spec
def test_provision_dir_is_fresh(variant):
    files = render_plan(make_plan(load_spec(ROOT / "lab" / f"{variant}.yml")))
    out = ROOT / "provision" / variant
    have = {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file() and p.name != MARKER}
    hint = f"stale: run `cablab-cluster render lab/{variant}.yml --out provision/{variant}`"
    # The marker lets the next `render` replace this directory (it refuses one it did not write).
    assert (out / MARKER).read_text().startswith(f"rendered by cablab-cluster from ../../lab/{variant}.yml;"), hint
    assert sorted(have) == sorted(files), hint
    for rel, text in files.items():
        assert have[rel] == text, f"provision/{variant}/{rel} is {hint}"
