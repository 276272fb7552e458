# SPDX-License-Identifier: Apache-2.0
"""Test harness for the root tiers (netns, e2e): throw-away network namespaces,
a child cgroup v2, a meshcutd on its own pin root, and ways to run code inside
a pod.

Everything created here has an owner that removes it (context managers, plus
an atexit/signal sweep). Names start with a per-run prefix so that nothing the
test did not create is ever touched. Traffic stays on loopback or inside the
namespaces made here.

Root tiers may skip on a developer's laptop (exit 77, CTest SKIP_RETURN_CODE),
but under CI=true a missing privilege or kernel feature is a failure.
"""
import atexit
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "test", "lib"))
import mctest  # noqa: E402  the one helper library (test/lib/mctest)
from mctest import CLONE_NEWNET, delta, pct  # noqa: E402,F401  re-exported for the tests
BUILD = os.environ.get("MESHCUT_BUILD", os.path.join(REPO, "build"))
MESHCUTD = os.environ.get("MESHCUTD", os.path.join(BUILD, "pinned-maps-daemon", "meshcutd"))
SKIP = 77
_cleanups = []
_logfiles = []  # daemon logs: kept when a check failed, removed otherwise
RUN_ID = "%x" % (os.getpid() & 0xFFFFF)


def log(*a):
    mctest.checks.log(" ".join(str(x) for x in a))


def skip_or_fail(reason):
    """A missing privilege/feature: skip on a laptop, fail under CI=true."""
    if os.environ.get("CI") == "true":
        print("FAIL (CI=true, cannot skip): " + reason, file=sys.stderr)
        sys.exit(1)
    print("SKIP: " + reason, file=sys.stderr)
    sys.exit(SKIP)


def require_root():
    if os.geteuid() != 0:
        skip_or_fail("needs root (netns, cgroup, BPF)")
    if not os.path.exists(MESHCUTD):
        print("FAIL: meshcutd not built at %s" % MESHCUTD, file=sys.stderr)
        sys.exit(1)
    if not os.path.ismount("/sys/fs/bpf"):
        subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=False)
        if not os.path.ismount("/sys/fs/bpf"):
            skip_or_fail("bpffs not mounted at /sys/fs/bpf: run mount -t bpf bpf /sys/fs/bpf")


def sh(*cmd, check=True, quiet=False):
    r = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), r.returncode, r.stderr.strip()))
    return r


def drop_logfiles(keep=False, into=None):
    """The daemons' log files: kept (and named) when KEEP, else appended to
    INTO (a file path) if given, and removed."""
    for f in _logfiles:
        if not os.path.exists(f):
            continue
        if keep:
            print("daemon log kept: %s" % f)
            continue
        if into:
            with open(f, errors="replace") as src, open(into, "a") as dst:
                dst.write("---- %s\n%s" % (f, src.read()))
        os.unlink(f)


def _sweep():
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:  # cleanup is best effort, but say what stayed
            print("cleanup: %s" % e, file=sys.stderr)


atexit.register(_sweep)
for _s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_s, lambda *_: sys.exit(130))


def cgroup2_root():
    with open("/proc/mounts") as f:
        for line in f:
            p = line.split()
            if len(p) >= 3 and p[2] == "cgroup2":
                return p[1]
    skip_or_fail("cgroup v2 not mounted (no cgroup2 in /proc/mounts)")


class Cgroup:
    """A child cgroup v2 that the test creates, joins and removes."""

    def __init__(self, name):
        self.path = os.path.join(cgroup2_root(), "mc-test-%s-%s" % (RUN_ID, name))
        os.makedirs(self.path, exist_ok=True)
        self.procs = os.path.join(self.path, "cgroup.procs")
        self._home = None
        _cleanups.append(self.remove)

    def join(self):
        """Moves this test process in, so the sockets it creates are seen by sockops."""
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    self._home = os.path.join(cgroup2_root(), line.strip()[3:].lstrip("/"))
        with open(self.procs, "w") as f:
            f.write(str(os.getpid()))

    def remove(self):
        if not os.path.isdir(self.path):
            return
        home = os.path.join(self._home or cgroup2_root(), "cgroup.procs")
        for _ in range(50):
            try:
                pids = open(self.procs).read().split()
            except FileNotFoundError:
                return
            for pid in pids:
                try:
                    if int(pid) == os.getpid():
                        open(home, "w").write(pid)
                    else:
                        os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, OSError):
                    pass
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("couldn't remove cgroup %s" % self.path)


class Netns:
    """A network namespace under /var/run/netns with loopback up."""

    def __init__(self, name):
        self.name = "mct-%s-%s" % (RUN_ID, name)
        self.path = "/var/run/netns/" + self.name
        sh("ip", "netns", "add", self.name)
        _cleanups.append(self.remove)
        self.ip("link", "set", "lo", "up")

    def ip(self, *args):
        return sh("ip", "-n", self.name, *args)

    def run(self, *cmd, check=True):
        return sh("ip", "netns", "exec", self.name, *cmd, check=check)

    def remove(self):
        if os.path.exists(self.path):
            sh("ip", "netns", "del", self.name, check=False)


_veth_n = [0]


def veth_pair(a, b, a_ip=None, b_ip=None, a_name=None, b_name=None, prefix=24):
    """veth between netns A and B (either may be a bridge-holding node)."""
    _veth_n[0] += 1
    an = a_name or "mv%s%d" % (RUN_ID[-3:], _veth_n[0])
    bn = b_name or "mw%s%d" % (RUN_ID[-3:], _veth_n[0])
    sh("ip", "link", "add", an, "netns", a.name, "type", "veth", "peer", "name", bn, "netns", b.name)
    for ns, ifn, ip in ((a, an, a_ip), (b, bn, b_ip)):
        if ip:
            ns.ip("addr", "add", "%s/%d" % (ip, prefix), "dev", ifn)
        ns.ip("link", "set", ifn, "up")
    return an, bn


class Node:
    """A 'node': a netns with a bridge; pods hang off it by veth (like the bridge CNI)."""

    def __init__(self, name, subnet="10.250.1", gw=True):
        self.ns = Netns(name)
        self.subnet = subnet
        self.ns.ip("link", "add", "br0", "type", "bridge")
        self.ns.ip("link", "set", "br0", "up")
        if gw:
            self.ns.ip("addr", "add", subnet + ".1/24", "dev", "br0")
        self.pods = []

    def add_pod(self, name, host_octet):
        pod = Netns(name)
        ip = "%s.%d" % (self.subnet, host_octet)
        _, host_if = veth_pair(pod, self.ns, a_ip=ip, a_name="eth0")
        self.ns.ip("link", "set", host_if, "master", "br0")
        pod.ip("route", "add", "default", "via", self.subnet + ".1")
        pod.pod_ip = ip
        self.pods.append(pod)
        return pod


_setns = mctest.setns


def in_netns(netns, fn, *args, **kw):
    """Runs FN in a thread that entered NETNS (setns is per thread); returns its value.
    Sockets FN creates belong to NETNS and stay usable from any thread."""
    out = {}

    def body():
        try:
            _setns(netns.path)
            out["v"] = fn(*args, **kw)
        except BaseException as e:  # re-raised in the caller
            out["e"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "e" in out:
        raise out["e"]
    return out.get("v")


def tcp_pair(netns, ip="127.0.0.1"):
    """A connected TCP pair (client, accepted server) on IP inside NETNS."""

    def mk():
        lst = socket.socket()
        lst.bind((ip, 0))
        lst.listen(1)
        c = socket.create_connection(lst.getsockname())
        s, _ = lst.accept()
        lst.close()
        return c, s

    return in_netns(netns, mk)


def spawn(cmd, netns=None, cgroup=None, uid=None, gid=None, **popen_kw):
    """Starts CMD in CGROUP first, then in NETNS (never `ip netns exec`, which
    remounts /sys and hides cgroup2), optionally as UID/GID."""

    def pre():
        if cgroup is not None:
            with open(cgroup.procs, "w") as f:
                f.write(str(os.getpid()))
        if netns is not None:
            _setns(netns.path)
        if gid is not None:
            os.setgroups([])
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)

    p = subprocess.Popen(cmd, preexec_fn=pre, **popen_kw)
    _cleanups.append(lambda: _kill(p))
    return p


def _kill(p):
    if p.poll() is None:
        p.kill()
        p.wait()


class Daemon:
    """meshcutd on its own pin root, with sockops on the test's cgroup."""

    def __init__(self, cgroup, name="d", extra=(), netns=None):
        self.pin_root = "/sys/fs/bpf/mc-test-%s-%s" % (RUN_ID, name)
        self.cgroup = cgroup
        self.netns = netns  # the node's netns (where pod host veths live); None: root
        # No HTTP endpoint unless the test asks (tests run many daemons).
        self.extra = list(extra) if "--metrics-addr" in extra else list(extra) + ["--metrics-addr", "off"]
        self.proc = None
        self.logfile = "/tmp/mc-test-%s-%s.log" % (RUN_ID, name)
        _logfiles.append(self.logfile)
        _cleanups.append(self.cleanup)

    def cli(self, *args, check=True):
        # In the node's netns like the daemon (detach finds pod veths there).
        r = subprocess.run([MESHCUTD, *args, "--pin-root", self.pin_root], capture_output=True, text=True,
                           preexec_fn=(lambda: _setns(self.netns.path)) if self.netns else None)
        if check and r.returncode != 0:
            raise RuntimeError("meshcutd %s failed (%d): %s" % (" ".join(args), r.returncode, r.stderr.strip()))
        return r

    def start(self, timeout=10):
        # In the node's netns when given (it detaches tc filters from pod
        # veths there), else in the root netns (its probe uses loopback only).
        ns = self.netns
        self.proc = subprocess.Popen([MESHCUTD, "run", "--pin-root", self.pin_root, "--cgroup",
                                     self.cgroup.path] + self.extra,
                                    stdout=subprocess.DEVNULL, stderr=open(self.logfile, "a"),
                                    preexec_fn=(lambda: _setns(ns.path)) if ns else None)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("meshcutd exited %d: %s" % (self.proc.returncode, open(self.logfile).read()[-2000:]))
            st = self.status(check=False)
            if st and st.get("enabled") and st["attachments"]["sockops"]["attached"] and \
                    st["daemon"]["pid"] == self.proc.pid:
                return st
            time.sleep(0.05)
        raise RuntimeError("meshcutd not ready after %ss: %s" % (timeout, open(self.logfile).read()[-2000:]))

    def status(self, check=True):
        r = self.cli("status", "--json", check=check)
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)

    def counters(self):
        return self.status()["counters"]

    def enroll(self, netns, *ips, extra=()):
        args = ["enroll", "--netns", netns.path]
        for ip in ips:
            args += ["--pod-ip", ip]
        return self.cli(*args, *extra)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        return self.proc.returncode if self.proc else None

    def detach(self):
        return self.cli("detach")

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if os.path.exists(self.pin_root):
            self.cli("detach", check=False)


# struct tcp_info offsets (include/uapi/linux/tcp.h)
_TI_BYTES_RECEIVED = 128
_TI_DATA_SEGS_IN = 152
_TI_DATA_SEGS_OUT = 156
_TI_BYTES_SENT = 200


def enrolled_pair(name, subnet):
    """The pair tests' node: cgroup NAME, node n1 on SUBNET with pods a (.2) and
    b (.3), a started meshcutd enrolling both. Returns (cgroup, node, a, b, daemon)."""
    cg = Cgroup(name)
    node = Node("n1", subnet=subnet)
    a = node.add_pod("a", 2)
    b = node.add_pod("b", 3)
    d = Daemon(cg, name)
    d.start()
    d.enroll(a, a.pod_ip)
    d.enroll(b, b.pod_ip)
    return cg, node, a, b, d


def nginx_conf(d, worker_connections, access, rest):
    """nginx.conf for prefix D as the tests run it (foreground, one process, pid,
    error log and temp dirs in D): the http block is ACCESS (its logging
    lines), the temp paths, then REST (settings and servers)."""
    temps = "\n".join("  %s_temp_path %s/tmp_%s;" % (t, d, t)
                      for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return """daemon off;
master_process off;
worker_processes 1;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
events { worker_connections %(wc)d; use epoll; }
http {
%(access)s
%(temps)s
%(rest)s
}
""" % {"d": d, "wc": worker_connections, "access": access, "temps": temps, "rest": rest}


def tcp_wire_stats(sock):
    """What crossed TCP itself (not the redirect): data segments and bytes."""
    ti = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return {
        "data_segs_out": struct.unpack_from("I", ti, _TI_DATA_SEGS_OUT)[0],
        "data_segs_in": struct.unpack_from("I", ti, _TI_DATA_SEGS_IN)[0],
        "bytes_received": struct.unpack_from("Q", ti, _TI_BYTES_RECEIVED)[0],
        "bytes_sent": struct.unpack_from("Q", ti, _TI_BYTES_SENT)[0] if len(ti) >= 208 else None,
    }


def no_tracing_forced():
    """True when the test runs with tracing programs forced off (MESHCUT_NO_TRACING=1)."""
    return os.environ.get("MESHCUT_NO_TRACING", "") in ("1", "true", "yes")


def check_conns_source(ck, d, seen_sources):
    """Checks that conns/pods read from the path this kernel and the switch call
    for: the conns table when forced or when the daemon's probe found BPF
    iterators refused (with the errno text in status), the iterator otherwise."""
    st = json.loads(d.cli("status", "--json").stdout)
    tracing = st["features"]["tracing"] or {}
    want = "conns_table" if no_tracing_forced() or not tracing.get("bpf_iter") else "bpf_iter"
    refused = [x for x in st.get("degraded", []) if x["feature"] == "bpf_iter"]
    ck.check(set(seen_sources) == {want} and tracing.get("conns_table") == (want == "conns_table")
             and (want == "bpf_iter" or (len(refused) == 1 and refused[0]["refused"])),
             "conns/pods read from %s (forced off: %s; probe: bpf_iter %s, refused: %s)"
             % (sorted(set(seen_sources)), no_tracing_forced(), tracing.get("bpf_iter"),
                refused[0]["refused"] if refused else "-"))


class Checks(mctest.Checks):
    """mctest's check collector; at the end it sweeps what the test created and
    keeps the daemon logs only when a check failed."""

    def finish(self):
        _sweep()
        drop_logfiles(keep=bool(self.failed))
