#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""netns tier, visibility and security: meshcutd's HTTP endpoint survives its
clients. Idle connections and half-sent requests do not hold off a scrape; the
daemon's CPU stays flat while they sit there and while accept() fails (its
descriptors exhausted with prlimit); an IPv6 bind address works; a taken port
and a malformed address fail at start with the reason; stop is clean with a
keep-alive connection open. /readyz follows the attachments themselves, not the
daemon's pid: the daemon runs on, /readyz says 503 once sk_msg leaves the
sockhash and once the sockops link leaves its cgroup (both removed behind the
daemon's back, on this test's own pins only).

All traffic is on the loopback of a namespace made here; the daemon attaches to
a child cgroup made here.
"""
import http.client
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcnet  # noqa: E402

IDLE = 20     # connections that never send a byte
STALLED = 3   # connections that send half a request, then nothing
SCRAPE_S = 1.0  # a scrape must answer within this while they sit there
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(ns, host="127.0.0.1", family=socket.AF_INET):
    def mk():
        s = socket.socket(family)
        s.bind((host, 0))
        p = s.getsockname()[1]
        s.close()
        return p
    return mcnet.in_netns(ns, mk)


def get(ns, url, timeout=5):
    """(status or None, body or error text, seconds) of a GET from inside NS."""
    def fetch():
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode(), time.monotonic() - t0
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), time.monotonic() - t0
        except OSError as e:  # timeout, refused, reset
            return None, "%s: %s" % (type(e).__name__, e), time.monotonic() - t0
    return mcnet.in_netns(ns, fetch)


def cpu_s(pid):
    """User + system CPU seconds of PID, all its threads."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_over(pid, seconds):
    c0 = cpu_s(pid)
    time.sleep(seconds)
    return cpu_s(pid) - c0


def daemon_fds(pid):
    return {int(x) for x in os.listdir("/proc/%d/fd" % pid)}


def open_clients(ns, port, n, send=b""):
    """N TCP connections to 127.0.0.1:PORT in NS, each having sent SEND."""
    def mk():
        out = []
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            if send:
                c.sendall(send)
            out.append(c)
        return out
    socks = mcnet.in_netns(ns, mk)
    mcnet._cleanups.append(lambda: [s.close() for s in socks])
    return socks


def close_all(socks):
    for s in socks:
        s.close()


def bpftool_json(*args):
    r = mcnet.sh("bpftool", "-j", *args)
    return json.loads(r.stdout)


def main():
    mcnet.require_root()
    ck = mcnet.Checks()
    cg = mcnet.Cgroup("mrob")
    node = mcnet.Netns("node")
    if "::1" not in node.ip("-6", "addr", "show", "dev", "lo").stdout:
        mcnet.skip_or_fail("no ::1 on the loopback of a new netns (IPv6 disabled on this host?)")
    port = free_port(node)
    base = "http://127.0.0.1:%d" % port
    d = mcnet.Daemon(cg, "mrob", netns=node, extra=["--metrics-addr", "127.0.0.1:%d" % port])
    d.start()
    pid = d.proc.pid
    fds_at_start = daemon_fds(pid)

    st, body, _ = get(node, base + "/healthz")
    ck.check(st == 200 and body == "ok\n", "/healthz answers 200 ok")
    st, body, _ = get(node, base + "/readyz")
    ck.check(st == 200 and body == "ready\n", "/readyz is 200 with everything attached (%r)" % body)
    st, body, _ = get(node, base + "/nope")
    ck.check(st == 404 and "try /metrics" in body, "an unknown path is 404 and names the endpoints (%r)" % body)

    # Clients that hold connections: idle ones and half-sent requests.
    t_open = time.monotonic()
    idle = open_clients(node, port, IDLE)
    stalled = open_clients(node, port, STALLED, send=b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    time.sleep(0.3)
    scrapes = [get(node, base + "/metrics") for _ in range(3)]
    worst = max(s[2] for s in scrapes)
    ck.check(all(s[0] == 200 and "\nmeshcut_up 1\n" in "\n" + s[1] for s in scrapes) and worst < SCRAPE_S,
             "with %d idle and %d half-sent connections open, 3 scrapes answer, the slowest in %.2f s (< %.1f s): %s"
             % (IDLE, STALLED, worst, SCRAPE_S, [(s[0], round(s[2], 2)) for s in scrapes if s[0] != 200][:1]))
    st, body, took = get(node, base + "/healthz")
    ck.check(st == 200 and took < SCRAPE_S, "/healthz answers too (%.2f s)" % took)
    used = cpu_over(pid, 3)
    ck.check(used < 0.3, "the daemon's CPU stays flat while they sit there (%.2f s in 3 s)" % used)
    # Still so once the half-sent ones timed out and well past a few seconds
    # of keep-alive and accept deferral.
    time.sleep(max(0, t_open + 9 - time.monotonic()))
    st, body, took = get(node, base + "/metrics")
    ck.check(st == 200 and took < SCRAPE_S, "%.0f s later, the idle connections still open, a scrape answers in %.2f s"
             % (time.monotonic() - t_open, took))
    close_all(idle + stalled)

    # An accept error: no descriptor left for a new connection (EMFILE). Once
    # the connections above are gone, the lowest free descriptor number becomes
    # the limit, so none can be opened.
    deadline = time.time() + 15
    while daemon_fds(pid) != fds_at_start and time.time() < deadline:
        time.sleep(0.1)
    fds = daemon_fds(pid)
    lim = next(n for n in range(len(fds) + 1) if n not in fds)
    old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    mcnet._cleanups.append(lambda: os.path.exists("/proc/%d" % pid) and resource.prlimit(pid, resource.RLIMIT_NOFILE, old))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (lim, old[1]))
    waiting = open_clients(node, port, 4, send=b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    used = cpu_over(pid, 2)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
    ck.check(used < 0.5, "accept() failing with EMFILE does not spin a CPU (%.2f s in 2 s, descriptors limited to %d)"
             % (used, lim))
    st, body, took = get(node, base + "/metrics")
    ck.check(st == 200 and "meshcut_up 1" in body and took < 2,
             "descriptors back: a scrape answers again (%s in %.2f s)" % (st, took))
    close_all(waiting)
    ck.check(d.proc.poll() is None, "the daemon is still running")

    # Clients that reset the connection right after asking: the answer meets a
    # closed socket (EPIPE), which must not be a SIGPIPE for the daemon.
    def rude(n):
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            c.close()
    mcnet.in_netns(node, rude, 30)
    time.sleep(0.5)
    st, body, took = get(node, base + "/healthz")
    ck.check(d.proc.poll() is None and st == 200, "30 clients that reset before their answer: the daemon runs on (%s)"
             % d.proc.returncode)

    # Readiness: the daemon (and its pid) stay, the attachments go.
    att = d.status()["attachments"]
    prog = att["sk_msg"]["prog"]["id"]
    sockhash = [m for m in bpftool_json("prog", "show", "id", str(prog)).get("map_ids", [])
                if bpftool_json("map", "show", "id", str(m)).get("type") == "sockhash"]
    ck.check(len(sockhash) == 1, "found the sockhash the daemon's sk_msg program runs on (%s)" % sockhash)
    if sockhash:
        mcnet.sh("bpftool", "prog", "detach", "id", str(prog), "msg_verdict", "id", str(sockhash[0]))
        st, body, _ = get(node, base + "/readyz")
        ck.check(st == 503 and "sk_msg" in body and d.proc.poll() is None,
                 "sk_msg detached from the sockhash: /readyz is 503 and says so, the daemon still runs (%r)" % body)
    mcnet.sh("bpftool", "link", "detach", "pinned", att["sockops"]["pin"])
    st, body, _ = get(node, base + "/readyz")
    ck.check(st == 503 and "sockops" in body and d.proc.poll() is None,
             "sockops link detached from its cgroup: /readyz is 503 and says so (%r)" % body)
    st, body, _ = get(node, base + "/healthz")
    ck.check(st == 200, "/healthz stays 200 (the process answers)")

    # Clean stop with a keep-alive connection open.
    def keepalive():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/healthz")
        r = c.getresponse()
        r.read()
        return c, r.status
    conn, kst = mcnet.in_netns(node, keepalive)
    t0 = time.monotonic()
    rc = d.stop()
    took = time.monotonic() - t0
    conn.close()
    ck.check(kst == 200 and rc == 0 and took < 5,
             "SIGTERM with a keep-alive connection open: exit 0 in %.2f s (rc %s)" % (took, rc))
    d.cli("detach", check=False)  # the next starts attach afresh

    # Start-up errors come at once, with the reason.
    busy = mcnet.in_netns(node, lambda: socket.create_server(("127.0.0.1", 0)))
    mcnet._cleanups.append(busy.close)
    for addr, want in [("127.0.0.1:%d" % busy.getsockname()[1], "Address already in use"),
                       ("[::1]", "invalid --metrics-addr"), ("::1:9464", "invalid --metrics-addr"),
                       ("127.0.0.1:99999", "invalid --metrics-addr")]:
        d.extra = ["--metrics-addr", addr]
        try:
            d.start()  # returns once attached, which is before the endpoint binds
            d.proc.wait(10)
            with open(d.logfile) as f:
                err = f.read()[-2000:]
        except RuntimeError as e:
            err = str(e)
        except subprocess.TimeoutExpired:
            err = "started and still running"
            d.stop()
        ck.check(want in err, "--metrics-addr %s fails at start: %s" % (addr, want if want in err else err[-300:]))
    busy.close()

    # IPv6: [::1]:PORT.
    port6 = free_port(node, "::1", socket.AF_INET6)
    d.extra = ["--metrics-addr", "[::1]:%d" % port6]
    try:
        d.start()
        st, body, took = get(node, "http://[::1]:%d/metrics" % port6)
    except RuntimeError as e:
        st, body, took = None, str(e)[-300:], 0
    ck.check(st == 200 and "meshcut_up 1" in body, "--metrics-addr [::1]:%d serves /metrics over IPv6 (%s %s)"
             % (port6, st, "" if st == 200 else body))
    ck.done()


if __name__ == "__main__":
    main()
