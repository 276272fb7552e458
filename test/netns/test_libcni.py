#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""netns tier, CNI plugin under libcni itself: the Go driver e2e/cnitool
(libcni 1.1.2 from Debian) runs ADD/CHECK/DEL of a conflist with Debian's
bridge + host-local and meshcut chained, the way containerd's libcni does."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcnet  # noqa: E402

CNITOOL = os.path.join(mcnet.BUILD, "e2e", "cnitool")


def main():
    mcnet.require_root()
    ck = mcnet.Checks()
    if not os.access(CNITOOL, os.X_OK):
        r = subprocess.run([os.path.join(mcnet.REPO, "e2e", "cnitool", "build.sh"), CNITOOL],
                           capture_output=True, text=True)
        if r.returncode != 0:
            mcnet.skip_or_fail("couldn't build the libcni driver: " + r.stderr[-500:])
    cg = mcnet.Cgroup("libcni")
    node = mcnet.Netns("node")
    pod = mcnet.Netns("pod")
    tmp = tempfile.mkdtemp(prefix="mc-libcni-")
    mcnet._cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    d = mcnet.Daemon(cg, "libcni", netns=node)
    d.start()
    br = "mclc%s" % mcnet.RUN_ID[-3:]
    mcnet._cleanups.append(lambda: node.run("ip", "link", "del", br, check=False))
    confdir = os.path.join(tmp, "net.d")
    os.makedirs(confdir)
    with open(os.path.join(confdir, "10-test.conflist"), "w") as f:
        json.dump({"cniVersion": "1.0.0", "name": "libcni-net", "plugins": [
            {"type": "bridge", "bridge": br, "isGateway": True,
             "ipam": {"type": "host-local", "dataDir": os.path.join(tmp, "ipam"),
                      "ranges": [[{"subnet": "10.249.0.0/24"}]]}},
            {"type": "meshcut", "pinRoot": d.pin_root, "logFile": os.path.join(tmp, "cni.log"),
             "capabilities": {"io.kubernetes.cri.pod-annotations": True}}]}, f)
    bindir = os.path.join(mcnet.BUILD, "cni-plugin") + ":/usr/lib/cni"

    def tool(*args):
        return subprocess.run([CNITOOL, "-confdir", confdir, "-bindir", bindir, "-cachedir", os.path.join(tmp, "cache"),
                               *args], capture_output=True, text=True,
                              preexec_fn=lambda: mcnet._setns(node.path))

    r = tool("add", "libcni-net", pod.path, "-id", "lc1", "-args",
             "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0", "-cap-json",
             '{"io.kubernetes.cri.pod-annotations":{"sidecar.istio.io/status":"{}"}}')
    res = json.loads(r.stdout) if r.returncode == 0 else {}
    pods = json.loads(d.cli("pods", "--json").stdout)
    ck.check(r.returncode == 0 and len(pods) == 1 and pods[0]["name"] == "web-0" and pods[0]["container_id"] == "lc1"
             and pods[0]["ips"] == [res["ips"][0]["address"].split("/")[0]],
             "libcni ADD through bridge + meshcut: pod enrolled (%s)" % (r.stderr.strip()[-200:] or "ok"))
    r = tool("check", "libcni-net", pod.path, "-id", "lc1")
    ck.check(r.returncode == 0, "libcni CHECK passes (%s)" % r.stderr.strip()[-200:])
    r1 = tool("del", "libcni-net", pod.path, "-id", "lc1")
    r2 = tool("del", "libcni-net", "", "-id", "lc1")
    st = d.status()
    ck.check(r1.returncode == 0 and r2.returncode == 0 and st["maps"]["mc_cni_pods"]["entries"] == 0
             and st["maps"]["mc_pods"]["entries"] == 0, "libcni DEL, then DEL without netns: both exit 0, nothing left")
    ck.done()


if __name__ == "__main__":
    main()
