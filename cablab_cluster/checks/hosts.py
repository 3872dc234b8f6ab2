"""The spec's hosts over SSH: testinfra's ssh:// backend through an OpenSSH config, with sudo."""

from __future__ import annotations

import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cablab_cluster.spec import Host


def missing_from_ssh_config(text: str, names: list[str]) -> list[str]:
    """The names that no `Host` (or `Match`) entry of an OpenSSH config applies to.

    paramiko's SSHConfig resolves a name as ssh does (patterns, negations,
    Match); it does not follow `Include`, whose options then apply to every
    name: such a config counts as naming them all.
    """
    import paramiko  # with testinfra, in the lab extra

    config = paramiko.SSHConfig.from_text(text)
    return [n for n in names if config.lookup(n) == {"hostname": n}]


def proc_mounts_escape(path: str) -> str:
    """A path as /proc/mounts (and testinfra's mount_point) spells it: blank, tab, newline, backslash octal-escaped."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


def unescape(field: str) -> str:
    """/etc/fstab and /proc/mounts octal escapes (\\040 for a blank) undone."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class FstabEntry:
    """One line of /etc/fstab: what would be mounted where."""

    target: str
    source: str
    fstype: str
    options: tuple[str, ...]


def parse_fstab(text: str) -> list[FstabEntry]:
    """The entries of an /etc/fstab (comments and short lines skipped)."""
    entries = []
    for raw in text.splitlines():
        fields = raw.split("#", 1)[0].split()
        if len(fields) >= 4:
            source, target, fstype, options = fields[:4]
            entries.append(FstabEntry(unescape(target), unescape(source), fstype, tuple(options.split(","))))
    return entries


class Nodes:
    """The spec's hosts: `nodes[host]` is the testinfra host (every command through sudo).

    Use testinfra's modules on it: `check_output`, `run`, `file`, `mount_point`,
    `socket`, `service`... `run`/`try_run` here are shorthands for
    `nodes[host].check_output` / `nodes[host].run`.
    """

    def __init__(self, ssh_config: str, control_dir: Path):
        self.ssh_config = ssh_config
        self.control_dir = control_dir
        self._hosts: dict[str, Any] = {}
        self._lock = threading.Lock()  # lanes (conftest.py) use hosts beside the main thread

    def __getitem__(self, host: Host | str) -> Any:
        """The testinfra host for a spec host (or its name)."""
        import testinfra  # only with --spec: the fast suite runs without testinfra

        name = host if isinstance(host, str) else host.name
        with self._lock:
            if name not in self._hosts:
                # The vagrant user (or an operator) is not root: sudo for every command.
                # One master connection per host (ControlPath), reused by every command.
                self._hosts[name] = testinfra.get_host(f"ssh://{name}", ssh_config=self.ssh_config, sudo=True,
                                                       controlpath=str(self.control_dir / name))
            return self._hosts[name]

    def close(self) -> None:
        """End the master connections (else they linger for ControlPersist)."""
        for name in self._hosts:
            subprocess.run(["ssh", "-F", self.ssh_config, "-o", f"ControlPath={self.control_dir / name}",
                            "-O", "exit", name], capture_output=True, timeout=30, check=False)

    def try_run(self, host: Host | str, command: str, *args: str) -> Any:
        """`nodes[host].run`: the CommandResult (rc, stdout, stderr), whatever its exit status.

        With `args`, `command` is a %-template and every arg is shell-quoted (write a literal % as %%).
        """
        return self[host].run(command, *args)

    def run(self, host: Host | str, command: str, *args: str) -> str:
        """`nodes[host].check_output`: fail unless the command exits 0; its stdout without the trailing newline."""
        return self[host].check_output(command, *args)

    def mount_point(self, host: Host | str, path: str) -> Any:
        """testinfra's mount point at `path` (`.exists`, `.device`, `.filesystem`, `.options`).

        Its fields are as /proc/mounts spells them: compare a device with `proc_mounts_escape(...)`.
        """
        return self[host].mount_point(proc_mounts_escape(path))

    def fstab(self, host: Host | str) -> list[FstabEntry]:
        """The entries of the host's /etc/fstab."""
        return parse_fstab(self[host].file("/etc/fstab").content_string)
