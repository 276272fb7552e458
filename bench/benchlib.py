# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the benchmarks in bench/ (socket_bench.py,
crossnode_bench.py, mesh_crossnode_bench.py).

Only what the three do the same way lives here: child-process bookkeeping,
waiting for a server to be ready, parsing what build/bench/rtt and iperf3
print, counter deltas, the statistics and formatting of the tables, writing
table.md / samples.csv / results.json, and the exit-code / cleanup frame of
main(). What a benchmark measures, checks and prints stays in its script.

Stdlib only, like the benchmarks.
"""

import argparse
import csv
import importlib
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETNS_DIR = os.path.join(REPO, "test", "netns")
sys.path.insert(0, os.path.join(REPO, "test", "lib"))
from mctest import delta  # noqa: E402,F401  benchlib.delta(before, after, skip): the one counter delta

# meshcutd's cross-node tc counters: a packet sent towards the overlay device
# (plain bpf_redirect or bpf_redirect_neigh), and one delivered into the pod.
TO_OVERLAY = ("tc_redirect_overlay", "tc_redirect_neigh")
PEER = "tc_redirect_peer"
# cni0 bytes (rx + tx) per payload byte: a node taking the tc shortcut carries
# at most this much of the payload over its bridge, a bridge node at least BRIDGE_MIN.
SHORTCUT_BRIDGE_MAX = 0.05
BRIDGE_MIN = 0.5


class BenchError(Exception):
    """A setup step or a measurement failed: the benchmark exits 1."""


class Interrupted(Exception):
    """Raised from the signal handler so that every finally: block runs."""


def logger(name):
    """log(msg) to stderr with the benchmark's name: stdout is kept for the tables."""
    def log(msg):
        print(f"[{name}] {msg}", file=sys.stderr, flush=True)
    return log


# ---- labels -------------------------------------------------------------------

def size_label(size):
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def cfg_label(size, placement):
    """The row label of a (size, placement) configuration: "64 B", "64 B unpinned"."""
    return size_label(size) + ("" if placement == "pinned" else f" {placement}")


# ---- environment --------------------------------------------------------------

def require_tools(tools):
    """Fail early, naming the first missing tool (a name on PATH or a path)."""
    for tool in tools:
        if not shutil.which(tool):
            raise BenchError(f"{tool} not found")


def loadavg():
    """The 1/5/15-minute load averages, as strings (recorded in the meta data)."""
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def setup_measure_report(bench, log):
    """Run BENCH's setup(), measure() and report(), recording in bench.meta the
    load average before and after (a busy host skews every number) and the
    seconds taken."""
    os.makedirs(bench.args.out, exist_ok=True)
    bench.meta["loadavg_start"] = loadavg()
    t0 = time.monotonic()
    bench.setup()
    bench.measure()
    bench.meta["loadavg_end"] = loadavg()
    bench.meta["seconds"] = round(time.monotonic() - t0, 1)
    bench.report()
    log(f"total {time.monotonic() - t0:.1f} s")


def import_netns_helpers(build_dir, *names):
    """Import the test/netns modules NAMES (mcnet, twonode, ...) and return them.

    mcnet reads MESHCUT_BUILD and MESHCUTD at import, so they are set first;
    and test/netns is not to be littered with __pycache__."""
    os.environ["MESHCUT_BUILD"] = build_dir
    os.environ.setdefault("MESHCUTD", os.path.join(build_dir, "pinned-maps-daemon", "meshcutd"))
    sys.dont_write_bytecode = True
    sys.path.insert(0, NETNS_DIR)
    return [importlib.import_module(n) for n in names]


def bench_arg_parser(doc, out, port, iters_help, cpu_help, port_help, quick_help, bulk=True, build_dir=None):
    """The options of the two-ended benchmarks (socket, crossnode, mesh_crossnode): --out (default OUT),
    --quick, --reps, --iters, [--iperf-time, --no-bulk with BULK], --cpu, --port (default PORT), --build-dir
    (default BUILD_DIR, else $MESHCUT_BUILD or <repo>/build). Checked by check_bench_args."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--out", default=out, help=f"output directory (default {out})")
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--reps", type=int, help="repetitions (default 5, --quick 1)")
    ap.add_argument("--iters", type=int, help=iters_help)
    if bulk:
        ap.add_argument("--iperf-time", type=int, help="seconds per iperf3 run (default 3, --quick 1)")
        ap.add_argument("--no-bulk", action="store_true", help="skip iperf3")
    ap.add_argument("--cpu", type=int, default=os.cpu_count() - 1, help=cpu_help)
    ap.add_argument("--port", type=int, default=port, help=port_help)
    ap.add_argument("--build-dir", default=build_dir or os.environ.get("MESHCUT_BUILD", os.path.join(REPO, "build")))
    return ap


def check_bench_args(ap, a, positive=("reps", "iters")):
    """apply_quick_defaults, an absolute --build-dir, and POSITIVE (option names) >= 1."""
    apply_quick_defaults(a)
    a.build_dir = os.path.abspath(a.build_dir)
    if any(getattr(a, k) < 1 for k in positive):
        names = ["--" + k.replace("_", "-") for k in positive]
        ap.error("%s must be >= 1" % (" and ".join(names) if len(names) == 2
                                      else ", ".join(names[:-1]) + " and " + names[-1]))
    return a


def apply_quick_defaults(a):
    """Fill in the repetition/iteration defaults of the full and the --quick run."""
    a.reps = a.reps or (1 if a.quick else 5)
    a.iters = a.iters or (1000 if a.quick else 20000)
    if hasattr(a, "iperf_time"):
        a.iperf_time = a.iperf_time or (1 if a.quick else 3)
    a.out = os.path.abspath(a.out)


# ---- child processes ----------------------------------------------------------

def taskset(cpu):
    """argv prefix pinning a command to CPU (none for None: the scheduler chooses)."""
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


class Children:
    """The benchmark's live child processes.

    Each is stopped as soon as its sample is done, and whatever is left is
    stopped on cleanup before the netns and cgroups it lives in are removed."""

    def __init__(self):
        self.live = []

    def track(self, p):
        self.live.append(p)
        return p

    def stop(self, p, grace=2.0):
        """SIGTERM, then SIGKILL after GRACE seconds; close our ends of its pipes."""
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.live:
            self.live.remove(p)
        for f in (p.stdout, p.stderr):
            if f:
                f.close()

    def stop_all(self):
        for p in list(self.live):
            self.stop(p)

    def output(self, p, cmd, timeout):
        """Wait for the client P (started as CMD) and return its stdout; it must exit 0."""
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"timeout after {timeout}s: {' '.join(cmd)}")
        finally:
            self.stop(p)
        if p.returncode != 0:
            raise BenchError(f"{' '.join(cmd)} exited {p.returncode}: {err.strip()}")
        return out

    def serve(self, server, ready, client):
        """Wait until SERVER prints READY, run CLIENT() and return what it
        returns; then let the server (started with --once / -1) exit."""
        try:
            wait_line(server, ready)
            out = client()
            server.wait(timeout=10)
        finally:
            self.stop(server)
        return out


class PodBench:
    """What the benchmarks on a test/netns cluster (crossnode, mesh_crossnode)
    share: their state, and starting their processes in a pod.

    A subclass sets self.cg (the mcnet.Cgroup its processes start in) in its
    setup(), and provides main(), setup(), measure() and report()."""

    def __init__(self, args, mcnet):
        self.args = args
        self.mcnet = mcnet  # imported by the script (import_netns_helpers), after its argument parsing
        self.rtt_bin = os.path.join(args.build_dir, "bench", "rtt")
        self.samples = []
        self.problems = []
        self.children = Children()
        self.mode = None
        self.meta = {}
        self.cg = None

    def spawn(self, cmd, pod, cpu=None, **kw):
        """Start CMD in self.cg first, then in POD's netns (mcnet.spawn: never
        `ip netns exec`, which remounts /sys and hides cgroup2), on CPU if given.
        Own session: a terminal's Ctrl-C reaches only us."""
        p = self.mcnet.spawn(taskset(cpu) + cmd, netns=pod.ns, cgroup=self.cg, start_new_session=True, **kw)
        return self.children.track(p)

    def run_client(self, cmd, pod, cpu=None, timeout=120):
        """Run a client in POD and return its stdout; it must exit 0 within TIMEOUT."""
        p = self.spawn(cmd, pod, cpu, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return self.children.output(p, cmd, timeout)

    @staticmethod
    def fmt_ratio(r):
        # Quick runs have one repetition: no [min–max] then.
        return fmt_ratio(r, collapse=True)


def wait_line(p, needle, timeout=10.0):
    """Wait until a server prints NEEDLE (it is listening).

    Reads the raw fd: a buffered readline() could swallow the line we wait
    for into Python's buffer while select() keeps waiting on the fd."""
    deadline = time.monotonic() + timeout
    seen = b""
    fd = p.stdout.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            err = p.stderr.read() if p.stderr else ""
            if isinstance(err, bytes):  # the pipes are binary unless started with text=True
                err = err.decode(errors="replace")
            raise BenchError(f"server exited before ready: {' '.join(p.args)}: {err.strip()}")
        seen += chunk
        if needle.encode() in seen:
            return
    raise BenchError(f"server not ready after {timeout}s: {' '.join(p.args)}")


# ---- what the measuring tools print -------------------------------------------

def rtt_client_args(size, iters, warmup):
    return ["--size", str(size), "--iters", str(iters), "--warmup", str(warmup)]


def merge_rtt(row, rtt_json):
    """Add rtt's statistics (its JSON line) to a sample row; our own labels win."""
    for k, v in json.loads(rtt_json).items():
        row.setdefault(k, v)


def iperf_server_cmd(addr, port):
    # -1: one client, then exit; --forceflush: "listening" reaches wait_line at once.
    return ["iperf3", "-s", "-1", "-B", addr, "-p", str(port), "--forceflush"]


def iperf_client_cmd(addr, port, seconds):
    return ["iperf3", "-c", addr, "-p", str(port), "-t", str(seconds), "-J"]


def iperf_result(out):
    """The sample fields of an iperf3 -J report: receiver's rate and bytes, sender's retransmits."""
    end = json.loads(out)["end"]
    recv = end["sum_received"]
    return {"gbit_s": round(recv["bits_per_second"] / 1e9, 3), "bytes": recv["bytes"],
            "seconds": round(recv["seconds"], 3), "retransmits": end["sum_sent"].get("retransmits", 0)}


# ---- counters -----------------------------------------------------------------

def socket_counters(node, bridge):
    """A node's meshcutd counters as the mesh benchmarks compare them per sample:
    socket redirects by kind, tc paths (tc_counters) and every counter ("all")."""
    c = node.daemon.counters()
    return {
        "intra_bytes": int(c.get("bytes_redirect_intra", 0)),
        "intra_msgs": int(c.get("msg_redirect_intra", 0)),
        "node_bytes": int(c.get("bytes_redirect_node", 0)),
        "node_msgs": int(c.get("msg_redirect_node", 0)),
        "pairs": int(c.get("pairs_redirected", 0)),
        "skip_disabled": int(c.get("sock_skip_disabled", 0)),
        **tc_counters(node, c, bridge),
        "all": {k: int(v) for k, v in c.items() if isinstance(v, int)},
    }


def tc_counters(node, counters, bridge):
    """A node's cross-node tc counters from meshcutd COUNTERS, and its BRIDGE's
    bytes and conntrack INVALID drops: what tells which path a sample took."""
    links = node.link_stats(bridge) or {}
    return {
        "overlay": sum(int(counters.get(k, 0)) for k in TO_OVERLAY),
        "peer": int(counters.get(PEER, 0)),
        "local": int(counters.get("tc_redirect_local", 0)),
        "cni0_bytes": links.get("rx_bytes", 0) + links.get("tx_bytes", 0),
        "ct_invalid": node.invalid_drops(),
    }


# ---- statistics and table cells -------------------------------------------------

def rtt_stats(rows):
    """Summary of rtt samples: median [min, max] of the sample medians, median p99."""
    med = [s["median_us"] for s in rows]
    return {"median_us": statistics.median(med), "min_us": min(med), "max_us": max(med),
            "p99_us": statistics.median(s["p99_us"] for s in rows)}


def paired_ratio(rows, base_rows, key):
    """Per-repetition ratio to the baseline measured in the same repetition
    (modes alternate inside a repetition, so both saw the same noise):
    (median, min, max) over repetitions, or None."""
    base = {s["rep"]: s[key] for s in base_rows}
    r = [s[key] / base[s["rep"]] for s in rows if base.get(s["rep"])]
    return (statistics.median(r), min(r), max(r)) if r else None


def fmt_ratio(r, target=None, higher_is_better=False, collapse=False):
    """"0.69× [0.65–0.72]" for a paired_ratio, " ✗" appended when it misses TARGET.
    COLLAPSE: no [min–max] when they are equal (one repetition)."""
    if not r:
        return ""
    mark = ""
    if target is not None:
        ok = r[0] >= target if higher_is_better else r[0] <= target
        mark = "" if ok else " ✗"
    if collapse and r[1] == r[2]:
        return f"{r[0]:.2f}×{mark}"
    return f"{r[0]:.2f}× [{r[1]:.2f}–{r[2]:.2f}]{mark}"


def fmt_med(vals, digits=1):
    """"median (min–max)", or just the value of a single sample."""
    m = statistics.median(vals)
    if len(vals) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ({min(vals):.{digits}f}–{max(vals):.{digits}f})"


def fmt_range(vals, f):
    """"min–max" formatted with F, one value if they are equal, "" for none."""
    if not vals:
        return ""
    return f.format(min(vals)) + ("" if min(vals) == max(vals) else "–" + f.format(max(vals)))


# ---- output -------------------------------------------------------------------

def host_meta(args):
    """The meta data every benchmark records first: machine and run size."""
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "pinned_cpu": args.cpu,
            "reps": args.reps, "iters": args.iters}


def write_outputs(out, table, samples, meta, summary, problems, log):
    """Print the Markdown TABLE and write table.md, samples.csv (one row per
    sample, the union of their fields in first-seen order) and results.json."""
    print(table)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table)
    keys = []
    for s in samples:
        keys += [k for k in s if k not in keys]
    with open(os.path.join(out, "samples.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(samples)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"meta": meta, "summary": summary, "samples": samples, "problems": problems}, f, indent=1)
    log(f"raw numbers: {out}/samples.csv, {out}/results.json, table: {out}/table.md")


# ---- main ---------------------------------------------------------------------

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_bench(main, cleanup, log, errors=(BenchError, subprocess.TimeoutExpired, OSError),
              catch_signals=False):
    """Run MAIN() and then, whatever happens, CLEANUP(). Returns 0, 1 after
    one of ERRORS, or 130 after a signal (with CATCH_SIGNALS: SIGINT, SIGTERM
    and SIGHUP raise Interrupted, so every finally: block runs)."""
    if catch_signals:
        def on_signal(signum, _frame):
            raise Interrupted(signal.Signals(signum).name)

        for s in SIGNALS:
            signal.signal(s, on_signal)
    rc = 0
    try:
        main()
    except Interrupted as e:
        log(f"interrupted ({e}), cleaning up")
        rc = 130
    except errors as e:
        log(f"error: {e}")
        rc = 1
    finally:
        if catch_signals:
            # A second Ctrl-C must not leave netns, cgroups or pins behind.
            for s in SIGNALS:
                signal.signal(s, signal.SIG_IGN)
        cleanup()
    return rc


def run_cluster_bench(bench, mcnet, log, errors):
    """main() of a benchmark on a test/netns cluster (mcnet): exit 77 (skip)
    without root outside CI, 1 after one of ERRORS, 3 if a check failed, else 0.
    Everything the run created is removed by mcnet's cleanups, children first."""
    mcnet.require_root()  # exits 77 (skip) without root, 1 under CI=true

    def cleanup():
        bench.children.stop_all()
        mcnet._sweep()  # sidecars, daemons (detach), pods (CNI DEL), netns, cgroups

    rc = run_bench(bench.main, cleanup, log, errors)
    if rc == 0 and bench.problems:
        log(f"{len(bench.problems)} check(s) failed:\n  " + "\n  ".join(bench.problems))
        rc = 3
    mcnet.drop_logfiles(keep=rc != 0)  # meshcutd's logs: kept only when something went wrong
    return rc


# ---- per-pod switches -------------------------------------------------------

def pod_record(pod):
    """POD's entry in its node's `meshcutd pods --json`."""
    for r in json.loads(pod.node.daemon.cli("pods", "--json").stdout):
        if r.get("netns") == pod.ns.path or pod.ip in r.get("ips", []):
            return r
    raise BenchError(f"{pod.name}: not enrolled on {pod.node.name} (meshcutd pods)")


def set_pod_switches(pod, intra=None, node=None):
    """`meshcutd set --netns` on POD's node; checks that it took. New
    connections follow it (the shortcut decision is made per connection)."""
    args = ["set", "--netns", pod.ns.path]
    if intra is not None:
        args += ["--intra-pod", "on" if intra else "off"]
    if node is not None:
        args += ["--same-node", "on" if node else "off"]
    pod.node.daemon.cli(*args)
    r = pod_record(pod)
    if (intra is not None and r["intra_pod"] != intra) or (node is not None and r["same_node"] != node):
        raise BenchError(f"{pod.name}: meshcutd set --netns did not take: {r}")


def set_cross_node(node, on):
    """`meshcutd set --cross-node on|off` on NODE; checks that it took. Off
    forgets the node's flows, so only connections opened after "on" are shortcut."""
    want = "on" if on else "off"
    node.daemon.cli("set", "--cross-node", want)
    got = node.daemon.status()["attachments"].get("cross_node")
    if got != on:
        raise BenchError(f"{node.name}: meshcutd set --cross-node {want} did not take (cross_node={got})")
