#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""netns tier, CNI plugin: meshcut chained after Debian's real `bridge` +
`host-local` plugins, run like libcni does (cnirun.py), in a node netns with
meshcutd.

  - ADD enrolls the pod: record (meshcutd pods) matches `ip addr` in the pod,
    our tc filter is on the host veth, prevResult passes through converted;
  - CHECK passes, and names what is missing when our tc filter is removed;
  - DEL, then the runtime's second DEL without netns or prevResult, leave
    nothing; DEL with no pins at all succeeds;
  - fail-open: ADD with meshcutd down succeeds and CHECK enrolls the pod later;
    failPolicy closed fails with a CNI error;
  - selection: kube-system, opt-out annotation, include list;
  - bad input gets a CNI error and changes nothing;
  - STATUS and GC (cniVersion 1.1.0), VERSION;
  - concurrent ADDs/DELs; 200 pods in a row leave zero records, filters, IPs,
    cache files; ADD latency of the meshcut plugin (p50/p99);
  - meshcutd's GC removes a record whose netns vanished without DEL;
  - socket traffic between two CNI pods is redirected.
"""
import argparse
import glob
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cnirun  # noqa: E402
import mcnet  # noqa: E402
from mctest import abi, pct  # noqa: E402
import streams  # noqa: E402
from mcnet import log  # noqa: E402

PLUGIN_DIR = os.path.join(mcnet.BUILD, "cni-plugin")


def pods_json(d):
    return json.loads(d.cli("pods", "--json").stdout)


def tc_filters(node, dev):
    r = node.run("tc", "filter", "show", "dev", dev, "ingress", check=False)
    return r.stdout


def our_filter(node, dev):
    return abi.is_ours(tc_filters(node, dev))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gate-timing", action="store_true",
                    help="fail when the in-plugin ADD misses the BENCH.md target (p99 <= 10 ms; a benchmark "
                         "gate, off in CI where other work shares the CPUs)")
    opt = ap.parse_args()
    mcnet.require_root()
    ck = mcnet.Checks()
    cg = mcnet.Cgroup("cni")
    cg.join()
    node = mcnet.Netns("node")
    tmp = tempfile.mkdtemp(prefix="mc-cni-")
    mcnet._cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    # --recheck-interval 0: the test removes our tc filter on purpose (CHECK must see it)
    d = mcnet.Daemon(cg, "cni", netns=node, extra=["--gc-interval", "1", "--recheck-interval", "0"])
    d.start()
    log_file = os.path.join(tmp, "meshcut-cni.log")
    br = "mcbr%s" % mcnet.RUN_ID[-3:]
    ipam_dir = os.path.join(tmp, "ipam")
    conflist = {
        "cniVersion": "1.0.0", "name": "mc-test-net",
        "plugins": [
            {"type": "bridge", "bridge": br, "isGateway": True, "ipMasq": False,
             "ipam": {"type": "host-local", "dataDir": ipam_dir, "ranges": [[{"subnet": "10.252.0.0/24"}]]}},
            {"type": "meshcut", "pinRoot": d.pin_root, "logFile": log_file, "stateDir": os.path.join(tmp, "state"),
             "capabilities": {"io.kubernetes.cri.pod-annotations": True}},
        ]}
    rt = cnirun.Runtime(node, conflist, ["/usr/lib/cni", PLUGIN_DIR], os.path.join(tmp, "cache"))
    mcnet._cleanups.append(lambda: node.run("ip", "link", "del", br, check=False))

    def k8s_args(name, ns="default"):
        return "IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_UID=uid-%s" % (ns, name, name)

    def new_pod(name):
        return mcnet.Netns(name)

    # --- ADD ------------------------------------------------------------
    p1 = new_pod("p1")
    res = rt.add("cid-p1", p1.path, args=k8s_args("web-1"))
    ip1 = res["ips"][0]["address"].split("/")[0]
    addr = p1.run("ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    pods = pods_json(d)
    rec = [p for p in pods if p.get("container_id") == "cid-p1"]
    ck.check(len(rec) == 1 and rec[0]["ips"] == [ip1] and ip1 in addr,
             "ADD enrolled the pod: record IPs %s match `ip addr` in the pod (%s)" % (
                 rec[0]["ips"] if rec else None, addr.split()[3] if addr else None))
    veth = rec[0]["host_veth"] if rec else "?"
    ck.check(rec and rec[0]["name"] == "web-1" and rec[0]["namespace"] == "default" and rec[0]["netns"] == p1.path
             and rec[0]["mac"] == res["interfaces"][2]["mac"],
             "record carries pod namespace/name, netns path and the pod MAC")
    ck.check(veth in [i["name"] for i in res["interfaces"] if not i.get("sandbox")] and our_filter(node, veth),
             "our tc filter (%s) is on the host veth %s" % (", ".join(abi.TC_OURS), veth))
    ck.check(res["cniVersion"] == "1.0.0" and "version" not in res["ips"][0],
             "prevResult passed through in the request's cniVersion")
    lines = [json.loads(x) for x in open(log_file)]
    ck.check(any(x.get("containerID") == "cid-p1" and x.get("pod") == "default/web-1" and x["msg"] == "enrolled"
                 for x in lines), "JSON log line with pod name and container ID in logFile")

    # --- CHECK ----------------------------------------------------------
    try:
        rt.check("cid-p1", p1.path, args=k8s_args("web-1"))
        ck.check(True, "CHECK passes on an enrolled pod")
    except cnirun.CniError as e:
        ck.check(False, "CHECK passes on an enrolled pod (%s)" % e)
    node.run("tc", "filter", "del", "dev", veth, "ingress", *abi.TC_DEL_ARGS)
    try:
        rt.exec_plugin(conflist["plugins"][1], "CHECK", "cid-p1", p1.path, prev=rt.cached("cid-p1")["result"])
        ck.check(False, "CHECK fails when our tc filter is gone")
    except cnirun.CniError as e:
        ck.check(e.json and e.json["code"] == 101 and veth in e.json["msg"],
                 "CHECK names what is missing: %s" % (e.json or {}).get("msg"))

    # --- DEL ------------------------------------------------------------
    rt.delete("cid-p1", p1.path, args=k8s_args("web-1"))
    rt.delete("cid-p1", "", args=k8s_args("web-1"), with_prev=False)  # the runtime's second DEL
    ck.check(not [p for p in pods_json(d) if p.get("container_id") == "cid-p1"],
             "DEL and a second DEL without netns/prevResult: record gone, both exit 0")
    ck.check(not os.listdir(os.path.join(ipam_dir, "mc-test-net")) or
             all(f in ("last_reserved_ip.0", "lock") for f in os.listdir(os.path.join(ipam_dir, "mc-test-net"))),
             "the bridge chain released the IP")

    # --- selection ------------------------------------------------------
    p2 = new_pod("p2")
    rt.add("cid-sys", p2.path, args=k8s_args("coredns", "kube-system"))
    p3 = new_pod("p3")
    rt.add("cid-opt", p3.path, args=k8s_args("opt"), capability_args={
        "io.kubernetes.cri.pod-annotations": {"meshcut.io/enabled": "false"}})
    ids = [p.get("container_id") for p in pods_json(d)]
    ck.check("cid-sys" not in ids and "cid-opt" not in ids,
             "kube-system and an opted-out pod (annotation) are not enrolled")
    rt.delete("cid-sys", p2.path)
    rt.delete("cid-opt", p3.path)

    # --- bad input ------------------------------------------------------
    mc = conflist["plugins"][1]
    before = len(pods_json(d))
    p4 = new_pod("p4")
    bad = [
        ("malformed JSON", dict(stdin_override="{not json"), 6),
        ("unsupported cniVersion", dict(stdin_override=json.dumps({"cniVersion": "9.9.9", "name": "x", "type": "meshcut"})), 1),
        ("no prevResult (run unchained)", dict(), 7),
        ("bad failPolicy", dict(stdin_override=json.dumps({"cniVersion": "1.0.0", "name": "x", "type": "meshcut",
                                                         "failPolicy": "maybe", "prevResult": {}})), 7),
    ]
    for what, kw, code in bad:
        try:
            rt.exec_plugin(mc, "ADD", "cid-bad", p4.path, **kw)
            ck.check(False, "%s: CNI error" % what)
        except cnirun.CniError as e:
            ck.check(e.json is not None and e.json.get("code") == code and e.json.get("msg") and e.out.count("\n") <= 1,
                     "%s: CNI error code %s on stdout, exit %d: %s" % (what, (e.json or {}).get("code"), e.rc,
                                                                       (e.json or {}).get("msg")))
    try:
        rt.exec_plugin(mc, "BOGUS", "cid-bad", p4.path)
        ck.check(False, "unknown CNI_COMMAND: error")
    except cnirun.CniError as e:
        ck.check(e.json and e.json["code"] == 4, "unknown CNI_COMMAND: code 4")
    closed = dict(mc, failPolicy="closed")
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/none"}],
            "ips": [{"address": "10.252.0.250/24", "interface": 0}]}
    try:
        rt.exec_plugin(closed, "ADD", "cid-bad", "/var/run/netns/mc-does-not-exist", prev=prev)
        ck.check(False, "closed policy, netns that does not exist: error")
    except cnirun.CniError as e:
        ck.check(e.json and e.json["code"] == 100 and "mc-does-not-exist" in e.json.get("details", ""),
                 "closed policy, netns that does not exist: code 100 naming it")
    out = rt.exec_plugin(mc, "ADD", "cid-bad", "/var/run/netns/mc-does-not-exist", prev=prev)
    ck.check(out["ips"][0]["address"] == "10.252.0.250/24", "open policy: same failure, ADD passes prevResult through")
    ck.check(len(pods_json(d)) == before, "bad input changed nothing (%d records)" % len(pods_json(d)))

    # --- VERSION, STATUS, GC --------------------------------------------
    v = rt.exec_plugin(mc, "VERSION", "", "", stdin_override=json.dumps({"cniVersion": "1.1.0"}))
    ck.check(v["supportedVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"], "VERSION lists 0.3.0 - 1.1.0")
    rt11 = cnirun.Runtime(node, dict(conflist, cniVersion="1.1.0"), rt.bin_dirs, os.path.join(tmp, "cache11"))
    ck.check(rt11.exec_plugin(mc, "STATUS", "", "") is None, "STATUS (1.1.0) succeeds with meshcutd up")
    p5 = new_pod("p5")
    rt.add("cid-gc", p5.path, args=k8s_args("gc-me"))
    gc_in = dict(mc, cniVersion="1.1.0", name="mc-test-net")
    gc_in["cni.dev/valid-attachments"] = [{"containerID": "cid-other", "ifname": "eth0"}]
    rt11.exec_plugin(mc, "GC", "", "", stdin_override=json.dumps(gc_in))
    ck.check("cid-gc" not in [p.get("container_id") for p in pods_json(d)] and not our_filter(node, "dummy"),
             "GC removed the record of an attachment the runtime no longer has")
    rt.delete("cid-gc", p5.path)

    # --- fail-open, then CHECK enrolls ----------------------------------
    d.stop()
    d.detach()
    p6 = new_pod("p6")
    res6 = rt.add("cid-down", p6.path, args=k8s_args("started-while-down"))
    ck.check(res6["ips"], "ADD with meshcutd down (no pins) succeeds: fail-open")
    try:
        rt11.exec_plugin(dict(mc, failPolicy="closed"), "STATUS", "", "")
        ck.check(False, "STATUS with closed policy and no daemon: error 50")
    except cnirun.CniError as e:
        ck.check(e.json and e.json["code"] == 50, "STATUS with closed policy and no daemon: error 50")
    try:
        rt.exec_plugin(dict(mc, failPolicy="closed"), "ADD", "cid-x", p6.path, prev=res6)
        ck.check(False, "ADD with closed policy and no daemon: error")
    except cnirun.CniError as e:
        ck.check(e.json and e.json["code"] == 100, "ADD with closed policy and no daemon: CNI error 100")
    d.start()
    rt.check("cid-down", p6.path, args=k8s_args("started-while-down"))
    ck.check("cid-down" in [p.get("container_id") for p in pods_json(d)],
             "after meshcutd came back, CHECK enrolled the pod that started without it")
    rt.delete("cid-down", p6.path)

    # --- fail-open, then meshcutd's re-scan of the CNI cache enrolls ----
    d.stop()
    d.detach()
    p8 = new_pod("p8")
    rt.add("cid-rescan", p8.path, args=k8s_args("rescan-me"))
    p9 = new_pod("p9")
    rt.add("cid-rescan-sys", p9.path, args=k8s_args("kube-dns", "kube-system"))
    d.extra = d.extra + ["--cni-cache-dir", rt.cache_dir]
    d.start()
    deadline = time.time() + 5
    while time.time() < deadline and "cid-rescan" not in [p.get("container_id") for p in pods_json(d)]:
        time.sleep(0.1)
    recs = {p.get("container_id"): p for p in pods_json(d)}
    ck.check("cid-rescan" in recs and recs["cid-rescan"]["name"] == "rescan-me" and "cid-rescan-sys" not in recs,
             "meshcutd's start-up re-scan of the CNI cache enrolled the pod that started while it was down "
             "(and left the kube-system one alone)")
    rt.delete("cid-rescan", p8.path)
    rt.delete("cid-rescan-sys", p9.path)

    # --- socket traffic between two CNI pods is redirected --------------
    pa, pb = new_pod("pa"), new_pod("pb")
    ra = rt.add("cid-a", pa.path, args=k8s_args("a"))
    rb = rt.add("cid-b", pb.path, args=k8s_args("b"))
    ipb = rb["ips"][0]["address"].split("/")[0]
    c0 = d.counters()
    lst = mcnet.in_netns(pb, lambda: (lambda s: (s.bind((ipb, 0)), s.listen(1), s)[2])(socket.socket()))
    c = mcnet.in_netns(pa, socket.create_connection, lst.getsockname())
    s, _ = lst.accept()
    data = streams.payload(7, 2 << 20)
    t = threading.Thread(target=c.sendall, args=(data,))
    t.start()
    got = streams.recv_exact(s, len(data))
    t.join()
    dc = mcnet.delta(c0, d.counters())
    ck.check(got == data and dc["bytes_redirect_node"] >= len(data) and mcnet.tcp_wire_stats(c)["data_segs_out"] == 0,
             "2 MiB between two CNI pods took the pod-to-pod shortcut (%d B redirected)" % dc["bytes_redirect_node"])
    for x in (c, s, lst):
        x.close()
    tc_seen = sum(v for k, v in dc.items() if k.startswith("tc_"))
    ck.check(tc_seen > 0, "the tc program on the host veths saw the packets (%d; no pod CIDR given: tc_pass_disabled)" % tc_seen)

    # --- missed DEL: meshcutd's GC ----------------------------------------
    pa_path = pa.path
    pa.remove()
    deadline = time.time() + 10
    while time.time() < deadline and "cid-a" in [p.get("container_id") for p in pods_json(d)]:
        time.sleep(0.2)
    ck.check("cid-a" not in [p.get("container_id") for p in pods_json(d)],
             "meshcutd removed the record of a pod whose netns vanished without DEL")
    rt.delete("cid-a", pa_path)  # the runtime's late DEL still succeeds
    rt.delete("cid-b", pb.path)

    # --- concurrency ------------------------------------------------------
    pods = [new_pod("c%d" % i) for i in range(20)]
    errs = []

    def run_all(fn):
        ts = [threading.Thread(target=lambda i=i: _guard(errs, fn, i)) for i in range(len(pods))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    run_all(lambda i: rt.add("cid-c%d" % i, pods[i].path, args=k8s_args("c%d" % i)))
    recs = [p for p in pods_json(d) if str(p.get("container_id", "")).startswith("cid-c")]
    ips = sorted(p["ips"][0] for p in recs)
    ck.check(not errs and len(recs) == 20 and len(set(ips)) == 20,
             "20 concurrent ADDs: 20 records, 20 distinct IPs (errors %s)" % errs[:2])
    run_all(lambda i: rt.delete("cid-c%d" % i, pods[i].path, args=k8s_args("c%d" % i)))
    recs = [p for p in pods_json(d) if str(p.get("container_id", "")).startswith("cid-c")]
    ck.check(not errs and not recs, "20 concurrent DELs: no record left")
    for p in pods:
        p.remove()

    # --- 200 pods in a row ------------------------------------------------
    rt.timings.clear()
    for i in range(200):
        p = new_pod("s%d" % i)
        rt.add("cid-s%d" % i, p.path, args=k8s_args("s%d" % i))
        rt.delete("cid-s%d" % i, p.path, args=k8s_args("s%d" % i))
        rt.delete("cid-s%d" % i, "", with_prev=False)
        p.remove()
    st = d.status()
    left_ips = [f for f in os.listdir(os.path.join(ipam_dir, "mc-test-net")) if re.match(r"^\d+\.\d+\.\d+\.\d+$", f)]
    veths = node.run("ip", "-o", "link", "show", "master", br).stdout.strip()
    ck.check(st["maps"]["mc_cni_pods"]["entries"] == 0 and st["maps"]["mc_pods"]["entries"] == 0
             and st["maps"]["mc_pod_ips"]["entries"] == 0 and not left_ips and not veths
             and not os.listdir(os.path.join(rt.cache_dir, "results")),
             "200 pods created and deleted: 0 records, 0 pod IPs, 0 IP reservations, 0 veths, 0 cache files")
    add = rt.timings["meshcut:ADD"]
    inproc = [x["duration_ms"] for x in map(json.loads, open(log_file))
              if x.get("msg") == "done" and x.get("command") == "ADD" and re.match(r"cid-s\d+$", str(x.get("containerID")))]
    log("meshcut ADD over 200 pods: in the plugin p50 %.2f ms p99 %.2f ms max %.2f ms; as the runtime sees it "
        "(fork+exec from Python included) p50 %.1f ms p99 %.1f ms; bridge ADD p50 %.1f ms"
        % (statistics.median(inproc), pct(inproc, 99), max(inproc), 1e3 * statistics.median(add),
           1e3 * pct(add, 99), 1e3 * statistics.median(rt.timings["bridge:ADD"])))
    ck.check(len(inproc) == 200, "the plugin logged a duration for each of the 200 ADDs")
    # A timing, not a correctness check: on a shared 2-vCPU CI machine the
    # in-plugin p50 moved from 1 to 7 ms with the load beside it, so the target
    # (BENCH.md, p99 <= 10 ms) is reported, and gated only with --gate-timing.
    met = pct(inproc, 99) <= 10.0
    line = ("ADD in the plugin: p50 %.2f ms, p99 %.2f ms (target p99 <= 10 ms: %s)"
            % (statistics.median(inproc), pct(inproc, 99), "met" if met else "MISSED"))
    if opt.gate_timing:
        ck.check(met, line)
    else:
        log("timing " + line)

    # --- detach removes the tc filters on pod veths -----------------------
    p7 = new_pod("p7")
    rt.add("cid-p7", p7.path, args=k8s_args("p7"))
    veth7 = [p for p in pods_json(d) if p.get("container_id") == "cid-p7"][0]["host_veth"]
    d.stop()
    d.detach()
    ck.check(not our_filter(node, veth7) and not os.path.exists(d.pin_root),
             "meshcutd detach removed our tc filter from pod veths and every pin")
    rt.delete("cid-p7", p7.path)
    ck.check(True, "DEL with no pins at all succeeds")
    ck.done()


def _guard(errs, fn, i):
    try:
        fn(i)
    except Exception as e:
        errs.append(repr(e))


if __name__ == "__main__":
    main()
