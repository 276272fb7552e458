# SPDX-License-Identifier: Apache-2.0
"""Helpers for the CRI e2e tests of meshcut: glue between the CRI kit
(e2e/cri: CriNode) and the netns-tier harness (test/netns/mcnet.py: Daemon,
Checks). Nothing here is specific to one test.

  NodeNetns(node)      the node's netns as mcnet.Daemon wants it (.path, .name, .run)
  NodeCgroup(node)     (twonode) the node's cgroup v2 directory (where runc puts every
                       pod container: <cgroup2 root>/<node.cgroup_parent>/<container id>),
                       created up front so meshcutd can attach sockops to it
  cni_cache_dir()      where containerd's libcni writes results/ (the kit's CNI_CACHE)
  pods_json(d), record(d, sid), our_filter(node, dev), plugin_log(path), pct(xs, p)
  wait_for(pred, timeout)
  daemon_cleanup(d)    kill + detach that works even if the node netns is gone
  BUILD, PLUGIN, MKIMAGE, MANIFEST   the build tree, plugin, image builder, DaemonSet manifest
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
sys.path.insert(0, os.path.join(REPO, "e2e", "cri"))

import mcnet  # noqa: E402
from mctest import abi, pct  # noqa: E402
from twonode import NodeCgroup  # noqa: E402,F401  (the node's cgroup v2 dir, for the tests)
import node as crinode  # noqa: E402



# what the image tests (test_image, test_daemonset) build from and read
BUILD = os.path.dirname(os.path.dirname(os.path.abspath(mcnet.MESHCUTD)))
PLUGIN = os.path.join(BUILD, "cni-plugin", "meshcut")
MKIMAGE = os.path.join(REPO, "deploy", "mkimage.py")
MANIFEST = os.path.join(REPO, "conf", "meshcut-daemonset.yaml")


def cni_cache_dir():
    """containerd 1.6's go-cni leaves libcni's CacheDir at its default: results
    land in /var/lib/cni/results/<net name>-<sandbox id>-<ifname> (the kit's
    CNI_CACHE); meshcutd's --cni-cache-dir is the directory above results/."""
    return os.path.dirname(crinode.CNI_CACHE)


class NodeNetns:
    """A CriNode's netns in the shape mcnet.Daemon / test_cni expect."""

    def __init__(self, node):
        self.node = node
        self.name = node.netns
        self.path = node.netns_path

    def run(self, *cmd, check=True):
        return mcnet.sh("ip", "netns", "exec", self.name, *cmd, check=check)


def pods_json(d):
    for i in range(20):
        try:
            return json.loads(d.cli("pods", "--json").stdout)
        except OSError:   # meshcutd mid-rebuild in a shared build dir (EACCES/ETXTBSY): retry briefly
            if i == 19:
                raise
            time.sleep(0.25)


def record(d, sid):
    recs = [p for p in pods_json(d) if p.get("container_id") == sid]
    return recs[0] if len(recs) == 1 else (recs or None)


def tc_filters(node, dev):
    return node.sh("tc filter show dev %s ingress" % dev, check=False).stdout


def our_filter(node, dev):
    out = tc_filters(node, dev)
    return abi.is_ours(out)


def plugin_log(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except FileNotFoundError:
        pass
    return out


def wait_for(pred, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def link_bytes(node, dev):
    """(rx, tx) bytes of DEV in the node netns."""
    out = node.sh("ip -j -s link show dev %s" % dev).stdout
    st = json.loads(out)[0]["stats64"]
    return st["rx"]["bytes"], st["tx"]["bytes"]


def daemon_cleanup(d):
    """Stop meshcutd and remove its pins, also when the node netns is already gone
    (mcnet.Daemon.cli setns()es into it and would fail)."""
    if d.proc and d.proc.poll() is None:
        d.proc.send_signal(signal.SIGTERM)
        try:
            d.proc.wait(10)
        except subprocess.TimeoutExpired:
            d.proc.kill()
            d.proc.wait()
    for _ in range(20):   # retried: the binary may be mid-rebuild (EACCES/ETXTBSY) for a moment
        if not os.path.exists(d.pin_root):
            return
        if d.netns is not None and not os.path.exists(d.netns.path):
            d.netns = None
        try:
            d.cli("detach", check=False)
        except OSError as e:
            print("meshcutd detach: %s (retrying)" % e, file=sys.stderr)
            time.sleep(0.5)
