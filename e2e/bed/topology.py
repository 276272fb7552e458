# SPDX-License-Identifier: Apache-2.0
"""meshcut's mesh test bed: two nodes, containerd CRI pods, Istio-like
sidecars, a Bookinfo-shaped service graph -- on one Linux machine, in
namespaces and cgroups it creates and removes (README "The test bed").

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

In a program: `bed = MeshBed().up()` (torn down at exit by mcnet's cleanups).
"""
import concurrent.futures
import json
import os
import shutil
import subprocess
import tempfile
import time

from . import apps
from .apps import APP_PORT, APP_UID, PROXY_UID, expected_digests
from .env import BOOKINFO, BedError, benchlib, images, istio_pod, log, mcnet, twonode

NAMESPACE = "default"
DNS_IP = "10.96.0.10"
SEARCH = ["%s.svc.cluster.local" % NAMESPACE, "svc.cluster.local", "cluster.local"]

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
        shutil.copyfile(apps.CHECKER, os.path.join(self.dir, "checker.py"))
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

    def _start_pod(self, p):
        d = os.path.join(self.dir, "pods", p.name)
        os.makedirs(os.path.join(d, "tmp"))
        p.dir = d
        if p.meshed:
            # istio-init's rules, from the node (as istio-cni does), before any container runs
            subprocess.run([str(istio_pod.ISTIO_INIT), p.ns.path, "--proxy-uid", str(PROXY_UID), "--proxy-gid",
                            str(PROXY_UID), "--backend", "nft"], check=True, capture_output=True)
            with open(os.path.join(d, "haproxy.cfg"), "w") as f:
                f.write(apps.sidecar_cfg(self.services, self.sidecar_threads))
            self._container(p, "istio-proxy", ["/usr/sbin/haproxy", "-db", "-f", "/bed/pods/%s/haproxy.cfg" % p.name],
                            PROXY_UID)
            self._wait_port(p, "istio-proxy", 15001)
            self._wait_port(p, "istio-proxy", 15006)
        argv = apps.app_argv(p, d)
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


