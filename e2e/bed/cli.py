# SPDX-License-Identifier: Apache-2.0
"""The bed's command line (e2e/meshbed.py is its entry point): a holder
process owns a running bed; the other commands reach it through its state
file (/run/meshcut-bed/state.json).
The commands are listed in e2e/meshbed.py's docstring.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from .apps import expected_digests
from .audit import alive, leftovers, root_rules, sweep
from .env import REPO, BedError, benchlib, log, mcnet
from .topology import INTRA_ON, MODES, NODE_ON, TC_ON, BedPod, MeshBed

ENTRY = os.path.join(REPO, "e2e", "meshbed.py")
STATE_DIR = "/run/meshcut-bed"
STATE = os.path.join(STATE_DIR, "state.json")


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
    argv = [sys.executable, ENTRY, "_hold", "--log", logpath, "--root-rules", rules]
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
