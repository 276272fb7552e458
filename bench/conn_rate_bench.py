#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""meshcut connection-rate benchmark (a benchmark, not a test).

What a new connection costs: connect, 64 B request, 64 B response, close
(bench/crr, the TCP_CRR of netperf), K connections per sample, for

    plain    no BPF on the sockets' cgroup,
    floor    the minimal sockops + sk_msg redirect (bench/floor.bpf.c),
    meshcut  meshcutd's programs (run with --meshcutd-arg ... to try variants),

over loopback in one netns and pod <-> pod (two netns on a bridge), with
client and server pinned to one CPU. The modes alternate inside each
repetition (plain floor meshcut plain floor meshcut ...) and the ratios are
per-repetition ratios to plain, so the VM's noise hits every mode alike. The
setup (netns, cgroups, floor, meshcutd, enrollment) is socket_bench.py's.

Every sample checks from the counters that floor and meshcut redirected the
payload of every connection and plain none, and after the run that the
sockhash and meshcut's per-connection maps are empty again (no leak per
connection).

Prints Markdown tables and writes samples.csv, results.json, table.md (and
meshcutd.log) to --out.

Usage:  sudo /usr/bin/python3 bench/conn_rate_bench.py [--quick] [--out DIR]
                 [--meshcutd-arg=--skb-verdict=off ...]
"""

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time

import benchlib
import socket_bench
from benchlib import BenchError, fmt_ratio, paired_ratio

log = benchlib.logger("conn_rate_bench")

MODES = ("plain", "floor", "meshcut")
NETS = ("lo", "pod")
# shared/BENCH.md / issue 14: meshcut >= 0.97x the plain connection rate, or,
# if the floor itself cannot, meshcut's cost <= 1.05x the floor's.
TARGET_VS_PLAIN = 0.97
TARGET_COST_VS_FLOOR = 1.05
# Maps that hold one entry per live connection (or socket): empty again when
# every connection of the run is closed.
PER_CONN_MAPS = ("mc_sockhash", "mc_conns", "mc_pair_kind")
# bpf(2): BPF_ENABLE_STATS with BPF_STATS_RUN_TIME. The kernel counts each
# program's run time while the returned fd is open (refcounted: it neither
# clobbers kernel.bpf_stats_enabled nor outlives this process).
SYS_BPF, BPF_ENABLE_STATS, BPF_STATS_RUN_TIME = 321, 32, 0


def enable_bpf_stats():
    """An fd that keeps the kernel's BPF run-time statistics on, or None."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.c_uint32(BPF_STATS_RUN_TIME)
    fd = libc.syscall(SYS_BPF, BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        log(f"BPF_ENABLE_STATS failed ({os.strerror(ctypes.get_errno())}): no per-program times")
        return None
    return fd


def bpftool_json(*args):
    p = subprocess.run(["bpftool", "--json", *args], capture_output=True, text=True, timeout=10)
    if p.returncode != 0:
        raise BenchError(f"bpftool {' '.join(args)} failed: {p.stderr.strip() or p.stdout.strip()}")
    return json.loads(p.stdout)


class ConnRateBench(socket_bench.Bench):
    # The per-connection leak check reads mc_conns after a sweep.
    MESHCUTD_ARGS = ("--gc-interval", "1")

    def __init__(self, args):
        super().__init__(args)
        self.tag = f"mcc-{os.getpid()}"
        self.ns_lo, self.ns_node = f"{self.tag}-lo", f"{self.tag}-node"
        self.ns_pa, self.ns_pb = f"{self.tag}-pa", f"{self.tag}-pb"
        self.floor_pin = f"/sys/fs/bpf/{self.tag}-floor"
        self.meshcut_pin = f"/sys/fs/bpf/{self.tag}-meshcut"
        self.crr_bin = os.path.join(self.build, "bench", "crr")
        self.prog_ids = {}  # mode -> {program: id}

    def find_programs(self):
        """The ids of each redirect's programs, from their pins."""
        fl = {n: bpftool_json("prog", "show", "pinned", f"{self.floor_pin}/{n}")["id"] for n in ("sk_msg", "sk_skb")}
        fl["sockops"] = bpftool_json("link", "show", "pinned", f"{self.floor_pin}/sockops_link")["prog_id"]
        self.prog_ids["floor"] = fl
        if self.meshcut_ok:
            progs = os.path.join(self.meshcut_pin, "progs")
            self.prog_ids["meshcut"] = {n: bpftool_json("prog", "show", "pinned", os.path.join(progs, n))["id"]
                                        for n in sorted(os.listdir(progs))}

    def prog_times(self, mode):
        """{program: (run_cnt, run_time_ns)} of MODE's programs."""
        out = {}
        for n, i in self.prog_ids.get(mode, {}).items():
            j = bpftool_json("prog", "show", "id", str(i))
            out[n] = (j.get("run_cnt", 0), j.get("run_time_ns", 0))
        return out

    def crr_sample(self, rep, net, mode, port):
        a = self.args
        srv_ns, cli_ns, addr = self.endpoints(net)
        before, t_before = self.counters(), self.prog_times(mode)
        server = self.spawn([self.crr_bin, "server", "--tcp", f"{addr}:{port}", "--size", str(a.size)],
                            mode, srv_ns, a.cpu, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:  # the crr server serves until stopped
            benchlib.wait_line(server, "ready")
            out = self.run_child([self.crr_bin, "client", "--tcp", f"{addr}:{port}", "--conns", str(a.conns),
                                  "--size", str(a.size), "--warmup", str(a.warmup)], mode, cli_ns, a.cpu, timeout=600)
        finally:
            self.children.stop(server)
        row = {"kind": "crr", "rep": rep, "net": net, "mode": mode, "transport": f"{mode}-{net}",
               "size": a.size, **json.loads(out)}
        if row["failed"]:
            self.problems.append(f"{mode}-{net} rep {rep}: {row['failed']} connections failed")
        # Each connection carries `size` bytes each way; the redirect sees both.
        self.check_redirect(row, before, self.counters(), 2 * a.size * (a.conns + a.warmup))
        # BPF run time per connection (both sockets), per program
        n = a.conns + a.warmup
        for prog, (cnt, ns) in self.prog_times(mode).items():
            c0, ns0 = t_before.get(prog, (0, 0))
            row[f"bpf_{prog}_runs_per_conn"] = round((cnt - c0) / n, 2)
            row[f"bpf_{prog}_ns_per_conn"] = round((ns - ns0) / n, 1)
        return row

    def check_redirect(self, row, before, after, expected_bytes):
        # socket_bench's check keys the mode by transport name; ours is in the row.
        row_t = dict(row, transport={"plain": "tcp-lo", "floor": "floor-lo", "meshcut": "meshcut-lo"}[row["mode"]])
        super().check_redirect(row_t, before, after, expected_bytes)
        for k in ("floor_redirect_bytes", "meshcut_redirect_bytes", "meshcut_redirect_msgs", "redirected_share"):
            row[k] = row_t.get(k)
        if row["mode"] != "plain" and (row["redirected_share"] or 0) < 0.99:
            self.problems.append(f"{row['transport']} rep {row['rep']}: only {row['redirected_share']} of the "
                                 f"payload redirected (every connection should be)")

    def modes(self):
        return [m for m in MODES if m != "meshcut" or self.meshcut_ok]

    def measure(self):
        for rep in range(1, self.args.reps + 1):
            t0 = time.monotonic()
            for ni, net in enumerate(NETS):
                for mi, mode in enumerate(self.modes()):
                    self.samples.append(self.crr_sample(rep, net, mode, self.args.port + 10 * ni + mi))
            log(f"repetition {rep}/{self.args.reps} done in {time.monotonic() - t0:.1f} s")

    def leak_check(self):
        if not self.meshcut_ok:
            return {}
        # mc_conns entries of closed sockets go at meshcutd's next sweep
        # (MESHCUTD_ARGS: --gc-interval 1): one interval and a margin.
        time.sleep(2.5)
        st = self.meshcut_status() or {}
        maps = st.get("maps") or {}
        left = {m: (maps.get(m) or {}).get("entries") for m in PER_CONN_MAPS if m in maps}
        for m, n in left.items():
            if n:
                self.problems.append(f"{m} holds {n} entries after every connection closed (a per-connection leak)")
        return left

    def report(self):
        a = self.args
        left = self.leak_check()
        rows = [s for s in self.samples if s["kind"] == "crr"]
        lines = [f"### Connection rate: connect + {a.size} B each way + close, {a.conns} connections per sample, "
                 f"client and server on CPU {a.cpu}; median of {a.reps} repetitions [min–max]\n",
                 "| net | mode | conn/s | µs per conn (median) | p99 µs | × plain rate | extra µs vs plain | "
                 "cost ÷ floor's |",
                 "|---|---|---|---|---|---|---|---|"]
        summary = []
        for net in NETS:
            by_m = {m: [s for s in rows if s["net"] == net and s["mode"] == m] for m in self.modes()}
            for m, rs in by_m.items():
                if not rs:
                    continue
                rate = paired_ratio(rs, by_m["plain"], "conns_per_s")
                base_cost = {s["rep"]: 1e6 / s["conns_per_s"] for s in by_m["plain"]}
                extra = [1e6 / s["conns_per_s"] - base_cost[s["rep"]] for s in rs if s["rep"] in base_cost]
                # cost = what the mode adds to plain, compared with what the floor adds
                vs_floor = None
                if m == "meshcut" and by_m.get("floor"):
                    f_extra = {s["rep"]: 1e6 / s["conns_per_s"] - base_cost[s["rep"]] for s in by_m["floor"]}
                    r = [(1e6 / s["conns_per_s"]) / (f_extra[s["rep"]] + base_cost[s["rep"]]) for s in rs
                         if s["rep"] in f_extra]
                    vs_floor = (statistics.median(r), min(r), max(r)) if r else None
                rec = {"net": net, "mode": m, "conns_per_s": statistics.median(s["conns_per_s"] for s in rs),
                       "median_us": statistics.median(s["median_us"] for s in rs),
                       "p99_us": statistics.median(s["p99_us"] for s in rs), "vs_plain": rate,
                       "extra_us": statistics.median(extra) if extra else None, "cost_vs_floor": vs_floor}
                if m == "meshcut":
                    rec["target_ok"] = bool(rate and (rate[0] >= TARGET_VS_PLAIN or
                                                      (vs_floor and vs_floor[0] <= TARGET_COST_VS_FLOOR)))
                summary.append(rec)
                lines.append(f"| {net} | {m} | {rec['conns_per_s']:.0f} | {rec['median_us']:.1f} | "
                             f"{rec['p99_us']:.1f} | {fmt_ratio(rate, TARGET_VS_PLAIN if m == 'meshcut' else None, True) if m != 'plain' else '1'} | "
                             f"{'' if m == 'plain' else '%+.1f' % rec['extra_us']} | "
                             f"{fmt_ratio(vs_floor, TARGET_COST_VS_FLOOR) if vs_floor else ''} |")
        lines += self.bpf_time_table(rows)
        lines.append(f"\nTargets (issue 14): meshcut ≥ {TARGET_VS_PLAIN}× the plain rate, or, where the floor "
                     f"itself cannot, meshcut's time per connection ≤ {TARGET_COST_VS_FLOOR}× the floor's; ✗ marks "
                     f"a miss of the first. Ratios: medians of per-repetition ratios [min–max].")
        if self.args.meshcutd_arg:
            lines.append(f"meshcutd run extra arguments: {' '.join(self.args.meshcutd_arg)}")
        if left:
            lines.append("Per-connection maps after the run (must be 0): "
                         + ", ".join(f"{k} {v}" for k, v in left.items()))
        meta = {**benchlib.host_meta(a), "conns": a.conns, "size": a.size, "quick": a.quick,
                "meshcut": self.meshcut_ok, "meshcutd_args": a.meshcutd_arg or [], "maps_after": left,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        benchlib.write_outputs(a.out, "\n".join(lines) + "\n", self.samples, meta, summary, self.problems, log)

    def bpf_time_table(self, rows):
        """Where a redirect's time per connection goes: the kernel's own run
        time of each program (BPF_ENABLE_STATS), per connection."""
        out = ["\n### Time in the BPF programs per connection (ns, both sockets; median over repetitions; "
               "runs per connection in brackets)\n", "| net | mode | program | ns per conn | runs |", "|---|---|---|---|---|"]
        for net in NETS:
            for m in ("floor", "meshcut"):
                rs = [s for s in rows if s["net"] == net and s["mode"] == m]
                for prog in self.prog_ids.get(m, {}):
                    ns = [s[f"bpf_{prog}_ns_per_conn"] for s in rs if f"bpf_{prog}_ns_per_conn" in s]
                    runs = [s[f"bpf_{prog}_runs_per_conn"] for s in rs if f"bpf_{prog}_runs_per_conn" in s]
                    if ns:
                        out.append(f"| {net} | {m} | {prog} | {statistics.median(ns):.0f} | "
                                   f"{statistics.median(runs):.1f} |")
        return out

    def main(self):
        for b in (self.crr_bin, self.floor_bin):
            if not os.access(b, os.X_OK):
                raise BenchError(f"{b} missing: cmake --build {self.build} --target meshcut_bench_socket")
        benchlib.require_tools(("ip", "taskset", "timeout"))
        os.makedirs(self.args.out, exist_ok=True)
        self.setup_cgroups()
        self.setup_netns()
        self.setup_floor()
        self.setup_meshcut()
        self.find_programs()
        self.measure()
        self.report()


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="./bench-out-conn-rate", help="output directory")
    ap.add_argument("--quick", action="store_true", help="1 repetition of 1000 connections (CI smoke run)")
    ap.add_argument("--reps", type=int, help="repetitions (default 5, --quick 1)")
    ap.add_argument("--conns", type=int, help="connections per sample (default 20000, --quick 1000)")
    ap.add_argument("--warmup", type=int, default=500, help="connections before each timed sample")
    ap.add_argument("--size", type=int, default=64, help="request and response bytes")
    ap.add_argument("--cpu", type=int, default=os.cpu_count() - 1, help="CPU client and server are pinned to")
    ap.add_argument("--port", type=int, default=17300, help="first TCP port used inside the namespaces")
    ap.add_argument("--build-dir", default=os.path.join(benchlib.REPO, "build"))
    ap.add_argument("--meshcutd", help="meshcutd binary (default BUILD/pinned-maps-daemon/meshcutd)")
    ap.add_argument("--meshcutd-arg", action="append", default=[],
                    help="extra argument of `meshcutd run` (repeatable), e.g. --meshcutd-arg=--skb-verdict=off")
    ap.add_argument("--require-meshcut", action="store_true",
                    help="fail (exit 3) if the meshcut rows cannot be measured")
    a = ap.parse_args(argv)
    a.iters = a.conns  # for apply_quick_defaults / host_meta
    benchlib.apply_quick_defaults(a)
    a.conns = a.iters
    if a.reps < 1 or a.conns < 1 or a.size < 1:
        ap.error("--reps, --conns and --size must be >= 1")
    return a


def main():
    bench = ConnRateBench(parse_args())
    stats_fd = enable_bpf_stats() if os.geteuid() == 0 else None
    return socket_bench.run_main(bench, "conn_rate_bench.py",
                                 on_exit=(lambda: os.close(stats_fd)) if stats_fd is not None else None)


if __name__ == "__main__":
    sys.exit(main())
