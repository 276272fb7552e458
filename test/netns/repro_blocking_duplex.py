#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Reproducer (not a test): a blocking recv() on a sockmap socket that another
thread writes at the same time can return EAGAIN.

Kernel: tcp_bpf_recvmsg()/tcp_bpf_recvmsg_parser() wait once in
tcp_msg_wait_data() and return -EAGAIN if woken without data, even with an
infinite timeout; the socket's own send path (write-space wake-ups) wakes it.
Runs 6 full-duplex connections with one reader and one writer thread per
socket, plain and under meshcut, and prints what each saw.
"""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcnet  # noqa: E402


def duplex(a, total=8 << 20, n=6):
    errors = []

    def writer(sock):
        try:
            buf = b"x" * 65536
            for _ in range(total // len(buf)):
                sock.sendall(buf)
                time.sleep(0.002)  # the reader blocks between chunks
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append("send: %r" % e)

    def reader(sock):
        got = 0
        try:
            while True:
                b = sock.recv(1 << 20)  # blocking socket, no timeout
                if not b:
                    break
                got += len(b)
        except OSError as e:
            errors.append("recv after %d B: %r" % (got, e))

    ts = []
    for _ in range(n):
        c, s = mcnet.tcp_pair(a)
        for sock in (c, s):
            ts += [threading.Thread(target=writer, args=(sock,)), threading.Thread(target=reader, args=(sock,))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return errors


def main():
    mcnet.require_root()
    cg = mcnet.Cgroup("repro")
    cg.join()
    a = mcnet.Netns("a")
    d = mcnet.Daemon(cg, "repro")
    d.start()
    print("plain TCP:   %s" % (duplex(a) or "no error"))
    d.enroll(a)
    errs = duplex(a)
    print("meshcut:     %s" % (errs or "no error"))
    print("redirected bytes: %d" % d.counters()["redirect_bytes"])
    mcnet._sweep()


if __name__ == "__main__":
    main()
