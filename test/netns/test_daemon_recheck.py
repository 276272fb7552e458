#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""netns tier: what meshcutd refuses at start, and what its recheck loop repairs.

  1. A refused start changes nothing: `run --pod-cidr` without an overlay
     device (flag or config file podCIDR without overlayDevice) and a bad
     --metrics-addr exit 1 with the fix, before any pin or attachment exists.
  2. The overlay device is deleted and recreated under the same name (a new
     ifindex, as when flannel restarts): while it is gone /readyz says not
     ready and the log says so; within seconds our tc filter is on the new
     device, mc_config.overlay_ifindex holds the new ifindex, the log has the
     warning and /readyz is ready again. Then deleted and recreated at once
     (no recheck in between): the same.
  3. The sockops cgroup link is detached by another agent (`bpftool link
     detach`), then its pin is removed: each time meshcutd attaches and pins a
     new link on the test's cgroup, and a new connection in an enrolled pod is
     inserted in the sockhash again.
  4. A pin root whose mc_meta carries another ABI fingerprint is refused with
     the fix (`meshcutd detach`), leaving the pins and attachments as they
     were; fingerprint 0 (a daemon without it) starts and gets this build's.

Everything runs in namespaces made here (the "node" netns holds the vxlan
device and the daemon), sockops on a child cgroup, pins under a private pin
root; all of it is removed at the end.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcnet  # noqa: E402
from mctest import abi  # noqa: E402
import streams  # noqa: E402
from mcnet import log  # noqa: E402

M = mcnet.MESHCUTD
OVL = "flannel.1"  # inside the test's own node netns
OURS = abi.TC_OURS
METRICS = "127.0.0.1:19464"  # inside the node netns
META_FP_OFF = 28  # struct mc_meta.abi_fingerprint (meshcut_kern_user.h)
CFG_OVL_OFF = 16  # struct mc_config.overlay_ifindex


def pins_under(root):
    """Every file (pin) under ROOT; [] if ROOT is absent."""
    out = []
    for d, _, files in os.walk(root):
        out += [os.path.join(d, f) for f in files]
    return out


def try_run(args, pin_root, netns, timeout=5.0):
    """`meshcutd run ARGS --pin-root PIN_ROOT` in NETNS. Returns (rc, stderr);
    rc None when it was still running after TIMEOUT (a build that does not
    refuse): then it is stopped with SIGTERM. Whatever it left is detached at
    the end."""
    mcnet._cleanups.append(lambda: subprocess.run([M, "detach", "--pin-root", pin_root], capture_output=True,
                                                  preexec_fn=lambda: mcnet._setns(netns.path)))
    err = tempfile.TemporaryFile(mode="w+")
    p = subprocess.Popen([M, "run", "--pin-root", pin_root] + list(args), stdout=subprocess.DEVNULL, stderr=err,
                         preexec_fn=lambda: mcnet._setns(netns.path))
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        rc = None
    err.seek(0)
    return rc, err.read()


def last_lines(s, n=2):
    return s.strip().splitlines()[-n:]


def ifindex(node, dev):
    r = node.run("ip", "-j", "link", "show", "dev", dev, check=False)
    return json.loads(r.stdout)[0]["ifindex"] if r.returncode == 0 else None


def tc_filters(node, dev):
    return node.run("tc", "filter", "show", "dev", dev, "ingress", check=False).stdout


def bpftool_tc(node):
    """bpftool net's tc entries in NODE: [(ifindex, devname, kind, prog_id)]."""
    r = node.run("bpftool", "net", "show", "-j", check=False)
    out = []
    if r.returncode == 0 and r.stdout.strip():
        for sect in json.loads(r.stdout):
            for t in sect.get("tc", []):
                out.append((t.get("ifindex"), t.get("devname"), t.get("kind"), t.get("id", t.get("prog_id"))))
    return out


def cgroup_progs(cg):
    """What bpftool cgroup show lists on CG (empty output when nothing is attached)."""
    out = mcnet.sh("bpftool", "cgroup", "show", cg.path, "-j").stdout.strip()
    return json.loads(out) if out else []


def pinned_prog_id(path):
    r = mcnet.sh("bpftool", "prog", "show", "pinned", path, "-j", check=False)
    return json.loads(r.stdout)["id"] if r.returncode == 0 else None


def map_value(path):
    """The bytes of key 0 of the pinned array map PATH."""
    r = mcnet.sh("bpftool", "map", "lookup", "pinned", path, "key", "0", "0", "0", "0", "-j")
    j = json.loads(r.stdout)
    return bytes(int(b, 16) for b in j["value"])


def map_set(path, value):
    mcnet.sh("bpftool", "map", "update", "pinned", path, "key", "0", "0", "0", "0",
             "value", *[str(b) for b in value])


def u32(b, off):
    return int.from_bytes(b[off:off + 4], "little")


def with_u32(b, off, v):
    return b[:off] + v.to_bytes(4, "little") + b[off + 4:]


def http_get(node, path):
    """GET PATH from the daemon's endpoint inside NODE: (status, body) or (None, error)."""
    host, port = METRICS.rsplit(":", 1)

    def get():
        s = socket.create_connection((host, int(port)), 2)
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        data = streams.recv_to_eof(s)
        s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), body.decode(errors="replace")

    try:
        return mcnet.in_netns(node, get)
    except OSError as e:
        return None, str(e)


def wait_for(fn, timeout=6.0, step=0.1):
    deadline = time.time() + timeout
    v = fn()
    while not v and time.time() < deadline:
        time.sleep(step)
        v = fn()
    return v


def sock_added(d):
    c = d.counters()
    return c["sock_added_active"] + c["sock_added_passive"]


def new_conn_added(d, pod):
    """A new TCP connection inside the enrolled POD: how many sockets sockops inserted."""
    before = sock_added(d)
    c, s = mcnet.tcp_pair(pod, "127.0.0.1")
    c.sendall(b"ping")
    got = s.recv(4)
    n = sock_added(d) - before
    c.close()
    s.close()
    return n if got == b"ping" else -1


def refusals(ck, cg, node, tmp):
    """1. Refused starts: exit 1 with the fix, no pin made, nothing attached."""
    base = ["--cgroup", cg.path, "--metrics-addr", "off"]
    cfg = os.path.join(tmp, "podcidr-only.json")
    with open(cfg, "w") as f:
        json.dump({"podCIDR": "10.244.0.0/16"}, f)
    cases = [
        ("--pod-cidr without --overlay-dev", ["--pod-cidr", "10.244.0.0/16"] + base,
         lambda e: "overlay device" in e and "--overlay-dev" in e and "overlayDevice" in e),
        ("config podCIDR without overlayDevice", ["--config", cfg] + base,
         lambda e: "overlay device" in e and "--overlay-dev" in e and "overlayDevice" in e),
        ("--metrics-addr 127.0.0.1:99999", ["--cgroup", cg.path, "--metrics-addr", "127.0.0.1:99999"],
         lambda e: "--metrics-addr" in e and "port" in e),
        ("--metrics-addr localhost:9464", ["--cgroup", cg.path, "--metrics-addr", "localhost:9464"],
         lambda e: "--metrics-addr" in e and "IPv4 address" in e),
    ]
    for i, (what, args, says) in enumerate(cases):
        root = "/sys/fs/bpf/mc-test-%s-refuse%d" % (mcnet.RUN_ID, i)
        rc, err = try_run(args, root, node)
        ck.check(rc == 1 and says(err),
                 "%s: refused, exit 1, stderr names the fix (rc %s: %r)"
                 % (what, "still running after 5s" if rc is None else rc, last_lines(err)))
        left = pins_under(root)
        cg_after = json.dumps(cgroup_progs(cg))
        ck.check(not left and not os.path.exists(root) and "sock_ops" not in cg_after,
                 "%s: no pin made, nothing attached to the cgroup (%d pins: %s)"
                 % (what, len(left), [os.path.relpath(p, root) for p in left][:4]))
        if left or os.path.exists(root):
            subprocess.run([M, "detach", "--pin-root", root], capture_output=True,
                           preexec_fn=lambda: mcnet._setns(node.path))


def overlay_recreated(ck, d, node):
    """2. The overlay device deleted and recreated under its name."""
    pin = os.path.join(d.pin_root, "progs", "tc_overlay")
    cfg_map = os.path.join(d.pin_root, "maps", "mc_config")
    ours = pinned_prog_id(pin)
    old = ifindex(node, OVL)
    f = tc_filters(node, OVL)
    ck.check(ours and all(x in f for x in OURS) and (old, OVL, "clsact/ingress", ours) in bpftool_tc(node)
             and u32(map_value(cfg_map), CFG_OVL_OFF) == old,
             "at start: our filter (prog %s) on %s ifindex %s (bpftool net: %s), mc_config.overlay_ifindex = %d"
             % (ours, OVL, old, bpftool_tc(node), u32(map_value(cfg_map), CFG_OVL_OFF)))
    st, body = http_get(node, "/readyz")
    ck.check(st == 200, "/readyz ready with the overlay in place (%s %r)" % (st, body.strip()))

    node.ip("link", "del", OVL)
    st, body = http_get(node, "/readyz")
    ck.check(st == 503 and "overlay" in body,
             "overlay device deleted: /readyz not ready and says why (%s %r)" % (st, body.strip()))
    gone = wait_for(lambda: "the overlay device is gone" in open(d.logfile).read(), timeout=5)
    ck.check(gone, "the log says the overlay device is gone")
    ck.check(d.proc.poll() is None, "meshcutd keeps running while the device is gone")

    make_vxlan(node)
    new = ifindex(node, OVL)

    def moved():
        return u32(map_value(cfg_map), CFG_OVL_OFF) == new and (new, OVL, "clsact/ingress", ours) in bpftool_tc(node)

    t0 = time.time()
    ok = wait_for(moved, timeout=6)
    took = time.time() - t0
    f = tc_filters(node, OVL)
    ck.check(new != old, "recreated %s has a new ifindex (%s -> %s)" % (OVL, old, new))
    ck.check(ok and all(x in f for x in OURS),
             "our tc filter is on the new ifindex %s (bpftool net: %s; tc filter: %s) within %.1fs"
             % (new, bpftool_tc(node), "ours" if all(x in f for x in OURS) else "NOT ours", took))
    ck.check(u32(map_value(cfg_map), CFG_OVL_OFF) == new,
             "mc_config.overlay_ifindex = %d (new ifindex %s)" % (u32(map_value(cfg_map), CFG_OVL_OFF), new))
    c = map_value(cfg_map)
    ck.check(u32(c, 0) == 1 and u32(c, 8) != 0, "the rest of mc_config kept (enabled %d, pod_cidr 0x%08x)"
             % (u32(c, 0), u32(c, 8)))
    logtxt = wait_for(lambda: (lambda t: t if "the overlay device was recreated" in t else "")(open(d.logfile).read()),
                      timeout=3)
    line = [x for x in (logtxt or "").splitlines() if "the overlay device was recreated" in x]
    ck.check(bool(line) and ('"ifindex":%d' % new) in line[0] and ('"old_ifindex":%d' % old) in line[0],
             "the log warns the device was recreated, with the old and new ifindex (%s)"
             % (line[0][-160:] if line else "no such line"))
    st = d.status()
    ov = st["attachments"]["tc_overlay"]
    ck.check(ov.get("attached") and ov.get("device") == OVL and ov.get("prog_id") == ours,
             "status --json: tc_overlay attached on %s (%s)" % (OVL, ov))
    st, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(http_get(node, "/readyz")), timeout=3) or \
        http_get(node, "/readyz")
    ck.check(st == 200, "/readyz ready again (%s %r)" % (st, body.strip()))

    # flannel restarting: deleted and recreated at once, no recheck in between.
    node.ip("link", "del", OVL)
    make_vxlan(node)
    prev, new = new, ifindex(node, OVL)
    ok = wait_for(moved, timeout=6)
    ck.check(ok and new != prev and all(x in tc_filters(node, OVL) for x in OURS),
             "recreated at once (ifindex %s -> %s): our filter on the new one and in mc_config (%s, overlay_ifindex %d)"
             % (prev, new, bpftool_tc(node), u32(map_value(cfg_map), CFG_OVL_OFF)))


def sockops_detached(ck, d, cg, pod):
    """3. The sockops link detached by another agent, then its pin removed."""
    ck.check(new_conn_added(d, pod) == 2, "before: a new connection in the enrolled pod is inserted (2 sockets)")
    so = d.status()["attachments"]["sockops"]
    pin = so["pin"]
    lk = json.loads(mcnet.sh("bpftool", "link", "show", "pinned", pin, "-j").stdout)
    ck.check(lk["id"] == so["link_id"] and lk.get("cgroup_id"), "the pinned sockops link %d is on cgroup %s"
             % (lk["id"], lk.get("cgroup_id")))
    prog = so["prog_id"]

    for how in ("bpftool link detach", "pin removed"):
        old = d.status()["attachments"]["sockops"]["link_id"]
        if how == "bpftool link detach":
            mcnet.sh("bpftool", "link", "detach", "id", str(old))
        elif os.path.exists(pin):
            os.unlink(pin)

        def back():
            a = d.status()["attachments"]["sockops"]
            return a if a.get("attached") and a.get("link_id") not in (None, old) else None

        t0 = time.time()
        a = wait_for(back, timeout=6)
        took = time.time() - t0
        cgs = cgroup_progs(cg)
        on_cg = [x for x in cgs if x.get("attach_type") in ("sock_ops", "cgroup_sock_ops")]
        ck.check(bool(a) and os.path.exists(pin) and any(x["id"] == prog for x in on_cg),
                 "%s: a new link (%s, was %s) is pinned and our sockops (prog %s) is on the test's cgroup "
                 "again (bpftool cgroup show: %s) within %.1fs"
                 % (how, a and a.get("link_id"), old, prog, [(x["id"], x.get("attach_type"), x.get("name")) for x in cgs], took))
        if a:
            lk = json.loads(mcnet.sh("bpftool", "link", "show", "pinned", pin, "-j").stdout)
            want = os.stat(cg.path).st_ino  # cgroup id = inode of its directory (kernfs)
            ck.check(lk["id"] == a["link_id"] and lk.get("cgroup_id") == want,
                     "%s: the pinned link %d is on the test's cgroup (cgroup_id %s, want %d)"
                     % (how, lk["id"], lk.get("cgroup_id"), want))
        n = new_conn_added(d, pod)
        ck.check(n == 2, "%s: a new connection in the enrolled pod is inserted in the sockhash again (+%d)" % (how, n))
        line = [x for x in open(d.logfile).read().splitlines() if "the sockops cgroup link was detached" in x]
        ck.check(len(line) == (1 if how == "bpftool link detach" else 2),
                 "%s: the log has the warning (%d lines)" % (how, len(line)))
    types = [x.get("attach_type") for x in cgroup_progs(cg)]
    ck.check(types.count("cgroup_sock_ops") == 1 and len(types) == len(set(types)),
             "one program per attach type left on the test's cgroup (sockops; connect4 only with services), no duplicate "
             "attachment (%s)" % types)


def abi_mismatch(ck, d, node):
    """4. Another ABI fingerprint in mc_meta: refused, pins untouched; 0: started."""
    meta = os.path.join(d.pin_root, "maps", "mc_meta")
    ck.check(d.stop() == 0, "daemon stopped (SIGTERM), pins kept")
    before = d.status()
    mine = u32(map_value(meta), META_FP_OFF)
    ck.check(mine != 0 and before.get("abi_fingerprint") == mine and before.get("abi_fingerprint_match") is True,
             "mc_meta.abi_fingerprint = 0x%08x written at attach; status --json shows it (%s, match %s)"
             % (mine, before.get("abi_fingerprint"), before.get("abi_fingerprint_match")))
    other = (mine ^ 0x5a5a5a5a) or 0x12345678
    map_set(meta, with_u32(map_value(meta), META_FP_OFF, other))
    st = d.status()
    ck.check(st.get("abi_fingerprint") == other and st.get("abi_fingerprint_match") is False,
             "status --json with a foreign fingerprint: 0x%08x, match %s"
             % (st.get("abi_fingerprint") or 0, st.get("abi_fingerprint_match")))
    att = json.dumps(st["attachments"], sort_keys=True)
    meta_before = map_value(meta)
    progs = {p: pinned_prog_id(os.path.join(d.pin_root, "progs", p)) for p in os.listdir(os.path.join(d.pin_root, "progs"))}
    pins = sorted(pins_under(d.pin_root))
    rc, err = try_run(["--cgroup", d.cgroup.path] + d.extra, d.pin_root, node)
    ck.check(rc == 1 and "ABI fingerprint" in err and ("0x%08x" % other) in err and "meshcutd detach" in err,
             "a pin root with another ABI fingerprint is refused with the fix (rc %s: %r)"
             % ("still running after 5s" if rc is None else rc, last_lines(err, 1)))
    after = d.status()
    ck.check(json.dumps(after["attachments"], sort_keys=True) == att and map_value(meta) == meta_before
             and sorted(pins_under(d.pin_root)) == pins
             and {p: pinned_prog_id(os.path.join(d.pin_root, "progs", p)) for p in progs} == progs,
             "and the pins, programs, attachments and mc_meta are unchanged")
    ck.check(after["attachments"]["sockops"]["attached"] and after["attachments"]["tc_overlay"]["attached"],
             "sockops and the overlay filter still attached (the node keeps its shortcut)")

    map_set(meta, with_u32(map_value(meta), META_FP_OFF, 0))
    try:
        st = d.start()
        started = True
    except RuntimeError as e:
        st, started = {}, False
        log("start with fingerprint 0: %s" % e)
    ck.check(started, "fingerprint 0 (pinned by a daemon without it): meshcutd starts")
    ck.check(started and u32(map_value(meta), META_FP_OFF) == mine and st.get("abi_fingerprint_match") is True,
             "and writes this build's fingerprint 0x%08x (now 0x%08x)" % (mine, u32(map_value(meta), META_FP_OFF)))


def make_vxlan(node):
    node.ip("link", "add", OVL, "type", "vxlan", "id", "1", "dstport", "8472", "local", "192.168.77.1",
            "dev", "eth0", "nolearning")
    node.ip("link", "set", OVL, "up")


def main():
    mcnet.require_root()
    ck = mcnet.Checks()
    log("meshcutd under test: %s" % M)
    cg = mcnet.Cgroup("recheck")
    cg.join()
    tmp = tempfile.mkdtemp(prefix="mc-recheck-")
    mcnet._cleanups.append(lambda: subprocess.run(["rm", "-rf", tmp]))
    node = mcnet.Netns("node")
    wire = mcnet.Netns("wire")  # the underlay the vxlan rides on
    mcnet.veth_pair(node, wire, a_ip="192.168.77.1", b_ip="192.168.77.2", a_name="eth0")

    refusals(ck, cg, node, tmp)

    make_vxlan(node)
    pod = mcnet.Netns("pod")
    d = mcnet.Daemon(cg, "recheck", netns=node, extra=[
        "--pod-cidr", "10.244.0.0/16", "--overlay-dev", OVL, "--recheck-interval", "1", "--metrics-addr", METRICS])
    d.start()
    d.enroll(pod)

    overlay_recreated(ck, d, node)
    sockops_detached(ck, d, cg, pod)
    abi_mismatch(ck, d, node)

    d.stop()
    r = d.cli("detach", check=False)
    ck.check(r.returncode == 0 and not os.path.exists(d.pin_root) and not any(x in tc_filters(node, OVL) for x in OURS)
             and "sock_ops" not in json.dumps(cgroup_progs(cg)),
             "detach: no pin, no filter on %s, nothing on the cgroup" % OVL)
    ck.done()


if __name__ == "__main__":
    main()
