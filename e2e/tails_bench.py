#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""meshcut tail latency at a fixed rate on the mesh test bed (issue 14, part 3;
a benchmark with correctness checks, not a unit test).

The bed (e2e/meshbed.py: two nodes, containerd, the meshcut CNI plugin,
istio-init rules and HAProxy sidecars) with the open-loop generator mcload
(bench/loadgen) exec'd into the client pod's app container, so every request
goes app -> sidecar -> [bridge | VXLAN] -> sidecar -> app. Latency is measured
from each request's intended send time (no coordinated omission), Poisson
arrivals.

Per placement (same: web-n1; cross: web-n2; bookinfo: productpage, 4 meshed
hops) and connection mode (keepalive: a pool of --pool connections;
per-request: a new connection per request, Connection: close):
  1. capacity: wrk, closed loop at c = --pool for 3 s, in baseline mode
     (per-request: wrk with "Connection: close");
  2. at 30 %, 60 % and 90 % of that capacity, baseline and full alternating
     (rotated each repetition): mcload for --seconds after a 1 s warm-up.
Reported: P50, P99, P99.9 and max per cell (median of the repetitions) and
full / baseline (median [min-max] of per-repetition ratios). Target (issue
14): every percentile of full <= baseline at every rate.

Checks that fail the run: a non-2xx or an mcload error other than a timeout
or a request never sent (those come with a rate not held); in full mode the
sidecars' intra-pod hop redirected (bytes_redirect_intra grew on n1); in
baseline nothing redirected. A rate mcload could not hold is reported
(cannot_keep_up), not failed.

Usage:  /usr/bin/python3 e2e/tails_bench.py [--quick] [--placement same,cross,bookinfo] [--reps 3]
  full:  3 placements x 2 connection modes x 3 rates x 2 modes x 3 repetitions, 5 s each (~20 min)
  quick: CI smoke: same node, 50 % of capacity, 1 repetition, 1 s (~2 min with the bed)
Output: a Markdown table on stdout; table.md, samples.csv, results.json in
--out. Exit 0 ok, 1 error, 3 a check failed, 77 skipped (no root, outside CI).
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))
sys.dont_write_bytecode = True
import benchlib  # noqa: E402
from benchlib import BenchError  # noqa: E402

URLS = {"same": "http://web-n1:80/1k.bin", "cross": "http://web-n2:80/1k.bin",
        "bookinfo": "http://productpage:9080/productpage?id=0"}
CLIENT = "client"
PCTS = ("p50", "p99", "p99_9", "max")
log = benchlib.logger("tails_bench")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke run: same node, 50 %%, 1 repetition, 1 s")
    ap.add_argument("--placement", help="comma-separated: same,cross,bookinfo (default all; --quick same)")
    ap.add_argument("--fractions", help="comma-separated shares of capacity (default 0.3,0.6,0.9; --quick 0.5)")
    ap.add_argument("--conn-modes", default="keepalive,per-request", help="keepalive,per-request")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, --quick 1)")
    ap.add_argument("--seconds", type=float, help="seconds measured per cell (default 5, --quick 1)")
    ap.add_argument("--pool", type=int, default=10, help="keep-alive connections, and wrk's c (default 10)")
    ap.add_argument("--cpu", type=int, help="pin every pod process to this CPU (default: none)")
    ap.add_argument("--out", default="./bench-out/tails", help="output directory")
    ap.add_argument("--build-dir", default=os.environ.get("MESHCUT_BUILD", os.path.join(REPO, "build")))
    a = ap.parse_args(argv)
    a.placements = (a.placement or ("same" if a.quick else "same,cross,bookinfo")).split(",")
    a.fractions = [float(x) for x in (a.fractions or ("0.5" if a.quick else "0.3,0.6,0.9")).split(",")]
    a.conn_modes = a.conn_modes.split(",")
    a.reps = a.reps or (1 if a.quick else 3)
    a.seconds = a.seconds or (1.0 if a.quick else 5.0)
    a.out, a.build_dir = os.path.abspath(a.out), os.path.abspath(a.build_dir)
    a.iters = None
    if set(a.placements) - set(URLS) or set(a.conn_modes) - {"keepalive", "per-request"}:
        ap.error("--placement from same,cross,bookinfo; --conn-modes from keepalive,per-request")
    if a.reps < 1 or a.seconds <= 0 or not all(0 < f <= 1.5 for f in a.fractions):
        ap.error("--reps >= 1, --seconds > 0, fractions in (0, 1.5]")
    return a


class Bench(benchlib.PodBench):
    def __init__(self, args, mcnet, bedmod):
        super().__init__(args, mcnet)
        self.bedmod = bedmod
        self.bed = None
        self.meta = benchlib.host_meta(args)
        self.capacity = {}

    def setup(self):
        mcload = os.path.join(self.args.build_dir, "bench", "loadgen", "mcload")
        if not os.access(mcload, os.X_OK):
            raise BenchError(f"{mcload} not built: cmake --build build --target mcload")
        self.bed = self.bedmod.MeshBed(cpu=self.args.cpu).up()
        shutil.copy(mcload, os.path.join(self.bed.dir, "mcload"))  # /bed/mcload in every pod
        os.chmod(os.path.join(self.bed.dir, "mcload"), 0o755)
        self.bed.set_mode("baseline")
        for pl in self.args.placements:  # first connections, ARP, DNS
            self.mcload(pl, "keepalive", 20, 1.0, warmup=0.0)
        for pl in self.args.placements:
            for cm in self.args.conn_modes:
                self.capacity[(pl, cm)] = self.wrk_capacity(pl, cm)
                log(f"capacity {pl} {cm}: {self.capacity[(pl, cm)]:.0f} req/s (wrk, c={self.args.pool}, baseline)")
        self.meta["capacity"] = {f"{pl} {cm}": v for (pl, cm), v in self.capacity.items()}

    def run_app(self, argv, timeout):
        rc, out, err = self.bed.exec(CLIENT, argv, timeout)
        if rc != 0:
            raise BenchError(f"{argv[0]} in the client pod exited {rc}: {(err or out).strip()[-500:]}")
        return out

    def wrk_capacity(self, placement, conn_mode):
        argv = ["/usr/bin/wrk", "-t", "2", "-c", str(self.args.pool), "-d", "3s", "--timeout", "5s"]
        if conn_mode == "per-request":
            argv += ["-H", "Connection: close"]
        out = self.run_app(argv + [URLS[placement]], 60)
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if not m:
            raise BenchError(f"wrk printed no rate: {out[-300:]}")
        return float(m.group(1))

    def mcload(self, placement, conn_mode, rate, seconds, warmup=1.0):
        argv = ["/bed/mcload", "--url", URLS[placement], "--rate", f"{rate:.0f}", "--duration", f"{seconds:g}",
                "--warmup", f"{warmup:g}", "--timeout", "5"]
        argv += ["--conns", str(self.args.pool)] if conn_mode == "keepalive" else ["--per-request"]
        return json.loads(self.run_app(argv, seconds + warmup + 60))

    def counters(self):
        return {n: node.daemon.counters() for n, node in self.bed.nodes.items()}

    def sample(self, rep, placement, conn_mode, frac, mode):
        rate = max(1.0, frac * self.capacity[(placement, conn_mode)])
        c0 = self.counters()
        r = self.mcload(placement, conn_mode, rate, self.args.seconds)
        c1 = self.counters()
        intra = sum(c1[n]["bytes_redirect_intra"] - c0[n]["bytes_redirect_intra"] for n in c1)
        row = {"rep": rep, "placement": placement, "conn_mode": conn_mode, "fraction": frac, "mode": mode,
               "rate": round(rate), "achieved": r["achieved_rate"], "kept_up": r["kept_up"],
               "ok": r["ok"], "errors": r["errors"], "non2xx": r["non2xx"], "bytes_redirect_intra": intra,
               **{k: r["latency_us"][k] for k in PCTS}}
        what = f"rep {rep} {placement} {conn_mode} {frac:.0%} {mode}"
        # Timeouts and requests never sent are what an overloaded cell does
        # (reported: "not held"); anything else is a failure.
        wrong = {k: v for k, v in r["errors_by_kind"].items() if k not in ("timeout", "unsent")}
        row["overload_errors"] = r["errors"] - sum(wrong.values())
        if wrong or r["non2xx"] or (not r["ok"] and r["kept_up"]):
            self.problems.append(f"{what}: {r['ok']} ok, errors {r['errors_by_kind']}, {r['non2xx']} non-2xx")
        if mode == "full" and intra <= 0:
            self.problems.append(f"{what}: the sidecars' intra-pod hop was not redirected (bytes_redirect_intra +0)")
        if mode == "baseline" and intra:
            self.problems.append(f"{what}: {intra} B redirected with every shortcut off")
        if not r["kept_up"]:
            log(f"{what}: mcload could not hold the rate: {'; '.join(r['cannot_keep_up'])}")
        log(f"{what}: {rate:.0f} req/s, p50 {row['p50']} p99 {row['p99']} p99.9 {row['p99_9']} max {row['max']} µs")
        return row

    def measure(self):
        k = 0
        modes = ["baseline", "full"]
        for rep in range(1, self.args.reps + 1):
            for pl in self.args.placements:
                for cm in self.args.conn_modes:
                    for frac in self.args.fractions:
                        order = modes[k % 2:] + modes[:k % 2]
                        k += 1
                        for mode in order:
                            self.bed.set_mode(mode)
                            self.samples.append(self.sample(rep, pl, cm, frac, mode))
        self.bed.set_mode("baseline")

    def report(self):
        a = self.args
        lines = [f"### Latency at a fixed rate (mcload, Poisson, from each request's intended send time), "
                 f"{a.seconds:g} s per cell, medians of {a.reps} alternating repetitions\n",
                 "| placement | connections | rate | baseline p50 / p99 / p99.9 / max µs | full p50 / p99 / p99.9 / max µs "
                 "| full ÷ baseline p50 | p99 | p99.9 | max |", "|---|---|---|---|---|---|---|---|---|"]
        summary, worse = {}, []
        for pl in a.placements:
            for cm in a.conn_modes:
                for frac in a.fractions:
                    cell = [s for s in self.samples if (s["placement"], s["conn_mode"], s["fraction"]) == (pl, cm, frac)]
                    base = sorted((s for s in cell if s["mode"] == "baseline"), key=lambda s: s["rep"])
                    full = sorted((s for s in cell if s["mode"] == "full"), key=lambda s: s["rep"])
                    if not base or not full:
                        continue
                    med = {m: {p: statistics.median(s[p] for s in rows) for p in PCTS}
                           for m, rows in (("baseline", base), ("full", full))}
                    ratios = {p: [f[p] / b[p] for b, f in zip(base, full) if b[p] > 0] for p in PCTS}
                    rtxt = []
                    for p in PCTS:
                        r = ratios[p]
                        mr = statistics.median(r) if r else None
                        bad = mr is not None and mr > 1.0
                        if bad:
                            worse.append(f"{pl} {cm} {frac:.0%} {p}")
                        rtxt.append("–" if mr is None else
                                    f"{mr:.2f}{'' if len(r) == 1 else f' [{min(r):.2f}–{max(r):.2f}]'}"
                                    + (" ✗" if bad else ""))
                        summary[f"{pl} {cm} {frac:.0%} {p}"] = mr
                    rate = statistics.median(s["rate"] for s in cell)
                    held = all(s["kept_up"] for s in cell)
                    lines.append(f"| {pl} | {cm} | {frac:.0%} = {rate:.0f}/s{'' if held else ' (not held)'} | "
                                 + " / ".join(f"{med['baseline'][p]:.0f}" for p in PCTS) + " | "
                                 + " / ".join(f"{med['full'][p]:.0f}" for p in PCTS) + " | " + " | ".join(rtxt) + " |")
        lines += ["", "capacity (wrk, closed loop, baseline): "
                  + ", ".join(f"{k} {v:.0f} req/s" for k, v in self.meta["capacity"].items()),
                  "Target (issue 14): every percentile of full ≤ baseline at every rate; ✗ marks a cell where the "
                  "median ratio is above 1" + (f" ({len(worse)} of {len(summary)})" if summary else "")]
        benchlib.write_outputs(a.out, "\n".join(lines) + "\n", self.samples, self.meta,
                               {"ratios": summary, "worse": worse}, self.problems, log)

    def main(self):
        benchlib.require_tools(("bpftool", "/usr/bin/wrk", "/usr/sbin/haproxy", "/usr/sbin/nginx"))
        log(f"placements {self.args.placements}, {self.args.conn_modes}, rates {self.args.fractions} of capacity, "
            f"{self.args.reps} x {self.args.seconds:g} s -> {self.args.out}")
        benchlib.setup_measure_report(self, log)


def main():
    args = parse_args()
    os.environ["MESHCUT_BUILD"] = args.build_dir
    sys.path.insert(0, os.path.join(REPO, "e2e"))
    try:
        import bed as bedmod  # the bed as a package (e2e/bed/)
    except ImportError:
        import meshbed as bedmod
    return benchlib.run_cluster_bench(Bench(args, bedmod.mcnet, bedmod), bedmod.mcnet, log,
                                      (BenchError, RuntimeError, subprocess.TimeoutExpired, OSError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
