#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Write meshcut's OCI image (meshcutd + the `meshcut` CNI plugin) as an OCI
archive, without a container engine. deploy/build-image.sh is the front door.

The root holds exactly what the two binaries and the DaemonSet's shell need:

  /usr/bin/meshcutd            stripped CMake build
  /opt/meshcut/bin/meshcut     stripped CMake build (meshcutd copies it to the
                               host's CNI bin dir: conf/meshcut-daemonset.yaml)
  /usr/lib/x86_64-linux-gnu/*  the shared libraries `ldd` names for either
  /lib64/ld-linux-x86-64.so.2  binary, from the host's Debian 12 packages
                               (/lib -> usr/lib, Debian's merged /usr)
  /bin/busybox + applets       Debian's busybox-static: /bin/sh, sleep, rm,
                               touch, test for the manifest's mode switch and
                               probes; ls, cat for `kubectl exec` debugging
  /usr/share/doc/<pkg>/copyright   of every Debian package copied from
  /usr/share/meshcut/packages.txt  package, version, file: what is inside
  /tmp (1777), /etc, /proc, /sys, /dev, /run, /var/log (mount points)

Reproducible: one uncompressed tar layer with sorted entries, mtime =
SOURCE_DATE_EPOCH (default 0), uid/gid 0, no user/group names, ustar format;
gzip with mtime 0 and no file name; JSON with sorted keys. The same binaries,
libraries and options give the same bytes, hence the same manifest digest.

    mkimage.py --meshcutd build/pinned-maps-daemon/meshcutd \\
               --plugin build/cni-plugin/meshcut --out build/meshcut-image.tar \\
               [--name localhost/meshcut:dev] [--label k=v ...] [--contents]
               [--rootfs-tar build/meshcut-rootfs.tar]

Prints one JSON line: name, manifest digest, config digest, sizes, files.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile

DEFAULT_NAME = "localhost/meshcut:dev"
BUSYBOX = "/bin/busybox"
APPLETS = ["sh", "sleep", "rm", "touch", "test", "[", "echo", "ls", "cat", "mkdir"]
LIBDIR = "usr/lib/x86_64-linux-gnu"
DIRS = {"bin": 0o755, "dev": 0o755, "etc": 0o755, "lib64": 0o755, "opt": 0o755, "opt/meshcut": 0o755,
        "opt/meshcut/bin": 0o755, "proc": 0o755, "run": 0o755, "sys": 0o755, "tmp": 0o1777, "usr": 0o755,
        "usr/bin": 0o755, "usr/lib": 0o755, LIBDIR: 0o755, "usr/share": 0o755, "usr/share/doc": 0o755,
        "usr/share/meshcut": 0o755, "var": 0o755, "var/log": 0o755}


class ImageError(RuntimeError):
    pass


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def jbytes(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ImageError("%s -> exit %d: %s" % (" ".join(cmd), r.returncode, r.stderr.strip()))
    return r.stdout


def shared_libs(binary):
    """[(soname, resolved host path)] ldd reports for BINARY, the loader included."""
    out = run(["ldd", binary])
    libs = []
    for line in out.splitlines():
        line = line.strip()
        if "not found" in line:
            raise ImageError("%s: %s: install the library's -dev/runtime package (.ci/deps.sh)" % (binary, line))
        m = re.match(r"(\S+) => (/\S+) \(0x", line)
        if m:
            libs.append((m.group(1), os.path.realpath(m.group(2))))
            continue
        m = re.match(r"(/\S+) \(0x", line)   # the dynamic loader
        if m:
            libs.append((os.path.basename(m.group(1)), os.path.realpath(m.group(1))))
    return libs


def debian_package(path):
    """(package, version) owning PATH (tried as is and with /usr merged or not)."""
    cands = [path]
    if path.startswith("/usr/"):
        cands.append(path[4:])
    else:
        cands.append("/usr" + path)
    for p in cands:
        r = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True)
        if r.returncode == 0:
            pkg = r.stdout.splitlines()[0].split(": ", 1)[0].strip()   # "libc6:amd64: /lib/..."
            ver = run(["dpkg-query", "-W", "-f", "${Version}", pkg]).strip()
            return pkg, ver
    raise ImageError("%s belongs to no Debian package (dpkg -S): the image copies only packaged libraries" % path)


def stripped(binary, tmpdir):
    out = os.path.join(tmpdir, os.path.basename(binary) + ".stripped")
    run(["strip", "--strip-all", "-o", out, binary])
    with open(out, "rb") as f:
        return f.read()


class Layer:
    """An uncompressed tar written in sorted order with fixed metadata."""

    def __init__(self, mtime):
        self.mtime = mtime
        self.entries = {}   # path -> (type, data or target, mode)

    def dir(self, path, mode=0o755):
        self.entries[path] = ("dir", None, mode)

    def file(self, path, data, mode=0o644):
        self.entries[path] = ("file", data, mode)

    def symlink(self, path, target):
        self.entries[path] = ("sym", target, 0o777)

    def bytes(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
            for path in sorted(self.entries):
                kind, data, mode = self.entries[path]
                ti = tarfile.TarInfo(path)
                ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = self.mtime, mode, 0, 0, "", ""
                if kind == "dir":
                    ti.type = tarfile.DIRTYPE
                    tf.addfile(ti)
                elif kind == "sym":
                    ti.type = tarfile.SYMTYPE
                    ti.linkname = data
                    tf.addfile(ti)
                else:
                    ti.size = len(data)
                    tf.addfile(ti, io.BytesIO(data))
        return buf.getvalue()


def build_layer(meshcutd, plugin, mtime, tmpdir):
    lay = Layer(mtime)
    for d, mode in DIRS.items():
        lay.dir(d, mode)
    lay.symlink("lib", "usr/lib")
    lay.file("usr/bin/meshcutd", stripped(meshcutd, tmpdir), 0o755)
    lay.file("opt/meshcut/bin/meshcut", stripped(plugin, tmpdir), 0o755)
    if not os.access(BUSYBOX, os.X_OK):
        raise ImageError("%s missing: apt-get install busybox-static (.ci/deps.sh)" % BUSYBOX)
    with open(BUSYBOX, "rb") as f:
        lay.file("bin/busybox", f.read(), 0o755)
    for a in APPLETS:
        lay.symlink("bin/" + a, "busybox")
    pkgs = {debian_package(BUSYBOX): [BUSYBOX]}
    libs = {}
    for b in (meshcutd, plugin):
        for soname, real in shared_libs(b):
            libs[soname] = real
    for soname, real in sorted(libs.items()):
        with open(real, "rb") as f:
            data = f.read()
        dest = "lib64/" + soname if soname.startswith("ld-linux") else LIBDIR + "/" + soname
        lay.file(dest, data, 0o755 if soname.startswith("ld-linux") else 0o644)
        pkgs.setdefault(debian_package(real), []).append(real)
    lines = []
    for (pkg, ver), files in sorted(pkgs.items()):
        lines.append("%s %s %s" % (pkg, ver, " ".join(sorted(files))))
        cr = "/usr/share/doc/%s/copyright" % pkg.split(":")[0]
        if os.path.exists(cr):
            lay.dir("usr/share/doc/" + pkg.split(":")[0])
            with open(cr, "rb") as f:
                lay.file(cr[1:], f.read())
    lay.file("usr/share/meshcut/packages.txt", ("\n".join(lines) + "\n").encode())
    lay.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    lay.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return lay


def write_archive(out, name, layer_tar, labels, mtime):
    created = "%sZ" % __import__("datetime").datetime.utcfromtimestamp(mtime).isoformat()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", compresslevel=9, mtime=0, filename="") as g:
        g.write(layer_tar)
    layer_gz = gz.getvalue()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": ["/usr/bin/meshcutd"],
            "Cmd": ["run", "--config", "/etc/meshcut/meshcutd.json"],
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha256(layer_tar)]},
        "history": [{"created": created, "created_by": "meshcut deploy/mkimage.py"}],
    }
    config_b = jbytes(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + sha256(config_b), "size": len(config_b)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + sha256(layer_gz), "size": len(layer_gz)}],
        "annotations": {k: v for k, v in labels.items() if k.startswith("org.opencontainers.image.")},
    }
    manifest_b = jbytes(manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + sha256(manifest_b), "size": len(manifest_b),
            "platform": {"architecture": "amd64", "os": "linux"},
            # ctr image import names the image by the first; podman load and
            # skopeo (oci-archive:) by the second
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name},
        }],
    }
    index_b = jbytes(index)
    tmp = out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        def add(n, data, kind="file"):
            ti = tarfile.TarInfo(n)
            ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = mtime, 0, 0, "", ""
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o644
                tf.addfile(ti, io.BytesIO(data))
        add("blobs", None, "dir")
        add("blobs/sha256", None, "dir")
        for b in sorted([config_b, manifest_b, layer_gz], key=sha256):
            add("blobs/sha256/" + sha256(b), b)
        add("index.json", index_b)
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    os.replace(tmp, out)
    return {"name": name, "digest": "sha256:" + sha256(manifest_b), "config_digest": "sha256:" + sha256(config_b),
            "layer_bytes": len(layer_tar), "layer_gzip_bytes": len(layer_gz), "archive_bytes": os.path.getsize(out)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meshcutd", required=True)
    ap.add_argument("--plugin", required=True, help="the `meshcut` CNI plugin binary")
    ap.add_argument("--out", required=True, help="the OCI archive to write")
    ap.add_argument("--name", default=DEFAULT_NAME, help="image reference (default %(default)s)")
    ap.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--contents", action="store_true", help="also list the layer's files (JSON key files)")
    ap.add_argument("--rootfs-tar", help="also write the root as a plain tar (deploy/Containerfile ADDs it)")
    opt = ap.parse_args(argv)
    for b in (opt.meshcutd, opt.plugin):
        if not (os.path.isfile(b) and os.access(b, os.X_OK)):
            raise ImageError("%s is not an executable file: build first (cmake --build build)" % b)
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    labels = {"org.opencontainers.image.title": "meshcut",
              "org.opencontainers.image.licenses": "Apache-2.0"}
    for kv in opt.label:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise ImageError("--label %r: want KEY=VALUE" % kv)
        labels[k] = v
    with tempfile.TemporaryDirectory(prefix="meshcut-image-") as tmp:
        lay = build_layer(opt.meshcutd, opt.plugin, mtime, tmp)
        layer_tar = lay.bytes()
        info = write_archive(opt.out, opt.name, layer_tar, labels, mtime)
        if opt.rootfs_tar:
            with open(opt.rootfs_tar, "wb") as f:
                f.write(layer_tar)
    if opt.contents:
        info["files"] = {p: (e[0] if e[0] != "sym" else "-> " + e[1]) for p, e in sorted(lay.entries.items())}
    print(json.dumps(info, sort_keys=True))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ImageError as e:
        print("mkimage: %s" % e, file=sys.stderr)
        sys.exit(1)
