#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""meshcut's mesh test bed: two nodes, containerd CRI pods, Istio-like
sidecars, a Bookinfo-shaped service graph -- on one Linux machine, in
namespaces and cgroups it creates and removes (DESIGN.md "The test bed").

    wire netns: switch sw0 (the underlay) ── ext (192.168.77.100)
      │                                   │
    node n1 (netns)                     node n2 (netns)
      eth0 192.168.77.1                   eth0 192.168.77.2
      flannel.1 VXLAN 10.244.1.0/32 ═════ flannel.1 VXLAN 10.244.2.0/32
      cni0 10.244.1.1/24                  cni0 10.244.2.1/24
      containerd (CRI) + runc             containerd (CRI) + runc
      CNI: bridge, host-local, meshcut    CNI: bridge, host-local, meshcut
      meshcutd (own pin root, cgroup)     meshcutd (own pin root, cgroup)
      kube-proxy-like DNAT (KUBE-*)       kube-proxy-like DNAT (KUBE-*)
      pods: kube-dns, client,             pods: details-v1, reviews-v2,
            productpage-v1, reviews-v1,         ratings-v1, web-n2
            web-n1

Every pod is a CRI sandbox (RunPodSandbox on that node's containerd) with
containers from a local image (e2e/cri/images.py RUNTIME_IMAGE: busybox plus
the host's /usr mounted read-only, so Debian's nginx, haproxy, python3, node,
wrk and hey run in containers without a registry). A meshed pod has
istio-init's exact nat rules (e2e/istio/istio-init.sh, applied to the pod's
netns from the node, as istio-cni does) and a sidecar container: HAProxy as
uid 1337, outbound 15001 (SO_ORIGINAL_DST; a service's ClusterIP picks its
endpoints, as Envoy's EDS does, else pass-through), inbound 15006 (upstream
to the app from 127.0.0.6). Apps run as uid 65534:

    client          (n1) sleeps; wrk, hey and the checkers are exec'd into it
    productpage-v1  (n1) Python  -> details, reviews          (service names,
    details-v1      (n2) Node.js                               resolved by the
    reviews-v1/-v2  (n1, n2) Python -> ratings                 DNS pod through
    ratings-v1      (n2) nginx, static JSON                    its ClusterIP)
    web-n1, web-n2  nginx serving 1 KiB / 16 KiB files (the benchmark targets)
    kube-dns        (n1, namespace kube-system: not meshed, skipped by the
                    meshcut plugin) e2e/bookinfo/dns.py on UDP 53 behind
                    ClusterIP 10.96.0.10; pods get it in resolv.conf (CRI
                    dns_config) with the cluster search domains.

Modes (shared/BENCH.md): baseline, intra, inter, full -- `set_mode()`
switches each meshed pod's intra-pod / same-node shortcut (meshcutd set
--netns) and each node's cross-node tc shortcut (meshcutd set --cross-node).

Commands (root):
    meshbed.py up        bring the bed up, leave it running (a holder process
                         owns it; state in /run/meshcut-bed/state.json)
    meshbed.py down      tear it down; checks that nothing is left (netns,
                         containerd state, mounts, pins, cgroups, CNI cache,
                         processes) and that the root netns' iptables did not change
    meshbed.py status    pods, services, meshcutd counters
    meshbed.py mode M    baseline | intra | inter | full
    meshbed.py check     correctness pass through the graph (every response's
                         status and sha256)
    meshbed.py exec POD -- CMD...   run CMD in POD's app container

In a program: `bed = MeshBed().up()` (torn down at exit by mcnet's cleanups).
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOKINFO = os.path.join(REPO, "e2e", "bookinfo")
sys.dont_write_bytecode = True
for _d in (os.path.join(REPO, "bench"), os.path.join(REPO, "e2e", "cri"), BOOKINFO):
    sys.path.insert(0, _d)
import benchlib  # noqa: E402

BUILD = os.path.abspath(os.environ.get("MESHCUT_BUILD", os.path.join(REPO, "build")))
mcnet, twonode, istio_pod = benchlib.import_netns_helpers(BUILD, "mcnet", "twonode", "istio_pod")
import bookinfo  # noqa: E402
import images  # noqa: E402

STATE_DIR = "/run/meshcut-bed"
STATE = os.path.join(STATE_DIR, "state.json")
NAMESPACE = "default"
DNS_IP = "10.96.0.10"
SEARCH = ["%s.svc.cluster.local" % NAMESPACE, "svc.cluster.local", "cluster.local"]
APP_UID = 65534
PROXY_UID = istio_pod.PROXY_UID
WEB_FILES = {"1k": 1024, "16k": 16384}
BOOK_IDS = (0, 1, 2, 3)

MODES = ["baseline", "intra", "inter", "full"]
INTRA_ON = {"baseline": False, "intra": True, "inter": False, "full": True}
NODE_ON = {"baseline": False, "intra": False, "inter": True, "full": True}
TC_ON = {"baseline": False, "intra": False, "inter": True, "full": True}

# name, node, app, service (None: no service), namespace
PODS = [
    ("kube-dns", "n1", "dns", "kube-dns", "kube-system"),
    ("client", "n1", "client", None, NAMESPACE),
    ("productpage-v1", "n1", "productpage", "productpage", NAMESPACE),
    ("details-v1", "n2", "details", "details", NAMESPACE),
    ("reviews-v1", "n1", "reviews", "reviews", NAMESPACE),
    ("reviews-v2", "n2", "reviews", "reviews", NAMESPACE),
    ("ratings-v1", "n2", "ratings", "ratings", NAMESPACE),
    ("web-n1", "n1", "web", "web-n1", NAMESPACE),
    ("web-n2", "n2", "web", "web-n2", NAMESPACE),
]
# service -> (ClusterIP, port, proto)
SERVICES = {
    "kube-dns": (DNS_IP, 53, "udp"),
    "productpage": ("10.96.0.20", 9080, "tcp"),
    "details": ("10.96.0.21", 9080, "tcp"),
    "reviews": ("10.96.0.22", 9080, "tcp"),
    "ratings": ("10.96.0.23", 9080, "tcp"),
    "web-n1": ("10.96.0.30", 80, "tcp"),
    "web-n2": ("10.96.0.31", 80, "tcp"),
}
APP_PORT = {"dns": 53, "productpage": 9080, "details": 9080, "reviews": 9080, "ratings": 9080, "web": 80}

WEB_NGINX_CONF = """\
# Generated by e2e/meshbed.py
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr warn;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type application/octet-stream;
    types {{ }}
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server {{
        listen 80 backlog=4096;
        root {dir}/www;
        location / {{ }}
    }}
}}
"""

# Correctness pass, run in the client pod: fetch every URL N times (new
# connections of PER_CONN requests each, keep-alive inside), spread over
# SPREAD seconds; status 200 and the body's sha256 must match.
CHECKER = r"""
import hashlib, http.client, json, sys, time, urllib.parse
spread, n, per_conn = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
want = json.loads(sys.argv[4])  # url -> sha256
urls = sorted(want) * n
ok, errors, conns = 0, [], 0
gap = spread / max(1, len(urls))
t0 = time.monotonic()
i = 0
while i < len(urls):
    u = urllib.parse.urlsplit(urls[i])
    try:
        c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
        conns += 1
        j = 0
        while j < per_conn and i < len(urls) and urllib.parse.urlsplit(urls[i]).netloc == u.netloc:
            url = urls[i]
            p = urllib.parse.urlsplit(url)
            c.request("GET", p.path + ("?" + p.query if p.query else ""))
            r = c.getresponse()
            body = r.read()
            d = hashlib.sha256(body).hexdigest()
            if r.status != 200 or d != want[url]:
                errors.append("%s: status %d, %d bytes, sha256 %s (want %s) %r" % (
                    url, r.status, len(body), d[:16], want[url][:16], body[:120]))
            else:
                ok += 1
            i += 1
            j += 1
            dl = t0 + i * gap - time.monotonic()
            if dl > 0:
                time.sleep(dl)
        c.close()
    except Exception as e:
        errors.append("request %d (%s): %r" % (i, urls[i] if i < len(urls) else "?", e))
        i += 1
print(json.dumps({"ok": ok, "errors": errors[:20], "n_errors": len(errors), "conns": conns}), flush=True)
"""


def log(msg):
    print("[%s] meshbed: %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


class BedError(RuntimeError):
    pass


class BedPod:
    """A pod of the bed: the CRI sandbox (twonode.CriPod: .ip, .ns.path,
    .host_veth, .node) plus its role and containers."""

    def __init__(self, name, node, app, service, namespace, pod=None):
        self.name, self.app, self.service, self.namespace = name, app, service, namespace
        self.node = node
        self.meshed = app != "dns"
        self.pod = pod
        self.ip = pod.ip if pod else None
        self.ns = pod.ns if pod else None
        self.host_veth = pod.host_veth if pod else None
        self.sid = pod.sid if pod else None
        self.containers = {}  # name -> container id
        self.dir = None

    def to_json(self):
        return {"name": self.name, "node": self.node.name, "app": self.app, "service": self.service,
                "namespace": self.namespace, "ip": self.ip, "netns": self.ns.path, "host_veth": self.host_veth,
                "sid": self.sid, "containers": self.containers, "meshed": self.meshed}


def web_bodies():
    """The web pods' files: deterministic bytes (the checker knows their digests)."""
    out = {}
    for name, size in WEB_FILES.items():
        seed = hashlib.sha256(b"meshcut web " + name.encode()).digest()
        data = bytearray()
        while len(data) < size:
            seed = hashlib.sha256(seed).digest()
            data += seed
        out["/%s.bin" % name] = bytes(data[:size])
    return out


def expected_digests():
    """URL (by service name, as the apps see it) -> sha256 of the right body."""
    want = {}
    for i in BOOK_IDS:
        want["http://productpage:9080/productpage?id=%d" % i] = hashlib.sha256(
            bookinfo.expected_productpage(i)).hexdigest()
    for svc in ("web-n1", "web-n2"):
        for path, body in web_bodies().items():
            want["http://%s:80%s" % (svc, path)] = hashlib.sha256(body).hexdigest()
    return want


class MeshBed:
    def __init__(self, cpu=None, sidecar_threads=1):
        """CPU: pin every pod process (sidecars, apps; execs via taskset) to it."""
        self.cpu = cpu
        self.sidecar_threads = sidecar_threads
        self.cl = None
        self.nodes = {}
        self.pods = {}
        self.dir = None
        self.mode = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)

    # ---- bring-up ----------------------------------------------------------------
    def up(self):
        t0 = time.monotonic()
        for tool in ("containerd", "runc", "ctr", "/usr/sbin/haproxy", "/usr/sbin/nginx", "/usr/bin/node",
                     "/bin/busybox"):
            if not shutil.which(tool):
                raise BedError("%s not found: run .ci/deps.sh (apt-get install containerd runc busybox-static "
                               "haproxy nginx-light nodejs ...)" % tool)
        self.dir = tempfile.mkdtemp(prefix="mcbed-")
        os.chmod(self.dir, 0o755)
        mcnet._cleanups.append(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        extra = ["--pod-cidr", twonode.CLUSTER_CIDR, "--overlay-dev", twonode.VXLAN_DEV, "--cross-node", "on"]
        self.cl = twonode.Cluster(None, runtime="cri", daemon_extra=extra).up()
        self.nodes = self.cl.nodes
        for n in self.nodes.values():
            att = n.daemon.status()["attachments"]
            if not (att.get("tc_overlay") or {}).get("attached"):
                raise BedError("%s: meshcutd did not attach tc_overlay to %s: %s" % (n.name, twonode.VXLAN_DEV, att))
        # Sandboxes first: services and sidecar routes need every pod's IP.
        for name, node, app, svc, ns in PODS:
            # the apps run as uid 65534: a "safe" sysctl lets nginx listen on 80 (as in Kubernetes)
            p = self.cl.add_pod(node, name, namespace=ns, dns_servers=[DNS_IP], dns_searches=SEARCH,
                                labels={"app": app, "version": name.rsplit("-", 1)[-1]},
                                sysctls={"net.ipv4.ip_unprivileged_port_start": "0"})
            self.pods[name] = BedPod(name, self.nodes[node], app, svc, ns, p)
        self.services = []
        for svc, (ip, port, proto) in SERVICES.items():
            eps = [(p.ip, APP_PORT[p.app]) for p in self.pods.values() if p.service == svc]
            self.services.append(twonode.Service(svc, ip, port, eps, proto=proto,
                                                 namespace="kube-system" if svc == "kube-dns" else NAMESPACE))
        self.cl.set_services(self.services)
        with open(os.path.join(self.dir, "dns.json"), "w") as f:
            json.dump({"%s.%s.svc.cluster.local" % (s.name, s.namespace): s.cluster_ip for s in self.services}, f)
        os.chmod(os.path.join(self.dir, "dns.json"), 0o644)
        with open(os.path.join(self.dir, "checker.py"), "w") as f:
            f.write(CHECKER)
        os.chmod(os.path.join(self.dir, "checker.py"), 0o644)
        for p in self.pods.values():
            self._start_pod(p)
        for p in self.pods.values():
            if p.meshed:
                r = benchlib.pod_record(p)
                if not (r["intra_pod"] and r["same_node"] and r["cross_node"] and r["host_ifindex"]):
                    raise BedError("%s: not enrolled by the meshcut CNI plugin with every shortcut: %s" % (p.name, r))
            else:
                try:
                    benchlib.pod_record(p)
                    raise BedError("%s (namespace %s) was enrolled: the plugin should skip kube-system"
                                   % (p.name, p.namespace))
                except benchlib.BenchError:
                    pass
        self.mode = "full"
        log("bed up in %.1f s: %s" % (time.monotonic() - t0, ", ".join(
            "%s %s/%s" % (p.name, p.node.name, p.ip) for p in self.pods.values())))
        return self

    def _mounts(self):
        return [("/usr", "/usr", True), (self.dir, "/bed", False), (BOOKINFO, "/bookinfo", True)]

    def _container(self, p, cname, argv, uid):
        cid = p.node.cri.run_container(p.pod.cri_pod, cname, argv, image=images.RUNTIME_IMAGE,
                                       mounts=self._mounts(), run_as_user=uid, run_as_group=uid)
        p.containers[cname] = cid
        return cid

    def _app_argv(self, p, d):
        """The app container's command; D: the pod's dir (as /bed/pods/<name> inside)."""
        inner = "/bed/pods/" + p.name
        if p.app == "client":
            return ["/bin/busybox", "sleep", "2147483647"]
        if p.app == "dns":
            return ["/usr/bin/python3", "/bookinfo/dns.py", "--addr", "0.0.0.0", "--port", "53",
                    "--records", "/bed/dns.json"]
        if p.app == "productpage":
            return ["/usr/bin/python3", "/bookinfo/productpage.py", "--port", "9080"]
        if p.app == "reviews":
            return ["/usr/bin/python3", "/bookinfo/reviews.py", "--port", "9080", "--version",
                    p.name.rsplit("-", 1)[-1]]
        if p.app == "details":
            return ["/usr/bin/node", "/bookinfo/details.js", "--port", "9080"]
        if p.app == "ratings":
            bookinfo.write_ratings_root(d)
            with open(os.path.join(d, "nginx.conf"), "w") as f:
                f.write(bookinfo.nginx_conf(inner, 9080))
            return ["/usr/sbin/nginx", "-c", inner + "/nginx.conf", "-p", inner + "/", "-e", "stderr"]
        if p.app == "web":
            os.makedirs(os.path.join(d, "www"))
            for path, body in web_bodies().items():
                with open(os.path.join(d, "www", path[1:]), "wb") as f:
                    f.write(body)
            with open(os.path.join(d, "nginx.conf"), "w") as f:
                f.write(WEB_NGINX_CONF.format(dir=inner))
            return ["/usr/sbin/nginx", "-c", inner + "/nginx.conf", "-p", inner + "/", "-e", "stderr"]
        raise BedError("unknown app " + p.app)

    def _sidecar_cfg(self, p):
        routes, backends = "", ""
        for s in self.services:
            if s.proto != "tcp" or not s.endpoints:
                continue
            b = "svc_" + s.name.replace("-", "_")
            routes += "    use_backend %s if { dst %s } { dst_port %d }\n" % (b, s.cluster_ip, s.port)
            backends += "backend %s\n    balance roundrobin\n" % b + "".join(
                "    server ep%d %s:%d\n" % (i, ip, port) for i, (ip, port) in enumerate(s.endpoints))
        return istio_pod.HAPROXY_CFG.format(
            maxconn=8192, idle="1h", bind="0.0.0.0", out_port=15001, in_port=15006,
            in_src=istio_pod.INBOUND_PASSTHROUGH_SRC, outbound_routes=routes, service_backends=backends,
            extra_global="    nbthread %d\n" % self.sidecar_threads, extra_defaults="")

    def _start_pod(self, p):
        d = os.path.join(self.dir, "pods", p.name)
        os.makedirs(os.path.join(d, "tmp"))
        p.dir = d
        if p.meshed:
            # istio-init's rules, from the node (as istio-cni does), before any container runs
            subprocess.run([str(istio_pod.ISTIO_INIT), p.ns.path, "--proxy-uid", str(PROXY_UID), "--proxy-gid",
                            str(PROXY_UID), "--backend", "nft"], check=True, capture_output=True)
            with open(os.path.join(d, "haproxy.cfg"), "w") as f:
                f.write(self._sidecar_cfg(p))
            self._container(p, "istio-proxy", ["/usr/sbin/haproxy", "-db", "-f", "/bed/pods/%s/haproxy.cfg" % p.name],
                            PROXY_UID)
            self._wait_port(p, "istio-proxy", 15001)
            self._wait_port(p, "istio-proxy", 15006)
        argv = self._app_argv(p, d)
        for root, dirs, files in os.walk(d):
            for x in dirs + files:
                os.chown(os.path.join(root, x), APP_UID, APP_UID)
        os.chown(d, APP_UID, APP_UID)
        self._container(p, "app", argv, 0 if p.app == "dns" else APP_UID)
        if p.app in APP_PORT:
            self._wait_port(p, "app", APP_PORT[p.app], udp=p.app == "dns")
        if self.cpu is not None:
            for cid in p.containers.values():
                pin_tree({self.cpu}, p.node.cri.cri.container_pid(cid))

    def container_log(self, p, cname, n=30):
        cfg = p.node.cri.cri._configs.get(p.sid)
        path = os.path.join(cfg.log_directory, cname + ".log") if cfg else ""
        try:
            with open(path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log at %s)" % path

    def _wait_port(self, p, cname, port, udp=False, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run(["nsenter", "--net=" + p.ns.path, "ss", "-Hln" + ("u" if udp else "t"),
                                "sport = :%d" % port], capture_output=True, text=True)
            if r.stdout.strip():
                return
            st = p.node.cri.cri.container_status(p.containers[cname]).status
            if st.state == p.node.cri.cri.m.CONTAINER_EXITED:
                break
            time.sleep(0.05)
        raise BedError("%s/%s: nothing listening on port %d after %ss; container log:\n%s"
                       % (p.name, cname, port, timeout, self.container_log(p, cname)))

    # ---- use -----------------------------------------------------------------------
    def exec(self, pod, argv, timeout=60):
        """ARGV in POD's app container (CRI ExecSync, like kubectl exec; as the
        container's user, uid 65534 for apps); returns (exit code, stdout, stderr)."""
        p = self.pods[pod] if isinstance(pod, str) else pod
        if self.cpu is not None:
            argv = ["/usr/bin/taskset", "-c", str(self.cpu)] + list(argv)
        rc, out, err = p.node.cri.cri.exec_sync(p.containers["app"], list(argv), timeout=int(timeout))
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def exec_async(self, pod, argv, timeout=60):
        return self._pool.submit(self.exec, pod, argv, timeout)

    def checker_argv(self, urls, spread=0.0, n=1, per_conn=10):
        want = expected_digests()
        return ["/usr/bin/python3", "/bed/checker.py", str(spread), str(n), str(per_conn),
                json.dumps({u: want[u] for u in urls})]

    def check(self, urls=None, spread=0.0, n=1, timeout=120):
        """The correctness pass in the client pod; returns its JSON result."""
        urls = urls or sorted(expected_digests())
        rc, out, err = self.exec("client", self.checker_argv(urls, spread, n), timeout)
        try:
            return json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BedError("checker failed (exit %d): %s %s" % (rc, out[-500:], err[-500:]))

    def meshed_pods(self):
        return [p for p in self.pods.values() if p.meshed]

    def set_mode(self, mode):
        """baseline | intra | inter | full: every meshed pod's socket switches
        and both nodes' cross-node switch; new connections follow."""
        if mode not in MODES:
            raise BedError("mode must be one of %s" % ", ".join(MODES))
        prev = self.mode
        if prev is None or (INTRA_ON[prev], NODE_ON[prev]) != (INTRA_ON[mode], NODE_ON[mode]):
            for p in self.meshed_pods():
                benchlib.set_pod_switches(p, intra=INTRA_ON[mode], node=NODE_ON[mode])
        if prev is None or TC_ON[prev] != TC_ON[mode]:
            for n in self.nodes.values():
                benchlib.set_cross_node(n, TC_ON[mode])
        self.mode = mode

    def cpu_usage_us(self):
        """CPU time of every pod container of both nodes (their cgroups' cpu.stat)."""
        total = 0
        for n in self.nodes.values():
            with open(os.path.join(n.daemon.cgroup.path, "cpu.stat")) as f:
                total += int(dict(line.split() for line in f)["usage_usec"])
        return total

    def pids(self, pod, cname):
        return self.pods[pod].node.cri.cri.container_pid(self.pods[pod].containers[cname])

    def state(self):
        return {"dir": self.dir, "mode": self.mode, "cpu": self.cpu,
                "nodes": {n.name: {"netns": n.ns.name, "pin_root": n.daemon.pin_root, "cri_sock": n.cri.sock,
                                   "cri_dir": n.cri.dir, "cgroup": n.daemon.cgroup.path,
                                   "daemon_pid": n.daemon.proc.pid, "daemon_log": n.daemon.logfile}
                          for n in self.nodes.values()},
                "pods": {p.name: p.to_json() for p in self.pods.values()},
                "services": {s.name: {"cluster_ip": s.cluster_ip, "port": s.port, "proto": s.proto,
                                      "endpoints": s.endpoints} for s in self.services}}


def pin_tree(cpus, pid):
    """sched_setaffinity on every thread of PID and of its direct children (nginx workers)."""
    pids = [pid]
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    for q in pids:
        for tid in os.listdir("/proc/%d/task" % q):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except ProcessLookupError:
                pass


# ---- the command line: a holder process owns a running bed ----------------------

class DaemonRef:
    """A running meshcutd of the bed, from another process: its CLI on the pin
    root, run in the node's netns (like mcnet.Daemon.cli, without owning it)."""

    def __init__(self, pin_root, netns_path, cgroup):
        self.pin_root, self.netns_path = pin_root, netns_path
        self.cgroup = argparse.Namespace(path=cgroup)

    def cli(self, *args, check=True):
        r = subprocess.run([mcnet.MESHCUTD, *args, "--pin-root", self.pin_root], capture_output=True, text=True,
                           preexec_fn=lambda: mcnet._setns(self.netns_path))
        if check and r.returncode != 0:
            raise BedError("meshcutd %s failed (%d): %s" % (" ".join(args), r.returncode, r.stderr.strip()))
        return r

    def status(self):
        return json.loads(self.cli("status", "--json").stdout)

    def counters(self):
        return self.status()["counters"]


def attach(state):
    """A MeshBed for the bed described by STATE (meshbed.py up's state file):
    enough to switch modes, exec and check from another process."""
    from cri import CriClient
    bed = MeshBed(cpu=state.get("cpu"))
    bed.dir = state["dir"]
    bed.mode = None
    for name, s in state["nodes"].items():
        nspath = "/var/run/netns/" + s["netns"]
        bed.nodes[name] = argparse.Namespace(
            name=name, daemon=DaemonRef(s["pin_root"], nspath, s["cgroup"]),
            cri=argparse.Namespace(cri=CriClient(s["cri_sock"])), ns=argparse.Namespace(name=s["netns"], path=nspath))
    for name, s in state["pods"].items():
        p = BedPod(name, bed.nodes[s["node"]], s["app"], s["service"], s["namespace"])
        p.ip, p.ns, p.host_veth, p.sid = s["ip"], argparse.Namespace(path=s["netns"]), s["host_veth"], s["sid"]
        p.containers = s["containers"]
        p.meshed = s["meshed"]
        bed.pods[name] = p
    return bed


def read_state():
    try:
        with open(STATE) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def write_state(state):
    os.makedirs(STATE_DIR, exist_ok=True)
    tmp = STATE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, STATE)


def alive(pid):
    try:
        os.kill(pid, 0)
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def root_rules():
    """The root netns' netfilter ruleset, counters stripped (the bed makes no rules there)."""
    import re
    r = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True)
    txt = r.stdout if r.returncode == 0 else subprocess.run(["iptables-save"], capture_output=True,
                                                             text=True).stdout
    txt = re.sub(r"counter packets \d+ bytes \d+", "counter", txt)
    txt = re.sub(r"\[\d+:\d+\]", "", txt)
    return "\n".join(l for l in txt.splitlines() if not l.startswith("#"))


def cmd_hold(args):
    """The holder: bring the bed up, publish its state, wait for SIGTERM; mcnet's
    cleanups (atexit) then tear everything down in reverse order."""
    mcnet.require_root()
    mcnet._cleanups.append(lambda: os.path.exists(STATE) and os.unlink(STATE))
    # runs after the daemons stopped: their logs go into the holder log
    mcnet._cleanups.append(lambda: mcnet.drop_logfiles(into=args.log))
    bed = MeshBed(cpu=args.cpu).up()
    if args.mode:
        bed.set_mode(args.mode)
    st = bed.state()
    st.update({"holder_pid": os.getpid(), "log": args.log, "wire_netns": bed.cl.wire.name,
               "ext_netns": bed.cl.ext.name, "run_id": mcnet.RUN_ID, "root_rules": args.root_rules,
               "ready": True, "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    write_state(st)
    log("ready; `%s down` tears it down" % sys.argv[0])
    while True:
        signal.pause()


def cmd_up(args):
    st = read_state()
    if st and alive(st.get("holder_pid", 0)):
        raise BedError("a bed is already up (holder pid %d, since %s): run `%s down` first"
                       % (st["holder_pid"], st.get("since"), sys.argv[0]))
    if st:
        log("stale state from a bed whose holder is gone: sweeping it first")
        sweep(st)
        os.unlink(STATE)
    os.makedirs(STATE_DIR, exist_ok=True)
    logpath = os.path.join(STATE_DIR, "holder.log")
    rules = os.path.join(STATE_DIR, "root-rules.before")
    with open(rules, "w") as f:
        f.write(root_rules())
    argv = [sys.executable, os.path.abspath(__file__), "_hold", "--log", logpath, "--root-rules", rules]
    if args.cpu is not None:
        argv += ["--cpu", str(args.cpu)]
    if args.mode:
        argv += ["--mode", args.mode]
    with open(logpath, "w") as lf:
        h = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf, stderr=lf, start_new_session=True)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        st = read_state()
        if st and st.get("ready") and st.get("holder_pid") == h.pid:
            break
        if h.poll() is not None:
            raise BedError("bring-up failed (exit %d); log %s:\n%s" % (h.returncode, logpath, tail(logpath)))
        time.sleep(0.2)
    else:
        h.terminate()
        raise BedError("bed not up after %ds; log %s:\n%s" % (args.timeout, logpath, tail(logpath)))
    print_status(st, attach(st), counters=False)
    print("\nUse: %s check | mode baseline|intra|inter|full | exec client -- CMD | status | down" % sys.argv[0])
    return 0


def tail(path, n=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def sweep(st):
    """Remove what a bed whose holder died (kill -9) left: processes, runc
    containers, mounts, pins, cgroups, CNI cache entries, netns, dirs."""
    keys = [st["dir"]] + [n["cri_dir"] for n in st["nodes"].values()] + \
        [n["pin_root"] for n in st["nodes"].values()]
    for pid in pids_mentioning(keys):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for n in st["nodes"].values():
        runc_root = os.path.join(n["cri_dir"], "state", "runc")
        for ns_root in (os.listdir(runc_root) if os.path.isdir(runc_root) else []):
            r = os.path.join(runc_root, ns_root)
            for cid in subprocess.run(["runc", "--root", r, "list", "-q"], capture_output=True,
                                      text=True).stdout.split():
                subprocess.run(["runc", "--root", r, "delete", "--force", cid], capture_output=True)
        for mp in sorted(mounts_under(n["cri_dir"]), key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], capture_output=True)
        if os.path.exists(n["pin_root"]):
            nspath = "/var/run/netns/" + n["netns"]
            subprocess.run([mcnet.MESHCUTD, "detach", "--pin-root", n["pin_root"]], capture_output=True,
                           preexec_fn=(lambda p=nspath: mcnet._setns(p)) if os.path.exists(nspath) else None)
        for top in cgroup_dirs(n["cgroup"]):
            for d, _, _ in sorted(os.walk(top), key=lambda t: len(t[0]), reverse=True):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
    for f in cni_cache_entries(st):
        os.unlink(f)
    for ns in [n["netns"] for n in st["nodes"].values()] + [st.get("wire_netns"), st.get("ext_netns")]:
        if ns and os.path.exists("/var/run/netns/" + ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    for d in [st["dir"]] + [n["cri_dir"] for n in st["nodes"].values()]:
        shutil.rmtree(d, ignore_errors=True)
    for n in st["nodes"].values():
        if os.path.exists(n["daemon_log"]):
            os.unlink(n["daemon_log"])


def pids_mentioning(keys):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(k in cmd for k in keys):
            out.append(int(d))
    return out


def mounts_under(d):
    with open("/proc/self/mountinfo") as f:
        return [x.split()[4] for x in f if x.split()[4].startswith(d.rstrip("/") + "/")]


def cgroup_dirs(v2path):
    """The node's pod cgroup in every hierarchy (runc's cgroupfs driver also
    makes it in the v1 controllers of this hybrid layout)."""
    name = os.path.basename(v2path.rstrip("/"))
    import glob
    return [p for p in [v2path] + glob.glob("/sys/fs/cgroup/*/" + name) if os.path.isdir(p)]


def cni_cache_entries(st):
    import glob
    sids = [p["sid"] for p in st["pods"].values()]
    return [f for f in glob.glob("/var/lib/cni/results/*") if any(s in os.path.basename(f) for s in sids)]


def leftovers(st):
    """Everything of the bed still there (empty: nothing)."""
    left = {}
    ns = [n["netns"] for n in st["nodes"].values()] + [st.get("wire_netns"), st.get("ext_netns")]
    ns += [x for x in os.listdir("/var/run/netns") if x.startswith("mct-%s-" % st.get("run_id"))] \
        if os.path.isdir("/var/run/netns") else []
    left["netns"] = sorted({x for x in ns if x and os.path.exists("/var/run/netns/" + x)})
    left["dirs"] = [d for d in [st["dir"]] + [n["cri_dir"] for n in st["nodes"].values()] if os.path.exists(d)]
    left["mounts"] = [m for n in st["nodes"].values() for m in mounts_under(n["cri_dir"])]
    left["pins"] = [n["pin_root"] for n in st["nodes"].values() if os.path.exists(n["pin_root"])]
    left["cgroups"] = [c for n in st["nodes"].values() for c in cgroup_dirs(n["cgroup"])]
    left["cni_cache"] = cni_cache_entries(st)
    left["files"] = [n["daemon_log"] for n in st["nodes"].values() if os.path.exists(n["daemon_log"])]
    keys = [st["dir"]] + [n["cri_dir"] for n in st["nodes"].values()] + [n["pin_root"] for n in
                                                                         st["nodes"].values()]
    left["processes"] = pids_mentioning(keys)
    before = st.get("root_rules")
    if before and os.path.exists(before):
        with open(before) as f:
            if f.read() != root_rules():
                left["root_netns_rules"] = ["the root netns ruleset differs from before `up` (nft list ruleset)"]
    return {k: v for k, v in left.items() if v}


def cmd_down(args):
    st = read_state()
    if not st:
        print("no bed is up (%s not found)" % STATE)
        return 0
    pid = st.get("holder_pid", 0)
    if alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + args.timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(pid):
            log("holder %d still running after %ds: killing it and sweeping" % (pid, args.timeout))
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
    left = leftovers(st)
    if left:
        log("holder left: %s; sweeping" % left)
        sweep(st)
        left = leftovers(st)
    if os.path.exists(STATE):
        os.unlink(STATE)
    if left:
        print("teardown incomplete, left: %s\nholder log: %s" % (json.dumps(left, indent=1), st.get("log")))
        return 1
    shutil.rmtree(STATE_DIR, ignore_errors=True)  # the rules snapshot and the holder's log
    print("bed down: nothing left (netns, containerd state and mounts, meshcutd pins and logs, cgroups, CNI "
          "cache, processes, %s; root netns ruleset unchanged)" % STATE_DIR)
    return 0


def print_status(st, bed, counters=True):
    print("bed up since %s (holder pid %d), mode %s" % (st.get("since"), st["holder_pid"], st.get("mode")))
    print("\n%-16s %-4s %-13s %-12s %-7s %s" % ("POD", "NODE", "IP", "APP", "MESHED", "SERVICE"))
    for p in bed.pods.values():
        print("%-16s %-4s %-13s %-12s %-7s %s" % (p.name, p.node.name, p.ip, p.app, "yes" if p.meshed else "no",
                                                   p.service or ""))
    print("\n%-12s %-11s %-5s %s" % ("SERVICE", "CLUSTER-IP", "PORT", "ENDPOINTS"))
    for name, s in st["services"].items():
        print("%-12s %-11s %-5s %s" % (name, s["cluster_ip"], "%d/%s" % (s["port"], s["proto"]),
                                       " ".join("%s:%d" % tuple(e) for e in s["endpoints"])))
    if counters:
        print()
        for n in bed.nodes.values():
            c = n.daemon.counters()
            print("%s meshcutd: redirected intra %d B, node %d B; tc overlay %d, peer %d; pods enrolled %s" % (
                n.name, c.get("bytes_redirect_intra", 0), c.get("bytes_redirect_node", 0),
                sum(c.get(k, 0) for k in benchlib.TO_OVERLAY), c.get(benchlib.PEER, 0),
                len(json.loads(n.daemon.cli("pods", "--json").stdout))))


def need_state():
    st = read_state()
    if not st or not alive(st.get("holder_pid", 0)):
        raise BedError("no bed is up: run `%s up`" % sys.argv[0])
    return st


def cmd_status(args):
    st = need_state()
    print_status(st, attach(st))
    return 0


def cmd_mode(args):
    st = need_state()
    bed = attach(st)
    bed.set_mode(args.mode)
    st["mode"] = args.mode
    write_state(st)
    print("mode %s: intra-pod %s, same-node %s, cross-node tc %s" % (
        args.mode, *("on" if t[args.mode] else "off" for t in (INTRA_ON, NODE_ON, TC_ON))))
    return 0


def cmd_check(args):
    st = need_state()
    bed = attach(st)
    res = bed.check(n=args.n)
    print(json.dumps(res))
    want = args.n * len(expected_digests())
    if res["n_errors"] or res["ok"] != want:
        print("correctness: FAILED (%d of %d ok, %d errors)" % (res["ok"], want, res["n_errors"]))
        return 3
    print("correctness: %d responses through the mesh (productpage graph and web pods), all status 200 and "
          "sha256 as expected" % res["ok"])
    return 0


def cmd_exec(args):
    st = need_state()
    bed = attach(st)
    if args.pod not in bed.pods:
        raise BedError("no pod %s (pods: %s)" % (args.pod, ", ".join(bed.pods)))
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    rc, out, err = bed.exec(args.pod, argv, timeout=args.timeout)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return rc


def main():
    ap = argparse.ArgumentParser(description="meshcut's mesh test bed (see the module docstring)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="bring the bed up and leave it running")
    up.add_argument("--cpu", type=int, help="pin every pod process to this CPU")
    up.add_argument("--mode", choices=MODES, help="start in this mode (default full)")
    up.add_argument("--timeout", type=int, default=300)
    h = sub.add_parser("_hold")
    h.add_argument("--log")
    h.add_argument("--root-rules")
    h.add_argument("--cpu", type=int)
    h.add_argument("--mode", choices=MODES)
    dn = sub.add_parser("down", help="tear the bed down; check that nothing is left")
    dn.add_argument("--timeout", type=int, default=120)
    sub.add_parser("status", help="pods, services, counters")
    md = sub.add_parser("mode", help="switch the shortcuts: baseline, intra, inter, full")
    md.add_argument("mode", choices=MODES)
    ck = sub.add_parser("check", help="correctness pass through the mesh")
    ck.add_argument("--n", type=int, default=5, help="fetches of every URL (default 5)")
    ex = sub.add_parser("exec", help="a command in a pod's app container")
    ex.add_argument("pod")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    ex.add_argument("--timeout", type=int, default=60)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("meshbed.py: needs root (network namespaces, containerd, BPF)", file=sys.stderr)
        return 1
    fn = {"up": cmd_up, "_hold": cmd_hold, "down": cmd_down, "status": cmd_status, "mode": cmd_mode,
          "check": cmd_check, "exec": cmd_exec}[args.cmd]
    try:
        return fn(args)
    except (BedError, benchlib.BenchError, RuntimeError, OSError) as e:
        print("meshbed.py %s: %s" % (args.cmd, e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
