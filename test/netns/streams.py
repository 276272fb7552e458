# SPDX-License-Identifier: Apache-2.0
"""Checksummed byte streams for the integrity tests.

A message is: 8-byte big-endian length, the payload, a 32-byte BLAKE2b digest
of the payload. A receiver that gets the wrong bytes, too few, too many or in
another order fails the digest or the framing.
"""
import hashlib
import random
import socket
import struct
import time

HDR = struct.Struct("!Q")
DIGEST = 32


class StreamError(Exception):
    pass


def payload(seed, n):
    return random.Random(seed).randbytes(n)


def frame(data):
    return HDR.pack(len(data)) + data + hashlib.blake2b(data, digest_size=DIGEST).digest()


def framed_len(n):
    return HDR.size + n + DIGEST


def recv_exact(sock, n, chunk=1 << 20, slow=0.0):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        r = sock.recv_into(view[got:], min(chunk, n - got))
        if r == 0:
            raise StreamError("EOF after %d of %d bytes" % (got, n))
        got += r
        if slow:
            time.sleep(slow)
    return bytes(buf)


def recv_msg(sock, chunk=1 << 20, slow=0.0, expect=None):
    (n,) = HDR.unpack(recv_exact(sock, HDR.size))
    if n > 1 << 31:
        raise StreamError("bad frame length %d (stream corrupted)" % n)
    data = recv_exact(sock, n, chunk, slow)
    dig = recv_exact(sock, DIGEST)
    if hashlib.blake2b(data, digest_size=DIGEST).digest() != dig:
        raise StreamError("digest mismatch on %d bytes" % n)
    if expect is not None and data != expect:
        raise StreamError("payload differs from what was sent")
    return data


def recv_to_eof(sock, chunk=65536):
    """Everything SOCK delivers until the peer's FIN."""
    parts = []
    while True:
        c = sock.recv(chunk)
        if not c:
            return b"".join(parts)
        parts.append(c)


def expect_eof(sock, timeout=5.0):
    sock.settimeout(timeout)
    try:
        extra = sock.recv(1)
    finally:
        sock.settimeout(None)
    if extra:
        raise StreamError("bytes after the last message (duplicated data?)")


def rand_size(rng, lo=1, hi=1 << 20):
    """Log-uniform: as many tiny messages as large ones."""
    return int(round(2 ** rng.uniform(0, 20))) if hi == 1 << 20 else rng.randint(lo, hi)


def set_linger_rst(sock):
    """close() then sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class LongStream:
    """One long-lived connection with bytes flowing both ways at once, in
    chunks, for as long as the test wants (detach/restart in the middle).
    Each direction carries a deterministic byte sequence, checked on arrival.

    Each socket is driven by one thread with a non-blocking event loop, as
    nginx, Envoy, Node or Go drive theirs. (Two threads doing blocking recv()
    and send() on one socket meet a kernel quirk under sockmap: a blocking
    recv() can return EAGAIN when the socket's own send path wakes it; see
    README "Known kernel limitations".)"""

    def __init__(self, client, server, seed, total, chunk=65536):
        self.c, self.s = client, server
        self.seed, self.total, self.chunk = seed, total, chunk
        self.sent = {"c2s": 0, "s2c": 0}
        self.ok = {"c2s": None, "s2c": None}
        self.err = []

    def _loop(self, sock, out_key, in_key, pause):
        import selectors
        sock.setblocking(False)
        wrng = random.Random("%s-%s" % (self.seed, out_key))
        rrng = random.Random("%s-%s" % (self.seed, in_key))
        out = b""
        produced_out = 0
        exp = bytearray()
        produced_in = got = 0
        eof = wdone = False
        next_write = 0.0
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while not (eof and wdone):
            want = selectors.EVENT_READ if not eof else 0
            if not wdone:
                want |= selectors.EVENT_WRITE
            sel.modify(sock, want)
            timeout = max(0.0, next_write - time.monotonic()) if not wdone and not out else None
            if timeout is not None and eof:
                time.sleep(timeout)
            for _key, ev in sel.select(timeout):
                if ev & selectors.EVENT_READ:
                    try:
                        b = sock.recv(1 << 20)
                    except BlockingIOError:
                        b = None
                    if b == b"":
                        eof = True
                    elif b:
                        while len(exp) < len(b):
                            n = min(self.chunk, self.total - produced_in)
                            if n <= 0:
                                raise StreamError("%s: more bytes than were sent (duplicates?)" % in_key)
                            exp += rrng.randbytes(n)
                            produced_in += n
                        if exp[:len(b)] != b:
                            raise StreamError("%s: bytes differ at offset %d (lost or reordered)" % (in_key, got))
                        del exp[:len(b)]
                        got += len(b)
                if ev & selectors.EVENT_WRITE and not wdone:
                    if not out and produced_out < self.total and time.monotonic() >= next_write:
                        out = wrng.randbytes(min(self.chunk, self.total - produced_out))
                        produced_out += len(out)
                        next_write = time.monotonic() + pause
                    if out:
                        try:
                            n = sock.send(out)
                        except BlockingIOError:
                            n = 0
                        out = out[n:]
                        self.sent[out_key] += n
                    if not out and produced_out >= self.total:
                        sock.shutdown(socket.SHUT_WR)
                        wdone = True
        sel.close()
        if got != self.total:
            raise StreamError("%s: received %d of %d bytes" % (in_key, got, self.total))
        self.ok[in_key] = True

    def run(self, pause=0.0):
        import threading

        def guard(*a):
            try:
                self._loop(*a)
            except Exception as e:
                self.err.append(repr(e))

        self.threads = [threading.Thread(target=guard, args=(self.c, "c2s", "s2c", pause)),
                        threading.Thread(target=guard, args=(self.s, "s2c", "c2s", pause))]
        for t in self.threads:
            t.start()
        return self

    def join(self, timeout=120):
        for t in self.threads:
            t.join(timeout)
        return not self.err and bool(self.ok["c2s"]) and bool(self.ok["s2c"])


# ---- the reversing app server and client of the pair tests (test_istio_pairs, test_trace) ----

def listen_any(port, backlog=64):
    """A TCP listener on 0.0.0.0:PORT (SO_REUSEADDR)."""
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("0.0.0.0", port))
    lsock.listen(backlog)
    return lsock


def serve_reversed(c, with_delay=False):
    """Serve connection C until the peer closes: request = 8-byte length
    [+ 4-byte delay in ms, WITH_DELAY: slept before answering] + payload; the
    answer is the payload reversed, after its 8-byte length."""
    try:
        while True:
            try:
                hdr = recv_exact(c, 12 if with_delay else 8)
            except StreamError:
                return
            n = int.from_bytes(hdr[:8], "big")
            delay = int.from_bytes(hdr[8:], "big") if with_delay else 0
            data = recv_exact(c, n)
            if delay:
                time.sleep(delay / 1000.0)
            c.sendall(n.to_bytes(8, "big") + data[::-1])
    finally:
        c.close()


def reversed_round_trip(c, data, extra=b""):
    """One request of DATA (after its length and EXTRA) to a serve_reversed
    server on C; True if DATA came back reversed."""
    c.sendall(len(data).to_bytes(8, "big") + extra + data)
    m = int.from_bytes(recv_exact(c, 8), "big")
    return recv_exact(c, m) == data[::-1]

