#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""meshcut objectives cost benchmark (issue 15's Benchmark paragraph; a benchmark, not a test).

What the objectives half costs, plain vs on, in one run:

 1. at connect time, the actuators: connect + 64 B request + 64 B response +
    close (bench/crr) from a sidecar-less caller pod to a backend pod on one
    node bridge, for
      plain        meshcutd attached, objectives off (no managed service);
      off-path     services loaded, the caller connects straight to the
                   backend's pod IP (an endpoint: connect4's routing lookup,
                   no action in force, fail-open; the socket is still tagged
                   and its request measured);
      route+admit  the caller connects to the ClusterIP; an action routes it to
                   the backend and admits it through a token bucket whose rate
                   is never reached (and the socket is tagged and measured);
 2. per request, the telemetry: keep-alive ping-pong (bench/rtt, 64 B) from the
    caller to the backend, untagged (objectives off, pod IP) vs tagged
    (objectives on, to the ClusterIP, routed), on
      normal       the TCP path (both pods --no-same-node: sockops and the
                   cgroup_skb ingress program see the segments);
      shortcut     the same-node socket shortcut (sk_msg sees every send).

"Objectives off" is the service file emptied (meshcutd watches it): exactly
what `meshcutd run` without --services does to the programs (the
MC_CFG_F_OBJECTIVES switch off), without restarting the daemon between
samples. Modes alternate inside each repetition (the off and the on block
swap order every repetition); differences are per-repetition differences to
the untagged/plain sample of the same repetition, medians [min–max].
Client and server are pinned to one CPU. The kernel's own run time of each
meshcut program (BPF_ENABLE_STATS) is recorded per connection and per
request: the in-BPF part of each difference, free of the VM's scheduling noise.

Checks (exit 3), never on timings: every connection answered; plain and
untagged samples left connect4's counters alone; off-path connects counted
no_action; route+admit connects all routed to the backend (routed +
route_same = connects, admitted = connects, blocked 0); tagged samples'
`totals` counted every request made and its response; the shortcut samples
went through the shortcut and the normal ones did not.

Prints Markdown tables and writes samples.csv, results.json, table.md to --out.

Usage:  sudo /usr/bin/python3 bench/obj_cost_bench.py [--quick] [--out DIR] [--reps N]
"""

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import types

import benchlib
import conn_rate_bench  # enable_bpf_stats, bpftool_json
from benchlib import BenchError

log = benchlib.logger("obj_cost_bench")
# the test/netns helpers of the build tree --build-dir names: main() imports them
mcnet = tobj = None

CONNECT_MODES = ("plain", "off-path", "route+admit")
PATHS = ("normal", "shortcut")
TAGS = ("untagged", "tagged")
SERVICE = "default/s1"
CLASS = "default"  # class 0: the caller is enrolled with --class-id 0
BACKEND = "b1"  # test_objectives.services_doc(): endpoint SUB.4:8080 of s1
VIP_PORT, BACKEND_PORT = 80, 8080
# issue 15: routing + admission <= 1 µs per connect; telemetry <= 1 % of a
# same-node meshed request's latency.
TARGET_CONNECT_NS = 1000.0
TARGET_TELEMETRY_SHARE = 0.01
# The telemetry target's denominator is not measured here (no sidecars):
# shared/BENCH.md's same-node request through two HAProxy sidecars, and the
# tagged sockets such a request has (the app's to the ClusterIP, the
# sidecar's upstream one), each costing what a tagged socket costs here.
REF_MESHED_US = 74.0
TAGGED_PER_MESHED = 2
REF_MESHED = (f"est. ÷ meshed request: {TAGGED_PER_MESHED} × Δ BPF ÷ {REF_MESHED_US:.0f} µs "
              "(shared/BENCH.md: a 64 B request through two HAProxy sidecars on one node takes 74–86 µs; "
              "two of its sockets are tagged).")
# a rate (and a burst) no sample reaches: admission runs, never refuses
HUGE_RATE = 1000000
EMPTY_SERVICES = {"apiVersion": "v1", "kind": "List", "items": []}


class Pod:
    """A pod of the bed in the shape benchlib's per-pod helpers take (name,
    ns, ip, node.daemon)."""

    def __init__(self, node, name, octet):
        self.name = name
        self.ns = node.add_pod(name, octet)
        self.ip = self.ns.pod_ip
        self.node = types.SimpleNamespace(name="n1", daemon=None)


def pdiff(rows, base_rows, key, scale=1.0):
    """Per-repetition differences (row - base of the same repetition) * SCALE:
    the list over repetitions."""
    base = {s["rep"]: s[key] for s in base_rows}
    return [(s[key] - base[s["rep"]]) * scale for s in rows if s["rep"] in base]


def med(vals):
    return statistics.median(vals) if vals else None


def fmt_mmm(vals, f="{:.0f}"):
    """"median [min–max]" (just the value for one sample), "" for none."""
    if not vals:
        return ""
    m = f.format(statistics.median(vals))
    return m if len(vals) == 1 else f"{m} [{benchlib.fmt_range(vals, f)}]"


class Bench(benchlib.PodBench):
    def __init__(self, args):
        super().__init__(args, mcnet)
        self.crr_bin = os.path.join(args.build_dir, "bench", "crr")
        self.objectives = None
        self.action_on = None
        self.shortcut = None
        self.gen = 0
        self.prog_ids = {}

    # ---- bed ------------------------------------------------------------------

    def setup(self):
        for b in (self.crr_bin, self.rtt_bin):
            if not os.access(b, os.X_OK):
                raise BenchError(f"{b} missing: cmake --build {self.args.build_dir} --target meshcut_bench_socket")
        benchlib.require_tools(("taskset", "bpftool"))
        self.cg = mcnet.Cgroup("objcost")  # caller and backend processes: meshcutd's programs see them
        node = mcnet.Node("n1", subnet=tobj.SUB)
        self.caller = Pod(node, "caller", 2)
        self.backend = Pod(node, BACKEND, 4)
        # every sample's connections go to one backend IP:port and the caller
        # closes first: TIME_WAIT must not run out of ports
        self.caller.ns.run("sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65000",
                           "net.ipv4.tcp_tw_reuse=1")
        self.tmp = tempfile.mkdtemp(prefix="mc-objcost-")
        mcnet._cleanups.append(lambda: shutil.rmtree(self.tmp, ignore_errors=True))  # mcnet's sweep
        self.svc_file = os.path.join(self.tmp, "services.json")
        self.write_services(False)
        self.api = f"127.0.0.1:{tobj.free_port()}"
        self.d = mcnet.Daemon(self.cg, "objcost", extra=["--services", self.svc_file, "--api-addr", self.api])
        self.d.start()
        flags = ["--no-intra-pod", "--no-same-node", "--no-sidecar", "--class-id", "0"]
        for p in (self.caller, self.backend):
            self.d.enroll(p.ns, p.ip, extra=flags)
            p.node.daemon = self.d
        self.shortcut = False
        progs = os.path.join(self.d.pin_root, "progs")
        self.prog_ids = {n: conn_rate_bench.bpftool_json("prog", "show", "pinned", os.path.join(progs, n))["id"]
                         for n in sorted(os.listdir(progs))}
        self.meta.update({"services": tobj.services_doc(), "programs": sorted(self.prog_ids),
                          "caller": self.caller.ip, "backend": f"{self.backend.ip}:{BACKEND_PORT}",
                          "vip": f"{tobj.VIP1}:{VIP_PORT}"})
        self.set_objectives(False)
        log(f"bed up: caller {self.caller.ip} -> {BACKEND} {self.backend.ip}:{BACKEND_PORT} "
            f"(ClusterIP {tobj.VIP1}:{VIP_PORT}), programs {', '.join(sorted(self.prog_ids))}")

    def write_services(self, on):
        tmp = self.svc_file + ".new"
        with open(tmp, "w") as f:
            json.dump(tobj.services_doc() if on else EMPTY_SERVICES, f)
        os.replace(tmp, self.svc_file)

    def obj(self, *args):
        return self.d.cli("objectives", *args, "--api-addr", self.api)

    def obj_status(self):
        return json.loads(self.obj("status", "--json").stdout)

    def set_objectives(self, on, timeout=10.0):
        """Objectives on (the service file's services) or off (no service):
        meshcutd reloads the file within a second."""
        if on == self.objectives:
            return
        self.write_services(on)
        want = sum(i["kind"] == "Service" for i in tobj.services_doc()["items"]) if on else 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.obj_status()
            if st.get("enabled") == on and len(st.get("services", [])) == want:
                self.objectives = on
                if on:
                    self.action_on = None  # apply (or clear) it again after a reload
                return
            time.sleep(0.1)
        raise BenchError(f"meshcutd did not turn objectives {'on' if on else 'off'} within {timeout}s: {st}")

    def set_action(self, on):
        """The route+admit action in force (a new generation) or none (clear)."""
        if on == self.action_on:
            return
        if on:
            self.gen += 1
            doc = {"generation": self.gen, "ttl_ms": 600000,
                   "services": {SERVICE: {"classes": {CLASS: {"weights": {BACKEND: 1.0}, "rate": HUGE_RATE,
                                                               "burst": HUGE_RATE}}}}}
            path = os.path.join(self.tmp, "action.json")
            with open(path, "w") as f:
                json.dump(doc, f)
            self.obj("apply", path)
        else:
            self.obj("clear")
        self.action_on = on

    def set_shortcut(self, on):
        if on == self.shortcut:
            return
        for p in (self.caller, self.backend):
            benchlib.set_pod_switches(p, node=on)
        self.shortcut = on

    # ---- counters -----------------------------------------------------------------

    def prog_times(self):
        out = {}
        for n, i in self.prog_ids.items():
            j = conn_rate_bench.bpftool_json("prog", "show", "id", str(i))
            out[n] = (j.get("run_cnt", 0), j.get("run_time_ns", 0))
        return out

    def snapshot(self):
        st = self.obj_status()
        totals = {(t["service"], t["backend"], t["class"]): t for t in st.get("totals", [])}
        return {"obj": st.get("counters", {}), "totals": totals, "mc": self.d.counters(), "bpf": self.prog_times()}

    def deltas(self, row, before, after, per):
        """Record in ROW what the sample did to the counters, and the BPF run
        time per PER (connections or requests) of each program."""
        d_obj = benchlib.delta(before["obj"], after["obj"])
        d_mc = benchlib.delta(before["mc"], after["mc"])
        for k in ("connect_seen", "routed", "route_same", "admitted", "blocked", "no_action", "tag_failed",
                  "req_full"):
            row[f"obj_{k}"] = d_obj.get(k, 0)
        row["redirect_node_msgs"] = d_mc.get("msg_redirect_node", 0)
        row["redirect_intra_msgs"] = d_mc.get("msg_redirect_intra", 0)
        total = 0.0
        for prog, (cnt, ns) in after["bpf"].items():
            c0, ns0 = before["bpf"].get(prog, (0, 0))
            row[f"bpf_{prog}_runs"] = round((cnt - c0) / per, 3)
            row[f"bpf_{prog}_ns"] = round((ns - ns0) / per, 1)
            total += (ns - ns0) / per
        row["bpf_total_ns"] = round(total, 1)

    def totals_delta(self, before, after, backend):
        key = (SERVICE, backend, CLASS)
        b, a = before["totals"].get(key, {}), after["totals"].get(key, {})
        return {k: a.get(k, 0) - b.get(k, 0) for k in ("offered", "admitted", "blocked", "conns", "requests",
                                                       "completed")}

    def problem(self, what, cond, detail):
        if not cond:
            self.problems.append(f"{what}: {detail}")

    # ---- samples --------------------------------------------------------------------

    def run_json(self, cmd, pod, timeout=600, none_if=None):
        """Run a client in POD; its JSON line, even when it exited 1 after failed connections.
        None if there is none and its stderr says NONE_IF."""
        p = self.spawn(cmd, pod, self.args.cpu, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"timeout after {timeout}s: {' '.join(cmd)}")
        finally:
            self.children.stop(p)
        try:
            return json.loads(out)
        except ValueError:
            if none_if and none_if in err:
                return None
            raise BenchError(f"{' '.join(cmd)} exited {p.returncode}: {err.strip()}")

    def target(self, via_vip):
        return f"{tobj.VIP1}:{VIP_PORT}" if via_vip else f"{self.backend.ip}:{BACKEND_PORT}"

    def crr_sample(self, rep, mode):
        a = self.args
        self.set_objectives(mode != "plain")
        if mode != "plain":
            self.set_action(mode == "route+admit")
        n = a.conns + a.warmup
        srv = f"{self.backend.ip}:{BACKEND_PORT}"
        server = self.spawn([self.crr_bin, "server", "--tcp", srv, "--size", str(a.size)], self.backend, a.cpu,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            benchlib.wait_line(server, "ready")
            before = self.snapshot()
            res = self.run_json([self.crr_bin, "client", "--tcp", self.target(mode == "route+admit"), "--conns",
                                 str(a.conns), "--size", str(a.size), "--warmup", str(a.warmup)], self.caller,
                                none_if="every connection")
            time.sleep(0.05)  # the last connection's closing segments
            after = self.snapshot()
        finally:
            self.children.stop(server)
        if res is None:
            d = benchlib.delta(before["obj"], after["obj"])
            self.problems.append(f"crr {mode} rep {rep}: every timed connection failed (connect4: blocked "
                                 f"+{d.get('blocked', 0)}, routed +{d.get('routed', 0)})")
            return None
        row = {"kind": "crr", "rep": rep, "mode": mode, "size": a.size, "connects": n, **res,
               "us_per_conn": round(1e6 / res["conns_per_s"], 3)}
        self.deltas(row, before, after, n)
        what = f"crr {mode} rep {rep}"
        self.problem(what, res["failed"] == 0, f"{res['failed']} of {n} connections failed")
        if mode == "plain":
            self.problem(what, row["obj_connect_seen"] == 0, f"objectives off, yet connect4 saw "
                         f"{row['obj_connect_seen']} managed connects")
            return row
        self.problem(what, row["obj_connect_seen"] == n, f"connect_seen +{row['obj_connect_seen']}, want {n}")
        self.problem(what, row["obj_blocked"] == 0, f"blocked +{row['obj_blocked']}, want 0")
        if mode == "off-path":
            self.problem(what, row["obj_no_action"] == n, f"no_action +{row['obj_no_action']}, want {n}")
            self.problem(what, row["obj_routed"] + row["obj_route_same"] == 0,
                         f"routed {row['obj_routed']} + route_same {row['obj_route_same']} without an action")
            t = self.totals_delta(before, after, srv)
        else:
            got = row["obj_routed"] + row["obj_route_same"]
            self.problem(what, got == n, f"routed {row['obj_routed']} + route_same {row['obj_route_same']} = "
                         f"{got}, want {n} (every connect landed on {BACKEND})")
            self.problem(what, row["obj_admitted"] == n, f"admitted +{row['obj_admitted']}, want {n}")
            t = self.totals_delta(before, after, "all")
            tb = self.totals_delta(before, after, srv)
            self.problem(what, tb["offered"] == n, f"backend row offered +{tb['offered']}, want {n}")
        row.update({f"totals_{k}": v for k, v in t.items()})
        for k in ("conns", "requests", "completed"):
            self.problem(what, t[k] == n, f"totals {k} +{t[k]}, want {n} (one request per connection)")
        return row

    def rtt_sample(self, rep, path, tag):
        a = self.args
        tagged = tag == "tagged"
        self.set_objectives(tagged)
        if tagged:
            self.set_action(True)
        self.set_shortcut(path == "shortcut")
        srv = f"{self.backend.ip}:{BACKEND_PORT}"
        server = self.spawn([self.rtt_bin, "server", "--tcp", srv, "--once"], self.backend, a.cpu,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            benchlib.wait_line(server, "ready")
            before = self.snapshot()
            res = self.run_json([self.rtt_bin, "client", "--tcp", self.target(tagged)]
                                + benchlib.rtt_client_args(a.size, a.iters, a.warmup), self.caller)
            server.wait(timeout=10)
            time.sleep(0.05)
            after = self.snapshot()
        finally:
            self.children.stop(server)
        # requests: rtt's handshake (4 B header, 1 B ack), then warmup + iters round trips
        reqs = a.iters + a.warmup + 1
        row = {"kind": "rtt", "rep": rep, "path": path, "tag": tag, "size": a.size, "requests": reqs, **res}
        self.deltas(row, before, after, reqs)
        what = f"rtt {path} {tag} rep {rep}"
        redirected = row["redirect_node_msgs"] + row["redirect_intra_msgs"]
        if path == "shortcut":
            self.problem(what, redirected >= 2 * (a.iters + a.warmup),
                         f"only {redirected} messages took the shortcut (want >= {2 * (a.iters + a.warmup)})")
        else:
            self.problem(what, redirected == 0, f"{redirected} messages took the shortcut on the normal path")
        if not tagged:
            self.problem(what, row["obj_connect_seen"] == 0,
                         f"objectives off, yet connect4 saw {row['obj_connect_seen']} managed connects")
            return row
        got = row["obj_routed"] + row["obj_route_same"]
        self.problem(what, got == 1, f"routed + route_same = {got}, want 1")
        t = self.totals_delta(before, after, "all")
        row.update({f"totals_{k}": v for k, v in t.items()})
        for k in ("requests", "completed"):
            self.problem(what, t[k] == reqs, f"totals {k} +{t[k]}, want {reqs} (the requests made)")
        return row

    # ---- run ---------------------------------------------------------------------------

    def off_block(self, rep):
        self.set_shortcut(False)
        out = [self.crr_sample(rep, "plain"), self.rtt_sample(rep, "normal", "untagged")]
        out.append(self.rtt_sample(rep, "shortcut", "untagged"))
        return out

    def on_block(self, rep):
        self.set_shortcut(False)
        out = [self.crr_sample(rep, "off-path"), self.crr_sample(rep, "route+admit"),
               self.rtt_sample(rep, "normal", "tagged")]
        out.append(self.rtt_sample(rep, "shortcut", "tagged"))
        return out

    def measure(self):
        # reachability and warm-up (ARP, the programs' maps): not recorded
        self.rtt_sample(0, "normal", "untagged")
        for rep in range(1, self.args.reps + 1):
            t0 = time.monotonic()
            blocks = (self.off_block, self.on_block) if rep % 2 else (self.on_block, self.off_block)
            for b in blocks:
                self.samples += [s for s in b(rep) if s]
            log(f"repetition {rep}/{self.args.reps} done in {time.monotonic() - t0:.1f} s")

    # ---- report ------------------------------------------------------------------------

    def report(self):
        a = self.args
        # the programs that ran (meshcutd pins some it does not attach here)
        progs = [p for p in sorted(self.prog_ids) if any(s.get(f"bpf_{p}_runs") for s in self.samples)]
        summary = {"connect": {}, "request": {}}
        lines = self.connect_table(progs, summary["connect"]) + self.request_table(progs, summary["request"])
        lines.append(f"\nTargets (issue 15): routing + admission ≤ {TARGET_CONNECT_NS:.0f} ns per connect; telemetry "
                     f"≤ {100 * TARGET_TELEMETRY_SHARE:.0f} % of a same-node meshed request's latency. "
                     "✗ marks a miss. "
                     "Δ: per-repetition differences to the plain/untagged sample of the same repetition, median "
                     "[min–max]; median/min: of the per-connection or per-request times of each sample (the "
                     "client's own clock). BPF ns: the kernel's run time of meshcut's programs (BPF_ENABLE_STATS) "
                     "per connect or per request, both sockets: the in-kernel part of each Δ, without the VM's "
                     "scheduling noise (it leaves out the socket storage freed at close). off-path and route+admit "
                     "include tagging the socket and measuring its request; a tagged request is counted in two rows "
                     f"(the service's and the backend's). {REF_MESHED}")
        meta = {**benchlib.host_meta(a), "conns": a.conns, "warmup": a.warmup, "size": a.size, "quick": a.quick,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **self.meta}
        benchlib.write_outputs(a.out, "\n".join(lines) + "\n", self.samples, meta, summary, self.problems, log)

    def connect_table(self, progs, summary):
        a = self.args
        crr = {m: [s for s in self.samples if s["kind"] == "crr" and s["mode"] == m] for m in CONNECT_MODES}
        lines = [f"### Connect-time cost of the actuators: connect + {a.size} B each way + close (bench/crr), "
                 f"{a.conns} connections per sample, caller and backend pods on one bridge, pinned to CPU {a.cpu}; "
                 f"{a.reps} repetition(s)\n",
                 "| mode | conn/s | µs per conn (median) | Δ median ns | Δ min ns | BPF ns per connect | "
                 "Δ BPF ns | " + " | ".join(f"{p} ns" for p in progs) + " |",
                 "|---|---|---|---|---|---|---|" + "---|" * len(progs)]
        for m, rs in crr.items():
            if not rs:
                continue
            d_med = pdiff(rs, crr["plain"], "median_us", 1000.0)
            d_min = pdiff(rs, crr["plain"], "min_us", 1000.0)
            d_bpf = pdiff(rs, crr["plain"], "bpf_total_ns")
            rec = {"conns_per_s": med([s["conns_per_s"] for s in rs]), "median_us": med([s["median_us"] for s in rs]),
                   "delta_median_ns": med(d_med), "delta_min_ns": med(d_min),
                   "bpf_ns": med([s["bpf_total_ns"] for s in rs]),
                   "bpf_delta_ns": med(d_bpf), "per_rep": {"delta_median_ns": d_med, "delta_min_ns": d_min,
                                                           "bpf_delta_ns": d_bpf},
                   "bpf_ns_by_prog": {p: med([s.get(f"bpf_{p}_ns", 0) for s in rs]) for p in progs}}
            summary[m] = rec
            if m == "plain":
                lines.append(f"| plain | {rec['conns_per_s']:.0f} | {rec['median_us']:.2f} | | | "
                             f"{rec['bpf_ns']:.0f} | | "
                             + " | ".join(f"{rec['bpf_ns_by_prog'][p]:.0f}" for p in progs) + " |")
                continue
            lines.append(f"| {m} | {rec['conns_per_s']:.0f} | {rec['median_us']:.2f} | {fmt_mmm(d_med, '{:+.0f}')} | "
                         f"{fmt_mmm(d_min, '{:+.0f}')} | {rec['bpf_ns']:.0f} | {fmt_mmm(d_bpf, '{:+.0f}')} | "
                         + " | ".join(f"{rec['bpf_ns_by_prog'][p]:.0f}" for p in progs) + " |")
        if crr["route+admit"] and "connect4" in progs:
            c4 = {m: pdiff(crr["route+admit"], crr[m], "bpf_connect4_ns") for m in ("plain", "off-path")}
            if c4["plain"]:
                summary["connect4_route_admit_vs_plain_ns"] = med(c4["plain"])
                summary["connect4_route_admit_vs_off_path_ns"] = med(c4["off-path"]) if c4["off-path"] else None
                ok = summary["target_ok"] = med(c4["plain"]) <= TARGET_CONNECT_NS
                lines.append(f"\nRouting + admission alone (connect4's run time, route+admit): "
                             f"{fmt_mmm(c4['plain'], '{:+.0f}')} ns per connect vs plain{'' if ok else ' ✗'}, "
                             f"of which {fmt_mmm(c4['off-path'], '{:+.0f}')} ns vs off-path (the action read, "
                             "the token bucket and the rewrite; the rest is the lookups and tagging the socket, "
                             "which off-path does too). The whole Δ BPF of off-path and route+admit adds what "
                             "sockops and obj_ingress spend on the tagged connection (its request and its duration).")
        return lines

    def request_table(self, progs, summary):
        a = self.args
        lines = [f"\n### Per-request cost of the telemetry: keep-alive ping-pong, {a.size} B each way (bench/rtt), "
                 f"{a.iters} requests per sample; untagged = objectives off, to the pod IP; tagged = objectives on, "
                 f"to the ClusterIP (routed, measured); {a.reps} repetition(s)\n",
                 "| path | RTT untagged µs (median) | tagged | Δ median ns | Δ min ns | BPF ns/request untagged | "
                 "tagged | Δ BPF ns | Δ BPF ÷ RTT | est. ÷ meshed request | "
                 + " | ".join(f"Δ {p} ns" for p in progs) + " |",
                 "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(progs)]
        for path in PATHS:
            by = {t: [s for s in self.samples if s["kind"] == "rtt" and s["path"] == path and s["tag"] == t]
                  for t in TAGS}
            if not by["tagged"] or not by["untagged"]:
                continue
            d_med = pdiff(by["tagged"], by["untagged"], "median_us", 1000.0)
            d_min = pdiff(by["tagged"], by["untagged"], "min_us", 1000.0)
            d_bpf = pdiff(by["tagged"], by["untagged"], "bpf_total_ns")
            base = {s["rep"]: s["median_us"] * 1000.0 for s in by["untagged"]}
            bshare = [d / base[s["rep"]] for d, s in zip(d_bpf, by["tagged"])]
            per_prog = {p: med(pdiff(by["tagged"], by["untagged"], f"bpf_{p}_ns")) for p in progs}
            rec = {"rtt_untagged_us": med([s["median_us"] for s in by["untagged"]]),
                   "rtt_tagged_us": med([s["median_us"] for s in by["tagged"]]),
                   "delta_median_ns": med(d_med), "delta_min_ns": med(d_min),
                   "bpf_untagged_ns": med([s["bpf_total_ns"] for s in by["untagged"]]),
                   "bpf_tagged_ns": med([s["bpf_total_ns"] for s in by["tagged"]]),
                   "bpf_delta_ns": med(d_bpf), "bpf_share_of_rtt": med(bshare),
                   "per_rep": {"delta_median_ns": d_med, "delta_min_ns": d_min, "bpf_delta_ns": d_bpf},
                   "bpf_delta_ns_by_prog": per_prog}
            # a meshed request: the app's socket and the sidecar's upstream socket are both tagged
            rec["est_share_of_meshed"] = TAGGED_PER_MESHED * rec["bpf_delta_ns"] / (REF_MESHED_US * 1000.0)
            rec["target_ok"] = rec["est_share_of_meshed"] <= TARGET_TELEMETRY_SHARE
            summary[path] = rec
            lines.append(f"| {path} | {rec['rtt_untagged_us']:.2f} | {rec['rtt_tagged_us']:.2f} | "
                         f"{fmt_mmm(d_med, '{:+.0f}')} | {fmt_mmm(d_min, '{:+.0f}')} | {rec['bpf_untagged_ns']:.0f} | "
                         f"{rec['bpf_tagged_ns']:.0f} | {fmt_mmm(d_bpf, '{:+.0f}')} | "
                         f"{fmt_mmm([100 * x for x in bshare], '{:.2f}')} % | "
                         f"{100 * rec['est_share_of_meshed']:.2f} %{'' if rec['target_ok'] else ' ✗'} | "
                         + " | ".join(f"{per_prog[p]:+.0f}" for p in progs) + " |")
        return lines

    def main(self):
        benchlib.setup_measure_report(self, log)


def parse_args(argv=None):
    ap = benchlib.bench_arg_parser(
        __doc__, out="./bench-out-obj-cost", port=0, bulk=False,
        iters_help="ping-pong requests per rtt sample (default 20000, --quick 1000)",
        cpu_help="CPU client and server are pinned to (default: the last one)",
        port_help="unused (the ports are the service file's: 80 and 8080)",
        quick_help="1 repetition, small counts (CI smoke run, < 60 s)")
    ap.add_argument("--conns", type=int, help="connections per crr sample (default 10000, --quick 500)")
    ap.add_argument("--warmup", type=int, help="connections / requests before each timed sample "
                    "(default 500, --quick 100)")
    ap.add_argument("--size", type=int, default=64, help="request and response bytes")
    a = benchlib.check_bench_args(ap, ap.parse_args(argv))
    a.conns = a.conns or (500 if a.quick else 10000)
    a.warmup = a.warmup if a.warmup is not None else (100 if a.quick else 500)
    if a.conns < 1 or a.warmup < 0 or a.size < 1:
        ap.error("--conns and --size must be >= 1, --warmup >= 0")
    return a


def main(argv=None):
    global mcnet, tobj
    args = parse_args(argv)
    mcnet, tobj = benchlib.import_netns_helpers(args.build_dir, "mcnet", "test_objectives")
    stats_fd = conn_rate_bench.enable_bpf_stats() if os.geteuid() == 0 else None
    try:
        return benchlib.run_cluster_bench(Bench(args), mcnet, log,
                                          (BenchError, subprocess.TimeoutExpired, OSError, RuntimeError))
    finally:
        if stats_fd is not None:
            os.close(stats_fd)


if __name__ == "__main__":
    raise SystemExit(main())
