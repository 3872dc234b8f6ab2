"""Hostile or odd input: each case is exit 2 naming the key or file, nothing
written, no file contents echoed, and no hang (the CLI runs in a subprocess
with a timeout and a memory limit, so a regression fails instead of hanging)."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

GUARD_S = 20  # a generous guard against hangs, not a benchmark
SECRET_LINE = "root:$6$Zq9Vt0pW$3mX2kN8rP1sT4uV7wY0aB3cD6eF9gH2iJ5kL8mN1oP4qR7sT0uV3wX6yZ9:19000:0:99999:7:::"


def _limit_memory() -> None:  # pragma: no cover — runs in the child
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cablab_cluster.cli", *map(str, args)], capture_output=True,
                          text=True, errors="replace", timeout=GUARD_S, preexec_fn=_limit_memory)


def alias_bomb(spec: Path) -> str:
    lines = ['lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    spec.write_text(spec.read_text() + "\n".join(lines) + "\n")
    return "not allowed in a spec"


def huge_file(spec: Path) -> str:
    spec.write_text(spec.read_text().replace("name: lab-ubuntu", "name: " + "x" * (50 << 20)))
    return "larger than 1 MiB"


def long_value(spec: Path) -> str:
    spec.write_text(spec.read_text().replace("name: lab-ubuntu", "name: " + "x" * 500_000))
    return "name: 'xxxxxxxx"


def spec_not_utf8(spec: Path) -> str:
    spec.write_bytes(spec.read_bytes().replace(b"lab-ubuntu", b"lab-\xff\xfe"))
    return f"{spec}: (file): not UTF-8 text"


def spec_is_a_device(spec: Path) -> str:
    spec.unlink()
    spec.symlink_to("/dev/zero")
    return "(file): not a regular file"


def userlist_not_utf8(spec: Path) -> str:
    (spec.parent / "userlist.lab").write_bytes(b"alice admin\nb\xe9b\n")
    return f"hub.userlist: {spec.parent / 'userlist.lab'}: not UTF-8 text"


def userlist_is_another_file(spec: Path) -> str:
    (spec.parent / "userlist.lab").write_text("".join(f"{SECRET_LINE}{i}\n" for i in range(200)))
    return "… and 195 more"


def userlist_too_large(spec: Path) -> str:
    (spec.parent / "userlist.lab").write_text("alice\n" * 200_000)
    return "larger than 256 KiB"


def emoji_shortcode(spec: Path) -> str:
    spec.write_text(spec.read_text().replace("name: lab-ubuntu", "name: 'bad:x:name'"))
    return "name: 'bad:x:name' is not valid here"


def unreadable_client_secret(spec: Path) -> str:
    # /proc/self/mem is a regular file that cannot be read from offset 0 (EIO), even by root.
    spec.write_text(spec.read_text().replace("client_secret_file: github-client-secret.lab",
                                             "client_secret_file: /proc/self/mem"))
    return "hub.auth.github.client_secret_file: /proc/self/mem: cannot be read"


def client_secret_is_a_device(spec: Path) -> str:
    spec.write_text(spec.read_text().replace("client_secret_file: github-client-secret.lab",
                                             "client_secret_file: /dev/zero"))
    return "hub.auth.github.client_secret_file: '/dev/zero'"


CASES = [alias_bomb, huge_file, long_value, spec_not_utf8, spec_is_a_device, userlist_not_utf8,
         userlist_is_another_file, userlist_too_large, emoji_shortcode, unreadable_client_secret,
         client_secret_is_a_device]


@pytest.mark.parametrize("command", ["validate", "render"])
@pytest.mark.parametrize("case", CASES, ids=lambda f: f.__name__)
def test_odd_input_is_exit_2_naming_it_and_nothing_written(case, command, write_spec, tmp_path):
    spec = write_spec()
    expected = case(spec)
    out = tmp_path / "out"
    args = ("render", spec, "--out", out) if command == "render" else ("validate", spec)
    try:
        proc = run(*args)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case.__name__}: no answer within {GUARD_S} s")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[:2000]
    assert expected in output, output[:2000]
    assert len(output) < 4000, f"{len(output)} characters of output"
    assert SECRET_LINE[:40] not in output
    assert "Traceback" not in output
    assert not out.exists()
    assert not (spec.parent / "secrets").exists()
