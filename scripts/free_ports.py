#!/usr/bin/env python3
"""free_ports.py N: prints N distinct loopback TCP ports that are free now.

They are drawn from *below* the kernel's ephemeral range (ip_local_port_range), not handed out
by binding port 0. A test's appservice port is bound and released many times during a run; a
port from the ephemeral range can, while it is released, become the local end of any outgoing
connection on the machine, and the next bind then fails with "Address already in use"."""
import random
import socket
import sys

count = int(sys.argv[1])
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
except OSError:
    ephemeral_low = 32768
low, high = 10000, max(ephemeral_low, 10000 + 4 * count)
held, ports = [], []
for port in random.sample(range(low, high), high - low):
    if len(ports) == count:
        break
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    held.append(s)
    ports.append(port)
if len(ports) < count:
    sys.exit(f"only {len(ports)} of {count} free ports below {high}")
print(" ".join(map(str, ports)))
