#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The objectives evaluation (issue 17; README "Objectives, part 3"): policies
learned from training load, run under load patterns they never saw, judged
per 1 s window on the tail.

    sudo python3 e2e/objectives_eval.py [--quick] [--results DIR]
        [--patterns sinusoid,flash,bursts,ramp,capdrop] [--pattern FILE.csv]
        [--policies none,static,search] [--learn S] [--duration S]

Brings up the bed (e2e/objectives/bed.py: two nodes, S1 and S2 with a
CPU-capped single-worker backend per node, premium and freemium caller pods,
a meshcutd per node, the controller outside), sweeps the action grid at a few
load levels for the oracle, then for each unseen pattern runs each policy in
turn with the same pattern (a learning policy first runs the training
pattern — random steps — for --learn s, learning from it), reads the
controller's --log windows and writes into the results dir: results.json (per
pattern x policy), windows.csv (every window), table.md, objectives-PATTERN.png.

--quick (CTest e2e_objectives_quick): a short training, one unseen pattern
(flash), two policies, a two-point oracle; checks the pipeline end to end
(files exist, JSON parses, every window counted, each policy ran, non-zero
carried load), not the targets. Exit 0 ok, 1 a check failed, 77 skipped."""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from objectives import analysis, oracle, patterns, report  # noqa: E402
from objectives.bed import Bed, ServiceSpec, control_bin, log, mcload_bin, mcnet  # noqa: E402

LEARNING = ("static", "search", "ppo", "paper")


def available_policies():
    """What `meshcut-control run --policy` takes, from its --help."""
    r = subprocess.run([control_bin(), "run", "--help"], capture_output=True, text=True)
    text = r.stdout + r.stderr
    line = next((ln for ln in text.splitlines() if "--policy" in ln), "")
    return [p for p in ("none", "static", "search", "ppo", "paper") if p in line]


def client_view(results_dir, name):
    """What the callers saw (mcload's own --json), per service and class."""
    out = {}
    for f in sorted(os.listdir(results_dir)):
        if f.startswith("mcload-%s-" % name) and f.endswith(".json"):
            try:
                j = json.load(open(os.path.join(results_dir, f)))
            except ValueError:
                continue
            key = f[len("mcload-%s-" % name):-5]
            j = j.get("summary", j)
            out[key] = {k: j.get(k) for k in ("sent", "ok", "errors", "non2xx", "errors_by_kind", "kept_up")}
            lat = j.get("latency_us") or {}
            out[key]["p99_ms"] = (lat.get("p99") or 0) / 1e3
            out[key]["p90_ms"] = (lat.get("p90") or 0) / 1e3
    return out


def run_policy(bed, args, pat, policy, training, results_dir, caps):
    """One policy under one pattern; returns (rows, meta)."""
    lead = args.learn if policy in LEARNING else 0
    sched = pat.shifted(lead, training.schedules) if lead else pat.schedules
    total = lead + pat.duration
    name = "%s-%s" % (pat.name, policy)
    logf = os.path.join(results_dir, "run-%s.jsonl" % name)
    if os.path.exists(logf):
        os.unlink(logf)
    windows = int(total) + 2
    ctl = bed.start_control(logf, policy, windows, lead)
    time.sleep(0.3)
    procs, t0 = bed.start_load(name, sched, total + 1, seed=args.seed, out_dir=results_dir)
    timers = []
    if "capacity_drop" in pat.events:
        be = bed.services[0].backends[0]
        q0 = be.cg.quota_us

        def drop():
            be.cg.set_quota(q0 // 2)
            log("%s: %s's CPU quota halved (%d -> %d us per %d us)" % (name, be.name, q0, q0 // 2, be.cg.period_us))

        tm = threading.Timer(max(0.0, t0 + lead + pat.events["capacity_drop"] - time.monotonic()), drop)
        tm.start()
        timers.append((tm, lambda: be.cg.set_quota(q0)))
    try:
        rc = ctl.wait(timeout=windows + 60)
    except subprocess.TimeoutExpired:
        ctl.kill()
        rc = "timeout"
    for tm, undo in timers:
        tm.cancel()
        undo()
    bed.stop_load(procs)
    drained = bed.wait_idle()
    err = open(logf + ".err").read()
    ticks = analysis.read_log(logf)
    rows = analysis.window_rows(ticks, bed.services, t0, lead, pat.duration)
    learned = sum(1 for t in ticks if t.get("phase") == "learn")
    meta = {"rc": rc, "log": os.path.basename(logf), "ticks": len(ticks), "learn_s": lead,
            "learn_windows": learned, "stderr_tail": err[-600:], "drain_s": drained,
            "client": client_view(results_dir, name)}
    log("%s: rc %s, %d windows logged (%d learning), %d in the pattern; %s" % (
        name, rc, len(ticks), learned, sum(r["in_pattern"] for r in rows),
        next((ln for ln in err.splitlines() if "of one core" in ln), err.strip().splitlines()[-1:] or "")))
    return rows, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--results", default=None, help="results dir (default e2e/results/objectives, --quick: a tmp dir)")
    ap.add_argument("--patterns", default=None, help="unseen patterns, comma-separated (%s)" % ",".join(patterns.UNSEEN))
    ap.add_argument("--pattern", action="append", default=[], help="CSV t_s,service,class,rate_rps (repeatable)")
    ap.add_argument("--policies", default=None, help="comma-separated (default: every one meshcut-control takes)")
    ap.add_argument("--learn", type=int, default=None, help="training seconds before a learning policy controls")
    ap.add_argument("--duration", type=int, default=None, help="seconds per unseen pattern")
    ap.add_argument("--oracle-levels", default=None, help="load levels (x capacity), comma-separated")
    ap.add_argument("--oracle-hold", type=float, default=None)
    ap.add_argument("--quota-us", type=int, default=2500, help="each backend's CPU quota per --period-us")
    ap.add_argument("--period-us", type=int, default=10000)
    ap.add_argument("--s1-ms", type=float, default=1.25, help="CPU ms per S1 request (5 ms at the quota)")
    ap.add_argument("--s2-ms", type=float, default=3.75, help="CPU ms per S2 request (15 ms at the quota)")
    ap.add_argument("--bound-x", type=float, default=5.0, help="p95 bound = this x a request's time at the quota")
    ap.add_argument("--derate", type=float, default=0.9, help="capacity C of the patterns = measured x this")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runtime", default="cni", choices=("cni", "cri"))
    args = ap.parse_args()
    q = args.quick
    args.learn = args.learn if args.learn is not None else (20 if q else 120)
    args.duration = args.duration if args.duration is not None else (30 if q else 90)
    levels = [float(x) for x in (args.oracle_levels or ("1.2" if q else "0.6,1.0,1.4")).split(",")]
    hold = args.oracle_hold or (4.0 if q else 3.0)

    mcnet.require_root()
    for b in (control_bin(), mcload_bin()):
        if not os.access(b, os.X_OK):
            mcnet.skip_or_fail("%s is not built (cmake --build build; or set MESHCUT_CONTROL / MCLOAD)" % b)
    have = available_policies()
    want = args.policies.split(",") if args.policies else (["none", "search"] if q else have)
    missing = [p for p in want if p not in have]
    pols = [p for p in want if p in have]
    if missing:
        log("policies not in this meshcut-control (run --help lists %s): %s" % (have, missing))
    results_dir = args.results or (os.path.join(mcnet.REPO, "e2e", "results", "objectives") if not q else None)
    if results_dir is None:
        import tempfile
        results_dir = tempfile.mkdtemp(prefix="mc-objeval-results-")
    os.makedirs(results_dir, exist_ok=True)
    ck = mcnet.Checks()
    t_start = time.monotonic()

    services = [ServiceSpec("s1", "10.96.0.41", args.s1_ms, 0), ServiceSpec("s2", "10.96.0.42", args.s2_ms, 0)]
    share = args.quota_us / args.period_us
    nominal = {}
    for s in services:
        nominal[s.key] = 2 * share / (s.service_ms / 1e3)
        # the bound: BOUND_X x a request's time at the quota (its CPU spread over the periods)
        s.bound_ms = round(max(args.bound_x * s.service_ms / share, 20.0))
    bed = Bed(services, quota_us=args.quota_us, period_us=args.period_us, runtime=args.runtime).up()
    measured = oracle.calibrate(bed, nominal, 6 if q else 10, results_dir)
    caps = {k: args.derate * (measured[k] if measured[k] > 0 else nominal[k]) for k in nominal}
    caps_by_name = {s.name: caps[s.key] for s in services}
    log("capacity: nominal %s, measured %s; used for the patterns (x%.2f): %s; bounds: %s" % (
        ", ".join("%s %.0f/s" % kv for kv in nominal.items()), ", ".join("%s %.0f/s" % kv for kv in measured.items()),
        args.derate, ", ".join("%s %.0f/s" % kv for kv in caps.items()),
        ", ".join("%s p95 <= %g ms" % (s.key, s.bound_ms) for s in services)))

    unseen = []
    names = args.patterns.split(",") if args.patterns else (["flash"] if q else list(patterns.UNSEEN))
    for n in names:
        if n:
            unseen.append(patterns.make(n, caps_by_name, args.duration, seed=args.seed))
    for f in args.pattern:
        unseen.append(patterns.from_csv(f, [s.name for s in services],
                                        name=os.path.splitext(os.path.basename(f))[0]))
    training = patterns.make("random", caps_by_name, max(args.learn, 1), seed=args.seed + 100)

    # The oracle: the action grid (or 2 points with --quick) on the bed.
    pts = [(0.5, 0.5), (0.5, 1.0)] if q else oracle.grid(0.25, 0.25 if len(levels) < 2 else 0.5)
    t0 = time.monotonic()
    orc = oracle.sweep(bed, caps, levels, pts, hold, results_dir)
    orc["bed_seconds"] = round(time.monotonic() - t0, 1)
    log("oracle: %s (%.0f s)" % (orc["capacity_rps"], orc["bed_seconds"]))

    results = {"command": " ".join(sys.argv), "quick": q, "runtime": args.runtime, "sidecars": False,
               "services": {s.key: {"cpu_ms_per_request": s.service_ms, "bound_ms": s.bound_ms, "percentile": 95,
                                    "capacity_used_rps": caps[s.key], "capacity_nominal_rps": nominal[s.key],
                                    "capacity_measured_rps": measured[s.key],
                                    "backends": {b.name: {"node": b.pod.node.name, "ip": b.pod.ip,
                                                          "cpu_quota_us": b.cg.quota_us, "cpu_period_us": b.cg.period_us,
                                                          "cgroup": b.cg.kind}
                                                 for b in s.backends}} for s in services},
               "class_shares": patterns.SHARE, "class_weights": {"premium": 3, "freemium": 1},
               "learn_s": args.learn, "training": "random", "policies": pols, "policies_missing": missing,
               "calibration": {"nominal_rps": nominal, "measured_rps": measured, "used_rps": caps,
                               "derate": args.derate},
               "oracle": orc, "patterns": {}, "runs": {}}
    runs = []
    for pat in unseen:
        results["patterns"][pat.name] = {}
        results["runs"][pat.name] = {"duration_s": pat.duration, "events": pat.events}
        for pol in pols:
            rows, meta = run_policy(bed, args, pat, pol, training, results_dir, caps)
            m = analysis.summarize(rows, services, pat.events, orc)
            m["run"] = meta
            results["patterns"][pat.name][pol] = m
            runs.append({"pattern": pat.name, "policy": pol, "rows": rows, "duration": pat.duration, "meta": meta})
            if pol in LEARNING and "fit" not in results:  # the model learned from the first training segment
                fit = subprocess.run([control_bin(), "fit", "--windows", os.path.join(results_dir, meta["log"]),
                                      "--json"], capture_output=True, text=True)
                try:
                    results["fit"] = json.loads(fit.stdout)
                except ValueError:
                    results["fit"] = {"rc": fit.returncode, "out": (fit.stdout + fit.stderr)[-800:]}
    results["bed_seconds"] = round(time.monotonic() - t_start, 1)

    with open(os.path.join(results_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    report.write_windows_csv(os.path.join(results_dir, "windows.csv"), runs)
    md = report.table(results, services)
    head = ("# Objectives evaluation%s\n\n`%s`; runtime %s, no sidecars; bounds %s; learned from %d s of random "
            "steps per learning run; oracle capacity %s.\n\n" % (
                " (quick)" if q else "", results["command"], args.runtime,
                ", ".join("%s p95 <= %g ms" % (s.key, s.bound_ms) for s in services), args.learn,
                ", ".join("%s %s/s" % (k, "-" if v is None else "%.0f" % v) for k, v in orc["capacity_rps"].items())))
    with open(os.path.join(results_dir, "table.md"), "w") as f:
        f.write(head + md + "\n")
    print(head + md)
    pngs = report.plots(results_dir, runs, services)

    # The pipeline's checks (not the targets).
    for name in ("results.json", "windows.csv", "table.md"):
        p = os.path.join(results_dir, name)
        ck.check(os.path.exists(p) and os.path.getsize(p) > 0, "%s written" % name)
    try:
        back = json.load(open(os.path.join(results_dir, "results.json")))
        ok = all("windows_met_fraction" in back["patterns"][p.name][pol] and
                 "carried_vs_oracle" in back["patterns"][p.name][pol] for p in unseen for pol in pols)
    except (ValueError, KeyError) as e:
        ok, back = False, str(e)
    ck.check(ok, "results.json parses, with windows_met_fraction and carried_vs_oracle per pattern x policy")
    ck.check(len(pngs) == len(unseen), "a figure per pattern (%s)" % ", ".join(os.path.basename(p) for p in pngs))
    for r in runs:
        m = results["patterns"][r["pattern"]][r["policy"]]
        n_in = m["windows"]
        ck.check(r["meta"]["rc"] == 0, "%s/%s: the controller ran and exited 0 (%s)"
                 % (r["pattern"], r["policy"], r["meta"]["stderr_tail"][-200:]))
        ck.check(abs(n_in - r["duration"]) <= 2, "%s/%s: every window of the pattern counted (%d of %d s)"
                 % (r["pattern"], r["policy"], n_in, r["duration"]))
        ck.check(len(r["rows"]) == r["meta"]["ticks"] and r["meta"]["ticks"] >= r["duration"] + r["meta"]["learn_s"],
                 "%s/%s: every logged window in windows.csv (%d)" % (r["pattern"], r["policy"], len(r["rows"])))
        ck.check(m["carried_rps"]["total"] > 0 and m["carried_rps"]["premium"] > 0 and m["carried_rps"]["freemium"] > 0,
                 "%s/%s: carried load %.1f/s (premium %.1f, freemium %.1f)" % (
                     r["pattern"], r["policy"], m["carried_rps"]["total"], m["carried_rps"]["premium"],
                     m["carried_rps"]["freemium"]))
    ck.check(all(v is not None and v > 0 for v in orc["capacity_rps"].values()),
             "the oracle found an action meeting each bound: %s" % orc["capacity_rps"])
    if q and not args.results and not ck.failed:
        subprocess.run(["rm", "-rf", results_dir])  # a passing CTest run leaves nothing behind
        log("results were in %s (removed: all checks passed; --results DIR keeps them)" % results_dir)
    else:
        log("results in %s (%.0f s of bed time)" % (results_dir, results["bed_seconds"]))
    ck.done()


if __name__ == "__main__":
    main()
