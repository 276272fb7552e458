#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A capacity-limited HTTP/1.1 backend for the objectives evaluation: one
process, one worker, so requests queue (in the listen backlog and on the
accepted connections) and latency rises steeply near saturation. Each request
costs SERVICE_MS of *CPU time* (a spin measured with the thread's CPU clock),
so the backend's capacity follows its cgroup's CPU quota (cpu.max, or
cpu.cfs_quota_us on a cgroup v1 cpu hierarchy): halving the quota halves it.

    backend.py IP PORT SERVICE_MS

Prints "ready" once listening. Answers every request with 200 and a short body;
honours Connection: close (the evaluation's callers open one connection per
request) and keeps the connection otherwise. SIGUSR1 prints the counts."""
import selectors
import signal
import socket
import sys
import time


def spin(cpu_s):
    end = time.thread_time() + cpu_s
    x = 0
    while time.thread_time() < end:
        for _ in range(200):
            x += 1
    return x


def main():
    ip, port, service_ms = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((ip, port))
    lst.listen(4096)
    lst.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lst, selectors.EVENT_READ)
    bufs = {}
    served = [0]
    signal.signal(signal.SIGUSR1, lambda *_: print("served %d" % served[0], flush=True))
    print("ready", flush=True)
    body = b"ok\n"
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if s is lst:
                while True:
                    try:
                        c, _ = lst.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    bufs[c] = b""
                    sel.register(c, selectors.EVENT_READ)
                continue
            try:
                d = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                d = b""
            if not d:
                sel.unregister(s)
                bufs.pop(s, None)
                s.close()
                continue
            buf = bufs[s] + d
            close = False
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                close = close or b"connection: close" in head.lower()
                spin(service_ms / 1e3)  # the one worker: everyone else waits
                served[0] += 1
                hdr = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (
                    len(body), b"Connection: close\r\n" if close else b"")
                try:
                    s.setblocking(True)
                    s.sendall(hdr + body)
                    s.setblocking(False)
                except OSError:
                    close = True
                    break
            bufs[s] = buf
            if close:
                sel.unregister(s)
                bufs.pop(s, None)
                s.close()


if __name__ == "__main__":
    main()
