#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
#
# istio-init.sh — apply Istio's sidecar-capture nat rules (what the istio-init
# container / `pilot-agent istio-iptables` installs) inside a network namespace.
#
# Usage:
#   istio-init.sh NETNS_PATH_OR_NAME [options]
#     NETNS_PATH_OR_NAME  a name under /var/run/netns, or any path to a netns
#                         file (/proc/PID/ns/net, /var/run/netns/X, ...)
#   -p|--proxy-port PORT            outbound capture port       (default 15001)
#   -z|--inbound-capture-port PORT  inbound capture port        (default 15006)
#   -u|--proxy-uid UID[,UID..]      proxy uid(s) not captured   (default 1337)
#   -g|--proxy-gid GID[,GID..]      proxy gid(s) not captured   (default = uid)
#   -b|--inbound-ports '*'|P,P..    inbound ports to capture    (default '*')
#   -d|--exclude-inbound-ports P,.. inbound ports not captured with '*'
#                                   (default 15090,15021,15020, as the
#                                   injector passes; 15008 is always excluded)
#   -o|--exclude-outbound-ports P,..
#   -i|--outbound-ips '*'|CIDR,..   outbound destinations to capture (default '*')
#   -x|--exclude-outbound-ips CIDR,..
#   --hbone-exclude                 newer (1.2x late) form of the uid/gid
#                                   ISTIO_IN_REDIRECT rules: adds
#                                   `-p tcp -m tcp ! --dport 15008`
#   --backend nft|legacy            iptables backend (default: nft, the one
#                                   `iptables` points to on this Debian; never
#                                   mix both in one netns)
#   --clean                         only remove the rules (istio-clean-iptables)
#   --dry-run                       print the iptables-restore input, change nothing
#
# Idempotent: existing ISTIO_* chains and the jumps to them are removed first,
# then the rules are loaded with `iptables-restore --noflush` (the way
# istio-iptables does it), so other nat rules in the netns are kept.
#
# We enter the netns with `nsenter --net=` rather than `ip netns exec`:
# iptables needs nothing from /sys, and nsenter does not remount it.
#
# ---------------------------------------------------------------------------
# The rule set. This is what Istio 1.1x/1.2x's istio-iptables produces for a
# sidecar-injected pod with default annotations
# (`istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*'
#   -d 15090,15021,15020`), as shown by `iptables-save -t nat` inside the pod:
#
#   *nat
#   -N ISTIO_INBOUND
#   -N ISTIO_REDIRECT
#   -N ISTIO_IN_REDIRECT
#   -N ISTIO_OUTPUT
#   -A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN          # HBONE tunnel port
#   -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001    # outbound capture
#   -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006 # inbound capture
#   -A PREROUTING -p tcp -j ISTIO_INBOUND
#   -A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN          # -d exclusions
#   -A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
#   -A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
#   -A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
#   -A OUTPUT -p tcp -j ISTIO_OUTPUT
#   # (-o exclusions: -A ISTIO_OUTPUT -p tcp --dport P -j RETURN)
#   # inbound passthrough: the sidecar talks to the local app from 127.0.0.6
#   -A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
#   # per proxy uid: sidecar calling a local non-127.0.0.1 address over lo
#   # (its own pod IP / a service that resolves to itself) goes back inbound
#   -A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
#   -A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
#   -A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
#   # the same three for the proxy gid
#   -A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
#   -A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
#   -A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
#   -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
#   # (-x exclusions: -A ISTIO_OUTPUT -d CIDR -j RETURN)
#   -A ISTIO_OUTPUT -j ISTIO_REDIRECT                        # -i '*'
#   COMMIT
#
# Reproduced from the documented/observed output of istio's
# tools/istio-iptables (iptables-save dumps of injected pods), not from its
# code. IPv6 (ip6tables) and DNS capture (ISTIO_DNS, off by default) are not
# reproduced: the test bed is IPv4-only and DNS capture is opt-in in Istio.
# ---------------------------------------------------------------------------
set -euo pipefail

die() { echo "istio-init.sh: $*" >&2; exit 2; }

[ $# -ge 1 ] || die "usage: istio-init.sh NETNS_PATH_OR_NAME [options] (see header)"
NS="$1"; shift
case "$NS" in
  */*) NSPATH="$NS" ;;
  *)   NSPATH="/var/run/netns/$NS" ;;
esac
[ -e "$NSPATH" ] || die "no such netns: $NSPATH"

PROXY_PORT=15001
INBOUND_CAPTURE_PORT=15006
PROXY_UID=1337
PROXY_GID=""
INBOUND_PORTS='*'
EXCLUDE_INBOUND_PORTS="15090,15021,15020"
EXCLUDE_OUTBOUND_PORTS=""
OUTBOUND_IPS='*'
EXCLUDE_OUTBOUND_IPS=""
HBONE_EXCLUDE=0
BACKEND=nft
CLEAN_ONLY=0
DRY_RUN=0

while [ $# -gt 0 ]; do
  case "$1" in
    -p|--proxy-port)                PROXY_PORT="$2"; shift 2 ;;
    -z|--inbound-capture-port)      INBOUND_CAPTURE_PORT="$2"; shift 2 ;;
    -u|--proxy-uid)                 PROXY_UID="$2"; shift 2 ;;
    -g|--proxy-gid)                 PROXY_GID="$2"; shift 2 ;;
    -b|--inbound-ports)             INBOUND_PORTS="$2"; shift 2 ;;
    -d|--exclude-inbound-ports)     EXCLUDE_INBOUND_PORTS="$2"; shift 2 ;;
    -o|--exclude-outbound-ports)    EXCLUDE_OUTBOUND_PORTS="$2"; shift 2 ;;
    -i|--outbound-ips)              OUTBOUND_IPS="$2"; shift 2 ;;
    -x|--exclude-outbound-ips)      EXCLUDE_OUTBOUND_IPS="$2"; shift 2 ;;
    --hbone-exclude)                HBONE_EXCLUDE=1; shift ;;
    --backend)                      BACKEND="$2"; shift 2 ;;
    --clean)                        CLEAN_ONLY=1; shift ;;
    --dry-run)                      DRY_RUN=1; shift ;;
    -h|--help)                      sed -n '2,30p' "$0"; exit 0 ;;
    *) die "unknown option: $1" ;;
  esac
done
# Istio defaults the proxy gid to the proxy uid.
[ -n "$PROXY_GID" ] || PROXY_GID="$PROXY_UID"

case "$BACKEND" in
  nft)    IPT=iptables-nft;    IPT_RESTORE=iptables-nft-restore ;;
  legacy) IPT=iptables-legacy; IPT_RESTORE=iptables-legacy-restore ;;
  *) die "--backend must be nft or legacy" ;;
esac

split() { tr ',' '\n' <<<"$1" | sed '/^$/d'; }

gen_rules() {
  local u g p ip inredir_match=""
  [ "$HBONE_EXCLUDE" = 1 ] && inredir_match=" -p tcp -m tcp ! --dport 15008"
  echo "*nat"
  echo ":ISTIO_INBOUND - [0:0]"
  echo ":ISTIO_REDIRECT - [0:0]"
  echo ":ISTIO_IN_REDIRECT - [0:0]"
  echo ":ISTIO_OUTPUT - [0:0]"
  echo "-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN"
  echo "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports $PROXY_PORT"
  echo "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports $INBOUND_CAPTURE_PORT"
  # Inbound. With '*' every TCP port except the exclusions is captured; with
  # a list only those ports are (and the exclusions are not emitted), as Istio.
  if [ -n "$INBOUND_PORTS" ]; then
    echo "-A PREROUTING -p tcp -j ISTIO_INBOUND"
    if [ "$INBOUND_PORTS" = '*' ]; then
      for p in $(split "$EXCLUDE_INBOUND_PORTS"); do
        echo "-A ISTIO_INBOUND -p tcp -m tcp --dport $p -j RETURN"
      done
      echo "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT"
    else
      for p in $(split "$INBOUND_PORTS"); do
        echo "-A ISTIO_INBOUND -p tcp -m tcp --dport $p -j ISTIO_IN_REDIRECT"
      done
    fi
  fi
  # Outbound.
  echo "-A OUTPUT -p tcp -j ISTIO_OUTPUT"
  for p in $(split "$EXCLUDE_OUTBOUND_PORTS"); do
    echo "-A ISTIO_OUTPUT -p tcp -m tcp --dport $p -j RETURN"
  done
  echo "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN"
  for u in $(split "$PROXY_UID"); do
    echo "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo${inredir_match} -m owner --uid-owner $u -j ISTIO_IN_REDIRECT"
    echo "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner $u -j RETURN"
    echo "-A ISTIO_OUTPUT -m owner --uid-owner $u -j RETURN"
  done
  for g in $(split "$PROXY_GID"); do
    echo "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo${inredir_match} -m owner --gid-owner $g -j ISTIO_IN_REDIRECT"
    echo "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner $g -j RETURN"
    echo "-A ISTIO_OUTPUT -m owner --gid-owner $g -j RETURN"
  done
  echo "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN"
  for ip in $(split "$EXCLUDE_OUTBOUND_IPS"); do
    echo "-A ISTIO_OUTPUT -d $ip -j RETURN"
  done
  if [ "$OUTBOUND_IPS" = '*' ]; then
    echo "-A ISTIO_OUTPUT -j ISTIO_REDIRECT"
  else
    for ip in $(split "$OUTBOUND_IPS"); do
      echo "-A ISTIO_OUTPUT -d $ip -j ISTIO_REDIRECT"
    done
  fi
  echo "COMMIT"
}

in_ns() { nsenter --net="$NSPATH" "$@"; }

# istio-clean-iptables equivalent: drop the jumps, then flush and delete the
# chains. Every step tolerates "not there" so this is safe to repeat.
clean() {
  local c
  while in_ns $IPT -w -t nat -D PREROUTING -p tcp -j ISTIO_INBOUND 2>/dev/null; do :; done
  while in_ns $IPT -w -t nat -D OUTPUT -p tcp -j ISTIO_OUTPUT 2>/dev/null; do :; done
  for c in ISTIO_OUTPUT ISTIO_INBOUND ISTIO_REDIRECT ISTIO_IN_REDIRECT; do
    in_ns $IPT -w -t nat -F "$c" 2>/dev/null || true
  done
  for c in ISTIO_OUTPUT ISTIO_INBOUND ISTIO_REDIRECT ISTIO_IN_REDIRECT; do
    in_ns $IPT -w -t nat -X "$c" 2>/dev/null || true
  done
}

if [ "$DRY_RUN" = 1 ]; then
  gen_rules
  exit 0
fi

clean
[ "$CLEAN_ONLY" = 1 ] && exit 0
gen_rules | in_ns $IPT_RESTORE -w --noflush
