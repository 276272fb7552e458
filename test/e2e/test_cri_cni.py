#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""e2e tier, CNI plugin under a real runtime: containerd 1.6's CRI (the path
kubelet uses) creates and deletes pods on a node (e2e/cri CriNode: its own
netns and containerd) whose conflist is Debian's `bridge` + `host-local`
(+ CRI's own `loopback`) followed by `meshcut`. meshcutd runs in the node's
netns with sockops on the node's cgroup v2 directory (where runc puts every
pod container), `--cni-cache-dir` = containerd's libcni cache, `--gc-interval 1`.

  1. RunPodSandbox enrolls the pod: `meshcutd pods` record (CRI namespace/name,
     container_id = sandbox id, IPs = PodSandboxStatus IP = `ip addr` in the
     pod, MAC, netns, host veth on the node bridge) and our tc filter on it;
  2. Stop + Remove (DEL with netns + prevResult, then DEL without either)
     leave nothing: record, map entries, veth, IP reservation, cache files;
  3. fail-open: meshcutd stopped and detached, a pod still starts; meshcutd's
     start-up re-scan of the CNI cache enrolls it;
  4. opt-out annotation (CRI pod annotations) and kube-system: not enrolled;
  5. socket traffic between two CRI pods' containers (busybox nc) takes the
     same-node shortcut (counters, veth byte counters);
  6. --pods N created and deleted in a row leave zero records, filters, IPs,
     cache files; RunPodSandbox p50/p99 with meshcut vs. a node without it;
  7. everything is cleaned up (also on failure and Ctrl-C).

Run as root with Debian's python: /usr/bin/python3 test/e2e/test_cri_cni.py [--pods N]
"""
import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import crimc  # noqa: E402  (puts test/netns and e2e/cri on sys.path)
import mcnet  # noqa: E402
from mcnet import log  # noqa: E402

# the plugin next to the meshcutd under test (CTest sets MESHCUTD), or $MESHCUT_CNI_PLUGIN
PLUGIN = os.environ.get("MESHCUT_CNI_PLUGIN") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(mcnet.MESHCUTD))), "cni-plugin", "meshcut")
MC_CIDR = "10.244.61.0/24"
BASE_CIDR = "10.244.62.0/24"
PAYLOAD = 2 << 20   # bytes moved between the two pods


def require_tools():
    try:
        import grpc  # noqa: F401
        from grpc_tools import protoc  # noqa: F401
    except ImportError as e:
        mcnet.skip_or_fail("%s: run with /usr/bin/python3 after e2e/cri/deps.sh" % e)
    missing = [t for t in ("containerd", "ctr", "runc", "nsenter", "tc", "busybox") if not shutil.which(t)]
    missing += [p for p in ("bridge", "host-local", "loopback") if not os.path.exists("/usr/lib/cni/" + p)]
    if missing:
        mcnet.skip_or_fail("missing %s: run e2e/cri/deps.sh" % missing)
    if not os.path.exists(PLUGIN):
        print("FAIL: meshcut CNI plugin not built at %s" % PLUGIN, file=sys.stderr)
        sys.exit(1)


class Timer:
    def __init__(self):
        self.phases = []

    @contextlib.contextmanager
    def phase(self, name):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phases.append((name, time.perf_counter() - t0))


def ms(x):
    return 1e3 * x


GATE_TIMING = False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=200, help="pods created and deleted in a row (check 6)")
    ap.add_argument("--gate-timing", action="store_true",
                    help="fail when meshcut adds more than 10 ms to RunPodSandbox p50 (a benchmark gate, off in CI)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the node without meshcut (timing baseline)")
    ap.add_argument("--gc-interval", default="1", help="meshcutd --gc-interval (sweep of records whose netns is gone)")
    opt = ap.parse_args()
    global GATE_TIMING
    GATE_TIMING = opt.gate_timing
    mcnet.require_root()
    require_tools()
    from node import CriNode, leftovers  # e2e/cri (grpc imported only now)

    ck = mcnet.Checks()
    tm = Timer()
    t_start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="mc-cri-cni-")
    plugin_log = os.path.join(tmp, "meshcut-cni.log")
    summary = {}
    keep_tmp = False
    d = cg = node = base = None
    interrupted = None

    try:
        with contextlib.ExitStack() as stack:
            with tm.phase("setup: node (containerd) + meshcutd"):
                node = CriNode("mc", MC_CIDR, cni_bin_dirs=["/usr/lib/cni", PLUGIN])
                nns = crimc.NodeNetns(node)
                cg = crimc.NodeCgroup(node)
                d = mcnet.Daemon(cg, "cri", netns=nns,
                                 extra=["--gc-interval", opt.gc_interval, "--cni-cache-dir", crimc.cni_cache_dir()])
                node.extra_plugins = [{"type": "meshcut", "pinRoot": d.pin_root, "logFile": plugin_log,
                                       "capabilities": {"io.kubernetes.cri.pod-annotations": True}}]
                stack.enter_context(node)                        # torn down last
                stack.callback(crimc.daemon_cleanup, d)          # before the node's teardown
                if os.path.exists(d.logfile):                    # a log of an earlier run with our pid
                    os.unlink(d.logfile)
                d.start()
            log("node %s (bridge %s, cgroup %s), meshcutd pin root %s, CNI cache %s/results"
                % (node.id, node.bridge, cg.path, d.pin_root, crimc.cni_cache_dir()))
            with tm.phase("1+2: enroll, two DELs"):
                check_enroll_and_delete(ck, node, d, plugin_log)
            with tm.phase("3: fail-open + re-scan"):
                check_fail_open(ck, node, d, plugin_log)
            with tm.phase("4: opt-out, kube-system"):
                check_opt_out(ck, node, d, plugin_log)
            with tm.phase("5: traffic between CRI pods"):
                check_traffic(ck, node, d, summary)
            if not opt.no_baseline:
                with tm.phase("setup: baseline node (no meshcut)"):
                    base = stack.enter_context(CriNode("base", BASE_CIDR, cni_bin_dirs=["/usr/lib/cni"]))
            with tm.phase("6: %d pods in a row%s" % (opt.pods, "" if base is None else " (+ baseline)")):
                check_many(ck, node, base, d, plugin_log, opt.pods, summary)
            check_rescan_vs_del(ck, d, plugin_log, summary)
            with tm.phase("7: stop + detach meshcutd"):
                for pod in list(node.pods.values()):
                    node.remove_pod(pod)
                d.stop()
                d.detach()
                ck.check(not os.path.exists(d.pin_root), "meshcutd stopped and detached: pin root %s gone" % d.pin_root)
            t_td = time.perf_counter()
        tm.phases.append(("7: node teardowns", time.perf_counter() - t_td))
    except (KeyboardInterrupt, SystemExit) as e:   # Ctrl-C / SIGTERM (mcnet: sys.exit(130)): nodes are torn down
        interrupted = e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 130
        log("interrupted: cleaning up")
    except Exception as e:  # a check that could not even run: fail, still clean up and report
        keep_tmp = True
        traceback.print_exc()
        ck.check(False, "test ran to the end (%s: %s)" % (type(e).__name__, e))
        if node is not None:
            print("containerd log tail:\n" + node.log_tail(20), file=sys.stderr)
    # --- 7. cleanup ---------------------------------------------------------
    if d is not None:
        crimc.daemon_cleanup(d)
    if cg is not None:
        cg.remove()
    # only what our nodes left: other sessions may run CRI nodes at the same time
    ids = [n.id for n in (node, base) if n is not None]
    left = {k: [x for x in v if any(i in x for i in ids)] for k, v in leftovers().items()}
    left = {k: v for k, v in left.items() if v}
    ck.check(not left, "nothing left by the nodes (netns, dirs, CNI cache, cgroups): %s" % (left or "none"))
    ck.check(d is None or not os.path.exists(d.pin_root), "no pins left")
    ck.check(cg is None or not os.path.exists(cg.path), "node cgroup v2 dir gone")
    summary["total_s"] = time.perf_counter() - t_start
    print_summary(tm, summary)
    if (ck.failed or keep_tmp) and interrupted is None:
        print("plugin log kept at %s; meshcutd log at %s" % (plugin_log, d.logfile if d else "-"))
    else:
        shutil.rmtree(tmp, ignore_errors=True)
        if d is not None and os.path.exists(d.logfile):
            os.unlink(d.logfile)
    if interrupted is not None:
        mcnet._sweep()
        print("interrupted: %d passed, %d failed so far" % (ck.passed, ck.failed))
        sys.exit(interrupted)
    ck.done()


# ---- 1 + 2 ---------------------------------------------------------------------
def check_enroll_and_delete(ck, node, d, plugin_log):
    p = node.run_pod("web-1", namespace="default")
    sid = p.sid
    st_ip = node.cri.pod_ip(sid)
    addr = p.sh("ip -4 -o addr show dev eth0").stdout.split()
    pod_ip = addr[3].split("/")[0] if len(addr) > 3 else None
    pod_mac = json.loads(p.sh("ip -j link show dev eth0").stdout)[0]["address"]
    rec = crimc.record(d, sid)
    ok = isinstance(rec, dict)
    ck.check(ok and rec.get("namespace") == "default" and rec.get("name") == "web-1" and rec.get("container_id") == sid,
             "RunPodSandbox enrolled the pod: record default/web-1, container_id = sandbox id %s" % sid[:12])
    ck.check(ok and rec.get("ips") == [st_ip] and st_ip == pod_ip,
             "record IPs %s == PodSandboxStatus IP %s == `ip addr` in the pod %s"
             % (rec.get("ips") if ok else None, st_ip, pod_ip))
    ck.check(ok and rec.get("mac") == pod_mac and rec.get("netns") == p.netns,
             "record MAC %s == pod eth0 MAC, netns == CRI's %s"
             % (rec.get("mac") if ok else None, p.netns))
    veth = rec.get("host_veth") if ok else None
    ports = node.bridge_ports()
    ck.check(veth and veth in ports, "host veth %s is on the node bridge %s %s" % (veth, node.bridge, ports))
    ck.check(veth and crimc.our_filter(node, veth),
             "our tc filter (%s %s) on %s ingress in the node netns"
             % (*crimc.abi.TC_OURS, veth))
    cache = os.path.join(crimc.cni_cache_dir(), "results", "%s-%s-eth0" % (node.net_name, sid))
    entry = None
    if os.path.exists(cache):
        import base64
        conf = json.loads(base64.b64decode(json.load(open(cache))["config"]))
        entry = [x for x in conf.get("plugins", []) if x.get("type") == "meshcut"]
    ck.check(entry and entry[0].get("pinRoot") == d.pin_root,
             "containerd's libcni wrote its result cache to %s (the daemon's --cni-cache-dir), with our entry"
             % os.path.dirname(cache))
    lines = crimc.plugin_log(plugin_log)
    ck.check(any(x.get("containerID") == sid and x.get("pod") == "default/web-1" and x.get("msg") == "enrolled"
                 for x in lines), "plugin log: `enrolled` with pod name and container ID")
    ann = [x for x in lines if x.get("containerID") == sid and x.get("command") == "ADD"]
    ck.check(ann and not any(x.get("level") == "error" for x in ann), "plugin ADD logged no error")

    # --- 2: Stop + Remove: two DELs
    t0 = time.perf_counter()
    node.remove_pod(p)
    dt = time.perf_counter() - t0
    lines = [x for x in crimc.plugin_log(plugin_log) if x.get("containerID") == sid and x.get("command") == "DEL"]
    dels = [x for x in lines if x.get("msg") == "done"]
    removed = [x for x in lines if x.get("msg") == "DEL: removed"]
    nothing = [x for x in lines if x.get("msg") == "DEL: nothing recorded for this attachment"]
    first = sorted(lines, key=lambda x: x.get("ts", 0))[0]["msg"] if lines else None
    ck.check(len(dels) == 2 and first == "DEL: removed" and len(removed) + len(nothing) == 2,
             "Stop+Remove (%.0f ms) ran meshcut DEL twice, both exit 0: the first removed the record, the second "
             "(no netns/prevResult) said %r" % (ms(dt), (nothing or removed[1:] or [{}])[0].get("msg")))
    st = d.status()
    maps = {k: st["maps"][k]["entries"] for k in ("mc_pods", "mc_pod_ips", "mc_cni_pods")}
    ck.check(crimc.record(d, sid) is None and not any(maps.values()),
             "after both DELs: no record, map entries %s" % maps)
    gone = node.sh("ip link show dev %s" % veth, check=False).returncode != 0 if veth else False
    ck.check(gone and not node.bridge_ports(), "host veth %s gone, bridge has no port" % veth)
    ck.check(not node.ipam_reservations(), "no host-local reservation left (%s)" % node.ipam_reservations())
    ck.check(not node.cni_cache_files([sid]), "no CNI cache file left for the pod (%s)" % node.cni_cache_files([sid]))


# ---- 3 ------------------------------------------------------------------------
def check_fail_open(ck, node, d, plugin_log):
    d.stop()
    d.detach()
    ck.check(not os.path.exists(d.pin_root), "meshcutd stopped and detached (no pins)")
    try:
        p = node.run_pod("started-while-down")
    except Exception as e:
        ck.check(False, "fail-open: RunPodSandbox with meshcutd down succeeds (%s)" % e)
        d.start()
        return
    lines = [x for x in crimc.plugin_log(plugin_log) if x.get("containerID") == p.sid]
    ck.check(p.ip and any(x.get("msg", "").startswith("fail-open") for x in lines),
             "fail-open: RunPodSandbox with meshcutd down succeeded in %.0f ms, pod IP %s, plugin logged fail-open"
             % (ms(p.run_seconds), p.ip))
    t0 = time.perf_counter()
    d.start()
    rec = crimc.wait_for(lambda: crimc.record(d, p.sid), 5)
    dt = time.perf_counter() - t0
    ok = isinstance(rec, dict)
    ck.check(ok and rec.get("ips") == [p.ip] and rec.get("name") == "started-while-down"
             and crimc.our_filter(node, rec.get("host_veth")),
             "meshcutd's re-scan of the CNI cache enrolled it %.1f s after start (record + tc filter on %s)"
             % (dt, rec.get("host_veth") if ok else None))
    node.remove_pod(p)
    ck.check(crimc.record(d, p.sid) is None, "and Stop+Remove removed that record")


# ---- 4 ------------------------------------------------------------------------
def check_opt_out(ck, node, d, plugin_log):
    po = node.run_pod("opted-out", annotations={"meshcut.io/enabled": "false"})
    ks = node.run_pod("coredns", namespace="kube-system")
    ids = [x.get("container_id") for x in crimc.pods_json(d)]
    lines = crimc.plugin_log(plugin_log)

    def skipped(sid):
        return [x["msg"] for x in lines if x.get("containerID") == sid and x.get("msg", "").startswith("not enrolled")]

    ck.check(po.ip and po.sid not in ids and skipped(po.sid),
             "pod with CRI annotation meshcut.io/enabled=false not enrolled (%s)"
             % (skipped(po.sid) or ["?"])[0])
    ck.check(ks.ip and ks.sid not in ids and skipped(ks.sid),
             "pod in kube-system not enrolled (%s)" % (skipped(ks.sid) or ["?"])[0])
    node.remove_pod(po)
    node.remove_pod(ks)


# ---- 5 ------------------------------------------------------------------------
def check_traffic(ck, node, d, summary):
    srv = node.run_pod("srv", labels={"app": "srv"})
    cli = node.run_pod("cli", labels={"app": "cli"})
    ids = {x.get("container_id"): x for x in crimc.pods_json(d)}
    ck.check(srv.sid in ids and cli.sid in ids, "both traffic pods enrolled")
    # busybox nc exits when its stdin ends: keep the server's stdin open with sleep
    sc = node.run_container(srv, "server", ["/bin/sh", "-c", "sleep 100000 | nc -l -p 8080 > /tmp/recv"])
    cc = node.run_container(cli, "client", ["/bin/sleep", "100000"])
    # the containers' processes are in the node's cgroup (where sockops is attached)
    pid = node.cri.container_pid(sc)
    cgline = [x for x in open("/proc/%d/cgroup" % pid).read().splitlines() if x.startswith("0::")][0]
    ck.check(cgline[3:].startswith(node.cgroup_parent + "/"),
             "server container runs in cgroup v2 %s, under meshcutd's --cgroup" % cgline[3:])
    rc, out, err = node.cri.exec_sync(cc, ["/bin/sh", "-c", "head -c %d /dev/urandom > /tmp/payload && md5sum /tmp/payload" % PAYLOAD])
    sent_md5 = out.split()[0].decode() if rc == 0 and out else None
    veth_cli = ids.get(cli.sid, {}).get("host_veth")
    c0 = d.counters()
    b0 = crimc.link_bytes(node, veth_cli) if veth_cli else (0, 0)
    # wait for the server's listener (nc in the server container's netns)
    crimc.wait_for(lambda: ":8080" in srv.sh("ss -ltn", check=False).stdout, 5)
    t0 = time.perf_counter()
    rc, out, err = node.cri.exec_sync(cc, ["/bin/sh", "-c", "nc %s 8080 < /tmp/payload" % srv.ip], timeout=30)
    got = crimc.wait_for(lambda: _recv_size(node, sc) == PAYLOAD, 10, 0.05)
    dt = time.perf_counter() - t0
    rc2, out2, _ = node.cri.exec_sync(sc, ["/bin/sh", "-c", "md5sum /tmp/recv"])
    recv_md5 = out2.split()[0].decode() if rc2 == 0 and out2 else None
    dc = mcnet.delta(c0, d.counters())
    b1 = crimc.link_bytes(node, veth_cli) if veth_cli else (0, 0)
    wire = (b1[0] - b0[0]) + (b1[1] - b0[1])
    summary["traffic"] = dict(bytes=PAYLOAD, seconds=dt, redirected=dc.get("bytes_redirect_node", 0), veth_bytes=wire)
    ck.check(rc == 0 and got and sent_md5 and sent_md5 == recv_md5,
             "client container -> server container: %d B through busybox nc in %.2f s, md5 matches (rc %d %s)"
             % (PAYLOAD, dt, rc, err.decode(errors="replace").strip()))
    ck.check(dc.get("bytes_redirect_node", 0) >= PAYLOAD,
             "counters.bytes_redirect_node grew by %d >= %d: same-node shortcut" % (dc.get("bytes_redirect_node", 0), PAYLOAD))
    ck.check(wire < PAYLOAD // 10,
             "the client pod's host veth %s carried only %d B (handshake/FIN), not the payload" % (veth_cli, wire))
    tc = {k: v for k, v in dc.items() if k.startswith("tc_") and v}
    ck.check(sum(tc.values()) > 0, "the tc program on the host veths saw the handshake (tc_* counters %s)" % tc)
    node.remove_pod(srv)
    node.remove_pod(cli)
    left = [x for x in crimc.pods_json(d) if x.get("container_id") in (srv.sid, cli.sid)]
    ck.check(not left, "traffic pods (with running containers) removed: no record left")


def _recv_size(node, cid):
    rc, out, _ = node.cri.exec_sync(cid, ["/bin/sh", "-c", "wc -c < /tmp/recv"])
    try:
        return int(out.strip()) if rc == 0 else -1
    except ValueError:
        return -1


# ---- 6 ------------------------------------------------------------------------
def check_many(ck, node, base, d, plugin_log, n, summary):
    if base is not None:
        for i in range(3):   # warm-up: first sandboxes on a fresh node are slower
            base.remove_pod(base.run_pod("warm-%d" % i))
    run_mc, run_base, rm_mc, rm_base, sids = [], [], [], [], []
    stale = []       # records still there right after Stop+Remove
    stale_stop = []  # records there after StopPodSandbox (kubelet may Remove much later)
    errors = []
    for i in range(n):
        order = ((node, run_mc, rm_mc), (base, run_base, rm_base))
        for nd, runs, rms in (order if i % 2 == 0 else order[::-1]):   # alternate who goes first
            if nd is None:
                continue
            try:
                p = nd.run_pod("s%d" % i)
                runs.append(p.run_seconds)
                t0 = time.perf_counter()
                nd.cri.stop_pod(p.sid)
                t_stop = time.perf_counter() - t0
                if nd is node:
                    sids.append(p.sid)
                    if crimc.record(d, p.sid) is not None:      # between StopPodSandbox and RemovePodSandbox
                        stale_stop.append(p.sid)
                t0 = time.perf_counter()
                nd.remove_pod(p)
                rms.append(t_stop + time.perf_counter() - t0)
            except Exception as e:
                errors.append("%s s%d: %s" % (nd.name, i, e))
                continue
            if nd is node and crimc.record(d, p.sid) is not None:
                stale.append(p.sid)
    ck.check(not errors, "%d pods created and deleted through CRI without error %s" % (n, errors[:3]))
    recs = crimc.pods_json(d)
    st = d.status()
    maps = {k: st["maps"][k]["entries"] for k in ("mc_pods", "mc_pod_ips", "mc_cni_pods")}
    ports = node.bridge_ports()
    filters = [v for v in ports if crimc.our_filter(node, v)]
    ipam = node.ipam_reservations()
    cache = node.cni_cache_files()
    ck.check(not stale, "no record survived its pod's Stop+Remove (checked after each pod: %d stale %s)"
             % (len(stale), [x[:12] for x in stale[:3]]))
    ck.check(not stale_stop, "no record right after StopPodSandbox, before RemovePodSandbox (%d pods had one: %s)"
             % (len(stale_stop), [x[:12] for x in stale_stop[:3]]))
    ck.check(not recs and not any(maps.values()) and not ports and not filters and not ipam and not cache,
             "%d pods in a row: %d records, maps %s, %d veths, %d filters, %d IP reservations, %d cache files"
             % (n, len(recs), maps, len(ports), len(filters), len(ipam), len(cache)))
    sidset = set(sids)
    inproc = [x["duration_ms"] for x in crimc.plugin_log(plugin_log)
              if x.get("msg") == "done" and x.get("command") == "ADD" and x.get("containerID") in sidset]
    delproc = [x["duration_ms"] for x in crimc.plugin_log(plugin_log)
               if x.get("msg") == "done" and x.get("command") == "DEL" and x.get("containerID") in sidset]
    s = summary["many"] = {"n": n}
    s["mc_run"] = (ms(statistics.median(run_mc)), ms(crimc.pct(run_mc, 99))) if run_mc else None
    s["mc_rm"] = (ms(statistics.median(rm_mc)), ms(crimc.pct(rm_mc, 99))) if rm_mc else None
    s["plugin_add"] = (statistics.median(inproc), crimc.pct(inproc, 99), max(inproc)) if inproc else None
    s["plugin_del"] = (statistics.median(delproc), crimc.pct(delproc, 99)) if delproc else None
    # A timing, not a correctness check (BENCH.md target: p99 <= 10 ms, reported):
    # the gate only catches a regression by an order of magnitude on a busy
    # 2-vCPU runner.
    p99 = crimc.pct(inproc, 99) if inproc else -1
    ck.check(len(inproc) == len(sids) and inproc and statistics.median(inproc) <= 5.0 and p99 <= 50.0,
             "meshcut ADD inside the plugin over %d CRI pods: p50 %.2f ms, p99 %.2f ms (target p99 <= 10 ms: %s)"
             % (len(inproc), statistics.median(inproc) if inproc else -1, p99, "met" if 0 <= p99 <= 10 else "MISSED"))
    if base is not None and run_base:
        s["base_run"] = (ms(statistics.median(run_base)), ms(crimc.pct(run_base, 99)))
        s["base_rm"] = (ms(statistics.median(rm_base)), ms(crimc.pct(rm_base, 99)))
        d50 = s["mc_run"][0] - s["base_run"][0]
        d99 = s["mc_run"][1] - s["base_run"][1]
        s["delta"] = (d50, d99)
        log("RunPodSandbox over %d pods each, alternating: with meshcut p50 %.1f p99 %.1f ms; without p50 %.1f "
            "p99 %.1f ms; meshcut adds p50 %+.1f ms, p99 %+.1f ms" % (n, *s["mc_run"], *s["base_run"], d50, d99))
        # A timing of containerd + runc + both CNI chains, not of meshcut alone
        # (meshcut's own part is the in-plugin ADD above): a busy 2-vCPU CI
        # runner moved this p50 delta between -3 and +17 ms from run to run,
        # so it is reported against the BENCH.md target and gated only with
        # --gate-timing (a benchmark run, e.g. on a quiet machine).
        met = d50 <= 10.0
        line = ("RunPodSandbox p50 with meshcut - without: %+.1f ms (target <= 10 ms: %s); p99 %+.1f ms"
                % (d50, "met" if met else "MISSED", d99))
        if GATE_TIMING:
            ck.check(met, line)
        else:
            log("timing " + line)


def check_rescan_vs_del(ck, d, plugin_log, summary):
    """A guard for the race this test found when meshcutd re-scanned the CNI
    cache every --gc-interval (it now re-scans only at start): libcni deletes a
    pod's cache file only after the whole chain's DEL (meshcut first, then
    bridge), so a re-scan in that window saw a cache entry, a live netns and no
    record, and enrolled the pod again right after its DEL."""
    first_del = {}
    for x in crimc.plugin_log(plugin_log):
        if x.get("command") == "DEL" and x.get("containerID"):
            first_del.setdefault(x["containerID"], x.get("ts", 0))
    dlog = crimc.plugin_log(d.logfile)   # meshcutd logs JSON lines too
    again = [x for x in dlog if x.get("msg", "").startswith("re-scan: enrolled")
             and x.get("containerID") in first_del and x.get("ts", 0) > first_del[x["containerID"]]]
    tried = [x for x in dlog if x.get("msg", "").startswith("fail-open") and "no interface" in x.get("error", "")]
    summary["rescan_after_del"] = (len(again), len(tried))
    for x in again:
        log("re-scan enrolled %s %.1f ms after its first DEL" % (x["containerID"][:12],
                                                                 1e3 * (x["ts"] - first_del[x["containerID"]])))
    if tried:
        log("re-scan also tried %d time(s) to enroll a pod whose eth0 was already gone (DEL in progress): %s"
            % (len(tried), tried[0].get("error")))
    ck.check(not again, "meshcutd's periodic re-scan never re-enrolled a pod after its DEL (%d times)" % len(again))


def print_summary(tm, s):
    print("\n==== summary ====")
    for name, sec in tm.phases:
        print("  %-45s %8s" % (name, "%.2f s" % sec if sec is not None else "-"))
    tr = s.get("traffic")
    if tr:
        print("  traffic: %d B in %.2f s between two CRI pods' containers; bytes_redirect_node +%d; "
              "client veth carried %d B" % (tr["bytes"], tr["seconds"], tr["redirected"], tr["veth_bytes"]))
    m = s.get("many")
    if m:
        print("  %d pods in a row:" % m["n"])
        if m.get("mc_run"):
            print("    RunPodSandbox with meshcut     p50 %6.1f ms  p99 %6.1f ms" % m["mc_run"])
        if m.get("base_run"):
            print("    RunPodSandbox without meshcut  p50 %6.1f ms  p99 %6.1f ms" % m["base_run"])
            print("    meshcut adds to pod start      p50 %+6.1f ms  p99 %+6.1f ms" % m["delta"])
        if m.get("mc_rm"):
            print("    Stop+Remove with meshcut       p50 %6.1f ms  p99 %6.1f ms" % m["mc_rm"])
        if m.get("base_rm"):
            print("    Stop+Remove without meshcut    p50 %6.1f ms  p99 %6.1f ms" % m["base_rm"])
        if m.get("plugin_add"):
            print("    meshcut ADD in the plugin      p50 %6.2f ms  p99 %6.2f ms  max %.2f ms" % m["plugin_add"])
        if m.get("plugin_del"):
            print("    meshcut DEL in the plugin      p50 %6.2f ms  p99 %6.2f ms" % m["plugin_del"])
    if "rescan_after_del" in s:
        print("  re-scan after DEL: %d re-enrollments, %d attempts on a half-deleted pod" % s["rescan_after_del"])
    print("  total %.1f s" % s.get("total_s", 0))


if __name__ == "__main__":
    main()
