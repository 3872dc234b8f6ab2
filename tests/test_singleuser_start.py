"""The single-user image's entrypoint (bundle/singleuser-start.sh): it seeds a new home with the files
the build made once (matplotlib's font list), leaves the user's own alone, and always runs the command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from cablab_cluster.bundle import SINGLEUSER_CONTEXT, START, text

FONTLIST = ".cache/matplotlib/fontlist-v3.11.0.json"  # matplotlib 3.11 names it by its version


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    """A seed directory as the image's build leaves it: the files, and the list beside it."""
    root = tmp_path / "home-seed"
    (root / ".cache" / "matplotlib").mkdir(parents=True)
    (root / FONTLIST).write_text('{"_version": 390}')
    (root / ".config").mkdir()
    (root / ".config" / "other.txt").write_text("other")
    Path(f"{root}.list").write_text(f"{FONTLIST}\n.config/other.txt\n")
    return root


def start(seed: Path, home: Path, *command: str, path: str | None = None) -> subprocess.CompletedProcess:
    script = seed.parent / START
    script.write_text(text(START))
    env = {"HOME": str(home), "CABLAB_HOME_SEED": str(seed), "PATH": path if path is not None else os.environ["PATH"]}
    return subprocess.run(["/bin/bash", str(script), *command], env=env, capture_output=True, text=True, timeout=30)


def test_a_new_home_gets_every_seeded_file_and_the_command_runs(seed, tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    done = start(seed, home, "sh", "-c", 'echo "ran $0 $1"; exit 7', "a b", "c")
    assert done.returncode == 7 and done.stdout == "ran a b c\n", done  # exec'd with its arguments intact
    assert (home / FONTLIST).read_text() == '{"_version": 390}'
    assert (home / ".config" / "other.txt").read_text() == "other"
    assert not list(home.rglob("*.cablab-seed.*")), "a partial copy was left behind"


def test_the_users_own_file_stays_and_nothing_forks_once_seeded(seed, tmp_path):
    home = tmp_path / "home"
    (home / ".cache" / "matplotlib").mkdir(parents=True)
    (home / FONTLIST).write_text("the user's own")
    (home / ".config").mkdir()
    (home / ".config" / "other.txt").symlink_to(tmp_path / "nowhere")  # a dangling link is the user's too
    # No PATH at all: any mkdir, cp or mv would fail; the command is found by its full path.
    done = start(seed, home, "/bin/echo", "started", path="/nonexistent")
    assert done.returncode == 0 and done.stdout == "started\n" and done.stderr == "", done
    assert (home / FONTLIST).read_text() == "the user's own"
    assert os.path.islink(home / ".config" / "other.txt")


def test_only_paths_inside_the_home_are_seeded(seed, tmp_path):
    home = tmp_path / "h" / "home"
    home.mkdir(parents=True)
    (seed.parent / "outside.txt").write_text("x")  # what `../outside.txt` names from the seed
    absolute = tmp_path / "h" / "absolute.txt"
    Path(f"{seed}.list").write_text(f"{absolute}\n../outside.txt\n.cache/../../outside.txt\n..\n\n{FONTLIST}\n")
    done = start(seed, home, "true")
    assert done.returncode == 0, done
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == ["home"]  # nothing beside the home
    assert (home / FONTLIST).exists()


def test_a_home_that_cannot_take_it_is_left_alone(seed, tmp_path):
    """Run as an unprivileged uid (root may write anywhere): a home it cannot write to."""
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv (util-linux) to drop to another uid")
        shared = Path(tempfile.mkdtemp(prefix="cablab-start-"))
        try:
            shared.chmod(0o755)
            copy = shared / "home-seed"
            shutil.copytree(seed, copy)
            shutil.copy(f"{seed}.list", f"{copy}.list")
            home = shared / "home"
            home.mkdir(mode=0o755)  # root's: uid 65534 may read it, not write to it
            script = shared / START
            script.write_text(text(START))
            done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/bash",
                                   str(script), "echo", "started"],
                                  env={"HOME": str(home), "CABLAB_HOME_SEED": str(copy), "PATH": os.environ["PATH"]},
                                  capture_output=True, text=True, timeout=30)
            assert done.returncode == 0 and done.stdout == "started\n" and done.stderr == "", done
            assert list(home.iterdir()) == []
        finally:
            shutil.rmtree(shared)
    else:
        home = tmp_path / "home"
        home.mkdir(mode=0o500)
        done = start(seed, home, "echo", "started")
        assert done.returncode == 0 and done.stdout == "started\n" and done.stderr == "", done
        assert list(home.iterdir()) == []


def test_a_failed_copy_says_so_leaves_nothing_and_the_server_starts(seed, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (seed / FONTLIST).unlink()  # the list names a file the seed lacks: the copy fails
    done = start(seed, home, "echo", "started")
    assert done.returncode == 0 and done.stdout == "started\n", done
    assert f"cablab-start: {home}/{FONTLIST} not seeded" in done.stderr
    assert not (home / FONTLIST).exists() and not list(home.rglob("*.cablab-seed.*"))
    assert (home / ".config" / "other.txt").read_text() == "other"  # the rest is still seeded


def test_without_a_seed_list_or_a_home_it_only_runs_the_command(tmp_path):
    script = tmp_path / START
    script.write_text(text(START))
    for env in ({"CABLAB_HOME_SEED": str(tmp_path / "none"), "HOME": str(tmp_path)},
                {"CABLAB_HOME_SEED": str(tmp_path / "none")}):
        done = subprocess.run(["/bin/bash", str(script), "/bin/echo", "ok"], env=env, capture_output=True, text=True)
        assert done.returncode == 0 and done.stdout == "ok\n", done


def test_the_image_runs_it_under_tini_and_builds_the_seed_in_its_final_stage():
    from cablab_cluster.plan import make_plan
    from cablab_cluster.render import Renderer
    from cablab_cluster.spec import load_spec

    context = Renderer(make_plan(load_spec(Path(__file__).parents[1] / "lab" / "ubuntu.yml"))).build_context("singleuser")
    assert set(SINGLEUSER_CONTEXT) <= set(context) and context[START] == text(START)
    dockerfile = context["Dockerfile"]
    assert 'ENTRYPOINT ["tini", "-g", "--", "cablab-start"]' in dockerfile
    final = dockerfile.rindex("\nFROM ")
    assert final < dockerfile.index(f"COPY {START} /usr/local/bin/cablab-start")
    assert final < dockerfile.index("MPLCONFIGDIR=$seed/.cache/matplotlib") < dockerfile.index("\nUSER ")
    # The build fails unless the font list is in the seed's list (its name as matplotlib 3.11 gives it).
    check = re.search(r"grep -q '([^']+)' \$seed\.list", dockerfile).group(1)
    assert re.search(check, FONTLIST) and not re.search(check, ".cache/matplotlib/other.json")


def test_the_entrypoint_is_part_of_the_images_identity(monkeypatch):
    from cablab_cluster import bundle
    from cablab_cluster.spec import load_spec
    from cablab_cluster.steps.image import image_identity

    cluster = load_spec(Path(__file__).parents[1] / "lab" / "ubuntu.yml").cluster
    before = image_identity(cluster, "singleuser")
    real = bundle.text
    monkeypatch.setattr(bundle, "text", lambda name: real(name) + ("\n# changed" if name == START else ""))
    assert image_identity(cluster, "singleuser") != before
