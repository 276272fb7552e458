# SPDX-License-Identifier: Apache-2.0
"""From the controller's --log JSON lines to per-window rows and per-run
figures (issue 17): the share of 1 s windows in which every service met its
bound (and per service), carried load total and per class, blocked share,
recovery after an event, carried vs the oracle."""
import json

CLASSES = ("premium", "freemium")


def read_log(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def _weight(action, svc, backend, cls="premium"):
    """BACKEND's weight (a Backend: name or ip:port) for SVC/CLS in an action document; None without one."""
    if not isinstance(action, dict):
        return None
    c = action.get("services", {}).get(svc, {}).get("classes", {})
    c = c.get(cls) or next(iter(c.values()), None)
    if not c or "weights" not in c:
        return None
    w = c["weights"]
    for k in (backend.name, "%s:8080" % backend.pod.ip, backend.pod.ip):
        if k in w:
            return float(w[k])
    return 0.0


def window_rows(ticks, services, t0_mono, lead, duration):
    """One row per controller window whose middle falls in the pattern's
    [0, DURATION) (pattern time: monotonic seconds since the loads started,
    minus LEAD, the training segment). SERVICES: bed.ServiceSpec list."""
    rows = []
    for k, tk in enumerate(ticks):
        w = tk.get("window") or {}
        ts, te = w.get("t_start_ns", 0), w.get("t_end_ns", 0)
        if ts and te:
            t = (ts + te) / 2e9 - t0_mono - lead
        else:
            t = None
        row = {"tick": tk.get("tick", k), "t": t, "phase": tk.get("phase"), "policy": tk.get("policy"),
               "nodes_answered": tk.get("nodes_answered", 0), "decide_ms": tk.get("decide_ms", 0.0),
               "duration_s": w.get("duration_s", 0.0)}
        per = {s.get("service"): s for s in tk.get("services", [])}
        all_met = True
        for s in services:
            r = per.get(s.key, {})
            met = bool(r.get("met", True))
            all_met = all_met and met
            row[s.name + "_p95_ms"] = r.get("measured_ms", 0.0)
            row[s.name + "_pred_ms"] = r.get("predicted_ms", 0.0)
            row[s.name + "_bound_ms"] = r.get("bound_ms", s.bound_ms)
            row[s.name + "_offered"] = r.get("offered_rps", 0.0)
            row[s.name + "_carried"] = r.get("carried_rps", 0.0)
            row[s.name + "_met"] = int(met)
            for i, b in enumerate(s.backends):
                wt = _weight(tk.get("action"), s.key, b)
                row["%s_w_%s" % (s.name, "ab"[i])] = "" if wt is None else wt
            for cls in CLASSES:
                off = adm = blk = done = 0.0
                for rr in w.get("rows", []):
                    if rr.get("service") == s.key and rr.get("backend") == "all" and rr.get("class") == cls:
                        rate = rr.get("rate", {})
                        off += rate.get("offered", 0.0)
                        adm += rate.get("admitted", 0.0)
                        blk += rate.get("blocked", 0.0)
                        done += rate.get("completed", 0.0)
                row["%s_%s_offered" % (s.name, cls)] = off
                row["%s_%s_blocked" % (s.name, cls)] = blk
                row["%s_%s_carried" % (s.name, cls)] = done
                row["%s_%s_admit" % (s.name, cls)] = (adm / off) if off > 0 else ""
        row["all_met"] = int(all_met)
        row["in_pattern"] = int(t is not None and 0 <= t < duration)
        rows.append(row)
    return rows


def recovery(rows, t_event, services, hold=3):
    """Seconds from T_EVENT until the first window from which HOLD windows in a
    row met every bound (0 if they were met throughout); None if never."""
    ev = [r for r in rows if r["in_pattern"] and r["t"] >= t_event - 0.5]
    for i in range(len(ev)):
        if len(ev[i:i + hold]) == hold and all(r["all_met"] for r in ev[i:i + hold]):
            return max(0.0, round(ev[i]["t"] - 0.5 - t_event, 1))
    return None


def summarize(rows, services, events, oracle=None):
    ev = [r for r in rows if r["in_pattern"]]
    n = len(ev)
    out = {"windows": n, "windows_logged": len(rows),
           "windows_controlled": sum(1 for r in ev if r["phase"] == "control"),
           "windows_met_fraction": {"all": (sum(r["all_met"] for r in ev) / n) if n else None}}
    for s in services:
        out["windows_met_fraction"][s.key] = (sum(r[s.name + "_met"] for r in ev) / n) if n else None
    carried = {"total": 0.0}
    offered = {"total": 0.0}
    blocked = 0.0
    for cls in CLASSES:
        carried[cls] = sum(r["%s_%s_carried" % (s.name, cls)] for r in ev for s in services) / max(1, n)
        offered[cls] = sum(r["%s_%s_offered" % (s.name, cls)] for r in ev for s in services) / max(1, n)
        blocked += sum(r["%s_%s_blocked" % (s.name, cls)] for r in ev for s in services)
    for s in services:
        carried[s.key] = sum(r[s.name + "_carried"] for r in ev) / max(1, n)
        offered[s.key] = sum(r[s.name + "_offered"] for r in ev) / max(1, n)
    carried["total"] = sum(carried[s.key] for s in services)
    offered["total"] = sum(offered[s.key] for s in services)
    out["carried_rps"] = carried
    out["offered_rps"] = offered
    tot_off = sum(r["%s_%s_offered" % (s.name, c)] for r in ev for s in services for c in CLASSES)
    out["blocked_share"] = blocked / tot_off if tot_off else 0.0
    out["recovery_s"] = {k: recovery(rows, t, services) for k, t in events.items()
                         if k in ("flash_start", "capacity_drop")}
    dec = sorted(r["decide_ms"] for r in ev if r["phase"] == "control")
    out["decide_ms"] = {"max": dec[-1] if dec else 0.0, "p50": dec[len(dec) // 2] if dec else 0.0}
    # the model's prediction error on the controlled windows (where it predicted)
    errs = []
    for r in ev:
        for s in services:
            p, m = r[s.name + "_pred_ms"], r[s.name + "_p95_ms"]
            if p and m:
                errs.append(abs(p - m) / m)
    out["prediction_error"] = {"mean_abs_rel": (sum(errs) / len(errs)) if errs else None, "n": len(errs)}
    if oracle and all(oracle.get("capacity_rps", {}).get(s.key) for s in services):
        ref = sum(oracle_carried(oracle, s.key, r[s.name + "_offered"]) for r in ev for s in services)
        got = sum(r[s.name + "_carried"] for r in ev for s in services)
        good = sum(r[s.name + "_carried"] for r in ev for s in services if r[s.name + "_met"])
        out["carried_vs_oracle"] = (got / ref) if ref > 0 else None
        # only what was carried in windows where its service met the bound
        out["carried_met_vs_oracle"] = (good / ref) if ref > 0 else None
        out["oracle_carried_rps"] = ref / max(1, n)
    else:
        out["carried_vs_oracle"] = out["carried_met_vs_oracle"] = None
    return out


def oracle_carried(oracle, svc, offered):
    """What the oracle carries at OFFERED: min(offered, K) with K the largest
    carried load measured on the bed, over the swept actions, that met SVC's bound."""
    k = oracle.get("capacity_rps", {}).get(svc)
    if k is None:
        return 0.0
    return min(offered, k)
