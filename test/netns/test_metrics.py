#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""netns tier, visibility: meshcutd's /metrics, /healthz, /readyz against a
live daemon. Values match the traffic the test made (exact bytes), `promtool
check metrics` passes, counters survive a daemon restart, CNI ADD/DEL counts
and the ADD histogram come from the plugin, readiness follows detach.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cnirun  # noqa: E402
import mcnet  # noqa: E402
import streams  # noqa: E402


def free_port(ns):
    def mk():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        return p
    return mcnet.in_netns(ns, mk)


def get(ns, port, path):
    def fetch():
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
    return mcnet.in_netns(ns, fetch)


def metric(text, name, labels=""):
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape("{%s}" % labels if labels else "")), text, re.M)
    return float(m.group(1)) if m else None


def main():
    mcnet.require_root()
    if not shutil.which("promtool"):
        mcnet.skip_or_fail("promtool not installed (Debian package prometheus)")
    ck = mcnet.Checks()
    cg = mcnet.Cgroup("metrics")
    cg.join()
    node = mcnet.Netns("node")  # the daemon's loopback: traffic stays inside it
    pod = mcnet.Netns("pod")
    port = free_port(node)
    addr = "127.0.0.1:%d" % port
    d = mcnet.Daemon(cg, "metrics", netns=node, extra=["--metrics-addr", addr, "--gc-interval", "1"])
    d.start()
    st, body = get(node, port, "/healthz")
    ck.check(st == 200 and body.strip() == "ok", "/healthz answers 200 ok")
    st, body = get(node, port, "/readyz")
    ck.check(st == 200, "/readyz is 200 with everything attached (%s)" % body.strip())

    d.enroll(pod)
    st, m0 = get(node, port, "/metrics")
    c, s = mcnet.tcp_pair(pod)
    data = streams.payload(3, 1234567)
    import threading
    t = threading.Thread(target=c.sendall, args=(data,))
    t.start()
    got = streams.recv_exact(s, len(data))
    t.join()
    s.sendall(b"x" * 4321)
    streams.recv_exact(c, 4321)
    # conns: the live pair with both tuples and bytes per direction; pods:
    # per-pod counters of live sockets; --explain for it and a host connection.
    cj = json.loads(d.cli("conns", "--json").stdout)
    me = "%s:%d" % c.getsockname()
    srv_end = "%s:%d" % s.getsockname()
    mine = [p for p in cj if p["client"] == "%s -> %s" % (me, srv_end)]
    ck.check(len(mine) == 1 and mine[0]["paired"] and mine[0]["server"] == "%s -> %s" % (srv_end, me)
             and mine[0]["client_to_server"] == {"path": "redirect", "bytes_redirected": len(data), "bytes_normal_path": 0}
             and mine[0]["server_to_client"]["bytes_redirected"] == 4321,
             "conns shows the live pair, both tuples, path and exact bytes each way (%s)" % (mine[:1],))
    pj = json.loads(d.cli("pods", "--json").stdout)
    ck.check(len(pj) == 1 and pj[0]["live_sockets"] >= 2 and pj[0]["live_bytes_redirected"] >= len(data) + 4321,
             "pods shows per-pod counters of live sockets (%s sockets, %s B)" % (pj[0].get("live_sockets"),
                                                                              pj[0].get("live_bytes_redirected")))
    ex = json.loads(d.cli("conns", "--json", "--explain", me, "%s:%d" % s.getsockname()).stdout)
    ck.check(ex["accelerated"] and ex["initiator_in_map"] and ex["responder_in_map"],
             "conns --explain says the connection is accelerated")
    host = mcnet.Netns("host")
    hc, hs = mcnet.tcp_pair(host)
    hsrc = "%s:%d" % hc.getsockname()
    ex = json.loads(d.cli("conns", "--json", "--explain", hsrc, "%s:%d" % hs.getsockname()).stdout)
    ck.check(not ex["accelerated"] and any("is in the sockhash" in w for w in ex["why"]),
             "conns --explain says why a host connection is not accelerated: %s" % ex["why"][:1])
    hc.close()
    hs.close()
    c.close()
    s.close()
    mcnet.check_conns_source(ck, d, [x["source"] for x in mine] + [pj[0].get("live_source"), ex.get("source")])
    deadline = time.time() + 5
    while True:  # closed sockets leave the listing (they leave the sockhash at close)
        gone = json.loads(d.cli("conns", "--json").stdout)
        left = [p for p in gone if p["client"] == "%s -> %s" % (me, srv_end) or p.get("server") == "%s -> %s" % (srv_end, me)]
        if not left or time.time() > deadline:
            break
        time.sleep(0.1)
    pj2 = json.loads(d.cli("pods", "--json").stdout)
    ck.check(not left and pj2[0]["live_sockets"] == pj[0]["live_sockets"] - 2,
             "closed sockets leave conns and pods (%d left, pod sockets %s -> %s)"
             % (len(left), pj[0]["live_sockets"], pj2[0]["live_sockets"]))
    if mine and mine[0].get("source") == "conns_table":
        # No close callback: meshcutd's sweep (every --gc-interval, 1 s here)
        # removes the closed sockets' entries; the listing never showed them.
        deadline = time.time() + 5
        while True:
            n = ((d.status().get("maps") or {}).get("mc_conns") or {}).get("entries")
            live = sum(p["live_sockets"] for p in json.loads(d.cli("pods", "--json").stdout))
            if n == live or time.time() > deadline:
                break
            time.sleep(0.2)
        ck.check(n == live, "the sweep removed the closed sockets' mc_conns entries (%s entries, %d live sockets)"
                 % (n, live))
    st, m1 = get(node, port, "/metrics")
    name = "meshcut_socket_redirected_bytes_total"
    delta = metric(m1, name, 'kind="intra_pod"') - metric(m0, name, 'kind="intra_pod"')
    ck.check(got == data and delta == len(data) + 4321,
             "/metrics: redirected bytes grew by exactly what the apps sent (%d)" % delta)
    ck.check(metric(m1, "meshcut_pods_enrolled") == 1 and metric(m1, "meshcut_up") == 1
             and metric(m1, "meshcut_feature", 'feature="sockhash"') == 1,
             "/metrics: enrolled pods, up, features")
    tmp = tempfile.mkdtemp(prefix="mc-metrics-")
    mcnet._cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    with open(os.path.join(tmp, "m.txt"), "w") as f:
        f.write(m1)
    r = subprocess.run(["promtool", "check", "metrics"], input=m1, capture_output=True, text=True)
    ck.check(r.returncode == 0, "promtool check metrics passes (%s)" % (r.stdout + r.stderr).strip()[:300])

    # CNI statistics: ADD/DEL through a real bridge chain with meshcut.
    br = "mcmt%s" % mcnet.RUN_ID[-3:]
    mcnet._cleanups.append(lambda: node.run("ip", "link", "del", br, check=False))
    conf = {"cniVersion": "1.0.0", "name": "mt", "plugins": [
        {"type": "bridge", "bridge": br, "isGateway": True,
         "ipam": {"type": "host-local", "dataDir": tmp + "/ipam", "ranges": [[{"subnet": "10.248.0.0/24"}]]}},
        {"type": "meshcut", "pinRoot": d.pin_root}]}
    rt = cnirun.Runtime(node, conf, ["/usr/lib/cni", os.path.join(mcnet.BUILD, "cni-plugin")], tmp + "/cache")
    pods = [mcnet.Netns("c%d" % i) for i in range(3)]
    for i, p in enumerate(pods):
        rt.add("mt%d" % i, p.path, args="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p%d" % i)
    rt.add("mtsys", mcnet.Netns("sys").path, args="IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=x")
    for i, p in enumerate(pods):
        rt.delete("mt%d" % i, p.path)
    st, m2 = get(node, port, "/metrics")
    cmd = lambda c, o: metric(m2, "meshcut_cni_commands_total", 'command="%s",outcome="%s"' % (c, o))
    ck.check(cmd("ADD", "enrolled") == 3 and cmd("ADD", "skipped") == 1 and cmd("DEL", "ok") == 3
             and metric(m2, "meshcut_cni_add_duration_seconds_count") == 4
             and metric(m2, "meshcut_cni_add_duration_seconds_bucket", 'le="+Inf"') == 4,
             "/metrics: CNI ADD (3 enrolled, 1 skipped), 3 DEL, ADD histogram count 4")

    # Restart: counters come from the pinned maps, never backwards.
    d.stop()
    d.start()
    st, m3 = get(node, port, "/metrics")
    ck.check(metric(m3, name, 'kind="intra_pod"') == metric(m1, name, 'kind="intra_pod"'),
             "after a daemon restart the counters carry on (not reset, not backwards)")
    # A daemon that lost an attachment reports not ready: detach its sockops
    # link behind its back.
    link = os.path.join(d.pin_root, "links", "sockops_cgroup")
    subprocess.run(["bpftool", "link", "detach", "pinned", link], capture_output=True)
    st, body = get(node, port, "/readyz")
    ck.check(st == 503 and "sockops" in body, "/readyz is 503 and says why when sockops is detached (%s)" % body.strip())
    ck.done()


if __name__ == "__main__":
    main()
