#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""netns tier, observability: `meshcutd trace` splits a meshed request's latency
into proxy / kernel (network) / application, like the paper's Table 1.

Two Istio-like pods on one node (istio-init rules, the Python sidecar of
e2e/istio/sidecar.py as uid 1337), an app client in pod A and an app server in
pod B; every request walks the six sockets of Table 2:

  app(A) (1) -> (2) sidecar(A) (3) -> (4) sidecar(B) (5) -> (6) app(B)

Scenarios, each under `meshcutd trace --duration N --json`:
  app      the server app sleeps 20 ms per request: app column 20 -1/+5 ms,
           proxy column small (< 3 ms), total = what the client measured;
  sidecar  the inbound sidecar (pod B) also delays each chunk it forwards by
           10 ms (sidecar.py --delay-ms 10): +10 ms on the request (hop 4->5)
           and +10 ms on the response (hop 5->4), so the proxy column grows
           by 20 -1/+8 ms per request; the app column stays 20 -1/+5 ms;
  off      pods unenrolled (no socket shortcut), traced by --netns: the same
           breakdown without meshcut (the kernel column shows the TCP path).
Also: --json parses; the trace programs are attached while tracing and none
remains after trace exits (bpftool prog/link show); the overhead of tracing
is measured as the RTT of a ping-pong with and without trace attached.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
APP_PORT = 8080
PROG_NAMES = ("mct_send_btf", "mct_recv_btf", "mct_send_raw", "mct_recv_raw")
APP_DELAY_MS = 20
SIDECAR_DELAY_MS = 10
# An injected sleep is never shorter, but the scheduler may add to it on a busy
# 2-vCPU machine: tolerances are -1 ms / +TOL.
TOL_APP_MS = 5.0
TOL_SIDECAR_MS = 8.0   # on the sum of both directions (2 x 10 ms)
TOL_HOP_MS = 5.0


def within(measured, want, tol):
    return want - 1.0 <= measured <= want + tol


def role_server(port):
    """App server: request = 8-byte length, 4-byte delay (ms), payload; sleeps
    the delay, answers the payload reversed (same framing without delay)."""
    import streams
    l = streams.listen_any(port)
    print("READY", flush=True)
    while True:
        c, _ = l.accept()
        threading.Thread(target=streams.serve_reversed, args=(c, True), daemon=True).start()


def role_client(dst, count, delay_ms, size, gap_ms):
    """App client: COUNT requests on one connection; prints the RTTs (ms) as JSON."""
    import streams
    c = socket.create_connection((dst, APP_PORT))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts, ok = [], True
    for i in range(count):
        data = streams.payload(i, size)
        t0 = time.monotonic()
        same = streams.reversed_round_trip(c, data, delay_ms.to_bytes(4, "big"))
        rtts.append((time.monotonic() - t0) * 1000)
        ok = ok and same
        time.sleep(gap_ms / 1000.0)
    c.close()
    print(json.dumps({"ok": ok, "rtt_ms": rtts}), flush=True)


def our_bpf():
    """Our trace programs and links currently in the kernel (bpftool)."""
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True,
                                      text=True, check=True).stdout or "[]")
    ids = {p["id"] for p in progs if p.get("name") in PROG_NAMES}
    links = json.loads(subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True,
                                      text=True, check=True).stdout or "[]")
    return ids, [l for l in links if l.get("prog_id") in ids]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", choices=["server", "client"])
    ap.add_argument("--dst")
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--delay-ms", type=int, default=0)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--gap-ms", type=float, default=5)
    ap.add_argument("--sidecar", choices=["python", "haproxy"], default="python",
                    help="haproxy: a real proxy, no injected sidecar delay (that scenario is skipped)")
    args = ap.parse_args()
    if args.role == "server":
        return role_server(APP_PORT)
    if args.role == "client":
        return role_client(args.dst, args.count, args.delay_ms, args.size, args.gap_ms)

    import mcnet
    import istio_pod
    from mcnet import log
    mcnet.require_root()
    if subprocess.run(["which", "bpftool"], capture_output=True).returncode != 0:
        mcnet.skip_or_fail("bpftool not installed (needed to check that nothing stays attached)")
    rel = tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2])
    if rel < (6, 3):
        mcnet.skip_or_fail("kernel %s lacks sock:sock_send_length/sock_recv_length (Linux 6.3+)"
                           % os.uname().release)

    # sidecar.py --delay-ms for the pods listed here (IstioPod builds the argv itself).
    sidecar_delay = {}
    orig_popen = istio_pod.popen_in_netns

    def popen_with_delay(netns, argv, **kw):
        argv = list(argv)
        if str(istio_pod.PY_SIDECAR) in argv and sidecar_delay.get(netns):
            argv += ["--delay-ms", str(sidecar_delay[netns])]
        return orig_popen(netns, argv, **kw)
    istio_pod.popen_in_netns = popen_with_delay

    ck = mcnet.Checks()
    cg, node, a, b, d = mcnet.enrolled_pair("trace", "10.250.41")
    pods = {}

    def start_pod(ns, delay=0):
        if ns.name in pods:
            pods[ns.name].stop()
        sidecar_delay[ns.name] = delay
        p = istio_pod.IstioPod(ns.name, ns.pod_ip, sidecar=args.sidecar, cgroup_procs=cg.procs).start()
        mcnet._cleanups.append(p.stop)
        pods[ns.name] = p
        return p

    start_pod(a)
    start_pod(b)
    me = ["/usr/bin/python3", os.path.abspath(__file__)]
    srv = mcnet.spawn(me + ["--role", "server"], netns=b, cgroup=cg, uid=65534, gid=65534,
                      stdout=subprocess.PIPE, text=True)
    ck.check(srv.stdout.readline().strip() == "READY", "app server in pod B listening on :8080 (uid 65534)")

    def client(count, delay_ms, gap_ms=5):
        p = mcnet.spawn(me + ["--role", "client", "--dst", b.pod_ip, "--count", str(count),
                              "--delay-ms", str(delay_ms), "--gap-ms", str(gap_ms)],
                        netns=a, cgroup=cg, stdout=subprocess.PIPE, text=True)
        out, _ = p.communicate(timeout=120)
        r = json.loads(out)
        if not r["ok"]:
            raise RuntimeError("client got a wrong reply")
        return r["rtt_ms"]

    def traced(duration, fn, extra=()):
        """Runs FN while `meshcutd trace --json` is attached; returns (report, FN's value)."""
        t = subprocess.Popen([mcnet.MESHCUTD, "trace", "--duration", "%gs" % duration, "--json",
                              "--pin-root", d.pin_root, *extra],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        err = []
        while True:   # wait until attached
            line = t.stderr.readline()
            if not line:
                raise RuntimeError("trace exited before attaching: %s" % "".join(err))
            err.append(line)
            if '"msg":"tracing"' in line:
                break
        drain = threading.Thread(target=lambda: err.extend(t.stderr), daemon=True)
        drain.start()
        ids, links = our_bpf()
        t_start = time.monotonic()
        v = fn()
        took = time.monotonic() - t_start
        out, _ = t.communicate(timeout=duration + 30)
        drain.join(2)
        if t.returncode != 0:
            raise RuntimeError("trace failed (%d): %s" % (t.returncode, "".join(err)))
        if took > duration - 0.5:
            raise RuntimeError("workload (%.1fs) did not fit in the trace (%gs)" % (took, duration))
        try:
            rep = json.loads(out)
        except ValueError:
            rep = None
        return rep, v, (ids, links), out

    def summary(name, rep):
        p = rep["parts"]
        log("%-8s requests %d: proxy %.3f ms  kernel %.3f ms  app %.3f ms  total %.3f ms  (p90 total %.3f)"
            % (name, rep["requests"], p["proxy"]["avg_ms"], p["kernel"]["avg_ms"], p["app"]["avg_ms"],
               p["total"]["avg_ms"], p["total"]["p90_ms"]))
        for h in rep["hops"]:
            log("         hop %-6s %-6s %-17s %-10s avg %8.3f  p50 %8.3f  p90 %8.3f"
                % (h["hop"], h["kind"], h["dir"], h["who"], h["avg_ms"], h["p50_ms"], h["p90_ms"]))

    def hop(rep, name):
        return next((h for h in rep["hops"] if h["hop"] == name), {"avg_ms": float("nan")})

    def sidecar_scenario(rep, proxy_base):
        start_pod(b, delay=SIDECAR_DELAY_MS)
        rep2, rtts2, _, _ = traced(8, lambda: client(N, APP_DELAY_MS))
        summary("sidecar", rep2)
        ck.check(rep2["requests"] == N, "sidecar delay: all %d requests followed (%d)" % (N, rep2["requests"]))
        grow = rep2["parts"]["proxy"]["avg_ms"] - proxy_base
        ck.check(within(grow, 2 * SIDECAR_DELAY_MS, TOL_SIDECAR_MS),
                 "proxy column grew by %.3f ms = %d ms request + %d ms response -1/+%.0f"
                 % (grow, SIDECAR_DELAY_MS, SIDECAR_DELAY_MS, TOL_SIDECAR_MS))
        for name in ("4->5", "5->4"):
            g = hop(rep2, name)["avg_ms"] - hop(rep, name)["avg_ms"]
            ck.check(within(g, SIDECAR_DELAY_MS, TOL_HOP_MS),
                     "inbound sidecar hop %s grew by %.3f ms (%d -1/+%.0f)" % (name, g, SIDECAR_DELAY_MS, TOL_HOP_MS))
        for name in ("2->3", "3->2"):
            g = hop(rep2, name)["avg_ms"] - hop(rep, name)["avg_ms"]
            ck.check(abs(g) <= 3.0, "outbound sidecar hop %s unchanged (%+.3f ms)" % (name, g))
        ck.check(within(rep2["parts"]["app"]["avg_ms"], APP_DELAY_MS, TOL_APP_MS),
                 "app column stays %d ms -1/+%.0f (%.3f)" % (APP_DELAY_MS, TOL_APP_MS, rep2["parts"]["app"]["avg_ms"]))
        start_pod(b, delay=0)

    N = 40
    # ---- scenario "app": 20 ms in the server app.
    c0 = d.counters()
    rep, rtts, (ids, links), raw = traced(6, lambda: client(N, APP_DELAY_MS))
    dc = mcnet.delta(c0, d.counters())
    ck.check(dc["bytes_redirect_intra"] > 0 and dc["bytes_redirect_node"] > 0,
             "traced with the socket shortcut on (%d B intra-pod, %d B pod-to-pod redirected)"
             % (dc["bytes_redirect_intra"], dc["bytes_redirect_node"]))
    ck.check(rep is not None, "trace --json output parses")
    ck.check(len(ids) == 2 and len(links) == 2,
             "while tracing: 2 programs and 2 links of ours attached (%d, %d)" % (len(ids), len(links)))
    log("hook: %s; events %d lost %d; BPF %.0f ns per hook run over %d runs; reader %.1f ms CPU"
        % (rep["kernel_side"]["hook"], rep["kernel_side"]["events"], rep["kernel_side"]["lost"],
           rep["overhead"]["bpf_ns_per_run"], rep["overhead"]["bpf_runs"], rep["overhead"]["reader_cpu_ms"]))
    summary("app", rep)
    ch = rep["chains"][0]["sockets"] if rep["chains"] else []
    for s in ch:
        log("  (%d) %-5s %-8s uid %-5d %s -> %s" % (s["n"], s["role"], s["comm"], s["uid"], s["local"], s["remote"]))
    ck.check(len(rep["chains"]) == 1 and [s["role"] for s in ch] == ["app"] + ["proxy"] * 4 + ["app"],
             "one chain of six sockets: app, 4 sidecar sockets (uid 1337), app (Table 2)")
    ck.check(rep["requests"] == N, "all %d requests followed end to end (%d, %d incomplete)"
             % (N, rep["requests"], rep["incomplete_requests"]))
    app_base = rep["parts"]["app"]["avg_ms"]
    proxy_base = rep["parts"]["proxy"]["avg_ms"]
    ck.check(within(app_base, APP_DELAY_MS, TOL_APP_MS) and
             within(rep["parts"]["app"]["p50_ms"], APP_DELAY_MS, TOL_APP_MS),
             "app column = injected %d ms -1/+%.0f (avg %.3f, p50 %.3f)"
             % (APP_DELAY_MS, TOL_APP_MS, app_base, rep["parts"]["app"]["p50_ms"]))
    ck.check(proxy_base < 3.0, "proxy column small without a sidecar delay (%.3f ms < 3)" % proxy_base)
    rtt_avg = statistics.mean(rtts)
    ck.check(abs(rep["parts"]["total"]["avg_ms"] - rtt_avg) < 1.0,
             "total (%.3f ms) = the client's measured RTT (%.3f ms) within 1 ms"
             % (rep["parts"]["total"]["avg_ms"], rtt_avg))
    sh = sum(rep["parts"][k]["share"] for k in ("proxy", "kernel", "app"))
    ck.check(abs(sh - 1) < 0.01, "the three shares add up to 100%% (%.3f)" % sh)

    deadline = time.monotonic() + 10
    while True:
        ids, links = our_bpf()
        if (not ids and not links) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    ck.check(not ids and not links, "after trace exits: no program or link of ours left (bpftool prog/link show)")

    # ---- scenario "sidecar": the inbound sidecar adds 10 ms per chunk.
    if args.sidecar == "python":
        sidecar_scenario(rep, proxy_base)
    else:
        log("sidecar delay scenario skipped: HAProxy cannot inject a delay")

    # ---- overhead: a ping-pong (no injected delay) without and with trace attached.
    M = 300
    client(20, 0, gap_ms=1)  # warm up
    rtt_off = client(M, 0, gap_ms=1)
    rep3, rtt_on, _, _ = traced(max(6, M * 0.02 + 4), lambda: client(M, 0, gap_ms=1))
    rtt_off2 = client(M, 0, gap_ms=1)
    off_med = statistics.median(rtt_off + rtt_off2)
    on_med = statistics.median(rtt_on)
    log("overhead: ping-pong RTT p50 %.3f ms untraced, %.3f ms traced (%+.3f ms, %+.1f%%); "
        "p90 %.3f vs %.3f ms; BPF %.0f ns per hook run, %d events for %d requests, %.4f%% of the CPUs"
        % (off_med, on_med, on_med - off_med, 100 * (on_med - off_med) / off_med,
           sorted(rtt_off + rtt_off2)[int(0.9 * 2 * M)], sorted(rtt_on)[int(0.9 * M)],
           rep3["overhead"]["bpf_ns_per_run"], rep3["kernel_side"]["events"], rep3["requests"],
           100 * rep3["overhead"]["bpf_cpu_share"]))
    summary("pingpong", rep3)
    ck.check(on_med - off_med < 0.5, "tracing adds < 0.5 ms to a meshed ping-pong's median RTT (%+.3f ms)"
             % (on_med - off_med))

    # ---- scenario "off": no meshcut shortcut (pods unenrolled), traced by netns.
    d.cli("unenroll", "--netns", a.path)
    d.cli("unenroll", "--netns", b.path)
    c0 = d.counters()
    rep4, _, _, _ = traced(6, lambda: client(N, APP_DELAY_MS), extra=("--netns", a.path, "--netns", b.path))
    dc = mcnet.delta(c0, d.counters())
    ck.check(dc["bytes_redirect_intra"] == 0 and dc["bytes_redirect_node"] == 0,
             "pods unenrolled: nothing redirected during this trace")
    summary("off", rep4)
    ck.check(rep4["requests"] == N and within(rep4["parts"]["app"]["avg_ms"], APP_DELAY_MS, TOL_APP_MS),
             "without the shortcut (--netns, pods unenrolled): %d requests, app %.3f ms"
             % (rep4["requests"], rep4["parts"]["app"]["avg_ms"]))
    log("kernel column: %.3f ms with the socket shortcut, %.3f ms without"
        % (rep["parts"]["kernel"]["avg_ms"], rep4["parts"]["kernel"]["avg_ms"]))

    # ---- errors say what to do.
    r = d.cli("trace", "--pod", "nope/nothing", "--duration", "1s", check=False)
    ck.check(r.returncode != 0 and "meshcutd pods" in r.stderr,
             "--pod of an unknown pod fails with a hint (%s)" % r.stderr.strip().splitlines()[-1:])
    ck.done()


if __name__ == "__main__":
    sys.exit(main())
