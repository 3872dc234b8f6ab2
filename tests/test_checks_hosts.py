"""The checks' host helpers: which spec hosts an ssh-config lacks, /proc/mounts and fstab
spelling, the testinfra hosts behind `nodes`, dockerspawner's service names."""

from __future__ import annotations

import testinfra
from dockerspawner import DockerSpawner

from cablab_cluster.checks.hosts import Nodes, missing_from_ssh_config, parse_fstab, proc_mounts_escape, unescape
from cablab_cluster.checks.spawner import escaped_username, service_name

VAGRANT = """Host node1
  HostName 192.168.121.10
  User vagrant
  Port 22
  IdentityFile /root/.vagrant.d/node1/private_key

Host node2
  HostName 192.168.121.11
  User vagrant
"""
NAMES = ["node1", "node2", "node3"]


def test_ssh_config_names_the_hosts_that_have_no_entry():
    assert missing_from_ssh_config(VAGRANT, NAMES) == ["node3"]
    assert missing_from_ssh_config(VAGRANT + "Host node3\n  HostName 10.0.0.3\n", NAMES) == []


def test_ssh_config_patterns_negations_and_match_are_followed():
    assert missing_from_ssh_config("Host node? !node2\n  User admin\n", NAMES) == ["node2"]
    assert missing_from_ssh_config("Host *\n  User admin\n", NAMES) == []
    assert missing_from_ssh_config("Match host node1,node3\n  User admin\n", NAMES) == ["node2"]
    assert missing_from_ssh_config("# nothing\n", NAMES) == NAMES


def test_paths_as_proc_mounts_spells_them():
    assert proc_mounts_escape("/srv/my share\\x") == "/srv/my\\040share\\134x"
    assert unescape(proc_mounts_escape("/srv/a b\tc")) == "/srv/a b\tc"


def test_fstab_entries():
    entries = parse_fstab("# comment\n\n10.0.0.1:/srv/my\\040home /home/my\\040home nfs4 rw,_netdev 0 0\n"
                          "/srv/data /data none bind,ro # trailing\nshort line\n")
    assert [(e.source, e.target, e.fstype, e.options) for e in entries] == [
        ("10.0.0.1:/srv/my home", "/home/my home", "nfs4", ("rw", "_netdev")),
        ("/srv/data", "/data", "none", ("bind", "ro")),
    ]


def test_nodes_are_testinfra_hosts(tmp_path):
    nodes = Nodes(str(tmp_path / "ssh_config"), tmp_path)
    nodes._hosts["here"] = testinfra.get_host("local://")  # what nodes["here"] would be over ssh
    assert nodes["here"] is nodes._hosts["here"]
    assert nodes.run("here", "printf '%%s\\n' %s", "a b") == "a b"
    assert nodes.try_run("here", "exit 3").rc == 3
    assert nodes.mount_point("here", "/proc").filesystem == "proc"
    assert not nodes.mount_point("here", "/no such/mount").exists


def test_service_names_escape_users_as_dockerspawner_does():
    for name in ("alice", "Bob.Smith", "ünïcode-user", "a_b-c"):
        assert escaped_username(name) == DockerSpawner._escape(name)
    assert service_name("bob.smith") == "jupyter-bob-2esmith"


def test_firewalld_zone_listing_is_read_by_key():
    from cablab_cluster.checks.test_host_os import zone_listing

    text = ("cablab (active)\n  target: default\n  interfaces: \n  sources: 192.168.57.12 192.168.57.13\n"
            "  services: \n  ports: 22/tcp 7946/tcp 7946/udp\n  protocols: esp\n  rich rules: \n")
    got = zone_listing(text)
    assert got["sources"] == ["192.168.57.12", "192.168.57.13"]
    assert got["ports"] == ["22/tcp", "7946/tcp", "7946/udp"] and got["protocols"] == ["esp"]
    assert got["interfaces"] == [] and got["rich rules"] == []
