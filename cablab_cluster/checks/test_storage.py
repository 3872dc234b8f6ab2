"""Docker's storage as the spec's `docker.storage` says: overlay2 on the root
file system, overlay2 on an xfs LV of its own disk (`lvm`), or the seed's
devicemapper thin pool (`devicemapper-direct-lvm`)."""

from __future__ import annotations

import json

import pytest

from cablab_cluster.spec import StorageDriver

pytestmark = pytest.mark.cluster


def mapper_name(vg: str, lv: str) -> str:
    """/dev/mapper name of an LV: device-mapper doubles every '-' in the VG and LV names."""
    return f"{vg.replace('-', '--')}-{lv.replace('-', '--')}"


def needs(cluster, driver: StorageDriver) -> None:
    have = cluster.docker.storage.driver
    if have is not driver:
        pytest.skip(f"docker.storage.driver is {have.value}, not {driver.value}")


def spec_disks(nodes, host, disks) -> set[str]:
    """The spec's candidate disks as the host names them (symlinks such as /dev/disk/by-id/ resolved)."""
    resolved = nodes[host].run("readlink -f -- " + " ".join(["%s"] * len(disks)), *disks).stdout.split()
    return set(resolved) | set(disks)


def test_docker_storage_driver(swarm_host, nodes, cluster):
    want = "devicemapper" if cluster.docker.storage.driver is StorageDriver.DEVICEMAPPER else "overlay2"
    assert nodes[swarm_host].check_output("docker info --format '{{.Driver}}'") == want


def test_lvm_data_root(swarm_host, nodes, cluster):
    needs(cluster, StorageDriver.LVM)
    vg = cluster.docker.storage.volume_group
    mounted = nodes.mount_point(swarm_host, "/var/lib/docker")
    assert mounted.exists, f"/var/lib/docker is not a mount point on {swarm_host.name}"
    assert mounted.device in (f"/dev/mapper/{mapper_name(vg, 'data')}", f"/dev/{vg}/data"), mounted
    assert mounted.filesystem == "xfs", mounted
    assert "ftype=1" in nodes[swarm_host].check_output("xfs_info /var/lib/docker"), "overlay2 needs xfs with ftype=1"


def test_lvm_volume_is_on_a_spec_disk(swarm_host, nodes, cluster):
    needs(cluster, StorageDriver.LVM)
    storage = cluster.docker.storage
    disks = spec_disks(nodes, swarm_host, storage.disks)
    devices = nodes[swarm_host].check_output("lvs --noheadings -o devices %s", f"{storage.volume_group}/data")
    pvs = {d.split("(")[0] for d in devices.replace(",", " ").split()}
    assert pvs and pvs <= disks, f"{storage.volume_group}/data is on {sorted(pvs)}, not on the spec's {storage.disks}"
    pvs_out = nodes[swarm_host].check_output("pvs --noheadings -o pv_name,vg_name")
    pv_vg = [line.split() for line in pvs_out.splitlines()]
    in_vg = [f[0] for f in pv_vg if len(f) == 2 and f[1] == storage.volume_group]
    assert set(in_vg) <= disks, f"volume group {storage.volume_group} spans {in_vg}"


def test_devicemapper_thin_pool(swarm_host, nodes, cluster):
    needs(cluster, StorageDriver.DEVICEMAPPER)
    vg = cluster.docker.storage.volume_group
    attr = nodes[swarm_host].check_output("lvs --noheadings -o lv_attr %s", f"{vg}/thinpool").strip()
    assert attr.startswith("t"), f"{vg}/thinpool is not a thin pool (lv_attr {attr})"
    status = dict(json.loads(nodes[swarm_host].check_output("docker info --format '{{json .DriverStatus}}'")) or [])
    assert status.get("Pool Name") == mapper_name(vg, "thinpool"), f"driver status: {status}"
