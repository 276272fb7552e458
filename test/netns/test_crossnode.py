#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""netns tier, cross-node tc shortcut (issue 4) and NAT safety (invariant 4),
on a two-node cluster in namespaces (twonode.py: VXLAN overlay like flannel,
pods through bridge + host-local + meshcut, kube-proxy-like services).

  1. direct pod(n1) -> pod(n2) TCP to the pod IP: N connections (mixed modes
     from test_integrity: normal, half-close, slow accept, slow reader, RST,
     first-bytes race), random sizes 1 B - 1 MiB both ways, checksummed; long
     streams both ways at once, initiated from both nodes; no SNAT on the way.
  2. NAT cases, across nodes and on one node: ClusterIP TCP, UDP DNS through a
     ClusterIP (reply source = the ClusterIP), NodePort from outside (DNAT +
     masquerade), pod -> outside with masquerade (server sees the node IP).
  3. Per case, per node: the meshcutd tc_* counters and the packet/byte
     counters of cni0 and flannel.1, as deltas.

  --shortcut off (default): correctness, plus "nothing was redirected" and
      "the bridge carried the data" (proves the bridge counters measure what
      the `on` assertions rely on).
  --shortcut on: also the direct case took the shortcut on both nodes
      (redirect counters, cni0 carried ~no data bytes), and every NAT case was
      passed on the node holding the translation (no redirect there, pass
      counters by reason) while still working.
  --no-meshcut: the plain kernel path (meshcut not chained, no meshcutd).
  --no-sockops: meshcutd's sockops on an empty cgroup (only tc acts; else the
      socket shortcut carries the same-node ClusterIP data).
  --ct-liberal: kube-proxy with conntrack.tcpBeLiberal (no INVALID drop rule).

Every case also checks that kube-proxy's `--ctstate INVALID -j DROP` dropped
nothing: a shortcut that hides a flow's middle from conntrack makes its later
normal-path packets (FIN, RST) out-of-window, hence dropped.
"""
import argparse
import json
import os
import random
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcnet  # noqa: E402
import streams  # noqa: E402
import test_integrity as ti  # noqa: E402
import twonode  # noqa: E402
from mcnet import log  # noqa: E402

# --- names the tc programs count under (keep in step with bpf/include/meshcut_kern_user.h) --
C = {
    "redirect_overlay": "tc_redirect_overlay",    # pod veth ingress -> overlay device (bpf_redirect)
    "redirect_neigh": "tc_redirect_neigh",        # same, neighbour unresolved (bpf_redirect_neigh)
    "redirect_peer": "tc_redirect_peer",          # overlay ingress -> into the pod (bpf_redirect_peer)
    "redirect_local": "tc_redirect_local",        # pod veth -> pod on the same node (bpf_redirect_peer)
    "pass_not_ip": "tc_pass_not_ip",              # ARP, IPv6, short frame
    "pass_fragment": "tc_pass_fragment",
    "pass_not_tcp": "tc_pass_not_tcp",            # UDP (DNS), ICMP
    "pass_not_pod": "tc_pass_not_pod",            # an end outside the pod CIDR: ClusterIP, NodePort, outside
    "pass_no_pod": "tc_pass_no_pod",              # no pod record / crossNode off for the pod
    "pass_unknown_flow": "tc_pass_unknown_flow",  # flow not seen starting between pod IPs here (maybe NATed)
    "pass_fib": "tc_pass_fib",                    # no route via the overlay device
    "pass_disabled": "tc_pass_disabled",          # node switch off
    "flow_rst": "tc_flow_rst",                    # RST ended a flow (and took the shortcut)
}
REDIRECTS = ("redirect_overlay", "redirect_neigh", "redirect_peer", "redirect_local")
TO_OVERLAY = ("redirect_overlay", "redirect_neigh")

# How each mode is switched: the plugin's crossNode and meshcutd's args. `off`
# differs from `on` only by the node switch.
# The objectives' routing (issue 15) rides along: a service file (filled once
# the pods exist) and the API, each daemon on its node's own loopback.
SVC_FILE = "/tmp/mc-xnode-services-%d.json" % os.getpid()
OBJ_API = "127.0.0.1:9465"
SHORTCUT_ARGS = ["--pod-cidr", twonode.CLUSTER_CIDR, "--overlay-dev", twonode.VXLAN_DEV,
                 "--services", SVC_FILE, "--api-addr", OBJ_API]
MODES = {
    "off": {"cross_node": True, "daemon_args": SHORTCUT_ARGS + ["--cross-node", "off"]},
    "on": {"cross_node": True, "daemon_args": SHORTCUT_ARGS + ["--cross-node", "on"]},
}

# With the shortcut on, the direct case may still send connection setup and
# teardown over the bridge; data bytes must not: cni0 bytes <= this share of
# the payload bytes.
BRIDGE_BYTES_MAX_SHARE = 0.02

# NAT cases: name -> node holding the translation, and which pass reasons
# must have counted there (any of them > 0) with the shortcut on.
NAT_PASS_REASONS = {
    # replies s2 -> c1 reach n1's overlay as pod -> pod TCP: only n1's conntrack can undo the DNAT
    "clusterip-x-12": ("pass_unknown_flow",),
    "clusterip-x-21": ("pass_unknown_flow",),
    # the request leaves the client's veth to the ClusterIP; the reply leaves the server's veth pod -> pod
    "clusterip-same-n2": ("pass_not_pod", "pass_unknown_flow"),
    "clusterip-same-n1": ("pass_not_pod", "pass_unknown_flow"),
    "dns-x": ("pass_not_tcp",),
    "dns-same": ("pass_not_tcp",),
    # the masqueraded source is the node's flannel.1 / cni0 address, inside the pod CIDR
    "nodeport-x": ("pass_unknown_flow", "pass_no_pod", "pass_not_pod"),
    "nodeport-same": ("pass_unknown_flow", "pass_no_pod", "pass_not_pod"),
    "masq-n1": ("pass_not_pod",),
    "masq-n2": ("pass_not_pod",),
}

SVC_WEB = "10.96.0.10"     # -> s2 (n2)
SVC_WEB_N1 = "10.96.0.11"  # -> s1 (n1)
SVC_DNS = "10.96.0.53"     # -> dns pod (n2), UDP 53
NODE_PORT = 30080
SRV_PORT = 8080
EXT_PORT = 9000
DNS_ANSWER = "10.96.0.10"


def cget(counters, key):
    return counters.get(C[key], 0)


class Case:
    """Snapshots the counters around a case and prints the deltas."""

    def __init__(self, cl, name):
        self.cl, self.name = cl, name

    def __enter__(self):
        log("--- %s" % self.name)
        time.sleep(0.05)
        self.before = self.cl.snapshot()
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        time.sleep(0.2)  # closing handshakes finish before the snapshot
        self.delta = self.cl.delta(self.cl.snapshot(), self.before)
        log("%s: %.1fs; counter deltas:\n%s" % (self.name, time.monotonic() - self.t0,
                                                self.cl.format_delta(self.delta)))
        return False

    def ctr(self, node, key):
        return cget(self.delta[node]["counters"], key)

    def link(self, node, dev, k):
        return self.delta[node]["links"].get(dev, {}).get(k, 0)


def counters_present(ck, cl, keys):
    """With the shortcut on, a counter name the daemon does not report is a
    failure with its name (not a silent 0)."""
    for n in cl.nodes.values():
        have = n.counters()
        missing = [C[k] for k in keys if C[k] not in have]
        ck.check(not missing, "%s: meshcutd reports the counters %s (missing %s; it has %s)"
                 % (n.name, [C[k] for k in keys], missing, sorted(k for k in have if k.startswith("tc_"))))


def common_asserts(ck, args, case, nat_node=None):
    """Counter assertions for a finished case (some depend on the mode)."""
    inv = {n: case.delta[n]["counters"].get("ct_invalid_dropped", 0) for n in case.delta}
    ck.check(not any(inv.values()), "%s: no packet dropped by kube-proxy's conntrack INVALID rule (%s)"
             % (case.name, inv))
    if args.no_meshcut:
        return
    if args.shortcut == "off":
        red = {n: sum(case.ctr(n, k) for k in REDIRECTS) for n in case.delta}
        ck.check(not any(red.values()), "%s: shortcut off, nothing redirected (%s)" % (case.name, red))
        return
    if nat_node is None:
        return
    red = {C[k]: case.ctr(nat_node, k) for k in REDIRECTS}
    ck.check(not any(red.values()), "%s: nothing redirected on %s, the node holding the translation (%s)"
             % (case.name, nat_node, red))
    reasons = {C[k]: case.ctr(nat_node, k) for k in NAT_PASS_REASONS[case.name]}
    ck.check(any(v > 0 for v in reasons.values()), "%s: %s passed it to the stack, counted by reason (%s)"
             % (case.name, nat_node, reasons))


# --- 1. direct pod <-> pod across nodes ------------------------------------------

def case_direct(ck, args, cl, pods):
    c1, s1, c2, s2 = pods["c1"], pods["s1"], pods["c2"], pods["s2"]
    with Case(cl, "direct-integrity") as case:
        rng = random.Random(4242)
        results = ti.Results()
        threads0 = threading.active_count()
        servers = {m: ti.Server(s2.ns, s2.ip, m, results) for m in ti.MODES}
        fix_race_rule(s2, servers["race"].addr[1])
        weights = {"normal": 0.70, "halfclose": 0.10, "slowaccept": 0.04, "slowreader": 0.03, "rst": 0.10,
                   "race": 0.03}
        jobs = [(rng.choices(list(weights), list(weights.values()))[0], rng.randrange(1 << 30))
                for _ in range(args.conns)]
        t0 = time.monotonic()
        ti.run_batch(c1.ns, servers, jobs, results)
        dt = time.monotonic() - t0
        for s in servers.values():
            s.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept loop (close alone does not)
            s.sock.close()
        # The servers' side ends later (an RST-mode server waits up to 5 s for
        # the client's RST): wait for every server thread, so that its errors
        # count here and its last packets fall in this case.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and threading.active_count() > threads0:
            time.sleep(0.05)
        ck.check(threading.active_count() <= threads0, "every server connection of the batch ended (%d left, "
                 "%.1fs after the clients)" % (threading.active_count() - threads0, time.monotonic() - t0 - dt))
        ck.check(not results.errors and results.done == args.conns,
                 "direct c1(n1) -> s2(n2) %s: %d/%d connections checksummed both ways in %.1fs (errors: %s)"
                 % (s2.ip, results.done, args.conns, dt, results.errors[:3]))
        for mode, ds in sorted(results.durations.items()):
            log("  %-10s n=%4d  p50 %.1f ms  p99 %.1f ms  max %.1f ms" % (
                mode, len(ds), 1e3 * ti.statistics.median(ds), 1e3 * ti.pct(ds, 99), 1e3 * max(ds)))
        slow = sum(1 for m in ("normal", "halfclose") for x in results.durations.get(m, []) if x >= 0.2)
        ck.check(slow <= max(1, args.conns // 100), "no 200 ms tails at EOF: %d transfers >= 200 ms" % slow)
    common_asserts(ck, args, case)
    assert_shortcut(ck, args, case, results.sent_bytes)

    with Case(cl, "direct-long-streams") as case:
        sts = []
        total = args.stream_mib << 20
        for i, (cli, srv) in enumerate([(c1, s2), (c1, s2), (c2, s1), (c2, s1)]):
            lst = twonode.listen_tcp(srv.ns, srv.ip)
            c = mcnet.in_netns(cli.ns, socket.create_connection, lst.getsockname())
            s, _ = lst.accept()
            lst.close()
            sts.append((cli, srv, streams.LongStream(c, s, 7000 + i, total).run(pause=0.0)))
        ok = [st.join(120) for _, _, st in sts]
        ck.check(all(ok), "4 long streams (2 from n1, 2 from n2) x %d MiB each way at once, intact (%s)"
                 % (args.stream_mib, [st.err for _, _, st in sts if st.err]))
        for _, _, st in sts:
            st.c.close()
            st.s.close()
    common_asserts(ck, args, case)
    assert_shortcut(ck, args, case, 4 * 2 * total)

    with Case(cl, "direct-no-snat") as case:
        srv = twonode.RRServer(s2.ns, s2.ip, SRV_PORT + 1)
        res, errs = twonode.parallel(c1.ns, list(range(10)), lambda i: twonode.rr_client(srv.addr, i, 1000, 5000))
        peers = sorted({r[0][0] for r in res if r})
        ck.check(not errs and peers == [c1.ip], "pod -> pod across nodes is not masqueraded: the server sees %s "
                 "(client pod %s; errors %s)" % (peers, c1.ip, errs[:2]))
        srv.close()
    common_asserts(ck, args, case)


def fix_race_rule(pod, port):
    """test_integrity's race server drops every pure ACK to its port at the
    server: fine when the data bypasses TCP (sockmap), but over the wire the
    client's ACKs of the reply are lost too and a large reply stalls. Drop
    only the handshake's final ACK (the 2nd packet of the connection)."""
    spec = ["INPUT", "-p", "tcp", "--dport", str(port), "--tcp-flags", "ALL", "ACK", "-m", "length",
            "--length", "0:64"]
    pod.ns.run("iptables", "-D", *spec, "-j", "DROP")
    pod.ns.run("iptables", "-I", *spec, "-m", "connbytes", "--connbytes", "2:2", "--connbytes-dir", "original",
               "--connbytes-mode", "packets", "-j", "DROP")


def assert_shortcut(ck, args, case, payload_bytes):
    """The direct case: the bridge carried the data (off) / did not (on)."""
    br = {n: case.link(n, twonode.BRIDGE, "rx_bytes") + case.link(n, twonode.BRIDGE, "tx_bytes") for n in case.delta}
    vx = {n: case.link(n, twonode.VXLAN_DEV, "rx_bytes") + case.link(n, twonode.VXLAN_DEV, "tx_bytes")
          for n in case.delta}
    ck.check(all(v >= payload_bytes for v in vx.values()),
             "%s: flannel.1 carried the payload on both nodes (%s B, payload %d B)" % (case.name, vx, payload_bytes))
    if args.shortcut == "off":
        ck.check(all(v >= payload_bytes for v in br.values()),
                 "%s: without the shortcut cni0 carried the payload on both nodes (%s B)" % (case.name, br))
        if not args.no_meshcut:
            seen = {n: sum(v for k, v in case.delta[n]["counters"].items() if k.startswith("tc_"))
                    for n in case.delta}
            ck.check(all(v > 0 for v in seen.values()),
                     "%s: the tc programs ran and passed the packets (%s on each node: %s)"
                     % (case.name, C["pass_disabled"], {n: case.ctr(n, "pass_disabled") for n in case.delta}))
        return
    counters_present(ck, case.cl, TO_OVERLAY + ("redirect_peer",))
    for n in sorted(case.delta):
        ro, rp = sum(case.ctr(n, k) for k in TO_OVERLAY), case.ctr(n, "redirect_peer")
        ck.check(ro > 0 and rp > 0, "%s: %s shortcut both ways (to the overlay %d, into the pod %d)"
                 % (case.name, n, ro, rp))
        ck.check(br[n] <= BRIDGE_BYTES_MAX_SHARE * payload_bytes,
                 "%s: %s's bridge saw no data (cni0 %d B for %d B of payload, max %.0f %%; %d packets)"
                 % (case.name, n, br[n], payload_bytes, 100 * BRIDGE_BYTES_MAX_SHARE,
                    case.link(n, twonode.BRIDGE, "rx_packets") + case.link(n, twonode.BRIDGE, "tx_packets")))


# --- 2. NAT cases ---------------------------------------------------------------

def rr_case(ck, args, cl, name, client_ns, addr, expect_peer, nat_node, n=20, view=None):
    """N request/responses from CLIENT_NS to ADDR, random sizes, checksummed;
    the server must have seen EXPECT_PEER as source; the client's view of
    its peer must be VIEW (default ADDR)."""
    rng = random.Random(name)
    jobs = [(rng.randrange(1 << 30), rng.randint(4, 64 << 10), int(2 ** rng.uniform(0, 19))) for _ in range(n)]
    with Case(cl, name) as case:
        res, errs = twonode.parallel(client_ns, jobs, lambda j: twonode.rr_client(addr, *j))
        seen = sorted({r[0][0] for r in res if r})
        views = sorted({r[1] for r in res if r})
        ck.check(not errs and all(res), "%s: %d/%d request/responses to %s:%d checksummed (errors %s)"
                 % (name, sum(1 for r in res if r), n, addr[0], addr[1], errs[:2]))
        ck.check(seen == [expect_peer], "%s: the server saw source %s (expected %s)" % (name, seen, expect_peer))
        ck.check(views == [view or tuple(addr)], "%s: replies came from %s as the client sees it" % (name, views))
    common_asserts(ck, args, case, nat_node)
    return case


def dns_case(ck, args, cl, name, client, nat_node, n=40):
    with Case(cl, name) as case:
        def one(i):
            return twonode.dns_query((SVC_DNS, 53), "web.default.svc.cluster.local", rng=random.Random(i))

        res, errs = twonode.parallel(client.ns, list(range(n)), one)
        # a few more on one socket (one conntrack entry, many replies)
        def burst():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                return [twonode.dns_query((SVC_DNS, 53), "db.default.svc.cluster.local", sock=s,
                                          rng=random.Random(1000 + i)) for i in range(10)]
            finally:
                s.close()
        try:
            res += mcnet.in_netns(client.ns, burst)
        except Exception as e:
            errs.append("burst: %r" % e)
        srcs = sorted({r[0] for r in res if r})
        answers = sorted({r[1] for r in res if r})
        ck.check(not errs and len([r for r in res if r]) == n + 10,
                 "%s: %d/%d DNS queries from %s to %s:53 answered (errors %s)"
                 % (name, len([r for r in res if r]), n + 10, client.name, SVC_DNS, errs[:2]))
        ck.check(srcs == [(SVC_DNS, 53)] and answers == [DNS_ANSWER],
                 "%s: every reply's source is the ClusterIP %s:53 as the client sees it (%s), answer %s"
                 % (name, SVC_DNS, srcs, answers))
    common_asserts(ck, args, case, nat_node)


# --- routed by the objectives' connect4 across nodes -----------------------------

SVC_ROUTED = "10.97.0.10"  # no kube-proxy rule: only meshcut's routing reaches its endpoints
ROUTED_CLIENT = """
import sys
sys.path.insert(0, sys.argv[1])
import twonode
ok = 0
for i in range(int(sys.argv[4])):
    (peer, _), view = twonode.rr_client((sys.argv[2], int(sys.argv[3])), i, 1000, 20000)
    ok += 1
print(ok, view[0])
"""


def write_services(endpoints):
    def ep(ip, pod):
        return {"addresses": [ip], "targetRef": {"name": pod}}

    doc = {"apiVersion": "v1", "kind": "List", "items": [
        {"kind": "Service", "metadata": {"name": "routed", "namespace": "default"},
         "spec": {"clusterIP": SVC_ROUTED, "ports": [{"port": 80, "targetPort": SRV_PORT}]}},
        {"kind": "EndpointSlice", "addressType": "IPv4", "ports": [{"port": SRV_PORT}],
         "metadata": {"name": "routed-a", "namespace": "default",
                      "labels": {"kubernetes.io/service-name": "routed"}},
         "endpoints": [ep(ip, name) for name, ip in endpoints]}]}
    tmp = SVC_FILE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, SVC_FILE)


def case_routed(ck, args, cl, pods, cg, n=20):
    """The sidecar (uid 1337) of c1 (n1) connects to s1 (n1), an endpoint of a
    managed service whose table sends everything to s2 (n2): the connection
    is rewritten to s2 and still takes the tc shortcut on both nodes."""
    c1, s1, s2 = pods["c1"], pods["s1"], pods["s2"]
    n1 = cl.nodes["n1"]
    write_services([("s1", s1.ip), ("s2", s2.ip)])
    api = ["--api-addr", OBJ_API]
    st = None
    for _ in range(50):
        r = n1.daemon.cli("objectives", "status", "--json", *api, check=False)
        st = json.loads(r.stdout) if r.returncode == 0 else None
        if st and st["services"] and len(st["services"][0].get("endpoints", [])) == 2:
            break
        time.sleep(0.1)
    ck.check(st and st["services"], "routed: n1's meshcutd loaded the service file", st)
    act = os.path.join(os.path.dirname(SVC_FILE), "mc-xnode-action-%d.json" % os.getpid())
    with open(act, "w") as f:
        json.dump({"generation": 1, "ttl_ms": 600000,
                   "services": {"default/routed": {"classes": {"default": {"weights": {"s2": 1.0}}}}}}, f)
    r = n1.daemon.cli("objectives", "apply", act, *api, check=False)
    os.unlink(act)
    ck.check(r.returncode == 0, "routed: action applied on n1 (all to s2)", r.stderr)
    with Case(cl, "routed-x-12") as case:
        p = mcnet.spawn(["/usr/bin/python3", "-c", ROUTED_CLIENT, os.path.dirname(os.path.abspath(__file__)),
                         s1.ip, str(SRV_PORT), str(n)], netns=c1.ns, cgroup=cg, uid=1337, gid=1337,
                        stdout=mcnet.subprocess.PIPE, stderr=mcnet.subprocess.PIPE)
        out, err = p.communicate(timeout=60)
    got = out.decode().split()
    ck.check(p.returncode == 0 and got[:1] == [str(n)], "routed: %d request/responses through the rewritten "
             "connections, intact (%s)" % (n, (out + err).decode()[-300:]))
    stc = json.loads(n1.daemon.cli("objectives", "status", "--json", *api).stdout)["counters"]
    ck.check(stc.get("routed", 0) >= n, "routed: n1 rewrote %d connects (s1 -> s2)" % stc.get("routed", 0))
    ck.check(srv_peers_include(pods, c1.ip), "routed: s2 served them, seeing c1's address (no SNAT)")
    common_asserts(ck, args, case)
    assert_shortcut(ck, args, case, n * 20000)


_rr_servers = {}


def srv_peers_include(pods, ip):
    srv = _rr_servers.get("s2")
    return srv is not None and any(p[0] == ip for p in srv.peers)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shortcut", choices=["on", "off"], default="off")
    ap.add_argument("--conns", type=int, default=200)
    ap.add_argument("--stream-mib", type=int, default=8, help="MiB each way per long stream")
    ap.add_argument("--no-meshcut", action="store_true", help="don't chain meshcut, no meshcutd: the plain kernel")
    ap.add_argument("--no-sockops", action="store_true",
                    help="meshcutd attaches sockops to an empty cgroup: only the tc programs act")
    ap.add_argument("--ct-liberal", action="store_true",
                    help="kube-proxy with conntrack.tcpBeLiberal: nf_conntrack_tcp_be_liberal=1, no INVALID drop rule")
    ap.add_argument("--keep", action="store_true", help="stop before teardown (debugging: Enter to continue)")
    args = ap.parse_args()
    if args.no_meshcut and args.shortcut == "on":
        ap.error("--shortcut on needs meshcut")
    mcnet.require_root()
    t_start = time.monotonic()
    ck = mcnet.Checks()
    cg = mcnet.Cgroup("xnode")
    cg.join()
    mode = MODES[args.shortcut]
    write_services([])
    mcnet._cleanups.append(lambda: os.path.exists(SVC_FILE) and os.unlink(SVC_FILE))
    cl = twonode.Cluster(cg, meshcut=not args.no_meshcut, cross_node=mode["cross_node"],
                         daemon_extra=mode["daemon_args"], kube_forward_invalid_drop=not args.ct_liberal,
                         conntrack_liberal=args.ct_liberal,
                         daemon_cgroup=mcnet.Cgroup("xnode-idle") if args.no_sockops else None).up()
    c1, s1 = cl.add_pod("n1", "c1"), cl.add_pod("n1", "s1")
    c2, s2, dns = cl.add_pod("n2", "c2"), cl.add_pod("n2", "s2"), cl.add_pod("n2", "dns")
    pods = {"c1": c1, "s1": s1, "c2": c2, "s2": s2, "dns": dns}
    log("pods: %s" % ", ".join("%s %s on %s (veth %s)" % (p.name, p.ip, p.node.name, p.host_veth)
                               for p in pods.values()))
    for p in (s1, s2):
        p.ns.run("sysctl", "-qw", "net.ipv4.tcp_syncookies=0")  # slowaccept: keep the race, no cookies
    if not args.no_meshcut:
        recs = {n.name: [r.get("container_id") for r in json.loads(n.daemon.cli("pods", "--json").stdout)]
                for n in cl.nodes.values()}
        ck.check(all(p.cid in recs[p.node.name] for p in pods.values()),
                 "every pod is enrolled with its node's meshcutd (%s)" % recs)
    cl.set_services([
        twonode.Service("web", SVC_WEB, 80, [(s2.ip, SRV_PORT)], node_port=NODE_PORT),
        twonode.Service("web-n1", SVC_WEB_N1, 80, [(s1.ip, SRV_PORT)]),
        twonode.Service("kube-dns", SVC_DNS, 53, [(dns.ip, 53)], proto="udp"),
    ])
    twonode.start_dns(cg, dns, DNS_ANSWER)
    srv1 = twonode.RRServer(s1.ns, s1.ip, SRV_PORT)
    srv2 = twonode.RRServer(s2.ns, s2.ip, SRV_PORT)
    _rr_servers["s2"] = srv2
    srv_ext = twonode.RRServer(cl.ext, twonode.EXT_IP, EXT_PORT)
    n1, n2 = cl.nodes["n1"], cl.nodes["n2"]

    case_direct(ck, args, cl, pods)
    if not args.no_meshcut and not args.no_sockops:  # connect4 sits on the cgroup sockops does
        case_routed(ck, args, cl, pods, cg)

    rr_case(ck, args, cl, "clusterip-x-12", c1.ns, (SVC_WEB, 80), c1.ip, "n1")
    rr_case(ck, args, cl, "clusterip-x-21", c2.ns, (SVC_WEB_N1, 80), c2.ip, "n2")
    rr_case(ck, args, cl, "clusterip-same-n2", c2.ns, (SVC_WEB, 80), c2.ip, "n2")
    rr_case(ck, args, cl, "clusterip-same-n1", c1.ns, (SVC_WEB_N1, 80), c1.ip, "n1")
    dns_case(ck, args, cl, "dns-x", c1, "n1")
    dns_case(ck, args, cl, "dns-same", c2, "n2")
    # NodePort from outside: DNAT + masquerade on the receiving node; the pod
    # sees the address of the interface it was sent out of (flannel.1 across
    # nodes, cni0 on the same node).
    rr_case(ck, args, cl, "nodeport-x", cl.ext, (n1.underlay_ip, NODE_PORT), n1.vtep_ip, "n1")
    rr_case(ck, args, cl, "nodeport-same", cl.ext, (n2.underlay_ip, NODE_PORT), n2.gw_ip, "n2")
    rr_case(ck, args, cl, "masq-n1", c1.ns, (twonode.EXT_IP, EXT_PORT), n1.underlay_ip, "n1")
    rr_case(ck, args, cl, "masq-n2", c2.ns, (twonode.EXT_IP, EXT_PORT), n2.underlay_ip, "n2")

    errs = srv1.errors + srv2.errors + srv_ext.errors
    ck.check(not errs, "request/response servers saw no error (%s)" % errs[:3])
    if not args.no_meshcut:
        for n in cl.nodes.values():
            ck.check(n.daemon.proc.poll() is None, "%s: meshcutd still running" % n.name)
            tc = {k: v for k, v in n.counters().items() if k.startswith("tc_")}
            log("%s: tc counters at the end: %s" % (n.name, tc))
    if args.keep:
        input("topology up (netns %s, %s, ext %s); Enter to tear down " % (n1.ns.name, n2.ns.name, cl.ext.name))
    log("total %.1fs" % (time.monotonic() - t_start))
    ck.done()


if __name__ == "__main__":
    main()
