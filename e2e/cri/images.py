#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Local OCI images for the CRI test bed, built from Debian's busybox-static.

No registry and no network: each image is one uncompressed layer holding
/bin/busybox, a symlink per applet, and a small /etc (passwd with root, nobody
and uid 1337 "istio-proxy", group, nsswitch). The two images share the layer
and differ only in their config (RUNTIME_IMAGE adds two symlinks):

  PAUSE_IMAGE  entrypoint `/bin/busybox sleep 2147483647` -- the sandbox
               ("pause") container; CRI kills it with SIGKILL on StopPodSandbox.
  APP_IMAGE    entrypoint `/bin/sh`, cmd `-c "sleep 2147483647"`; tests override
               command/args in CreateContainer.
  RUNTIME_IMAGE  APP_IMAGE plus /lib -> usr/lib and /lib64 -> usr/lib64: a
               container that mounts the host's /usr read-only at /usr runs
               Debian's own nginx, haproxy, python3, node, wrk (the mesh test
               bed's apps and sidecars) without a registry.

The tarballs are OCI image layouts (oci-layout, index.json, blobs/sha256/*),
deterministic (fixed mtimes, sorted entries), so their digests are stable and
they are cached in the build dir keyed by the busybox binary's sha256.
`import_images(sock)` loads them into a containerd's `k8s.io` namespace with
`ctr -a SOCK -n k8s.io image import`, which unpacks them into the overlayfs
snapshotter that CRI uses; the index carries the annotation
`io.containerd.image.name`, which is the name ctr gives the image.

CLI:  images.py build [DIR]          build the tarballs, print their paths
      images.py import SOCK [DIR]    build if needed and import into SOCK
"""
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile

BUSYBOX = "/bin/busybox"
PAUSE_IMAGE = "localhost/meshcut-e2e/pause:1"
APP_IMAGE = "localhost/meshcut-e2e/app:1"
RUNTIME_IMAGE = "localhost/meshcut-e2e/runtime:1"
ISTIO_PROXY_UID = 1337

_MTIME = 1700000000  # fixed, for reproducible layer digests

_PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    f"istio-proxy:x:{ISTIO_PROXY_UID}:{ISTIO_PROXY_UID}:istio-proxy:/tmp:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
_GROUP = (
    "root:x:0:\n"
    f"istio-proxy:x:{ISTIO_PROXY_UID}:\n"
    "nogroup:x:65534:\n"
)


def default_build_dir():
    return os.path.join(tempfile.gettempdir(), "meshcut-e2e-cri-images")


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _applets():
    out = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True,
                         text=True).stdout.split()
    return sorted(a for a in out if a and "/" not in a and a != "busybox")


def _layer_tar(runtime=False):
    """The rootfs layer (uncompressed tar bytes); RUNTIME: with the /lib links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add_dir(name, mode=0o755):
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.DIRTYPE
            ti.mode = mode
            ti.mtime = _MTIME
            tf.addfile(ti)

        def add_file(name, data, mode=0o644):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = mode
            ti.mtime = _MTIME
            tf.addfile(ti, io.BytesIO(data))

        def add_symlink(name, target):
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.SYMTYPE
            ti.linkname = target
            ti.mode = 0o777
            ti.mtime = _MTIME
            tf.addfile(ti)

        for d in ("bin", "dev", "etc", "proc", "root", "sys", "usr",
                  "usr/bin", "usr/sbin", "var", "run"):
            add_dir(d, 0o700 if d == "root" else 0o755)
        add_dir("tmp", 0o1777)
        add_symlink("sbin", "bin")
        if runtime:  # Debian's merged /usr: the dynamic loader is /lib64/ld-linux-x86-64.so.2
            add_symlink("lib", "usr/lib")
            add_symlink("lib64", "usr/lib64")
        with open(BUSYBOX, "rb") as f:
            add_file("bin/busybox", f.read(), 0o755)
        for a in _applets():
            add_symlink("bin/" + a, "busybox")
        add_file("etc/passwd", _PASSWD.encode())
        add_file("etc/group", _GROUP.encode())
        add_file("etc/nsswitch.conf", b"hosts: files dns\n")
    return buf.getvalue()


def _oci_tar(path, name, layer, entrypoint, cmd):
    layer_digest = _sha256(layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": entrypoint,
            "Cmd": cmd,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_digest]},
        "history": [{"created": "2023-11-14T22:13:20Z",
                     "created_by": "meshcut e2e/cri/images.py (busybox-static)"}],
    }
    config_b = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + _sha256(config_b), "size": len(config_b)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": "sha256:" + layer_digest, "size": len(layer)}],
    }
    manifest_b = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + _sha256(manifest_b), "size": len(manifest_b),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]},
        }],
    }
    index_b = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    tmp = path + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add(n, data):
            ti = tarfile.TarInfo(n)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = _MTIME
            tf.addfile(ti, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index_b)
        add("blobs/sha256/" + _sha256(config_b), config_b)
        add("blobs/sha256/" + _sha256(manifest_b), manifest_b)
        add("blobs/sha256/" + layer_digest, layer)
    os.replace(tmp, path)


def build(build_dir=None):
    """Build (or reuse) the tarballs; returns {image name: tar path}."""
    if not os.access(BUSYBOX, os.X_OK):
        raise RuntimeError(f"{BUSYBOX} missing: apt-get install busybox-static "
                           "(see e2e/cri/deps.sh)")
    build_dir = build_dir or default_build_dir()
    os.makedirs(build_dir, exist_ok=True)
    with open(BUSYBOX, "rb") as f:
        key = _sha256(f.read() + b"v1")[:16]
    out = {
        PAUSE_IMAGE: os.path.join(build_dir, f"pause-{key}.tar"),
        APP_IMAGE: os.path.join(build_dir, f"app-{key}.tar"),
        RUNTIME_IMAGE: os.path.join(build_dir, f"runtime-{key}.tar"),
    }
    if all(os.path.exists(p) for p in out.values()):
        return out
    layer = _layer_tar()
    _oci_tar(out[PAUSE_IMAGE], PAUSE_IMAGE, layer,
             ["/bin/busybox", "sleep", "2147483647"], [])
    _oci_tar(out[APP_IMAGE], APP_IMAGE, layer,
             ["/bin/sh"], ["-c", "sleep 2147483647"])
    _oci_tar(out[RUNTIME_IMAGE], RUNTIME_IMAGE, _layer_tar(runtime=True),
             ["/bin/sh"], ["-c", "sleep 2147483647"])
    return out


def import_images(sock, build_dir=None, ctr="ctr"):
    """Import the images into the containerd at `sock`, namespace k8s.io."""
    tars = build(build_dir)
    for name, path in tars.items():
        r = subprocess.run([ctr, "-a", sock, "-n", "k8s.io", "image", "import", path],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"ctr import {path} failed: {r.stdout}{r.stderr}")
        ls = subprocess.run([ctr, "-a", sock, "-n", "k8s.io", "image", "ls", "-q"],
                            capture_output=True, text=True, check=True).stdout.split()
        if name not in ls:
            raise RuntimeError(f"ctr import {path}: {name} not listed after import: {ls}")
    return list(tars)


def main(argv):
    if len(argv) >= 2 and argv[1] == "build":
        for name, path in build(argv[2] if len(argv) > 2 else None).items():
            print(name, path)
        return 0
    if len(argv) >= 3 and argv[1] == "import":
        for name in import_images(argv[2], argv[3] if len(argv) > 3 else None):
            print("imported", name)
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
