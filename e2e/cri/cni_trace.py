#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A pass-through chained CNI plugin that records how the runtime calls it.

Put it after the main plugin in a conflist, e.g.
    CriNode(..., conflist_plugins_after_main=[{"type": "mce-trace", "logFile": "/x.jsonl"}],
            cni_bin_dirs=["/usr/lib/cni", ("mce-trace", "e2e/cri/cni_trace.py")])
Each call appends one JSON line to logFile: command, container id, netns,
ifname, whether prevResult was given and its IPs. ADD returns prevResult
unchanged; DEL/CHECK return nothing; VERSION answers 0.3.0..1.0.0.
"""
import json
import os
import sys
import time

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]


def main():
    cmd = os.environ.get("CNI_COMMAND", "")
    if cmd == "VERSION":
        json.dump({"cniVersion": "1.0.0", "supportedVersions": VERSIONS}, sys.stdout)
        return 0
    conf = json.load(sys.stdin)
    prev = conf.get("prevResult")
    rec = {
        "t": time.time(),
        "command": cmd,
        "containerId": os.environ.get("CNI_CONTAINERID", ""),
        "netns": os.environ.get("CNI_NETNS", ""),
        "ifname": os.environ.get("CNI_IFNAME", ""),
        "args": os.environ.get("CNI_ARGS", ""),
        "hasPrevResult": prev is not None,
        "ips": [ip.get("address") for ip in (prev or {}).get("ips", [])],
        "runtimeConfig": conf.get("runtimeConfig"),
    }
    log = conf.get("logFile")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(rec) + "\n")
    if cmd == "ADD":
        if prev is None:
            json.dump({"code": 7, "msg": "mce-trace: ADD without prevResult"}, sys.stdout)
            return 1
        out = dict(prev)
        out["cniVersion"] = conf.get("cniVersion", "1.0.0")
        json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
