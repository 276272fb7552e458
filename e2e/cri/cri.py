#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A minimal CRI client (runtime.v1) over gRPC, for the e2e test bed.

Debian has no crictl, so tests drive containerd's CRI with this. The API
subset is e2e/cri/cri_subset.proto (field numbers from k8s.io/cri-api); it is
compiled at import time with grpc_tools.protoc (python3-grpc-tools) into a
private temp dir, so no generated code lives in the repo.

Needs Debian's python3-grpcio / python3-protobuf / python3-grpc-tools, i.e. run
with /usr/bin/python3 (a pyenv python on PATH does not see them).

    c = CriClient("/path/to/containerd.sock")
    c.version()                      -> VersionResponse
    sid = c.run_pod("web-0", namespace="default", uid=..., labels=..., annotations=...)
    st = c.pod_status(sid)           -> PodSandboxStatusResponse (verbose)
    c.pod_ip(sid), c.pod_netns(sid), c.pod_pid(sid)
    cid = c.create_container(sid, "app", command=[...], args=[...], run_as_user=1337)
    c.start_container(cid); c.exec_sync(cid, ["ip", "addr"])
    c.stop_container(cid); c.remove_container(cid)
    c.stop_pod(sid); c.remove_pod(sid)
"""
import atexit
import importlib
import json
import os
import shutil
import sys
import tempfile
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "cri_subset.proto")

try:
    import grpc
except ImportError as e:  # pragma: no cover - environment problem
    raise ImportError(
        f"{e}: run with /usr/bin/python3 and install python3-grpcio "
        "(e2e/cri/deps.sh)") from e

_pb2 = None
_pb2_grpc = None


def _load_stubs():
    """Compile cri_subset.proto into a temp dir and import the modules."""
    global _pb2, _pb2_grpc
    if _pb2 is not None:
        return _pb2, _pb2_grpc
    try:
        from grpc_tools import protoc
    except ImportError as e:
        raise ImportError(f"{e}: install python3-grpc-tools (e2e/cri/deps.sh)") from e
    out = tempfile.mkdtemp(prefix="meshcut-cri-stubs-")
    atexit.register(shutil.rmtree, out, True)
    shutil.copy(PROTO, os.path.join(out, "cri_subset.proto"))
    rc = protoc.main(["protoc", f"-I{out}", f"--python_out={out}",
                      f"--grpc_python_out={out}", os.path.join(out, "cri_subset.proto")])
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc failed on {PROTO} (rc={rc})")
    sys.path.insert(0, out)
    try:
        _pb2 = importlib.import_module("cri_subset_pb2")
        _pb2_grpc = importlib.import_module("cri_subset_pb2_grpc")
    finally:
        sys.path.remove(out)
    return _pb2, _pb2_grpc


def pb():
    """The generated message module (runtime.v1 messages)."""
    return _load_stubs()[0]


class CriError(RuntimeError):
    pass


class CriClient:
    def __init__(self, sock, timeout=60.0):
        self.sock = sock
        self.timeout = timeout
        m, g = _load_stubs()
        self.m = m
        self.channel = grpc.insecure_channel("unix://" + sock)
        self.rt = g.RuntimeServiceStub(self.channel)
        self.img = g.ImageServiceStub(self.channel)
        # pod sandbox configs, needed again for CreateContainer
        self._configs = {}

    def close(self):
        self.channel.close()

    def _call(self, fn, req, timeout=None):
        try:
            return fn(req, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise CriError(f"{fn._method.decode() if hasattr(fn, '_method') else fn}: "
                           f"{e.code().name}: {e.details()}") from None

    # ---- runtime ---------------------------------------------------------
    def version(self):
        return self._call(self.rt.Version, self.m.VersionRequest(version="v1"))

    def status(self, verbose=False):
        return self._call(self.rt.Status, self.m.StatusRequest(verbose=verbose))

    def wait_ready(self, timeout=30.0):
        """Wait until RuntimeReady and NetworkReady (the CNI conf is loaded)."""
        import time
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                st = self.status()
                conds = {c.type: c for c in st.status.conditions}
                last = {k: (c.status, c.reason, c.message) for k, c in conds.items()}
                if all(conds.get(t) and conds[t].status for t in ("RuntimeReady", "NetworkReady")):
                    return last
            except CriError as e:
                last = str(e)
            time.sleep(0.1)
        raise CriError(f"CRI at {self.sock} not ready after {timeout}s: {last}")

    # ---- pod sandboxes ---------------------------------------------------
    def pod_config(self, name, namespace="default", uid=None, labels=None,
                   annotations=None, log_directory=None, hostname=None,
                   cgroup_parent="", sysctls=None, privileged=False,
                   dns_servers=None, dns_searches=None, attempt=0, host_network=False):
        """HOST_NETWORK: the sandbox shares the node's netns (hostNetwork: true;
        containerd calls no CNI plugin for it)."""
        m = self.m
        uid = uid or str(uuid.uuid4())
        cfg = m.PodSandboxConfig(
            metadata=m.PodSandboxMetadata(name=name, namespace=namespace, uid=uid,
                                          attempt=attempt),
            # hostNetwork shares the node's UTS namespace too: no hostname of its own
            hostname="" if host_network else (hostname or name[:63]),
            log_directory=log_directory or "",
            labels=labels or {},
            annotations=annotations or {},
            linux=m.LinuxPodSandboxConfig(
                cgroup_parent=cgroup_parent,
                sysctls=sysctls or {},
                security_context=m.LinuxSandboxSecurityContext(
                    namespace_options=m.NamespaceOption(network=m.NODE if host_network else m.POD,
                                                        pid=m.CONTAINER, ipc=m.POD),
                    privileged=privileged,
                ),
            ),
        )
        if dns_servers or dns_searches:
            cfg.dns_config.CopyFrom(m.DNSConfig(servers=dns_servers or [],
                                                searches=dns_searches or []))
        return cfg

    def run_pod(self, name, config=None, runtime_handler="", timeout=None, **kw):
        """RunPodSandbox; returns the sandbox id. kw go to pod_config()."""
        cfg = config or self.pod_config(name, **kw)
        r = self._call(self.rt.RunPodSandbox,
                       self.m.RunPodSandboxRequest(config=cfg, runtime_handler=runtime_handler),
                       timeout)
        self._configs[r.pod_sandbox_id] = cfg
        return r.pod_sandbox_id

    def stop_pod(self, sid):
        self._call(self.rt.StopPodSandbox, self.m.StopPodSandboxRequest(pod_sandbox_id=sid))

    def remove_pod(self, sid):
        self._call(self.rt.RemovePodSandbox, self.m.RemovePodSandboxRequest(pod_sandbox_id=sid))
        self._configs.pop(sid, None)

    def pod_status(self, sid, verbose=True):
        return self._call(self.rt.PodSandboxStatus,
                          self.m.PodSandboxStatusRequest(pod_sandbox_id=sid, verbose=verbose))

    def pod_info(self, sid):
        """The verbose `info` JSON of PodSandboxStatus (containerd: key "info")."""
        st = self.pod_status(sid, verbose=True)
        raw = st.info.get("info")
        return json.loads(raw) if raw else {}

    def pod_ip(self, sid):
        return self.pod_status(sid, verbose=False).status.network.ip

    def pod_netns(self, sid):
        """Path of the pod's network namespace (from the sandbox's runtime spec)."""
        info = self.pod_info(sid)
        for ns in info.get("runtimeSpec", {}).get("linux", {}).get("namespaces", []):
            if ns.get("type") == "network" and ns.get("path"):
                return ns["path"]
        pid = info.get("pid")
        if pid:
            return f"/proc/{pid}/ns/net"
        raise CriError(f"no network namespace for sandbox {sid}: {sorted(info)}")

    def pod_pid(self, sid):
        return self.pod_info(sid).get("pid")

    def list_pods(self, label_selector=None, ready_only=False):
        m = self.m
        f = m.PodSandboxFilter(label_selector=label_selector or {})
        if ready_only:
            f.state.CopyFrom(m.PodSandboxStateValue(state=m.SANDBOX_READY))
        return list(self._call(self.rt.ListPodSandbox, m.ListPodSandboxRequest(filter=f)).items)

    # ---- containers ------------------------------------------------------
    def create_container(self, sid, name, image, command=None, args=None, envs=None,
                         run_as_user=None, run_as_group=None, privileged=False,
                         add_caps=None, drop_caps=None, mounts=None, labels=None,
                         annotations=None, working_dir="", log_path=None,
                         sandbox_config=None):
        """CreateContainer in pod `sid`; returns the container id.

        mounts: list of (host_path, container_path, readonly[, propagation])
        tuples; propagation: "HostToContainer" or "Bidirectional" (the
        Kubernetes mountPropagation names), default private. The container
        shares its sandbox's network mode (hostNetwork or not).
        """
        m = self.m
        cfg = sandbox_config or self._configs.get(sid)
        if cfg is None:
            raise CriError(f"no PodSandboxConfig known for {sid}: pass sandbox_config")
        netmode = cfg.linux.security_context.namespace_options.network
        prop = {None: m.PROPAGATION_PRIVATE, "None": m.PROPAGATION_PRIVATE,
                "HostToContainer": m.PROPAGATION_HOST_TO_CONTAINER,
                "Bidirectional": m.PROPAGATION_BIDIRECTIONAL}
        sc = m.LinuxContainerSecurityContext(
            privileged=privileged,
            namespace_options=m.NamespaceOption(network=netmode, pid=m.CONTAINER, ipc=m.POD),
            capabilities=m.Capability(add_capabilities=add_caps or [],
                                      drop_capabilities=drop_caps or []),
        )
        if run_as_user is not None:
            sc.run_as_user.CopyFrom(m.Int64Value(value=run_as_user))
        if run_as_group is not None:
            sc.run_as_group.CopyFrom(m.Int64Value(value=run_as_group))
        cc = m.ContainerConfig(
            metadata=m.ContainerMetadata(name=name),
            image=m.ImageSpec(image=image),
            command=command or [],
            args=args or [],
            working_dir=working_dir,
            envs=[m.KeyValue(key=k, value=v) for k, v in (envs or {}).items()],
            mounts=[m.Mount(host_path=mt[0], container_path=mt[1], readonly=mt[2],
                            propagation=prop[mt[3] if len(mt) > 3 else None])
                    for mt in (mounts or [])],
            labels=labels or {},
            annotations=annotations or {},
            log_path=(log_path if log_path is not None
                      else (f"{name}.log" if cfg.log_directory else "")),
            linux=m.LinuxContainerConfig(security_context=sc),
        )
        r = self._call(self.rt.CreateContainer,
                       m.CreateContainerRequest(pod_sandbox_id=sid, config=cc,
                                                sandbox_config=cfg))
        return r.container_id

    def start_container(self, cid):
        self._call(self.rt.StartContainer, self.m.StartContainerRequest(container_id=cid))

    def run_container(self, sid, name, image, **kw):
        cid = self.create_container(sid, name, image, **kw)
        self.start_container(cid)
        return cid

    def stop_container(self, cid, timeout=0):
        self._call(self.rt.StopContainer,
                   self.m.StopContainerRequest(container_id=cid, timeout=timeout))

    def remove_container(self, cid):
        self._call(self.rt.RemoveContainer, self.m.RemoveContainerRequest(container_id=cid))

    def container_status(self, cid, verbose=False):
        return self._call(self.rt.ContainerStatus,
                          self.m.ContainerStatusRequest(container_id=cid, verbose=verbose))

    def container_pid(self, cid):
        st = self.container_status(cid, verbose=True)
        return json.loads(st.info.get("info", "{}")).get("pid")

    def list_containers(self, sid=None):
        f = self.m.ContainerFilter(pod_sandbox_id=sid or "")
        return list(self._call(self.rt.ListContainers,
                               self.m.ListContainersRequest(filter=f)).containers)

    def exec_sync(self, cid, cmd, timeout=10):
        """ExecSync; returns (exit_code, stdout bytes, stderr bytes)."""
        r = self._call(self.rt.ExecSync,
                       self.m.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=timeout),
                       timeout + 10)
        return r.exit_code, r.stdout, r.stderr

    # ---- images ----------------------------------------------------------
    def list_images(self):
        return list(self._call(self.img.ListImages, self.m.ListImagesRequest()).images)

    def image_present(self, ref):
        r = self._call(self.img.ImageStatus,
                       self.m.ImageStatusRequest(image=self.m.ImageSpec(image=ref)))
        return bool(r.image.id)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: cri.py SOCK   (prints Version and Status)")
        sys.exit(2)
    c = CriClient(sys.argv[1])
    print(c.version())
    print(c.status())
