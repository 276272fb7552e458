#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""meshcut mesh evaluation: the paper's section 5 on the mesh test bed
(e2e/meshbed.py; a benchmark with correctness checks, not a unit test).

Test bed (e2e/meshbed.py): two nodes in network namespaces joined by a VXLAN
overlay, a containerd (CRI) per node creating every pod with the real bridge +
host-local CNI chain and the meshcut plugin chained after them, one meshcutd
per node, kube-proxy-like services, a DNS pod behind a ClusterIP, and a
Bookinfo-shaped graph. Every meshed pod has istio-init's exact nat rules and
an HAProxy sidecar container as uid 1337 (outbound 15001 via SO_ORIGINAL_DST,
inbound 15006, upstream to the app from 127.0.0.6, `nbthread 1`).

The benchmark's client is the `client` pod on n1: wrk (HTTP/1.1 keep-alive,
closed loop), hey (fixed rate) and the correctness checker are exec'd into its
app container (CRI ExecSync, as uid 65534, so istio-init sends them to the
sidecar). Targets, by service name (resolved by the DNS pod):

  same      web-n1 (nginx on n1): client and server on one node;
  cross     web-n2 (nginx on n2): on two nodes;
  bookinfo  productpage (--placement bookinfo|all): the whole graph, 4 meshed
            hops per request over both nodes (Python, Node.js, nginx apps).

A request goes wrk -> sidecar(client):15001 -> [bridge | VXLAN] ->
sidecar(web):15006 -> (127.0.0.6) nginx:80, and back.

Modes (shared/BENCH.md, the paper's ablation; bed.MeshBed.set_mode), alternating
inside each repetition and cell (rotated so no mode always follows the same
one):

  baseline  no shortcut: every pod's intra-pod and same-node switches off
            (`meshcutd set --netns POD`), `meshcutd set --cross-node off` on both nodes;
  intra     socket shortcut inside pods only (app <-> sidecar);
  inter     pod <-> pod only: same-node sidecar <-> sidecar sockets, cross-node tc;
  full      all on.

Both decisions are taken per connection, and wrk, hey and the checker open
new connections for every sample.

Per sample the meshcutd counters of both nodes (and the link counters of cni0
and of the server pod's host veth) prove which shortcuts carried the load:
with INTRA on every pod's app <-> sidecar hop redirected at least 0.9x the
payload (bytes_redirect_intra), with it off no msg_redirect_intra; with NODE
on (same node) bytes_redirect_node >= 0.9x payload and the server's veth
carried ~none of it, off no msg_redirect_node; with tc on (two nodes)
tc_redirect_overlay and tc_redirect_peer >= 0.9 per request on each node and
cni0 carried ~none of the payload, off no tc_redirect_*; never a conntrack
INVALID drop.

Correctness pass, alongside every load sample (concurrently with wrk): the
checker fetches both files of the target N times through the mesh (new
connections, keep-alive inside each) and checks status 200 and the body's
sha256; zero errors allowed. Before and after the measurement a pass through
the whole Bookinfo graph (productpage -> details, reviews -> ratings, every
book) in every mode. wrk must report no socket error and no non-2xx.

Load: wrk -t min(2,c) -c c -d D --latency at c = 1, 10, 100, 1000 on the
1 KiB file; per cell: average, P50, P90, P99, QPS, ratio to baseline (median
[min-max] of per-repetition ratios). Fixed-rate run: hey -c C -q R/C -z S
and the whole machine's CPU from /proc/stat (plus the pod cgroups' cpu.stat)
divided by the requests; RSS of sidecars, apps and meshcutd.

Output: a Markdown table on stdout; table.md, samples.csv, results.json and
(gnuplot) latency_<placement>.png / qps_<placement>.png in --out (default
./bench-out/mesh-eval). Exit 0 ok, 1 error, 3 a check failed, 77 skipped (no
root, outside CI).

Usage:  /usr/bin/python3 e2e/mesh_eval.py [--quick | --demo] [--out DIR] [--cpu N]
                                         [--placement same|cross|both|bookinfo|all]
   full: both placements, c = 1 10 100 1000, 5 s x 3 repetitions (< 15 min)
   demo: baseline and full only, both placements, c = 1 10 100, 3 s x 1
  quick: CI smoke: every mode, one placement (cross), c = 1 10, 1 s x 1
"""

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))
sys.dont_write_bytecode = True
import benchlib  # noqa: E402
from benchlib import BenchError, paired_ratio  # noqa: E402

# server node and pod; the client is on n1. "bookinfo": the whole graph behind productpage.
PLACEMENTS = {"same": ("n1", "web-n1"), "cross": ("n2", "web-n2"), "bookinfo": ("n1", "productpage-v1")}
BOOKINFO_URL = "http://productpage:9080/productpage?id=0"
BOOKINFO_MAX_C = 100
SHORTCUT_MAX = 0.05  # share of the payload a bypassed device may still carry (handshakes, FINs)
ON_MIN = 0.9         # share of the payload (or requests) a shortcut should carry (less: a coverage warning)
HOP_MISSING = 0.5    # a socket shortcut short by more than this share of one hop's payload: a check fails,
                     # unless msg_pass_no_peer (beyond the connections to the other node) says why
                     # (connections that lost the first-bytes race stay
                     # on TCP for life, a documented limitation): then a coverage warning
TARGETS = "same node c=1: full ≥ 30 % lower avg and P90; two nodes c=1: ≥ 15 % lower; QPS ≥ 0.99× at every c"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke run: 1 s x 1 repetition, c = 1 10, one placement")
    ap.add_argument("--demo", action="store_true", help="short baseline-vs-full run: 3 s x 1, c = 1 10 100, "
                                                        "both placements")
    ap.add_argument("--out", default="./bench-out/mesh-eval", help="output directory (default ./bench-out/mesh-eval)")
    ap.add_argument("--placement", choices=("same", "cross", "both", "bookinfo", "all"),
                    help="client and server pod on one node, on two, or both (default both; --quick: cross)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, --quick 1)")
    ap.add_argument("--duration", type=float, help="seconds per wrk sample (default 5, --quick 1)")
    ap.add_argument("--conc", help="comma-separated concurrency levels (default 1,10,100,1000; --quick 1,10)")
    ap.add_argument("--file", choices=("1k", "16k"), default="1k", help="file wrk and hey fetch (default 1k)")
    ap.add_argument("--rate", type=int, default=2000, help="fixed-rate run: requests/s in total (default 2000)")
    ap.add_argument("--bookinfo-rate", type=int, default=300, help="fixed-rate run through the Bookinfo graph: "
                                                                     "requests/s (default 300)")
    ap.add_argument("--rate-conns", type=int, default=10, help="fixed-rate run: connections (default 10)")
    ap.add_argument("--rate-seconds", type=float, help="fixed-rate run: seconds (default 3, --quick 1)")
    ap.add_argument("--check-n", type=int, help="correctness pass: fetches of each file per sample "
                                                "(default 50, --quick 20)")
    ap.add_argument("--cpu", type=int, help="pin every pod process (wrk, hey, checker, sidecars, nginx) to this "
                                            "CPU (default: nothing pinned)")
    ap.add_argument("--build-dir", default=os.environ.get("MESHCUT_BUILD", os.path.join(REPO, "build")))
    a = ap.parse_args()
    short = a.quick or a.demo
    a.placement = a.placement or ("cross" if a.quick else "both")
    a.placements = {"both": ["same", "cross"], "all": ["same", "cross", "bookinfo"]}.get(a.placement, [a.placement])
    a.modes = ["baseline", "full"] if a.demo else ["baseline", "intra", "inter", "full"]
    a.reps = a.reps or (1 if short else 3)
    a.duration = a.duration or (1.0 if a.quick else 3.0 if a.demo else 5.0)
    a.conc = [int(x) for x in (a.conc or ("1,10" if a.quick else "1,10,100" if a.demo else "1,10,100,1000")).split(",")]
    a.rate_seconds = a.rate_seconds or (1.0 if short else 3.0)
    a.check_n = a.check_n or (20 if short else 50)
    a.out = os.path.abspath(a.out)
    a.build_dir = os.path.abspath(a.build_dir)
    a.iters = None
    if a.cpu is not None and not 0 <= a.cpu < os.cpu_count():
        ap.error(f"--cpu {a.cpu}: this machine has {os.cpu_count()} CPUs")
    if a.reps < 1 or a.duration <= 0 or min(a.conc) < 1 or a.rate < 1 or a.rate_conns < 1:
        ap.error("--reps, --duration, --conc, --rate and --rate-conns must be positive")
    return a


ARGS = parse_args()
os.environ["MESHCUT_BUILD"] = ARGS.build_dir
sys.path.insert(0, os.path.join(REPO, "e2e"))
import bed  # noqa: E402
from bed import MODES, INTRA_ON, NODE_ON, TC_ON, mcnet, twonode  # noqa: E402
log = benchlib.logger("mesh_eval")
CLIENT = "client"
assert set(ARGS.modes) <= set(MODES)

# ---- programs run inside the client pod ------------------------------------------

# wrk's summary as one JSON line (exact counts, percentiles in µs).
WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'MCJSON {"requests":%d,"bytes":%d,"duration_us":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_status":%d,"err_timeout":%d,"mean_us":%.1f,"stdev_us":%.1f,"min_us":%d,"max_us":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.min, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""

# ---- small helpers -------------------------------------------------------------

def proc_stat():
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


def rss_kib(pid, children=True):
    """VmRSS of PID (and of its direct children: nginx workers)."""
    total = 0
    pids = [pid]
    if children:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                pids += [int(x) for x in f.read().split()]
        except OSError:
            pass
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def fmt_ms(us):
    v = us / 1000.0
    if v < 1:
        return f"{v:.3f}"
    if v < 10:
        return f"{v:.2f}"
    if v < 100:
        return f"{v:.1f}"
    return f"{v:.0f}"


def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


class Bench(benchlib.PodBench):
    def __init__(self, args):
        super().__init__(args, mcnet)
        self.bed = None
        self.pods = {}
        self.warnings = []

    # ---- the bed -------------------------------------------------------------

    def setup(self):
        a = self.args
        t0 = time.monotonic()
        self.bed = bed.MeshBed(cpu=a.cpu).up()
        self.nodes, self.pods = self.bed.nodes, self.bed.pods
        with open(os.path.join(self.bed.dir, "report.lua"), "w") as f:
            f.write(WRK_LUA)
        os.chmod(os.path.join(self.bed.dir, "report.lua"), 0o644)
        self.meta["pods"] = {p.name: {"node": p.node.name, "ip": p.ip, "host_veth": p.host_veth, "app": p.app,
                                      "meshed": p.meshed} for p in self.pods.values()}
        self.meta["bed_up_s"] = round(time.monotonic() - t0, 1)
        self.graph_pass("after bring-up")
        self.set_mode("baseline")
        for pl in a.placements:  # reachability and warm-up (ARP, DNS, first connections)
            res = self.run_checker(pl, 0.0, 3)
            if res["n_errors"]:
                raise BenchError(f"{pl}: first fetches through the mesh failed: {res['errors'][:3]}")
            if not a.quick:
                self.wrk(pl, 10, 1.0)  # warm-up, not recorded

    def graph_pass(self, when):
        """The correctness pass through the whole bed (productpage graph, every
        book; both web pods) in every mode; zero errors allowed."""
        for mode in self.args.modes:
            self.set_mode(mode)
            res = self.bed.check(n=2)
            want = 2 * len(bed.expected_digests())
            self.meta.setdefault("graph_passes", []).append({"when": when, "mode": mode, **res})
            if res["n_errors"] or res["ok"] != want:
                self.problems.append(f"graph pass {when}, {mode}: {res['ok']} of {want} ok: {res['errors'][:3]}")
            log(f"graph pass {when}, {mode}: {res['ok']}/{want} responses ok ({res['conns']} connections)")

    def server(self, placement):
        return self.pods[PLACEMENTS[placement][1]]

    def set_mode(self, mode):
        self.bed.set_mode(mode)
        self.mode = mode

    # ---- counters --------------------------------------------------------------

    def snapshot(self, placement):
        srv = self.server(placement)
        out = {name: benchlib.socket_counters(n, twonode.BRIDGE) for name, n in self.nodes.items()}
        st = srv.node.link_stats(srv.host_veth) or {}
        out["srv_veth_bytes"] = st.get("rx_bytes", 0) + st.get("tx_bytes", 0)
        return out

    def conns_later(self, delay):
        """A thread that takes `meshcutd conns` of every node DELAY s into the
        sample: which live connections took which path (explains a warning)."""
        def take():
            time.sleep(delay)
            for name, n in self.nodes.items():
                r = n.daemon.cli("conns", "--json", check=False)
                try:
                    t.conns[name] = json.loads(r.stdout)
                except ValueError:
                    t.conns[name] = []
        t = threading.Thread(target=take, daemon=True)
        t.conns = {}
        t.start()
        return t

    def normal_path_conns(self, node, conns, limit=4):
        """The connections of NODE's `meshcutd conns` list with a direction on
        the normal path, as short text; not those to a pod on another node
        (a sidecar's upstream there has no local peer, by design)."""
        away = {p.ip for p in self.pods.values() if p.node.name != node}
        out = []
        for c in conns:
            if c["client"].split(" -> ")[-1].rsplit(":", 1)[0] in away:
                continue
            dirs = [(d, c.get(d) or {}) for d in ("client_to_server", "server_to_client")]
            if not any(x.get("path") == "normal" for _, x in dirs):
                continue
            out.append("%s%s %s" % (c["client"], "" if c.get("paired") else " (unpaired)", ", ".join(
                f"{d.split('_')[0][0]}>{d.split('_')[-1][0]} {x.get('path')} "
                f"{x.get('bytes_normal_path', 0) + x.get('bytes_redirected', 0)} B" for d, x in dirs if x)))
        more = len(out) - limit
        return out[:limit] + ([f"{more} more"] if more > 0 else [])

    def check(self, row, before, after, placement, conns=None):
        """Did each shortcut of the mode carry the load (and the others not)?"""
        mode = row["mode"]
        what = f"{placement} c={row['conc']} {mode} rep {row['rep']}"
        payload = max(1, row["bytes"] + row["requests"] * 30)  # responses + (at least) the request lines
        reqs = max(1, row["requests"])
        srv_node = PLACEMENTS[placement][0]
        pods_on = {"n1": 2 if placement == "same" else 1, "n2": 0 if placement == "same" else 1}
        prob, warn = [], []
        deltas = self.record_paths(row, before, after, payload)
        if placement == "bookinfo":
            return self.check_graph(row, deltas, what)
        for node in ("n1", "n2"):
            d = deltas[node]
            allc = benchlib.delta(before[node]["all"], after[node]["all"])
            n0, w0 = len(prob), len(warn)
            nopeer = allc.get("msg_pass_no_peer", 0)
            # Every connection the client's sidecar opens to the other node has a first send with no local
            # peer (one per client connection = per passive socket on n1); only what exceeds that are sends
            # that lost the first-bytes race.
            raced = nopeer - (allc.get("sock_added_passive", 0) if placement == "cross" and node == "n1" else 0)
            if INTRA_ON[mode] and pods_on[node]:
                got, want = d["intra_bytes"] / payload, pods_on[node]
                msg = (f"{node} intra-pod socket shortcut carried {got:.2f}x the payload, want {want}x "
                       f"({want} pod hop(s) there; msg_pass_no_peer +{nopeer})")
                if got < want - HOP_MISSING and raced <= 0:
                    prob.append(msg)
                elif got < ON_MIN * want:
                    warn.append(msg + (f" -- the first-bytes race ({raced} first sends)" if raced > 0 else ""))
            elif d["intra_msgs"]:
                prob.append(f"{node} INTRA off but msg_redirect_intra +{d['intra_msgs']}")
            if NODE_ON[mode] and placement == "same" and node == "n1":
                got = d["node_bytes"] / payload
                msg = (f"{node} same-node socket shortcut carried {got:.2f}x the payload, want 1x "
                       f"(msg_pass_no_peer +{nopeer})")
                if got < 1 - HOP_MISSING and raced <= 0:
                    prob.append(msg)
                elif got < ON_MIN:
                    warn.append(msg + (f" -- the first-bytes race ({raced} first sends)" if raced > 0 else ""))
            elif d["node_msgs"]:
                prob.append(f"{node} msg_redirect_node +{d['node_msgs']} (NODE off or no pod pair on the node)")
            if TC_ON[mode] and placement == "cross":
                if d["overlay"] < ON_MIN * reqs or d["peer"] < ON_MIN * reqs:
                    prob.append(f"{node} tc shortcut carried too little: overlay +{d['overlay']}, peer "
                                f"+{d['peer']} for {reqs} requests")
                if row[f"{node}_cni0_share"] > SHORTCUT_MAX:
                    prob.append(f"{node} cni0 carried {row[f'{node}_cni0_share']:.3f}x the payload with tc on")
            else:
                if d["overlay"] or d["peer"]:
                    prob.append(f"{node} cross-node tc redirected (overlay +{d['overlay']}, peer +{d['peer']}) "
                                f"with tc off or both pods on one node")
                if not TC_ON[mode] and d["local"]:
                    prob.append(f"{node} tc off but tc_redirect_local +{d['local']}")
                if placement == "cross" and row[f"{node}_cni0_share"] < benchlib.BRIDGE_MIN:
                    prob.append(f"{node} cni0 carried only {row[f'{node}_cni0_share']:.3f}x the payload with tc off")
            if d["ct_invalid"]:
                prob.append(f"{node} conntrack INVALID drops +{d['ct_invalid']}")
            moved = " [%s counters: %s]" % (node, " ".join(
                f"{k}=+{v}" for k, v in sorted(allc.items()) if v and not k.startswith("tc_pass")))
            if len(prob) > n0:
                prob[-1] += moved
            if len(warn) > w0:
                warn[-1] += moved
                slow = self.normal_path_conns(node, (conns or {}).get(node, []))
                if slow:
                    warn[-1] += f" [{node} mid-sample, on the normal path: " + "; ".join(slow) + "]"
        if placement == "same":
            if NODE_ON[mode] and row["srv_veth_share"] > SHORTCUT_MAX:
                prob.append(f"server veth ({srv_node}) carried {row['srv_veth_share']:.3f}x the payload with the "
                            f"same-node socket shortcut on")
            if not NODE_ON[mode] and not TC_ON[mode] and row["srv_veth_share"] < benchlib.BRIDGE_MIN:
                prob.append(f"server veth carried only {row['srv_veth_share']:.3f}x the payload with NODE and tc off")
        self.problems += [f"{what}: {p}" for p in prob]
        self.warnings += [f"{what}: {p}" for p in warn]
        row["path_ok"] = not prob
        row["coverage_warning"] = "; ".join(warn)

    @staticmethod
    def record_paths(row, before, after, payload):
        """Per node: the sample's counter deltas (into ROW, shares of PAYLOAD too)."""
        deltas = {}
        for node in ("n1", "n2"):
            d = deltas[node] = benchlib.delta(before[node], after[node], skip=("all",))
            for k in ("intra_bytes", "intra_msgs", "node_bytes", "node_msgs", "pairs", "overlay", "peer", "local",
                      "ct_invalid"):
                row[f"{node}_{k}"] = d[k]
            row[f"{node}_intra_share"] = round(d["intra_bytes"] / payload, 3)
            row[f"{node}_node_share"] = round(d["node_bytes"] / payload, 3)
            row[f"{node}_cni0_share"] = round(d["cni0_bytes"] / payload, 3)
        row["srv_veth_share"] = round((after["srv_veth_bytes"] - before["srv_veth_bytes"]) / payload, 3)
        return deltas

    def check_graph(self, row, deltas, what):
        """The Bookinfo graph: many hops on both nodes (productpage -> reviews-v1 on
        n1, -> details and reviews-v2 on n2, reviews -> ratings on n2); each
        shortcut of the mode must have carried some of it, the others none."""
        prob = []
        for node in ("n1", "n2"):
            d = deltas[node]
            for on, key, name in ((INTRA_ON[row["mode"]], "intra_msgs", "intra-pod"),
                                  (NODE_ON[row["mode"]], "node_msgs", "same-node"),
                                  (TC_ON[row["mode"]], "overlay", "cross-node tc")):
                if on and not d[key]:
                    prob.append(f"{node}: {name} shortcut on but it carried nothing")
                if not on and d[key]:
                    prob.append(f"{node}: {name} shortcut off but {key} +{d[key]}")
            if d["ct_invalid"]:
                prob.append(f"{node} conntrack INVALID drops +{d['ct_invalid']}")
        self.problems += [f"{what}: {p}" for p in prob]
        row["path_ok"] = not prob
        row["coverage_warning"] = ""

    # ---- clients --------------------------------------------------------------

    def run_app(self, cmd, timeout):
        """CMD in the client pod's app container (CRI ExecSync, uid 65534); its stdout."""
        rc, out, err = self.bed.exec(CLIENT, cmd, timeout)
        if rc != 0:
            raise BenchError(f"{cmd[0]} in the client pod exited {rc}: {err.strip()[-500:]}")
        return out

    def checker_cmd(self, placement, spread, n):
        svc = self.server(placement).service
        urls = [BOOKINFO_URL] if placement == "bookinfo" else \
            [u for u in bed.expected_digests() if u.startswith(f"http://{svc}:")]
        return self.bed.checker_argv(urls, spread, n)

    def run_checker(self, placement, spread, n):
        return json.loads(self.run_app(self.checker_cmd(placement, spread, n), 60 + spread).strip().splitlines()[-1])

    def url(self, placement):
        if placement == "bookinfo":
            return BOOKINFO_URL
        return f"http://{self.server(placement).service}:80/{self.args.file}.bin"

    def wrk(self, placement, conc, seconds):
        cmd = ["/usr/bin/wrk", "-t", str(min(2, conc)), "-c", str(conc), "-d", f"{seconds:g}s", "--timeout", "10s",
               "--latency", "-s", "/bed/report.lua", self.url(placement)]
        out = self.run_app(cmd, seconds + 60)
        line = [x for x in out.splitlines() if x.startswith("MCJSON ")]
        if not line:
            raise BenchError(f"wrk printed no summary: {out[-500:]}")
        return json.loads(line[-1][7:])

    # ---- samples -----------------------------------------------------------------

    def load_sample(self, rep, placement, conc, mode):
        a = self.args
        row = {"kind": "load", "rep": rep, "placement": placement, "conc": conc, "mode": mode,
               "file": a.file, "duration_s": a.duration}
        before = self.snapshot(placement)
        cpu0, cg0 = proc_stat(), self.bed.cpu_usage_us()
        # The correctness pass runs alongside the load, spread over its duration.
        chk = self.bed.exec_async(CLIENT, self.checker_cmd(placement, a.duration * 0.8, a.check_n), 60 + a.duration)
        t0 = time.monotonic()
        mid = self.conns_later(a.duration * 0.6)
        w = self.wrk(placement, conc, a.duration)
        rc, out, err = chk.result()
        mid.join()
        row["wall_s"] = round(time.monotonic() - t0, 2)
        cpu1, cg1 = proc_stat(), self.bed.cpu_usage_us()
        time.sleep(0.05)  # closing handshakes, before the counters and any switch
        row.update(w)
        row["qps"] = round(w["requests"] / (w["duration_us"] / 1e6), 1)
        busy = (cpu1[0] - cpu0[0]) / os.sysconf("SC_CLK_TCK")
        row["machine_cpu_util"] = round((cpu1[0] - cpu0[0]) / max(1, cpu1[1] - cpu0[1]), 3)
        row["cpu_us_per_req"] = round(busy * 1e6 / max(1, w["requests"]), 2)
        row["cg_cpu_us_per_req"] = round((cg1 - cg0) / max(1, w["requests"]), 2)
        c = json.loads(out.strip().splitlines()[-1])
        row["check_ok"], row["check_errors"] = c["ok"], c["n_errors"]
        what = f"{placement} c={conc} {mode} rep {rep}"
        if c["n_errors"] or c["ok"] != a.check_n * (1 if placement == "bookinfo" else len(bed.WEB_FILES)):
            self.problems.append(f"{what}: correctness pass: {c['ok']} ok, {c['n_errors']} errors: {c['errors'][:3]}")
        errs = {k: w[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout") if w[k]}
        if errs or not w["requests"]:
            self.problems.append(f"{what}: wrk: {w['requests']} requests, errors {errs}")
        self.check(row, before, self.snapshot(placement), placement, mid.conns)
        log(f"{what}: {row['qps']:.0f} req/s, avg {w['mean_us']:.0f} µs, p99 {w['p99_us']} µs"
            + ("" if row["path_ok"] else " (PATH CHECK FAILED)") + (" (partial coverage)" if row["coverage_warning"]
                                                                     else ""))
        return row

    def rate_sample(self, rep, placement, mode):
        a = self.args
        url = self.url(placement)
        rate = a.bookinfo_rate if placement == "bookinfo" else a.rate
        row = {"kind": "fixed_rate", "rep": rep, "placement": placement, "mode": mode, "rate": rate,
               "conc": a.rate_conns, "duration_s": a.rate_seconds}
        cpu0, cg0 = proc_stat(), self.bed.cpu_usage_us()
        t0 = time.monotonic()
        per = max(1, round(rate / a.rate_conns))
        out = self.run_app(["/usr/bin/hey", "-z", f"{a.rate_seconds:g}s", "-c", str(a.rate_conns), "-q", str(per),
                            "-t", "10", url], a.rate_seconds + 60)
        n200 = sum(int(x.split()[1]) for x in out.split("Status code distribution:")[-1].splitlines()
                   if x.strip().startswith("[200]"))
        codes = [x.strip() for x in out.split("Status code distribution:")[-1].splitlines()
                 if x.strip().startswith("[") and not x.strip().startswith("[200]")]
        err = "Error distribution:" in out
        row["requests"], row["bad"] = n200, len(codes) + int(err)
        if row["bad"]:
            self.problems.append(f"{placement} {mode} fixed rate: hey reported {codes} "
                                 f"{out.split('Error distribution:')[-1][:300] if err else ''}")
        row["client"] = "hey"
        wall = time.monotonic() - t0
        cpu1, cg1 = proc_stat(), self.bed.cpu_usage_us()
        busy = (cpu1[0] - cpu0[0]) / os.sysconf("SC_CLK_TCK")
        row["achieved_rps"] = round(row["requests"] / a.rate_seconds, 1)
        row["wall_s"] = round(wall, 2)
        row["machine_cpu_util"] = round((cpu1[0] - cpu0[0]) / max(1, cpu1[1] - cpu0[1]), 3)
        row["cpu_us_per_req"] = round(busy * 1e6 / max(1, row["requests"]), 2)
        row["cg_cpu_us_per_req"] = round((cg1 - cg0) / max(1, row["requests"]), 2)
        row["rss_kib_pods"] = sum(rss_kib(self.bed.pids(p.name, c)) for p in self.pods.values() for c in p.containers)
        row["rss_kib_meshcutd"] = sum(rss_kib(n.daemon.proc.pid, children=False) for n in self.nodes.values())
        if row["achieved_rps"] < 0.95 * rate:
            # A throughput, not a correctness check: the quick (CI) run shares
            # the CPUs with other work, so there it is reported, not counted.
            msg = f"{placement} {mode} fixed rate: only {row['achieved_rps']:.0f} of {rate} req/s (lower --rate)"
            if a.quick:
                log("timing " + msg)
            else:
                self.problems.append(msg)
        time.sleep(0.05)
        return row

    def measure(self):
        a = self.args
        # the Bookinfo graph (Python apps, 4 meshed hops) up to c = 100
        cells = [(pl, c) for pl in a.placements for c in a.conc if pl != "bookinfo" or c <= BOOKINFO_MAX_C]
        k = 0
        for rep in range(1, a.reps + 1):
            t0 = time.monotonic()
            for pl, conc in cells:
                order = a.modes[k % len(a.modes):] + a.modes[:k % len(a.modes)]
                k += 1
                for mode in order:
                    self.set_mode(mode)
                    self.samples.append(self.load_sample(rep, pl, conc, mode))
            for pl in a.placements:
                order = a.modes[k % len(a.modes):] + a.modes[:k % len(a.modes)]
                k += 1
                for mode in order:
                    self.set_mode(mode)
                    self.samples.append(self.rate_sample(rep, pl, mode))
            log(f"repetition {rep}/{a.reps} done in {time.monotonic() - t0:.1f} s")
        self.graph_pass("after the measurement")
        self.set_mode("baseline")

    # ---- report --------------------------------------------------------------------

    def report(self):
        a = self.args
        pl_name = {"same": "same node (client and web-n1 on n1)", "cross": "two nodes (client on n1, web-n2 on n2)",
                   "bookinfo": "the Bookinfo graph (client -> productpage on n1 -> details, reviews (v1 on n1, v2 "
                               "on n2) -> ratings on n2; Python, Node.js, nginx; c ≤ 100)"}
        try:
            cpu_model = [x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name")][0]
        except (OSError, IndexError):
            cpu_model = "?"
        pinned = "Nothing pinned." if a.cpu is None else f"Every pod process pinned to CPU {a.cpu}."
        machine = f"{platform.node()}: {cpu_model}, {os.cpu_count()} vCPUs, kernel {platform.release()}"
        lines = ["## meshcut mesh evaluation (paper §5) on the mesh test bed\n",
                 "Test bed (e2e/meshbed.py): two nodes in network namespaces (VXLAN), a containerd per node "
                 "creating every pod through CRI with the real CNI chain (bridge + host-local + meshcut), one "
                 "meshcutd per node, kube-proxy-like services, a DNS pod behind a ClusterIP, a Bookinfo-shaped "
                 "graph (9 pods). Each meshed pod: istio-init nat rules + HAProxy sidecar container (uid 1337, "
                 f"nbthread 1). Server: nginx (nginx-light, keep-alive) serving /{a.file}.bin; client: wrk "
                 "(HTTP/1.1 keep-alive, uid 65534) exec'd into the client pod, through both sidecars, by "
                 "service name.\n",
                 f"Machine: {machine}. {pinned} {a.reps} repetition(s) × {a.duration:g} s per sample, modes "
                 "alternating (rotated) inside each repetition and cell; values are medians over repetitions; "
                 "ratios are median [min–max] of per-repetition ratios to the baseline sample of the same "
                 f"repetition. Latency in ms (wrk --latency). Targets ({TARGETS}): ✗ marks a miss.\n"]
        summary = []
        for pl in a.placements:
            lines += [f"### {pl_name[pl]}\n",
                      "| c | mode | avg ms | P50 ms | P90 ms | P99 ms | QPS | avg / base | P90 / base | P99 / base "
                      "| QPS / base |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
            for conc in a.conc:
                by = {m: [s for s in self.samples if s["kind"] == "load" and s["placement"] == pl
                          and s["conc"] == conc and s["mode"] == m] for m in a.modes}
                if not all(by.values()):
                    continue
                for m in a.modes:
                    rs = by[m]
                    rec = {"placement": pl, "conc": conc, "mode": m, "n": len(rs)}
                    for key in ("mean_us", "p50_us", "p90_us", "p99_us", "qps", "cpu_us_per_req"):
                        rec[key] = med(rs, key)
                    cells = [fmt_ms(rec[k]) for k in ("mean_us", "p50_us", "p90_us", "p99_us")] + \
                        [f"{rec['qps']:.0f}"]
                    if m == "baseline":
                        cells += ["", "", "", ""]
                    else:
                        lat_t = None
                        if m == "full" and conc == 1 and pl != "bookinfo":
                            lat_t = 0.70 if pl == "same" else 0.85
                        for key, t in (("mean_us", lat_t), ("p90_us", lat_t if pl == "same" else None),
                                       ("p99_us", None)):
                            r = paired_ratio(rs, by["baseline"], key)
                            rec[f"{key}_vs_baseline"] = r
                            cells.append(benchlib.fmt_ratio(r, t, collapse=True))
                        r = paired_ratio(rs, by["baseline"], "qps")
                        rec["qps_vs_baseline"] = r
                        cells.append(benchlib.fmt_ratio(r, 0.99 if m == "full" else None, higher_is_better=True,
                                                        collapse=True))
                    summary.append(rec)
                    lines.append(f"| {conc} | {m} | " + " | ".join(cells) + " |")
            lines.append("")
        # Fixed rate.
        lines += [f"### CPU per request at a fixed rate ({a.rate} req/s; Bookinfo {a.bookinfo_rate} req/s; "
                  f"{a.rate_conns} keep-alive connections, "
                  f"{a.rate_seconds:g} s, hey)\n",
                  "Whole machine (/proc/stat, both vCPUs, all processes, softirqs included: on a shared machine "
                  "it also counts the other tenants) and the pod cgroups' cpu.stat (every container of both nodes: "
                  "what the mesh itself spent) per request; RSS of every container (sidecars and apps) of all pods and of both "
                  "meshcutds at the end of the run.\n",
                  "| placement | mode | achieved req/s | machine CPU | CPU µs/req | / base | cgroup CPU µs/req "
                  "| / base | RSS pods MiB | RSS meshcutd MiB |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for pl in a.placements:
            by = {m: [s for s in self.samples if s["kind"] == "fixed_rate" and s["placement"] == pl
                      and s["mode"] == m] for m in a.modes}
            if not all(by.values()):
                continue
            for m in a.modes:
                rs = by[m]
                rec = {"placement": pl, "mode": m, "kind": "fixed_rate",
                       **{k: med(rs, k) for k in ("achieved_rps", "machine_cpu_util", "cpu_us_per_req",
                                                  "cg_cpu_us_per_req", "rss_kib_pods", "rss_kib_meshcutd")}}
                r1 = r2 = None
                if m != "baseline":
                    r1 = paired_ratio(rs, by["baseline"], "cpu_us_per_req")
                    r2 = paired_ratio(rs, by["baseline"], "cg_cpu_us_per_req")
                rec["cpu_vs_baseline"], rec["cg_cpu_vs_baseline"] = r1, r2
                summary.append(rec)
                lines.append(f"| {pl} | {m} | {rec['achieved_rps']:.0f} | {100 * rec['machine_cpu_util']:.0f} % | "
                             f"{rec['cpu_us_per_req']:.1f} | {benchlib.fmt_ratio(r1, 1.0 if m == 'full' else None, collapse=True)} | "
                             f"{rec['cg_cpu_us_per_req']:.1f} | {benchlib.fmt_ratio(r2, 1.0 if m == 'full' else None, collapse=True)} | "
                             f"{rec['rss_kib_pods'] / 1024:.1f} | {rec['rss_kib_meshcutd'] / 1024:.1f} |")
        # Paths.
        rng = benchlib.fmt_range
        lines += ["", "### Which path carried the load (per-sample counter deltas / payload or requests; "
                  "min–max over the samples of a mode)\n",
                  "| placement | mode | n1 intra | n2 intra | n1 same-node | n1 tc overlay/peer per req "
                  "| n2 tc overlay/peer per req | n1 cni0 | n2 cni0 | server veth | correctness (ok / errors) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for pl in a.placements:
            for m in a.modes:
                ss = [s for s in self.samples if s["kind"] == "load" and s["placement"] == pl and s["mode"] == m]
                if not ss:
                    continue
                rq = [max(1, s["requests"]) for s in ss]
                cells = [rng([s["n1_intra_share"] for s in ss], "{:.2f}"), rng([s["n2_intra_share"] for s in ss],
                                                                              "{:.2f}"),
                         rng([s["n1_node_share"] for s in ss], "{:.2f}")]
                for n in ("n1", "n2"):
                    cells.append(rng([s[f"{n}_overlay"] / r for s, r in zip(ss, rq)], "{:.1f}") + " / " +
                                 rng([s[f"{n}_peer"] / r for s, r in zip(ss, rq)], "{:.1f}"))
                cells += [rng([s["n1_cni0_share"] for s in ss], "{:.2f}"), rng([s["n2_cni0_share"] for s in ss],
                                                                              "{:.2f}"),
                          rng([s["srv_veth_share"] for s in ss], "{:.2f}"),
                          f"{sum(s['check_ok'] for s in ss)} / {sum(s['check_errors'] for s in ss)}"]
                lines.append(f"| {pl} | {m} | " + " | ".join(cells) + " |")
        lines += ["",
                  "Modes: baseline = no shortcut; intra = socket shortcut app ↔ sidecar inside each pod "
                  "(MC_POD_F_INTRA), tc off; inter = pod ↔ pod only: same-node sidecar ↔ sidecar sockets "
                  "(MC_POD_F_NODE) + cross-node tc (`meshcutd set --cross-node on`); full = all. "
                  "Correctness: a checker fetched both files (1 KiB, 16 KiB) alongside every load sample and "
                  "compared status and sha256.",
                  f"Load average at start / end: {self.meta.get('loadavg_start')} / {self.meta.get('loadavg_end')}; "
                  f"total {self.meta.get('seconds')} s."]
        plots = self.plots(summary)
        if plots:
            lines.append("Plots: " + ", ".join(os.path.basename(p) for p in plots) + f" (in {a.out}).")
        else:
            lines.append("Plots skipped: gnuplot not installed (apt-get install -y gnuplot-nox).")
        if self.warnings:
            lines.append(f"\n{len(self.warnings)} sample(s) with partial shortcut coverage (a socket shortcut "
                         f"carried less than {ON_MIN:g}x of what it should: connections whose first send found no "
                         "peer in the sockhash -- the first-bytes race, see README -- stay on TCP for life; at c=1 "
                         "that is wrk's one connection, so the sample measured that hop unaccelerated; results.json "
                         "meta \"warnings\"): " + "; ".join(self.warnings[:3]))
        if self.problems:
            lines.append(f"\n**{len(self.problems)} check(s) failed** (see results.json \"problems\"): "
                         + "; ".join(self.problems[:5]))
        self.meta.update({
            "kernel": platform.release(), "cpus": os.cpu_count(), "machine": machine, "pinned_cpu": a.cpu, "quick": a.quick,
            "reps": a.reps, "duration_s": a.duration, "conc": a.conc, "placements": a.placements, "file": a.file,
            "modes": a.modes, "intra_on": INTRA_ON, "node_on": NODE_ON, "tc_on": TC_ON,
            "rate": a.rate, "bookinfo_rate": a.bookinfo_rate, "rate_conns": a.rate_conns, "rate_seconds": a.rate_seconds, "check_n": a.check_n,
            "meshcutd": mcnet.MESHCUTD, "sidecar": "haproxy nbthread 1", "server": "nginx worker_processes 1",
            "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0:1],
            "test_bed": "e2e/meshbed.py: containerd CRI pods on two netns nodes",
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "warnings": self.warnings})
        benchlib.write_outputs(a.out, "\n".join(lines) + "\n", self.samples, self.meta, summary, self.problems, log)

    def plots(self, summary):
        """latency_<placement>.png and qps_<placement>.png (gnuplot), like the paper's Fig. 8."""
        if not shutil.which("gnuplot"):
            log("gnuplot not installed: plots skipped (apt-get install -y gnuplot-nox)")
            return []
        a = self.args
        term = "pngcairo size 900,560 font 'sans,10'"
        r = subprocess.run(["gnuplot", "-e", "set terminal pngcairo"], capture_output=True, text=True)
        if r.returncode != 0:
            term = "png size 900,560"
        made = []
        for pl in a.placements:
            dat = os.path.join(a.out, f"plot_{pl}.dat")
            rows = {(s["conc"], s["mode"]): s for s in summary if s.get("placement") == pl and "qps" in s}
            with open(dat, "w") as f:
                f.write("# conc " + " ".join(f"{m}_avg_ms {m}_p99_ms {m}_qps" for m in a.modes) + "\n")
                for c in a.conc:
                    if not all((c, m) in rows for m in a.modes):
                        continue
                    f.write(f"{c} " + " ".join(f"{rows[(c, m)]['mean_us'] / 1000:.4f} {rows[(c, m)]['p99_us'] / 1000:.4f}"
                                                f" {rows[(c, m)]['qps']:.1f}" for m in a.modes) + "\n")
            title = {"same": "same node", "cross": "two nodes", "bookinfo": "Bookinfo graph"}[pl]
            target = ("productpage through the graph" if pl == "bookinfo"
                      else f"nginx /{a.file}.bin via two HAProxy sidecars")
            lat, qps = os.path.join(a.out, f"latency_{pl}.png"), os.path.join(a.out, f"qps_{pl}.png")
            script = f"""
set terminal {term}
set datafile commentschars '#'
set key outside right top
set grid
set logscale x
set xlabel 'concurrency (connections)'
set xtics ({", ".join(str(c) for c in a.conc)})
modes = "{' '.join(a.modes)}"
set output '{lat}'
set title 'meshcut mesh eval, {title}: latency vs concurrency ({target})'
set ylabel 'latency (ms), solid: average, dashed: P99'
set logscale y
plot for [i=1:{len(a.modes)}] '{dat}' using 1:(column(2+3*(i-1))) with linespoints lw 2 lc i pt 7 title word(modes, i).' avg', \\
     for [i=1:{len(a.modes)}] '{dat}' using 1:(column(3+3*(i-1))) with linespoints lw 1 dt 2 lc i pt 6 title word(modes, i).' P99'
unset logscale y
set output '{qps}'
set title 'meshcut mesh eval, {title}: throughput vs concurrency ({target})'
set ylabel 'requests/s'
set yrange [0:*]
plot for [i=1:{len(a.modes)}] '{dat}' using 1:(column(4+3*(i-1))) with linespoints lw 2 lc i pt 7 title word(modes, i)
"""
            r = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True)
            if r.returncode != 0:
                log(f"gnuplot failed for {pl}: {r.stderr.strip()[:500]}")
                continue
            made += [lat, qps]
        return made

    def main(self):
        benchlib.require_tools(("bpftool", "/usr/bin/wrk", "/usr/bin/hey", "/usr/sbin/haproxy", "/usr/sbin/nginx"))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = 4 * max(self.args.conc) + 256
        if soft < need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
            if hard < need:
                log(f"RLIMIT_NOFILE hard limit {hard} < {need}: c={max(self.args.conc)} may fail")
        log(f"placements {self.args.placements}, c = {self.args.conc}, {self.args.reps} x {self.args.duration:g} s"
            f" per sample -> {self.args.out}")
        benchlib.setup_measure_report(self, log)


def main():
    return benchlib.run_cluster_bench(Bench(ARGS), mcnet, log,
                                      (BenchError, RuntimeError, subprocess.TimeoutExpired, OSError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
