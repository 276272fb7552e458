# SPDX-License-Identifier: Apache-2.0
"""Output of the objectives evaluation: windows CSV, the Markdown table, and
one gnuplot figure per pattern (all policies): per service the measured p95 vs
its bound, offered vs carried load, and the action (routing weight to the n1
backend, freemium's admitted share) over time."""
import csv
import os
import shutil
import subprocess


def _pct(x):
    return "-" if x is None else "%.1f %%" % (100 * x)


def _num(x, fmt="%.1f"):
    return "-" if x is None else fmt % x


def write_windows_csv(path, runs):
    """Every logged window of every run (in_pattern says whether it was judged)."""
    keys = []
    for r in runs:
        for w in r["rows"]:
            for k in w:
                if k not in keys:
                    keys.append(k)
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["pattern", "policy"] + keys)
        for r in runs:
            for w in r["rows"]:
                wr.writerow([r["pattern"], r["policy"]] + [_cell(w.get(k, "")) for k in keys])


def _cell(v):
    if isinstance(v, float):
        return "%.4g" % v
    return "" if v is None else v


def table(results, services):
    lines = []
    for pat, pols in results["patterns"].items():
        lines.append("### %s" % pat)
        lines.append("")
        head = ["policy", "windows", "met (all)"] + ["met %s" % s.name for s in services] + \
               ["carried/s", "premium/s", "freemium/s", "offered/s", "vs oracle", "in bound vs oracle", "blocked", "recovery s"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for pol, m in pols.items():
            if "error" in m and "windows" not in m:
                lines.append("| %s | %s |" % (pol, m["error"]))
                continue
            rec = ", ".join("%s %s" % (k, _num(v)) for k, v in m.get("recovery_s", {}).items()) or "-"
            cells = [pol, "%d/%d" % (m["windows"], m["windows_logged"]), _pct(m["windows_met_fraction"]["all"])]
            cells += [_pct(m["windows_met_fraction"].get(s.key)) for s in services]
            cells += [_num(m["carried_rps"]["total"]), _num(m["carried_rps"]["premium"]),
                      _num(m["carried_rps"]["freemium"]), _num(m["offered_rps"]["total"]),
                      _pct(m.get("carried_vs_oracle")), _pct(m.get("carried_met_vs_oracle")), _pct(m["blocked_share"]), rec]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plots(results_dir, runs, services):
    """One PNG per pattern; returns the files written ([] without gnuplot)."""
    gp = shutil.which("gnuplot")
    if not gp:
        return []
    out = []
    by_pat = {}
    for r in runs:
        by_pat.setdefault(r["pattern"], []).append(r)
    for pat, rs in by_pat.items():
        dats = []
        cols = ["t"]
        for s in services:
            cols += [s.name + k for k in ("_p95_ms", "_bound_ms", "_offered", "_carried", "_w_a", "_freemium_admit")]
        for r in rs:
            dat = os.path.join(results_dir, "plot-%s-%s.dat" % (pat, r["policy"]))
            with open(dat, "w") as f:
                f.write("# " + " ".join(cols) + "\n")
                for w in r["rows"]:
                    if not w["in_pattern"]:
                        continue
                    f.write(" ".join(_dat(w.get(c)) for c in cols) + "\n")
            dats.append((r["policy"], dat))
        png = os.path.join(results_dir, "objectives-%s.png" % pat)
        ci = {c: i + 1 for i, c in enumerate(cols)}
        g = ['set terminal pngcairo size 1400,1000 font ",9"', 'set output "%s"' % png,
             "set multiplot layout 3,%d title \"pattern %s: every policy, per 1 s window\"" % (len(services), pat),
             "set grid", "set key top left font \",8\"", "set xlabel \"t (s)\""]
        for s in services:  # row 1: p95 vs bound
            g.append('set title "%s: p95 latency vs bound"' % s.key)
            g.append('set ylabel "ms"; set logscale y')
            parts = ['"%s" using %d:%d with lines title "%s"' % (d, ci["t"], ci[s.name + "_p95_ms"], p) for p, d in dats]
            parts.append('"%s" using %d:%d with lines lw 2 dt 2 lc "black" title "bound"'
                         % (dats[0][1], ci["t"], ci[s.name + "_bound_ms"]))
            g.append("plot " + ", ".join(parts))
            g.append("unset logscale y")
        for s in services:  # row 2: offered vs carried
            g.append('set title "%s: offered (dashed) vs carried"' % s.key)
            g.append('set ylabel "req/s"')
            parts = []
            for i, (p, d) in enumerate(dats):
                parts.append('"%s" using %d:%d with lines lc %d title "%s carried"' % (d, ci["t"], ci[s.name + "_carried"], i + 1, p))
                parts.append('"%s" using %d:%d with lines dt 2 lc %d notitle' % (d, ci["t"], ci[s.name + "_offered"], i + 1))
            g.append("plot " + ", ".join(parts))
        for s in services:  # row 3: the action
            g.append('set title "%s: action (weight to %s solid, freemium admitted dashed)"'
                     % (s.key, s.backends[0].name if s.backends else "a"))
            g.append('set ylabel "fraction"; set yrange [-0.05:1.1]')
            parts = []
            for i, (p, d) in enumerate(dats):
                parts.append('"%s" using %d:%d with steps lc %d title "%s"' % (d, ci["t"], ci[s.name + "_w_a"], i + 1, p))
                parts.append('"%s" using %d:%d with lines dt 2 lc %d notitle' % (d, ci["t"], ci[s.name + "_freemium_admit"], i + 1))
            g.append("plot " + ", ".join(parts))
            g.append("set autoscale y")
        g.append("unset multiplot")
        script = os.path.join(results_dir, "plot-%s.gp" % pat)
        with open(script, "w") as f:
            f.write("\n".join(g) + "\n")
        r = subprocess.run([gp, script], capture_output=True, text=True)
        if r.returncode == 0 and os.path.exists(png):
            out.append(png)
        else:
            print("gnuplot %s: %s" % (script, r.stderr[-500:]))
    return out


def _dat(v):
    if v is None or v == "":
        return "NaN"
    if isinstance(v, float):
        return "%.5g" % v
    return str(v)
