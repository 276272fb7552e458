#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Self-check of test/netns/istio_pod.py: two Istio-like pods on one bridge.

Topology (every interface lives in a namespace created here; the root netns
is never touched):

    netns mci-<id>-node:  br0 ── va ──┐         ┌── vb
    netns mci-<id>-a:  eth0 10.77.0.2/24  (veth peer of va)   client pod
    netns mci-<id>-b:  eth0 10.77.0.3/24  (veth peer of vb)   server pod

Both pods get istio-init's nat rules and a uid-1337 sidecar (HAProxy and/or
e2e/istio/sidecar.py). An app server (uid 65534) listens on B:8080; an app
client (root) in A connects to 10.77.0.3:8080. We check that:
  * the server sees the connection coming from 127.0.0.6 (inbound passthrough),
  * the six sockets of Table 2 exist with the expected tuples and owners,
    found through `ss -tnpe` in each netns, and pair as (1)<->(2), (3)<->(4),
    (5)<->(6),
  * bytes flow both ways (a 4 MiB payload, echoed back) and a half-close
    crosses both sidecars: the server answers only after it read EOF, and the
    client then reads to EOF,
  * sidecars and apps are in their pod's cgroup v2 (if a cgroup2 mount exists),
  * stop() removes the rules and the sidecar, and can be repeated.
Exit 0 only if every check passes. Everything is removed on exit, also on
failure and Ctrl-C/SIGTERM.

Usage: istio_pod_selftest.py [--sidecar haproxy|python|both] [--size BYTES] [--keep-going]
"""
import argparse
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import mctest  # noqa: E402

sys.dont_write_bytecode = True   # keep __pycache__ out of the repo tree
HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"
A_IP, B_IP, APP_PORT = "10.77.0.2", "10.77.0.3", 8080
APP_UID = 65534   # the server app runs as nobody: any uid but 1337 is captured


# --------------------------------------------------------------------------
# App roles (this file re-executed inside a pod).
# --------------------------------------------------------------------------

def recv_line(s):
    buf = b""
    while not buf.endswith(b"\n"):
        c = s.recv(1)
        if not c:
            break
        buf += c
    return buf.decode().strip()


def role_server(port):
    """Per connection: 'PING' -> 'PONG <peer>'; then read to EOF and answer
    'DONE <n> <sha256>' + the bytes back, then close. Answering only after EOF
    is what proves that a half-close travels through both sidecars."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(64)

    def serve(c, peer):
        with c:
            c.settimeout(30)
            if recv_line(c) != "PING":
                return
            c.sendall(("PONG %s:%d\n" % peer).encode())
            chunks = []
            while True:
                d = c.recv(1 << 16)
                if not d:
                    break
                chunks.append(d)
            data = b"".join(chunks)
            c.sendall(("DONE %d %s\n" % (len(data), hashlib.sha256(data).hexdigest())).encode())
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            try:   # wait for the client's close, so we don't RST it
                c.recv(1)
            except OSError:
                pass

    while True:
        c, peer = ls.accept()
        threading.Thread(target=serve, args=(c, peer), daemon=True).start()


def role_client(target, size):
    """Connect, PING/PONG, report local address, wait for GO on stdin (the
    parent looks at ss meanwhile), send `size` bytes, half-close, read to EOF."""
    host, port = target.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.settimeout(30)
    s.sendall(b"PING\n")
    pong = recv_line(s)
    print(json.dumps({"local": list(s.getsockname()), "peer": list(s.getpeername()),
                      "pong": pong}), flush=True)
    if sys.stdin.readline().strip() != "GO":
        return 1
    payload = os.urandom(size)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    chunks = []
    while True:
        d = s.recv(1 << 16)
        if not d:
            break
        chunks.append(d)
    s.close()
    resp = b"".join(chunks)
    head, _, body = resp.partition(b"\n")
    ok = (head.decode() == "DONE %d %s" % (size, hashlib.sha256(payload).hexdigest())
          and body == payload)
    print(json.dumps({"ok": ok, "sent": size, "received": len(body), "head": head.decode()}),
          flush=True)
    return 0 if ok else 1


# --------------------------------------------------------------------------
# The check.
# --------------------------------------------------------------------------

def sh(*argv):
    subprocess.run(argv, check=True)


def cgroup2_mount():
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            if fstype == "cgroup2":
                return mnt
    return None


def proc_cgroup2(pid):
    try:
        with open("/proc/%d/cgroup" % pid) as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


def build_topology(ns_node, ns_a, ns_b, cleanup):
    for ns in (ns_node, ns_a, ns_b):
        # cleanup registered before the add: an interrupt in between leaks nothing
        cleanup.append(lambda ns=ns: subprocess.run(["ip", "netns", "del", ns], check=False,
                                                    stderr=subprocess.DEVNULL))
        sh("ip", "netns", "add", ns)
    sh("ip", "-n", ns_node, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", ns_node, "link", "set", "br0", "up")
    for ns, host_if, ip in ((ns_a, "va", A_IP), (ns_b, "vb", B_IP)):
        # veth created in the node netns, its peer moved straight into the pod
        sh("ip", "-n", ns_node, "link", "add", host_if, "type", "veth",
           "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", ns_node, "link", "set", host_if, "master", "br0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")   # 127.0.0.1/127.0.0.6 hops need lo
        sh("ip", "-n", ns, "addr", "add", ip + "/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")


def make_cgroups(suffix, cleanup):
    mnt = cgroup2_mount()
    if not mnt:
        return None, None, None
    root = os.path.join(mnt, "mci-" + suffix)
    paths = [os.path.join(root, leaf) for leaf in ("a", "b")]

    def rm():
        for d in paths:
            # A process the test lost track of (e.g. a signal arrived between
            # fork and Popen returning) would keep the cgroup busy: kill
            # whatever is still in our own cgroups (cgroup.kill, 5.14+).
            try:
                with open(os.path.join(d, "cgroup.kill"), "w") as f:
                    f.write("1")
            except OSError:
                pass
        for d in paths + [root]:
            for _ in range(100):   # killed processes leave the cgroup asynchronously
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
    cleanup.append(rm)   # registered first: an interrupt below leaks nothing
    os.mkdir(root)
    for d in paths:
        os.mkdir(d)
    rel = lambda p: "/" + os.path.relpath(p, mnt)
    return (os.path.join(paths[0], "cgroup.procs"), os.path.join(paths[1], "cgroup.procs"),
            (rel(paths[0]), rel(paths[1])))


def run_case(ipod, kind, ns_a, ns_b, cg_a, cg_b, cg_rel, size, check):
    print("\n=== sidecar: %s ===" % kind, flush=True)
    pa = ipod.IstioPod(ns_a, A_IP, sidecar=kind, cgroup_procs=cg_a)
    pb = ipod.IstioPod(ns_b, B_IP, sidecar=kind, cgroup_procs=cg_b)
    try:
        with pa, pb:
            nat = pa.run(["iptables-save", "-t", "nat"]).stdout
            check(all(r in nat for r in (
                "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
                "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
                "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
                "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006")),
                "istio-init rules present in pod A")

            srv = pb.exec([PYTHON, __file__, "--role", "server", "--port", str(APP_PORT)],
                          uid=APP_UID, gid=APP_UID, stdin=subprocess.DEVNULL)
            ipod.wait_listening(srv.pid, APP_PORT, proc=srv)
            cli = pa.exec([PYTHON, __file__, "--role", "client",
                           "--connect", "%s:%d" % (B_IP, APP_PORT), "--size", str(size)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            line = cli.stdout.readline()
            if not check(bool(line), "client connected and got PONG"):
                return
            first = json.loads(line)
            client_addr = tuple(first["local"])
            pong_peer = ipod.parse_addr(first["pong"].split()[1])
            check(pong_peer[0] == "127.0.0.6",
                  "app B sees the connection from 127.0.0.6 (got %s)" % ipod.fmt_addr(pong_peer))
            check(first["peer"] == [B_IP, APP_PORT],
                  "app A's socket believes it talks to %s:%d" % (B_IP, APP_PORT))

            try:
                t = ipod.table2(pa, pb, client_addr)
            except (LookupError, TimeoutError) as e:
                check(False, "Table 2 sockets found: %s" % e)
                t = None
            if t:
                sa, sb = pa.sidecar_pid, pb.sidecar_pid
                c = check
                c(t.s1.local == client_addr and t.s1.peer == (B_IP, APP_PORT)
                  and cli.pid in t.s1.pids and t.s1.uid == 0,
                  "(1) app(A) %s:rdp1 -> %s:%d, owned by the client (uid 0)" % (A_IP, B_IP, APP_PORT))
                c(t.s2.local == ("127.0.0.1", 15001) and t.s2.peer == client_addr
                  and sa in t.s2.pids and t.s2.uid == 1337,
                  "(2) sidecar(A) 127.0.0.1:15001 <- %s:rdp1, uid 1337" % A_IP)
                c(t.s3.local[0] == A_IP and t.s3.peer == (B_IP, APP_PORT)
                  and sa in t.s3.pids and t.s3.uid == 1337,
                  "(3) sidecar(A) %s:rdp2 -> %s:%d, uid 1337" % (A_IP, B_IP, APP_PORT))
                c(t.s4.local == (B_IP, 15006) and t.s4.peer == t.s3.local
                  and sb in t.s4.pids and t.s4.uid == 1337,
                  "(4) sidecar(B) %s:15006 <- %s:rdp2, uid 1337" % (B_IP, A_IP))
                c(t.s5.local[0] == "127.0.0.6" and t.s5.peer == (B_IP, APP_PORT)
                  and sb in t.s5.pids and t.s5.uid == 1337,
                  "(5) sidecar(B) 127.0.0.6:rdp3 -> %s:%d, uid 1337" % (B_IP, APP_PORT))
                c(t.s6.local == (B_IP, APP_PORT) and t.s6.peer == t.s5.local
                  and srv.pid in t.s6.pids and t.s6.uid == APP_UID,
                  "(6) app(B) %s:%d <- 127.0.0.6:rdp3, uid %d" % (B_IP, APP_PORT, APP_UID))
                c(t.s6.peer == pong_peer, "(5)/(6) rdp3 is the port app B reported")
                # The key facts meshcut's pairing relies on (DESIGN.md, Data paths):
                c(t.s1.local == t.s2.peer and t.s1.peer != t.s2.local,
                  "pair 1<->2 shares client_ip:rdp1 but is NOT a mirror image")
                c(t.s3.local == t.s4.peer and t.s3.peer != t.s4.local,
                  "pair 3<->4 shares client_ip:rdp2 but is NOT a mirror image")
                c(t.s5.local == t.s6.peer and t.s5.peer == t.s6.local,
                  "pair 5<->6 is the only mirror-image pair")
                print("  Table 2 socket pairs (%s):" % kind)
                for i, (x, y) in enumerate(t.pairs()):
                    print("    (%d) %s\n    (%d) %s" % (2 * i + 1, x, 2 * i + 2, y))

            if cg_rel:
                for pid, want, who in ((pa.sidecar_pid, cg_rel[0], "sidecar A"),
                                       (pb.sidecar_pid, cg_rel[1], "sidecar B"),
                                       (cli.pid, cg_rel[0], "client app A"),
                                       (srv.pid, cg_rel[1], "server app B")):
                    got = proc_cgroup2(pid)
                    check(got == want, "%s (pid %d) in cgroup2 %s (got %s)" % (who, pid, want, got))

            cli.stdin.write("GO\n")
            cli.stdin.flush()
            line = cli.stdout.readline()
            res = json.loads(line) if line else {}
            try:
                rc = cli.wait(60)
            except subprocess.TimeoutExpired:
                rc = None
            check(res.get("ok") is True and rc == 0,
                  "%d bytes A->B, half-close, %d bytes B->A echoed intact, EOF seen (%s)"
                  % (size, res.get("received", -1), res.get("head", "no answer")))
            check(pa.sidecar.poll() is None and pb.sidecar.poll() is None,
                  "both sidecars still running")
    except Exception as e:
        check(False, "%s case ran without error: %r" % (kind, e))
        for p in (pa, pb):
            err = p.sidecar_stderr()
            if err:
                print("  sidecar stderr (%s):\n%s" % (p.netns, err))
    finally:
        pa.stop()
        pb.stop()
    # after stop(): nothing left, and stop() again is harmless
    pa.stop()
    pb.stop()
    nat = ipod.run_in_netns(ns_a, ["iptables-save", "-t", "nat"]).stdout
    check("ISTIO" not in nat, "stop() removed the ISTIO_* rules")
    check(pa.sidecar is not None and pa.sidecar.poll() is not None
          and pb.sidecar is not None and pb.sidecar.poll() is not None,
          "stop() ended both sidecars; a second stop() was a no-op")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", choices=("server", "client"))
    ap.add_argument("--port", type=int, default=APP_PORT)
    ap.add_argument("--connect")
    ap.add_argument("--size", type=int, default=4 << 20)
    ap.add_argument("--sidecar", choices=("haproxy", "python", "both"), default="both")
    args = ap.parse_args()
    if args.role == "server":
        return role_server(args.port)
    if args.role == "client":
        return role_client(args.connect, args.size)

    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    sys.path.insert(0, HERE)
    import istio_pod as ipod

    # SIGTERM/SIGHUP -> exception, so the finally below cleans up as on
    # Ctrl-C. SIGINT is set explicitly too: a shell's background job inherits
    # it ignored, and Python then installs no handler of its own.
    def on_term(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_term)

    suffix = secrets.token_hex(3)
    ns_node, ns_a, ns_b = ("mci-%s-%s" % (suffix, x) for x in ("node", "a", "b"))
    cleanup = []
    check = mctest.Checks(out=lambda m: print("  " + m, flush=True))
    try:
        build_topology(ns_node, ns_a, ns_b, cleanup)
        cg_a, cg_b, cg_rel = make_cgroups(suffix, cleanup)
        print("netns: %s %s %s; cgroup2: %s" % (ns_node, ns_a, ns_b,
                                                 cg_rel if cg_rel else "none (not placed)"))
        kinds = ("haproxy", "python") if args.sidecar == "both" else (args.sidecar,)
        for kind in kinds:
            run_case(ipod, kind, ns_a, ns_b, cg_a, cg_b, cg_rel, args.size, check)
    except KeyboardInterrupt:
        check(False, "interrupted")
    except Exception as e:
        check(False, "setup: %r" % e)
    finally:
        for fn in reversed(cleanup):
            try:
                fn()
            except Exception as e:
                print("cleanup: %r" % e, file=sys.stderr)
    left = [n for n in (ns_node, ns_a, ns_b) if os.path.exists("/var/run/netns/" + n)]
    check(not left, "cleanup removed the namespaces")
    print("\n%d checks, %d failed" % (check.passed + check.failed, check.failed))
    for f in check.failures:
        print("  FAILED: " + f)
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
