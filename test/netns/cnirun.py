# SPDX-License-Identifier: Apache-2.0
"""A small CNI runtime for tests, doing what libcni does for a conflist:
ADD runs the plugins in order, each getting the previous result as
prevResult, and caches the final result; DEL runs them in reverse order with
the cached result (or without one, like the runtime's second DEL); CHECK runs
them in order with the cached result. Plugins run inside the node's netns
(never `ip netns exec`: it remounts /sys).
"""
import base64
import json
import os
import subprocess
import time

import mcnet


class CniError(Exception):
    def __init__(self, plugin, rc, out, err):
        super().__init__("%s exited %d: %s %s" % (plugin, rc, out.strip(), err.strip()[-500:]))
        self.plugin, self.rc, self.out, self.err = plugin, rc, out, err
        try:
            self.json = json.loads(out)
        except ValueError:
            self.json = None


class Runtime:
    def __init__(self, node_ns, conflist, bin_dirs, cache_dir):
        self.node_ns = node_ns
        self.conflist = conflist
        self.bin_dirs = bin_dirs
        self.cache_dir = cache_dir
        os.makedirs(os.path.join(cache_dir, "results"), exist_ok=True)
        self.timings = {}  # plugin type -> [seconds]

    def _find(self, typ):
        for d in self.bin_dirs:
            p = os.path.join(d, typ)
            if os.access(p, os.X_OK):
                return p
        raise FileNotFoundError("CNI plugin %s not in %s" % (typ, self.bin_dirs))

    def exec_plugin(self, plugin, command, cid, netns, ifname="eth0", args="", prev=None, extra_env=None,
                    stdin_override=None, capability_args=None):
        conf = dict(plugin)
        conf["name"] = self.conflist["name"]
        conf["cniVersion"] = self.conflist["cniVersion"]
        if prev is not None:
            conf["prevResult"] = prev
        caps = plugin.get("capabilities", {})
        if capability_args:
            rc = {k: v for k, v in capability_args.items() if caps.get(k)}
            if rc:
                conf["runtimeConfig"] = rc
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns or "",
               "CNI_IFNAME": ifname, "CNI_ARGS": args, "CNI_PATH": ":".join(self.bin_dirs),
               "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        env.update(extra_env or {})
        ns = self.node_ns
        t0 = time.monotonic()
        r = subprocess.run([self._find(plugin["type"])], input=stdin_override if stdin_override is not None
                           else json.dumps(conf), capture_output=True, text=True, env=env,
                           preexec_fn=lambda: mcnet._setns(ns.path), timeout=60)
        self.timings.setdefault(plugin["type"] + ":" + command, []).append(time.monotonic() - t0)
        if r.returncode != 0:
            raise CniError(plugin["type"], r.returncode, r.stdout, r.stderr)
        return json.loads(r.stdout) if r.stdout.strip() else None

    def _cache(self, cid, ifname):
        # libcni's layout and format (cniCacheV1), so meshcutd's re-scan reads it.
        return os.path.join(self.cache_dir, "results", "%s-%s-%s" % (self.conflist["name"], cid, ifname))

    def add(self, cid, netns, ifname="eth0", args="", capability_args=None):
        prev = None
        for p in self.conflist["plugins"]:
            prev = self.exec_plugin(p, "ADD", cid, netns, ifname, args, prev, capability_args=capability_args)
        with open(self._cache(cid, ifname), "w") as f:
            json.dump({"kind": "cniCacheV1", "containerId": cid, "ifName": ifname,
                       "networkName": self.conflist["name"],
                       "config": base64.b64encode(json.dumps(self.conflist).encode()).decode(),
                       "cniArgs": [kv.split("=", 1) for kv in args.split(";") if "=" in kv],
                       "capabilityArgs": capability_args or {}, "result": prev}, f)
        return prev

    def cached(self, cid, ifname="eth0"):
        try:
            with open(self._cache(cid, ifname)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def check(self, cid, netns, ifname="eth0", args=""):
        c = self.cached(cid, ifname)
        for p in self.conflist["plugins"]:
            self.exec_plugin(p, "CHECK", cid, netns, ifname, args, c["result"] if c else None)

    def delete(self, cid, netns, ifname="eth0", args="", with_prev=True):
        c = self.cached(cid, ifname) if with_prev else None
        for p in reversed(self.conflist["plugins"]):
            self.exec_plugin(p, "DEL", cid, netns, ifname, args, c["result"] if c else None)
        if with_prev:
            try:
                os.unlink(self._cache(cid, ifname))
            except FileNotFoundError:
                pass
