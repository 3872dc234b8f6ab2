"""The checks' pytest plugin (entry point `pytest11`): options, the spec, the skip without one.

Loaded by every pytest run where cablab-cluster is installed, it only adds the
`cablab` options and the `cluster` marker; without --spec it imports neither
testinfra nor httpx, and skips the checks if they are collected at all.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from cablab_cluster.spec import LoadedSpec, SpecError, load_spec

CHECKS = Path(__file__).resolve().parent
SPEC_KEY = pytest.StashKey[LoadedSpec]()
HOW_TO_RUN = ("cluster checks need a live cluster: "
              "`cablab-cluster verify SPEC.yml --ssh-config FILE` "
              "(or `pytest --pyargs cablab_cluster.checks --spec SPEC.yml --ssh-config FILE`)")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cablab", "cablab cluster checks (cablab_cluster.checks)")
    group.addoption("--spec", metavar="SPEC.yml", default=None,
                    help="cablab cluster spec to check; without it the cluster checks are skipped")
    group.addoption("--secrets", metavar="DIR", default=None,
                    help="the spec's secrets directory (default: <spec dir>/secrets/<cluster name>/)")
    if importlib.util.find_spec("testinfra") is None:
        # testinfra's own plugin defines --ssh-config; without testinfra, accept it
        # here so that the user gets our error (install the lab extra), not argparse's.
        group.addoption("--ssh-config", dest="ssh_config", metavar="FILE", default=None,
                        help="OpenSSH config with a `Host <name>` entry for every host of the spec")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: checks against a live cluster (lab VMs or real hosts); "
                                       "run by `cablab-cluster verify` and the lab")
    spec_path = config.getoption("spec", None)
    if not spec_path:
        return
    missing = [m for m in ("testinfra", "httpx") if importlib.util.find_spec(m) is None]
    if missing:
        raise pytest.UsageError(f"the cluster checks need {', '.join(missing)}: pip install 'cablab-cluster[lab]'")
    ssh_config = config.getoption("ssh_config", None)
    if not ssh_config:
        raise pytest.UsageError("--spec needs --ssh-config FILE: an OpenSSH config with a `Host <name>` entry "
                                "for every host of the spec (e.g. `vagrant ssh-config > FILE`)")
    if not Path(ssh_config).exists():
        raise pytest.UsageError(f"--ssh-config {ssh_config}: no such file")
    try:
        loaded = load_spec(spec_path)
    except SpecError as exc:
        raise pytest.UsageError("\n".join([f"--spec {spec_path} is not a valid spec:", *exc.lines()])) from None
    config.stash[SPEC_KEY] = loaded


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SPEC_KEY in config.stash:
        return
    skip = pytest.mark.skip(reason=HOW_TO_RUN)
    for item in items:
        if CHECKS in item.path.parents:
            item.add_marker(skip)
