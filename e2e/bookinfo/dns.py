#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Tiny authoritative UDP DNS server (RFC 1035 wire format) for the test bed.

--records FILE is JSON {"fqdn": "ipv4", ...}; names are case-insensitive and
the trailing dot is optional. A (or ANY) for a known name -> one A record,
TTL 5, AA; other types for a known name -> NOERROR without answers (so glibc
does not wait for AAAA); unknown name -> NXDOMAIN (glibc then tries its next
search domain). EDNS OPT records are ignored (answers carry no OPT), and
malformed packets are dropped. SIGHUP reloads FILE. Prints "ready" on stdout
once bound.
"""

import argparse
import ipaddress
import json
import signal
import socket
import struct
import sys
import time

TTL = 5
TYPE_A, TYPE_ANY, CLASS_IN, CLASS_ANY = 1, 255, 1, 255
NOERROR, NXDOMAIN, NOTIMP = 0, 3, 4


def log(msg):
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} dns: {msg}", file=sys.stderr, flush=True)


def load_records(path):
    """{lowercase name without trailing dot: packed IPv4 address}."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    if not isinstance(raw, dict):
        raise ValueError("records file must be a JSON object")
    return {name.lower().rstrip("."): ipaddress.IPv4Address(ip).packed
            for name, ip in raw.items()}


def parse_query(pkt):
    """-> (id, flags, question bytes, lowercase name, qtype, qclass), or None
    for anything that is not a well-formed single-question query."""
    if len(pkt) < 12:
        return None
    qid, flags, qdcount = struct.unpack_from("!3H", pkt)
    if flags & 0x8000 or qdcount != 1:  # a response, or not one question
        return None
    pos, labels = 12, []
    while True:
        if pos >= len(pkt):
            return None
        n = pkt[pos]
        pos += 1
        if n == 0:
            break
        if n & 0xC0 or pos + n > len(pkt):  # compression pointer / truncated
            return None
        labels.append(pkt[pos:pos + n])
        pos += n
    if pos + 4 > len(pkt) or pos - 12 > 255:
        return None
    qtype, qclass = struct.unpack_from("!2H", pkt, pos)
    name = b".".join(labels).lower().decode("latin-1")
    return qid, flags, pkt[12:pos + 4], name, qtype, qclass


def answer(pkt, records):
    """The response to one packet, or None to drop it."""
    q = parse_query(pkt)
    if q is None:
        return None
    qid, flags, question, name, qtype, qclass = q
    opcode = (flags >> 11) & 0xF
    answers = b""
    if opcode != 0:
        rcode = NOTIMP
    elif name not in records:
        rcode = NXDOMAIN
    else:
        rcode = NOERROR
        if qtype in (TYPE_A, TYPE_ANY) and qclass in (CLASS_IN, CLASS_ANY):
            # Name as a pointer to the question (offset 12).
            answers = (b"\xc0\x0c" + struct.pack("!HHIH", TYPE_A, CLASS_IN, TTL, 4)
                       + records[name])
    # QR, same opcode, AA, RD copied, RA=0.
    rflags = 0x8000 | (opcode << 11) | 0x0400 | (flags & 0x0100) | rcode
    header = struct.pack("!6H", qid, rflags, 1, 1 if answers else 0, 0, 0)
    return header + question + answers


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--addr", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--records", required=True, help="JSON file {fqdn: ipv4}")
    args = ap.parse_args()

    records = load_records(args.records)

    def reload(signum, frame):
        nonlocal records
        try:
            records = load_records(args.records)
            log(f"reloaded {len(records)} records from {args.records}")
        except (OSError, ValueError) as e:
            log(f"reload failed, keeping {len(records)} old records: {e}")

    signal.signal(signal.SIGHUP, reload)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.addr, args.port))
    log(f"serving {len(records)} records on {args.addr}:{sock.getsockname()[1]}/udp")
    print("ready", flush=True)
    while True:
        try:
            pkt, peer = sock.recvfrom(4096)
        except OSError as e:
            log(f"recvfrom: {e}")
            continue
        try:
            resp = answer(pkt, records)
            if resp is not None:
                sock.sendto(resp, peer)
        except Exception as e:  # never crash on one packet
            log(f"dropped a packet from {peer[0]}:{peer[1]}: {e!r}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
