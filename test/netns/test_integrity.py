#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""netns tier, socket shortcut: no byte lost, duplicated or reordered (invariant 2).

Scenarios (one per CTest test):
  mixed   >= 1000 connections, random sizes 1 B - 1 MiB each way, checksummed,
          in one pod over loopback and between two pods on one node; among them
          the first-bytes race (client writes right after connect() to a server
          slow to accept()), half-close, RST after the exchange, RST in the
          middle, a slow reader. Counters must account for every byte sent.
  detach  long streams both ways; `meshcutd detach` in the middle.
  restart long streams both ways; meshcutd killed (-9) in the middle and
          started again: the streams keep their shortcut, new connections are
          redirected.
"""
import argparse
import os
import random
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcnet  # noqa: E402
from mctest import pct  # noqa: E402
import streams  # noqa: E402
from mcnet import log  # noqa: E402

MODES = ["normal", "halfclose", "slowaccept", "slowreader", "rst", "race"]


class Server:
    """Listener in NETNS with the behaviour of MODE; one thread per connection."""

    def __init__(self, netns, ip, mode, results):
        self.mode = mode
        self.results = results
        # backlog 1 for slowaccept: the accept queue overflows, the final ACK is
        # dropped, and the client's first bytes leave before the server socket
        # exists (the first-bytes race).
        self.sock = mcnet.in_netns(netns, self._listen, ip, 1 if mode == "slowaccept" else 512)
        self.addr = self.sock.getsockname()
        if mode == "race":
            # The first-bytes race, made certain: drop the handshake's final
            # pure ACK at the server, so the client is established (and writes
            # at once) while the server's socket does not exist yet. The
            # client's data segment then creates it. That direction must stay
            # on the normal path; the reply may take the shortcut.
            netns.run("iptables", "-I", "INPUT", "-p", "tcp", "--dport", str(self.addr[1]),
                      "--tcp-flags", "ALL", "ACK", "-m", "length", "--length", "0:64", "-j", "DROP")
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @staticmethod
    def _listen(ip, backlog=512):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, 0))
        s.listen(backlog)
        return s

    def _accept_loop(self):
        while True:
            if self.mode == "slowaccept":
                time.sleep(0.05)  # bytes arrive before the server accepts
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(60)
            if self.mode == "rst_mid":
                # Read a little, then abort: the client must see an error, not hang.
                c.recv(1024)
                streams.set_linger_rst(c)
                c.close()
                return
            slow = 0.0005 if self.mode == "slowreader" else 0.0
            chunk = 4096 if self.mode == "slowreader" else 1 << 20
            req = streams.recv_msg(c, chunk=chunk, slow=slow)
            if self.mode == "halfclose":
                streams.expect_eof(c)
            seed = int.from_bytes(req[:4].ljust(4, b"\0"), "big") ^ len(req)
            reply = streams.payload(seed, streams.rand_size(random.Random(seed)))
            c.sendall(streams.frame(reply))
            self.results.add_sent(streams.framed_len(len(reply)))
            if self.mode == "rst":
                c.settimeout(5)
                try:
                    c.recv(1)  # the client's RST: ECONNRESET or EOF, never a hang
                except ConnectionResetError:
                    pass
            c.close()
        except Exception as e:
            self.results.fail("server %s: %r" % (self.mode, e))
            c.close()


class Results:
    def __init__(self):
        self.lock = threading.Lock()
        self.errors = []
        self.durations = {}
        self.sent_bytes = 0
        self.unredirectable = 0  # bytes of directions that must take the normal path
        self.done = 0

    def fail(self, msg):
        with self.lock:
            self.errors.append(msg)

    def add_sent(self, n, normal_path=False):
        with self.lock:
            self.sent_bytes += n
            if normal_path:
                self.unredirectable += n

    def ok(self, mode, dt):
        with self.lock:
            self.durations.setdefault(mode, []).append(dt)
            self.done += 1


def client_conn(server, mode, seed, results):
    rng = random.Random(seed)
    data = streams.payload(seed, streams.rand_size(rng))
    t0 = time.monotonic()
    c = socket.create_connection(server.addr, timeout=60)
    try:
        if mode == "rst_mid":
            try:
                c.sendall(streams.frame(streams.payload(seed, 1 << 20)))
                c.settimeout(5)
                c.recv(1)
            except (ConnectionResetError, BrokenPipeError):
                pass
            results.ok(mode, time.monotonic() - t0)
            return
        c.sendall(streams.frame(data))
        results.add_sent(streams.framed_len(len(data)), normal_path=mode in ("race", "slowaccept"))
        if mode == "halfclose":
            c.shutdown(socket.SHUT_WR)
        streams.recv_msg(c)
        if mode == "rst":
            streams.set_linger_rst(c)
        else:
            streams.expect_eof(c)
        results.ok(mode, time.monotonic() - t0)
    except Exception as e:
        results.fail("client %s seed %d: %r" % (mode, seed, e))
    finally:
        c.close()


def run_batch(netns, servers, jobs, results, workers=8):
    """Runs JOBS = [(mode, seed)] on WORKERS threads that live in NETNS."""
    q = list(jobs)
    lock = threading.Lock()

    def worker():
        mcnet._setns(netns.path)
        while True:
            with lock:
                if not q:
                    return
                mode, seed = q.pop()
            client_conn(servers[mode], mode, seed, results)

    ts = [threading.Thread(target=worker) for _ in range(workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def scenario_mixed(ck, node, a, b, d, n_conns):
    rng = random.Random(42)
    c0 = d.counters()
    results = Results()
    weights = {"normal": 0.66, "halfclose": 0.10, "slowaccept": 0.06, "slowreader": 0.04, "rst": 0.10,
               "race": 0.04}
    for where, srv_ns, ip in (("loopback in pod A", a, "127.0.0.1"), ("pod A -> pod B", b, b.pod_ip)):
        servers = {m: Server(srv_ns, ip, m, results) for m in MODES}
        jobs = []
        for i in range(n_conns // 2):
            mode = rng.choices(list(weights), list(weights.values()))[0]
            jobs.append((mode, rng.randrange(1 << 30)))
        t0 = time.monotonic()
        run_batch(a, servers, jobs, results)
        log("%s: %d connections in %.1fs" % (where, len(jobs), time.monotonic() - t0))
        for s in servers.values():
            s.sock.close()
    time.sleep(0.3)  # server threads finish their close()
    c1 = d.counters()
    dc = mcnet.delta(c0, c1)
    ck.check(not results.errors, "all %d connections checksummed both ways (errors: %s)"
             % (results.done, results.errors[:5]))
    ck.check(results.done == n_conns, "every connection completed (%d of %d)" % (results.done, n_conns))
    for mode, ds in sorted(results.durations.items()):
        log("  %-10s n=%4d  p50 %.1f ms  p99 %.1f ms  max %.1f ms" % (
            mode, len(ds), 1e3 * statistics.median(ds), 1e3 * pct(ds, 99), 1e3 * max(ds)))
    # The FIN hazard (DESIGN.md): a FIN dropped behind queued redirected bytes
    # costs a 200 ms retransmission at EOF. Count transfers that end at EOF.
    eof_modes = [x for m in ("normal", "halfclose") for x in results.durations.get(m, [])]
    slow = sum(1 for x in eof_modes if x >= 0.2)
    ck.check(slow <= max(1, len(eof_modes) // 200),
             "no 200 ms FIN tail: %d of %d transfers ending at EOF took >= 200 ms" % (slow, len(eof_modes)))
    red = dc["bytes_redirect_intra"] + dc["bytes_redirect_node"]
    passed = dc["bytes_pass_no_peer"] + dc["bytes_pass_sticky"]
    # Every redirected byte is counted exactly. Bytes of a normal-path direction
    # may be undercounted: after a non-blocking send fails half-way (EAGAIN),
    # the kernel keeps the PASS verdict for the socket's next send and does not
    # run the program again (tcp_bpf_send_verdict keeps psock->eval).
    ck.check(red + passed <= results.sent_bytes and red >= results.sent_bytes - results.unredirectable
             and passed <= results.unredirectable,
             "counters: every byte sent is redirected and counted (%d B), except those of directions that "
             "raced (%d B sent, %d B counted as normal path)" % (red, results.unredirectable, passed))
    ck.check(dc["bytes_redirect_intra"] > 0 and dc["bytes_redirect_node"] > 0,
             "both shortcut kinds redirected (intra %d B, node %d B)" % (dc["bytes_redirect_intra"],
                                                                        dc["bytes_redirect_node"]))
    ck.check(red > 0.8 * results.sent_bytes, "most bytes took the shortcut (%.1f %%)" % (100.0 * red / results.sent_bytes))
    n_race = len(results.durations.get("race", []))
    ck.check(n_race > 0 and dc["msg_pass_no_peer"] >= n_race,
             "first-bytes race: %d clients wrote before the server socket existed; those directions "
             "stayed on the normal path (%d)" % (n_race, dc["msg_pass_no_peer"]))
    ck.check(dc["sock_add_failed"] == 0 and dc["msg_no_state"] == 0,
             "no insert failure, no socket without state (%d, %d)" % (dc["sock_add_failed"], dc["msg_no_state"]))
    log("counters: %s" % {k: v for k, v in dc.items() if v})
    # RST in the middle of a 1 MiB message: error or EOF for the client, no hang.
    results2 = Results()
    srv = {"rst_mid": Server(a, "127.0.0.1", "rst_mid", results2)}
    run_batch(a, srv, [("rst_mid", i) for i in range(20)], results2, workers=4)
    ck.check(not results2.errors and results2.done == 20, "RST in the middle: 20 clients got an error or EOF, none hung")
    st = d.status()
    ck.check(st["maps"]["mc_sockhash"]["entries"] == 0,
             "sockets leave the map when they close (%d left)" % st["maps"]["mc_sockhash"]["entries"])


def start_streams(a, ip, n, total, seed0):
    """N LongStreams between pod A's client and a server at IP (in the netns that owns it)."""
    out = []
    for i in range(n):
        lst = mcnet.in_netns(a, Server._listen, ip) if ip.startswith("127.") else None
        if lst is None:
            raise RuntimeError("only loopback streams here")
        c = mcnet.in_netns(a, socket.create_connection, lst.getsockname())
        s, _ = lst.accept()
        lst.close()
        out.append(streams.LongStream(c, s, seed0 + i, total).run(pause=0.002))
    return out


def wait_progress(sts, frac, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(min(s.sent.values()) >= frac * s.total for s in sts):
            return True
        time.sleep(0.02)
    return False


def conn_is_redirected(a):
    """A new loopback connection in pod A: did its data skip TCP?"""
    lst = mcnet.in_netns(a, Server._listen, "127.0.0.1")
    c = mcnet.in_netns(a, socket.create_connection, lst.getsockname())
    s, _ = lst.accept()
    c.sendall(b"x" * 100000)
    streams.recv_exact(s, 100000)
    s.sendall(b"y" * 1000)
    streams.recv_exact(c, 1000)
    w = (mcnet.tcp_wire_stats(c)["data_segs_out"], mcnet.tcp_wire_stats(s)["data_segs_out"])
    for x in (c, s, lst):
        x.close()
    return w == (0, 0), w


def scenario_detach(ck, a, d):
    sts = start_streams(a, "127.0.0.1", 6, 24 << 20, 1000)
    ck.check(wait_progress(sts, 0.3), "streams reached 30 %")
    before = d.counters()
    r = d.detach()
    ck.check(r.returncode == 0, "meshcutd detach exits 0 mid-stream")
    ok = all(s.join() for s in sts)
    ck.check(ok, "6 streams x 24 MiB each way intact across detach (%s)" % [s.err for s in sts if s.err])
    wires = [mcnet.tcp_wire_stats(s.c)["data_segs_out"] + mcnet.tcp_wire_stats(s.s)["data_segs_out"] for s in sts]
    ck.check(all(w > 0 for w in wires), "after detach the streams went on over the normal TCP path (data segments %s)" % wires)
    ck.check(before["redirect_bytes"] > 0, "the streams were redirected before detach (%d B)" % before["redirect_bytes"])
    ck.check(not os.path.exists(d.pin_root), "detach removed every pin (%s gone)" % d.pin_root)
    d.proc.wait(10)
    ck.check(d.proc.returncode == 0, "the daemon saw its pins go and exited 0")
    red, wire = conn_is_redirected(a)
    ck.check(not red, "after detach a new connection takes the normal path (data segments %s)" % (wire,))


def scenario_restart(ck, a, d):
    sts = start_streams(a, "127.0.0.1", 6, 24 << 20, 2000)
    ck.check(wait_progress(sts, 0.2), "streams reached 20 %")
    d.stop(sig=9)
    ck.check(d.proc.returncode == -9, "meshcutd killed with SIGKILL mid-stream")
    ck.check(wait_progress(sts, 0.4), "streams keep flowing while meshcutd is down")
    red, wire = conn_is_redirected(a)
    ck.check(red, "with meshcutd down, new connections are still redirected (pinned link; segments %s)" % (wire,))
    d.start()
    st = d.status()
    ck.check(st["attachments"]["sockops"]["attached"] and st["attachments"]["sk_msg"]["attached"],
             "restarted meshcutd reattached (link updated in place)")
    c0 = d.counters()
    red, wire = conn_is_redirected(a)
    ck.check(red and d.counters()["pairs_redirected"] > c0["pairs_redirected"],
             "after restart new connections are redirected (segments %s)" % (wire,))
    ok = all(s.join() for s in sts)
    ck.check(ok, "6 streams x 24 MiB each way intact across kill -9 and restart (%s)" % [s.err for s in sts if s.err])
    wires = [mcnet.tcp_wire_stats(s.c)["data_segs_out"] + mcnet.tcp_wire_stats(s.s)["data_segs_out"] for s in sts]
    ck.check(all(w == 0 for w in wires), "the streams kept their shortcut throughout (data segments on TCP: %s)" % wires)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", choices=["mixed", "detach", "restart"], required=True)
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--baseline", action="store_true", help="don't enroll the pods (compare with the plain kernel)")
    args = ap.parse_args()
    mcnet.require_root()
    ck = mcnet.Checks()
    cg = mcnet.Cgroup(args.scenario)
    cg.join()
    node = mcnet.Node("n1", subnet="10.250.%d" % (10 + ["mixed", "detach", "restart"].index(args.scenario)))
    a = node.add_pod("a", 2)
    b = node.add_pod("b", 3)
    for p in (a, b):
        # With backlog 1 the kernel would answer with SYN cookies and, now and
        # then, reset a connection (seen without meshcut too): keep the race,
        # drop the cookies.
        p.run("sysctl", "-qw", "net.ipv4.tcp_syncookies=0")
    d = mcnet.Daemon(cg, args.scenario)
    d.start()
    if not args.baseline:
        d.enroll(a, a.pod_ip)
        d.enroll(b, b.pod_ip)
    if args.scenario == "mixed":
        scenario_mixed(ck, node, a, b, d, args.conns)
    elif args.scenario == "detach":
        scenario_detach(ck, a, d)
    else:
        scenario_restart(ck, a, d)
    ck.done()


if __name__ == "__main__":
    main()
