#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Minimal Istio-like sidecar: a TCP proxy that forwards to SO_ORIGINAL_DST.

Fallback for tests where HAProxy does not fit (HAProxy is the default sidecar
of test/netns/istio_pod.py). Same shape as Envoy under istio-init's rules:

  outbound listener 0.0.0.0:15001  <- app connections REDIRECTed by ISTIO_REDIRECT
      -> connect to the original destination (socket (3) of Table 2); the
         proxy runs as uid 1337 so this connect is not captured again
  inbound listener  0.0.0.0:15006  <- peer connections REDIRECTed by ISTIO_IN_REDIRECT
      -> connect from 127.0.0.6 to the original destination (socket (5)),
         which ISTIO_OUTPUT lets through (`-o lo -s 127.0.0.6/32 -j RETURN`)

Bytes are copied as they come; a FIN from either side is propagated as a
half-close (shutdown(SHUT_WR)) to the other side, and the proxied pair is
closed only when both directions finished. A reset/error on one side aborts
the other side too (as a real proxy does), rather than faking a clean EOF.

The original destination is read with getsockopt(SOL_IP, SO_ORIGINAL_DST=80,
16): a struct sockaddr_in filled from the conntrack entry of the REDIRECTed
connection. Connections that reached a listener without a REDIRECT (orig dst
== our own listener) are closed, so the proxy never loops on itself.

Run as uid 1337: either start it already as 1337 (what istio_pod.py does: it
drops privileges in the child before exec), or start it as root with
--user 1337:1337 and it drops after binding.

With --conn-log, each proxied connection prints one line on stdout, once the
upstream connection is established (istio_pod.py uses it to link hops):
  CONN <out|in> client=<ip:port> local=<ip:port> upstream_src=<ip:port> upstream_dst=<ip:port>
"READY" is printed on stdout once both listeners are bound.
--delay-ms N delays every chunk it forwards, in both directions, by N ms
(test/netns/test_trace.py injects a known proxy delay with it).
"""
import argparse
import asyncio
import os
import socket
import struct
import sys

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; Python's socket module lacks it


def original_dst(sock):
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    # struct sockaddr_in: sa_family (host order), sin_port (BE), sin_addr
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntoa(raw[4:8]), port


def fmt(addr):
    return "%s:%d" % (addr[0], addr[1])


class Sidecar:
    def __init__(self, args):
        self.args = args
        self.conn_log = args.conn_log
        self.delay = max(0, args.delay_ms) / 1000.0

    async def pipe(self, reader, writer, other_writer, done):
        """Copy reader -> writer; on EOF half-close writer."""
        try:
            while True:
                data = await reader.read(256 * 1024)
                if not data:
                    break
                if self.delay:
                    await asyncio.sleep(self.delay)  # --delay-ms: a slow proxy, for tests
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
        except (ConnectionError, OSError):
            # Propagate the failure: abort both ends instead of a clean FIN.
            for w in (writer, other_writer):
                try:
                    w.transport.abort()
                except Exception:
                    pass
        finally:
            done.set()

    async def handle(self, reader, writer, inbound):
        sock = writer.get_extra_info("socket")
        client = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        try:
            dst = original_dst(sock)
        except OSError:
            writer.transport.abort()
            return
        if dst == tuple(local) or dst[1] in (self.args.outbound_port, self.args.inbound_port):
            # Not REDIRECTed (or redirected to ourselves): refuse, no loop.
            writer.transport.abort()
            return
        try:
            if inbound:
                ur, uw = await asyncio.wait_for(asyncio.open_connection(
                    dst[0], dst[1], local_addr=(self.args.inbound_source, 0)), 10)
            else:
                ur, uw = await asyncio.wait_for(asyncio.open_connection(dst[0], dst[1]), 10)
        except (OSError, asyncio.TimeoutError):
            writer.transport.abort()
            return
        if self.conn_log:
            print("CONN %s client=%s local=%s upstream_src=%s upstream_dst=%s" % (
                "in" if inbound else "out", fmt(client), fmt(local),
                fmt(uw.get_extra_info("sockname")), fmt(uw.get_extra_info("peername"))),
                flush=True)
        d1, d2 = asyncio.Event(), asyncio.Event()
        t1 = asyncio.ensure_future(self.pipe(reader, uw, writer, d1))
        t2 = asyncio.ensure_future(self.pipe(ur, writer, uw, d2))
        await asyncio.gather(t1, t2, return_exceptions=True)
        for w in (writer, uw):
            try:
                w.close()
                await w.wait_closed()
            except Exception:
                pass

    async def main(self):
        a = self.args
        out = await asyncio.start_server(lambda r, w: self.handle(r, w, False),
                                         a.bind, a.outbound_port, reuse_address=True,
                                         backlog=1024)
        inb = await asyncio.start_server(lambda r, w: self.handle(r, w, True),
                                         a.bind, a.inbound_port, reuse_address=True,
                                         backlog=1024)
        if a.user:
            uid, _, gid = a.user.partition(":")
            uid = int(uid)
            gid = int(gid) if gid else uid
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        print("READY", flush=True)
        async with out, inb:
            await asyncio.gather(out.serve_forever(), inb.serve_forever())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--outbound-port", type=int, default=15001)
    p.add_argument("--inbound-port", type=int, default=15006)
    p.add_argument("--inbound-source", default="127.0.0.6",
                   help="source address of connections to the local app (Istio: 127.0.0.6)")
    p.add_argument("--user", help="UID[:GID] to drop to after binding (if started as root)")
    p.add_argument("--conn-log", action="store_true", help="print one CONN line per connection")
    p.add_argument("--delay-ms", type=float, default=0,
                   help="delay each forwarded chunk by this many ms, both directions (tests; default 0)")
    args = p.parse_args()
    try:
        asyncio.run(Sidecar(args).main())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
