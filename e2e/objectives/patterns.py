# SPDX-License-Identifier: Apache-2.0
"""Load patterns of the objectives evaluation (issue 17), as per-(service,
class) step functions at 1 s resolution: [(t_s, rate_rps), ...], what mcload's
--pattern file: takes.

A pattern is built from each service's capacity C (requests/s over its two
backends) so that it means the same on any machine:
  random    training: every STEP s a level drawn from {0.25, 0.5, 0.75, 1.0} x C
            per service (the paper's {5, 10, 15, 20} scaled), independently
  sinusoid  (0.625 + 0.375 sin(2 pi t / T + phase_s)) x C (the paper's 12.5 +/- 7.5)
  flash     0.4 C, then 3x that (1.2 C) for a while from one second to the next, then back
  bursts    on/off: 1.1 C for ON s, 0.2 C for OFF s
  ramp      0.2 C rising linearly to 1.5 C over the run
  capdrop   0.7 C throughout; mid-run one backend loses half its CPU quota (the event)
  file      CSV t_s,service,class,rate_rps (a step function per service and class)
Classes share each service's load: premium 40 %, freemium 60 %."""
import csv
import math
import random

SHARE = {"premium": 0.4, "freemium": 0.6}
UNSEEN = ("sinusoid", "flash", "bursts", "ramp", "capdrop")


class Pattern:
    def __init__(self, name, duration, totals, events=None, schedules=None):
        """TOTALS: {svc: [rate at second 0, 1, ...]} (split by SHARE), or
        SCHEDULES given directly {(svc, cls): [(t, rate)]}. EVENTS: {name: t_s}."""
        self.name, self.duration = name, duration
        self.events = dict(events or {})
        if schedules is None:
            schedules = {}
            for svc, rates in totals.items():
                for cls, share in SHARE.items():
                    schedules[(svc, cls)] = _compress([(float(t), r * share) for t, r in enumerate(rates)])
        self.schedules = schedules

    def rate(self, svc, cls, t):
        """The step function's rate at T."""
        r = 0.0
        for t0, v in self.schedules.get((svc, cls), []):
            if t0 <= t:
                r = v
            else:
                break
        return r

    def offered(self, t):
        """{svc: total rate} at T."""
        out = {}
        for (svc, cls) in self.schedules:
            out[svc] = out.get(svc, 0.0) + self.rate(svc, cls, t)
        return out

    def shifted(self, lead, lead_schedules):
        """This pattern after LEAD seconds of LEAD_SCHEDULES (the training
        segment a learning policy runs first), as one step function per key."""
        out = {}
        for key in set(self.schedules) | set(lead_schedules):
            rows = [(t, r) for t, r in lead_schedules.get(key, [(0.0, 0.0)]) if t < lead]
            rows += [(t + lead, r) for t, r in self.schedules.get(key, [(0.0, 0.0)])]
            out[key] = _compress(rows)
        return out


def _compress(rows):
    out = []
    for t, r in rows:
        r = round(max(0.0, r), 3)
        if out and out[-1][1] == r:
            continue
        out.append((t, r))
    return out or [(0.0, 0.0)]


def make(name, caps, duration, seed=1, step=5, period=None):
    """Pattern NAME for CAPS {svc: C}, DURATION s."""
    rng = random.Random(seed)
    n = int(duration)
    totals = {}
    events = {}
    for i, (svc, c) in enumerate(sorted(caps.items())):
        if name == "random":
            rates = []
            for t in range(n):
                if t % step == 0:
                    lvl = rng.choice((0.25, 0.5, 0.75, 1.0))
                rates.append(lvl * c)
        elif name == "sinusoid":
            T = period or max(20.0, duration / 2.0)
            ph = i * math.pi / 2  # the services out of phase, as in the paper's traces
            rates = [(0.625 + 0.375 * math.sin(2 * math.pi * t / T + ph)) * c for t in range(n)]
        elif name == "flash":
            a, b = int(n * 0.3), int(n * 0.7)
            events["flash_start"], events["flash_end"] = a, b
            rates = [(1.2 if a <= t < b else 0.4) * c for t in range(n)]
        elif name == "bursts":
            on, off = 3, 3
            rates = [(1.1 if (t % (on + off)) < on else 0.2) * c for t in range(n)]
        elif name == "ramp":
            rates = [(0.2 + 1.3 * t / max(1, n - 1)) * c for t in range(n)]
        elif name == "capdrop":
            events["capacity_drop"] = n // 2
            rates = [0.7 * c] * n
        else:
            raise ValueError("unknown pattern %r (random, %s)" % (name, ", ".join(UNSEEN)))
        totals[svc] = rates
    return Pattern(name, duration, totals, events)


def from_csv(path, services, name=None):
    """A pattern from CSV t_s,service,class,rate_rps (a header line allowed;
    SERVICE as NAME or default/NAME). Each (service, class) is a step function
    from its rows; its duration is the last row's time + 10 s unless a row for
    service "*" marks the end."""
    sched = {}
    end = 0.0
    with open(path) as f:
        for i, row in enumerate(csv.reader(f)):
            if not row or row[0].strip().startswith("#"):
                continue
            try:
                t, svc, cls, rate = float(row[0]), row[1].strip(), row[2].strip(), float(row[3])
            except (ValueError, IndexError):
                if i == 0:
                    continue
                raise ValueError("%s line %d: expected t_s,service,class,rate_rps, got %r" % (path, i + 1, row))
            svc = svc.split("/", 1)[-1]
            if svc == "*":
                end = max(end, t)
                continue
            if svc not in services:
                raise ValueError("%s line %d: no service %r (have %s)" % (path, i + 1, svc, ", ".join(services)))
            if cls not in SHARE:
                raise ValueError("%s line %d: class %r is not premium or freemium" % (path, i + 1, cls))
            if rate < 0:
                raise ValueError("%s line %d: negative rate" % (path, i + 1))
            sched.setdefault((svc, cls), []).append((t, rate))
            end = max(end, t + 10)
    for k, rows in sched.items():
        rows.sort()
        if rows[0][0] > 0:
            rows.insert(0, (0.0, 0.0))
        sched[k] = _compress(rows)
    return Pattern(name or "file", end, None, schedules=sched)
