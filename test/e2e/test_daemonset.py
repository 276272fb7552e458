#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""e2e tier, the DaemonSet run for real: meshcutd from its image
(deploy/mkimage.py), imported into a CRI node's containerd and run through CRI
as conf/meshcut-daemonset.yaml says (e2e/cri/daemonset.py reads the manifest:
hostNetwork, privileged, capabilities, command/args, env, the ConfigMap as a
file, the hostPath mounts with their propagation, the readiness probe).

The node (e2e/cri CriNode, node_mounts=True) has its own /sys/fs/bpf (a fresh
bpffs in containerd's mount namespace) and /var/log; the manifest's hostPaths
map to the node's view: /sys/fs/cgroup -> the node's cgroup v2 dir (never the
machine's root cgroup), /opt/cni/bin and /etc/cni/net.d -> the node's CNI dirs,
/var/lib/cni, /var/run/netns, /sys/fs/bpf, /var/log -> themselves.

  1. the pod's readiness probe goes ready, and then the programs are attached
     (`meshcutd status` in the pod: sockops link, layout, daemon running);
  2. the plugin is installed into the node's CNI bin dir (the image's binary,
     byte for byte) and chained last in the node's conflist;
  3. pods created afterwards are enrolled (`meshcutd pods` in the pod) and a
     1 MiB transfer between two of them takes the same-node shortcut
     (bytes_redirect_node grows by >= 1 MiB; md5 matches);
  4. uninstall (MESHCUT_MODE=uninstall, as the manifest's header documents):
     its readiness goes ready; the conflist and the bin dir are byte for byte as
     before install; no pin is left in the node's bpffs, no meshcut tc filter on
     any node interface; a connection opened while accelerated keeps working
     (1 MiB more, md5 of everything received matches); the run-mode probe
     (`meshcutd status --require-running`) now fails; a new pod is not enrolled
     and works;
  5. nothing of the node is left.

  3b. upgrade: the pod replaced by one from a newer image (another name and
     label) while a client pod fetches 64 KiB over a new connection per request
     (busybox wget, md5 checked): zero failed requests, counters (sampled from
     the pins every 0.2 s) never go backwards, the load and a connection
     accelerated before the upgrade keep the shortcut afterwards;

Run as root with Debian's python: /usr/bin/python3 test/e2e/test_daemonset.py
"""
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import crimc  # noqa: E402
import mcnet  # noqa: E402
from crimc import MANIFEST, MKIMAGE, PLUGIN  # noqa: E402
from mcnet import log  # noqa: E402
from mctest import abi  # noqa: E402

CIDR = "10.244.58.0/24"
MIB = 1 << 20


def snapshot(d):
    """name -> ('link', target) | ('file', sha256, mode): a directory byte for byte."""
    out = {}
    for n in sorted(os.listdir(d)):
        p = os.path.join(d, n)
        if os.path.islink(p):
            out[n] = ("link", os.readlink(p))
        else:
            with open(p, "rb") as f:
                out[n] = ("file", hashlib.sha256(f.read()).hexdigest(), oct(os.stat(p).st_mode))
    return out


def main():
    mcnet.require_root()
    for t in ("containerd", "ctr", "runc", "nsenter", "unshare", "tc"):
        if not shutil.which(t):
            mcnet.skip_or_fail("%s not found: run .ci/deps.sh" % t)
    try:
        import yaml  # noqa: F401
        import grpc  # noqa: F401
    except ImportError as e:
        mcnet.skip_or_fail("%s: apt-get install python3-yaml python3-grpcio (.ci/deps.sh)" % e)
    ck = mcnet.Checks()
    tmp = tempfile.mkdtemp(prefix="mc-ds-")
    os.chmod(tmp, 0o755)
    node = None
    try:
        from node import CriNode
        node = CriNode("ds", CIDR, node_mounts=True, netns_under_state=False)
        node.start()
        run(ck, node, tmp)
    except Exception as e:
        traceback.print_exc()
        ck.check(False, "test ran to the end (%s: %s)" % (type(e).__name__, e))
        if node is not None:
            print("containerd log tail:\n" + node.log_tail(20), file=sys.stderr)
    finally:
        if node is not None:
            node.teardown()
            from node import leftovers
            left = {k: [x for x in v if node.id in x] for k, v in leftovers().items()}
            left = {k: v for k, v in left.items() if v}
            ck.check(not left, "nothing of the node left (netns, dirs, CNI cache, cgroups)", left)
        shutil.rmtree(tmp, ignore_errors=True)
    ck.done()


def run(ck, node, tmp):
    import daemonset
    spec = daemonset.DaemonSetSpec(MANIFEST)
    # ---- the image, into the node's containerd -----------------------------------
    img = os.path.join(tmp, "meshcut-image.tar")
    rootfs = os.path.join(tmp, "rootfs.tar")
    r = subprocess.run(["/usr/bin/python3", MKIMAGE, "--meshcutd", mcnet.MESHCUTD,
                        "--plugin", PLUGIN, "--out", img, "--rootfs-tar", rootfs, "--name", spec.image],
                       capture_output=True, text=True)
    ck.check(r.returncode == 0, "image %s built" % spec.image, r.stderr.strip()[-300:])
    with tarfile.open(rootfs) as tf:
        image_plugin = tf.extractfile("opt/meshcut/bin/meshcut").read()
    r = subprocess.run(["ctr", "-a", node.sock, "-n", "k8s.io", "image", "import", img], capture_output=True, text=True)
    ck.check(r.returncode == 0 and node.cri.image_present(spec.image), "imported into the node's containerd",
             r.stderr.strip())
    cg = crimc.NodeCgroup(node)
    host = {"/sys/fs/cgroup": cg.path, "/opt/cni/bin": node.bin_dir, "/etc/cni/net.d": node.conf_dir}
    for p in spec.host_paths():
        if p not in host and p not in ("/sys/fs/bpf", "/var/lib/cni", "/var/run/netns", "/var/log"):
            raise RuntimeError("the manifest mounts hostPath %s: map it to the node in test_daemonset.py" % p)
    # realpath: containerd checks propagation on the path as given (/var/run -> /run)
    host_path = lambda p: host.get(p, os.path.realpath(p))  # noqa: E731
    before_conf, before_bin = snapshot(node.conf_dir), snapshot(node.bin_dir)
    # a fresh bpffs holds the kernel's own maps.debug / progs.debug (bpf_preload)
    before_bpffs = node.host_sh("ls -A /sys/fs/bpf", check=False).stdout.split()

    # ---- 1. run mode: ready once attached ---------------------------------------------
    t0 = time.monotonic()
    pod = daemonset.DaemonSetPod(node, spec, host_path, tmp)
    probes = []
    while time.monotonic() - t0 < 30:
        rc = pod.probe()
        probes.append(rc)
        if rc == 0:
            break
        time.sleep(0.2)
    t_ready = time.monotonic() - t0
    rc, out, err = pod.exec(["meshcutd", "status", "--json"])
    st = json.loads(out) if rc == 0 else {}
    att = st.get("attachments", {})
    ck.check(probes and probes[-1] == 0, "readiness probe ready after %.1f s (report only; %d probes, first %s)"
             % (t_ready, len(probes), probes[:1]), pod.log()[-800:])
    ck.check(st.get("daemon", {}).get("running") and (att.get("sockops") or {}).get("attached")
             and st.get("pin_root") == "/sys/fs/bpf/meshcut",
             "ready => `meshcutd status` in the pod: daemon running, sockops attached, pins at /sys/fs/bpf/meshcut",
             {k: v for k, v in st.items() if k in ("daemon", "attachments", "pin_root")} or err)
    pins = node.host_sh("ls /sys/fs/bpf/meshcut", check=False).stdout.split()
    ck.check(len(pins) > 0 and not os.path.exists("/sys/fs/bpf/meshcut/" + (pins[0] if pins else "x")),
             "the pins are in the node's bpffs (%d entries), not the machine's" % len(pins))

    # ---- 2. installed and chained -------------------------------------------------------
    got = crimc.wait_for(lambda: os.path.isfile(os.path.join(node.bin_dir, "meshcut")), 10)
    inst = open(os.path.join(node.bin_dir, "meshcut"), "rb").read() if got else b""
    ck.check(inst == image_plugin, "plugin installed into the node's CNI bin dir: the image's binary (%d B)" % len(inst))
    conf = json.load(open(os.path.join(node.conf_dir, "10-mce.conflist")))
    last = conf["plugins"][-1]
    ck.check(last.get("type") == "meshcut" and last.get("pinRoot") == "/sys/fs/bpf/meshcut"
             and [p["type"] for p in conf["plugins"]][:-1] == ["bridge"],
             "chained last in the node's conflist: %s" % [p["type"] for p in conf["plugins"]], last)
    time.sleep(1.5)   # containerd's CNI config watcher picks up the new conflist

    # ---- 3. pods created afterwards: enrolled, accelerated ------------------------------
    srv, cli = node.run_pod("srv"), node.run_pod("cli")
    rc, out, _ = pod.exec(["meshcutd", "pods", "--json"])
    ids = {x.get("container_id") for x in (json.loads(out) if rc == 0 else [])}
    ck.check(srv.sid in ids and cli.sid in ids, "pods created afterwards are enrolled (`meshcutd pods` in the pod)")
    sc = node.run_container(srv, "server", ["/bin/sh", "-c", "sleep 100000 | nc -l -p 8080 > /tmp/recv"])
    cc = node.run_container(cli, "client", ["/bin/sh", "-c", "mkfifo /tmp/f && sleep 100000 > /tmp/f & "
                                            "sleep 0.2; nc %s 8080 < /tmp/f; sleep 100000" % "SRVIP"
                                            .replace("SRVIP", srv.ip)])
    crimc.wait_for(lambda: ":8080" in srv.sh("ss -tn", check=False).stdout, 10)

    def counters():
        rc, out, _ = pod.exec(["meshcutd", "status", "--json"]) if pod else (1, "", "")
        return json.loads(out)["counters"] if rc == 0 else {}

    def send(n):   # N random bytes over the live connection; returns their md5
        node.cri.exec_sync(cc, ["/bin/sh", "-c", "head -c %d /dev/urandom > /tmp/c%d && cat /tmp/c%d > /tmp/f" % (n, n, n)],
                           timeout=30)
        return subprocess.run(["nsenter", "-t", str(node.cri.container_pid(cc)), "-m", "cat", "/tmp/c%d" % n],
                              capture_output=True).stdout

    def recv_size():
        rc, out, _ = node.cri.exec_sync(sc, ["/bin/sh", "-c", "wc -c < /tmp/recv"])
        return int(out.strip() or -1) if rc == 0 else -1

    c0 = counters()
    sent = send(MIB)
    crimc.wait_for(lambda: recv_size() == MIB, 10, 0.05)
    dc = mcnet.delta(c0, counters())
    ck.check(recv_size() == MIB and dc.get("bytes_redirect_node", 0) >= MIB,
             "1 MiB between two new pods: received, bytes_redirect_node +%d (same-node shortcut)"
             % dc.get("bytes_redirect_node", 0))

    # ---- 3b. upgrade to a newer image under load -------------------------------------------
    img2 = os.path.join(tmp, "meshcut-image-2.tar")
    name2 = spec.image.rsplit(":", 1)[0] + ":upgrade"
    r = subprocess.run(["/usr/bin/python3", MKIMAGE, "--meshcutd", mcnet.MESHCUTD,
                        "--plugin", PLUGIN, "--out", img2, "--name", name2,
                        "--label", "org.opencontainers.image.version=upgrade"], capture_output=True, text=True)
    r2 = subprocess.run(["ctr", "-a", node.sock, "-n", "k8s.io", "image", "import", img2], capture_output=True, text=True)
    ck.check(r.returncode == 0 and r2.returncode == 0, "newer image %s built and imported" % name2,
             (r.stderr + r2.stderr).strip()[-300:])
    web = node.run_container(srv, "web", ["/bin/sh", "-c", "mkdir -p /www && head -c 65536 /dev/urandom > /www/f && "
                                          "exec httpd -f -p 8081 -h /www"])
    crimc.wait_for(lambda: ":8081" in srv.sh("ss -ltn", check=False).stdout, 10)
    want = node.cri.exec_sync(web, ["/bin/sh", "-c", "md5sum < /www/f"])[1].decode().split()[0]
    load = node.run_container(cli, "load", ["/bin/sh", "-c",
        "ok=0; fail=0; while [ ! -e /tmp/stop ]; do "
        "if wget -q -O /tmp/g http://%s:8081/f && [ \"$(md5sum < /tmp/g | cut -d' ' -f1)\" = %s ]; "
        "then ok=$((ok+1)); else fail=$((fail+1)); [ -e /tmp/err ] || { wget -O /tmp/g2 http://%s:8081/f; echo rc=$?; md5sum < /tmp/g2; ls -l /tmp/g2; } > /tmp/err 2>&1; fi; echo \"$ok $fail\" > /tmp/r.tmp; mv /tmp/r.tmp /tmp/r; done; "
        "touch /tmp/done; sleep 100000" % (srv.ip, want, srv.ip)])
    host_status = "%s status --json --pin-root /sys/fs/bpf/meshcut" % mcnet.MESHCUTD
    samples = []
    import threading
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            r = node.host_sh(host_status, check=False)
            if r.returncode == 0:
                samples.append(json.loads(r.stdout)["counters"])
            time.sleep(0.2)
    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    time.sleep(2)
    c_up0 = counters()
    t0 = time.monotonic()
    pod.delete()
    pod = daemonset.DaemonSetPod(node, spec, host_path, tmp, image=name2, name=spec.name + "-" + node.name + "-2")
    ready = crimc.wait_for(lambda: pod.probe() == 0, 30, 0.2)
    t_up = time.monotonic() - t0
    time.sleep(2)
    node.cri.exec_sync(load, ["/bin/sh", "-c", "touch /tmp/stop"])
    crimc.wait_for(lambda: node.cri.exec_sync(load, ["/bin/sh", "-c", "test -e /tmp/done"])[0] == 0, 15)
    stop.set()
    th.join(5)
    res = node.cri.exec_sync(load, ["/bin/sh", "-c", "cat /tmp/r"])[1].decode().split()
    n_ok, n_fail = (int(res[0]), int(res[1])) if len(res) == 2 else (0, -1)
    if n_fail:
        log("first failed request: %s" % node.cri.exec_sync(load, ["/bin/sh", "-c", "cat /tmp/err"])[1].decode()[-400:])
    c_up1 = counters()
    ck.check(ready, "the new pod (image %s) went ready %.1f s after the old one's deletion began (report only)"
             % (name2, t_up), pod.log()[-600:])
    log("upgrade under load: %d requests (64 KiB, a new connection each), %d failed" % (n_ok + n_fail, n_fail))
    ck.check(n_ok > 0 and n_fail == 0, "upgrade under load: %d requests, 0 failed (status and md5 of each)" % n_ok,
             "%d failed" % n_fail)
    back = [(k, a[k], b[k]) for a, b in zip(samples, samples[1:]) for k in a if k in b and b[k] < a[k]]
    ck.check(len(samples) > 5 and not back, "counters never went backwards over %d samples across the upgrade"
             % len(samples), back[:5])
    grew = mcnet.delta(c_up0, c_up1).get("bytes_redirect_node", 0)
    ck.check(grew >= 65536 * max(1, n_ok // 2), "the load kept the same-node shortcut: bytes_redirect_node +%d" % grew)
    c1 = counters()
    sent += send(MIB + 1)   # another size: another file name in send()
    crimc.wait_for(lambda: recv_size() == len(sent), 10, 0.05)
    dc = mcnet.delta(c1, counters())
    ck.check(recv_size() == len(sent) == 2 * MIB + 1 and dc.get("bytes_redirect_node", 0) >= MIB,
             "the connection accelerated before the upgrade still is: 1 MiB more, bytes_redirect_node +%d"
             % dc.get("bytes_redirect_node", 0))

    # ---- 4. uninstall -----------------------------------------------------------------------
    pod.delete()
    upod = daemonset.DaemonSetPod(node, spec, host_path, tmp, env={"MESHCUT_MODE": "uninstall"},
                                  name=spec.name + "-" + node.name + "-u")
    ready = crimc.wait_for(lambda: upod.probe() == 0, 30, 0.2)
    ck.check(ready, "uninstall pod's readiness probe ready (uninstall-cni and detach succeeded)", upod.log()[-800:])
    ck.check(snapshot(node.conf_dir) == before_conf, "conflist byte for byte as before install")
    ck.check(snapshot(node.bin_dir) == before_bin, "CNI bin dir byte for byte as before install",
             set(snapshot(node.bin_dir)) ^ set(before_bin))
    left = node.host_sh("ls -A /sys/fs/bpf", check=False).stdout.split()
    ck.check(left == before_bpffs, "no pin left in the node's bpffs (as before install: %s)" % before_bpffs, left)
    links = json.loads(node.sh("ip -j link show").stdout)
    ours = [l["ifname"] for l in links if abi.is_ours(crimc.tc_filters(node, l["ifname"]))]
    ck.check(not ours, "no meshcut tc filter on any of the node's %d interfaces" % len(links), ours)
    sent += send(2 * MIB)
    crimc.wait_for(lambda: recv_size() == len(sent), 10, 0.05)
    r = subprocess.run(["nsenter", "-t", str(node.cri.container_pid(sc)), "-m", "cat", "/tmp/recv"], capture_output=True)
    ck.check(len(sent) == 4 * MIB + 1 and r.stdout == sent,
             "the connection opened while accelerated fell back with nothing lost: %d B, md5 %s"
             % (len(r.stdout), hashlib.md5(r.stdout).hexdigest()[:12]))
    rc, _, _ = upod.exec(["/bin/sh", "-c", "meshcutd status --json --require-running >/dev/null"])
    ck.check(rc != 0, "the run-mode readiness command fails once detached (exit %d)" % rc)
    p3 = node.run_pod("after")
    rc, out, _ = upod.exec(["meshcutd", "pods", "--json"])
    ck.check(p3.ip and p3.sid not in out, "a pod created after uninstall runs (%s) and is not enrolled" % p3.ip)
    upod.delete()


if __name__ == "__main__":
    main()
