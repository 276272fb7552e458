# SPDX-License-Identifier: Apache-2.0
"""The bed's correctness pass, run in the client pod (python3 /bed/checker.py
SPREAD N PER_CONN WANT_JSON): fetch every URL N times (new connections of
PER_CONN requests each, keep-alive inside), spread over SPREAD seconds; status
200 and the body's sha256 must match WANT (url -> sha256). Prints one JSON line.
Only the standard library: it runs on the pod's python3 (the host's /usr)."""
import hashlib, http.client, json, sys, time, urllib.parse
spread, n, per_conn = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
want = json.loads(sys.argv[4])  # url -> sha256
urls = sorted(want) * n
ok, errors, conns = 0, [], 0
gap = spread / max(1, len(urls))
t0 = time.monotonic()
i = 0
while i < len(urls):
    u = urllib.parse.urlsplit(urls[i])
    try:
        c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
        conns += 1
        j = 0
        while j < per_conn and i < len(urls) and urllib.parse.urlsplit(urls[i]).netloc == u.netloc:
            url = urls[i]
            p = urllib.parse.urlsplit(url)
            c.request("GET", p.path + ("?" + p.query if p.query else ""))
            r = c.getresponse()
            body = r.read()
            d = hashlib.sha256(body).hexdigest()
            if r.status != 200 or d != want[url]:
                errors.append("%s: status %d, %d bytes, sha256 %s (want %s) %r" % (
                    url, r.status, len(body), d[:16], want[url][:16], body[:120]))
            else:
                ok += 1
            i += 1
            j += 1
            dl = t0 + i * gap - time.monotonic()
            if dl > 0:
                time.sleep(dl)
        c.close()
    except Exception as e:
        errors.append("request %d (%s): %r" % (i, urls[i] if i < len(urls) else "?", e))
        i += 1
print(json.dumps({"ok": ok, "errors": errors[:20], "n_errors": len(errors), "conns": conns}), flush=True)
