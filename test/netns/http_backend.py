#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""An HTTP/1.1-ish backend in a test netns and a one-shot client: what the
objectives tests (test_objectives.py, test_control_run.py) serve and call."""
import socket
import threading
import time

import mcnet


class Backend:
    """An HTTP/1.1-ish server in NETNS on IP:PORT: per request it waits
    delay(i) seconds, then answers; keeps the connection until EOF. Counts
    accepted connections and requests. SERVERS: at most that many requests
    are served at once, the others wait their turn (a queue, so that latency
    rises with load as a real backend's does); None: every connection its own
    server (a fixed delay whatever the load)."""

    def __init__(self, netns, ip, port, delay=None, servers=None):
        self.addr = (ip, port)
        self.servers = threading.Semaphore(servers) if servers else None
        self.accepts = 0
        self.requests = 0
        self.delay = delay
        self.lock = threading.Lock()
        self.lst = mcnet.in_netns(netns, self._listen)
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _listen(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(self.addr)
        s.listen(4096)
        return s

    def _accept_loop(self):
        while True:
            try:
                c, _ = self.lst.accept()
            except OSError:
                return
            with self.lock:
                self.accepts += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                buf += d
                while b"\r\n\r\n" in buf:
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    with self.lock:
                        self.requests += 1
                        i = self.requests
                    if self.delay and self.servers:
                        with self.servers:
                            time.sleep(self.delay(i))
                    elif self.delay:
                        time.sleep(self.delay(i))
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            pass
        finally:
            c.close()


def request(sock):
    """One request on SOCK; returns when the whole response is in."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: s\r\n\r\n")
    got = b""
    while not got.endswith(b"ok"):
        d = sock.recv(4096)
        if not d:
            raise OSError("connection closed mid-response")
        got += d


def connect_once(dst, do_request=True, timeout=3):
    """connect(); one request; close. Returns the errno of a refused connect, or 0."""
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect(dst)
    except OSError as e:
        s.close()
        return e.errno or -1
    try:
        if do_request:
            request(s)
    finally:
        s.close()
    return 0
