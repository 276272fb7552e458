#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Self-test of the CRI pod kit with Debian's reference CNI plugins only.

One CriNode (containerd in its own netns), 3 pods through CRI RunPodSandbox:
  - each pod's IP (PodSandboxStatus) is in the pod CIDR and equals eth0's
    address inside the pod netns (the netns path from the sandbox's runtime
    spec, cross-checked against /proc/<pause pid>/ns/net);
  - pod1 -> pod0 over TCP: busybox `nc` server container in pod0, busybox
    `nc` client run by CRI ExecSync in a container of pod1;
  - pod2 -> pod0 over TCP from this process: a Python socket made in a thread
    that setns()'d into pod2's netns;
  - after Stop+Remove: no veth on the node's bridge, no host-local
    reservation, no /var/lib/cni/results file of these pods, no pod netns
    mount, CRI lists no pod.
Then RunPodSandbox latency over --timing-pods more pods (p50/p99), teardown,
and a check that nothing of the node is left (netns, dir, mounts, cgroups,
CNI cache) and the root netns' ip_forward did not change.

Exit 0 only if every check passed. Ctrl-C / SIGTERM: full cleanup, exit 130.
Prints 'N passed, M failed' as its last line.
Usage: sudo /usr/bin/python3 e2e/cri/selftest.py [--timing-pods N] [--keep-going]
"""
import argparse
import ctypes
import ipaddress
import json
import os
import signal
import socket
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "test", "lib"))

import mctest  # noqa: E402
from mctest import pct  # noqa: E402
from node import CriNode  # noqa: E402

POD_CIDR = "10.251.7.0/24"
PORT = 8080
CLONE_NEWNET = 0x40000000

_ck = mctest.Checks(out=lambda m: print("  " + m, flush=True))
check = _ck.check


def in_netns(path, fn):
    """Run fn() in a new thread that has setns()'d into netns `path`."""
    libc = ctypes.CDLL(None, use_errno=True)
    box = {}

    def body():
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns " + path)
            finally:
                os.close(fd)
            box["v"] = fn()
        except BaseException as e:  # report in the caller
            box["e"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]


def tcp_echo(ip, port, msg, timeout=5.0):
    s = socket.create_connection((ip, port), timeout=timeout)
    try:
        s.sendall(msg)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data
    finally:
        s.close()


def wait_listening(pod, port, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = pod.sh(f"ss -Hltn 'sport = :{port}'", check=False).stdout
        if out.strip():
            return True
        time.sleep(0.05)
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--timing-pods", type=int, default=20,
                    help="extra pods created+removed to time RunPodSandbox")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--no-trace", action="store_true",
                    help="conflist without the chained mce-trace plugin (bridge+host-local only)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root")
        return 2

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    # also when started in the background (where SIGINT is inherited ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    with open("/proc/sys/net/ipv4/ip_forward") as f:
        fwd_before = f.read().strip()
    cidr = ipaddress.ip_network(POD_CIDR)
    # the conflist: bridge + host-local, then a pass-through chained plugin that
    # logs every call (what meshcut will see in this position)
    node = CriNode("self", POD_CIDR, log_level=args.log_level,
                   cni_bin_dirs=["/usr/lib/cni", ("mce-trace", os.path.join(HERE, "cni_trace.py"))])
    trace_log = os.path.join(node.dir, "cni-trace.jsonl")
    if not args.no_trace:
        node.extra_plugins.append({"type": "mce-trace", "logFile": trace_log})
    node_b = None
    run_times = []
    interrupted = False
    try:
        t0 = time.perf_counter()
        node.start()
        print(f"node {node.id}: containerd up, images imported, CRI ready "
              f"in {time.perf_counter() - t0:.2f}s (netns {node.netns}, bridge {node.bridge})")
        v = node.cri.version()
        print(f"CRI: {v.runtime_name} {v.runtime_version}, API {v.runtime_api_version}")

        print("3 pods:")
        pods = []
        for i in range(3):
            p = node.run_pod(f"pod{i}", labels={"app": "selftest", "idx": str(i)})
            run_times.append(p.run_seconds)
            pods.append(p)
            print(f"  {p.name}: sid {p.sid[:12]} ip {p.ip} netns {p.netns} "
                  f"({p.run_seconds * 1000:.0f} ms)")

        print("checks:")
        ips = [p.ip for p in pods]
        check(len(set(ips)) == 3, "3 distinct pod IPs", ips)
        for p in pods:
            check(p.ip and ipaddress.ip_address(p.ip) in cidr, f"{p.name} IP {p.ip} in {cidr}")
            addrs = json.loads(p.sh("ip -j -4 addr show dev eth0").stdout)
            got = [a["local"] for l in addrs for a in l.get("addr_info", [])]
            check(got == [p.ip], f"{p.name} eth0 in its netns has {p.ip}", got)
            pid = node.cri.pod_pid(p.sid)
            same = (pid and os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(p.netns).st_ino)
            check(same, f"{p.name} netns path == /proc/<pause pid {pid}>/ns/net")
            lo = p.sh("ip -br addr show dev lo").stdout
            check("127.0.0.1/8" in lo and ("UNKNOWN" in lo or " UP " in lo),
                  f"{p.name} lo is up (CRI's loopback network)", lo.strip())
        ports = node.bridge_ports()
        check(len(ports) == 3, f"3 veths on bridge {node.bridge}", ports)
        res = node.ipam_reservations()
        check(sorted(res) == sorted(ips), "host-local reservations == pod IPs", res)
        cache = node.cni_cache_files([p.sid for p in pods])
        check(len(cache) == 6, "6 CNI cache files (eth0 + cni-loopback lo per pod)",
              [os.path.basename(c)[:40] for c in cache])
        check(len(node.cri.list_pods()) == 3, "CRI ListPodSandbox shows 3 pods")

        # pod1 -> pod0 with busybox nc (server container in pod0, ExecSync in pod1)
        srv = node.run_container(pods[0], "srv",
                                 ["/bin/nc", "-ll", "-p", str(PORT), "-e", "/bin/cat"])
        cli = node.run_container(pods[1], "cli", ["/bin/sleep", "3600"])
        check(wait_listening(pods[0], PORT), f"nc server listening on {pods[0].ip}:{PORT}")
        rc, out, err = node.cri.exec_sync(
            cli, ["/bin/sh", "-c", f"echo hello-from-pod1 | nc -w 3 {pods[0].ip} {PORT}"])
        check(rc == 0 and out.strip() == b"hello-from-pod1",
              "pod1 -> pod0 TCP echo (busybox nc via ExecSync)", f"rc={rc} out={out!r} err={err!r}")
        # pod2 -> pod0 from this process, setns into pod2's netns
        try:
            got = in_netns(pods[2].netns, lambda: tcp_echo(pods[0].ip, PORT, b"hello-from-pod2"))
        except Exception as e:
            got = repr(e)
        check(got == b"hello-from-pod2", "pod2 -> pod0 TCP echo (python socket after setns)", got)
        rc, out, _ = node.cri.exec_sync(cli, ["/bin/sh", "-c", "ip -4 route"])
        gw = node.gateway_ip()
        check(rc == 0 and f"default via {gw} dev".encode() in out,
              f"pod default route via the bridge gateway {gw}",
              out.decode(errors="replace").strip())
        cst = node.cri.container_status(srv)
        check(cst.status.state == node.cri.m.CONTAINER_RUNNING, "server container RUNNING")

        print("stop + remove:")
        netns_paths = [p.netns for p in pods]
        sids = [p.sid for p in pods]
        for p in pods:
            node.remove_pod(p)
        check(node.cri.list_pods() == [], "CRI lists no pod")
        check(node.bridge_ports() == [], f"no veth on bridge {node.bridge}", node.bridge_ports())
        check(node.ipam_reservations() == [], "no host-local reservation",
              node.ipam_reservations())
        check(node.cni_cache_files(sids) == [], "no /var/lib/cni/results file of these pods",
              node.cni_cache_files(sids))
        left_ns = [n for n in netns_paths if os.path.exists(n)]
        check(left_ns == [], "pod netns mounts removed", left_ns)
        check(node.cri.list_containers() == [], "CRI lists no container")

        calls = []
        if not args.no_trace:
            print("chained plugin calls (mce-trace after bridge):")
            with open(trace_log) as f:
                calls = [json.loads(l) for l in f]
        for p, ns in zip(pods, netns_paths if calls else []):
            mine = [c for c in calls if c["containerId"] == p.sid]
            seq = [(c["command"], "netns" if c["netns"] else "no-netns",
                    "prevResult" if c["hasPrevResult"] else "no-prevResult") for c in mine]
            print(f"  {p.name}: {seq}")
            adds = [c for c in mine if c["command"] == "ADD"]
            check(len(adds) == 1 and adds[0]["netns"] == ns and adds[0]["ifname"] == "eth0"
                  and adds[0]["ips"] == [f"{p.ip}/{cidr.prefixlen}"],
                  f"{p.name}: one ADD with netns, eth0 and prevResult {p.ip}", adds)
            dels = [c for c in mine if c["command"] == "DEL"]
            check(len(dels) >= 1 and dels[0]["netns"] == ns and dels[0]["hasPrevResult"],
                  f"{p.name}: first DEL has the netns and prevResult", dels)

        print("second node alongside (another containerd):")
        node_b = CriNode("selfb", "10.251.8.0/24", log_level=args.log_level)
        node_b.start()
        pb = node_b.run_pod("b0")
        pa = node.run_pod("a-while-b")
        run_times.append(pa.run_seconds)
        check(node.proc.pid != node_b.proc.pid and node.proc.poll() is None
              and node_b.proc.poll() is None, "two containerd instances running")
        check(ipaddress.ip_address(pb.ip) in ipaddress.ip_network("10.251.8.0/24")
              and ipaddress.ip_address(pa.ip) in cidr,
              f"pods on both nodes get IPs from their own CIDR ({pa.ip}, {pb.ip})")
        check(len(node_b.cri.list_pods()) == 1 and len(node.cri.list_pods()) == 1,
              "each CRI lists only its own pod")
        node.remove_pod(pa)
        errs_b = node_b.teardown()
        node_b = None
        check(not errs_b, "second node torn down cleanly", errs_b)
        check(node.cri.list_pods() == [] and node.proc.poll() is None,
              "first node unaffected by the second's teardown")

        print(f"timing: {args.timing_pods} more pods (RunPodSandbox, then Stop+Remove)")
        rm_times = []
        for i in range(args.timing_pods):
            p = node.run_pod(f"t{i}")
            run_times.append(p.run_seconds)
            t1 = time.perf_counter()
            node.remove_pod(p)
            rm_times.append(time.perf_counter() - t1)
        check(node.ipam_reservations() == [] and node.bridge_ports() == []
              and node.cni_cache_files() == [], "no leftovers after the timing pods")
        ms = [t * 1000 for t in run_times]
        rms = [t * 1000 for t in rm_times]
        plugins = "+".join(pl["type"] + (f"({pl['ipam']['type']})" if "ipam" in pl else "")
                           for pl in node.conflist()["plugins"])
        print(f"  conflist: {plugins} (+ CRI's cni-loopback)")
        print(f"  RunPodSandbox n={len(ms)}: p50 {pct(ms, 50):.0f} ms, p99 {pct(ms, 99):.0f} ms, "
              f"mean {statistics.mean(ms):.0f} ms, max {max(ms):.0f} ms")
        if rms:
            print(f"  Stop+RemovePodSandbox n={len(rms)}: p50 {pct(rms, 50):.0f} ms, "
                  f"p99 {pct(rms, 99):.0f} ms")
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: cleaning up", file=sys.stderr)
    except Exception as e:
        check(False, "unexpected error", f"{type(e).__name__}: {e}")
        tail = node.log_tail(15)
        if tail:
            print("containerd log tail:\n" + tail, file=sys.stderr)
    finally:
        if node_b is not None:
            node_b.teardown()
        errs = node.teardown()

    print("teardown:")
    check(not errs, "teardown reported no problem", errs)
    check(not os.path.exists(node.netns_path), f"netns {node.netns} gone")
    check(not os.path.exists(node.dir), f"dir {node.dir} gone")
    check(node.mounts_under_dir() == [], "no mount left under the node dir")
    check(node.cgroup_dirs() == [], "no pod cgroup left", node.cgroup_dirs())
    check(node.cni_cache_files() == [], "no CNI cache file left", node.cni_cache_files())
    shims = node._pids_matching(f"-address {node.sock}")
    check(shims == [], "no shim of this node left", shims)
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        fwd_after = f.read().strip()
    check(fwd_after == fwd_before, f"root netns ip_forward unchanged ({fwd_before})", fwd_after)
    print(f"{_ck.passed} passed, {_ck.failed} failed")
    if interrupted:
        return 130
    return 0 if _ck.failed == 0 and _ck.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
