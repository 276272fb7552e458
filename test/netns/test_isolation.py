#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""netns tier, socket shortcut: isolation (invariant 3) and bounded maps.

  1. Two enrolled pods run identical loopback tuples at the same time
     (127.0.0.1:P <- 127.0.0.1:Q, and 127.0.0.6:Q' -> 127.0.0.1:P) and never
     see each other's bytes; both are redirected.
  2. A process outside any enrolled pod (its own netns, same cgroup) is never
     inserted: sock_not_enrolled counts it, it crosses TCP, the map stays empty.
  3. A full sockhash means fall back, counted, never an error to the app.
"""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcnet  # noqa: E402
import streams  # noqa: E402
from mcnet import log  # noqa: E402

SRV_PORT, CLI_PORT = 18080, 40404


def pair_in(ns, src_ip, size, tag):
    """A connection from SRC_IP:CLI_PORT to 127.0.0.1:SRV_PORT inside NS,
    a tagged payload each way; returns (client, server, payloads)."""

    def mk():
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", SRV_PORT))
        lst.listen(1)
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        c.bind((src_ip, CLI_PORT))
        c.connect(("127.0.0.1", SRV_PORT))
        s, _ = lst.accept()
        lst.close()
        return c, s

    c, s = mcnet.in_netns(ns, mk)
    up = (tag * (size // len(tag) + 1))[:size]
    down = up[::-1]
    return c, s, up, down


def exchange(c, s, up, down, out, key):
    try:
        t = threading.Thread(target=lambda: s.sendall(down))
        t.start()
        c.sendall(up)
        got_up = streams.recv_exact(s, len(up))
        got_down = streams.recv_exact(c, len(down))
        t.join()
        out[key] = (got_up == up, got_down == down)
    except Exception as e:
        out[key] = (False, repr(e))


def main():
    mcnet.require_root()
    ck = mcnet.Checks()
    cg = mcnet.Cgroup("iso")
    cg.join()
    a = mcnet.Netns("pa")
    b = mcnet.Netns("pb")
    host = mcnet.Netns("host")  # stands for a host process: same cgroup, not enrolled
    d = mcnet.Daemon(cg, "iso")
    d.start()
    d.enroll(a)
    d.enroll(b)

    for src in ("127.0.0.1", "127.0.0.6"):
        c0 = d.counters()
        ca, sa, upa, downa = pair_in(a, src, 4 << 20, b"pod-A|")
        cb, sb, upb, downb = pair_in(b, src, 4 << 20, b"pod-B|")
        ck.check(ca.getsockname() == cb.getsockname() and sa.getsockname() == sb.getsockname(),
                 "pods A and B hold identical tuples %s:%d -> 127.0.0.1:%d" % (src, CLI_PORT, SRV_PORT))
        out = {}
        ts = [threading.Thread(target=exchange, args=(ca, sa, upa, downa, out, "A")),
              threading.Thread(target=exchange, args=(cb, sb, upb, downb, out, "B"))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        ck.check(out.get("A") == (True, True) and out.get("B") == (True, True),
                 "each pod got exactly its own 4 MiB each way from %s (%s)" % (src, out))
        dc = mcnet.delta(c0, d.counters())
        wires = [mcnet.tcp_wire_stats(x)["data_segs_out"] for x in (ca, sa, cb, sb)]
        ck.check(dc["pairs_redirected"] == 4 and all(w == 0 for w in wires),
                 "both pods' connections were redirected (%d directions, TCP data segments %s)"
                 % (dc["pairs_redirected"], wires))
        for x in (ca, sa, cb, sb):
            x.close()
        time.sleep(0.2)

    # 2. host process
    c0 = d.counters()
    ch, sh_, up, down = pair_in(host, "127.0.0.1", 1 << 20, b"host|")
    out = {}
    exchange(ch, sh_, up, down, out, "H")
    st = d.status()
    dc = mcnet.delta(c0, st["counters"])
    ck.check(out["H"] == (True, True), "host process exchanged 1 MiB each way")
    ck.check(dc["sock_not_enrolled"] == 2 and dc["sock_added_active"] == 0 and dc["sock_added_passive"] == 0,
             "host sockets were seen and left alone (not_enrolled +%d, added +%d)"
             % (dc["sock_not_enrolled"], dc["sock_added_active"] + dc["sock_added_passive"]))
    ck.check(st["maps"]["mc_sockhash"]["entries"] == 0, "no host socket in the sockhash")
    ck.check(mcnet.tcp_wire_stats(ch)["data_segs_out"] > 0, "host connection used the normal TCP path")
    ch.close()
    sh_.close()

    # 2b. dual-stack sockets: IPv4-mapped IPv6 is redirected; native IPv6 is
    #     left on the normal path, counted.
    for fam_addr, want_redirect in (("::ffff:127.0.0.1", True), ("::1", False)):
        def mk6(addr=fam_addr):
            lst = socket.socket(socket.AF_INET6)
            lst.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            lst.bind(("::", 0))
            lst.listen(1)
            c = socket.create_connection((addr, lst.getsockname()[1]))
            s, _ = lst.accept()
            lst.close()
            return c, s
        c0 = d.counters()
        c6, s6 = mcnet.in_netns(a, mk6)
        out = {}
        exchange(c6, s6, b"6" * 500000, b"9" * 500000, out, "6")
        dc = mcnet.delta(c0, d.counters())
        wires = [mcnet.tcp_wire_stats(x)["data_segs_out"] for x in (c6, s6)]
        if want_redirect:
            ok = out["6"] == (True, True) and dc["pairs_redirected"] == 2 and wires == [0, 0]
        else:
            ok = out["6"] == (True, True) and dc["sock_skip_family"] == 2 and all(w > 0 for w in wires)
        ck.check(ok, "%s: %s (pairs %d, skip_family %d, TCP data segments %s)" % (
            fam_addr, "IPv4-mapped dual-stack sockets redirected" if want_redirect else
            "native IPv6 left on the normal path, counted", dc["pairs_redirected"], dc["sock_skip_family"], wires))
        c6.close()
        s6.close()

    # 2c. IP reuse: a deleted pod's live sockets never pair with a new pod that
    #     got its IP (keys carry both ISNs; mc_pod_ips follows the new owner).
    nodeR = mcnet.Node("nr", subnet="10.250.51")
    old = nodeR.add_pod("old", 2)
    srv = nodeR.add_pod("srv", 3)
    d.enroll(old, old.pod_ip)
    d.enroll(srv, srv.pod_ip)
    lst = mcnet.in_netns(srv, lambda: (lambda x: (x.bind((srv.pod_ip, 7070)), x.listen(8), x)[2])(socket.socket()))
    c_old = mcnet.in_netns(old, socket.create_connection, (srv.pod_ip, 7070))
    s_old, _ = lst.accept()
    d.cli("unenroll", "--netns", old.path)          # the pod's DEL ...
    old.ip("addr", "flush", "dev", "eth0")          # ... its IP is released, its socket lives on
    new = nodeR.add_pod("new", 2)                   # same IP, new netns
    d.enroll(new, new.pod_ip)
    c_new = mcnet.in_netns(new, socket.create_connection, (srv.pod_ip, 7070))
    s_new, _ = lst.accept()
    out = {}
    exchange(c_new, s_new, b"NEW|" * 100000, b"new-reply|" * 40000, out, "new")
    exchange(c_old, s_old, b"OLD|" * 100000, b"old-reply|" * 40000, out, "old")
    ck.check(out["new"] == (True, True) and out["old"] == (True, True),
             "IP reuse: the new pod and the deleted pod's live connection each got exactly their own bytes (%s)" % out)
    ck.check(mcnet.tcp_wire_stats(c_new)["data_segs_out"] == 0 and mcnet.tcp_wire_stats(c_old)["data_segs_out"] == 0,
             "both connections kept their shortcut, each paired with its own peer")
    for x in (c_new, s_new, c_old, s_old, lst):
        x.close()

    # 3. full map: a daemon whose sockhash holds 4 sockets, 6 connections open.
    d.stop()
    d.detach()
    d2 = mcnet.Daemon(cg, "iso-small", extra=["--max-sockets", "4"])
    d2.start()
    d2.enroll(a)
    c0 = d2.counters()
    conns = []
    for i in range(6):
        conns.append(mcnet.tcp_pair(a))
    ok = True
    for i, (c, s) in enumerate(conns):
        data = streams.payload(i, 300000)
        c.sendall(data)
        ok &= streams.recv_exact(s, len(data)) == data
        s.sendall(data[::-1])
        ok &= streams.recv_exact(c, len(data)) == data[::-1]
    dc = mcnet.delta(c0, d2.counters())
    st = d2.status()
    ck.check(ok, "all 6 connections exchanged 300 kB each way with the map full")
    ck.check(st["maps"]["mc_sockhash"]["entries"] == 4, "the sockhash holds its 4 (%d)" % st["maps"]["mc_sockhash"]["entries"])
    ck.check(dc["sock_add_failed"] == 8, "the 8 other sockets were counted as add failures (%d)" % dc["sock_add_failed"])
    ck.check(dc["pairs_redirected"] == 4, "the 2 connections in the map were redirected both ways (%d)" % dc["pairs_redirected"])
    for c, s in conns:
        c.close()
        s.close()
    time.sleep(0.2)
    ck.check(d2.status()["maps"]["mc_sockhash"]["entries"] == 0, "map empty again after close")
    log("counters: %s" % {k: v for k, v in dc.items() if v})
    ck.done()


if __name__ == "__main__":
    main()
