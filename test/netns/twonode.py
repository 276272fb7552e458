# SPDX-License-Identifier: Apache-2.0
"""A two-node cluster in network namespaces, for the cross-node tests and
benchmarks (issue 4, DESIGN.md "The test bed").

    ext (192.168.77.100) ─┐
    n1  eth0 192.168.77.1 ├── "wire" netns: bridge sw0 (the underlay switch)
    n2  eth0 192.168.77.2 ┘
    nN: flannel.1 (VXLAN id 1, dstport 8472, nolearning, MTU 1450, 10.244.N.0/32)
        cni0 (bridge plugin, gateway 10.244.N.1/24), pods from the real CNI chain
        bridge + host-local (10.244.N.0/24) [+ meshcut, pinRoot = that node's meshcutd]
        kube-proxy-like iptables nat (KUBE-SERVICES / KUBE-SVC- / KUBE-SEP- /
        KUBE-NODEPORTS / KUBE-POSTROUTING), flannel's POSTROUTING exemption for
        pod-to-pod traffic, ip_forward on (node netns only).

The overlay is set up exactly as flannel's vxlan backend does for a remote
node (its vtep MAC and underlay IP come from the node's annotations there):

    bridge fdb append <remote vtep mac> dev flannel.1 dst <remote underlay ip> self permanent
    ip neigh replace 10.244.<r>.0 lladdr <remote vtep mac> dev flannel.1 nud permanent
    ip route replace 10.244.<r>.0/24 via 10.244.<r>.0 dev flannel.1 onlink

so bpf_fib_lookup() on a node, for a pod on the other node, answers
ifindex = flannel.1, smac = local vtep MAC, dmac = remote vtep MAC; the
vxlan driver then finds the underlay destination in its FDB by dmac.

Everything lives in namespaces made here (named by mcnet's run prefix) and
goes away with them; meshcutd's pins go with mcnet.Daemon's cleanup.

Usage (from a test process that did cg.join()):

    cl = twonode.Cluster(cg).up()
    c1 = cl.add_pod("n1", "c1"); s2 = cl.add_pod("n2", "s2")
    cl.set_services([twonode.Service("web", "10.96.0.10", 80, [(s2.ip, 8080)], node_port=30080)])
    snap = cl.snapshot(); ...; print(cl.format_delta(cl.snapshot(), snap))
"""
import hashlib
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cnirun  # noqa: E402
import mcnet  # noqa: E402
import streams  # noqa: E402
from mcnet import log  # noqa: E402


def _crinode():
    """e2e/cri/node.py (CriNode), imported only for runtime "cri" (it needs python3-grpcio)."""
    sys.path.insert(0, os.path.join(mcnet.REPO, "e2e", "cri"))
    import node
    return node


PLUGIN_DIR = os.path.join(mcnet.BUILD, "cni-plugin")
CNI_BIN_DIRS = ["/usr/lib/cni", "/opt/cni/bin", PLUGIN_DIR]
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/12"
UNDERLAY = "192.168.77"
EXT_IP = UNDERLAY + ".100"
VXLAN_DEV = "flannel.1"
VXLAN_PORT = 8472
VXLAN_MTU = 1450
BRIDGE = "cni0"
WIRE_DEV = "eth0"  # the node's underlay NIC
MASQ_MARK = "0x4000/0x4000"


def _ip_link_stats(ns, dev):
    r = mcnet.sh("ip", "-n", ns.name, "-s", "-j", "link", "show", "dev", dev, check=False)
    if r.returncode != 0:
        return None
    st = json.loads(r.stdout)[0]["stats64"]
    return {"rx_packets": st["rx"]["packets"], "tx_packets": st["tx"]["packets"],
            "rx_bytes": st["rx"]["bytes"], "tx_bytes": st["tx"]["bytes"]}


def _restore(ns, text):
    """iptables-restore --noflush inside NS (one atomic batch)."""
    r = subprocess.run(["ip", "netns", "exec", ns.name, "iptables-restore", "--noflush"], input=text,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("iptables-restore in %s failed: %s\n%s" % (ns.name, r.stderr.strip(), text))


def _chain_hash(*parts):
    # kube-proxy: base32 of sha256 over the service port name; 16 chars. Same shape here.
    import base64
    return base64.b32encode(hashlib.sha256("/".join(map(str, parts)).encode()).digest())[:16].decode()


class Service:
    """A ClusterIP service (optionally a NodePort) with fixed endpoints, the
    way kube-proxy's iptables mode renders it."""

    def __init__(self, name, cluster_ip, port, endpoints, proto="tcp", node_port=None, namespace="default"):
        self.name, self.cluster_ip, self.port, self.proto = name, cluster_ip, port, proto
        self.endpoints = list(endpoints)  # [(ip, port)]
        self.node_port = node_port
        self.namespace = namespace

    @property
    def svc_chain(self):
        return "KUBE-SVC-" + _chain_hash(self.namespace, self.name, self.proto, self.port)

    @property
    def ext_chain(self):
        return "KUBE-EXT-" + _chain_hash(self.namespace, self.name, self.proto, self.port)

    def sep_chain(self, ep):
        return "KUBE-SEP-" + _chain_hash(self.namespace, self.name, self.proto, self.port, *ep)


def render_kube_proxy(services):
    """The nat (and filter) rules kube-proxy (iptables mode) writes for
    SERVICES; the KUBE-* chains are declared, hence flushed, and rewritten
    as a whole each time, as kube-proxy does."""
    nat = [":KUBE-SERVICES - [0:0]", ":KUBE-NODEPORTS - [0:0]", ":KUBE-POSTROUTING - [0:0]",
           ":KUBE-MARK-MASQ - [0:0]"]
    rules = []
    for s in services:
        nat.append(":%s - [0:0]" % s.svc_chain)
        for ep in s.endpoints:
            nat.append(":%s - [0:0]" % s.sep_chain(ep))
        if s.node_port:
            nat.append(":%s - [0:0]" % s.ext_chain)
    rules.append("-A KUBE-POSTROUTING -m mark ! --mark %s -j RETURN" % MASQ_MARK)
    rules.append("-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000")
    rules.append('-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
                 "-j MASQUERADE --random-fully")
    rules.append("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000")
    for s in services:
        sp = "%s/%s:%s" % (s.namespace, s.name, s.proto)
        rules.append('-A KUBE-SERVICES -d %s/32 -p %s -m comment --comment "%s cluster IP" -m %s --dport %d -j %s'
                     % (s.cluster_ip, s.proto, sp, s.proto, s.port, s.svc_chain))
        # Traffic to the ClusterIP from outside the cluster CIDR (a node process) is masqueraded.
        rules.append('-A %s ! -s %s -d %s/32 -p %s -m comment --comment "%s cluster IP" -m %s --dport %d '
                     "-j KUBE-MARK-MASQ" % (s.svc_chain, CLUSTER_CIDR, s.cluster_ip, s.proto, sp, s.proto, s.port))
        n = len(s.endpoints)
        for i, ep in enumerate(s.endpoints):
            prob = "" if i == n - 1 else " -m statistic --mode random --probability %.11f" % (1.0 / (n - i))
            rules.append('-A %s -m comment --comment "%s -> %s:%d"%s -j %s'
                         % (s.svc_chain, sp, ep[0], ep[1], prob, s.sep_chain(ep)))
            rules.append('-A %s -s %s/32 -m comment --comment "%s" -j KUBE-MARK-MASQ' % (s.sep_chain(ep), ep[0], sp))
            rules.append('-A %s -p %s -m comment --comment "%s" -m %s -j DNAT --to-destination %s:%d'
                         % (s.sep_chain(ep), s.proto, sp, s.proto, ep[0], ep[1]))
        if s.node_port:
            rules.append('-A KUBE-NODEPORTS -p %s -m comment --comment "%s" -m %s --dport %d -j %s'
                         % (s.proto, sp, s.proto, s.node_port, s.ext_chain))
            rules.append('-A %s -m comment --comment "masquerade traffic for %s external destinations" '
                         "-j KUBE-MARK-MASQ" % (s.ext_chain, sp))
            rules.append("-A %s -j %s" % (s.ext_chain, s.svc_chain))
    rules.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the '
                 'last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    return "*nat\n" + "\n".join(nat + rules) + "\nCOMMIT\n"


class Pod:
    def __init__(self, node, name, ns, cid, result):
        self.node, self.name, self.ns, self.cid, self.result = node, name, ns, cid, result
        self.ip = result["ips"][0]["address"].split("/")[0]
        host = [i for i in result.get("interfaces", []) if not i.get("sandbox") and i["name"] != BRIDGE]
        ctr = [i for i in result.get("interfaces", []) if i.get("sandbox")]
        self.host_veth = host[0]["name"] if host else None
        self.mac = ctr[0]["mac"] if ctr else None
        self.path = ns.path

    def __repr__(self):
        return "<pod %s/%s %s>" % (self.node.name, self.name, self.ip)


class _PodNetns:
    """A CRI pod's netns (a bind mount under containerd's state dir) in the
    shape mcnet.spawn and the benchmarks expect (.path, .name)."""

    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)


class CriPod:
    """A pod made through CRI (e2e/cri/node.py Pod), with what Pod has."""

    def __init__(self, node, name, cri_pod):
        self.node, self.name, self.cri_pod = node, name, cri_pod
        self.sid = self.cid = cri_pod.sid
        self.ip = cri_pod.ip
        self.ns = _PodNetns(cri_pod.netns)
        self.path = self.ns.path
        # the host side of the pod's eth0: its peer ifindex in the node netns
        link = json.loads(mcnet.sh("nsenter", "--net=" + self.path, "ip", "-j", "link", "show", "eth0").stdout)[0]
        self.mac = link.get("address")
        peer = [x for x in json.loads(mcnet.sh("ip", "-n", node.ns.name, "-j", "link", "show").stdout)
                if x.get("ifindex") == link.get("link_index")]
        self.host_veth = peer[0]["ifname"] if peer else None

    def __repr__(self):
        return "<cri pod %s/%s %s>" % (self.node.name, self.name, self.ip)


class NodeCgroup:
    """The cgroup v2 directory runc puts every container of a CriNode in
    (cgroupfs driver, cgroup_parent /<node id>), created before meshcutd
    attaches sockops there; CriNode.teardown rmdirs it, remove() is a fallback."""

    def __init__(self, cri):
        self.path = os.path.join(mcnet.cgroup2_root(), cri.cgroup_parent.lstrip("/"))
        os.makedirs(self.path, exist_ok=True)
        self.procs = os.path.join(self.path, "cgroup.procs")
        mcnet._cleanups.append(self.remove)

    def remove(self):
        for d, _, _ in sorted(os.walk(self.path), key=lambda t: len(t[0]), reverse=True):
            try:
                os.rmdir(d)
            except OSError:
                pass


class Node:
    def __init__(self, cluster, idx):
        self.cluster = cluster
        self.idx = idx
        self.name = "n%d" % idx
        self.ns = mcnet.Netns(self.name)
        self.underlay_ip = "%s.%d" % (UNDERLAY, idx)
        self.pod_cidr = "10.244.%d.0/24" % idx
        self.vtep_ip = "10.244.%d.0" % idx
        self.gw_ip = "10.244.%d.1" % idx
        self.vtep_mac = None
        self.daemon = None
        self.rt = None
        self.cri = None
        self.pods = {}

    def run(self, *cmd, check=True):
        return self.ns.run(*cmd, check=check)

    def link_info(self, dev):
        """`ip -j link show DEV` in the node: ifindex, address, mtu, ..."""
        return json.loads(mcnet.sh("ip", "-n", self.ns.name, "-j", "link", "show", "dev", dev).stdout)[0]

    def ifindex(self, dev):
        return self.link_info(dev)["ifindex"]

    def link_stats(self, dev):
        return _ip_link_stats(self.ns, dev)

    def counters(self):
        if self.daemon is None:
            return {}
        try:
            return self.daemon.counters()
        except Exception as e:  # a dead daemon must not hide the traffic results
            log("%s: meshcutd status failed: %s" % (self.name, e))
            return {}

    def invalid_drops(self):
        """Packets kube-proxy's `KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP`
        dropped on this node (conntrack judged them out of the flow it knows)."""
        r = self.run("iptables", "-t", "filter", "-nvxL", "KUBE-FORWARD", check=False)
        for line in r.stdout.splitlines():
            if "ctstate INVALID" in line and "DROP" in line:
                return int(line.split()[0])
        return 0

    def iptables_save(self):
        return self.run("iptables-save").stdout


class Cluster:
    """Two nodes, an underlay switch, an outside host; pods through the CNI
    chain; kube-proxy-like services. Call up() once; everything is torn down
    by mcnet's cleanup sweep (or ck.done())."""

    def __init__(self, cg, meshcut=True, cross_node=True, daemon_extra=(), meshcut_conf=None,
                 kube_forward_invalid_drop=True, conntrack_liberal=False, daemon_cgroup=None, runtime="cni"):
        """CG: the test cgroup (already joined by the caller). MESHCUT: chain
        the meshcut plugin and run a meshcutd per node. CROSS_NODE: the
        plugin's crossNode switch. DAEMON_EXTRA: extra `meshcutd run` args
        (a list, or a function node -> list). MESHCUT_CONF: extra keys for the
        plugin's conf. KUBE_FORWARD_INVALID_DROP: kube-proxy's
        `KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP` (its default);
        CONNTRACK_LIBERAL: net.netfilter.nf_conntrack_tcp_be_liberal=1 (what
        kube-proxy's conntrack.tcpBeLiberal sets; it then omits that drop rule:
        pass kube_forward_invalid_drop=False too). DAEMON_CGROUP: the cgroup meshcutd attaches sockops to
        (default CG; pass an empty one to keep the socket shortcut out).
        RUNTIME: "cni" (pods are netns made here, the chain run by cnirun)
        or "cri" (a containerd per node, inside the node's netns, creates
        the pods through CRI with the same chain; each node's meshcutd then
        attaches sockops to that node's pod cgroup, and CG is not used)."""
        self.cg = cg
        self.meshcut = meshcut
        self.cross_node = cross_node
        self.daemon_extra = daemon_extra
        self.meshcut_conf = dict(meshcut_conf or {})
        self.kube_forward_invalid_drop = kube_forward_invalid_drop
        self.conntrack_liberal = conntrack_liberal
        self.daemon_cgroup = daemon_cgroup or cg
        if runtime not in ("cni", "cri"):
            raise ValueError("runtime must be 'cni' or 'cri'")
        self.runtime = runtime
        self.tmp = tempfile.mkdtemp(prefix="mc-2node-")
        mcnet._cleanups.append(lambda: shutil.rmtree(self.tmp, ignore_errors=True))
        self.nodes = {}
        self.wire = self.ext = None
        self.services = []
        self._pod_n = 0

    # --- topology ---------------------------------------------------------
    def up(self):
        t0 = time.monotonic()
        self.wire = mcnet.Netns("wire")
        self.wire.ip("link", "add", "sw0", "type", "bridge")
        self.wire.ip("link", "set", "sw0", "up")
        # A plain switch: no netfilter on bridged underlay frames.
        self.wire.run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", check=False)
        for i in (1, 2):
            n = Node(self, i)
            self.nodes[n.name] = n
            mcnet.veth_pair(n.ns, self.wire, a_ip=n.underlay_ip, a_name=WIRE_DEV, b_name="sw-" + n.name)
            self.wire.ip("link", "set", "sw-" + n.name, "master", "sw0")
            self._node_base(n)
        self.ext = mcnet.Netns("ext")
        mcnet.veth_pair(self.ext, self.wire, a_ip=EXT_IP, a_name=WIRE_DEV, b_name="sw-ext")
        self.wire.ip("link", "set", "sw-ext", "master", "sw0")
        for n in self.nodes.values():
            for r in self.nodes.values():
                if r is not n:
                    self._flannel_remote(n, r)
        for n in self.nodes.values():
            self._start_meshcut(n)
        log("two-node cluster up in %.1fs (n1 vtep %s, n2 vtep %s)" % (
            time.monotonic() - t0, self.nodes["n1"].vtep_mac, self.nodes["n2"].vtep_mac))
        return self

    def _node_base(self, n):
        ns = n.ns
        ns.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        ns.run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", check=False)  # kube-proxy needs it
        if self.conntrack_liberal:
            ns.run("sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=1")
        # flanneld's vxlan device.
        ns.ip("link", "add", VXLAN_DEV, "type", "vxlan", "id", "1", "local", n.underlay_ip, "dev", WIRE_DEV,
              "dstport", str(VXLAN_PORT), "nolearning")
        ns.ip("link", "set", VXLAN_DEV, "mtu", str(VXLAN_MTU))
        ns.ip("addr", "add", n.vtep_ip + "/32", "dev", VXLAN_DEV)
        ns.ip("link", "set", VXLAN_DEV, "up")
        n.vtep_mac = n.link_info(VXLAN_DEV)["address"]
        # Base iptables: kube-proxy's jumps first, then flannel's masquerade
        # exemption for pod-to-pod traffic (the bridge plugin's ipMasq rule,
        # appended per pod, would otherwise SNAT pod -> pod on another node).
        filt = ""
        if self.kube_forward_invalid_drop:
            filt = ("*filter\n:KUBE-FORWARD - [0:0]\n"
                    '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD\n'
                    "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n"
                    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark %s -j ACCEPT\n'
                    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
                    "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n" % MASQ_MARK)
        _restore(ns, filt +
                 "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:FLANNEL-POSTRTG - [0:0]\n"
                 '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n'
                 '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n'
                 '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING\n'
                 '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG\n'
                 '-A FLANNEL-POSTRTG -m mark --mark %s -m comment --comment "flanneld masq" -j RETURN\n'
                 '-A FLANNEL-POSTRTG -s %s -d %s -m comment --comment "flanneld masq" -j ACCEPT\n'
                 "COMMIT\n" % (MASQ_MARK, CLUSTER_CIDR, CLUSTER_CIDR))
        # ACCEPT in FLANNEL-POSTRTG ends the nat POSTROUTING traversal for
        # pod -> pod: the bridge plugin's CNI-* masquerade chains come after it.

    def _flannel_remote(self, n, r):
        """What flanneld's vxlan backend does on N when it learns remote node R."""
        n.run("bridge", "fdb", "append", r.vtep_mac, "dev", VXLAN_DEV, "dst", r.underlay_ip, "self", "permanent")
        n.ns.ip("neigh", "replace", r.vtep_ip, "lladdr", r.vtep_mac, "dev", VXLAN_DEV, "nud", "permanent")
        n.ns.ip("route", "replace", r.pod_cidr, "via", r.vtep_ip, "dev", VXLAN_DEV, "onlink")

    def _start_meshcut(self, n):
        cache = os.path.join(self.tmp, "cache-" + n.name)
        plugins = [{"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True,
                    "mtu": VXLAN_MTU,
                    "ipam": {"type": "host-local", "dataDir": os.path.join(self.tmp, "ipam-" + n.name),
                             "ranges": [[{"subnet": n.pod_cidr, "gateway": n.gw_ip}]],
                             "routes": [{"dst": "0.0.0.0/0"}]}}]
        cgroup = self.daemon_cgroup(n) if callable(self.daemon_cgroup) else self.daemon_cgroup
        if self.runtime == "cri":
            crinode = _crinode()
            n.cri = crinode.CriNode(n.name, n.pod_cidr, netns=n.ns.name, main_plugin=plugins[0],
                                    cni_bin_dirs=[d for d in CNI_BIN_DIRS if os.path.isdir(d)])
            cgroup = NodeCgroup(n.cri)
            cache = os.path.dirname(crinode.CNI_CACHE)  # containerd's libcni cache (results/ below)
        if self.meshcut:
            extra = self.daemon_extra(n) if callable(self.daemon_extra) else list(self.daemon_extra)
            n.daemon = mcnet.Daemon(cgroup, n.name, netns=n.ns,
                                    extra=["--cni-cache-dir", cache, "--gc-interval", "0"] + extra)
            n.daemon.start()
            conf = {"type": "meshcut", "pinRoot": n.daemon.pin_root,
                    "logFile": os.path.join(self.tmp, "meshcut-cni-%s.log" % n.name), "crossNode": self.cross_node}
            conf.update(self.meshcut_conf)
            plugins.append(conf)
        n.conflist = {"cniVersion": "1.0.0", "name": "mc-2node", "plugins": plugins}
        if self.runtime == "cri":
            n.cri.extra_plugins = plugins[1:]
            n.conflist = n.cri.conflist()
            mcnet._cleanups.append(n.cri.teardown)  # pods (CNI DEL) before meshcutd and the netns go
            n.cri.start()
            return
        n.rt = cnirun.Runtime(n.ns, n.conflist, [d for d in CNI_BIN_DIRS if os.path.isdir(d)], cache)

    # --- pods ---------------------------------------------------------------
    def add_pod(self, node, name, namespace="default", **cri_kw):
        """A pod on NODE ("n1"/"n2") through the CNI chain (RunPodSandbox
        with runtime "cri"; CRI_KW go to CriNode.run_pod); returns a Pod."""
        n = self.nodes[node] if isinstance(node, str) else node
        if self.runtime == "cri":
            pod = CriPod(n, name, n.cri.run_pod(name, namespace=namespace, **cri_kw))
            n.pods[name] = pod
            return pod
        ns = mcnet.Netns("%s-%s" % (n.name, name))
        self._pod_n += 1
        cid = "cid-%s-%s-%d" % (n.name, name, self._pod_n)
        args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_UID=uid-%s" % (namespace, name, cid)
        res = n.rt.add(cid, ns.path, args=args)
        pod = Pod(n, name, ns, cid, res)
        pod.cni_args = args
        n.pods[name] = pod
        # CNI DEL at teardown (best effort; it runs before the netns go).
        mcnet._cleanups.append(lambda: self.delete_pod(pod, quiet=True))
        return pod

    def delete_pod(self, pod, quiet=False):
        if pod.name not in pod.node.pods:
            return
        if self.runtime == "cri":
            pod.node.cri.remove_pod(pod.cri_pod)
            pod.node.pods.pop(pod.name, None)
            return
        try:
            pod.node.rt.delete(pod.cid, pod.path, args=pod.cni_args)
        except Exception as e:
            if not quiet:
                raise
            print("cleanup: CNI DEL %s: %s" % (pod.name, e), file=sys.stderr)
        pod.node.pods.pop(pod.name, None)
        pod.ns.remove()

    def all_pods(self):
        return [p for n in self.nodes.values() for p in n.pods.values()]

    # --- services -------------------------------------------------------------
    def set_services(self, services):
        """kube-proxy: the same rules on every node."""
        self.services = list(services)
        text = render_kube_proxy(self.services)
        for n in self.nodes.values():
            _restore(n.ns, text)

    # --- observation ------------------------------------------------------------
    def snapshot(self):
        """Per node: meshcutd counters and link counters of cni0, flannel.1, eth0."""
        out = {}
        for n in self.nodes.values():
            c = dict(n.counters())
            if self.kube_forward_invalid_drop:
                c["ct_invalid_dropped"] = n.invalid_drops()
            out[n.name] = {"counters": c,
                           "links": {d: n.link_stats(d) or {} for d in (BRIDGE, VXLAN_DEV, WIRE_DEV)}}
        return out

    @staticmethod
    def delta(after, before):
        out = {}
        for node, a in after.items():
            b = before.get(node, {"counters": {}, "links": {}})
            out[node] = {"counters": {k: v - b["counters"].get(k, 0) for k, v in a["counters"].items()
                                      if isinstance(v, int)},
                         "links": {d: {k: v - b["links"].get(d, {}).get(k, 0) for k, v in st.items()}
                                   for d, st in a["links"].items()}}
        return out

    @staticmethod
    def format_delta(d, prefix="tc_"):
        """One line per node: every counter starting with PREFIX (non-zero
        first, all listed), packets/bytes of cni0 and flannel.1."""
        lines = []
        for node, x in sorted(d.items()):
            mine = sorted((k, v) for k, v in x["counters"].items() if k.startswith(prefix))
            tc = " ".join("%s=%+d" % (k, v) for k, v in mine if v)
            zero = [k for k, v in mine if not v]
            if zero:
                tc += " (%d others +0)" % len(zero) if len(zero) > 3 else " " + " ".join("%s=+0" % k for k in zero)
            lk = []
            for dev in (BRIDGE, VXLAN_DEV):
                s = x["links"].get(dev, {})
                lk.append("%s rx %+d pk/%+d B tx %+d pk/%+d B" % (dev, s.get("rx_packets", 0), s.get("rx_bytes", 0),
                                                              s.get("tx_packets", 0), s.get("tx_bytes", 0)))
            inv = x["counters"].get("ct_invalid_dropped")
            lines.append("  %s: %s | %s%s" % (node, tc or "(no %s* counters)" % prefix, " | ".join(lk),
                                             "" if inv is None else " | conntrack INVALID dropped %+d" % inv))
        return "\n".join(lines)


# --- traffic helpers -------------------------------------------------------------

def listen_tcp(netns, ip, port=0, backlog=512):
    def mk():
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, port))
        s.listen(backlog)
        return s
    return mcnet.in_netns(netns, mk)


class RRServer:
    """A TCP request/response server in NETNS: reads one checksummed message
    (first 4 bytes: the wanted reply size), answers with one checksummed
    message "peer <ip> <port>\\n" + payload(seed, size), and records the peer
    it saw (so a test learns what SNAT did)."""

    def __init__(self, netns, ip, port=0):
        self.sock = listen_tcp(netns, ip, port)
        self.addr = self.sock.getsockname()
        self.peers = []
        self.errors = []
        self.lock = threading.Lock()
        threading.Thread(target=self._loop, daemon=True).start()
        mcnet._cleanups.append(self.close)

    def _loop(self):
        while True:
            try:
                c, peer = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c, peer), daemon=True).start()

    def _serve(self, c, peer):
        try:
            c.settimeout(30)
            req = streams.recv_msg(c)
            (want,) = struct.unpack("!I", req[:4])
            seed = int.from_bytes(hashlib.blake2b(req, digest_size=8).digest(), "big")
            head = ("peer %s %d\n" % peer).encode()
            c.sendall(streams.frame(head + streams.payload(seed, want)))
            streams.expect_eof(c, 30)
            with self.lock:
                self.peers.append(peer)
        except Exception as e:
            with self.lock:
                self.errors.append("server %s: %r" % (self.addr, e))
        finally:
            c.close()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def rr_client(addr, seed, req_size, reply_size, timeout=10):
    """One request/response against an RRServer (run in the client's netns).
    Returns (peer seen by the server, the client's view of its peer)."""
    req = struct.pack("!I", reply_size) + streams.payload(seed, max(0, req_size - 4))
    c = socket.create_connection(addr, timeout=timeout)
    try:
        view = c.getpeername()
        c.sendall(streams.frame(req))
        c.shutdown(socket.SHUT_WR)
        data = streams.recv_msg(c)
        head, body = data.split(b"\n", 1)
        rseed = int.from_bytes(hashlib.blake2b(req, digest_size=8).digest(), "big")
        if body != streams.payload(rseed, reply_size):
            raise streams.StreamError("reply payload differs")
        streams.expect_eof(c)
        _, ip, port = head.decode().split()
        return (ip, int(port)), view
    finally:
        c.close()


def parallel(netns, jobs, fn, workers=4):
    """Runs fn(job) for each job on WORKERS threads inside NETNS; returns
    (results, errors) with results in job order."""
    out = [None] * len(jobs)
    errs = []
    q = list(enumerate(jobs))
    lock = threading.Lock()

    def worker():
        mcnet._setns(netns.path)
        while True:
            with lock:
                if not q:
                    return
                i, job = q.pop(0)
            try:
                out[i] = fn(job)
            except Exception as e:
                with lock:
                    errs.append("%r: %r" % (job, e))

    ts = [threading.Thread(target=worker) for _ in range(min(workers, max(1, len(jobs))))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out, errs


# --- a DNS-like UDP responder (a real process in the pod) ------------------------

DNS_SERVER = r"""
import socket, struct, sys
ip, port, answer = sys.argv[1], int(sys.argv[2]), socket.inet_aton(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((ip, port))
print("ready", flush=True)
while True:
    q, peer = s.recvfrom(4096)
    if len(q) < 17:
        continue
    i = 12
    while i < len(q) and q[i]:
        i += 1 + q[i]
    qend = i + 5
    if qend > len(q):
        continue
    tid, flags = struct.unpack("!HH", q[:4])
    hdr = struct.pack("!HHHHHH", tid, 0x8180 | (flags & 0x0100), 1, 1, 0, 0)
    ans = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + answer
    s.sendto(hdr + q[12:qend] + ans, peer)
"""


def start_dns(cg, pod, answer, port=53):
    """A tiny DNS responder in POD (started in CG, then setns): every A query
    gets ANSWER. Returns the Popen."""
    p = mcnet.spawn([sys.executable, "-c", DNS_SERVER, pod.ip, str(port), answer], netns=pod.ns, cgroup=cg,
                    stdout=subprocess.PIPE, text=True)
    if p.stdout.readline().strip() != "ready":
        raise RuntimeError("DNS responder in %s did not start" % pod.name)
    return p


def dns_query(server, name, timeout=3.0, sock=None, rng=random):
    """One A query for NAME to SERVER (ip, port); returns (reply source
    address, answer ip). Checks the transaction id and the question."""
    tid = rng.randrange(1 << 16)
    qname = b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\0"
    q = struct.pack("!HHHHHH", tid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)
    own = sock is None
    s = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(q, server)
        r, src = s.recvfrom(4096)
    finally:
        if own:
            s.close()
    rtid, flags, qd, an = struct.unpack("!HHHH", r[:8])
    if rtid != tid or not flags & 0x8000 or an != 1 or r[12:12 + len(qname) + 4] != q[12:]:
        raise ValueError("bad DNS reply (tid %d/%d, flags %#x, an %d)" % (rtid, tid, flags, an))
    return src, socket.inet_ntoa(r[-4:])
