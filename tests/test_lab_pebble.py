"""The centos lab's ACME server settings (lab/pebble.py) and its committed test PKI (lab/pebble/)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509

from cablab_cluster.spec import TLSMode, load_spec
from lab import pebble

LAB = Path(__file__).parent.parent / "lab"


def test_pebble_listens_where_the_centos_spec_points_and_validates_on_port_80():
    spec = load_spec(LAB / "centos.yml")
    c = spec.cluster
    assert c.hub.tls.mode is TLSMode.LETSENCRYPT
    conf = pebble.config(c)["pebble"]
    assert conf["listenAddress"] == "192.168.57.1:14000"
    assert conf["managementListenAddress"] == "192.168.57.1:15000"
    assert conf["httpPort"] == 80  # the hub host's acme service
    assert pebble.roots_url(c) == "https://192.168.57.1:15000/roots/0"
    assert spec.acme_ca == (LAB / "pebble" / "ca.pem").read_text()  # what certbot on node1 trusts


def test_the_listener_certificate_chains_to_the_spec_ca_and_names_the_lab_hosts_address():
    ca = x509.load_pem_x509_certificate((pebble.PKI / "ca.pem").read_bytes())
    leaf = x509.load_pem_x509_certificate((pebble.PKI / "listener.pem").read_bytes())
    leaf.verify_directly_issued_by(ca)
    ips = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("192.168.57.1") in ips
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=365)
    assert leaf.not_valid_after_utc > soon, "remake the lab's pebble PKI: python -m lab.pebble make-pki"


def test_the_names_teardown_compares_are_procs_15_characters():
    assert pebble.comm("pebble-challtestsrv") == "pebble-challtes"
    assert pebble.comm("pebble") == "pebble"
