"""Run as ``python netns_launch.py PROGRAM ARGS...`` as process 1 of fresh network and PID namespaces.

A new network namespace has a loopback interface that is down; this brings it up. CherryPy's
test harness binds a fixed port (54583), so two runs of its suite at once (stock and swapped, or
two checkouts on one machine) each need their own 127.0.0.1. Then it runs PROGRAM as its child
and, as an init does, reaps every orphan (daemonized cherryd) until PROGRAM ends, and exits with
PROGRAM's status; the kernel then kills whatever is left in the namespace.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import sys

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFREQ = "16sH14x"  # struct ifreq: interface name, then ifr_flags in the union


def bring_loopback_up() -> None:
    """Set IFF_UP on 'lo', as ``ip link set lo up`` does."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack(IFREQ, b"lo", 0)
        flags = struct.unpack(IFREQ, fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack(IFREQ, b"lo", flags | IFF_UP))


def run_as_init(args: list[str]) -> int:
    """Run ``args`` as a child; reap every process until it ends; return its exit status."""
    program = os.fork()
    if program == 0:
        try:
            os.execvp(args[0], args)
        finally:
            os._exit(127)
    while True:
        pid, status = os.wait()
        if pid == program:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as shells say


if __name__ == "__main__":
    bring_loopback_up()
    sys.exit(run_as_init(sys.argv[1:]))
