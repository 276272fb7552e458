#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""asyncio streams client for test_real_apps.py (see asyncio_server.py).

Over one connection: --big requests of 8 MiB, then --small exchanges (request
line of 20-400 bytes, 1 KiB response). Each response is checked against the
server's sha256 of what it sent, and the server's sha256 of the request line
against ours. A request that takes longer than --timeout is a stall: it is
recorded and the client reconnects. Prints one JSON object.
"""
import argparse
import asyncio
import hashlib
import json
import random
import sys
import time


async def one(reader, writer, n, rng):
    line = b"GET %d %s\n" % (n, b"p" * rng.randrange(10, 390))
    writer.write(line)
    await writer.drain()
    head = (await reader.readline()).split()
    size, sha_body, sha_req = int(head[0]), head[1].decode(), head[2].decode()
    h = hashlib.sha256()
    left = size
    while left:
        chunk = await reader.read(min(left, 1 << 20))
        if not chunk:
            raise EOFError("EOF with %d bytes missing" % left)
        h.update(chunk)
        left -= len(chunk)
    ok = size == n and h.hexdigest() == sha_body and hashlib.sha256(line).hexdigest() == sha_req
    return size, ok


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--big", type=int, default=10)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=10.0)
    a = ap.parse_args()
    rng = random.Random(7)
    out = {"requests": [], "errors": [], "connects": 0}
    conn = None
    plan = [("big", 8 << 20)] * a.big + [("small", 1024)] * a.small
    for name, n in plan:
        if conn is None:
            conn = await asyncio.open_connection(a.host, a.port, limit=1 << 20)
            out["connects"] += 1
        t0 = time.monotonic()
        try:
            size, ok = await asyncio.wait_for(one(*conn, n, rng), a.timeout)
            if not ok:
                out["errors"].append("%s: checksum mismatch" % name)
        except Exception as e:
            size, ok = 0, False
            out["errors"].append("%s: %r" % (name, e))
            conn[1].close()
            conn = None
        out["requests"].append({"path": name, "bytes": size, "sec": time.monotonic() - t0, "ok": ok})
    if conn:
        conn[1].close()
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    asyncio.run(main())
