#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""asyncio streams server for test_real_apps.py.

Request:  one line "GET <n> <padding>\\n".
Response: one line "<n> <sha256 of body> <sha256 of the request line>\\n", then
          n bytes (a prefix of a random 8 MiB buffer made at start).
Prints "ready" on stdout once listening.
"""
import argparse
import asyncio
import hashlib
import os
import sys

BIG = 8 << 20


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    data = os.urandom(BIG)
    shas = {}

    async def serve(reader, writer):
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                n = int(line.split()[1])
                if n not in shas:
                    shas[n] = hashlib.sha256(data[:n]).hexdigest()
                writer.write(b"%d %s %s\n" % (n, shas[n].encode(), hashlib.sha256(line).hexdigest().encode()))
                writer.write(memoryview(data)[:n])
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(serve, a.host, a.port, limit=1 << 20)
    print("ready", flush=True)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
