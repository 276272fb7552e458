#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""netns tier, CNI plugin security and robustness: the plugin trusts nothing and
nothing wedges the node. Everything in throw-away namespaces made here (a node
netns with meshcutd, pods, a dummy "uplink" inside the node netns).

  - a macvlan and an ipvlan pod interface (IFLA_LINK = their parent, the
    dummy uplink) are refused: no tc filter on the parent, no record, ADD
    passes prevResult through (fail-open, counted as failed); failPolicy
    closed gets CNI error 100 naming the kind; a real veth still enrolls;
  - a 100-character CNI_IFNAME gets CNI error 4 (no crash), DEL exits 0;
  - a symlink logFile is refused and its target untouched;
  - GC of network A keeps network B's records (and DEL of A keeps them);
  - with the pin lock held, ADD and DEL return within the deadline (ADD
    fail-open, DEL exit 0 keeping the record), and a later GC removes it.
"""
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcnet  # noqa: E402
from mctest import abi  # noqa: E402
from mcnet import log  # noqa: E402

PLUGIN = os.environ.get("MESHCUT_CNI_PLUGIN", os.path.join(mcnet.BUILD, "cni-plugin", "meshcut"))
MC_S_ADD_FAILED = 3  # enum mc_cni_stat in bpf/include/meshcut_kern_user.h (MC_S_ADD=0, ENROLLED, SKIPPED, FAILED)


def run_plugin(node, conf, command, cid="", netns="", ifname="eth0", prev=None, timeout=10, cni_version="1.0.0"):
    """One plugin run inside the node netns; rc None if it had to be killed at TIMEOUT."""
    c = dict(conf, cniVersion=cni_version)
    if prev is not None:
        c["prevResult"] = prev
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
           "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=%s" % (cid or "x"),
           "CNI_PATH": os.path.dirname(PLUGIN), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    t0 = time.monotonic()
    p = subprocess.Popen([PLUGIN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env, preexec_fn=lambda: mcnet._setns(node.path))
    try:
        out, err = p.communicate(json.dumps(c), timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        rc = None
    return rc, out, err, time.monotonic() - t0


def result_json(out):
    try:
        return json.loads(out)
    except ValueError:
        return None


def prev_result(pod, ip, ifname="eth0"):
    return {"cniVersion": "1.0.0", "interfaces": [{"name": ifname, "sandbox": pod.path}],
            "ips": [{"address": ip + "/24", "interface": 0}]}


def filters(node, dev):
    return node.run("tc", "filter", "show", "dev", dev, "ingress", check=False).stdout


def our_filter(node, dev):
    return abi.is_ours(filters(node, dev))


def cni_stat(d, idx):
    r = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", d.pin_root + "/maps/mc_cni_stats"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None
    for e in json.loads(r.stdout):
        k, v = e.get("key"), e.get("value")
        if isinstance(k, list):  # no BTF: little-endian hex bytes
            k = int.from_bytes(bytes(int(x, 16) for x in k), "little")
            v = int.from_bytes(bytes(int(x, 16) for x in v), "little")
        if k == idx:
            return v
    return None


def records(d):
    return {p.get("container_id"): p for p in json.loads(d.cli("pods", "--json").stdout)}


def main():
    mcnet.require_root()
    if not os.access(PLUGIN, os.X_OK):
        mcnet.skip_or_fail("CNI plugin not built at %s (set MESHCUT_BUILD)" % PLUGIN)
    log("plugin under test: %s" % PLUGIN)
    ck = mcnet.Checks()
    cg = mcnet.Cgroup("cnisec")
    cg.join()
    node = mcnet.Netns("node")
    tmp = tempfile.mkdtemp(prefix="mc-cnisec-")
    mcnet._cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    d = mcnet.Daemon(cg, "cnisec", netns=node, extra=["--recheck-interval", "0"])
    d.start()
    log_file = os.path.join(tmp, "cni.log")
    state = os.path.join(tmp, "state")
    conf = {"name": "net-a", "type": "meshcut", "pinRoot": d.pin_root, "logFile": log_file, "stateDir": state}

    def log_lines():
        try:
            return [json.loads(x) for x in open(log_file)]
        except FileNotFoundError:
            return []

    # --- a. macvlan / ipvlan on an "uplink" in the node netns --------------
    # A dummy device where the kernel has it; else one end of a veth pair
    # whose both ends stay in the node netns (CONFIG_DUMMY is off on some
    # builds). Either way the plugin must not touch it.
    uplink = "mcup%s" % mcnet.RUN_ID[-3:]
    if subprocess.run(["ip", "-n", node.name, "link", "add", uplink, "type", "dummy"], capture_output=True).returncode:
        node.ip("link", "add", uplink, "type", "veth", "peer", "name", uplink + "p")
        node.ip("link", "set", uplink + "p", "up")
        log("no dummy device in this kernel: the uplink is a veth end inside the node netns")
    node.ip("link", "set", uplink, "up")
    up_idx = json.loads(node.run("ip", "-j", "link", "show", uplink).stdout)[0]["ifindex"]
    for n, (kind, extra) in enumerate((("macvlan", ["mode", "bridge"]), ("ipvlan", ["mode", "l2"]))):
        tmpname = "mc%s%d" % (mcnet.RUN_ID[-3:], n)
        r = subprocess.run(["ip", "-n", node.name, "link", "add", "link", uplink, "name", tmpname, "type", kind, *extra],
                           capture_output=True, text=True)
        if r.returncode:
            log("%s not available in this kernel (%s): skipped" % (kind, r.stderr.strip()))
            continue
        pod = mcnet.Netns("%s" % kind[:3])
        node.ip("link", "set", tmpname, "netns", pod.name)
        pod.ip("link", "set", tmpname, "name", "eth0")
        pod.ip("link", "set", "eth0", "up")
        info = json.loads(pod.run("ip", "-j", "link", "show", "eth0").stdout)[0]
        log("%s in the pod: IFLA_LINK %s (the uplink is %d), link_netnsid %s"
            % (kind, info.get("link_index"), up_idx, info.get("link_netnsid")))
        failed0 = cni_stat(d, MC_S_ADD_FAILED) or 0
        prev = prev_result(pod, "10.253.%d.5" % n)
        rc, out, err, secs = run_plugin(node, conf, "ADD", "cid-%s" % kind, pod.path, prev=prev)
        res = result_json(out)
        ck.check(rc == 0 and res and res["ips"][0]["address"] == prev["ips"][0]["address"],
                 "%s pod: ADD exits %s and passes prevResult through (fail-open)" % (kind, rc))
        ck.check(not our_filter(node, uplink) and "clsact" not in
                 node.run("tc", "qdisc", "show", "dev", uplink).stdout,
                 "%s pod: no tc filter and no clsact qdisc on its parent %s (tc filter show: %r)"
                 % (kind, uplink, filters(node, uplink).strip()[:120]))
        ck.check("cid-%s" % kind not in records(d), "%s pod: not enrolled (no record)" % kind)
        refusal = [x for x in log_lines() if x.get("containerID") == "cid-%s" % kind and kind in x.get("error", "")
                   and "not a veth" in x.get("error", "")]
        ck.check(refusal, "%s pod: the log says why: %s" % (kind, refusal[0]["error"].splitlines()[0] if refusal else None))
        failed1 = cni_stat(d, MC_S_ADD_FAILED)
        ck.check(failed1 == failed0 + 1, "%s pod: counted as a failed enrollment (mc_cni_stats ADD_FAILED %s -> %s)"
                 % (kind, failed0, failed1))
        rc, out, err, _ = run_plugin(node, dict(conf, failPolicy="closed"), "ADD", "cid-%s" % kind, pod.path, prev=prev)
        e = result_json(out) or {}
        ck.check(rc == 1 and e.get("code") == 100 and kind in e.get("details", "") and not our_filter(node, uplink),
                 "%s pod, failPolicy closed: CNI error %s naming the kind" % (kind, e.get("code")))
        rc, *_ = run_plugin(node, conf, "DEL", "cid-%s" % kind, pod.path, prev=prev)
        ck.check(rc == 0, "%s pod: DEL exits 0" % kind)

    # A real veth pair still enrolls (the check is not a blanket refusal).
    pv = mcnet.Netns("veth")
    _, host_if = mcnet.veth_pair(pv, node, a_ip="10.253.9.5", a_name="eth0")
    rc, out, *_ = run_plugin(node, conf, "ADD", "cid-veth", pv.path, prev=prev_result(pv, "10.253.9.5"))
    recs = records(d)
    ck.check(rc == 0 and "cid-veth" in recs and recs["cid-veth"]["host_veth"] == host_if and our_filter(node, host_if),
             "a veth pod is enrolled and our tc filter is on its node end %s" % host_if)

    # --- b. a 100-character CNI_IFNAME ------------------------------------
    long_if = "e" * 100
    rc, out, err, _ = run_plugin(node, conf, "ADD", "cid-long", pv.path, ifname=long_if,
                                 prev=prev_result(pv, "10.253.9.6", ifname=long_if))
    e = result_json(out) or {}
    ck.check(rc == 1 and e.get("code") == 4 and "CNI_IFNAME" in e.get("msg", ""),
             "ADD with a 100-character CNI_IFNAME: exit %s, CNI error %s: %s" % (rc, e.get("code"), e.get("msg")))
    rc, out, *_ = run_plugin(node, conf, "DEL", "cid-long", pv.path, ifname=long_if)
    ck.check(rc == 0 and not out.strip(), "DEL with a 100-character CNI_IFNAME exits 0 (DEL never fails)")

    # --- c. symlink logFile -------------------------------------------------
    precious = os.path.join(tmp, "precious")
    with open(precious, "w") as f:
        f.write("do not touch\n")
    link = os.path.join(tmp, "link.log")
    os.symlink(precious, link)
    rc, out, err, _ = run_plugin(node, dict(conf, logFile=link), "STATUS", cni_version="1.1.0")
    ck.check(rc == 0 and open(precious).read() == "do not touch\n" and not out.strip(),
             "a symlink logFile is refused: its target is untouched, nothing on stdout (exit %s)" % rc)
    ck.check("symbolic link" in err, "the refusal is logged on stderr instead: %s" % err.strip()[:160])

    # --- d. GC of network A keeps network B's records ----------------------
    conf_b = dict(conf, name="net-b")
    pb = mcnet.Netns("netb")
    _, host_b = mcnet.veth_pair(pb, node, a_ip="10.253.10.5", a_name="eth0")
    rc, *_ = run_plugin(node, conf_b, "ADD", "cid-b", pb.path, prev=prev_result(pb, "10.253.10.5"))
    ck.check(rc == 0 and "cid-b" in records(d), "network B's pod is enrolled")
    rc, *_ = run_plugin(node, conf, "DEL", "cid-b", pb.path)
    ck.check(rc == 0 and "cid-b" in records(d), "DEL through network A of B's attachment keeps B's record")
    gc_a = dict(conf)
    gc_a["cni.dev/valid-attachments"] = []
    rc, out, err, _ = run_plugin(node, gc_a, "GC", cni_version="1.1.0")
    recs = records(d)
    ck.check(rc == 0 and "cid-veth" not in recs and not our_filter(node, host_if),
             "GC of network A (no valid attachments) removed A's stale record and its tc filter")
    ck.check("cid-b" in recs and our_filter(node, host_b),
             "GC of network A kept network B's record and tc filter (records: %s)" % sorted(recs))
    gc_b = dict(conf_b)
    gc_b["cni.dev/valid-attachments"] = [{"containerID": "cid-b", "ifname": "eth0"}]
    rc, *_ = run_plugin(node, gc_b, "GC", cni_version="1.1.0")
    ck.check(rc == 0 and "cid-b" in records(d), "GC of network B keeps its valid attachment")

    # --- e. the pin lock held by a stuck process --------------------------
    pe = mcnet.Netns("lock")
    _, host_e = mcnet.veth_pair(pe, node, a_ip="10.253.11.5", a_name="eth0")
    prev_e = prev_result(pe, "10.253.11.5")
    holder = os.open(d.pin_root, os.O_RDONLY | os.O_DIRECTORY)
    mcnet._cleanups.append(lambda: os.close(holder))
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        rc, out, err, secs = run_plugin(node, dict(conf, lockTimeoutMs=500), "ADD", "cid-lock", pe.path,
                                        prev=prev_e, timeout=10)
        res = result_json(out)
        ck.check(rc == 0 and secs < 3 and res and res["ips"][0]["address"] == prev_e["ips"][0]["address"],
                 "pin lock held: ADD (lockTimeoutMs 500) returns in %.2f s (exit %s) with prevResult: fail-open"
                 % (secs, rc))
        ck.check(not our_filter(node, host_e), "pin lock held: ADD attached nothing")
        ck.check(any(x.get("containerID") == "cid-lock" and "pin root" in x.get("error", "") and
                     "fuser" in x.get("error", "") for x in log_lines()),
                 "pin lock held: the log names the lock and how to find its holder")
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
    rc, *_ = run_plugin(node, conf, "ADD", "cid-lock", pe.path, prev=prev_e)
    ck.check(rc == 0 and "cid-lock" in records(d), "lock free again: ADD enrolls")
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        rc, out, err, secs = run_plugin(node, conf, "DEL", "cid-lock", pe.path, prev=prev_e, timeout=10)
        ck.check(rc == 0 and secs < 5, "pin lock held: DEL (default 2 s deadline) exits %s in %.2f s" % (rc, secs))
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
    ck.check("cid-lock" in records(d), "the DEL that timed out left the record (for a later GC)")
    rc, *_ = run_plugin(node, gc_a, "GC", cni_version="1.1.0")
    ck.check(rc == 0 and "cid-lock" not in records(d) and not our_filter(node, host_e),
             "a later GC removed the record and the tc filter")

    for cid, p in (("cid-veth", pv), ("cid-b", pb)):
        run_plugin(node, conf_b if cid == "cid-b" else conf, "DEL", cid, p.path)
    ck.done()


if __name__ == "__main__":
    main()
