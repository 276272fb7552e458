#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""netns tier, CNI installer: `meshcutd install-cni` / `uninstall-cni` on real
conflist fixtures (flannel, Calico, bridge .conf), and meshcutd keeping the
entry while the main CNI rewrites its file."""
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcnet  # noqa: E402

FIX = os.path.join(mcnet.REPO, "test", "fixtures", "conflists")
PLUGIN = os.path.join(mcnet.BUILD, "cni-plugin", "meshcut")


def run(*a):
    return subprocess.run([mcnet.MESHCUTD, *a], capture_output=True, text=True)


def active(conf):
    files = sorted(f for f in os.listdir(conf) if not f.startswith(".") and f.endswith((".conf", ".conflist", ".json")))
    return os.path.join(conf, files[0])


def last_plugin(conf, timeout=5):
    """The last plugin of the active conflist once it is meshcut (or after timeout)."""
    deadline = time.time() + timeout
    while True:
        last = json.load(open(active(conf)))["plugins"][-1]
        if last["type"] == "meshcut" or time.time() > deadline:
            return last
        time.sleep(0.1)


def main():
    mcnet.require_root()
    ck = mcnet.Checks()
    tmp = tempfile.mkdtemp(prefix="mc-inst-")
    mcnet._cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    for case in ("flannel", "calico", "bridge"):
        conf, bin_ = os.path.join(tmp, case, "net.d"), os.path.join(tmp, case, "bin")
        shutil.copytree(os.path.join(FIX, case), conf)
        os.makedirs(bin_)
        orig = os.path.join(tmp, case, "orig")
        shutil.copytree(conf, orig)
        dirs = ["--cni-bin-dir", bin_, "--cni-conf-dir", conf]
        r = run("install-cni", "--plugin-src", PLUGIN, *dirs)
        j = json.load(open(active(conf)))
        ck.check(r.returncode == 0 and j["plugins"][-1]["type"] == "meshcut" and os.access(os.path.join(bin_, "meshcut"), os.X_OK)
                 and j["plugins"][-1].get("capabilities", {}).get("io.kubernetes.cri.pod-annotations"),
                 "%s: install-cni chained meshcut last (%s), binary installed" % (case, os.path.basename(active(conf))))
        before = open(active(conf)).read()
        r2 = run("install-cni", "--plugin-src", PLUGIN, *dirs)
        ck.check(r2.returncode == 0 and "nothing to do" in r2.stdout and open(active(conf)).read() == before,
                 "%s: second install changes nothing" % case)
        r3 = run("uninstall-cni", *dirs)
        same = filecmp.dircmp(conf, orig)
        ck.check(r3.returncode == 0 and not same.diff_files and not same.left_only and not same.right_only
                 and not os.listdir(bin_), "%s: uninstall-cni restored the conf dir byte for byte, binary gone" % case)

    # The daemon keeps meshcut chained when the main CNI rewrites its file.
    cg = mcnet.Cgroup("inst")
    conf, bin_ = os.path.join(tmp, "live", "net.d"), os.path.join(tmp, "live", "bin")
    shutil.copytree(os.path.join(FIX, "flannel"), conf)
    os.makedirs(bin_)
    d = mcnet.Daemon(cg, "inst", extra=["--cni-plugin-src", PLUGIN, "--cni-bin-dir", bin_, "--cni-conf-dir", conf])
    d.start()
    # The daemon reports ready once its programs are attached and chains the
    # plugin right after (the plugin needs the pins first): wait for it.
    j = last_plugin(conf)
    ck.check(j["type"] == "meshcut" and j["pinRoot"] == d.pin_root,
             "meshcutd run --cni-plugin-src installed the plugin with its own pin root")
    shutil.copy(os.path.join(FIX, "flannel", "10-flannel.conflist"), active(conf))  # flannel rewrites its file
    ck.check(last_plugin(conf)["type"] == "meshcut",
             "after the main CNI rewrote its conflist, meshcutd chained meshcut again within 5 s")
    deadline = time.time() + 2  # the log line follows the rename
    while "chained again" not in open(d.logfile).read() and time.time() < deadline:
        time.sleep(0.05)
    ck.check("chained again" in open(d.logfile).read(), "and logged it")
    d.stop()
    r = run("uninstall-cni", "--cni-bin-dir", bin_, "--cni-conf-dir", conf)
    ck.check(r.returncode == 0 and open(active(conf)).read() == open(os.path.join(FIX, "flannel", "10-flannel.conflist")).read(),
             "uninstall-cni after the daemon: the original conflist again")
    ck.done()


if __name__ == "__main__":
    main()
