"""Cluster checks (pytest-testinfra), written once for the lab VMs and for real clusters.

    cablab-cluster verify SPEC.yml --ssh-config FILE [--secrets DIR] [-- pytest args]
    pytest --pyargs cablab_cluster.checks --spec SPEC.yml --ssh-config FILE [--secrets DIR]

They ship in the package: `verify` runs them from an installed wheel, no
checkout needed. The pytest plugin (`plugin.py`, entry point `pytest11`) adds
--spec and --secrets; without --spec every check is skipped, so the fast suite
never needs a cluster.

Every host of the spec is reached as `ssh://<name>` through FILE, an OpenSSH
config with a `Host <name>` entry per host (what `vagrant ssh-config` writes);
commands run with sudo (the vagrant user is not root) through testinfra
(`hosts.py`). The hub is reached directly over HTTPS from this machine, at the
hub host's address, presenting itself as `hub.public_host` (SNI and Host
header), as a browser would (`hub.py`, trusting the certificate as `tls.py`
says). Fixtures and host parameters: `conftest.py`.
"""
