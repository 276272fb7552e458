#!/usr/bin/env bash
# End-to-end self-test of the libcni driver (e2e/cnitool) WITHOUT meshcut:
# Debian's real bridge + host-local plugins, plus a tiny recorder plugin that
# checks CNI_ARGS / capability args / prevResult plumbing of a chained plugin.
#
# Everything happens in things this script creates and removes on exit:
#   netns mcg-node-<pid>  "node": the driver runs here (ip netns exec), so the
#                         bridge, veth host ends and ip_forward stay out of the
#                         root netns
#   netns mcg-<pid>       "pod"
#   a temp dir            confdir, bindir (recorder), cachedir, host-local dataDir
# Needs root. Exit 0 only if every check passes.
#
# usage: e2e/cnitool/selftest.sh            (builds the driver into the temp dir)
#        CNITOOL=/path/to/cnitool e2e/cnitool/selftest.sh
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pid=$$
node_ns="mcg-node-$pid"
pod_ns="mcg-$pid"
br="mcgbr$((pid % 1000))"
net="mcg-selftest-$pid"
cid="mcg-selftest-$pid"
subnet_prefix="10.251.0."
tmp=""
pass=0
fail=0

log() { printf '%s\n' "$*"; }
ok() { pass=$((pass + 1)); log "ok   - $*"; }
bad() { fail=$((fail + 1)); log "FAIL - $*"; }
check() { # check DESCRIPTION CMD...
    local d="$1"; shift
    if "$@"; then ok "$d"; else bad "$d"; fi
}

cleanup() {
    local rc=$?
    set +e
    # The bridge and the veth host ends live in the node netns: deleting the
    # netns removes them. Delete the bridge explicitly first anyway.
    ip netns exec "$node_ns" ip link del "$br" >/dev/null 2>&1
    ip netns del "$pod_ns" >/dev/null 2>&1
    ip netns del "$node_ns" >/dev/null 2>&1
    [ -n "$tmp" ] && rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" -ne 0 ]; then
    log "selftest: must run as root (creates network namespaces)"; exit 1
fi
command -v ip >/dev/null || { log "selftest: iproute2 (ip) missing"; exit 1; }
if [ ! -x /usr/lib/cni/bridge ] || [ ! -x /usr/lib/cni/host-local ]; then
    log "selftest: installing containernetworking-plugins"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q containernetworking-plugins >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y -q containernetworking-plugins >/dev/null 2>&1; } ||
        { log "selftest: cannot install containernetworking-plugins"; exit 1; }
fi
py=/usr/bin/python3
[ -x "$py" ] || py="$(command -v python3 || true)"
[ -n "$py" ] || { log "selftest: python3 missing (recorder plugin)"; exit 1; }

tmp="$(mktemp -d /tmp/mcg-cnitool.XXXXXX)"
mkdir -p "$tmp/conf" "$tmp/bin" "$tmp/cache" "$tmp/ipam"

cnitool="${CNITOOL:-}"
if [ -z "$cnitool" ]; then
    cnitool="$tmp/cnitool"
    "$here/build.sh" "$cnitool" >/dev/null || { log "selftest: build failed"; exit 1; }
fi
[ -x "$cnitool" ] || { log "selftest: $cnitool is not executable"; exit 1; }

# Recorder: a chained plugin that logs what the runtime handed it and passes
# prevResult through (what meshcut's plugin sees in the same position).
cat >"$tmp/bin/mcg-recorder" <<EOF
#!$py
import json, os, sys
conf = json.load(sys.stdin)
cmd = os.environ.get("CNI_COMMAND", "")
rec = {
    "cmd": cmd,
    "containerID": os.environ.get("CNI_CONTAINERID", ""),
    "netns": os.environ.get("CNI_NETNS", ""),
    "ifname": os.environ.get("CNI_IFNAME", ""),
    "args": os.environ.get("CNI_ARGS", ""),
    "runtimeConfig": conf.get("runtimeConfig"),
    "hasPrevResult": "prevResult" in conf,
}
with open(conf["logFile"], "a") as f:
    f.write(json.dumps(rec, sort_keys=True) + "\n")
if cmd == "VERSION":
    print(json.dumps({"cniVersion": conf.get("cniVersion", "1.0.0"),
                      "supportedVersions": ["0.4.0", "1.0.0"]}))
elif cmd == "ADD":
    res = conf["prevResult"]
    res["cniVersion"] = conf["cniVersion"]
    print(json.dumps(res))
EOF
chmod 755 "$tmp/bin/mcg-recorder"

cat >"$tmp/conf/10-mcg.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$net",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$br",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "10.251.0.0/24"}]],
        "dataDir": "$tmp/ipam"
      }
    },
    {
      "type": "mcg-recorder",
      "logFile": "$tmp/recorder.log",
      "capabilities": {"io.kubernetes.cri.pod-annotations": true}
    }
  ]
}
EOF

ip netns add "$node_ns" || { log "selftest: ip netns add $node_ns failed"; exit 1; }
ip netns add "$pod_ns" || { log "selftest: ip netns add $pod_ns failed"; exit 1; }
ip -n "$node_ns" link set lo up
ip -n "$pod_ns" link set lo up
pod_path="/var/run/netns/$pod_ns"
[ -e "$pod_path" ] || pod_path="/run/netns/$pod_ns"

drv() { # run the driver inside the node netns
    ip netns exec "$node_ns" "$cnitool" -confdir "$tmp/conf" -bindir "/usr/lib/cni:$tmp/bin" \
        -cachedir "$tmp/cache" "$@"
}
cni_args="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=0b0c5c4e-1111-2222-3333-444455556666"
cap_json='{"io.kubernetes.cri.pod-annotations":{"meshcut.io/selftest":"yes"}}'
root_had_bridge=0
ip link show "$br" >/dev/null 2>&1 && root_had_bridge=1
root_fwd_before="$(cat /proc/sys/net/ipv4/ip_forward)"

log "# cnitool selftest: node=$node_ns pod=$pod_ns bridge=$br tmp=$tmp"

# --- unsupported verbs -------------------------------------------------------
drv status "$net" "$pod_path" >/dev/null 2>"$tmp/err"; rc=$?
check "status exits 2 (libcni 1.1.2 has no STATUS)" [ "$rc" -eq 2 ]
check "status explains why" grep -q "libcni 1.1.2" "$tmp/err"
drv gc "$net" "$pod_path" >/dev/null 2>&1; rc=$?
check "gc exits 2 (libcni 1.1.2 has no GC)" [ "$rc" -eq 2 ]

# --- ADD ---------------------------------------------------------------------
drv add "$net" "$pod_path" -id "$cid" -ifname eth0 -args "$cni_args" -cap-json "$cap_json" \
    >"$tmp/add.json" 2>"$tmp/add.err"; rc=$?
check "add exits 0" [ "$rc" -eq 0 ]
[ "$rc" -eq 0 ] || sed 's/^/#   /' "$tmp/add.err"
log "# add result:"; sed 's/^/#   /' "$tmp/add.json"
pod_ip="$("$py" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["ips"][0]["address"].split("/")[0])' "$tmp/add.json" 2>/dev/null)"
in_subnet() { case "$1" in "$subnet_prefix"[0-9]*) return 0 ;; *) return 1 ;; esac; }
check "add result JSON has an IP in 10.251.0.0/24 (${pod_ip:-none})" in_subnet "$pod_ip"
log "# ip -n $pod_ns addr show eth0:"
ip -n "$pod_ns" addr show eth0 2>&1 | sed 's/^/#   /'
check "pod eth0 has $pod_ip" bash -c "ip -n '$pod_ns' -4 -o addr show eth0 2>/dev/null | grep -q 'inet ${pod_ip}/24'"
check "bridge $br exists in node netns with gateway 10.251.0.1" \
    bash -c "ip -n '$node_ns' -4 -o addr show '$br' 2>/dev/null | grep -q 'inet 10.251.0.1/24'"
check "exactly one veth in node netns" \
    bash -c "[ \"\$(ip -n '$node_ns' -o link show type veth | wc -l)\" -eq 1 ]"
if [ "$root_had_bridge" -eq 0 ]; then
    check "root netns has no $br" bash -c "! ip link show '$br' >/dev/null 2>&1"
fi
check "root netns ip_forward unchanged ($root_fwd_before)" \
    [ "$(cat /proc/sys/net/ipv4/ip_forward)" = "$root_fwd_before" ]
check "host-local reserved $pod_ip in dataDir" [ -e "$tmp/ipam/$net/$pod_ip" ]
check "libcni cached the result in -cachedir" [ -e "$tmp/cache/results/$net-$cid-eth0" ]
if command -v ping >/dev/null 2>&1; then
    check "pod reaches its gateway (ping 10.251.0.1)" \
        bash -c "ip netns exec '$pod_ns' ping -c1 -W2 10.251.0.1 >/dev/null 2>&1"
else
    log "# skip - ping gateway (no ping binary; iputils-ping not installed)"
fi
add_rec="$(grep '"cmd": "ADD"' "$tmp/recorder.log" 2>/dev/null | head -n1)"
check "chained plugin got CNI_ARGS" grep -q 'K8S_POD_NAME=web-0' <<<"$add_rec"
check "chained plugin got runtimeConfig from -cap-json" grep -q '"meshcut.io/selftest": "yes"' <<<"$add_rec"
check "chained plugin got prevResult on ADD" grep -q '"hasPrevResult": true' <<<"$add_rec"

# --- CHECK -------------------------------------------------------------------
drv check "$net" "$pod_path" -id "$cid" -ifname eth0 -args "$cni_args" -cap-json "$cap_json" \
    2>"$tmp/check.err"; rc=$?
check "check exits 0" [ "$rc" -eq 0 ]
[ "$rc" -eq 0 ] || sed 's/^/#   /' "$tmp/check.err"
check "chained plugin got CHECK with prevResult" \
    bash -c "grep '\"cmd\": \"CHECK\"' '$tmp/recorder.log' 2>/dev/null | grep -q '\"hasPrevResult\": true'"

# --- a plugin failure is reported: non-zero exit, CNI error on stderr ---------
drv add "$net" "/var/run/netns/mcg-missing-$pid" -id "$cid-bad" -ifname eth0 \
    >"$tmp/bad.out" 2>"$tmp/bad.err"; rc=$?
check "add into a missing netns fails (exit $rc != 0)" [ "$rc" -ne 0 ]
check "plugin error printed on stderr" grep -q 'ADD failed' "$tmp/bad.err"
check "structured CNI error printed on stderr" grep -q '^cni-error: {"code":' "$tmp/bad.err"
log "# failure stderr:"; sed 's/^/#   /' "$tmp/bad.err"
drv del "$net" "" -id "$cid-bad" -ifname eth0 2>/dev/null; rc=$?
check "runtime-style DEL after the failed ADD exits 0" [ "$rc" -eq 0 ]

# --- DEL (with netns), then the runtime's second DEL without netns -------------
drv del "$net" "$pod_path" -id "$cid" -ifname eth0 -args "$cni_args" -cap-json "$cap_json" \
    2>"$tmp/del.err"; rc=$?
check "del exits 0" [ "$rc" -eq 0 ]
[ "$rc" -eq 0 ] || sed 's/^/#   /' "$tmp/del.err"
check "pod eth0 is gone" bash -c "! ip -n '$pod_ns' link show eth0 >/dev/null 2>&1"
drv del "$net" "" -id "$cid" -ifname eth0 -args "$cni_args" 2>"$tmp/del2.err"; rc=$?
check "second del with NETNS=\"\" exits 0" [ "$rc" -eq 0 ]
[ "$rc" -eq 0 ] || sed 's/^/#   /' "$tmp/del2.err"
check "chained plugin saw a DEL with empty CNI_NETNS" \
    bash -c "grep '\"cmd\": \"DEL\"' '$tmp/recorder.log' 2>/dev/null | grep '\"containerID\": \"$cid\"' | grep -q '\"netns\": \"\"'"

# --- nothing left behind ------------------------------------------------------
leftover="$(find "$tmp/ipam" -type f -name "${subnet_prefix}*" 2>/dev/null)"
check "no IP reservation left in host-local dataDir" [ -z "$leftover" ]
[ -z "$leftover" ] || log "#   left: $leftover"
check "no veth left in node netns" bash -c "[ -z \"\$(ip -n '$node_ns' -o link show type veth)\" ]"
check "no libcni cache entry left" bash -c "[ -z \"\$(ls -A '$tmp/cache/results' 2>/dev/null)\" ]"

log "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
