#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Cross-check of mcload (bench/loadgen) against wrk and hey (issue 14 part 1).

nginx on 127.0.0.1 in a throw-away netns serves 1 KiB; at a rate all three
can hold, over C keep-alive connections, the tools run alternately (mcload,
wrk, hey, mcload, ...) for REPS repetitions: mcload open loop (constant
arrivals), hey paced (-q per worker), wrk paced by a Lua delay() per
connection. Prints a Markdown table of p50/p99 per tool and the ratios
mcload/wrk and mcload/hey (medians over repetitions, [min–max]); writes
samples.csv and results.json to --out.

At a rate the server holds easily, the three should agree within a small
factor; mcload's latency is from the intended send time and includes the
sender's own lateness, so it may be a little higher. --quick (CI) runs one
short repetition and never gates on timings: it fails only if a tool fails,
or mcload's counts are inconsistent.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

log = benchlib.logger("loadgen_check")
UNIT = {"us": 1.0, "ms": 1e3, "s": 1e6, "secs": 1e6}


def wrk_pct(out):
    """{50: us, 99: us} from wrk --latency."""
    got = {}
    for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        got[int(p)] = float(v) * UNIT[u]
    reqs = re.search(r"(\d+) requests in", out)
    got["requests"] = int(reqs.group(1)) if reqs else 0
    return got


def hey_pct(out):
    got = {}
    for p, v in re.findall(r"^\s+(10|25|50|75|90|95|99)%+ in ([\d.]+) secs", out, re.M):
        got[int(p)] = float(v) * 1e6
    m = re.search(r"\[200\]\s+(\d+) responses", out)
    got["requests"] = int(m.group(1)) if m else 0
    return got


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build"))
    ap.add_argument("--out", default="bench-out-loadgen")
    ap.add_argument("--rate", type=int, default=2000, help="requests/s, all tools (2000)")
    ap.add_argument("--conns", type=int, default=4, help="keep-alive connections (4)")
    ap.add_argument("--duration", type=int, default=5, help="seconds per run (5)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=None, help="pin the load tools to this CPU (nginx to the other)")
    ap.add_argument("--quick", action="store_true", help="CI: 1 repetition of 2 s at 500/s")
    a = ap.parse_args()
    if a.quick:
        a.rate, a.duration, a.reps = 500, 2, 1
    a.out = os.path.abspath(a.out)
    if os.geteuid() != 0:
        print("SKIP: needs root (ip netns add)", file=sys.stderr)
        return 77
    benchlib.require_tools(["wrk", "hey", "nginx"])
    mcload = os.path.join(a.build_dir, "bench", "loadgen", "mcload")
    if not os.path.exists(mcload):
        log(f"error: {mcload} not built (cmake --build build --target mcload)")
        return 1
    (mcnet, tm) = benchlib.import_netns_helpers(a.build_dir, "mcnet", "test_mcload")
    tmp = tempfile.mkdtemp(prefix="mc-loadgen-check-")
    ns = mcnet.Netns("lgchk")
    ngx = tm.Nginx(tmp, ns)
    url = "http://127.0.0.1:%d/1k.bin" % tm.PORT
    lua = os.path.join(tmp, "pace.lua")
    with open(lua, "w") as f:  # each wrk connection waits C/RATE s between requests
        f.write("function delay() return %f end\n" % (1000.0 * a.conns / a.rate))
    pin = benchlib.taskset(a.cpu)
    samples, problems = [], []

    def run(cmd):
        p = mcnet.spawn(pin + cmd, netns=ns, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = p.communicate(timeout=a.duration * 3 + 30)
        if p.returncode != 0:
            raise benchlib.BenchError(f"{' '.join(cmd)} exited {p.returncode}: {err.strip()[-300:]}")
        return out, err

    try:
        for rep in range(a.reps):
            js = os.path.join(tmp, "mcload.json")
            run([mcload, "--url", url, "--rate", str(a.rate), "--duration", str(a.duration), "--conns",
                 str(a.conns), "--arrival", "constant", "--warmup", "0.5", "--json", js])
            s = json.load(open(js))["summary"]
            logged = len(ngx.take_log())
            if s["completed"] + s["warmup"]["completed"] != logged or s["errors"]:
                problems.append(f"rep {rep}: mcload completed {s['completed']}+{s['warmup']['completed']}, "
                                f"nginx logged {logged}, errors {s['errors']}")
            samples.append({"rep": rep, "tool": "mcload", "p50_us": s["latency_us"]["p50"],
                            "p99_us": s["latency_us"]["p99"], "svc_p50_us": s["service_us"]["p50"],
                            "svc_p99_us": s["service_us"]["p99"], "requests": s["completed"],
                            "rate": s["completed_rate"], "kept_up": s["kept_up"]})
            out, _ = run(["wrk", "-t", "1", "-c", str(a.conns), "-d", f"{a.duration}s", "--latency", "-s", lua, url])
            w = wrk_pct(out)
            ngx.take_log()
            samples.append({"rep": rep, "tool": "wrk", "p50_us": w.get(50), "p99_us": w.get(99),
                            "requests": w["requests"], "rate": w["requests"] / a.duration})
            out, _ = run(["hey", "-z", f"{a.duration}s", "-c", str(a.conns), "-q", str(a.rate / a.conns), url])
            h = hey_pct(out)
            ngx.take_log()
            samples.append({"rep": rep, "tool": "hey", "p50_us": h.get(50), "p99_us": h.get(99),
                            "requests": h["requests"], "rate": h["requests"] / a.duration})
            log(f"rep {rep}: " + ", ".join(f"{x['tool']} p50 {x['p50_us']} p99 {x['p99_us']} us"
                                           for x in samples[-3:]))
    finally:
        ngx.stop()
        ns.remove()
    missing = [x for x in samples if x["p50_us"] is None or x["p99_us"] is None]
    if missing:
        problems.append(f"no percentiles parsed from {[x['tool'] for x in missing]}")

    def by(tool):
        return [x for x in samples if x["tool"] == tool]

    rows = ["| tool | rate/s | p50 µs | p99 µs | p50 mcload/tool | p99 mcload/tool |", "|---|---|---|---|---|---|"]
    summary = {}
    for tool in ("mcload", "wrk", "hey"):
        t = by(tool)
        if not t or missing:
            continue
        r50 = benchlib.paired_ratio(by("mcload"), t, "p50_us") if tool != "mcload" else None
        r99 = benchlib.paired_ratio(by("mcload"), t, "p99_us") if tool != "mcload" else None
        summary[tool] = {"p50_us": statistics.median(x["p50_us"] for x in t),
                         "p99_us": statistics.median(x["p99_us"] for x in t), "p50_ratio": r50, "p99_ratio": r99}
        rows.append(f"| {tool} | {benchlib.fmt_med([x['rate'] for x in t], 0)} | "
                    f"{benchlib.fmt_med([x['p50_us'] for x in t])} | {benchlib.fmt_med([x['p99_us'] for x in t])} | "
                    f"{benchlib.fmt_ratio(r50, collapse=True)} | {benchlib.fmt_ratio(r99, collapse=True)} |")
    table = (f"### mcload vs wrk vs hey: nginx 1 KiB on loopback in a netns, {a.rate}/s over {a.conns} "
             f"keep-alive connections, {a.duration} s x {a.reps}\n" + "\n".join(rows) + "\n")
    meta = {"rate": a.rate, "conns": a.conns, "duration": a.duration, "reps": a.reps, "cpu": a.cpu,
            "loadavg": benchlib.loadavg()}
    benchlib.write_outputs(a.out, table, samples, meta, summary, problems, log)
    for p in problems:
        log("problem: " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
