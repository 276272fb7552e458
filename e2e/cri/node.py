#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A test "node": a network namespace with its own containerd (CRI) in it.

    with CriNode("a", "10.244.1.0/24",
                 conflist_plugins_after_main=[{"type": "meshcut", ...}],
                 cni_bin_dirs=["/usr/lib/cni", "/path/to/build/meshcut"]) as node:
        pod = node.run_pod("web-0")          # RunPodSandbox through CRI
        pod.ip, pod.netns, pod.sid
        cid = node.run_container(pod, "srv", ["/bin/nc", "-lk", "-p", "8080", "-e", "cat"])
        node.sh("ip -br link")               # a command in the node's netns
        node.remove_pod(pod)

What start() sets up (everything unique per node, nothing in the host's
/etc/cni, /var/lib/containerd, /run/containerd or /var/run/netns/cni-*):

  netns        `mce-<name>-<rand>` (ip netns add); lo up. containerd runs in it
               (nsenter --net, NOT `ip netns exec`: that also unshares the mount
               namespace and remounts /sys, so containerd would see no cgroup
               mounts and its overlay/netns mounts would be invisible to us).
  dir          /tmp/mce-<name>-<rand>/ : root/ state/ containerd.sock,
               config.toml, containerd.log, cni/bin (symlinks), cni/net.d
               (the conflist), ipam/ (host-local dataDir), pods/ (log dirs).
               Pod netns are bind-mounted under state/netns/ by CRI
               (netns_mounts_under_state_dir = true).
  containerd   config version 2; CRI: sandbox_image = local pause image,
               restrict_oom_score_adj = true, runc (io.containerd.runc.v2,
               SystemdCgroup = false, runc Root under state/), cni bin_dir /
               conf_dir = the node's own, stream server on 127.0.0.1:random in
               the node netns. Images are imported with ctr after start.
  cgroups      pods get cgroup_parent `/mce-<name>-<rand>` (cgroupfs driver), so
               teardown can find and rmdir them.
  CNI          conflist `mce-<name>-<rand>`: bridge (unique bridge name
               `mcb<rand>`, isGateway, ipMasq as given, hairpin) + host-local
               over pod_cidr, then `conflist_plugins_after_main` entries.
               containerd 1.6 adds loopback itself: go-cni's WithLoNetwork
               prepends a network `cni-loopback` ({"type":"loopback"}) that it
               runs from the same bin_dir before the conflist, so `loopback` must
               be in bin_dir and must NOT be in the conflist. Its cache entry is
               /var/lib/cni/results/cni-loopback-<sandbox id>-lo.

node_mounts=True (the DaemonSet test): containerd runs in a mount namespace of
its own (unshare --mount --propagation unchanged: / stays private, so nothing
it mounts leaks to the machine, while /run/netns, a shared mount made by `ip
netns add`, still shows its pods' netns to us) with a fresh bpffs on
/sys/fs/bpf (made shared, for Bidirectional mounts) and <dir>/varlog bound on
/var/log: the CNI plugins it runs and the privileged pods it starts see the
node's own /sys/fs/bpf and /var/log, as on a real node; `node.host_sh()` runs a
command in that view. With netns_under_state=False pod netns are mounted where
kubelet's nodes have them, /var/run/netns/cni-<uuid> (teardown unmounts what
is left of ours).

teardown() (also on exceptions, via `with`): stop+remove every pod through
CRI, stop containerd, kill only the leftovers that carry this node's paths
(shims by their -address, containers via `runc --root <node state>`), unmount
whatever is still mounted under the node dir, rmdir the pod cgroups, remove
the node's /var/lib/cni/results entries, delete the netns and the dir.
"""
import glob
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import images  # noqa: E402
from cri import CriClient, CriError  # noqa: E402

CNI_CACHE = "/var/lib/cni/results"
DEBIAN_CNI = "/usr/lib/cni"
NETNS_PREFIX = "mce-"


def run(cmd, check=True, **kw):
    if isinstance(cmd, str):
        cmd = shlex.split(cmd)
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> {r.returncode}: {r.stdout}{r.stderr}")
    return r


def _become_subreaper():
    """PR_SET_CHILD_SUBREAPER on this process: containerd makes itself the
    subreaper of its shims; if it dies (crash, SIGKILL) they would be reparented
    to PID 1, which in this sandbox does not reap, and stay zombies."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


class Pod:
    """A pod sandbox created through CRI."""

    def __init__(self, node, name, sid, ip, netns, run_seconds):
        self.node = node
        self.name = name
        self.sid = sid
        self.ip = ip
        self.netns = netns
        self.run_seconds = run_seconds
        self.containers = []

    def sh(self, cmd, check=True):
        """A command (host binaries) in this pod's netns."""
        return run(["nsenter", f"--net={self.netns}", "sh", "-c", cmd], check=check)

    def __repr__(self):
        return f"Pod({self.name} {self.ip} {self.sid[:12]})"


class CriNode:
    def __init__(self, name, pod_cidr, conflist_plugins_after_main=(),
                 cni_bin_dirs=(DEBIAN_CNI,), ip_masq=False, cni_version="1.0.0",
                 base_dir=None, log_level="info", gateway=None, netns=None, main_plugin=None,
                 node_mounts=False, netns_under_state=True):
        """NETNS: run in this existing netns (a name under /var/run/netns; the
        caller owns it: teardown leaves it) instead of a new one. MAIN_PLUGIN:
        the conflist's first plugin (default: the bridge + host-local below).
        NODE_MOUNTS, NETNS_UNDER_STATE: see the module's docstring."""
        self.name = name
        self.pod_cidr = pod_cidr
        self.extra_plugins = [dict(p) for p in conflist_plugins_after_main]
        self.cni_bin_dirs = list(cni_bin_dirs)
        self.ip_masq = ip_masq
        self.cni_version = cni_version
        self.log_level = log_level
        self.gateway = gateway
        rnd = secrets.token_hex(3)
        self.id = f"{NETNS_PREFIX}{name}-{rnd}"
        self.netns = netns or self.id
        self.own_netns = netns is None
        self.netns_path = f"/var/run/netns/{self.netns}"
        self.main_plugin = dict(main_plugin) if main_plugin else None
        self.net_name = self.id                 # CNI network name
        self.bridge = (main_plugin or {}).get("bridge") or f"mcb{rnd}"  # <= 15 chars
        self.cgroup_parent = "/" + self.id
        self.dir = os.path.join(base_dir or "/tmp", self.id)
        self.root = os.path.join(self.dir, "root")
        self.state = os.path.join(self.dir, "state")
        self.sock = os.path.join(self.dir, "containerd.sock")
        self.config_path = os.path.join(self.dir, "config.toml")
        self.log_path = os.path.join(self.dir, "containerd.log")
        self.bin_dir = os.path.join(self.dir, "cni", "bin")
        self.conf_dir = os.path.join(self.dir, "cni", "net.d")
        self.ipam_dir = os.path.join(self.dir, "ipam")
        self.pod_log_root = os.path.join(self.dir, "pods")
        self.runc_root = os.path.join(self.state, "runc")
        self.node_mounts = node_mounts
        self.netns_under_state = netns_under_state
        self.varlog = os.path.join(self.dir, "varlog")
        self.pod_netns_paths = set()   # every pod netns seen (teardown: unmount what is left)
        self.proc = None
        self.cri = None
        self.pods = {}            # sid -> Pod (live)
        self.all_sids = set()     # every sandbox ever created here (for cache cleanup)
        self._netns_created = False
        self.pause_image = images.PAUSE_IMAGE
        self.app_image = images.APP_IMAGE

    # ---- setup -------------------------------------------------------------
    def conflist(self):
        bridge = {
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": True,
            "ipMasq": self.ip_masq,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.pod_cidr}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.ipam_dir,
            },
        }
        if self.gateway:
            bridge["ipam"]["ranges"][0][0]["gateway"] = self.gateway
        if self.main_plugin:
            bridge = self.main_plugin
        return {"cniVersion": self.cni_version, "name": self.net_name,
                "plugins": [bridge] + self.extra_plugins}

    def containerd_config(self):
        q = json.dumps  # TOML basic strings are JSON-compatible for our paths
        return f"""version = 2
root = {q(self.root)}
state = {q(self.state)}
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = {q(self.sock)}

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = {q(os.path.join(self.root, "opt"))}
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = {q(self.pause_image)}
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = {"true" if self.netns_under_state else "false"}
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    disable_apparmor = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = {q(self.bin_dir)}
      conf_dir = {q(self.conf_dir)}
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      snapshotter = "overlayfs"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = "runc"
          Root = {q(self.runc_root)}
          SystemdCgroup = false
"""

    def _make_bin_dir(self):
        os.makedirs(self.bin_dir, exist_ok=True)
        for src in self.cni_bin_dirs:
            if isinstance(src, (tuple, list)):          # (plugin type name, path)
                pairs = [(src[0], src[1])]
            elif os.path.isdir(src):
                pairs = [(f, os.path.join(src, f)) for f in sorted(os.listdir(src))]
            else:
                pairs = [(os.path.basename(src), src)]
            for name, p in pairs:
                if not (os.path.isfile(p) and os.access(p, os.X_OK)):
                    if not os.path.isdir(src if isinstance(src, str) else ""):
                        raise RuntimeError(f"CNI plugin {p} is not an executable file")
                    continue
                dst = os.path.join(self.bin_dir, name)
                if os.path.lexists(dst):
                    os.unlink(dst)            # later entries override earlier ones
                os.symlink(os.path.abspath(p), dst)
        missing = [p for p in ("bridge", "host-local", "loopback")
                   if not os.path.exists(os.path.join(self.bin_dir, p))]
        missing += [p["type"] for p in self.extra_plugins
                    if not os.path.exists(os.path.join(self.bin_dir, p["type"]))]
        if missing:
            raise RuntimeError(f"CNI plugins not found in {self.cni_bin_dirs}: {missing}")

    def start(self, timeout=30.0):
        try:
            self._start(timeout)
        except BaseException:
            self.teardown()
            raise
        return self

    def _start(self, timeout):
        for d in (self.root, self.state, self.conf_dir, self.ipam_dir, self.pod_log_root):
            os.makedirs(d, exist_ok=True)
        self._make_bin_dir()
        with open(os.path.join(self.conf_dir, "10-mce.conflist"), "w") as f:
            json.dump(self.conflist(), f, indent=2)
        with open(self.config_path, "w") as f:
            f.write(self.containerd_config())
        _become_subreaper()
        if self.own_netns:
            run(["ip", "netns", "add", self.netns])
            self._netns_created = True
            run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        elif not os.path.exists(self.netns_path):
            raise RuntimeError(f"netns {self.netns} does not exist ({self.netns_path})")
        log = open(self.log_path, "ab")
        argv = ["containerd", "--config", self.config_path, "--log-level", self.log_level]
        if self.node_mounts:
            os.makedirs(self.varlog, exist_ok=True)
            # what `ip netns add` does when it can: /run/netns a shared mount, so
            # the pod netns containerd mounts there (in its namespace) show here and
            # in HostToContainer mounts of it
            if not self.netns_under_state:
                os.makedirs("/run/netns", exist_ok=True)
                if run(["mount", "--make-shared", "/run/netns"], check=False).returncode != 0:
                    run(["mount", "--bind", "/run/netns", "/run/netns"])
                    run(["mount", "--make-shared", "/run/netns"])
            # the machine's bpffs is unmounted in this namespace only (/sys/fs/bpf is a
            # private mount): one mount there, the node's, shared (Bidirectional needs it)
            script = ("set -e; while mountpoint -q /sys/fs/bpf; do umount /sys/fs/bpf; done; "
                      "mount -t bpf bpf /sys/fs/bpf; mount --make-shared /sys/fs/bpf; "
                      "mount --bind %s /var/log; exec \"$@\"" % shlex.quote(self.varlog))
            argv = ["unshare", "--mount", "--propagation", "unchanged", "--",
                    "sh", "-c", script, "node-mounts"] + argv
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={self.netns_path}", "--"] + argv,
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True)   # not in our process group: Ctrl-C must not kill it
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited ({self.proc.returncode}):\n{self.log_tail()}")
            if os.path.exists(self.sock):
                try:
                    s = socket.socket(socket.AF_UNIX)
                    s.connect(self.sock)
                    s.close()
                    break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"containerd socket {self.sock} not up:\n{self.log_tail()}")
            time.sleep(0.05)
        images.import_images(self.sock)
        self.cri = CriClient(self.sock)
        self.cri.version()
        self.cri.wait_ready(timeout=max(1.0, deadline - time.monotonic()))

    def host_sh(self, cmd, check=True):
        """A shell command in the node's netns and mount namespace (its own
        /sys/fs/bpf and /var/log with node_mounts=True): what a node's root sees."""
        if not self.node_mounts:
            return self.sh(cmd, check=check)
        return run(["nsenter", "-t", str(self.proc.pid), "-m", "-n", "sh", "-c", cmd], check=check)

    def log_tail(self, n=40):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.teardown()
        return False

    def gateway_ip(self):
        """The bridge's address (host-local's default gateway: first host of the CIDR)."""
        import ipaddress
        return self.gateway or str(next(ipaddress.ip_network(self.pod_cidr).hosts()))

    # ---- pods --------------------------------------------------------------
    def run_pod(self, name, namespace="default", **kw):
        """RunPodSandbox; returns a Pod with its IP and netns path."""
        kw.setdefault("cgroup_parent", self.cgroup_parent)
        # without dns_config containerd copies the host's /etc/resolv.conf into the
        # pod; point it at the bridge gateway instead (node-local, nothing answers
        # unless a test runs a DNS server there or passes dns_servers=[cluster DNS])
        if "dns_servers" not in kw:
            kw["dns_servers"] = [self.gateway_ip()]
        uid = kw.pop("uid", None) or f"{self.id}-{name}"
        logdir = kw.pop("log_directory", None) or os.path.join(
            self.pod_log_root, f"{namespace}_{name}_{uid}")
        os.makedirs(logdir, exist_ok=True)
        t0 = time.perf_counter()
        sid = self.cri.run_pod(name, namespace=namespace, uid=uid, log_directory=logdir, **kw)
        dt = time.perf_counter() - t0
        self.all_sids.add(sid)
        ip = self.cri.pod_ip(sid)
        netns = self.cri.pod_netns(sid)
        pod = Pod(self, name, sid, ip, netns, dt)
        self.pod_netns_paths.add(netns)
        self.pods[sid] = pod
        return pod

    def run_container(self, pod, name, command, args=None, image=None, **kw):
        """Create+start a container (app image by default) in `pod`; returns its id."""
        cid = self.cri.run_container(pod.sid, name, image or self.app_image,
                                     command=command, args=args, **kw)
        pod.containers.append(cid)
        return cid

    def remove_pod(self, pod):
        sid = pod.sid if isinstance(pod, Pod) else pod
        self.cri.stop_pod(sid)
        self.cri.remove_pod(sid)
        self.pods.pop(sid, None)

    # ---- node helpers ------------------------------------------------------
    def sh(self, cmd, check=True):
        """A shell command in the node's netns."""
        return run(["ip", "netns", "exec", self.netns, "sh", "-c", cmd], check=check)

    def bridge_ports(self):
        out = run(["ip", "-n", self.netns, "-j", "link", "show", "master", self.bridge],
                  check=False).stdout.strip()
        return [l["ifname"] for l in json.loads(out)] if out else []

    def ipam_reservations(self):
        """host-local reservation files (one per allocated IP) of this node."""
        d = os.path.join(self.ipam_dir, self.net_name)
        if not os.path.isdir(d):
            return []
        return sorted(f for f in os.listdir(d)
                      if not f.startswith("last_reserved_ip") and f != "lock")

    def cni_cache_files(self, sids=None):
        """This node's files in /var/lib/cni/results (conflist and loopback)."""
        sids = self.all_sids if sids is None else set(sids)
        out = glob.glob(os.path.join(CNI_CACHE, f"{self.net_name}-*"))
        for sid in sids:
            out += glob.glob(os.path.join(CNI_CACHE, f"cni-loopback-{sid}-*"))
        return sorted(out)

    def mounts_under_dir(self):
        res = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4].replace("\\040", " ")
                if mp == self.dir or mp.startswith(self.dir + "/"):
                    res.append(mp)
        return res

    def cgroup_dirs(self):
        return sorted(glob.glob(f"/sys/fs/cgroup/*{self.cgroup_parent}"))

    # ---- teardown ------------------------------------------------------------
    def _pids_matching(self, needle):
        pids = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if needle in cmd:
                pids.append(int(p))
        return pids

    def teardown(self):
        errors = []

        def attempt(what, fn, *a):
            try:
                fn(*a)
            except Exception as e:  # keep going: cleanup must be complete
                errors.append(f"{what}: {e}")

        if self.cri is not None and self.proc is not None and self.proc.poll() is None:
            try:
                sids = [p.id for p in self.cri.list_pods()]
            except CriError as e:
                errors.append(f"list pods: {e}")
                sids = list(self.pods)
            for sid in sids:
                self.all_sids.add(sid)
                attempt(f"stop pod {sid[:12]}", self.cri.stop_pod, sid)
                attempt(f"remove pod {sid[:12]}", self.cri.remove_pod, sid)
            self.pods.clear()
        if self.cri is not None:
            self.cri.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # leftovers: containers (runc state under our dir) and shims (-address our sock)
        if os.path.isdir(self.runc_root):
            for ns_root in glob.glob(os.path.join(self.runc_root, "*")):
                out = run(["runc", "--root", ns_root, "list", "-q"], check=False).stdout.split()
                for cid in out:
                    run(["runc", "--root", ns_root, "kill", "--all", cid, "KILL"], check=False)
                    run(["runc", "--root", ns_root, "delete", "--force", cid], check=False)
        shims = self._pids_matching(f"-address {self.sock}")
        for pid in shims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # shims orphaned by a dead containerd were reparented to us (subreaper):
        # reap them so no zombie stays behind
        for pid in shims:
            for _ in range(50):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        break
                except ChildProcessError:   # not our child (reaped elsewhere)
                    break
                time.sleep(0.02)
        # mounts under our dir (rootfs overlays, shm, netns bind mounts), deepest first
        for _ in range(3):
            mps = sorted(set(self.mounts_under_dir()), key=len, reverse=True)
            if not mps:
                break
            for mp in mps:
                run(["umount", "-l", mp], check=False)
        left = self.mounts_under_dir()
        if left:
            errors.append(f"mounts left: {left}")
        # pod cgroups (cgroupfs driver under our parent), deepest first
        for top in self.cgroup_dirs():
            for d, _, _ in sorted(os.walk(top), key=lambda t: len(t[0]), reverse=True):
                try:
                    os.rmdir(d)
                except OSError as e:
                    errors.append(f"rmdir {d}: {e}")
        for f in self.cni_cache_files():
            attempt(f"rm {f}", os.unlink, f)
        if not self.netns_under_state:   # ours under /var/run/netns, if containerd left any
            for p in sorted(self.pod_netns_paths):
                if p.startswith("/var/run/netns/cni-") and os.path.exists(p):
                    run(["umount", p], check=False)
                    attempt(f"rm {p}", os.unlink, p)
        if self._netns_created:
            r = run(["ip", "netns", "del", self.netns], check=False)
            if r.returncode != 0 and os.path.exists(self.netns_path):
                errors.append(f"netns del {self.netns}: {r.stderr.strip()}")
            self._netns_created = False
        if os.path.isdir(self.dir) and not self.mounts_under_dir():
            # keep the containerd log when something went wrong
            if errors:
                keep = f"{self.dir}.containerd.log"
                attempt("save log", shutil.copy, self.log_path, keep)
                errors.append(f"containerd log kept at {keep}")
            shutil.rmtree(self.dir, ignore_errors=True)
        self.proc = None
        self.cri = None
        if errors:
            print(f"[{self.id}] teardown problems:\n  " + "\n  ".join(errors), file=sys.stderr)
        return errors


def leftovers():
    """Things any CriNode would have left (by the mce- prefix): for a final check."""
    out = {}
    out["netns"] = [n for n in os.listdir("/var/run/netns")
                    if n.startswith(NETNS_PREFIX)] if os.path.isdir("/var/run/netns") else []
    out["dirs"] = glob.glob(f"/tmp/{NETNS_PREFIX}*")
    out["cni_cache"] = glob.glob(os.path.join(CNI_CACHE, f"{NETNS_PREFIX}*"))
    out["cgroups"] = glob.glob(f"/sys/fs/cgroup/*/{NETNS_PREFIX}*")
    return {k: v for k, v in out.items() if v}
