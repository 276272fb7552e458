#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""netns tier, cross-node shortcut: coexistence (invariant 6) and re-checks.

Another agent's tc filter (foreign_tc.bpf.c: drops TCP to port 9, passes the
rest on) sits before meshcut's on a pod's host veth and on the overlay device,
and a third one after meshcut's (tc's default priority 49152: drops TCP and UDP
to port 10): all keep running in their order (ports 9 and 10 stay blocked, the
rest is still shortcut), since meshcut returns TC_ACT_UNSPEC for what it does
not take. meshcutd puts back its own filters when another agent removes them,
and `meshcutd detach` removes only its own.
"""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcnet  # noqa: E402
from mctest import abi  # noqa: E402
import streams  # noqa: E402
import twonode  # noqa: E402

FOREIGN = os.path.join(mcnet.BUILD, "bpf", "mc_foreign_tc.bpf.o")
FOREIGN_AFTER = os.path.join(mcnet.BUILD, "bpf", "mc_foreign_tc_after.bpf.o")  # drops TCP and UDP to port 10
OURS = abi.TC_OURS


def filters(node, dev):
    return node.run("tc", "filter", "show", "dev", dev, "ingress", check=False).stdout


def main():
    mcnet.require_root()
    ck = mcnet.Checks()
    cg = mcnet.Cgroup("coexist")
    cg.join()
    quiet = mcnet.Cgroup("coexist-d")  # sockops elsewhere: measure tc alone
    cl = twonode.Cluster(cg, daemon_cgroup=quiet, daemon_extra=[
        "--pod-cidr", "10.244.0.0/16", "--overlay-dev", "flannel.1", "--recheck-interval", "1"]).up()
    n1, n2 = cl.nodes["n1"], cl.nodes["n2"]
    c1 = cl.add_pod("n1", "c1")
    s2 = cl.add_pod("n2", "s2")
    for node, dev in ((n1, c1.host_veth), (n2, "flannel.1")):
        node.run("tc", "filter", "add", "dev", dev, "ingress", "prio", "1", "handle", "1", "bpf", "da",
                 "obj", FOREIGN, "sec", "tc")
        node.run("tc", "filter", "add", "dev", dev, "ingress", "prio", "49152", "handle", "2", "bpf", "da",
                 "obj", FOREIGN_AFTER, "sec", "tc")
    lst = twonode.listen_tcp(s2.ns, s2.ip, 8080)
    blk = twonode.listen_tcp(s2.ns, s2.ip, 9)
    blk10 = twonode.listen_tcp(s2.ns, s2.ip, 10)

    def exchange():
        c = mcnet.in_netns(c1.ns, socket.create_connection, (s2.ip, 8080), 5)
        s, _ = lst.accept()
        data = streams.payload(1, 1 << 20)
        t = threading.Thread(target=c.sendall, args=(data,))
        t.start()
        ok = streams.recv_exact(s, len(data)) == data
        t.join()
        t = threading.Thread(target=s.sendall, args=(data[::-1],))
        t.start()
        ok = ok and streams.recv_exact(c, len(data)) == data[::-1]
        t.join()
        c.close()
        s.close()
        return ok

    c0 = (n1.counters(), n2.counters())
    ok = exchange()
    d1, d2 = mcnet.delta(c0[0], n1.counters()), mcnet.delta(c0[1], n2.counters())
    ck.check(ok and d1["tc_redirect_overlay"] > 0 and d2["tc_redirect_peer"] > 0,
             "with another agent's filter first, meshcut's still runs after it and shortcuts (n1 overlay +%d, "
             "n2 peer +%d)" % (d1["tc_redirect_overlay"], d2["tc_redirect_peer"]))
    try:
        mcnet.in_netns(c1.ns, socket.create_connection, (s2.ip, 9), 1).close()
        blocked = False
    except OSError:
        blocked = True
    ck.check(blocked, "and the other agent's filter still runs first (TCP to port 9 dropped)")
    try:
        mcnet.in_netns(c1.ns, socket.create_connection, (s2.ip, 10), 1).close()
        blocked10 = False
    except OSError:
        blocked10 = True

    def udp_got(port):
        r = mcnet.in_netns(s2.ns, socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
        r.bind((s2.ip, port))
        r.settimeout(0.5)
        u = mcnet.in_netns(c1.ns, socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(3):
            u.sendto(b"x" * 32, (s2.ip, port))
        try:
            got = len(r.recv(64)) > 0
        except OSError:
            got = False
        u.close()
        r.close()
        return got

    u10, u11 = udp_got(10), udp_got(11)
    ck.check(blocked10 and not u10 and u11,
             "the filter after meshcut's still sees what meshcut passes on: the handshake to TCP port 10 and UDP "
             "to port 10 dropped there (tcp %s, udp %s), UDP to port 11 delivered (%s)"
             % ("dropped" if blocked10 else "CONNECTED", "delivered" if u10 else "dropped", u11))
    f = filters(n1, c1.host_veth)
    ck.check("pref 1 " in f and all(x in f for x in OURS) and "pref 49152 " in f,
             "the three filters on the pod veth, in their order")

    for node, dev, what in ((n2, "flannel.1", "overlay device"), (n1, c1.host_veth, "pod veth")):
        node.run("tc", "filter", "del", "dev", dev, "ingress", *abi.TC_DEL_ARGS)
        gone = not all(x in filters(node, dev) for x in OURS)
        deadline = time.time() + 5
        while time.time() < deadline and not all(x in filters(node, dev) for x in OURS):
            time.sleep(0.1)
        back = all(x in filters(node, dev) for x in OURS)
        ck.check(gone and back and "attached again" in open(node.daemon.logfile).read(),
                 "meshcut's filter removed from the %s by another agent: meshcutd put it back (logged)" % what)
    ck.check(exchange(), "traffic still flows after the re-attach")

    for node in (n1, n2):
        node.daemon.stop()
        node.daemon.detach()
    ck.check(not any(x in filters(n2, "flannel.1") for x in OURS) and "pref 1 " in filters(n2, "flannel.1")
             and "pref 1 " in filters(n1, c1.host_veth) and not any(x in filters(n1, c1.host_veth) for x in OURS),
             "meshcutd detach removed only its own filters; the other agent's stay")
    ck.done()


if __name__ == "__main__":
    main()
