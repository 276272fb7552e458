#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""e2e tier, the image (deploy/mkimage.py, deploy/build-image.sh): what a
cluster pulls is what the DaemonSet needs, byte for byte the same every time.

  1. reproducible: built twice from the same binaries -> identical archives and
     manifest digest; a different label -> a different digest;
  2. an OCI archive: oci-layout, index.json -> manifest -> config and layer,
     every digest and size as written, the layer's diff_id = sha256 of its
     gunzipped bytes, the name the manifest (conf/meshcut-daemonset.yaml) uses;
  3. exactly the runtime it needs: every ELF's DT_NEEDED found in the image's
     own lib dir and every library there needed by something (nothing extra),
     binaries stripped, /bin/sh and the applets the manifest's shell uses,
     every entry uid/gid 0 with mtime = SOURCE_DATE_EPOCH; meshcutd and the
     plugin run from the extracted root (chroot: no host library used);
  4. `ctr image import` accepts it: a CRI node's containerd lists it under its
     name with the manifest digest, and CRI ImageStatus finds it.
Its size is printed (report only; the check is a generous budget).

Run as root with Debian's python: /usr/bin/python3 test/e2e/test_image.py
"""
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import crimc  # noqa: E402  (test/netns, e2e/cri on sys.path)
import mcnet  # noqa: E402
from crimc import MANIFEST, MKIMAGE, PLUGIN  # noqa: E402
from mcnet import log  # noqa: E402

EPOCH = "1700000000"
SIZE_BUDGET = 10 << 20   # bytes of the archive; 6.9 MiB when written


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def mkimage(out, *extra):
    env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH)
    r = subprocess.run(["/usr/bin/python3", MKIMAGE, "--meshcutd", mcnet.MESHCUTD, "--plugin", PLUGIN,
                        "--out", out, *extra], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError("mkimage.py failed (%d): %s" % (r.returncode, r.stderr.strip()))
    return json.loads(r.stdout)


def manifest_image():
    import yaml
    with open(MANIFEST) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    ds = [d for d in docs if d.get("kind") == "DaemonSet"][0]
    return ds["spec"]["template"]["spec"]["containers"][0]["image"]


def read_archive(path):
    with tarfile.open(path) as tf:
        return {m.name: (tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()}


def elf_needed(data):
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        out = subprocess.run(["readelf", "-dW", f.name], capture_output=True, text=True).stdout
        secs = subprocess.run(["readelf", "-SW", f.name], capture_output=True, text=True).stdout
    needed = [line.split("[", 1)[1].split("]", 1)[0] for line in out.splitlines() if "(NEEDED)" in line]
    return needed, (".debug_info" in secs or ".symtab" in secs)


def main():
    mcnet.require_root()
    for tool in ("readelf", "strip", "ldd", "dpkg", "chroot", "ctr", "containerd"):
        if not shutil.which(tool):
            mcnet.skip_or_fail("%s not found: run .ci/deps.sh" % tool)
    try:
        import yaml  # noqa: F401
    except ImportError:
        mcnet.skip_or_fail("PyYAML missing: apt-get install python3-yaml (.ci/deps.sh)")
    if not os.path.exists(PLUGIN):
        print("FAIL: meshcut CNI plugin not built at %s" % PLUGIN, file=sys.stderr)
        sys.exit(1)
    ck = mcnet.Checks()
    tmp = tempfile.mkdtemp(prefix="mc-image-")
    mcnet._cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    try:
        run(ck, tmp)
    except Exception as e:
        import traceback
        traceback.print_exc()
        ck.check(False, "test ran to the end (%s: %s)" % (type(e).__name__, e))
    ck.done()


def run(ck, tmp):
    # ---- 1. reproducible ------------------------------------------------------
    a, b, c = (os.path.join(tmp, n) for n in ("a.tar", "b.tar", "c.tar"))
    t0 = time.monotonic()
    ia = mkimage(a, "--rootfs-tar", os.path.join(tmp, "rootfs.tar"))
    t_build = time.monotonic() - t0
    ib = mkimage(b)
    ic = mkimage(c, "--label", "org.opencontainers.image.version=test-2")
    with open(a, "rb") as f:
        ba = f.read()
    with open(b, "rb") as f:
        bb = f.read()
    ck.check(ba == bb and ia["digest"] == ib["digest"],
             "built twice from the same inputs: identical archives (%d B, sha256 %s), manifest digest %s"
             % (len(ba), sha256(ba)[:16], ia["digest"]), "%s vs %s" % (ia["digest"], ib["digest"]))
    ck.check(ic["digest"] != ia["digest"] and ic["config_digest"] != ia["config_digest"],
             "a different label gives a different digest (%s)" % ic["digest"][:19])
    size = len(ba)
    log("image %s: archive %.2f MiB, layer %.2f MiB uncompressed (%.2f MiB gzip); mkimage %.1f s (report only)"
        % (ia["name"], size / 2**20, ia["layer_bytes"] / 2**20, ia["layer_gzip_bytes"] / 2**20, t_build))
    ck.check(size < SIZE_BUDGET, "archive %.2f MiB < %.0f MiB budget" % (size / 2**20, SIZE_BUDGET / 2**20))

    # ---- 2. OCI archive ---------------------------------------------------------
    arc = read_archive(a)
    ck.check(json.loads(arc.get("oci-layout") or b"{}").get("imageLayoutVersion") == "1.0.0", "oci-layout 1.0.0")
    index = json.loads(arc["index.json"])
    ms = index.get("manifests", [])
    ok = len(ms) == 1
    m = ms[0] if ok else {}
    blob = lambda d: arc.get("blobs/sha256/" + d.split(":", 1)[1])  # noqa: E731
    mb = blob(m.get("digest", "sha256:x")) or b""
    ck.check(ok and sha256(mb) == m["digest"].split(":")[1] and len(mb) == m["size"] and m["digest"] == ia["digest"],
             "index.json -> one manifest, digest and size as in the blob (%s)" % m.get("digest"))
    want_name = manifest_image()
    ann = m.get("annotations", {})
    ck.check(ann.get("io.containerd.image.name") == want_name == ia["name"]
             and ann.get("org.opencontainers.image.ref.name") == want_name,
             "image name %s = the DaemonSet's image (conf/meshcut-daemonset.yaml)" % want_name, ann)
    man = json.loads(mb)
    cb = blob(man["config"]["digest"]) or b""
    lay = man["layers"]
    lb = blob(lay[0]["digest"]) if len(lay) == 1 else b""
    ck.check(sha256(cb) == man["config"]["digest"].split(":")[1] and len(cb) == man["config"]["size"]
             and len(lay) == 1 and sha256(lb) == lay[0]["digest"].split(":")[1] and len(lb) == lay[0]["size"]
             and lay[0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip",
             "manifest -> config and one gzip layer, digests and sizes match their blobs")
    cfg = json.loads(cb)
    raw = gzip.decompress(lb)
    ck.check(cfg["rootfs"]["diff_ids"] == ["sha256:" + sha256(raw)], "config diff_id = sha256 of the gunzipped layer")
    ck.check(cfg["config"].get("Entrypoint") == ["/usr/bin/meshcutd"] and
             any(e.startswith("PATH=") and "/usr/bin" in e for e in cfg["config"].get("Env", [])),
             "config: Entrypoint /usr/bin/meshcutd, PATH with /usr/bin", cfg["config"])
    with open(os.path.join(tmp, "rootfs.tar"), "rb") as f:
        ck.check(f.read() == raw, "--rootfs-tar (deploy/Containerfile's context) = the image's layer, byte for byte")

    # ---- 3. contents ------------------------------------------------------------
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = tf.getmembers()
        files = {x.name: tf.extractfile(x).read() for x in members if x.isfile()}
        links = {x.name: x.linkname for x in members if x.issym()}
    names = [x.name for x in members]
    ck.check(names == sorted(names) and all(x.uid == 0 and x.gid == 0 and not x.uname and not x.gname
                                            and x.mtime == int(EPOCH) for x in members),
             "%d entries, sorted, uid/gid 0 without names, mtime = SOURCE_DATE_EPOCH" % len(members))
    libdir = "usr/lib/x86_64-linux-gnu/"
    libs = {n[len(libdir):]: d for n, d in files.items() if n.startswith(libdir)}
    libs.update({n.split("/")[-1]: d for n, d in files.items() if n.startswith("lib64/")})
    elves = {n: d for n, d in files.items() if d[:4] == b"\x7fELF"}
    missing, used, unstripped = {}, set(), []
    for n, d in elves.items():
        needed, debug = elf_needed(d)
        if debug and n in ("usr/bin/meshcutd", "opt/meshcut/bin/meshcut"):
            unstripped.append(n)
        for so in needed:
            used.add(so)
            if so not in libs:
                missing.setdefault(n, []).append(so)
    used.add("ld-linux-x86-64.so.2")
    ck.check(not missing, "every DT_NEEDED of the %d ELF files is in the image (%d libraries)" % (len(elves), len(libs)),
             missing)
    ck.check(set(libs) <= used, "no library the binaries do not need", sorted(set(libs) - used))
    ck.check(not unstripped, "meshcutd and the plugin are stripped", unstripped)
    ck.check("usr/bin/meshcutd" in files and "opt/meshcut/bin/meshcut" in files,
             "meshcutd at /usr/bin (on PATH), the plugin at /opt/meshcut/bin/meshcut (the manifest's --cni-plugin-src)")
    tools = ["sh", "sleep", "rm", "touch", "test"]
    ck.check(all(links.get("bin/" + t) == "busybox" for t in tools) and "bin/busybox" in files,
             "the manifest's shell tools %s (busybox-static)" % tools)
    others = sorted(n for n in files if not (n in elves or n.startswith("usr/share/")
                                             or n in ("etc/passwd", "etc/group")))
    ck.check(not others, "nothing else in the image", others)
    pk = files.get("usr/share/meshcut/packages.txt", b"").decode()
    ck.check("libc6" in pk and "libbpf1" in pk and "busybox-static" in pk,
             "packages.txt names the Debian packages copied (%d)" % len(pk.splitlines()))
    root = os.path.join(tmp, "root")
    os.makedirs(root)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        tf.extractall(root)
    r = subprocess.run(["chroot", root, "/usr/bin/meshcutd", "--help"], capture_output=True, text=True)
    ck.check(r.returncode == 0 and "run" in r.stdout, "meshcutd --help runs in the image's root alone (chroot): exit %d"
             % r.returncode, r.stderr.strip()[-300:])
    r = subprocess.run(["chroot", root, "/bin/sh", "-c", "CNI_COMMAND=VERSION /opt/meshcut/bin/meshcut"],
                       capture_output=True, text=True)
    try:
        vers = json.loads(r.stdout).get("supportedVersions", [])
    except ValueError:
        vers = []
    ck.check(r.returncode == 0 and "1.0.0" in vers, "the plugin answers CNI VERSION in the image's root: %s" % vers,
             r.stderr.strip()[-300:])

    # ---- 4. ctr image import ----------------------------------------------------
    from node import CriNode
    with CriNode("img", "10.244.59.0/24") as node:
        r = subprocess.run(["ctr", "-a", node.sock, "-n", "k8s.io", "image", "import", a], capture_output=True, text=True)
        ck.check(r.returncode == 0, "ctr image import accepts the archive: exit %d" % r.returncode,
                 (r.stdout + r.stderr).strip()[-300:])
        ls = subprocess.run(["ctr", "-a", node.sock, "-n", "k8s.io", "image", "ls"], capture_output=True,
                            text=True).stdout
        row = [line.split() for line in ls.splitlines() if line.startswith(want_name + " ")]
        ck.check(len(row) == 1 and ia["digest"] in row[0], "ctr image ls: %s %s" % (want_name, ia["digest"][:19]),
                 ls.strip())
        ck.check(node.cri.image_present(want_name), "CRI ImageStatus finds %s" % want_name)
    left = [x for v in crinode_leftovers(node).values() for x in v]
    ck.check(not left, "the CRI node left nothing", left)


def crinode_leftovers(node):
    from node import leftovers
    return {k: [x for x in v if node.id in x] for k, v in leftovers().items()}


if __name__ == "__main__":
    main()
