#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""meshcut mesh benchmark across two nodes: the socket shortcut on the sidecar
hops combined with the cross-node tc shortcut (a benchmark, not a test).

Two nodes in network namespaces (test/netns/twonode.py: VXLAN flannel.1 over a
veth "wire", pods through the real bridge + host-local CNI chain with the
meshcut plugin, one meshcutd per node with --pod-cidr 10.244.0.0/16
--overlay-dev flannel.1). Client pod c1 on n1, server pod s2 on n2, both
Istio-like (test/netns/istio_pod.py: istio-init's nat rules + an HAProxy
sidecar as uid 1337 forwarding to SO_ORIGINAL_DST, `nbthread 1`). The app
client (build/bench/rtt, root, not uid 1337) connects to s2's pod IP; a round
trip goes

    rtt client -> sidecar(n1):15001 -> [VXLAN] -> sidecar(n2):15006
               -> (from 127.0.0.6) rtt server, and back.

Modes, alternating inside each repetition and size (A B C D A B C D ...):

  baseline  socket shortcut off, tc shortcut off (both nodes);
  socket    socket shortcut on for the intra-pod hops (app <-> sidecar on n1
            and on n2), tc off;
  tc        tc shortcut on both nodes (`meshcutd set --cross-node on`), socket off;
  full      both on.

Switches. tc: `meshcutd set --cross-node on|off` on each node. Socket: every
process (sidecars, apps) lives in the cgroup the meshcutds attach sockops to,
and the pods' intra-pod switch is set with `meshcutd set --netns POD --intra-pod
on|off` (benchlib.set_pod_switches). Both
decisions are per connection (sockops at establishment, tc at the SYN), so
every sample opens a new connection after the switch.

Each sample is checked with the meshcutd counters of both nodes: with the
socket shortcut on, bytes_redirect_intra grew on each node by at least the
payload of both directions (request to the sidecar and reply to the app); off,
no msg_redirect_* moved. With tc on, tc_redirect_overlay(+_neigh) and
tc_redirect_peer grew by at least one per round trip on each node and cni0
carried ~none of the payload; off, no tc_redirect_* moved and cni0 carried it.

Sizes 64 B, 1 KiB, 64 KiB with all four processes (both apps, both sidecars)
pinned to one CPU (--cpu, default the last one), plus 64 B unpinned (the
sidecars' affinity is switched per sample with sched_setaffinity).

Prints a Markdown table and writes samples.csv, results.json, table.md to
--out (default ./bench-out/mesh-crossnode). Exit 0 ok, 1 error, 3 a check
failed, 77 skipped (no root, outside CI).

Usage:  sudo /usr/bin/python3 bench/mesh_crossnode_bench.py [--quick] [--out DIR]
"""

import os
import statistics
import subprocess
import sys
import time

import benchlib
from benchlib import BRIDGE_MIN, SHORTCUT_BRIDGE_MAX, BenchError, cfg_label, fmt_med, paired_ratio

REPO = benchlib.REPO

MODES = ["baseline", "socket", "tc", "full"]
SOCKET_ON = {"baseline": False, "socket": True, "tc": False, "full": True}
TC_ON = {"baseline": False, "socket": False, "tc": True, "full": True}
CONFIGS = [(64, "pinned"), (1024, "pinned"), (65536, "pinned"), (64, "unpinned")]

# Socket-shortcut counters recorded per sample (to tell why a connection was not redirected).
SOCK_DETAIL = ("sock_added_active", "sock_added_passive", "sock_add_failed", "sock_skip_early_data",
               "sock_not_enrolled", "msg_pass_no_peer", "msg_pass_sticky", "msg_pass_peer_gone")

REF = ("shared/BENCH.md, this VM, 64 B same vCPU: two HAProxy sidecars (Istio-style rules) 74–86 µs vs "
       "18–21 µs direct; cross-node tc alone 0.67–0.78× of 25.5 µs pod↔pod; target: mesh request latency, "
       "pods on two nodes, c=1: ≥ 15 % lower (paper: full optimisation 10–21 %)")


def parse_args(argv=None):
    ap = benchlib.bench_arg_parser(
        __doc__, out="./bench-out/mesh-crossnode", port=18200, bulk=False,
        iters_help="round trips per 64 B / 1 KiB pinned sample (64 KiB does a quarter, unpinned half; "
                   "default 20000, --quick 1000)",
        cpu_help="CPU the pinned rows put all four processes on (default: the last one)",
        port_help="first TCP port used by the servers in s2",
        quick_help="1 repetition, few iterations (CI smoke run)")
    return benchlib.check_bench_args(ap, ap.parse_args(argv))


# the test/netns helpers come from the build tree --build-dir names: main() imports them
istio_pod = mcnet = twonode = None
log = benchlib.logger("mesh_crossnode_bench")


def set_affinity_all_threads(pid, cpus):
    """sched_setaffinity on every thread of PID (taskset -a -p)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:
            pass


class Bench(benchlib.PodBench):
    def __init__(self, args):
        super().__init__(args, mcnet)
        self.sidecar_cpus = None
        self.ipods = []

    # ---- cluster -------------------------------------------------------------

    def setup(self):
        # One cgroup for everything in the pods, and meshcutd's sockops on it:
        # the socket shortcut is then switched per pod (MC_POD_F_INTRA).
        self.cg = mcnet.Cgroup("mxbench")
        extra = ["--pod-cidr", twonode.CLUSTER_CIDR, "--overlay-dev", twonode.VXLAN_DEV, "--cross-node", "off"]
        self.meta["daemon_extra"] = extra
        t0 = time.monotonic()
        self.cl = twonode.Cluster(self.cg, daemon_extra=extra, daemon_cgroup=self.cg).up()
        self.c1 = self.cl.add_pod("n1", "c1")
        self.s2 = self.cl.add_pod("n2", "s2")
        self.nodes = self.cl.nodes
        for n in self.nodes.values():
            att = n.daemon.status()["attachments"]
            if not (att.get("tc_overlay") or {}).get("attached"):
                raise BenchError(f"{n.name}: meshcutd did not attach tc_overlay to {twonode.VXLAN_DEV}: {att}")
        # Istio-like pods: istio-init rules + HAProxy as uid 1337, one thread.
        hx = ["nbthread 1"]
        for pod in (self.c1, self.s2):
            ip = istio_pod.IstioPod(pod.ns.name, pod.ip, sidecar="haproxy", cgroup_procs=self.cg.procs,
                                    haproxy_extra_global=hx)
            mcnet._cleanups.append(ip.stop)  # before the cgroup and netns go (cleanups run in reverse)
            ip.start()
            pod.istio = ip
            self.ipods.append(ip)
        self.meta["pods"] = {p.name: {"node": p.node.name, "ip": p.ip, "host_veth": p.host_veth,
                                      "sidecar_pid": p.istio.sidecar_pid} for p in (self.c1, self.s2)}
        # The pods as the CNI plugin enrolled them (intra-pod and cross-node on).
        for pod in (self.c1, self.s2):
            r = benchlib.pod_record(pod)
            if not (r["intra_pod"] and r["cross_node"] and r["host_ifindex"]):
                raise BenchError(f"{pod.name}: unexpected pod record {r}: not enrolled by the CNI plugin with "
                                 "intra-pod and cross-node?")
            self.meta["pods"][pod.name].update({"netns_cookie": r["netns_cookie"]})
        log(f"cluster up in {time.monotonic() - t0:.1f}s: c1 {self.c1.ip} on n1, s2 {self.s2.ip} on n2, "
            f"HAProxy sidecars pid {self.c1.istio.sidecar_pid} / {self.s2.istio.sidecar_pid}")
        self.set_mode("baseline")
        # Reachability through both sidecars (and neighbour warm-up).
        self.rtt_sample(0, "baseline", 64, "unpinned", 20, 5, self.args.port + 9, record=False)

    def set_socket(self, on):
        """The intra-pod socket shortcut of both pods, at once (meshcutd set --netns)."""
        for pod in (self.c1, self.s2):
            benchlib.set_pod_switches(pod, intra=on)

    def set_mode(self, mode):
        if mode == self.mode:
            return
        prev = self.mode
        if prev is None or SOCKET_ON[prev] != SOCKET_ON[mode]:
            self.set_socket(SOCKET_ON[mode])
        if prev is None or TC_ON[prev] != TC_ON[mode]:
            for n in self.nodes.values():
                benchlib.set_cross_node(n, TC_ON[mode])
        self.mode = mode

    def place_sidecars(self, cpu):
        cpus = {cpu} if cpu is not None else set(range(os.cpu_count()))
        if cpus == self.sidecar_cpus:
            return
        for ip in self.ipods:
            set_affinity_all_threads(ip.sidecar_pid, cpus)
        self.sidecar_cpus = cpus

    # ---- counters --------------------------------------------------------------

    def snapshot(self):
        return {name: benchlib.socket_counters(n, twonode.BRIDGE) for name, n in self.nodes.items()}

    def check(self, row, before, after, payload_bytes, iters):
        mode = row["mode"]
        what = f"{row['config']} {mode} rep {row['rep']}"
        for node in ("n1", "n2"):
            d = benchlib.delta(before[node], after[node], skip=("all",))
            allc = benchlib.delta(before[node]["all"], after[node]["all"])
            for k in SOCK_DETAIL:
                row[f"{node}_{k}"] = allc.get(k, 0)
            nproblems = len(self.problems)
            for k in ("intra_bytes", "intra_msgs", "pairs", "skip_disabled", "overlay", "peer", "ct_invalid"):
                row[f"{node}_{k}"] = d[k]
            row[f"{node}_cni0_share"] = round(d["cni0_bytes"] / payload_bytes, 4)
            if SOCKET_ON[mode]:
                # Each round trip: the request app -> sidecar and the reply sidecar -> app
                # on n1, sidecar -> app and app -> sidecar on n2.
                if d["intra_bytes"] < payload_bytes or d["pairs"] < 1:
                    self.problems.append(f"{what}: {node} socket shortcut carried too little: bytes_redirect_intra "
                                         f"+{d['intra_bytes']} (want >= {payload_bytes}), pairs_redirected "
                                         f"+{d['pairs']}")
            else:
                if d["intra_msgs"] or d["node_msgs"] or d["pairs"]:
                    self.problems.append(f"{what}: {node} socket shortcut off but it redirected (msg_redirect_intra "
                                         f"+{d['intra_msgs']}, msg_redirect_node +{d['node_msgs']}, pairs "
                                         f"+{d['pairs']})")
            if TC_ON[mode]:
                if d["overlay"] < iters or d["peer"] < iters:
                    self.problems.append(f"{what}: {node} tc shortcut carried too little: tc_redirect_overlay "
                                         f"+{d['overlay']}, tc_redirect_peer +{d['peer']} (want >= {iters})")
                if row[f"{node}_cni0_share"] > SHORTCUT_BRIDGE_MAX:
                    self.problems.append(f"{what}: {node} cni0 carried {row[f'{node}_cni0_share']:.3f} of the "
                                         f"payload bytes with the tc shortcut on")
            else:
                if d["overlay"] or d["peer"] or d["local"]:
                    self.problems.append(f"{what}: {node} tc off but it redirected (overlay +{d['overlay']}, "
                                         f"peer +{d['peer']}, local +{d['local']})")
                if row[f"{node}_cni0_share"] < BRIDGE_MIN:
                    self.problems.append(f"{what}: {node} cni0 carried only {row[f'{node}_cni0_share']:.3f} of "
                                         f"the payload bytes with tc off")
            if d["ct_invalid"]:
                self.problems.append(f"{what}: {node} conntrack INVALID drops +{d['ct_invalid']}")
            if len(self.problems) > nproblems:  # say what the counters did instead
                self.problems[-1] += " [%s counters: %s]" % (node, " ".join(
                    f"{k}=+{v}" for k, v in sorted(allc.items()) if v and not k.startswith("tc_")))

    # ---- samples -----------------------------------------------------------------

    def rtt_sample(self, rep, mode, size, placement, iters, warmup, port, record=True):
        cpu = self.args.cpu if placement == "pinned" else None
        self.place_sidecars(cpu)
        row = {"rep": rep, "mode": mode, "size": size, "placement": placement,
               "config": cfg_label(size, placement), "iters": iters, "warmup": warmup}
        addr = f"{self.s2.ip}:{port}"
        before = self.snapshot()
        server = self.spawn([self.rtt_bin, "server", "--tcp", addr, "--once"], self.s2, cpu,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        t0 = time.monotonic()
        out = self.children.serve(server, "ready", lambda: self.run_client(
            [self.rtt_bin, "client", "--tcp", addr] + benchlib.rtt_client_args(size, iters, warmup), self.c1, cpu))
        row["wall_s"] = round(time.monotonic() - t0, 3)
        time.sleep(0.03)  # the closing handshakes, before the counters and before any switch
        if not record:
            return None
        benchlib.merge_rtt(row, out)
        self.check(row, before, self.snapshot(), 2 * size * (iters + warmup), iters)
        return row

    def measure(self):
        a = self.args
        for rep in range(1, a.reps + 1):
            t0 = time.monotonic()
            for size, placement in CONFIGS:
                if placement != "pinned":
                    iters = max(1, a.iters // 2)
                elif size >= 65536:
                    iters = max(1, a.iters // 4)
                else:
                    iters = a.iters
                warmup = max(10, iters // 10)
                # Rotate the order each repetition so no mode always follows the same one.
                order = MODES[(rep - 1) % len(MODES):] + MODES[:(rep - 1) % len(MODES)]
                for mode in order:
                    self.set_mode(mode)
                    self.samples.append(self.rtt_sample(rep, mode, size, placement, iters, warmup,
                                                        a.port + MODES.index(mode)))
            log(f"repetition {rep}/{a.reps} done in {time.monotonic() - t0:.1f} s")
        self.set_mode("baseline")

    # ---- report --------------------------------------------------------------------

    def report(self):
        a = self.args
        summary = []
        lines = ["### Mesh request across two nodes: app → sidecar (n1) → VXLAN → sidecar (n2) → app, "
                 "socket shortcut × tc shortcut\n",
                 f"Round trip of one request/response (build/bench/rtt, one connection per sample): median µs of "
                 f"{a.reps} sample medians (min–max); pinned = both apps and both HAProxy sidecars on CPU {a.cpu}. "
                 f"Ratios to baseline: median [min–max] of per-repetition ratios (modes alternate inside each "
                 f"repetition and size).\n",
                 "| size | baseline µs | socket µs | tc µs | full µs | socket / base | tc / base | full / base "
                 "| p99 µs base / full |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for size, placement in CONFIGS:
            cfg = cfg_label(size, placement)
            by = {m: [s for s in self.samples if s["config"] == cfg and s["mode"] == m] for m in MODES}
            if not all(by.values()):
                continue
            cells, ratios = [], []
            rec = {"config": cfg, "size": size, "placement": placement}
            for m in MODES:
                rec[m] = {**benchlib.rtt_stats(by[m]), "mean_us": statistics.median(s["mean_us"] for s in by[m])}
                cells.append(fmt_med([s["median_us"] for s in by[m]]))
            for m in MODES[1:]:
                r = paired_ratio(by[m], by["baseline"], "median_us")
                rec[f"{m}_vs_baseline"] = r
                ratios.append(self.fmt_ratio(r))
            summary.append(rec)
            lines.append(f"| {cfg} | " + " | ".join(cells) + " | " + " | ".join(ratios) +
                         f" | {rec['baseline']['p99_us']:.1f} / {rec['full']['p99_us']:.1f} |")
        lines += ["\n### Which path carried the samples (per-sample counter deltas, min–max over all samples "
                  "of the mode)\n",
                  "| mode | n1 bytes_redirect_intra / payload | n2 bytes_redirect_intra / payload "
                  "| n1 tc overlay / peer per RT | n2 tc overlay / peer per RT | n1 cni0 / payload "
                  "| n2 cni0 / payload |",
                  "|---|---|---|---|---|---|---|"]

        rng = benchlib.fmt_range
        for m in MODES:
            ss = [s for s in self.samples if s["mode"] == m]
            pl = [2 * s["size"] * (s["iters"] + s["warmup"]) for s in ss]
            rts = [s["iters"] + s["warmup"] for s in ss]
            cells = [rng([s[f"{n}_intra_bytes"] / p for s, p in zip(ss, pl)], "{:.2f}") for n in ("n1", "n2")]
            cells += [rng([s[f"{n}_overlay"] / r for s, r in zip(ss, rts)], "{:.1f}") + " / " +
                      rng([s[f"{n}_peer"] / r for s, r in zip(ss, rts)], "{:.1f}") for n in ("n1", "n2")]
            cells += [rng([s[f"{n}_cni0_share"] for s in ss], "{:.3f}") for n in ("n1", "n2")]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines += ["",
                  "Modes: baseline = no shortcut; socket = sockops/sk_msg redirect between app and sidecar inside "
                  "each pod (MC_POD_F_INTRA set in both pods' mc_pods records), tc off; tc = `meshcutd set "
                  "--cross-node on` on both nodes (pod veth → flannel.1 by bpf_redirect, flannel.1 → pod by "
                  "bpf_redirect_peer), socket off; full = both. The sidecar↔sidecar hop crosses the nodes and "
                  "stays TCP in every mode.",
                  f"Reference: {REF}.",
                  f"Load average at start / end: {self.meta.get('loadavg_start')} / {self.meta.get('loadavg_end')}; "
                  f"total {self.meta.get('seconds')} s."]
        if self.problems:
            lines.append(f"\n**{len(self.problems)} check(s) failed** (see results.json \"problems\"): "
                         + "; ".join(self.problems[:5]))
        self.meta.update({
            **benchlib.host_meta(a), "quick": a.quick, "modes": MODES, "socket_on": SOCKET_ON, "tc_on": TC_ON,
            "meshcutd": mcnet.MESHCUTD, "rtt": self.rtt_bin, "sidecar": "haproxy nbthread 1",
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "reference": REF})
        benchlib.write_outputs(a.out, "\n".join(lines) + "\n", self.samples, self.meta, summary, self.problems, log)

    def main(self):
        if not os.access(self.rtt_bin, os.X_OK):
            raise BenchError(f"{self.rtt_bin} missing: cmake --build {self.args.build_dir} --target meshcut_bench_rtt")
        benchlib.require_tools(("taskset", "bpftool", istio_pod.HAPROXY))
        if self.args.cpu >= os.cpu_count() or self.args.cpu < 0:
            raise BenchError(f"--cpu {self.args.cpu}: this machine has {os.cpu_count()} CPUs")
        benchlib.setup_measure_report(self, log)


def main(argv=None):
    global istio_pod, mcnet, twonode
    args = parse_args(argv)
    istio_pod, mcnet, twonode = benchlib.import_netns_helpers(args.build_dir, "istio_pod", "mcnet", "twonode")
    return benchlib.run_cluster_bench(Bench(args), mcnet, log,
                                      (BenchError, RuntimeError, subprocess.TimeoutExpired, OSError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
