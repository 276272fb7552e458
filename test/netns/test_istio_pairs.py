#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""netns tier, socket shortcut: an Istio-like request on one node, all three
socket pairs of the paper's Table 2 redirected.

Two pods on one bridge, each with istio-init's exact nat rules and a uid-1337
HAProxy sidecar that forwards to SO_ORIGINAL_DST (inbound upstream from
127.0.0.6). The app client in pod A talks to the app server in pod B:

  app(A) (1) -> (2) sidecar(A):15001   intra-pod, REDIRECTed: not mirror tuples
  sidecar(A) (3) -> (4) sidecar(B):15006   pod <-> pod on one node: not mirror
  sidecar(B) (5) 127.0.0.6 -> (6) app(B)   intra-pod, mirror tuples

Asserts: replies are byte-exact; each of the six sockets moved its data
without a single TCP data segment (ss -ti: no data_segs_out); the counters
saw both directions of the three pairs and the bytes per shortcut kind.

NAT port remap: conntrack rewrites the initiator's source port when the
REDIRECT's reply tuple (127.0.0.1:15001 <- podIP:p) is still held by an
earlier connection from p to another destination (TIME_WAIT): the sidecar then
sees podIP:q. The app reconnects from one bound port to a second server port
and the pair must still be redirected (sockets are paired by the initiator IP
and both ISNs, not its port).
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
APP_PORT = 8080


def role_server(ports):
    """App server (uid 65534) on PORTS: for each request (8-byte length +
    payload) answers the payload reversed, framed the same way, on one
    connection."""
    import selectors
    import threading
    import streams
    sel = selectors.DefaultSelector()
    for port in ports:
        sel.register(streams.listen_any(port), selectors.EVENT_READ)
    print("READY", flush=True)
    while True:
        for key, _ in sel.select():
            c, _ = key.fileobj.accept()
            threading.Thread(target=streams.serve_reversed, args=(c,), daemon=True).start()


def role_client(dst, sizes, port=APP_PORT, src_port=0):
    """App client: one connection (from SRC_PORT if given), a request per
    size; prints its local address, then waits for a line on stdin before
    closing (so that the test can inspect the six sockets while they are
    established)."""
    import streams
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port still in TIME_WAIT
    c.bind(("0.0.0.0", src_port))
    c.connect((dst, port))
    print("LOCAL %s %d" % c.getsockname(), flush=True)
    ok = True
    for i, n in enumerate(sizes):
        ok = streams.reversed_round_trip(c, streams.payload(i, n)) and ok
    print("RESULT %s %d" % ("ok" if ok else "BAD", sum(sizes)), flush=True)
    sys.stdin.readline()
    c.close()


def ss_data_segs(netns, local, peer):
    """data_segs_out of the socket LOCAL->PEER in NETNS, from `ss -tin` (ss
    prints the field only when it is not zero)."""
    out = subprocess.run(["ip", "netns", "exec", netns.name, "ss", "-tinH", "state", "established"],
                         capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    want = "%s:%d" % local, "%s:%d" % peer
    for i, line in enumerate(lines):
        cols = line.split()
        if len(cols) >= 4 and cols[2] == want[0] and cols[3] == want[1]:
            info = lines[i + 1] if i + 1 < len(lines) else ""
            m = re.search(r"data_segs_out:(\d+)", info)
            return int(m.group(1)) if m else 0
    raise LookupError("socket %s -> %s not found in %s" % (want[0], want[1], netns.name))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", choices=["server", "client"])
    ap.add_argument("--dst")
    ap.add_argument("--port", type=int, default=APP_PORT)
    ap.add_argument("--src-port", type=int, default=0)
    ap.add_argument("--sidecar", choices=["haproxy", "python"], default="haproxy")
    args = ap.parse_args()
    if args.role == "server":
        return role_server([APP_PORT, APP_PORT + 1])
    if args.role == "client":
        return role_client(args.dst, [64, 1024, 65536, 1 << 20, 3 << 20, 7], args.port, args.src_port)

    import mcnet
    import istio_pod
    from mcnet import log
    mcnet.require_root()
    ck = mcnet.Checks()
    cg, node, a, b, d = mcnet.enrolled_pair("istio", "10.250.30")
    pa = istio_pod.IstioPod(a.name, a.pod_ip, sidecar=args.sidecar, cgroup_procs=cg.procs).start()
    mcnet._cleanups.append(pa.stop)
    pb = istio_pod.IstioPod(b.name, b.pod_ip, sidecar=args.sidecar, cgroup_procs=cg.procs).start()
    mcnet._cleanups.append(pb.stop)
    me = ["/usr/bin/python3", os.path.abspath(__file__)]  # readable by uid 65534
    srv = pb.exec(me + ["--role", "server"], uid=65534, gid=65534, cgroup_procs=cg.procs,
                  stdout=subprocess.PIPE, text=True)
    ck.check(srv.stdout.readline().strip() == "READY", "app server in pod B listening on :8080 (uid 65534)")
    c0 = d.counters()
    cli = pa.exec(me + ["--role", "client", "--dst", b.pod_ip], cgroup_procs=cg.procs,
                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    _, ip, port = cli.stdout.readline().split()
    res = cli.stdout.readline().split()
    ck.check(res[1:2] == ["ok"],
             "6 requests (7 B - 3 MiB) through two sidecars, replies byte-exact (%s)" % " ".join(res))
    total = int(res[2])
    t2 = istio_pod.table2(pa, pb, (ip, int(port)))
    for i, (x, y) in enumerate(t2.pairs()):
        log("pair %d<->%d: %s  <->  %s" % (2 * i + 1, 2 * i + 2, x, y))
    ck.check(t2.s1.peer != (t2.s2.local[0], t2.s2.local[1]) and t2.s3.peer != t2.s4.local,
             "pairs (1,2) and (3,4) are not mirror-image tuples (Istio's REDIRECT)")
    segs = {}
    for k, (ns, s) in enumerate([(a, t2.s1), (a, t2.s2), (a, t2.s3), (b, t2.s4), (b, t2.s5), (b, t2.s6)], 1):
        segs[k] = ss_data_segs(ns, s.local, s.peer)
    ck.check(all(v == 0 for v in segs.values()),
             "all six sockets moved %d B each way with zero TCP data segments %s" % (total, segs))
    c1 = d.counters()
    dc = mcnet.delta(c0, c1)
    framed = total + 8 * 6  # request and reply headers
    ck.check(dc["pairs_redirected"] == 6, "six directions (3 pairs x 2) took the redirect (%d)" % dc["pairs_redirected"])
    ck.check(dc["bytes_redirect_node"] == 2 * framed,
             "sidecar <-> sidecar (3,4) redirected both ways: %d B (want %d)" % (dc["bytes_redirect_node"], 2 * framed))
    ck.check(dc["bytes_redirect_intra"] == 4 * framed,
             "app <-> sidecar (1,2) and (5,6) redirected both ways: %d B (want %d)"
             % (dc["bytes_redirect_intra"], 4 * framed))
    ck.check(dc["msg_pass_no_peer"] == 0 and dc["bytes_pass_sticky"] == 0, "nothing fell back to the normal path")
    cli.stdin.write("\n")
    cli.stdin.flush()
    cli.wait(10)
    time.sleep(0.5)
    st = d.status()
    ck.check(st["maps"]["mc_sockhash"]["entries"] == 0,
             "after close the six sockets left the map (%d left)" % st["maps"]["mc_sockhash"]["entries"])

    # Per-pod switches: the app's connect() to the server pod's IP is really
    # REDIRECTed to its own sidecar, so "same node off" must still leave the
    # intra-pod pairs on, and "intra-pod off" only the sidecar <-> sidecar pair.
    for flag, want_intra, want_node in (("--no-same-node", 4, 0), ("--no-intra-pod", 0, 2)):
        for p in (a, b):
            d.enroll(p, p.pod_ip, extra=(flag,))
        c0 = d.counters()
        cli = pa.exec(me + ["--role", "client", "--dst", b.pod_ip], cgroup_procs=cg.procs,
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        cli.stdout.readline()
        res = cli.stdout.readline().split()
        cli.stdin.write("\n")
        cli.stdin.flush()
        cli.wait(10)
        dc = mcnet.delta(c0, d.counters())
        ck.check(res[1:2] == ["ok"] and dc["pairs_redirected"] == want_intra + want_node
                 and (dc["bytes_redirect_node"] > 0) == (want_node > 0)
                 and (dc["bytes_redirect_intra"] > 0) == (want_intra > 0) and dc["msg_pass_disabled"] > 0,
                 "%s on both pods: %d directions redirected (intra %d B, node %d B), the rest on the normal path "
                 "by the pod's switch (%d msgs)" % (flag, dc["pairs_redirected"], dc["bytes_redirect_intra"],
                                                    dc["bytes_redirect_node"], dc["msg_pass_disabled"]))

    # NAT port remap: connection 1 from port P to the server's APP_PORT, closed
    # by the client (TIME_WAIT, conntrack too); connection 2 from P to
    # APP_PORT + 1. Both are REDIRECTed to 127.0.0.1:15001, so connection 2's
    # reply tuple is taken and conntrack gives it another source port.
    for p in (a, b):
        d.enroll(p, p.pod_ip)
    src_port = 20000 + os.getpid() % 10000

    def connect(port):
        c = pa.exec(me + ["--role", "client", "--dst", b.pod_ip, "--port", str(port), "--src-port", str(src_port)],
                    cgroup_procs=cg.procs, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        local = c.stdout.readline().split()
        return c, (local[1], int(local[2])) if len(local) == 3 else None, c.stdout.readline().split()

    def close(c):
        c.stdin.write("\n")
        c.stdin.flush()
        c.wait(10)

    cli, _, res1 = connect(APP_PORT)
    close(cli)
    c0 = d.counters()
    cli, local, res = connect(APP_PORT + 1)
    seen = [s.peer for s in pa.sockets("established") if s.local == ("127.0.0.1", pa.out_port)]
    dc = mcnet.delta(c0, d.counters())
    ex = json.loads(d.cli("conns", "--json", "--explain", "%s:%d" % local, "%s:%d" % (b.pod_ip, APP_PORT + 1)).stdout)
    close(cli)
    ck.check(res1[1:2] == ["ok"] and local == (a.pod_ip, src_port) and len(seen) == 1 and seen[0][0] == a.pod_ip
             and seen[0][1] != src_port,
             "NAT remap set up: the app connected from %s:%d again (to :%d), its sidecar sees %s (conntrack "
             "rewrote the port)" % (a.pod_ip, src_port, APP_PORT + 1, ":".join(map(str, seen[0])) if seen else seen))
    ck.check(res[1:2] == ["ok"] and dc["pairs_redirected"] == 6 and dc["msg_pass_no_peer"] == 0
             and dc["bytes_redirect_intra"] == 4 * framed and dc["bytes_redirect_node"] == 2 * framed,
             "with the initiator's port rewritten by NAT all 3 pairs were still redirected: %d directions, "
             "intra %d B, node %d B, no-peer sends %d (reply %s)"
             % (dc["pairs_redirected"], dc["bytes_redirect_intra"], dc["bytes_redirect_node"],
                dc["msg_pass_no_peer"], " ".join(res)))
    ck.check(ex["accelerated"] and seen and ex.get("responder") == "127.0.0.1:%d -> %s:%d" % (pa.out_port, *seen[0])
             and any(w.startswith("NAT rewrote the initiator's port") for w in ex["why"]),
             "conns --explain finds the pair and says NAT rewrote the port (responder %s)" % ex.get("responder"))
    mcnet.check_conns_source(ck, d, [ex.get("source")])
    ck.done()


if __name__ == "__main__":
    sys.exit(main())
