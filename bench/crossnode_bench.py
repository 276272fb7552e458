#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""meshcut cross-node tc-shortcut benchmark (issue 4; a benchmark, not a test).

Two nodes in network namespaces (test/netns/twonode.py: VXLAN overlay
flannel.1 over a veth "wire", pods through the real bridge + host-local CNI
chain with the meshcut plugin chained, one meshcutd per node started with
--pod-cidr 10.244.0.0/16 --overlay-dev flannel.1). A client pod c1 on n1 talks
to a server pod s2 on n2 by its pod IP. Modes, alternating inside one run
(A B C A B C ..., see shared/BENCH.md), switched at runtime with
`meshcutd set --cross-node on|off` in each node:

  bridge      both nodes' switch off: the normal path (pod veth -> cni0 ->
              host routing -> flannel.1 -> wire, and back). meshcut's tc
              programs stay attached and return at once (tc_pass_disabled);
  tc          both switches on: pod veth -> flannel.1 (bpf_redirect) on the
              sending node, flannel.1 -> into the pod (bpf_redirect_peer) on
              the receiving one, in both directions;
  tc-one-way  only n1's switch on (n1 shortcuts both directions of the flow,
              n2 forwards through its bridge).

A flow takes the shortcut only if its SYN was seen with the switch on, and
turning a switch off forgets every flow: every sample opens new connections
after the switch. Measured per mode:

  * round trip (build/bench/rtt ping-pong; 64 B, 1 KiB, 64 KiB with both ends
    pinned to one CPU, plus 64 B unpinned): server in s2, client in c1;
  * bulk throughput: iperf3 c1 -> s2 (unpinned).

The socket shortcut (sockops) stays out of it: the meshcutds attach sockops to
an empty cgroup, and the benchmark processes start in their own cgroup (joined
before setns into the pod netns, never `ip netns exec`, which hides cgroup2).

Every sample is checked against the meshcutd counters and the cni0 byte
counters of both nodes: in a tc sample tc_redirect_overlay (+_neigh) and
tc_redirect_peer grew on both nodes by at least one per round trip and cni0
carried ~none of the payload; in a bridge sample no tc_redirect_* counter moved
and cni0 carried it all; tc-one-way is the tc case on n1 and the bridge case on
n2. The socket shortcut's counters must not move at all.

Prints a Markdown table and writes samples.csv, results.json, table.md to
--out (default ./bench-out/crossnode). Exit 0 ok, 1 error, 3 a check failed,
77 skipped (no root, outside CI).

Usage:  sudo /usr/bin/python3 bench/crossnode_bench.py [--quick] [--out DIR]
"""

import json
import os
import statistics
import subprocess
import sys
import time

import benchlib
from benchlib import BRIDGE_MIN, PEER, SHORTCUT_BRIDGE_MAX, BenchError, cfg_label, fmt_med, paired_ratio

REPO = benchlib.REPO

MODES = ["bridge", "tc", "tc-one-way"]
# node -> cross-node switch per mode
SWITCH = {"bridge": {"n1": "off", "n2": "off"},
          "tc": {"n1": "on", "n2": "on"},
          "tc-one-way": {"n1": "on", "n2": "off"}}
# (size, placement): the main rows pin both ends to one CPU (waking the other
# vCPU costs 40-80 us on this VM and would hide the data path).
CONFIGS = [(64, "pinned"), (1024, "pinned"), (65536, "pinned"), (64, "unpinned")]

ALL_REDIRECTS = benchlib.TO_OVERLAY + (PEER, "tc_redirect_local")
SOCK_COUNTERS = ("redirect_msgs", "redirect_bytes")

# Reference figures for the footnote.
REF_KERNEL = "kernel commit adding bpf_redirect_peer: TCP_RR 122 µs → 44 µs (vs bpf_redirect)"
REF_FLOOR = ("shared/BENCH.md floors on this VM, same vCPU, 64 B: 25.5 µs bridge vs 19.7 µs both directions "
             "bypassed (0.67–0.78×); iperf3 1.13–1.16×; one direction alone gains little or nothing")


def parse_args(argv=None):
    ap = benchlib.bench_arg_parser(
        __doc__, out="./bench-out/crossnode", port=18100,
        iters_help="round trips per sample for <= 1 KiB (64 KiB and unpinned do half; default 20000, --quick 1000)",
        cpu_help="CPU both ends are pinned to (default: the last one)",
        port_help="first TCP port used by the servers in s2",
        quick_help="1 repetition, few iterations, 1 s iperf3 (CI smoke run)")
    return benchlib.check_bench_args(ap, ap.parse_args(argv), ("reps", "iters", "iperf_time"))


# the test/netns helpers come from the build tree --build-dir names: main() imports them
mcnet = twonode = None
log = benchlib.logger("crossnode_bench")


class Bench(benchlib.PodBench):
    def __init__(self, args):
        super().__init__(args, mcnet)

    # ---- cluster ---------------------------------------------------------------

    def setup(self):
        self.cg = mcnet.Cgroup("xbench")          # the benchmark's processes
        idle = mcnet.Cgroup("xbench-nosockops")   # meshcutd's sockops: empty, so the socket shortcut stays out
        extra = ["--pod-cidr", twonode.CLUSTER_CIDR, "--overlay-dev", twonode.VXLAN_DEV, "--cross-node", "off"]
        self.meta["daemon_extra"] = extra
        t0 = time.monotonic()
        self.cl = twonode.Cluster(self.cg, daemon_extra=extra, daemon_cgroup=idle).up()
        self.c1 = self.cl.add_pod("n1", "c1")
        self.s2 = self.cl.add_pod("n2", "s2")
        self.nodes = self.cl.nodes
        self.meta["pods"] = {p.name: {"node": p.node.name, "ip": p.ip, "host_veth": p.host_veth}
                             for p in (self.c1, self.s2)}
        log(f"cluster up in {time.monotonic() - t0:.1f}s: c1 {self.c1.ip} on n1, s2 {self.s2.ip} on n2")
        for n in self.nodes.values():
            att = n.daemon.status()["attachments"]
            if not (att.get("tc_overlay") or {}).get("attached"):
                raise BenchError(f"{n.name}: meshcutd did not attach tc_overlay to {twonode.VXLAN_DEV}: {att}")
            recs = json.loads(n.daemon.cli("pods", "--json").stdout)
            mine = [p for p in (self.c1, self.s2) if p.node is n]
            if not all(any(r.get("container_id") == p.cid for r in recs) for p in mine):
                raise BenchError(f"{n.name}: pod not enrolled with meshcutd: {recs}")
        self.set_mode("bridge")
        # Reachability (and ARP / neighbour warm-up) over the normal path.
        self.rtt_sample(0, "bridge", 64, "unpinned", 20, 5, self.args.port + 9, record=False)

    def set_mode(self, mode):
        if mode == self.mode:
            return
        for name, n in self.nodes.items():
            benchlib.set_cross_node(n, SWITCH[mode][name] == "on")
        self.mode = mode

    # ---- counters ----------------------------------------------------------------

    def snapshot(self):
        out = {}
        for name, n in self.nodes.items():
            c = n.daemon.counters()
            out[name] = {
                **benchlib.tc_counters(n, c, twonode.BRIDGE),
                "pass_disabled": int(c.get("tc_pass_disabled", 0)),
                "sock": sum(int(c.get(k, 0)) for k in SOCK_COUNTERS),
            }
        return out

    def check(self, row, before, after, payload_bytes, min_redirects):
        """Record the counter deltas of a sample and check that the mode's
        path carried it."""
        mode = row["mode"]
        what = f"{row['kind']} {row.get('config', '')} {mode} rep {row['rep']}".replace("  ", " ")
        for node in ("n1", "n2"):
            d = benchlib.delta(before[node], after[node])
            row[f"{node}_tc_redirect_overlay"] = d["overlay"]
            row[f"{node}_tc_redirect_peer"] = d["peer"]
            row[f"{node}_tc_pass_disabled"] = d["pass_disabled"]
            row[f"{node}_cni0_share"] = round(d["cni0_bytes"] / payload_bytes, 4) if payload_bytes else None
            row[f"{node}_ct_invalid_dropped"] = d["ct_invalid"]
            shortcut = SWITCH[mode][node] == "on"
            if shortcut:
                if d["overlay"] < min_redirects or d["peer"] < min_redirects:
                    self.problems.append(f"{what}: {node} shortcut carried too little: tc_redirect_overlay "
                                         f"+{d['overlay']}, tc_redirect_peer +{d['peer']} (want >= {min_redirects})")
                if row[f"{node}_cni0_share"] is not None and row[f"{node}_cni0_share"] > SHORTCUT_BRIDGE_MAX:
                    self.problems.append(f"{what}: {node} cni0 carried {row[f'{node}_cni0_share']:.3f} of the "
                                         f"payload bytes with the shortcut on")
            else:
                if d["overlay"] or d["peer"] or d["local"]:
                    self.problems.append(f"{what}: {node} switch off but tc redirected (overlay +{d['overlay']}, "
                                         f"peer +{d['peer']}, local +{d['local']})")
                if row[f"{node}_cni0_share"] is not None and row[f"{node}_cni0_share"] < BRIDGE_MIN:
                    self.problems.append(f"{what}: {node} cni0 carried only {row[f'{node}_cni0_share']:.3f} of "
                                         f"the payload bytes with the switch off")
            if d["sock"]:
                self.problems.append(f"{what}: {node} socket shortcut counters moved (+{d['sock']})")
            if d["ct_invalid"]:
                self.problems.append(f"{what}: {node} conntrack INVALID drops +{d['ct_invalid']}")

    # ---- samples -------------------------------------------------------------------

    def rtt_sample(self, rep, mode, size, placement, iters, warmup, port, record=True):
        cpu = self.args.cpu if placement == "pinned" else None
        row = {"kind": "rtt", "rep": rep, "mode": mode, "size": size, "placement": placement,
               "config": cfg_label(size, placement), "iters": iters, "warmup": warmup}
        addr = f"{self.s2.ip}:{port}"
        before = self.snapshot()
        server = self.spawn([self.rtt_bin, "server", "--tcp", addr, "--once"], self.s2, cpu,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = self.children.serve(server, "ready", lambda: self.run_client(
            [self.rtt_bin, "client", "--tcp", addr] + benchlib.rtt_client_args(size, iters, warmup), self.c1, cpu))
        time.sleep(0.03)  # the closing handshake, before the counters and before any switch
        if not record:
            return None
        benchlib.merge_rtt(row, out)
        # Each timed round trip is at least one skb each way through each node's programs.
        self.check(row, before, self.snapshot(), 2 * size * (iters + warmup), iters)
        return row

    @staticmethod
    def tcp_stats(pod):
        """TcpExt/Tcp counters of POD's netns (/proc/thread-self: /proc/self/net
        would follow the main thread's netns)."""
        def read():
            out = {}
            for fn in ("netstat", "snmp"):
                with open("/proc/thread-self/net/" + fn) as f:
                    rows = [line.split() for line in f]
                for names, vals in zip(rows[::2], rows[1::2]):
                    out.update({names[0] + k: int(v) for k, v in zip(names[1:], vals[1:]) if v.lstrip("-").isdigit()})
            return out
        return mcnet.in_netns(pod.ns, read)

    def bulk_sample(self, rep, mode, seconds, port):
        before = self.snapshot()
        cli0, srv0 = self.tcp_stats(self.c1), self.tcp_stats(self.s2)
        server = self.spawn(benchlib.iperf_server_cmd(self.s2.ip, port), self.s2,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = self.children.serve(server, "listening", lambda: self.run_client(
            benchlib.iperf_client_cmd(self.s2.ip, port, seconds), self.c1, timeout=seconds + 30))
        time.sleep(0.05)
        cli1, srv1 = self.tcp_stats(self.c1), self.tcp_stats(self.s2)
        row = {"kind": "bulk", "rep": rep, "mode": mode, "config": "iperf3", **benchlib.iperf_result(out),
               # Why TCP retransmitted: reordering (receiver's out-of-order queue,
               # DSACKs = spurious retransmits) or loss (timeouts).
               "client_fast_retrans": cli1.get("TcpExt:TCPFastRetrans", 0) - cli0.get("TcpExt:TCPFastRetrans", 0),
               "client_dsack_recv": cli1.get("TcpExt:TCPDSACKRecv", 0) - cli0.get("TcpExt:TCPDSACKRecv", 0),
               "client_rto": cli1.get("TcpExt:TCPTimeouts", 0) - cli0.get("TcpExt:TCPTimeouts", 0),
               "server_ofo_queue": srv1.get("TcpExt:TCPOFOQueue", 0) - srv0.get("TcpExt:TCPOFOQueue", 0)}
        self.check(row, before, self.snapshot(), row["bytes"], 100)
        return row

    def measure(self):
        a = self.args
        for rep in range(1, a.reps + 1):
            t0 = time.monotonic()
            for size, placement in CONFIGS:
                iters = a.iters if size < 65536 and placement == "pinned" else max(1, a.iters // 2)
                warmup = max(10, iters // 10)
                for i, mode in enumerate(MODES):  # A B C inside each size
                    self.set_mode(mode)
                    self.samples.append(self.rtt_sample(rep, mode, size, placement, iters, warmup, a.port + i))
            if not a.no_bulk:
                for i, mode in enumerate(MODES):
                    self.set_mode(mode)
                    self.samples.append(self.bulk_sample(rep, mode, a.iperf_time, a.port + 20 + i))
            log(f"repetition {rep}/{a.reps} done in {time.monotonic() - t0:.1f} s")
        self.set_mode("bridge")

    # ---- report ------------------------------------------------------------------

    def report(self):
        a = self.args
        summary = []
        lines = [f"### Cross-node pod↔pod, c1 (n1) → s2 (n2) by pod IP over VXLAN: bridge path vs tc shortcut\n",
                 f"Round trip: median µs of {a.reps} sample medians (min–max); pinned = both ends on CPU {a.cpu}. "
                 f"Ratios: median [min–max] of per-repetition ratios (modes alternate inside each repetition). "
                 f"Throughput: iperf3 {a.iperf_time} s, unpinned, Gbit/s.\n",
                 "| size | bridge µs | tc µs | tc-one-way µs | tc / bridge | tc-one-way / bridge | p99 µs bridge / tc |",
                 "|---|---|---|---|---|---|---|"]
        rtt = [s for s in self.samples if s["kind"] == "rtt"]
        for size, placement in CONFIGS:
            cfg = cfg_label(size, placement)
            by = {m: [s for s in rtt if s["config"] == cfg and s["mode"] == m] for m in MODES}
            if not by["bridge"]:
                continue
            cells, rec = [], {"kind": "rtt", "config": cfg, "size": size, "placement": placement}
            for m in MODES:
                rec[m] = benchlib.rtt_stats(by[m])
                cells.append(fmt_med([s["median_us"] for s in by[m]]))
            r_tc = paired_ratio(by["tc"], by["bridge"], "median_us")
            r_ow = paired_ratio(by["tc-one-way"], by["bridge"], "median_us")
            rec["tc_vs_bridge"], rec["one_way_vs_bridge"] = r_tc, r_ow
            summary.append(rec)
            lines.append(f"| {cfg} | " + " | ".join(cells) + f" | {self.fmt_ratio(r_tc)} | {self.fmt_ratio(r_ow)} | "
                         f"{rec['bridge']['p99_us']:.1f} / {rec['tc']['p99_us']:.1f} |")
        bulk = [s for s in self.samples if s["kind"] == "bulk"]
        if bulk:
            by = {m: [s for s in bulk if s["mode"] == m] for m in MODES}
            rec = {"kind": "bulk", "config": "iperf3"}
            cells = []
            for m in MODES:
                g = [s["gbit_s"] for s in by[m]]
                rec[m] = {"gbit_s": statistics.median(g), "min": min(g), "max": max(g),
                          "retransmits_max": max(s["retransmits"] for s in by[m])}
                cells.append(fmt_med(g, 2))
            rec["tc_vs_bridge"] = paired_ratio(by["tc"], by["bridge"], "gbit_s")
            rec["one_way_vs_bridge"] = paired_ratio(by["tc-one-way"], by["bridge"], "gbit_s")
            summary.append(rec)
            lines.append(f"| iperf3 Gbit/s | " + " | ".join(cells) + f" | {self.fmt_ratio(rec['tc_vs_bridge'])} | "
                         f"{self.fmt_ratio(rec['one_way_vs_bridge'])} | |")
            lines += ["\n### iperf3 retransmissions (per sample, median (min–max)): reordering or loss?\n",
                      "| mode | retransmits | fast retransmits | DSACKs received (spurious) | RTOs | "
                      "receiver out-of-order segments |", "|---|---|---|---|---|---|"]
            for m in MODES:
                lines.append(f"| {m} | " + " | ".join(
                    fmt_med([s[k] for s in by[m]], 0)
                    for k in ("retransmits", "client_fast_retrans", "client_dsack_recv", "client_rto",
                              "server_ofo_queue")) + " |")
        # Proof of the path, per mode over every sample.
        lines += ["\n### Which path carried the samples (per sample, min–max over all samples of the mode)\n",
                  "| mode | n1 tc_redirect_overlay | n1 tc_redirect_peer | n2 tc_redirect_overlay | "
                  "n2 tc_redirect_peer | n1 cni0 bytes / payload | n2 cni0 bytes / payload |",
                  "|---|---|---|---|---|---|---|"]

        rng = benchlib.fmt_range
        for m in MODES:
            ss = [s for s in self.samples if s["mode"] == m]
            lines.append(f"| {m} | " + " | ".join(
                rng([s[f"{n}_tc_redirect_{k}"] for s in ss], "{:d}") for n in ("n1", "n2") for k in ("overlay", "peer"))
                + " | " + " | ".join(rng([s[f"{n}_cni0_share"] for s in ss], "{:.3f}") for n in ("n1", "n2"))
                + " |")
        lines += ["",
                  f"Modes: bridge = both nodes' switch off (meshcut's tc programs attached, returning at once); "
                  f"tc = both on; tc-one-way = only n1 on. The socket shortcut is kept out (sockops on an empty "
                  f"cgroup); its counters are checked to stay at 0.",
                  f"References: {REF_KERNEL}. {REF_FLOOR}.",
                  f"Load average at start / end: {self.meta.get('loadavg_start')} / {self.meta.get('loadavg_end')}."]
        if self.problems:
            lines.append(f"\n**{len(self.problems)} check(s) failed** (see results.json \"problems\"): "
                         + "; ".join(self.problems[:5]))
        self.meta.update({
            **benchlib.host_meta(a), "iperf_seconds": a.iperf_time, "quick": a.quick, "modes": MODES,
            "switch": SWITCH, "meshcutd": mcnet.MESHCUTD, "rtt": self.rtt_bin,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "references": [REF_KERNEL, REF_FLOOR]})
        benchlib.write_outputs(a.out, "\n".join(lines) + "\n", self.samples, self.meta, summary, self.problems, log)

    def main(self):
        if not os.access(self.rtt_bin, os.X_OK):
            raise BenchError(f"{self.rtt_bin} missing: cmake --build {self.args.build_dir} --target meshcut_bench_rtt")
        benchlib.require_tools(("taskset", "iperf3"))
        benchlib.setup_measure_report(self, log)


def main(argv=None):
    global mcnet, twonode
    args = parse_args(argv)
    mcnet, twonode = benchlib.import_netns_helpers(args.build_dir, "mcnet", "twonode")
    return benchlib.run_cluster_bench(Bench(args), mcnet, log,
                                      (BenchError, RuntimeError, subprocess.TimeoutExpired, OSError))


if __name__ == "__main__":
    sys.exit(main())
