#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Keep-alive HTTP/1.1 client that reads the way nginx does: non-blocking
socket, edge-triggered epoll, and ioctl(FIONREAD) to size each read.

It is the FIONREAD/epoll probe of test_real_apps.py. It does not trust the
kernel blindly: when epoll said "readable" but FIONREAD reports 0, it peeks
(MSG_PEEK) and counts a *FIONREAD lie* if bytes were there; when epoll stays
silent for --wait seconds, it peeks and counts an *epoll miss* if bytes were
there. Either one would stall nginx, Node or Go (DESIGN.md, Kernel facts).
It then reads anyway, so one run measures every request.

Usage: http_client.py --host IP --port N --get /big=20 --get /small=20
                      [--sha /big=HEX ...] [--timeout S] [--wait S] [--close]

--close: one connection per request, each request timed until the server's
FIN (EOF) -- where the 200 ms FIN-retransmit tail of DESIGN.md would show.
Prints one JSON object: per-request results, counts, errors.
"""
import argparse
import fcntl
import hashlib
import json
import select
import socket
import struct
import sys
import termios
import time


class Conn:
    def __init__(self, host, port, wait):
        self.host, self.port, self.wait = host, port, wait
        self.lies = 0
        self.misses = 0
        self.connects = 0
        self.sock = None
        self.buf = bytearray()

    def connect(self):
        self.close()
        self.sock = socket.create_connection((self.host, self.port), timeout=5)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ep = select.epoll()
        self.ep.register(self.sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET)
        self.buf = bytearray()
        self.eof = False
        self.connects += 1

    def close(self):
        if self.sock is not None:
            self.ep.close()
            self.sock.close()
            self.sock = None

    def _fionread(self):
        return struct.unpack("i", fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]

    def _peek(self):
        try:
            return len(self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            return 0

    def fill(self, deadline):
        """Appends at least one byte to self.buf; raises EOFError / TimeoutError."""
        if self.eof:
            raise EOFError("connection closed")
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError("no bytes before the request deadline")
            events = self.ep.poll(min(self.wait, deadline - now))
            if not events:
                if not self._peek():
                    continue
                # Bytes are queued after WAIT s of silence. If they had just
                # landed, their edge is pending now; if not, epoll missed them.
                if not self.ep.poll(0):
                    self.misses += 1
            got = 0
            while True:  # drain, as an edge-triggered reader must
                avail = self._fionread()
                if avail == 0:
                    peeked = self._peek()
                    if peeked:
                        # Bytes may land between the ioctl and the peek; only
                        # we read, so an ioctl AFTER a successful peek that
                        # still says 0 is a lie, not a race.
                        avail = self._fionread()
                        if avail == 0:
                            self.lies += 1
                            avail = 1 << 16
                    else:
                        try:
                            if self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                                self.eof = True
                                if got:
                                    return
                                raise EOFError("connection closed")
                        except BlockingIOError:
                            pass
                        break
                try:
                    d = self.sock.recv(min(avail, 1 << 20))
                except BlockingIOError:
                    break
                if not d:
                    self.eof = True
                    if got:
                        return
                    raise EOFError("connection closed")
                self.buf += d
                got += len(d)
            if got:
                return

    def request(self, path, timeout, close=False):
        if self.sock is None:
            self.connect()
        deadline = time.monotonic() + timeout
        self.sock.setblocking(True)
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n"
                           % (path, self.host, "Connection: close\r\n" if close else "")).encode())
        self.sock.setblocking(False)
        while b"\r\n\r\n" not in self.buf:
            self.fill(deadline)
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdr = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        n = int(hdr["content-length"])
        h = hashlib.sha256()
        self.buf = bytearray(rest)
        got = 0
        while True:
            take = min(len(self.buf), n - got)
            h.update(memoryview(self.buf)[:take])
            got += take
            del self.buf[:take]
            if got == n:
                break
            self.fill(deadline)
        fin_wait = None
        if close:
            # The request ends at the server's FIN, as for an EOF-delimited
            # body: this is where a dropped-and-retransmitted FIN shows, as
            # the wait from the body's last byte to EOF (fin_sec).
            t_body = time.monotonic()
            try:
                while True:
                    self.fill(deadline)
                    if self.buf:
                        raise ValueError("%d bytes after the body" % len(self.buf))
            except EOFError:
                pass
            fin_wait = time.monotonic() - t_body
            self.close()
        elif hdr.get("connection", "").lower() == "close":
            self.close()
        return status, n, h.hexdigest(), hdr, fin_wait


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--get", action="append", default=[], help="PATH=COUNT, in order")
    ap.add_argument("--sha", action="append", default=[], help="PATH=HEX expected body sha256")
    ap.add_argument("--timeout", type=float, default=10.0, help="per request")
    ap.add_argument("--wait", type=float, default=2.0, help="epoll silence before peeking")
    ap.add_argument("--close", action="store_true", help="Connection: close, each request ends at EOF")
    a = ap.parse_args()
    want = dict(s.split("=", 1) for s in a.sha)
    c = Conn(a.host, a.port, a.wait)
    out = {"requests": [], "errors": []}
    for g in a.get:
        path, count = g.rsplit("=", 1)
        for _ in range(int(count)):
            t0 = time.monotonic()
            try:
                status, n, sha, hdr, fin_wait = c.request(path, a.timeout, a.close)
                exp = want.get(path) or hdr.get("x-sha256")
                ok = status == 200 and sha == exp
                if not ok:
                    out["errors"].append("%s: status %d, sha %s != %s" % (path, status, sha[:12], (exp or "?")[:12]))
                r = {"path": path, "bytes": n, "sec": time.monotonic() - t0, "ok": ok}
                if fin_wait is not None:
                    r["fin_sec"] = fin_wait  # body's last byte -> EOF
                out["requests"].append(r)
            except Exception as e:
                out["errors"].append("%s: %r" % (path, e))
                out["requests"].append({"path": path, "bytes": 0, "sec": time.monotonic() - t0, "ok": False})
                c.close()  # a fresh connection for the next request
    c.close()
    out.update(fionread_lies=c.lies, epoll_misses=c.misses, connects=c.connects)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
