#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""netns tier, socket shortcut: isolation (invariant 3) and bounded maps.

  1. Two enrolled pods run identical loopback tuples at the same time
     (127.0.0.1:P <- 127.0.0.1:Q, and 127.0.0.6:Q' -> 127.0.0.1:P) and never
     see each other's bytes; both are redirected.
  1b. The same with identical ISNs as well (the key has no port but both
     ISNs): a pod can choose them with TCP_REPAIR and syncookies (recipe at
     identical_isns); only the key's scope keeps the pods apart.
  2. A process outside any enrolled pod (its own netns, same cgroup) is never
     inserted: sock_not_enrolled counts it, it crosses TCP, the map stays empty.
  3. A full sockhash means fall back, counted, never an error to the app.
"""
import json
import os
import socket
import struct
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


# 1b. Identical ISNs too. Keys carry no port but both ISNs, so two pods'
#     loopback connections share a key whenever their ISNs match; only the
#     scope (netns cookie) keeps them apart. A pod with CAP_NET_ADMIN in its
#     netns can choose both ISNs:
#   - its own (the initiator's): a raw IPPROTO_TCP socket sends the SYN with
#     seq S, then a TCP_REPAIR socket takes the connection over with
#     TCP_QUEUE_SEQ S+1 (send) and C+1 (receive); connect() under repair sends
#     nothing, tcp_connect() -> tcp_finish_connect() fires
#     BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB with snd_nxt S+1, rcv_nxt C+1;
#   - the responder's: with net.ipv4.tcp_syncookies=2 (per netns) the SYN-ACK's
#     C is a syncookie, a keyed hash of the 4-tuple, S, the MSS index and the
#     minute; the key (syncookie_secret) is one for the whole kernel, so two
#     netns answer the same SYN with the same C in the same minute (asserted
#     below, retried at a minute boundary). No request socket is kept, so the
#     kernel's RST to the SYN-ACK (nothing owns port 40404 yet) is ignored by
#     the listener; the raw socket's ACK (seq S+1, ack C+1) passes the cookie
#     check and the child fires BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB with
#     snd_nxt C+1, rcv_nxt S+1.
#     Order: A connects, B connects, B's child, A's child. Without the scope
#     the second insert of each key fails (BPF_NOEXIST) and A's client pairs
#     with B's server (and B's server with A's client): a real cross-pod leak,
#     not just a fallback. With it, four inserts, four redirected directions.
TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ, TCP_REPAIR_WINDOW = 19, 20, 21, 29
TCP_RECV_QUEUE, TCP_SEND_QUEUE = 1, 2
TCP_REPAIR_OFF_NO_WP = -1  # leave repair without a window probe
SO_NETNS_COOKIE = 71
TH_SYN, TH_ACK = 0x02, 0x10
REPAIR_ISN = 0x5EED1500  # the initiator's ISN both pods choose
_LO = socket.inet_aton("127.0.0.1")


def _tcp_segment(sport, dport, seq, ack, flags, win=65535):
    """A bare TCP header (no options) from and to 127.0.0.1, checksummed."""
    h = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, win, 0, 0)
    pseudo = _LO + _LO + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(h)) + h
    s = sum(struct.unpack("!%dH" % (len(pseudo) // 2), pseudo))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return h[:16] + struct.pack("!H", ~s & 0xFFFF) + h[18:]


def _u32(v):
    return struct.pack("I", v & 0xFFFFFFFF)


def _queue_seqs(sock):
    """(send queue seq, receive queue seq) read back under TCP_REPAIR: before
    any data these are snd_nxt and rcv_nxt, i.e. own ISN+1 and peer ISN+1."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    out = []
    for q in (TCP_SEND_QUEUE, TCP_RECV_QUEUE):
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, q)
        out.append(sock.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ) & 0xFFFFFFFF)
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
    return tuple(out)


class RepairedConn:
    """One pod's hand-made loopback connection 127.0.0.1:CLI_PORT -> :SRV_PORT
    with initiator ISN REPAIR_ISN and a syncookie responder ISN."""

    def __init__(self, ns):
        self.ns = ns

        def setup():
            self.lst = socket.socket()
            self.lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.lst.bind(("127.0.0.1", SRV_PORT))
            self.lst.listen(4)
            self.lst.settimeout(5)
            self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
            self.raw.bind(("127.0.0.1", 0))
            self.raw.settimeout(5)

        mcnet.in_netns(ns, setup)

    def syn(self):
        """Sends the SYN; returns the responder's ISN from its SYN-ACK."""
        self.raw.sendto(_tcp_segment(CLI_PORT, SRV_PORT, REPAIR_ISN, 0, TH_SYN), ("127.0.0.1", 0))
        while True:
            pkt = self.raw.recv(512)
            ihl = (pkt[0] & 0xF) * 4
            sp, dp, seq, ack, _, fl = struct.unpack_from("!HHIIBB", pkt, ihl)
            if sp == SRV_PORT and dp == CLI_PORT and fl & (TH_SYN | TH_ACK) == TH_SYN | TH_ACK:
                if ack != (REPAIR_ISN + 1) & 0xFFFFFFFF:
                    raise RuntimeError("SYN-ACK acks %#x, not our SYN" % ack)
                self.isn_resp = seq
                return seq

    def connect(self):
        """The client side: a repaired socket that takes over the connection
        (fires ACTIVE_ESTABLISHED, sends nothing)."""

        def mk():
            c = socket.socket()
            c.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
            c.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
            c.setsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, _u32(REPAIR_ISN + 1))
            c.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
            c.setsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, _u32(self.isn_resp + 1))
            c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            c.bind(("127.0.0.1", CLI_PORT))
            c.connect(("127.0.0.1", SRV_PORT))
            # A window, so that the normal path could carry bytes too (the
            # server's side gets 65535 from the ACK below; no window scaling).
            rcv = (self.isn_resp + 1) & 0xFFFFFFFF
            c.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_WINDOW, struct.pack("5I", rcv, 65535, 65535, 65535, rcv))
            return c

        self.c = mcnet.in_netns(self.ns, mk)

    def ack(self):
        """The handshake's last ACK from the raw socket: the listener's cookie
        check creates the child (PASSIVE_ESTABLISHED)."""
        self.raw.sendto(_tcp_segment(CLI_PORT, SRV_PORT, REPAIR_ISN + 1, (self.isn_resp + 1) & 0xFFFFFFFF, TH_ACK),
                        ("127.0.0.1", 0))
        self.s, _ = self.lst.accept()
        self.c.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
        self.raw.close()
        self.lst.close()

    def observed(self):
        """What each side holds: addresses and both queue sequence numbers."""
        return [(x.getsockname(), x.getpeername(), _queue_seqs(x)) for x in (self.c, self.s)]

    def close(self):
        for x in (self.c, self.s):
            x.close()


def _send_quietly(sock, data):
    try:
        sock.sendall(data)
    except OSError:
        pass  # the receiving side reports what arrived


def _recv_upto(sock, n, out, key):
    """Up to N bytes, until EOF or the socket's timeout; OUT[KEY] = the bytes."""
    buf = bytearray()
    try:
        while len(buf) < n:
            b = sock.recv(min(1 << 20, n - len(buf)))
            if not b:
                break
            buf += b
    except OSError:
        pass
    out[key] = bytes(buf)


def identical_isns(ck, d):
    pods = [mcnet.Netns("ra"), mcnet.Netns("rb")]
    for p in pods:
        d.enroll(p)
        p.run("sysctl", "-q", "-w", "net.ipv4.tcp_syncookies=2")
    ra, rb = conns = [RepairedConn(p) for p in pods]
    for _ in range(3):  # the cookie changes each minute: both SYNs in one minute
        if ra.syn() == rb.syn():
            break
        time.sleep(1)
    c0 = d.counters()
    ra.connect()
    rb.connect()
    rb.ack()
    ra.ack()
    dc = mcnet.delta(c0, d.counters())
    obs = [rc.observed() for rc in conns]
    want_c = (("127.0.0.1", CLI_PORT), ("127.0.0.1", SRV_PORT), (REPAIR_ISN + 1, (ra.isn_resp + 1) & 0xFFFFFFFF))
    want_s = (want_c[1], want_c[0], want_c[2][::-1])
    ck.check(obs[0] == obs[1] == [want_c, want_s],
             "pods A and B hold identical connections, ISNs included: client %s:%d isn+1 %#x, server :%d isn+1 %#x "
             "(read back under TCP_REPAIR: A %s, B %s)"
             % (want_c[0][0], CLI_PORT, REPAIR_ISN + 1, SRV_PORT, want_c[2][1],
                [tuple("%#x" % v for v in o[2]) for o in obs[0]], [tuple("%#x" % v for v in o[2]) for o in obs[1]]))
    ck.check(dc["sock_added_active"] == 2 and dc["sock_added_passive"] == 2 and dc["sock_add_failed"] == 0,
             "identical keys but for the scope: 4 sockets inserted (active +%d, passive +%d, add_failed +%d)"
             % (dc["sock_added_active"], dc["sock_added_passive"], dc["sock_add_failed"]))
    cookies = [rc.c.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8) for rc in conns]
    cookies = [struct.unpack("Q", x)[0] for x in cookies]
    mine = [x for x in json.loads(d.cli("conns", "--json").stdout)
            if x["client"] == "127.0.0.1:%d -> 127.0.0.1:%d" % (CLI_PORT, SRV_PORT) and x["client_netns"] in cookies]
    ck.check(len(mine) == 2 and all(x["paired"] and x["server_netns"] == x["client_netns"] for x in mine)
             and sorted(x["client_netns"] for x in mine) == sorted(cookies),
             "meshcutd conns: each pod's client paired with the server in its own netns (%s)"
             % [(x["client_netns"], x["server_netns"], x["paired"]) for x in mine])

    c0 = d.counters()
    sent = {}
    for key, seed in (("A", 11), ("B", 22)):
        sent[key] = {"up": streams.payload(seed, 1 << 20), "down": streams.payload(seed + 1, 1 << 20)}
    got = {}
    ts = []
    for key, rc in (("A", ra), ("B", rb)):
        for x in (rc.c, rc.s):
            x.settimeout(3)  # a leak must fail, not hang
        for way, tx, rx in (("up", rc.c, rc.s), ("down", rc.s, rc.c)):
            ts.append(threading.Thread(target=_send_quietly, args=(tx, sent[key][way])))
            ts.append(threading.Thread(target=_recv_upto, args=(rx, 1 << 20, got, (key, way))))
    for t in ts:
        t.start()
    for t in ts:
        t.join()

    def whose(data, way):
        """Whose payloads DATA holds (each is random: its first 32 bytes tell)."""
        return "+".join(k for k in sent if sent[k][way][:32] in data) or "-"

    ok = all(got[(k, w)] == sent[k][w] for k in sent for w in ("up", "down"))
    ck.check(ok, "identical ISNs: each pod got exactly its own 1 MiB each way, compared byte for byte (%s)"
             % ", ".join("%s %s: %d B from %s, %s" % (
                 k, w, len(got[(k, w)]), whose(got[(k, w)], w),
                 "match" if got[(k, w)] == sent[k][w] else "MISMATCH") for k in sent for w in ("up", "down")))
    dc = mcnet.delta(c0, d.counters())
    wires = [mcnet.tcp_wire_stats(x)["data_segs_out"] for rc in conns for x in (rc.c, rc.s)]
    ck.check(dc["pairs_redirected"] == 4 and all(w == 0 for w in wires),
             "identical ISNs: all 4 directions redirected (pairs_redirected +%d, TCP data segments %s)"
             % (dc["pairs_redirected"], wires))
    for rc in conns:
        rc.close()
    for p in pods:
        d.cli("unenroll", "--netns", p.path)
        p.remove()


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

    # 1b. identical ISNs too (TCP_REPAIR + syncookies)
    identical_isns(ck, d)

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
