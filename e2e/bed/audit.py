# SPDX-License-Identifier: Apache-2.0
"""Teardown auditing: what of a bed (described by its state file) is still
there -- netns, dirs, containerd mounts, meshcutd pins and logs, cgroups, CNI
cache entries, processes, a changed root netns ruleset -- and the sweep that
removes what a bed whose holder died (kill -9) left."""
import glob
import os
import re
import shutil
import signal
import subprocess

from .env import mcnet


def alive(pid):
    try:
        os.kill(pid, 0)
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def root_rules():
    """The root netns' netfilter ruleset, counters stripped (the bed makes no rules there)."""
    r = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True)
    txt = r.stdout if r.returncode == 0 else subprocess.run(["iptables-save"], capture_output=True,
                                                             text=True).stdout
    txt = re.sub(r"counter packets \d+ bytes \d+", "counter", txt)
    txt = re.sub(r"\[\d+:\d+\]", "", txt)
    return "\n".join(l for l in txt.splitlines() if not l.startswith("#"))



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
    return [p for p in [v2path] + glob.glob("/sys/fs/cgroup/*/" + name) if os.path.isdir(p)]


def cni_cache_entries(st):
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

