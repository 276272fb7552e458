# SPDX-License-Identifier: Apache-2.0
"""The oracle of the objectives evaluation (issue 17): actions of the grid
applied on the bed by hand (PUT /v1/action to both nodes) at fixed load
levels, measured by a `meshcut-control run --policy none` (which only reads
and merges the nodes' windows); per service the largest carried load that met
its bound is the reference the policies are held against — as measured, not
as modelled."""
import os
import statistics
import time

from . import analysis
from .bed import log
from .patterns import SHARE


def action_for(services, w_a, admit_free, rates, ttl_ms=60000):
    """Routing W_A of each service's traffic to its first backend (n1), the
    rest to the second; premium admitted in full, freemium at ADMIT_FREE of its
    offered rate RATES[(svc, "freemium")] (a token bucket)."""
    doc = {"generation": int(time.time() * 1000), "ttl_ms": ttl_ms, "services": {}}
    for s in services:
        a, b = s.backends
        weights = {k: round(v, 6) for k, v in ((a.name, w_a), (b.name, 1.0 - w_a)) if v > 1e-9}
        classes = {}
        for cls in SHARE:
            c = {"weights": weights}
            if cls == "freemium" and admit_free < 1:
                r = admit_free * rates[(s.name, cls)]
                c["rate"] = round(r, 3)
                c["burst"] = max(1, int(r / 10))
            classes[cls] = c
        doc["services"][s.key] = {"classes": classes}
    return doc


def grid(routing_step=0.25, admission_step=0.25):
    """(w_a, admit_freemium) points, the least admitted first (a queue built
    by an overloaded point would spill into the next one)."""
    ws = [round(i * routing_step, 6) for i in range(int(round(1 / routing_step)) + 1)]
    adm = [round(i * admission_step, 6) for i in range(int(round(1 / admission_step)) + 1)]
    return [(w, a) for a in adm for w in ws]


def calibrate(bed, nominal, seconds, results_dir, over=1.3):
    """Each service's capacity as measured: its saturated throughput under
    OVER x NOMINAL offered, kube-proxy's even split, no action. Returns {svc: rps}."""
    services = bed.services
    logf = os.path.join(results_dir, "calibrate.jsonl")
    if os.path.exists(logf):
        os.unlink(logf)
    ctl = bed.start_control(logf, "none", int(seconds) + 1, 0)
    rates = {(s.name, cls): over * nominal[s.key] * sh for s in services for cls, sh in SHARE.items()}
    procs, t0 = bed.start_load("calibrate", {k: [(0.0, r)] for k, r in rates.items()}, seconds + 2,
                               out_dir=results_dir)
    ctl.wait(timeout=seconds + 30)
    bed.stop_load(procs)
    rows = [r for r in analysis.window_rows(analysis.read_log(logf), services, t0, 0, 1e9)
            if r["t"] is not None and r["t"] > 1.5]
    out = {}
    for s in services:
        car = sorted(r[s.name + "_carried"] for r in rows)
        out[s.key] = car[len(car) // 2] if car else 0.0
    bed.wait_idle()  # the backlog drains before anything is measured
    return out


def sweep(bed, caps, levels, points, hold, results_dir):
    """For each load level X (offered = X x C per service), each POINT (w_a,
    admit_free) held HOLD s (the first window after a change is not counted).
    Returns {"levels": [...], "capacity_rps": {svc: K}}."""
    services = bed.services
    out = {"levels": [], "points": [list(p) for p in points], "hold_s": hold}
    best = {s.key: None for s in services}
    for x in levels:
        rates = {(s.name, cls): x * caps[s.key] * sh for s in services for cls, sh in SHARE.items()}
        duration = int(len(points) * hold + 3)
        logf = os.path.join(results_dir, "oracle-%g.jsonl" % x)
        if os.path.exists(logf):
            os.unlink(logf)
        ctl = bed.start_control(logf, "none", duration + 1, 0)
        for _ in range(50):  # none clears the nodes once at its start: act only after that
            if os.path.exists(logf) and os.path.getsize(logf) > 0:
                break
            if ctl.poll() is not None:
                raise RuntimeError("meshcut-control run (oracle) exited %s: %s"
                                   % (ctl.returncode, open(logf + ".err").read()[-500:]))
            time.sleep(0.1)
        procs, t0 = bed.start_load("oracle-%g" % x, {k: [(0.0, r)] for k, r in rates.items()}, duration + 2,
                                   out_dir=results_dir)
        spans = []
        for (w, a) in points:
            ta = time.monotonic()
            bed.put_action(action_for(services, w, a, rates))
            time.sleep(hold)
            spans.append((ta + 0.9, time.monotonic() + 0.1))
        ctl.wait(timeout=duration + 30)
        bed.stop_load(procs)
        bed.clear_action()
        bed.wait_idle()
        ticks = analysis.read_log(logf)
        rows = analysis.window_rows(ticks, services, t0, 0, 1e9)
        lvl = {"level": x, "offered_rps": {s.key: sum(rates[(s.name, c)] for c in SHARE) for s in services},
               "points": []}
        for (w, a), (t1, t2) in zip(points, spans):
            inside = [r for r in rows if r["t"] is not None and t1 - t0 <= r["t"] - 0.5 and r["t"] + 0.5 <= t2 - t0]
            pt = {"w_a": w, "admit_freemium": a, "windows": len(inside), "services": {}}
            for s in services:
                p95 = [r[s.name + "_p95_ms"] for r in inside]
                car = [r[s.name + "_carried"] for r in inside]
                med = statistics.median(p95) if p95 else None
                met = bool(inside) and med is not None and med <= s.bound_ms
                c = statistics.mean(car) if car else 0.0
                pt["services"][s.key] = {"p95_ms": med, "carried_rps": c, "met": met,
                                         "offered_rps": statistics.mean([r[s.name + "_offered"] for r in inside])
                                         if inside else 0.0}
                if met and c > 0 and (best[s.key] is None or c > best[s.key]["carried_rps"]):
                    best[s.key] = {"carried_rps": c, "level": x, "w_a": w, "admit_freemium": a, "p95_ms": med}
            lvl["points"].append(pt)
            log("oracle x%.2f w_a=%.2f admit_free=%.2f: %s" % (x, w, a, "; ".join(
                "%s %.1f/s p95 %s ms %s" % (k, v["carried_rps"], "-" if v["p95_ms"] is None else "%.1f" % v["p95_ms"],
                                              "met" if v["met"] else "MISSED") for k, v in pt["services"].items())))
        out["levels"].append(lvl)
    out["best"] = best
    out["capacity_rps"] = {k: (v["carried_rps"] if v else None) for k, v in best.items()}
    return out
