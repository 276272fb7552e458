# SPDX-License-Identifier: Apache-2.0
"""Istio-like pod kit for meshcut's netns and e2e tests (Python 3 stdlib only).

Given a network namespace that already exists (a name under /var/run/netns, or
a path) and the pod's IP, IstioPod

  * applies istio-init's nat rules in it (e2e/istio/istio-init.sh: ISTIO_INBOUND,
    ISTIO_REDIRECT -> 15001, ISTIO_IN_REDIRECT -> 15006, 127.0.0.6 passthrough,
    uid/gid 1337 exclusions),
  * starts a sidecar proxy as uid/gid 1337 inside the netns: HAProxy (default;
    a real proxy, forwards to SO_ORIGINAL_DST) or e2e/istio/sidecar.py
    (sidecar="python"),
  * runs app processes in the pod (IstioPod.exec / popen_in_netns),
  * lists the netns' TCP sockets with owners (ss) and, from the sidecars'
    per-connection log, finds the six sockets of Table 2 (table2()),
  * stops and cleans everything it started (context manager, idempotent).

Process placement. Every process is started with a preexec_fn that, in the
child, in this order:
  1. writes its own pid into `cgroup_procs` (a cgroup v2 `cgroup.procs` file),
     so the process is in meshcut's cgroup (where sockops is attached) before
     it opens any socket;
  2. setns(CLONE_NEWNET) on the netns file (mctest.setns, ctypes libc.setns: python 3.11
     has no os.setns);
  3. drops privileges (setgroups([]), setresgid, setresuid) if uid/gid given;
  4. sets PR_SET_PDEATHSIG (after the credential change, which would clear
     it), so a crashed test does not leave proxies behind.
We never use `ip netns exec` for these: it remounts /sys in a private mount
namespace, which hides the cgroup2 mount (see DESIGN.md, Kernel facts).

PR_SET_PDEATHSIG fires when the *thread* that forked the child exits: start
pods from a thread that outlives them (the main thread), or pass
pdeathsig=None.

Typical use (see test/netns/istio_pod_selftest.py):

    with IstioPod("mci-x-a", "10.77.0.2", cgroup_procs=cg_a) as a, \\
         IstioPod("mci-x-b", "10.77.0.3", cgroup_procs=cg_b) as b:
        srv = b.exec(["/usr/bin/python3", "server.py"], uid=65534, gid=65534)
        wait_listening(srv.pid, 8080)
        cli = a.exec([...client connecting to 10.77.0.3:8080...])
        ...client reports its local address (ip, port)...
        t = table2(a, b, client_addr)     # six TcpSock, see Table2
        for (x, y) in t.pairs(): print(x, "<->", y)
"""
import ctypes
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import mctest  # noqa: E402  (setns)

PR_SET_PDEATHSIG = 1
PROXY_UID = 1337
INBOUND_PASSTHROUGH_SRC = "127.0.0.6"

REPO_ROOT = Path(__file__).resolve().parents[2]
ISTIO_DIR = REPO_ROOT / "e2e" / "istio"
ISTIO_INIT = ISTIO_DIR / "istio-init.sh"
PY_SIDECAR = ISTIO_DIR / "sidecar.py"
HAPROXY = "/usr/sbin/haproxy"
PYTHON = "/usr/bin/python3"

_libc = ctypes.CDLL(None, use_errno=True)

Addr = Tuple[str, int]


def netns_path(netns: str) -> str:
    """A netns name (under /var/run/netns) or a path -> the path."""
    return netns if "/" in netns else "/var/run/netns/" + netns


def parse_addr(s: str) -> Addr:
    """'1.2.3.4:80' / '[::1]:80' / '[::ffff:1.2.3.4]:80' -> (ip, port)."""
    host, _, port = s.rpartition(":")
    host = host.strip("[]")
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, int(port) if port.isdigit() else 0


def fmt_addr(a: Addr) -> str:
    return "%s:%d" % a


# --------------------------------------------------------------------------
# Starting processes: cgroup first, then netns, then drop privileges.
# --------------------------------------------------------------------------

def make_preexec(netns: str, cgroup_procs: Optional[str] = None,
                 uid: Optional[int] = None, gid: Optional[int] = None,
                 pdeathsig: Optional[int] = signal.SIGKILL):
    """Return a preexec_fn for subprocess.Popen (see module doc for the order)."""
    path = netns_path(netns)

    def preexec():
        try:
            if cgroup_procs:
                fd = os.open(cgroup_procs, os.O_WRONLY)
                try:
                    os.write(fd, str(os.getpid()).encode())
                finally:
                    os.close(fd)
            mctest.setns(path)
            if gid is not None or uid is not None:
                g = gid if gid is not None else uid
                u = uid if uid is not None else os.getuid()
                os.setgroups([])
                os.setresgid(g, g, g)
                os.setresuid(u, u, u)
            if pdeathsig:
                _libc.prctl(PR_SET_PDEATHSIG, int(pdeathsig), 0, 0, 0)
                if os.getppid() == 1:  # parent already gone
                    os._exit(1)
        except BaseException as e:  # subprocess hides the message: print it
            os.write(2, ("preexec (netns=%s cgroup=%s uid=%s): %r\n"
                         % (path, cgroup_procs, uid, e)).encode())
            raise
    return preexec


def popen_in_netns(netns: str, argv: Sequence[str], *, cgroup_procs: Optional[str] = None,
                   uid: Optional[int] = None, gid: Optional[int] = None,
                   pdeathsig: Optional[int] = signal.SIGKILL, **popen_kw) -> subprocess.Popen:
    """Popen argv inside netns, placed in cgroup_procs first, as uid/gid if given."""
    return subprocess.Popen(list(argv), preexec_fn=make_preexec(netns, cgroup_procs, uid, gid,
                                                                 pdeathsig), **popen_kw)


def run_in_netns(netns: str, argv: Sequence[str], *, check: bool = True,
                 timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    """Run a short command inside netns and capture its output (text)."""
    p = popen_in_netns(netns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, **kw)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise
    cp = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    if check:
        cp.check_returncode()
    return cp


def _socket_inodes(pid: int) -> set:
    """Inodes of the sockets pid has open (from /proc/PID/fd)."""
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    except OSError:
        pass
    return inodes


def listening_ports(pid: int, owned: bool = False) -> set:
    """TCP ports in LISTEN in the netns of pid (reads /proc/PID/net/tcp{,6}).
    owned=True: only listeners whose socket pid itself holds (so a second
    proxy that failed to bind is not mistaken for the first one)."""
    mine = _socket_inodes(pid) if owned else None
    ports = set()
    for name in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, name)) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A" and (mine is None or int(cols[9]) in mine):
                        ports.add(int(cols[1].rsplit(":", 1)[1], 16))
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            pass
    return ports


def wait_listening(pid: int, *ports: int, timeout: float = 10.0,
                   proc: Optional[subprocess.Popen] = None, owned: bool = False) -> None:
    """Wait until all ports listen in pid's netns (raise if proc exits first).
    owned=True: the listening sockets must be pid's own."""
    deadline = time.monotonic() + timeout
    while True:
        if set(ports) <= listening_ports(pid, owned):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("pid %d exited (rc=%s) before listening on %s"
                               % (pid, proc.returncode, ports))
        if time.monotonic() > deadline:
            raise TimeoutError("pid %d: ports %s not listening after %.0fs" % (pid, ports, timeout))
        time.sleep(0.02)


# --------------------------------------------------------------------------
# Observing sockets.
# --------------------------------------------------------------------------

@dataclass
class TcpSock:
    """One line of `ss -tnpeH` in a netns."""
    state: str
    local: Addr
    peer: Addr
    pids: List[int] = field(default_factory=list)
    procs: List[str] = field(default_factory=list)
    uid: int = 0
    inode: int = 0
    netns: str = ""

    def __str__(self):
        who = ",".join("%s/%d" % x for x in zip(self.procs, self.pids)) or "?"
        return "%s -> %s [%s uid=%d %s]" % (fmt_addr(self.local), fmt_addr(self.peer),
                                            who, self.uid, self.netns)


_USERS = re.compile(r'users:\(\((.*?)\)\)')
_USER = re.compile(r'"([^"]*)",pid=(\d+)')


def tcp_sockets(netns: str, states: str = "") -> List[TcpSock]:
    """Non-listening TCP sockets of a netns with owners (ss -tnpeH [state ...])."""
    argv = ["ss", "-tnpeH"] + (["state", states] if states else [])
    out = run_in_netns(netns, argv, pdeathsig=None).stdout
    socks = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 5:
            continue
        if states:   # ss drops the State column when a state filter is given
            cols = [{"established": "ESTAB"}.get(states, states)] + cols
        s = TcpSock(cols[0], parse_addr(cols[3]), parse_addr(cols[4]), netns=netns)
        m = _USERS.search(line)
        if m:
            for name, pid in _USER.findall(m.group(1)):
                s.procs.append(name)
                s.pids.append(int(pid))
        m = re.search(r"\buid:(\d+)", line)
        s.uid = int(m.group(1)) if m else 0
        m = re.search(r"\bino:(\d+)", line)
        s.inode = int(m.group(1)) if m else 0
        socks.append(s)
    return socks


@dataclass
class Hop:
    """One proxied connection, from the sidecar's log: client -> [local] ... upstream_src -> upstream_dst."""
    direction: str   # "out" (15001) or "in" (15006)
    client: Addr
    local: Addr      # what the proxy reports as its side (HAProxy: may be the orig dst)
    upstream_src: Addr
    upstream_dst: Addr


_CONN = re.compile(r"CONN (out|in) client=(\S+) local=(\S+) upstream_src=(\S+) upstream_dst=(\S+)")


# --------------------------------------------------------------------------
# The pod.
# --------------------------------------------------------------------------

HAPROXY_CFG = """\
# Generated by test/netns/istio_pod.py: an Envoy stand-in under istio-init rules.
global
    maxconn {maxconn}
    # one line per connection on stdout, parsed by istio_pod.py to link hops
    log stdout format raw local0
    # no SO_REUSEPORT: a second proxy on 15001/15006 in the same netns must
    # fail to start instead of silently sharing the captured traffic
    noreuseport
{extra_global}
defaults
    mode tcp
    log global
    # emit the log line as soon as the upstream connection is established
    option logasap
    timeout connect 5s
    timeout client {idle}
    timeout server {idle}
{extra_defaults}
# Outbound capture (ISTIO_REDIRECT -> 15001). "server ... 0.0.0.0" without a
# port = connect to the connection's destination address and port, which
# HAProxy reads with getsockopt(SO_ORIGINAL_DST) after a REDIRECT (so does
# the `dst` fetch: service routes pick endpoints by ClusterIP, as Envoy does).
frontend outbound
    bind {bind}:{out_port}
    log-format "CONN out client=%ci:%cp local=%fi:%fp upstream_src=%bi:%bp upstream_dst=%si:%sp"
{outbound_routes}    default_backend outbound_orig_dst
backend outbound_orig_dst
    server orig 0.0.0.0
{service_backends}
# Inbound capture (ISTIO_IN_REDIRECT -> 15006): to the original destination,
# from 127.0.0.6 like Istio's inbound passthrough (ISTIO_OUTPUT lets it
# through with `-o lo -s 127.0.0.6/32 -j RETURN`).
frontend inbound
    bind {bind}:{in_port}
    log-format "CONN in client=%ci:%cp local=%fi:%fp upstream_src=%bi:%bp upstream_dst=%si:%sp"
    default_backend inbound_orig_dst
backend inbound_orig_dst
    server orig 0.0.0.0 source {in_src}
"""


class IstioPod:
    """An Istio-like pod in an existing netns: istio-init rules + a uid-1337 sidecar.

    IstioPod(netns, pod_ip, *, sidecar="haproxy"|"python", cgroup_procs=None,
             proxy_uid=1337, proxy_gid=None, iptables_backend="nft",
             istio_init_args=(), apply_rules=True, outbound_port=15001,
             inbound_port=15006, haproxy_extra_global=(), haproxy_extra_defaults=(),
             idle_timeout="1h", pdeathsig=SIGKILL, ready_timeout=10)

    start() -> self       apply rules, start the sidecar, wait for both listeners
    stop()                stop apps started by exec(), the sidecar, remove rules,
                          remove the temp dir; safe to call any number of times
    exec(argv, *, uid=None, gid=None, cgroup_procs=<pod's>, **popen_kw) -> Popen
                          an app process in the pod (killed by stop() if still alive)
    run(argv, **kw) -> CompletedProcess   a short command in the pod (output captured)
    sockets(states="") -> [TcpSock]       ss -tnpeH in the pod's netns
    hops() -> [Hop]       connections the sidecar proxied so far (its CONN log)
    wait_hop(direction, client, timeout=5) -> Hop
    sidecar_pid, sidecar (Popen), netns, netns_path, pod_ip, cgroup_procs

    One IstioPod per netns: the rules are per netns (stop() removes all
    ISTIO_* chains there) and a second sidecar cannot bind 15001/15006.
    """

    def __init__(self, netns: str, pod_ip: str, *, sidecar: str = "haproxy",
                 cgroup_procs: Optional[str] = None, proxy_uid: int = PROXY_UID,
                 proxy_gid: Optional[int] = None, iptables_backend: str = "nft",
                 istio_init_args: Sequence[str] = (), apply_rules: bool = True,
                 outbound_port: int = 15001, inbound_port: int = 15006,
                 haproxy_extra_global: Sequence[str] = (),
                 haproxy_extra_defaults: Sequence[str] = (),
                 idle_timeout: str = "1h", maxconn: int = 4096,
                 pdeathsig: Optional[int] = signal.SIGKILL, ready_timeout: float = 10.0):
        if sidecar not in ("haproxy", "python"):
            raise ValueError("sidecar must be 'haproxy' or 'python'")
        self.netns = netns
        self.netns_path = netns_path(netns)
        if not os.path.exists(self.netns_path):
            raise FileNotFoundError(self.netns_path)
        self.pod_ip = pod_ip
        self.kind = sidecar
        self.cgroup_procs = cgroup_procs
        self.proxy_uid = proxy_uid
        self.proxy_gid = proxy_uid if proxy_gid is None else proxy_gid
        self.backend = iptables_backend
        self.istio_init_args = list(istio_init_args)
        self.apply_rules = apply_rules
        self.out_port = outbound_port
        self.in_port = inbound_port
        self.hx_global = list(haproxy_extra_global)
        self.hx_defaults = list(haproxy_extra_defaults)
        self.idle = idle_timeout
        self.maxconn = maxconn
        self.pdeathsig = pdeathsig
        self.ready_timeout = ready_timeout

        self.sidecar: Optional[subprocess.Popen] = None
        self.workdir: Optional[str] = None
        self._rules_applied = False
        self._apps: List[subprocess.Popen] = []
        self._hops: List[Hop] = []
        self._log_lines: List[str] = []
        self._cv = threading.Condition()
        self._reader: Optional[threading.Thread] = None

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()
        return False

    @property
    def sidecar_pid(self) -> Optional[int]:
        return self.sidecar.pid if self.sidecar else None

    def start(self) -> "IstioPod":
        self.workdir = tempfile.mkdtemp(prefix="mci-pod-")
        # The sidecar reads its config as uid 1337 (privileges are dropped
        # before exec): make the dir traversable and the files readable.
        os.chmod(self.workdir, 0o755)
        if self.apply_rules:
            self._istio_init()
        if self.kind == "haproxy":
            cfg = os.path.join(self.workdir, "haproxy.cfg")
            with open(cfg, "w") as f:
                f.write(HAPROXY_CFG.format(
                    maxconn=self.maxconn, idle=self.idle, bind="0.0.0.0",
                    out_port=self.out_port, in_port=self.in_port,
                    in_src=INBOUND_PASSTHROUGH_SRC, outbound_routes="", service_backends="",
                    extra_global="".join("    %s\n" % l for l in self.hx_global),
                    extra_defaults="".join("    %s\n" % l for l in self.hx_defaults)))
            os.chmod(cfg, 0o644)
            # -db: foreground, no daemon; the Popen pid is HAProxy itself.
            argv = [HAPROXY, "-db", "-f", cfg]
        else:
            argv = [PYTHON, "-u", str(PY_SIDECAR), "--conn-log",
                    "--outbound-port", str(self.out_port), "--inbound-port", str(self.in_port),
                    "--inbound-source", INBOUND_PASSTHROUGH_SRC]
        self._stderr_path = os.path.join(self.workdir, "sidecar.stderr")
        with open(self._stderr_path, "wb") as errf:
            self.sidecar = popen_in_netns(
                self.netns, argv, cgroup_procs=self.cgroup_procs, uid=self.proxy_uid,
                gid=self.proxy_gid, pdeathsig=self.pdeathsig, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=errf, cwd=self.workdir)
        self._reader = threading.Thread(target=self._read_log, daemon=True,
                                        name="sidecar-log-%s" % self.netns)
        self._reader.start()
        try:
            wait_listening(self.sidecar.pid, self.out_port, self.in_port,
                           timeout=self.ready_timeout, proc=self.sidecar, owned=True)
        except Exception as e:
            raise RuntimeError("%s sidecar in %s did not start: %s\n%s"
                               % (self.kind, self.netns, e, self.sidecar_stderr())) from e
        return self

    def stop(self) -> None:
        """Idempotent: every step checks whether there is something left to undo."""
        for p in self._apps:
            _terminate(p)
        self._apps.clear()
        if self.sidecar is not None:
            _terminate(self.sidecar)
            if self.sidecar.stdout:
                self.sidecar.stdout.close()
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None
        if self._rules_applied:
            subprocess.run([str(ISTIO_INIT), self.netns_path, "--backend", self.backend,
                            "--clean"], check=False)
            self._rules_applied = False
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def _istio_init(self):
        argv = [str(ISTIO_INIT), self.netns_path, "--proxy-uid", str(self.proxy_uid),
                "--proxy-gid", str(self.proxy_gid), "--proxy-port", str(self.out_port),
                "--inbound-capture-port", str(self.in_port), "--backend", self.backend]
        self._rules_applied = True   # even a partial apply must be cleaned
        subprocess.run(argv + self.istio_init_args, check=True)

    def _read_log(self):
        f = self.sidecar.stdout
        try:
            for raw in f:
                line = raw.decode(errors="replace").rstrip("\n")
                m = _CONN.search(line)
                with self._cv:
                    self._log_lines.append(line)
                    if m:
                        self._hops.append(Hop(m.group(1), parse_addr(m.group(2)),
                                              parse_addr(m.group(3)), parse_addr(m.group(4)),
                                              parse_addr(m.group(5))))
                    self._cv.notify_all()
        except (ValueError, OSError):
            pass   # pipe closed by stop()

    # -- using the pod -------------------------------------------------------
    def exec(self, argv: Sequence[str], *, uid: Optional[int] = None, gid: Optional[int] = None,
             cgroup_procs: Optional[str] = "pod", **popen_kw) -> subprocess.Popen:
        """Start an app process in the pod (pod's cgroup unless cgroup_procs given/None)."""
        if uid == self.proxy_uid:
            # Not forbidden (a test may want it), but it bypasses capture.
            pass
        cg = self.cgroup_procs if cgroup_procs == "pod" else cgroup_procs
        popen_kw.setdefault("pdeathsig", self.pdeathsig)
        p = popen_in_netns(self.netns, argv, cgroup_procs=cg, uid=uid, gid=gid, **popen_kw)
        self._apps.append(p)
        return p

    def run(self, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
        """A short command in the pod's netns (no cgroup placement unless given)."""
        return run_in_netns(self.netns, argv, **kw)

    def sockets(self, states: str = "") -> List[TcpSock]:
        return tcp_sockets(self.netns, states)

    def hops(self) -> List[Hop]:
        with self._cv:
            return list(self._hops)

    def log_lines(self) -> List[str]:
        with self._cv:
            return list(self._log_lines)

    def wait_hop(self, direction: str, client: Addr, timeout: float = 5.0) -> Hop:
        """The sidecar's record of the connection accepted from `client`."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for h in self._hops:
                    if h.direction == direction and h.client == tuple(client):
                        return h
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("%s: no %s hop from %s in sidecar log (%d lines)"
                                       % (self.netns, direction, fmt_addr(client),
                                          len(self._log_lines)))
                self._cv.wait(left)

    def sidecar_stderr(self) -> str:
        try:
            with open(self._stderr_path, errors="replace") as f:
                return f.read()
        except (OSError, AttributeError):
            return ""


def _terminate(p: subprocess.Popen, grace: float = 5.0) -> None:
    if p.poll() is None:
        try:
            p.terminate()
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------
# Table 2 of the paper: the six sockets of one request through two sidecars.
# --------------------------------------------------------------------------

@dataclass
class Table2:
    """s1 app(client) podA:rdp1 -> service      s2 sidecar(A) 127.0.0.1:15001 <- podA:rdp1
       s3 sidecar(A) podA:rdp2 -> podB:port     s4 sidecar(B) podB:15006 <- podA:rdp2
       s5 sidecar(B) 127.0.0.6:rdp3 -> podB:port s6 app(server) podB:port <- 127.0.0.6:rdp3"""
    s1: TcpSock
    s2: TcpSock
    s3: TcpSock
    s4: TcpSock
    s5: TcpSock
    s6: TcpSock

    def pairs(self) -> List[Tuple[TcpSock, TcpSock]]:
        """[(1,2), (3,4), (5,6)]"""
        return [(self.s1, self.s2), (self.s3, self.s4), (self.s5, self.s6)]


def _find(socks: List[TcpSock], what: str, pred) -> TcpSock:
    hits = [s for s in socks if pred(s)]
    if len(hits) != 1:
        raise LookupError("Table 2 %s: expected 1 socket, found %d\n  %s" % (
            what, len(hits), "\n  ".join(str(s) for s in socks) or "(no sockets)"))
    return hits[0]


def table2(client_pod: IstioPod, server_pod: IstioPod, client_addr: Addr,
           timeout: float = 5.0) -> Table2:
    """Find the six sockets of the request whose app socket (1) is bound to
    client_addr in client_pod. Hops are linked by the sidecars' CONN log
    (exact even with many concurrent connections) and then every socket is
    looked up in `ss` by its full 4-tuple; LookupError if one is missing.
    Only ESTABLISHED sockets are considered: call it while the connection is
    open."""
    client_addr = tuple(client_addr)
    out_hop = client_pod.wait_hop("out", client_addr, timeout)
    in_hop = server_pod.wait_hop("in", out_hop.upstream_src, timeout)
    ca = client_pod.sockets("established")
    sb = server_pod.sockets("established")
    sp_a, sp_b = client_pod.sidecar_pid, server_pod.sidecar_pid
    s1 = _find(ca, "(1) app client", lambda s: s.local == client_addr and sp_a not in s.pids)
    s2 = _find(ca, "(2) sidecar outbound", lambda s: s.peer == client_addr
               and s.local == ("127.0.0.1", client_pod.out_port) and sp_a in s.pids)
    s3 = _find(ca, "(3) sidecar upstream", lambda s: s.local == out_hop.upstream_src
               and s.peer == out_hop.upstream_dst and sp_a in s.pids)
    s4 = _find(sb, "(4) sidecar inbound", lambda s: s.peer == s3.local
               and s.local[1] == server_pod.in_port and sp_b in s.pids)
    s5 = _find(sb, "(5) sidecar to app", lambda s: s.local == in_hop.upstream_src
               and s.peer == in_hop.upstream_dst and sp_b in s.pids)
    s6 = _find(sb, "(6) app server", lambda s: s.local == s5.peer and s.peer == s5.local
               and sp_b not in s.pids)
    return Table2(s1, s2, s3, s4, s5, s6)
