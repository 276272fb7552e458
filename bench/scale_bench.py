#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""meshcut scale benchmark: 100,000 connections held across pods of one node
(issue 14, part 4; a benchmark with correctness checks, not a unit test).

One node (a netns with a bridge) and P pods on it (default 4). Pod i runs
`hold server`s and `hold client`s (as many as the file limit needs), which
hold connections to pod i+1's servers (round-robin over two ports each) and
run a 64 B ping-pong on 100 of them each, spread over all they hold
(bench/hold.cpp; every echo is compared byte for byte). Per repetition, alternating, in two modes:

  plain    no meshcutd;
  meshcut  meshcutd running, every pod enrolled.

Per mode: open 1,000 connections in total, ping (RTT at 1 k); open the rest up
to --conns (all clients at once: the time to open them), ping again (RTT at
100 k); the slab memory (/proc/meminfo Slab) before and after, per
connection. In meshcut mode also: `status --json`, `pods --json`,
`conns --json` and a `/metrics` scrape timed, meshcutd's RSS, the kernel
memory per socket that `status` reports, and the sockhash counters
(sock_added_*, sock_add_failed).

Then an overflow run: meshcutd with --max-sockets below what the pods open;
the connections past it must fall back (sock_add_failed counted) and every
connection must still echo its bytes.

Targets (issue 14): RTT at 100 k <= 1.10x RTT at 1 k (same run); time to open
within 5 % of plain; status, pods, conns, /metrics <= 0.5 s each; meshcutd
RSS <= 30 MiB. Timings are reported, not failed on; the checks that fail the
run are: every echo correct, no connection failed to open, every socket of
the meshcut run in the sockhash (none failed), the ping redirected, and the
overflow run's fallbacks counted with every echo correct.

Usage:  /usr/bin/python3 bench/scale_bench.py [--quick] [--conns N] [--pods P] [--reps R] [--out DIR]
  full:  100,000 connections, 4 pods, 3 repetitions (about 5 minutes)
  quick: CI smoke: 2,000 connections, 2 pods, 1 repetition, overflow at 1,000 sockets
Output: a Markdown table on stdout; table.md, samples.csv, results.json in
--out. Exit 0 ok, 1 error, 3 a check failed, 77 skipped (no root, outside CI).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True
import benchlib  # noqa: E402
from benchlib import BenchError  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PING_CONNS, PING_ITERS = 100, 2000
SMALL = 1000  # connections of the "1 k" point
log = benchlib.logger("scale_bench")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke run (2,000 connections, 2 pods, 1 repetition)")
    ap.add_argument("--conns", type=int, help="connections held in total (default 100000, --quick 2000)")
    ap.add_argument("--pods", type=int, help="pods (default 4, --quick 2)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, --quick 1)")
    ap.add_argument("--overflow-sockets", type=int, help="--max-sockets of the overflow run (default 1000)")
    ap.add_argument("--out", default="./bench-out/scale", help="output directory")
    ap.add_argument("--build-dir", default=os.environ.get("MESHCUT_BUILD", os.path.join(REPO, "build")))
    a = ap.parse_args(argv)
    a.conns = a.conns or (2000 if a.quick else 100000)
    a.pods = a.pods or (2 if a.quick else 4)
    a.reps = a.reps or (1 if a.quick else 3)
    a.overflow_sockets = a.overflow_sockets or 1000
    a.out, a.build_dir = os.path.abspath(a.out), os.path.abspath(a.build_dir)
    a.cpu, a.iters = None, PING_ITERS
    if a.pods < 2 or a.conns < 2 * SMALL or a.reps < 1:
        ap.error("--pods >= 2, --conns >= 2000, --reps >= 1")
    return a


def slab_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                return int(line.split()[1])
    return 0


TCP_DIAG = ("TcpExt:ListenOverflows", "TcpExt:ListenDrops", "TcpExt:TCPBacklogDrop", "Tcp:RetransSegs",
            "TcpExt:TCPTimeouts", "TcpExt:TCPReqQFullDrop")


def tcp_stats(pods):
    """TCP counters that explain a slow open (SYNs dropped and sent again),
    summed over the pods' netns."""
    out = dict.fromkeys(TCP_DIAG, 0)
    for p in pods:
        text = p.run("cat", "/proc/net/netstat", "/proc/net/snmp").stdout.splitlines()
        for head, vals in zip(text[::2], text[1::2]):
            names, nums = head.split(), vals.split()
            for n, v in zip(names[1:], nums[1:]):
                k = names[0].rstrip(":") + ":" + n
                if k in out:
                    out[k] += int(v)
    return out


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Bench(benchlib.PodBench):
    def __init__(self, args, mcnet):
        super().__init__(args, mcnet)
        self.hold_bin = os.path.join(args.build_dir, "bench", "hold")
        self.meta = benchlib.host_meta(args)
        self.meta.update({"conns": args.conns, "pods": args.pods})

    def setup(self):
        m = self.mcnet
        if not os.access(self.hold_bin, os.X_OK):
            raise BenchError(f"{self.hold_bin} not built: cmake --build build --target meshcut_bench_hold")
        # Each connection is a file in a client and one in a server: spread
        # them over processes that stay below the file limit (raising the hard
        # limit needs CAP_SYS_RESOURCE, which a container may not have).
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        per_proc = max(1000, hard - 256)
        self.procs_per_pod = -(-self.args.conns // (self.args.pods * per_proc))
        self.meta["hold_processes_per_pod"] = self.procs_per_pod
        self.cg = m.Cgroup("scale")
        self.node = m.Node("scale", subnet="10.251.7")
        self.pods = [self.node.add_pod(f"s{i}", 10 + i) for i in range(self.args.pods)]
        for p in self.pods:
            p.ns = p  # PodBench.spawn enters pod.ns
            # Ports for 25,000+ connections per destination address.
            p.run("sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65000")
            p.run("sysctl", "-q", "-w", "net.core.somaxconn=65535")
        self.metrics_port = 19000 + os.getpid() % 1000

    # ---- one mode ----------------------------------------------------------------

    def start_daemon(self, name, extra=()):
        d = self.mcnet.Daemon(self.cg, name,
                              extra=["--metrics-addr", f"127.0.0.1:{self.metrics_port}", *extra])
        d.start()
        for p in self.pods:
            d.enroll(p, p.pod_ip)
        return d

    def start_holders(self):
        """Per pod, procs_per_pod servers (two ports each) and as many clients;
        client k of pod i holds connections to server k of pod i+1."""
        servers, clients = [], []
        ports = [(9101 + 2 * k, 9102 + 2 * k) for k in range(self.procs_per_pod)]
        for p in self.pods:
            for pk in ports:
                s = self.spawn([self.hold_bin, "server", "--tcp", ",".join(f"{p.pod_ip}:{port}" for port in pk)],
                               p, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                benchlib.wait_line(s, "ready")
                servers.append(s)
        for i, p in enumerate(self.pods):
            peer = self.pods[(i + 1) % len(self.pods)]
            for pk in ports:
                c = self.spawn([self.hold_bin, "client", "--tcp", ",".join(f"{peer.pod_ip}:{port}" for port in pk),
                                "--size", "64"], p, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, bufsize=1)
                clients.append(c)
        return servers, clients

    @staticmethod
    def ask(clients, line, timeout=300):
        """Send LINE to every client at once, then read each one's JSON answer."""
        for c in clients:
            c.stdin.write(line + "\n")
            c.stdin.flush()
        out = []
        for c in clients:
            ans = c.stdout.readline()
            if not ans:
                raise BenchError(f"hold client exited: {c.stderr.read()[-500:]}")
            out.append(json.loads(ans))
        return out

    def ping(self, clients):
        """The ping-pong, one client at a time (they would share the CPUs)."""
        res = []
        for c in clients:
            self.ask([c], f"ping {PING_CONNS} {PING_ITERS // 10}")  # warm-up, not recorded
            res.append(self.ask([c], f"ping {PING_CONNS} {PING_ITERS}")[0])
        return {"p50_us": round(statistics.median(r["p50_us"] for r in res), 2),
                "p99_us": round(statistics.median(r["p99_us"] for r in res), 2),
                "errors": sum(r.get("errors", 0) for r in res) + sum(1 for r in res if "error" in r)}

    def timed_cli(self, d, *args):
        t0 = time.monotonic()
        r = d.cli(*args, check=False)
        return time.monotonic() - t0, r

    def sample(self, rep, mode):
        a = self.args
        row = {"rep": rep, "mode": mode, "conns": a.conns}
        d = self.start_daemon(f"scale-{rep}") if mode == "meshcut" else None
        c0 = d.counters() if d else None
        servers, clients = self.start_holders()
        try:
            slab0, tcp0 = slab_kib(), tcp_stats(self.pods)
            row["time_wait_before"] = sum(len(p.run("ss", "-Htan", "state", "time-wait").stdout.splitlines())
                                          for p in self.pods)
            first = self.ask(clients, f"open {SMALL // len(clients)}")
            ping1 = self.ping(clients)
            t0 = time.monotonic()
            rest = self.ask(clients, f"open {(a.conns - SMALL) // len(clients)}")
            row["open_s"] = round(time.monotonic() - t0, 3)
            tcp1 = tcp_stats(self.pods)
            row.update({k.split(":")[1]: tcp1[k] - tcp0[k] for k in TCP_DIAG})
            held = sum(r["held"] for r in rest)
            row["held"] = held
            row["open_failed"] = sum(r["failed"] for r in first + rest)
            row["conn_per_s"] = round((held - sum(r["held"] for r in first)) / max(row["open_s"], 1e-9))
            time.sleep(0.5)  # the last handshakes' ACKs
            row["slab_b_per_conn"] = round((slab_kib() - slab0) * 1024 / max(1, held))
            ping2 = self.ping(clients)
            row.update({"rtt1k_p50_us": ping1["p50_us"], "rtt1k_p99_us": ping1["p99_us"],
                        "rtt_p50_us": ping2["p50_us"], "rtt_p99_us": ping2["p99_us"],
                        "echo_errors": ping1["errors"] + ping2["errors"]})
            row["rtt_ratio"] = round(ping2["p50_us"] / max(ping1["p50_us"], 1e-9), 3)
            if d:
                self.daemon_sample(row, d, c0, held)
        finally:
            for c in clients:
                try:
                    c.stdin.write("quit\n")
                    c.stdin.flush()
                    c.wait(timeout=60)
                except (OSError, subprocess.TimeoutExpired):
                    c.kill()
            for s in servers:
                s.kill()
                s.wait()
            if d:
                d.detach()
                d.stop()
        self.check(row, mode)
        log(f"rep {rep} {mode}: {row['held']} held, opened in {row['open_s']} s, RTT p50 {row['rtt1k_p50_us']} -> "
            f"{row['rtt_p50_us']} µs ({row['rtt_ratio']}x), slab {row['slab_b_per_conn']} B/conn; while opening: "
            + ", ".join(f"{k.split(':')[1]} {row[k.split(':')[1]]}" for k in TCP_DIAG))
        return row

    def daemon_sample(self, row, d, c0, held):
        for what, args in (("status", ("status", "--json")), ("pods", ("pods", "--json")),
                           ("conns", ("conns", "--json"))):
            sec, r = self.timed_cli(d, *args)
            row[f"{what}_s"] = round(sec, 3)
            if r.returncode != 0:
                self.problems.append(f"meshcutd {what} failed at {held} connections: {r.stderr.strip()[-300:]}")
            elif what == "status":
                st = json.loads(r.stdout)
                row["mem_per_socket_b"] = st["memory"]["per_socket_bytes"]
                row["sockhash_entries"] = st["maps"]["mc_sockhash"]["entries"]
        t0 = time.monotonic()
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read()
        row["metrics_s"] = round(time.monotonic() - t0, 3)
        row["metrics_ok"] = b"meshcut_up 1" in body
        row["rss_mib"] = round(rss_kib(d.proc.pid) / 1024, 1)
        dc = self.mcnet.delta(c0, d.counters())
        row.update({"sock_added": dc["sock_added_active"] + dc["sock_added_passive"],
                    "sock_add_failed": dc["sock_add_failed"],
                    "msg_redirect_node": dc["msg_redirect_node"]})

    def check(self, row, mode):
        what = f"rep {row['rep']} {mode}"
        if row["echo_errors"]:
            self.problems.append(f"{what}: {row['echo_errors']} round trips with missing or wrong bytes")
        if row["open_failed"] or row["held"] < self.args.conns - len(self.pods):
            self.problems.append(f"{what}: {row['open_failed']} connections failed, {row['held']} held")
        if mode == "meshcut":
            if row["sock_add_failed"] or row["sock_added"] < 2 * row["held"]:
                self.problems.append(f"{what}: {row['sock_added']} sockets enrolled for {row['held']} connections "
                                     f"({row['sock_add_failed']} failed)")
            if row["msg_redirect_node"] < 2 * PING_ITERS * len(self.pods):
                self.problems.append(f"{what}: ping-pong not redirected ({row['msg_redirect_node']} messages)")
            if not row["metrics_ok"]:
                self.problems.append(f"{what}: /metrics without meshcut_up 1")

    def overflow(self):
        """meshcutd with a sockhash smaller than the pods' sockets: the rest
        fall back, counted, and every connection still echoes its bytes."""
        a = self.args
        d = self.start_daemon("scale-overflow", ("--max-sockets", str(a.overflow_sockets)))
        c0 = d.counters()
        servers, clients = self.start_holders()
        n = min(a.conns, 3 * a.overflow_sockets)
        try:
            opened = self.ask(clients, f"open {n // len(clients)}")
            held = sum(r["held"] for r in opened)
            # Every held connection pings once (K = all of them).
            pings = [self.ask([c], f"ping {r['held']} {r['held']}")[0] for c, r in zip(clients, opened)]
            dc = self.mcnet.delta(c0, d.counters())
            st = d.status()
        finally:
            for c in clients:
                c.kill()
            for s in servers:
                s.kill()
            d.detach()
            d.stop()
        row = {"held": held, "max_sockets": a.overflow_sockets, "sockhash_entries": st["maps"]["mc_sockhash"]["entries"],
               "sock_added": dc["sock_added_active"] + dc["sock_added_passive"], "sock_add_failed": dc["sock_add_failed"],
               "echo_errors": sum(p.get("errors", 0) for p in pings), "pinged": sum(p.get("iters", 0) for p in pings)}
        if row["sock_add_failed"] < 2 * held - a.overflow_sockets or row["sock_added"] > a.overflow_sockets:
            self.problems.append(f"overflow: {row['sock_added']} enrolled, {row['sock_add_failed']} counted as fallbacks "
                                 f"for {2 * held} sockets and a sockhash of {a.overflow_sockets}")
        if row["echo_errors"] or row["pinged"] != held:
            self.problems.append(f"overflow: {row['echo_errors']} wrong round trips of {row['pinged']} ({held} held)")
        log(f"overflow: {held} connections, sockhash {a.overflow_sockets}: {row['sock_added']} enrolled, "
            f"{row['sock_add_failed']} fell back (counted), {row['echo_errors']} echo errors")
        return row

    def measure(self):
        for rep in range(1, self.args.reps + 1):
            order = ("plain", "meshcut") if rep % 2 else ("meshcut", "plain")
            for mode in order:
                self.samples.append(self.sample(rep, mode))
        self.meta["overflow"] = self.overflow()

    def report(self):
        a = self.args
        rows = {m: [s for s in self.samples if s["mode"] == m] for m in ("plain", "meshcut")}

        def med(mode, key):
            v = [r[key] for r in rows[mode] if r.get(key) is not None]
            return statistics.median(v) if v else None

        ratio_open = [m["open_s"] / p["open_s"] for m, p in zip(sorted(rows["meshcut"], key=lambda r: r["rep"]),
                                                               sorted(rows["plain"], key=lambda r: r["rep"]))]
        lines = [f"### {a.conns} connections held across {a.pods} pods of one node; medians of {a.reps} "
                 f"alternating repetitions\n",
                 "| mode | open s | conn/s | RTT p50 at 1 k µs | RTT p50 at all µs | ratio (target ≤ 1.10) | "
                 "RTT p99 at all µs | slab B/conn |", "|---|---|---|---|---|---|---|---|"]
        for m in ("plain", "meshcut"):
            lines.append(f"| {m} | {med(m, 'open_s')} | {med(m, 'conn_per_s')} | {med(m, 'rtt1k_p50_us')} | "
                         f"{med(m, 'rtt_p50_us')} | {med(m, 'rtt_ratio')} | {med(m, 'rtt_p99_us')} | "
                         f"{med(m, 'slab_b_per_conn')} |")
        extra = (med("meshcut", "slab_b_per_conn") or 0) - (med("plain", "slab_b_per_conn") or 0)
        lines += ["", f"time to open, meshcut ÷ plain (target ≤ 1.05): {benchlib.fmt_med(ratio_open, 3)} "
                      f"[{min(ratio_open):.3f}–{max(ratio_open):.3f}]" if ratio_open else "",
                  f"kernel memory meshcut adds per connection (slab, both sockets): {extra:.0f} B measured; "
                  f"`status` reports {med('meshcut', 'mem_per_socket_b')} B per socket from struct sizes",
                  f"meshcutd at {a.conns} connections: status {med('meshcut', 'status_s')} s, pods "
                  f"{med('meshcut', 'pods_s')} s, conns {med('meshcut', 'conns_s')} s, /metrics "
                  f"{med('meshcut', 'metrics_s')} s (targets ≤ 0.5 s); RSS {med('meshcut', 'rss_mib')} MiB "
                  f"(≤ 30 MiB)"]
        ov = self.meta.get("overflow") or {}
        lines.append(f"overflow: {ov.get('held')} connections with a sockhash of {ov.get('max_sockets')}: "
                     f"{ov.get('sock_added')} sockets enrolled, {ov.get('sock_add_failed')} fell back (counted), "
                     f"{ov.get('echo_errors')} echo errors in {ov.get('pinged')} round trips")
        summary = {"open_ratio": ratio_open, "slab_extra_b_per_conn": extra,
                   **{f"{m}_{k}": med(m, k) for m in rows for k in ("open_s", "rtt_ratio", "rtt_p50_us")}}
        benchlib.write_outputs(a.out, "\n".join(lines) + "\n", self.samples, self.meta, summary, self.problems, log)

    def main(self):
        log(f"{self.args.conns} connections, {self.args.pods} pods, {self.args.reps} repetitions -> {self.args.out}")
        benchlib.setup_measure_report(self, log)


def main():
    args = parse_args()
    (mcnet,) = benchlib.import_netns_helpers(args.build_dir, "mcnet")
    return benchlib.run_cluster_bench(Bench(args, mcnet), mcnet, log,
                                      (BenchError, RuntimeError, subprocess.TimeoutExpired, OSError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
