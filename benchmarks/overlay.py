"""What the encrypted overlay costs (issue 8 F): throughput and round trips between two containers on
two nodes, over a plain and an encrypted attachable overlay made for the run, on a running cluster.

    python benchmarks/overlay.py --ssh-config .vagrant/ubuntu/ssh-config --manager node1 \
        --nodes node2 node3 --image cablab/singleuser:lab [--mib 64] [--round-trips 500]

Each network is created on the manager, a receiver container runs on the first node and a sender on
the second (both `docker run` of the single-user image, its Python), and both networks and containers
are removed afterwards. Figures are printed (MiB/s, round trip in ms, encrypted/plain), never asserted.
Bounded: one transfer and one round-trip loop per network.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time

PORT = 5001
# Receiver: counts the bytes of one connection, then echoes small messages back until closed.
RECEIVER = f"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("", {PORT})); s.listen()
c, _ = s.accept(); n = 0
while (b := c.recv(1 << 20)):
    n += len(b)
c.close(); c, _ = s.accept()
while (b := c.recv(64)):
    c.sendall(b)
print(n)
"""
# Sender: MIB MiB in 1 MiB writes, then ROUNDS one-byte round trips; prints "seconds_bulk seconds_rtt".
SENDER = f"""
import socket, sys, time
host, mib, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(300):
    try:
        s = socket.create_connection((host, {PORT}), timeout=5); break
    except OSError:
        time.sleep(1)
block = b"x" * (1 << 20); t = time.monotonic()
for _ in range(mib):
    s.sendall(block)
s.shutdown(socket.SHUT_WR); s.recv(1); s.close(); bulk = time.monotonic() - t
s = socket.create_connection((host, {PORT}), timeout=30); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
t = time.monotonic()
for _ in range(rounds):
    s.sendall(b"."); s.recv(64)
print(bulk, time.monotonic() - t)
"""


def ssh(config: str, host: str, command: str, check: bool = True) -> str:
    proc = subprocess.run(["ssh", "-F", config, host, command], capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise SystemExit(f"{host}: {command[:120]}… exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip()


def docker_run(name: str, network: str, image: str, code: str, *args: str, detach: bool = False) -> str:
    parts = ["sudo", "docker", "run", "--name", name, "--network", network, "--entrypoint", "python3"]
    parts += ["-d"] if detach else ["--rm"]
    return " ".join(shlex.quote(p) for p in [*parts, image, "-c", code, *args])


def measure(args: argparse.Namespace, kind: str) -> tuple[float, float]:
    net, rx, tx = f"cablab-bench-{kind}", f"cablab-bench-rx-{kind}", f"cablab-bench-tx-{kind}"
    receiver_node, sender_node = args.nodes
    opts = "--opt encrypted " if kind == "encrypted" else ""
    ssh(args.ssh_config, args.manager, f"sudo docker network create -d overlay --attachable {opts}{net} >/dev/null")
    try:
        ssh(args.ssh_config, receiver_node, docker_run(rx, net, args.image, RECEIVER, detach=True))
        out = ssh(args.ssh_config, sender_node, docker_run(tx, net, args.image, SENDER, rx, str(args.mib),
                                                           str(args.round_trips)))
        bulk, rtt = (float(x) for x in out.split()[-2:])
        return args.mib / bulk, 1000 * rtt / args.round_trips
    finally:
        ssh(args.ssh_config, receiver_node, f"sudo docker rm -f {rx} >/dev/null 2>&1", check=False)
        ssh(args.ssh_config, args.manager, f"sudo docker network rm {net} >/dev/null 2>&1", check=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ssh-config", required=True)
    ap.add_argument("--manager", required=True)
    ap.add_argument("--nodes", nargs=2, required=True, metavar=("RECEIVER", "SENDER"))
    ap.add_argument("--image", required=True)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--round-trips", type=int, default=500)
    args = ap.parse_args(argv)
    rows = {}
    for kind in ("plain", "encrypted"):
        started = time.monotonic()
        print(f"[overlay] {kind}: {args.mib} MiB and {args.round_trips} round trips "
              f"{args.nodes[1]} -> {args.nodes[0]} …", flush=True)
        rows[kind] = measure(args, kind)
        print(f"[overlay] {kind}: {rows[kind][0]:.1f} MiB/s, {rows[kind][1]:.2f} ms per round trip "
              f"({time.monotonic() - started:.0f} s)", flush=True)
    (p_mib, p_rtt), (e_mib, e_rtt) = rows["plain"], rows["encrypted"]
    print(f"overlay      MiB/s   round trip (ms)\nplain     {p_mib:8.1f}   {p_rtt:8.2f}\n"
          f"encrypted {e_mib:8.1f}   {e_rtt:8.2f}\nencrypted/plain: throughput x{e_mib / p_mib:.2f}, "
          f"round trip x{e_rtt / p_rtt:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
