#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""meshcut socket-shortcut benchmark (a benchmark, not a test).

Measures, alternating the modes inside one run (A B C A B C ...), so that the
noise of this shared 2-vCPU VM hits every mode alike (see shared/BENCH.md):

  * request/response round trip (rtt ping-pong, 64 B / 1 KiB / 64 KiB, both
    ends pinned to one CPU, plus 64 B rows unpinned and cross-CPU) for
      tcp-lo, meshcut-lo, floor-lo   plain TCP over loopback in a private netns,
                                     with meshcutd's redirect, with the minimal
                                     redirect of bench/floor.bpf.c;
      unix                           AF_UNIX socketpair (same-host IPC floor);
      tcp-pod, meshcut-pod, floor-pod  two "pod" netns on a bridge in a "node"
                                     netns (veth pairs);
  * bulk throughput (iperf3) for the lo and pod transports.

A mode is a cgroup: the benchmark processes join the mode's cgroup (created
under the cgroup2 mount) before entering the netns, and only that cgroup has
the mode's sockops program attached. So plain TCP and both redirects can share
one netns without seeing each other, and every sample checks the redirect
counters: plain samples must not be redirected, meshcut and floor samples must.

Prints Markdown tables and writes samples.csv, results.json, table.md (and
meshcutd.log) to --out. Everything it creates (netns, cgroups, bpffs pins,
processes) is named mcb-<pid>-... and removed on exit, also on Ctrl-C.

Usage:  sudo /usr/bin/python3 bench/socket_bench.py [--quick] [--out DIR]
"""

import json
import os
import statistics
import subprocess
import sys
import time

import benchlib
from benchlib import BenchError, cfg_label, fmt_ratio, paired_ratio

REPO = benchlib.REPO

# Pod addresses: private to the namespaces this benchmark creates.
POD_A_IP = "10.213.0.1"
POD_B_IP = "10.213.0.2"
POD_PREFIX = 24
LO_IP = "127.0.0.1"

# (size, placement). The main rows pin both ends to one CPU: waking the other
# vCPU costs 40-80 us on this VM and would hide the data path. "unpinned" lets
# the scheduler choose (bimodal: the pair shares a CPU, or pays the wake-up);
# "cross-CPU" pins server and client to two different CPUs, i.e. always pays it.
SIZES = [(64, "pinned"), (1024, "pinned"), (65536, "pinned"), (64, "unpinned"), (64, "cross-CPU")]

# Transport -> (network, mode). Order = alternation order inside a repetition.
TRANSPORTS = {
    "tcp-lo": ("lo", "plain"),
    "meshcut-lo": ("lo", "meshcut"),
    "floor-lo": ("lo", "floor"),
    "unix": ("unix", "plain"),
    "tcp-pod": ("pod", "plain"),
    "meshcut-pod": ("pod", "meshcut"),
    "floor-pod": ("pod", "floor"),
}
BULK_TRANSPORTS = ["tcp-lo", "meshcut-lo", "floor-lo", "tcp-pod", "meshcut-pod", "floor-pod"]

# Targets from shared/BENCH.md.
TARGET_RTT_VS_FLOOR = 1.10
TARGET_BULK_VS_TCP = 2.0


log = benchlib.logger("socket_bench")


def run(cmd, check=True, timeout=30, **kw):
    """Short helper command in the root namespace (ip, meshcutd CLI, floor_loader)."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def cgroup2_mount():
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "cgroup2":
                return fields[1]
    raise BenchError("no cgroup2 mount in /proc/mounts")


class Bench:
    def __init__(self, args):
        self.args = args
        self.tag = f"mcb-{os.getpid()}"
        self.cleanups = []  # LIFO stack of (description, callable)
        self.children = benchlib.Children()  # live child processes, stopped first on cleanup
        self.problems = []  # assertion failures reported at the end
        self.samples = []
        self.meshcut_ok = False
        self.meshcutd_log = None
        self.build = os.path.abspath(args.build_dir)
        self.rtt_bin = os.path.join(self.build, "bench", "rtt")
        self.floor_bin = os.path.join(self.build, "bench", "floor_loader")
        self.meshcutd = os.path.abspath(args.meshcutd or
                                        os.path.join(self.build, "pinned-maps-daemon", "meshcutd"))
        self.ns_lo = f"{self.tag}-lo"
        self.ns_node = f"{self.tag}-node"
        self.ns_pa = f"{self.tag}-pa"
        self.ns_pb = f"{self.tag}-pb"
        self.floor_pin = f"/sys/fs/bpf/{self.tag}-floor"
        self.meshcut_pin = f"/sys/fs/bpf/{self.tag}-meshcut"
        self.cg = {}

    # ---- resources -------------------------------------------------------

    def on_cleanup(self, what, fn):
        self.cleanups.append((what, fn))

    def cleanup(self):
        self.children.stop_all()
        while self.cleanups:
            what, fn = self.cleanups.pop()
            try:
                fn()
            except Exception as e:  # keep going: leave as little behind as possible
                log(f"cleanup of {what} failed: {e}")

    def spawn(self, cmd, mode, netns=None, cpu=None, **kw):
        """Start cmd in the mode's cgroup, then (optionally) a netns and a CPU.

        The cgroup is joined in preexec_fn, i.e. before `ip netns exec` runs:
        ip netns exec remounts /sys, which hides the cgroup2 mount."""
        argv = (["ip", "netns", "exec", netns] if netns else []) + benchlib.taskset(cpu) + cmd
        procs_file = os.path.join(self.cg[mode], "cgroup.procs")

        def join_cgroup():
            with open(procs_file, "w") as f:
                f.write(str(os.getpid()))

        # Own session: a terminal Ctrl-C reaches only us, and we stop children in order.
        p = subprocess.Popen(argv, preexec_fn=join_cgroup, start_new_session=True, text=True, **kw)
        return self.children.track(p)

    def run_child(self, cmd, mode, netns=None, cpu=None, timeout=120):
        p = self.spawn(cmd, mode, netns, cpu, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return self.children.output(p, cmd, timeout)

    def setup_cgroups(self):
        root = cgroup2_mount()
        base = os.path.join(root, self.tag)
        os.mkdir(base)
        self.on_cleanup(f"cgroup {base}", lambda: self.rmdir_retry(base))
        for mode in ("plain", "floor", "meshcut"):
            path = os.path.join(base, mode)
            os.mkdir(path)
            self.on_cleanup(f"cgroup {path}", lambda p=path: self.rmdir_retry(p))
            self.cg[mode] = path

    @staticmethod
    def rmdir_retry(path):
        # A just-killed process may still be leaving the cgroup (EBUSY).
        for _ in range(50):
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        os.rmdir(path)

    def add_netns(self, name):
        run(["ip", "netns", "add", name])
        self.on_cleanup(f"netns {name}", lambda: run(["ip", "netns", "del", name], check=False))
        run(["ip", "-n", name, "link", "set", "lo", "up"])

    def setup_netns(self):
        self.add_netns(self.ns_lo)
        # Pods: pa and pb, each with eth0 <-> veth-X in the node netns, on bridge br0.
        for ns in (self.ns_node, self.ns_pa, self.ns_pb):
            self.add_netns(ns)
        ipn = ["ip", "-n", self.ns_node]
        run(ipn + ["link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0"])
        run(ipn + ["link", "set", "br0", "up"])
        for ns, ip, veth in ((self.ns_pa, POD_A_IP, "veth-a"), (self.ns_pb, POD_B_IP, "veth-b")):
            run(ipn + ["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
            run(ipn + ["link", "set", veth, "master", "br0", "up"])
            run(["ip", "-n", ns, "addr", "add", f"{ip}/{POD_PREFIX}", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])

    def check_pods(self):
        """Fail early and clearly if pod A cannot reach pod B (also warms ARP)."""
        port = self.args.port + 40
        server = self.spawn([self.rtt_bin, "server", "--tcp", f"{POD_B_IP}:{port}", "--once"], "plain",
                            self.ns_pb, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            benchlib.wait_line(server, "ready")
            self.run_child(["timeout", "5", self.rtt_bin, "client", "--tcp", f"{POD_B_IP}:{port}"]
                           + benchlib.rtt_client_args(64, 10, 0), "plain", self.ns_pa)
        except BenchError as e:
            raise BenchError(f"pod A cannot reach pod B over the bridge: {e}")
        finally:
            self.children.stop(server)

    def setup_floor(self):
        run([self.floor_bin, "attach", "--cgroup", self.cg["floor"], "--pin", self.floor_pin])
        self.on_cleanup("floor redirect", lambda: run([self.floor_bin, "detach", "--pin", self.floor_pin]))

    def floor_counters(self):
        return json.loads(run([self.floor_bin, "stats", "--pin", self.floor_pin]).stdout)

    # ---- meshcutd --------------------------------------------------------

    def meshcut_status(self):
        p = run([self.meshcutd, "status", "--pin-root", self.meshcut_pin, "--json"], check=False)
        if p.returncode != 0:
            return None
        try:
            return json.loads(p.stdout)
        except json.JSONDecodeError:
            return None

    @staticmethod
    def meshcut_ready(st):
        try:
            return st.get("enabled") is True and st["attachments"]["sockops"]["attached"] is True
        except (AttributeError, KeyError, TypeError):
            return False

    def meshcut_counters(self):
        st = self.meshcut_status()
        c = (st or {}).get("counters") or {}
        return {k: int(c.get(k, 0) or 0) for k in ("redirect_msgs", "redirect_bytes")}

    def setup_meshcut(self):
        if not os.access(self.meshcutd, os.X_OK):
            msg = f"meshcutd not found at {self.meshcutd}: meshcut rows skipped"
            log(msg)
            if self.args.require_meshcut:
                self.problems.append(msg)
            return
        logpath = os.path.join(self.args.out, "meshcutd.log")
        self.meshcutd_log = open(logpath, "w")
        # The daemon itself runs in our cgroup and the root netns; it attaches
        # its sockops to the meshcut cgroup only.
        daemon = subprocess.Popen(
            [self.meshcutd, "run", "--pin-root", self.meshcut_pin, "--cgroup", self.cg["meshcut"]]
            + list(getattr(self, "MESHCUTD_ARGS", ()))
            + list(getattr(self.args, "meshcutd_arg", None) or []),
            stdin=subprocess.DEVNULL, stdout=self.meshcutd_log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.children.track(daemon)

        def stop_meshcut():
            # detach first (SIGTERM alone leaves the pins: restart safety), then stop.
            p = run([self.meshcutd, "detach", "--pin-root", self.meshcut_pin], check=False)
            if p.returncode != 0:
                log(f"meshcutd detach failed ({p.returncode}): {p.stderr.strip()}")
            self.children.stop(daemon, grace=5.0)
            if os.path.exists(self.meshcut_pin):
                left = [os.path.join(d, f) for d, _, fs in os.walk(self.meshcut_pin) for f in fs]
                log(f"meshcutd detach left {len(left)} pins under {self.meshcut_pin}; removing them")
                for f in left:
                    os.unlink(f)
                for d, _, _ in sorted(os.walk(self.meshcut_pin), key=lambda t: -len(t[0])):
                    os.rmdir(d)
        self.on_cleanup("meshcutd", stop_meshcut)

        deadline = time.monotonic() + 15
        st = None
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                break
            st = self.meshcut_status()
            if self.meshcut_ready(st):
                break
            time.sleep(0.1)
        if not self.meshcut_ready(st):
            msg = (f"meshcutd did not become ready (exit={daemon.poll()}, status={json.dumps(st)}); "
                   f"see {logpath}; meshcut rows skipped")
            log(msg)
            self.problems.append(msg)
            return
        enroll = [self.meshcutd, "enroll", "--pin-root", self.meshcut_pin]
        try:
            run(enroll + ["--netns", f"/var/run/netns/{self.ns_lo}"])
            run(enroll + ["--netns", f"/var/run/netns/{self.ns_pa}", "--pod-ip", POD_A_IP])
            run(enroll + ["--netns", f"/var/run/netns/{self.ns_pb}", "--pod-ip", POD_B_IP])
        except BenchError as e:
            self.problems.append(f"meshcutd enroll failed: {e}; meshcut rows skipped")
            log(self.problems[-1])
            return
        self.meshcut_ok = True
        log(f"meshcutd ready (pin root {self.meshcut_pin})")

    # ---- measurements ----------------------------------------------------

    def endpoints(self, net):
        """(server netns, client netns, server address) of a network."""
        if net == "lo":
            return self.ns_lo, self.ns_lo, LO_IP
        return self.ns_pb, self.ns_pa, POD_B_IP

    def counters(self):
        """Snapshot of both redirects' counters (taken outside the timed part)."""
        snap = {"floor_bytes": self.floor_counters()["redirect_bytes"], "meshcut_bytes": 0, "meshcut_msgs": 0}
        if self.meshcut_ok:
            c = self.meshcut_counters()
            snap["meshcut_bytes"], snap["meshcut_msgs"] = c["redirect_bytes"], c["redirect_msgs"]
        return snap

    def check_redirect(self, row, before, after, expected_bytes):
        """Record how much of a sample's traffic each redirect carried, and
        complain if a mode was (not) redirected as it should be."""
        mode = TRANSPORTS[row["transport"]][1]
        row["floor_redirect_bytes"] = after["floor_bytes"] - before["floor_bytes"]
        row["meshcut_redirect_bytes"] = after["meshcut_bytes"] - before["meshcut_bytes"]
        row["meshcut_redirect_msgs"] = after["meshcut_msgs"] - before["meshcut_msgs"]
        own = {"floor": row["floor_redirect_bytes"], "meshcut": row["meshcut_redirect_bytes"]}
        if mode == "plain":
            if own["floor"] or own["meshcut"]:
                self.problems.append(f"{row['transport']} {row['kind']} rep {row['rep']}: plain TCP was "
                                     f"redirected ({own})")
            row["redirected_share"] = 0.0
            return
        redirected = own[mode]
        other = own["floor" if mode == "meshcut" else "meshcut"]
        row["redirected_share"] = round(redirected / expected_bytes, 4) if expected_bytes else None
        if redirected <= 0:
            self.problems.append(f"{row['transport']} {row['kind']} {row.get('config', '')} rep {row['rep']}: "
                                 f"no bytes redirected")
        if other:
            self.problems.append(f"{row['transport']} rep {row['rep']}: the other redirect carried {other} bytes")

    def rtt_sample(self, rep, transport, size, placement, iters, warmup, port):
        net, mode = TRANSPORTS[transport]
        # (server CPU, client CPU)
        srv_cpu, cli_cpu = {"pinned": (self.args.cpu, self.args.cpu), "unpinned": (None, None),
                            "cross-CPU": (self.args.cpu, self.other_cpu())}[placement]
        client_args = benchlib.rtt_client_args(size, iters, warmup)
        row = {"kind": "rtt", "rep": rep, "transport": transport, "net": net, "mode": mode,
               "size": size, "placement": placement, "config": cfg_label(size, placement)}
        if net == "unix":
            # The forked echo side moves itself to srv_cpu (taskset cannot split a fork).
            pair = [self.rtt_bin, "pair"] + client_args
            if srv_cpu is not None and srv_cpu != cli_cpu:
                pair += ["--server-cpu", str(srv_cpu)]
            benchlib.merge_rtt(row, self.run_child(pair, mode, self.ns_lo, cli_cpu))
            return row
        srv_ns, cli_ns, addr = self.endpoints(net)
        before = self.counters()
        server = self.spawn([self.rtt_bin, "server", "--tcp", f"{addr}:{port}", "--once"], mode, srv_ns, srv_cpu,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = self.children.serve(server, "ready", lambda: self.run_child(
            [self.rtt_bin, "client", "--tcp", f"{addr}:{port}"] + client_args, mode, cli_ns, cli_cpu))
        benchlib.merge_rtt(row, out)
        # Both directions carry `size` bytes per iteration (+ the 4+1 byte handshake).
        self.check_redirect(row, before, self.counters(), 2 * size * (iters + warmup))
        return row

    def bulk_sample(self, rep, transport, seconds, port):
        net, mode = TRANSPORTS[transport]
        srv_ns, cli_ns, addr = self.endpoints(net)
        before = self.counters()
        server = self.spawn(benchlib.iperf_server_cmd(addr, port), mode, srv_ns,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = self.children.serve(server, "listening", lambda: self.run_child(
            benchlib.iperf_client_cmd(addr, port, seconds), mode, cli_ns, timeout=seconds + 30))
        row = {"kind": "bulk", "rep": rep, "transport": transport, "net": net, "mode": mode,
               **benchlib.iperf_result(out)}
        self.check_redirect(row, before, self.counters(), row["bytes"])
        return row

    def other_cpu(self):
        return 0 if self.args.cpu != 0 else 1

    def transports(self):
        return [t for t in TRANSPORTS if TRANSPORTS[t][1] != "meshcut" or self.meshcut_ok]

    def measure(self):
        a = self.args
        reps = a.reps
        rtt_ts = self.transports()
        bulk_ts = [t for t in BULK_TRANSPORTS if t in rtt_ts]
        for rep in range(1, reps + 1):
            t0 = time.monotonic()
            for size, placement in SIZES:
                iters = a.iters if size < 65536 else max(1, a.iters // 2)
                warmup = max(10, iters // 10)
                for i, t in enumerate(rtt_ts):  # A B C ... inside each size
                    self.samples.append(self.rtt_sample(rep, t, size, placement, iters, warmup, a.port + i))
            if not a.no_bulk:
                for i, t in enumerate(bulk_ts):
                    self.samples.append(self.bulk_sample(rep, t, a.iperf_time, a.port + 20 + i))
            log(f"repetition {rep}/{reps} done in {time.monotonic() - t0:.1f} s")

    # ---- report ----------------------------------------------------------

    def report(self):
        out = self.args.out
        rtt = [s for s in self.samples if s["kind"] == "rtt"]
        bulk = [s for s in self.samples if s["kind"] == "bulk"]
        lines = []
        lines.append(f"### Round trip (µs; median of {self.args.reps} sample medians [min–max]; "
                     f"pinned = both ends on CPU {self.args.cpu}, cross-CPU = server on {self.args.cpu}, "
                     f"client on {self.other_cpu()})\n")
        lines.append("| transport | size | median µs | min–max | p99 µs | × plain TCP (same net) | meshcut/floor |")
        lines.append("|---|---|---|---|---|---|---|")
        summary = []

        for size, placement in SIZES:
            cfg = cfg_label(size, placement)
            by_t = {t: [s for s in rtt if s["transport"] == t and s["config"] == cfg] for t in self.transports()}
            for t, rows in by_t.items():
                if not rows:
                    continue
                net, mode = TRANSPORTS[t]
                base_t = "tcp-pod" if net == "pod" else "tcp-lo"
                ratio = paired_ratio(rows, by_t.get(base_t, []), "median_us")
                mf = paired_ratio(rows, by_t.get(f"floor-{net}", []), "median_us") if mode == "meshcut" else None
                rec = {"kind": "rtt", "transport": t, "config": cfg, **benchlib.rtt_stats(rows),
                       "vs_tcp": ratio, "meshcut_vs_floor": mf}
                if mf and placement == "pinned":  # unpinned rows measure the scheduler, not the path
                    rec["target_ok"] = mf[0] <= TARGET_RTT_VS_FLOOR
                summary.append(rec)
                lines.append(f"| {t} | {cfg} | {rec['median_us']:.2f} | {rec['min_us']:.2f}–{rec['max_us']:.2f} | "
                             f"{rec['p99_us']:.2f} | {fmt_ratio(ratio) if t != base_t else '1'} | "
                             f"{fmt_ratio(mf, TARGET_RTT_VS_FLOOR if placement == 'pinned' else None) if mf else ''} |")
        # The same, compact (as in shared/BENCH.md): median (ratio to plain TCP; meshcut/floor).
        cfgs = [cfg_label(sz, pin) for sz, pin in SIZES]
        compact = ["\n### Round trip, compact: median µs (× plain TCP; meshcut ÷ floor)\n",
                   "| transport | " + " | ".join(cfgs) + " |", "|---" * (len(cfgs) + 1) + "|"]
        for t in self.transports():
            cells = []
            for cfg in cfgs:
                rec = next((r for r in summary if r["kind"] == "rtt" and r["transport"] == t and r["config"] == cfg),
                           None)
                if not rec:
                    cells.append("")
                    continue
                notes = [f"{rec['vs_tcp'][0]:.2f}×"] if rec["vs_tcp"] and not t.startswith("tcp-") else []
                if rec["meshcut_vs_floor"]:
                    notes.append(f"{rec['meshcut_vs_floor'][0]:.2f}× floor")
                cells.append(f"{rec['median_us']:.2f}" + (f" ({'; '.join(notes)})" if notes else ""))
            compact.append(f"| {t} | " + " | ".join(cells) + " |")
        lines = compact + ["", "Details:\n"] + lines
        if bulk:
            lines.append(f"\n### Bulk throughput (iperf3, {self.args.iperf_time} s per run, unpinned; "
                         f"Gbit/s, median [min–max])\n")
            lines.append("| transport | Gbit/s | min–max | × plain TCP | meshcut/floor | retransmits (max) |")
            lines.append("|---|---|---|---|---|---|")
            by_t = {t: [s for s in bulk if s["transport"] == t] for t in BULK_TRANSPORTS}
            for t, rows in by_t.items():
                if not rows:
                    continue
                net, mode = TRANSPORTS[t]
                g = [s["gbit_s"] for s in rows]
                base_t = f"tcp-{net}"
                ratio = paired_ratio(rows, by_t[base_t], "gbit_s")
                mf = paired_ratio(rows, by_t[f"floor-{net}"], "gbit_s") if mode == "meshcut" else None
                rec = {"kind": "bulk", "transport": t, "gbit_s": statistics.median(g), "min": min(g), "max": max(g),
                       "vs_tcp": ratio, "meshcut_vs_floor": mf, "retransmits_max": max(s["retransmits"] for s in rows)}
                if mode == "meshcut":
                    rec["target_ok"] = ratio[0] >= TARGET_BULK_VS_TCP
                summary.append(rec)
                target = TARGET_BULK_VS_TCP if mode == "meshcut" else None
                lines.append(f"| {t} | {rec['gbit_s']:.2f} | {min(g):.2f}–{max(g):.2f} | "
                             f"{fmt_ratio(ratio, target, True) if t != base_t else '1'} | "
                             f"{fmt_ratio(mf) if mf else ''} | {rec['retransmits_max']} |")
        # Proof that the redirects carried the traffic.
        lines.append("\n### Redirected share of the payload bytes (from the BPF counters, per sample)\n")
        lines.append("| transport | min | max |")
        lines.append("|---|---|---|")
        for t in self.transports():
            sh = [s["redirected_share"] for s in self.samples
                  if s["transport"] == t and s.get("redirected_share") is not None]
            if sh and TRANSPORTS[t][1] != "plain":
                lines.append(f"| {t} | {min(sh):.3f} | {max(sh):.3f} |")
        if self.meshcut_ok:
            c = self.meshcut_counters()
            lines.append(f"\nmeshcutd counters at the end: redirect_msgs={c['redirect_msgs']} "
                         f"redirect_bytes={c['redirect_bytes']}")
        else:
            lines.append("\nmeshcut rows: not measured (meshcutd missing or not ready, see above)")
        lines.append(f"\nTargets (shared/BENCH.md): redirected RTT ≤ {TARGET_RTT_VS_FLOOR}× the minimal redirect "
                     f"(floor) in the pinned rows, bulk ≥ {TARGET_BULK_VS_TCP}× plain TCP; ✗ marks a miss. Ratios are medians of "
                     f"per-repetition ratios (modes measured side by side), [min–max].")
        meta = {
            **benchlib.host_meta(self.args),
            "iperf_seconds": self.args.iperf_time,
            "quick": self.args.quick,
            "meshcut": self.meshcut_ok,
            "meshcutd": self.meshcutd,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "pod_ips": [POD_A_IP, POD_B_IP],
        }
        benchlib.write_outputs(out, "\n".join(lines) + "\n", self.samples, meta, summary, self.problems, log)

    # ---- main ------------------------------------------------------------

    def main(self):
        for b in (self.rtt_bin, self.floor_bin):
            if not os.access(b, os.X_OK):
                raise BenchError(f"{b} missing: cmake --build {self.build} --target "
                                 f"meshcut_bench_rtt meshcut_bench_floor_loader")
        benchlib.require_tools(("ip", "taskset", "iperf3", "timeout"))
        os.makedirs(self.args.out, exist_ok=True)
        self.setup_cgroups()
        self.setup_netns()
        self.check_pods()
        self.setup_floor()
        self.setup_meshcut()
        self.measure()
        self.report()


def parse_args(argv=None):
    ap = benchlib.bench_arg_parser(
        __doc__, out="./bench-out", port=17100, build_dir=os.path.join(REPO, "build"),
        iters_help="round trips per sample for <= 1 KiB (64 KiB does half; default 20000, --quick 1000)",
        cpu_help="CPU both ends are pinned to (default: the last one, fewer housekeeping interrupts)",
        port_help="first TCP port used inside the namespaces",
        quick_help="1 repetition, few iterations, 1 s iperf3 (CI smoke run)")
    ap.add_argument("--meshcutd", help="meshcutd binary (default BUILD/pinned-maps-daemon/meshcutd)")
    ap.add_argument("--require-meshcut", action="store_true",
                    help="fail (exit 3) if the meshcut rows cannot be measured")
    return benchlib.check_bench_args(ap, ap.parse_args(argv))


def run_main(bench, name, on_exit=None):
    """Run BENCH (a Bench) as the benchmark NAME: 2 without root, 1 after an
    error, 3 if a check failed, else 0; everything it made is removed, and
    ON_EXIT() runs last."""
    if os.geteuid() != 0:
        print(f"{name} needs root (netns, cgroups, BPF)", file=sys.stderr)
        return 2

    def cleanup():
        bench.cleanup()
        if bench.meshcutd_log:
            bench.meshcutd_log.close()
        if on_exit:
            on_exit()

    rc = benchlib.run_bench(bench.main, cleanup, log, catch_signals=True)
    if rc == 0 and bench.problems:
        log("problems:\n  " + "\n  ".join(bench.problems))
        rc = 3
    return rc


def main():
    return run_main(Bench(parse_args()), "socket_bench.py")


if __name__ == "__main__":
    sys.exit(main())
