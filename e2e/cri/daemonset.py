#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Run a DaemonSet's pod on a CriNode through CRI, as kubelet would, from the
manifest itself (conf/meshcut-daemonset.yaml): the bed never restates a field,
so the two cannot drift. What the manifest says and this module does:

  hostNetwork: true          sandbox network NODE (the node's netns; no CNI call)
  securityContext            privileged sandbox and container, capabilities added
  command, args, env         as written (env overridable: `kubectl set env`)
  volumeMounts + volumes     hostPath -> HOST_PATH(path) (the node's view of that
                             host path), configMap -> its data as files, read-only;
                             readOnly and mountPropagation as written
  readinessProbe/livenessProbe exec commands, run with CRI ExecSync
  terminationGracePeriodSeconds  StopContainer's timeout

A container field or volume kind this module does not know is an error, so a
manifest change that the bed would silently ignore fails the test instead.
"""
import os

import yaml

KNOWN_CONTAINER = {"name", "image", "imagePullPolicy", "env", "command", "args", "readinessProbe",
                   "livenessProbe", "securityContext", "resources", "volumeMounts"}


class ManifestError(RuntimeError):
    pass


class DaemonSetSpec:
    def __init__(self, path):
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        ds = [d for d in docs if d.get("kind") == "DaemonSet"]
        if len(ds) != 1:
            raise ManifestError("%s: want one DaemonSet, found %d" % (path, len(ds)))
        self.configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d.get("kind") == "ConfigMap"}
        self.pod = ds[0]["spec"]["template"]["spec"]
        if len(self.pod["containers"]) != 1:
            raise ManifestError("one container expected")
        self.c = self.pod["containers"][0]
        unknown = set(self.c) - KNOWN_CONTAINER
        if unknown:
            raise ManifestError("container fields the bed does not run: %s (teach e2e/cri/daemonset.py)" % sorted(unknown))
        self.volumes = {v["name"]: v for v in self.pod.get("volumes", [])}
        self.name = ds[0]["metadata"]["name"]
        self.namespace = ds[0]["metadata"].get("namespace", "default")

    @property
    def image(self):
        return self.c["image"]

    def env(self, overrides=None):
        e = {x["name"]: x["value"] for x in self.c.get("env", [])}
        e.update(overrides or {})
        return e

    def probe(self, kind):
        p = self.c.get(kind)
        if p is None:
            return None
        if "exec" not in p:
            raise ManifestError("%s: only exec probes are run by the bed" % kind)
        return p["exec"]["command"]

    def host_paths(self):
        return sorted(v["hostPath"]["path"] for v in self.volumes.values() if "hostPath" in v)

    def mounts(self, host_path, configmap_dir):
        """CRI mounts: [(host path, container path, readonly, propagation)]."""
        out = []
        for vm in self.c.get("volumeMounts", []):
            v = self.volumes[vm["name"]]
            ro = bool(vm.get("readOnly", False))
            if "hostPath" in v:
                src = host_path(v["hostPath"]["path"])
                if v["hostPath"].get("type") == "DirectoryOrCreate":
                    os.makedirs(src, exist_ok=True)
                elif not os.path.isdir(src):
                    raise ManifestError("hostPath %s (%s) is not a directory" % (v["hostPath"]["path"], src))
            elif "configMap" in v:
                data = self.configmaps[v["configMap"]["name"]]
                src = os.path.join(configmap_dir, vm["name"])
                os.makedirs(src, exist_ok=True)
                for k, val in data.items():
                    with open(os.path.join(src, k), "w") as f:
                        f.write(val)
                ro = True
            else:
                raise ManifestError("volume %s: kind %s not run by the bed" % (vm["name"], sorted(v)))
            out.append((src, vm["mountPath"], ro, vm.get("mountPropagation")))
        return out


class DaemonSetPod:
    """One pod of the DaemonSet on NODE (a CriNode)."""

    def __init__(self, node, spec, host_path, workdir, image=None, env=None, name=None):
        self.node, self.spec = node, spec
        cri = node.cri
        name = name or spec.name + "-" + node.name
        sc = spec.c.get("securityContext", {})
        os.makedirs(os.path.join(workdir, "log-" + name), exist_ok=True)
        self.sid = cri.run_pod(name, namespace=spec.namespace, host_network=bool(spec.pod.get("hostNetwork")),
                               privileged=bool(sc.get("privileged")), cgroup_parent=node.cgroup_parent,
                               log_directory=os.path.join(workdir, "log-" + name), uid=name + "-uid")
        os.makedirs(os.path.join(workdir, "log-" + name), exist_ok=True)
        self.cid = cri.run_container(
            self.sid, spec.c["name"], image or spec.image, command=spec.c.get("command"), args=spec.c.get("args"),
            envs=spec.env(env), privileged=bool(sc.get("privileged")),
            add_caps=sc.get("capabilities", {}).get("add"),
            mounts=spec.mounts(host_path, os.path.join(workdir, "cm-" + name)))
        self.log_path = os.path.join(workdir, "log-" + name, spec.c["name"] + ".log")

    def exec(self, argv, timeout=10):
        rc, out, err = self.node.cri.exec_sync(self.cid, list(argv), timeout=timeout)
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def probe(self, kind="readinessProbe"):
        cmd = self.spec.probe(kind)
        return None if cmd is None else self.exec(cmd)[0]

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def delete(self):
        """As kubelet deletes a pod: SIGTERM, the grace period, then the sandbox."""
        grace = int(self.spec.pod.get("terminationGracePeriodSeconds", 30))
        self.node.cri.stop_container(self.cid, timeout=grace)
        self.node.cri.remove_container(self.cid)
        self.node.remove_pod(self.sid)
