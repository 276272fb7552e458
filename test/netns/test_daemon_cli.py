#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""netns tier, socket shortcut: meshcutd's life cycle and operator commands.

Actionable errors (no bpffs, no cgroup v2, bad netns, bad IP, incompatible
pins), config file vs flags, SIGTERM without detaching, restart reusing the
pins and swapping the program in the cgroup link, status (table and JSON),
pods, unenroll, detach idempotent and leaving nothing behind.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcnet  # noqa: E402

M = mcnet.MESHCUTD


def run(*args, timeout=20):
    return subprocess.run([M, *args], capture_output=True, text=True, timeout=timeout)


def main():
    mcnet.require_root()
    ck = mcnet.Checks()
    cg = mcnet.Cgroup("cli")
    tmp = tempfile.mkdtemp(prefix="mc-cli-")
    mcnet._cleanups.append(lambda: subprocess.run(["rm", "-rf", tmp]))

    r = run("run", "--pin-root", tmp + "/pins", "--cgroup", cg.path)
    ck.check(r.returncode == 1 and "bpffs not mounted" in r.stderr and "mount -t bpf bpf" in r.stderr,
             "pin root off bpffs: exit 1 with the mount command (%r)" % r.stderr.strip().splitlines()[-2:])
    r = run("run", "--pin-root", "/sys/fs/bpf/mc-cli-x", "--cgroup", tmp)
    ck.check(r.returncode == 1 and "not on a cgroup v2 filesystem" in r.stderr and "hint:" in r.stderr,
             "cgroup off cgroup2: exit 1 with a hint")
    r = run("run", "--pin-root", "/sys/fs/bpf/mc-cli-x", "--cgroup", cg.path + "/missing")
    ck.check(r.returncode == 1 and "No such file or directory (2)" in r.stderr, "missing cgroup dir: errno text and number")
    ck.check(not os.path.exists("/sys/fs/bpf/mc-cli-x"), "failed starts leave no pins")

    r = run("status", "--pin-root", "/sys/fs/bpf/mc-cli-none", "--json")
    j = json.loads(r.stdout)
    ck.check(r.returncode == 3 and j["installed"] is False and "meshcutd run" in j["error"],
             "status without a daemon: exit 3, installed=false, says how to start it")

    # Config file, flags on top.
    cfg = os.path.join(tmp, "meshcutd.json")
    with open(cfg, "w") as f:
        json.dump({"maxSockets": 1000, "skbVerdict": "on", "logLevel": "info", "someFutureKey": 1}, f)
    d = mcnet.Daemon(cg, "cli", extra=["--config", cfg, "--max-sockets", "2048"])
    st = d.start()
    ck.check(st["maps"]["mc_sockhash"]["max_entries"] == 2048, "flag --max-sockets overrides the config file")
    ck.check(st["features"]["skb_verdict_attached"] and st["attachments"]["sk_skb"]["attached"],
             "config skbVerdict=on attached the SK_SKB verdict")
    logtxt = open(d.logfile).read()
    ck.check("someFutureKey" in logtxt, "unknown config key reported in the log")
    ck.check('"msg":"kernel features"' in logtxt and "fionread_regression" in logtxt,
             "kernel features probed and logged at start")
    ck.check(st["features"]["netns_cookie"] and st["features"]["sockhash"] and st["features"]["sk_storage"],
             "status shows the probed features")

    # SIGTERM: exit 0, nothing detached.
    link_id = st["attachments"]["sockops"]["link_id"]
    ck.check(d.stop(signal.SIGTERM) == 0, "SIGTERM: exit 0")
    st = d.status()
    ck.check(st["attachments"]["sockops"]["attached"] and st["attachments"]["sk_msg"]["attached"]
             and not st["daemon"]["running"], "after SIGTERM the attachments stay, status says daemon not running")
    # Restart: same link, new program, maps reused.
    prog_before = st["attachments"]["sockops"]["prog_id"]
    d.extra = ["--max-sockets", "4096", "--metrics-addr", "off"]
    st = d.start()
    ck.check(st["attachments"]["sockops"]["link_id"] == link_id and
             st["attachments"]["sockops"]["prog_id"] != prog_before,
             "restart kept the pinned link and swapped its program in place")
    ck.check(st["maps"]["mc_sockhash"]["max_entries"] == 2048, "restart kept the pinned sockhash (size unchanged)")
    ck.check("keeping the pinned sockhash size" in open(d.logfile).read(), "the size mismatch is logged")

    # Text status, enroll/pods/unenroll.
    r = d.cli("status")
    ck.check("ATTACH" in r.stdout and "mc_sockhash" in r.stdout and "pairs_redirected" in r.stdout,
             "status prints a human table")
    ns = mcnet.Netns("p1")
    ns.ip("addr", "add", "10.250.99.7/24", "dev", "lo")
    r = d.cli("enroll", "--netns", ns.path)
    pods = json.loads(d.cli("pods", "--json").stdout)
    ck.check(r.returncode == 0 and len(pods) == 1 and pods[0]["ips"] == ["10.250.99.7"],
             "enroll found the pod's IPv4 address itself (%s)" % pods)
    d.cli("set", "--netns", ns.path, "--intra-pod", "off", "--same-node", "off")
    p1 = json.loads(d.cli("pods", "--json").stdout)[0]
    d.cli("set", "--netns", ns.path, "--same-node", "on")
    p2 = json.loads(d.cli("pods", "--json").stdout)[0]
    ck.check(not p1["intra_pod"] and not p1["same_node"] and not p2["intra_pod"]
             and p2["same_node"] and p2["ips"] == ["10.250.99.7"],
             "set --netns changes only the named switches of that pod, the record is kept")
    other = mcnet.Netns("other")
    r = d.cli("set", "--netns", other.path, "--intra-pod", "on", check=False)
    ck.check(r.returncode == 1 and "is not an enrolled pod" in r.stderr and "meshcutd pods" in r.stderr,
             "set --netns of a netns that is not a pod: clear error (%s)" % r.stderr.strip()[-150:])
    r = d.cli("enroll", "--netns", "/var/run/netns/mc-nope", check=False)
    ck.check(r.returncode == 1 and "couldn't open network namespace" in r.stderr, "enroll with a bad netns path: clear error")
    r = d.cli("enroll", "--netns", ns.path, "--pod-ip", "10.1.2.300", check=False)
    ck.check(r.returncode == 1 and "invalid IPv4 address" in r.stderr, "enroll with a bad IP: clear error")
    d.cli("unenroll", "--netns", ns.path)
    ck.check(json.loads(d.cli("pods", "--json").stdout) == [], "unenroll removed the pod")
    st = d.status()
    ck.check(st["maps"]["mc_pod_ips"]["entries"] == 0, "and its IPs")

    # Incompatible layout: a pin root written by another version.
    d.stop()
    meta = os.path.join(d.pin_root, "maps", "mc_meta")
    subprocess.run(["bpftool", "map", "update", "pinned", meta, "key", "0", "0", "0", "0",
                    "value", "0x54", "0x55", "0x43", "0x4d", "99", "0", "0", "0"] + ["0"] * 24, check=True)
    r = run("run", "--pin-root", d.pin_root, "--cgroup", cg.path)
    ck.check(r.returncode == 1 and "layout v99" in r.stderr and "meshcutd detach" in r.stderr,
             "a pin root of another layout version is refused with the fix (%r)" % r.stderr.strip()[-160:])

    r = d.cli("detach")
    ck.check(r.returncode == 0 and not os.path.exists(d.pin_root), "detach removed every pin and the pin root")
    r = d.cli("detach")
    ck.check(r.returncode == 0, "detach again: still exit 0 (idempotent)")
    ck.done()


if __name__ == "__main__":
    main()
