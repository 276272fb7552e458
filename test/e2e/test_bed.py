#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""e2e: the mesh test bed's own commands (e2e/meshbed.py), as a user runs them.

  up       -> exit 0; every pod is a CRI sandbox on its node's containerd (5 on
              n1, 4 on n2), sidecars run as uid 1337 and apps as uid 65534,
              istio-init's chains are in every meshed pod's netns and not in the
              DNS pod's; service names resolve through the DNS pod's ClusterIP
              (a known name -> its ClusterIP, an unknown one fails);
  check    -> exit 0 in mode full, and the counters show every shortcut
              carried it (intra-pod and same-node bytes, tc overlay/peer on both
              nodes); mode baseline -> check exit 0 and not one message or
              packet redirected;
  down     -> exit 0 and, checked here independently, nothing left: netns,
              dirs, mounts, pins, cgroups, CNI cache entries, processes, and the
              root netns ruleset unchanged;
  crash    -> up, kill -9 the holder, down: the sweep still leaves nothing.
"""
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "test", "netns"))
sys.dont_write_bytecode = True
import mcnet  # noqa: E402

BED = [sys.executable, os.path.join(REPO, "e2e", "meshbed.py")]
STATE = "/run/meshcut-bed/state.json"


def bed(*args, timeout=300):
    r = subprocess.run(BED + list(args), capture_output=True, text=True, timeout=timeout)
    mcnet.log("meshbed.py %s -> %d" % (" ".join(args), r.returncode))
    return r


def counters(st, node):
    n = st["nodes"][node]
    r = subprocess.run([mcnet.MESHCUTD, "status", "--json", "--pin-root", n["pin_root"]], capture_output=True,
                       text=True, preexec_fn=lambda: mcnet._setns("/var/run/netns/" + n["netns"]))
    return json.loads(r.stdout)["counters"]


def redirected(c):
    return {k: v for k, v in c.items() if k.startswith(("msg_redirect", "bytes_redirect", "tc_redirect"))}


def uid_of(pid):
    with open("/proc/%d/status" % pid) as f:
        return int([x for x in f if x.startswith("Uid:")][0].split()[1])


def independent_leftovers(st):
    """What of STATE's bed is still there, looked up here (not by meshbed.py)."""
    left = []
    for ns in [n["netns"] for n in st["nodes"].values()] + [st["wire_netns"], st["ext_netns"]]:
        if os.path.exists("/var/run/netns/" + ns):
            left.append("netns " + ns)
    for n in st["nodes"].values():
        for p in (n["pin_root"], n["cri_dir"], n["cgroup"], n["daemon_log"]):
            if os.path.exists(p):
                left.append(p)
        with open("/proc/self/mountinfo") as f:
            left += ["mount " + x.split()[4] for x in f if n["cri_dir"] in x.split()[4]]
    if os.path.exists(st["dir"]):
        left.append(st["dir"])
    for f in os.listdir("/var/lib/cni/results") if os.path.isdir("/var/lib/cni/results") else []:
        if any(p["sid"] in f for p in st["pods"].values()):
            left.append("cni cache " + f)
    keys = [st["dir"]] + [n["cri_dir"] for n in st["nodes"].values()]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = open("/proc/%s/cmdline" % d, "rb").read().decode(errors="replace")
            except OSError:
                continue
            if any(k in cmd for k in keys) and int(d) != os.getpid():
                left.append("process %s %s" % (d, cmd.replace("\0", " ")[:80]))
    return left


def main():
    mcnet.require_root()
    ck = mcnet.Checks()
    if os.path.exists(STATE):
        print("FAIL: a bed is already up (%s): run e2e/meshbed.py down" % STATE, file=sys.stderr)
        sys.exit(1)
    sys.path.insert(0, os.path.join(REPO, "e2e"))
    from bed import audit
    rules_before = audit.root_rules()
    r = bed("up")
    ck.check(r.returncode == 0, "meshbed.py up exits 0 (%s)" % (r.stderr.strip()[-1500:] if r.returncode else "ok"))
    if r.returncode != 0:
        bed("down")
        ck.done()
    st = json.load(open(STATE))
    try:
        from cri import CriClient
        per_node = {}
        for name, n in st["nodes"].items():
            per_node[name] = len(CriClient(n["cri_sock"]).list_pods(ready_only=True))
        want = {"n1": sum(p["node"] == "n1" for p in st["pods"].values()),
                "n2": sum(p["node"] == "n2" for p in st["pods"].values())}
        ck.check(per_node == want and want == {"n1": 5, "n2": 4},
                 "every pod is a ready CRI sandbox on its node's containerd: %s" % per_node)
        bad = []
        for p in st["pods"].values():
            cri = CriClient(st["nodes"][p["node"]]["cri_sock"])
            for cname, cid in p["containers"].items():
                want_uid = 1337 if cname == "istio-proxy" else (0 if p["app"] == "dns" else 65534)
                got = uid_of(cri.container_pid(cid))
                if got != want_uid:
                    bad.append("%s/%s uid %d" % (p["name"], cname, got))
            rules = subprocess.run(["nsenter", "--net=" + p["netns"], "iptables-save", "-t", "nat"],
                                   capture_output=True, text=True).stdout
            if ("ISTIO_REDIRECT" in rules) != p["meshed"]:
                bad.append("%s: istio-init chains %s" % (p["name"], "missing" if p["meshed"] else "present"))
        ck.check(not bad, "sidecars uid 1337, apps uid 65534; istio-init rules exactly in the meshed pods: %s"
                 % (bad or "ok"))
        r = bed("exec", "client", "--", "/usr/bin/python3", "-c",
                "import socket,sys\nprint(socket.gethostbyname('details'))\n"
                "try:\n    socket.gethostbyname('nosuchservice')\n    print('resolved')\n"
                "except OSError:\n    print('nxdomain')")
        ck.check(r.stdout.split() == ["10.96.0.21", "nxdomain"],
                 "in the client pod, 'details' resolves to its ClusterIP through the DNS pod and an unknown "
                 "name fails: %r" % r.stdout.split())
        c0 = {n: counters(st, n) for n in st["nodes"]}
        r = bed("check", "--n", "3")
        ck.check(r.returncode == 0, "check in mode full: %s" % r.stdout.strip().splitlines()[-1:])
        d = {n: mcnet.delta(c0[n], counters(st, n)) for n in st["nodes"]}
        ck.check(all(d[n]["bytes_redirect_intra"] > 0 for n in d) and d["n1"]["bytes_redirect_node"] > 0
                 and all(d[n]["tc_redirect_overlay"] > 0 and d[n]["tc_redirect_peer"] > 0 for n in d),
                 "mode full: intra-pod and same-node socket bytes and cross-node tc packets redirected: %s"
                 % {n: {k: v for k, v in redirected(d[n]).items() if v} for n in d})
        r = bed("mode", "baseline")
        ck.check(r.returncode == 0 and "intra-pod off, same-node off, cross-node tc off" in r.stdout,
                 "mode baseline: %s" % r.stdout.strip())
        c0 = {n: counters(st, n) for n in st["nodes"]}
        r = bed("check", "--n", "3")
        ck.check(r.returncode == 0, "check in mode baseline: %s" % r.stdout.strip().splitlines()[-1:])
        d = {n: {k: v for k, v in redirected(mcnet.delta(c0[n], counters(st, n))).items() if v} for n in st["nodes"]}
        ck.check(not any(d.values()), "mode baseline: nothing redirected: %s" % d)
        r = bed("status")
        ck.check(r.returncode == 0 and "productpage-v1" in r.stdout, "status lists the pods")
    finally:
        r = bed("down")
    ck.check(r.returncode == 0 and "nothing left" in r.stdout, "down: %s" % (r.stdout + r.stderr).strip()[-800:])
    left = independent_leftovers(st)
    ck.check(not left, "after down, nothing of the bed is left: %s" % (left or "ok"))
    ck.check(audit.root_rules() == rules_before, "the root netns ruleset is unchanged")
    ck.check(not os.path.exists(os.path.dirname(STATE)), "no state dir left (%s)" % os.path.dirname(STATE))

    # The holder dies (kill -9): down must still remove everything.
    r = bed("up")
    ck.check(r.returncode == 0, "second up exits 0")
    if r.returncode == 0:
        st = json.load(open(STATE))
        os.kill(st["holder_pid"], signal.SIGKILL)
        time.sleep(0.5)
        r = bed("down")
        ck.check(r.returncode == 0 and "nothing left" in r.stdout,
                 "down after kill -9 of the holder: %s" % (r.stdout + r.stderr).strip()[-800:])
        left = independent_leftovers(st)
        ck.check(not left, "after the sweep nothing is left: %s" % (left or "ok"))
    ck.done()


if __name__ == "__main__":
    main()
