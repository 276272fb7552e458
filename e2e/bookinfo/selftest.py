#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Self-test of the Bookinfo demo apps, all on 127.0.0.1 with free ports (no
root needed): dns.py, ratings (nginx), details.js, reviews.py, productpage.py.

    /usr/bin/python3 e2e/bookinfo/selftest.py

Exit 0 on success, 1 with a message (and the apps' stderr) on failure.
"""

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bookinfo  # noqa: E402

PYTHON = "/usr/bin/python3"
NODE = "/usr/bin/node"
NGINX = "/usr/sbin/nginx"


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def ok(msg):
    print(f"  ok  {msg}", flush=True)


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Procs:
    """Started processes, each in its own session (process group) so that
    stopping it also stops its children (nginx workers)."""

    def __init__(self, tmp):
        self.tmp, self.procs = tmp, {}

    def start(self, name, argv, **kw):
        log = open(os.path.join(self.tmp, f"{name}.log"), "wb")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=log,
                             stdout=kw.pop("stdout", log), start_new_session=True, **kw)
        log.close()
        self.procs[name] = p
        return p

    def stop(self, name, sig=signal.SIGTERM, wait=5.0):
        p = self.procs[name]
        for s in (sig, signal.SIGKILL):
            if p.poll() is not None:  # already stopped and reaped
                break
            try:
                os.killpg(p.pid, s)
            except ProcessLookupError:
                pass
            try:
                p.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        if p.stdout:
            p.stdout.close()

    def stop_all(self):
        for name in list(self.procs):
            self.stop(name)

    def logs(self):
        for name in self.procs:
            path = os.path.join(self.tmp, f"{name}.log")
            text = open(path, errors="replace").read().strip() if os.path.exists(path) else ""
            rc = self.procs[name].poll()
            print(f"--- {name} (exit {rc}) stderr:\n{text[-2000:] or '(empty)'}")


def wait_healthy(port, name, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check(proc.poll() is None, f"{name} exited early (code {proc.returncode})")
        try:
            status, body, _ = get(port, "/healthz", timeout=1)
            if status == 200 and body == b"ok\n":
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise Failure(f"{name} not healthy on port {port} after {timeout}s")


def get(port, path, timeout=5.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp
    finally:
        conn.close()


# ---------------------------------------------------------------- DNS

def dns_query(port, name, qtype, edns=False, qid=0x1234):
    q = struct.pack("!6H", qid, 0x0100, 1, 0, 0, 1 if edns else 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".")) + b"\0"
    q += struct.pack("!2H", qtype, 1)
    if edns:  # OPT RR: root name, type 41, UDP size 4096, no options
        q += b"\0" + struct.pack("!HHIH", 41, 4096, 0, 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(q, ("127.0.0.1", port))
        r = s.recv(4096)
    rid, flags, qd, an, ns, ar = struct.unpack_from("!6H", r)
    check(rid == qid and flags & 0x8000, f"dns: bad response header for {name}")
    check(flags & 0x0400, f"dns: AA flag missing for {name}")
    check(ar == 0, f"dns: unexpected additional records for {name}")
    ip = socket.inet_ntoa(r[-4:]) if an else None
    return flags & 0xF, an, ip, r


def test_dns(procs, tmp):
    print("dns.py")
    records = os.path.join(tmp, "records.json")
    with open(records, "w") as f:
        json.dump({"details.default.svc.cluster.local.": "10.96.0.11",
                   "Reviews.Default.svc.cluster.local": "10.96.0.12"}, f)
    port = free_port(socket.SOCK_DGRAM)
    p = procs.start("dns", [PYTHON, "-B", os.path.join(HERE, "dns.py"), "--addr", "127.0.0.1",
                            "--port", str(port), "--records", records], stdout=subprocess.PIPE)
    check(p.stdout.readline() == b"ready\n", "dns.py did not print 'ready'")

    rcode, an, ip, r = dns_query(port, "details.default.svc.cluster.local", 1)
    check((rcode, an, ip) == (0, 1, "10.96.0.11"), f"dns A: {rcode} {an} {ip}")
    check(struct.unpack_from("!I", r, len(r) - 10)[0] == 5, "dns A: TTL is not 5")
    ok("A for a known name -> 10.96.0.11, TTL 5, AA")
    rcode, an, ip, _ = dns_query(port, "REVIEWS.default.svc.cluster.local.", 1)
    check((rcode, an, ip) == (0, 1, "10.96.0.12"), "dns: names not case-insensitive")
    ok("names are case-insensitive, trailing dot optional")
    rcode, an, _, _ = dns_query(port, "details.default.svc.cluster.local", 28)
    check((rcode, an) == (0, 0), f"dns AAAA: rcode {rcode}, {an} answers")
    ok("AAAA for a known name -> NOERROR, 0 answers")
    rcode, an, _, _ = dns_query(port, "details.svc.cluster.local", 1)
    check((rcode, an) == (3, 0), f"dns unknown: rcode {rcode}, {an} answers")
    ok("unknown name -> NXDOMAIN")
    rcode, an, ip, _ = dns_query(port, "details.default.svc.cluster.local", 1, edns=True)
    check((rcode, an, ip) == (0, 1, "10.96.0.11"), "dns EDNS query failed")
    ok("EDNS query -> answer without OPT")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for junk in (b"", b"\x00", os.urandom(11), b"\x12\x34\x01\x00\x00\x01" + b"\xff" * 40,
                     b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",
                     b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3f" + b"a" * 10):
            s.sendto(junk, ("127.0.0.1", port))
        s.sendto(os.urandom(600), ("127.0.0.1", port))
    rcode, an, _, _ = dns_query(port, "details.default.svc.cluster.local", 1)
    check(p.poll() is None and an == 1, "dns.py did not survive garbage packets")
    ok("garbage packets ignored, server alive")

    with open(records, "w") as f:
        json.dump({"ratings.default.svc.cluster.local": "10.96.0.13"}, f)
    os.kill(p.pid, signal.SIGHUP)
    for _ in range(50):
        rcode, an, ip, _ = dns_query(port, "ratings.default.svc.cluster.local", 1)
        if ip == "10.96.0.13":
            break
        time.sleep(0.05)
    check(ip == "10.96.0.13", "dns: SIGHUP did not reload the records")
    check(dns_query(port, "details.default.svc.cluster.local", 1)[0] == 3,
          "dns: old record still served after reload")
    ok("SIGHUP reloads the records file")


# ---------------------------------------------------------------- apps

def start_ratings(procs, tmp):
    """nginx serving the ratings, or None if nginx is not installed."""
    if not os.path.exists(NGINX):
        print(f"  SKIP nginx part: {NGINX} missing (apt-get install -y nginx-light); "
              "ratings will be served by a stand-in Python static server", flush=True)
        return None
    root = os.path.join(tmp, "ratings-root")
    bookinfo.write_ratings_root(root)
    if os.geteuid() == 0:  # root nginx runs its worker as nobody: let it read
        for d in (tmp, root):
            os.chmod(d, 0o755)
    port = free_port()
    conf = os.path.join(root, "nginx.conf")
    with open(conf, "w") as f:
        f.write(bookinfo.nginx_conf(root, port))
    p = procs.start("ratings", [NGINX, "-c", conf, "-p", root + "/", "-e", "stderr"])
    wait_healthy(port, "nginx (ratings)", p)
    for i in bookinfo.ids():
        status, body, resp = get(port, f"/ratings/{i}")
        check(status == 200 and body == bookinfo.ratings_body(i),
              f"nginx /ratings/{i}: {status} {body[:100]!r}")
        check(resp.getheader("Content-Type") == "application/json",
              f"nginx /ratings/{i}: Content-Type {resp.getheader('Content-Type')}")
    check(get(port, "/ratings/99")[0] == 404, "nginx: unknown rating not 404")
    ok(f"nginx ratings on :{port}: bodies == bookinfo.ratings_body, unknown -> 404")
    return port


def start_ratings_standin(procs, tmp):
    """Without nginx: the same static files served by a tiny Python server."""
    root = os.path.join(tmp, "ratings-root")
    bookinfo.write_ratings_root(root)
    port = free_port()
    p = procs.start("ratings", [PYTHON, "-B", "-c", (
        "import os,sys,http.server as h\n"
        "class H(h.SimpleHTTPRequestHandler):\n"
        "    protocol_version='HTTP/1.1'\n"
        "    def log_message(s,*a): pass\n"
        "    def do_GET(s):\n"
        "        if s.path=='/healthz':\n"
        "            s.send_response(200);s.send_header('Content-Length','3');s.end_headers()\n"
        "            s.wfile.write(b'ok\\n')\n"
        "        else: super().do_GET()\n"
        f"os.chdir({root!r});h.ThreadingHTTPServer(('127.0.0.1',{port}),H).serve_forever()\n")])
    wait_healthy(port, "ratings stand-in", p)
    return port


def test_apps(procs, tmp):
    print("apps")
    ratings = start_ratings(procs, tmp) or start_ratings_standin(procs, tmp)

    details = free_port()
    p = procs.start("details", [NODE, os.path.join(HERE, "details.js"), "--port", str(details)])
    wait_healthy(details, "details.js", p)
    for i in bookinfo.ids():
        status, body, _ = get(details, f"/details/{i}")
        check(status == 200 and body == bookinfo.details_body(i),
              f"details.js /details/{i} != bookinfo.details_body({i}):\n"
              f"  js: {body!r}\n  py: {bookinfo.details_body(i)!r}")
    for bad in ("/details/99", "/details/01", "/details/", "/nope"):
        check(get(details, bad)[0] == 404, f"details.js {bad} not 404")
    ok(f"details.js on :{details}: bodies byte-identical to bookinfo.details_body, unknown -> 404")

    reviews = free_port()
    p = procs.start("reviews", [PYTHON, "-B", os.path.join(HERE, "reviews.py"), "--port",
                                str(reviews), "--ratings", f"http://127.0.0.1:{ratings}",
                                "--version", "v2"])
    wait_healthy(reviews, "reviews.py", p)
    for i in bookinfo.ids():
        status, body, resp = get(reviews, f"/reviews/{i}")
        want = bookinfo.reviews_body(i, bookinfo.ratings_body(i))
        check(status == 200 and body == want, f"reviews.py /reviews/{i}: {status} {body[:200]!r}")
        check(resp.getheader("X-Version") == "v2", "reviews.py: X-Version header missing")
    check(get(reviews, "/reviews/99")[0] == 404, "reviews.py: unknown id not 404")
    ok(f"reviews.py on :{reviews}: bodies == bookinfo.reviews_body, X-Version v2, unknown -> 404")

    page = free_port()
    p = procs.start("productpage", [PYTHON, "-B", os.path.join(HERE, "productpage.py"),
                                    "--port", str(page),
                                    "--details", f"http://127.0.0.1:{details}",
                                    "--reviews", f"http://127.0.0.1:{reviews}"])
    wait_healthy(page, "productpage.py", p)
    status, body, _ = get(page, "/productpage")
    check(status == 200 and body == bookinfo.expected_productpage(0),
          f"productpage default id: {status}")
    ok(f"productpage.py on :{page}: default id 0, page of {len(body)} bytes")

    test_load(page)
    for bad in ("/productpage?id=99", "/productpage?id=x", "/productpage?id=-1", "/other"):
        check(get(page, bad)[0] == 404, f"productpage {bad} not 404")
    ok("unknown id -> 404")

    # One keep-alive connection = one productpage handler thread, so the
    # following requests reuse that thread's upstream connections.
    conn = http.client.HTTPConnection("127.0.0.1", page, timeout=10)
    conn.request("GET", "/productpage?id=1")
    check(conn.getresponse().read() == bookinfo.expected_productpage(1), "warm-up failed")
    procs.stop("details")  # its keep-alive connection from productpage goes stale
    p = procs.start("details", [NODE, os.path.join(HERE, "details.js"), "--port", str(details)])
    wait_healthy(details, "details.js (restarted)", p)
    conn.request("GET", "/productpage?id=1")
    resp = conn.getresponse()
    check(resp.status == 200 and resp.read() == bookinfo.expected_productpage(1),
          f"after a details restart: status {resp.status} (stale keep-alive not retried?)")
    ok("details.js restarted -> stale upstream connection retried, 200")

    procs.stop("ratings")  # SIGTERM: nginx master and worker exit
    t0 = time.monotonic()
    try:
        conn.request("GET", "/productpage?id=1")
        resp = conn.getresponse()
        body = resp.read()
    except OSError as e:
        raise Failure(f"productpage with ratings down: {e!r} (expected 502)")
    took = time.monotonic() - t0
    check(resp.status == 502 and took < 5, f"ratings down: status {resp.status} in {took:.2f}s")
    ok(f"ratings killed -> productpage 502 in {took * 1000:.0f} ms: {body.decode().strip()!r}")
    status, body, _ = get(page, "/productpage?id=2")
    check(status == 502, f"ratings down (new connection): status {status}")
    check(get(page, "/healthz")[0] == 200, "productpage not healthy after upstream failure")
    conn.close()


def test_load(page, conns=4, total=200):
    """total requests over `conns` keep-alive connections, ids 0..3."""
    want = {i: hashlib.sha256(bookinfo.expected_productpage(i)).hexdigest()
            for i in bookinfo.ids()}
    errors, done = [], [0]
    lock = threading.Lock()

    def worker(w):
        conn = http.client.HTTPConnection("127.0.0.1", page, timeout=10)
        sock = None
        try:
            for n in range(total // conns):
                i = (w + n) % len(want)
                conn.request("GET", f"/productpage?id={i}")
                resp = conn.getresponse()
                body = resp.read()
                if sock is None:
                    sock = conn.sock
                if resp.status != 200 or hashlib.sha256(body).hexdigest() != want[i]:
                    raise Failure(f"id {i}: status {resp.status}, sha256 mismatch")
                if resp.will_close or conn.sock is not sock:
                    raise Failure("connection not kept alive")
                with lock:
                    done[0] += 1
        except Exception as e:
            errors.append(f"conn {w}: {e!r}")
        finally:
            conn.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    check(not errors, "load: " + "; ".join(errors))
    check(done[0] == total, f"load: {done[0]}/{total} requests")
    ok(f"{total} requests over {conns} keep-alive connections: all 200, "
       f"sha256 == expected_productpage ({took:.2f}s, {total / took:.0f} req/s)")


def main():
    for tool in (PYTHON, NODE):
        if not os.path.exists(tool):
            print(f"FAIL: {tool} missing")
            return 1
    tmp = tempfile.mkdtemp(prefix="bookinfo-selftest-")
    procs = Procs(tmp)
    try:
        test_dns(procs, tmp)
        test_apps(procs, tmp)
        print("PASS: bookinfo self-test")
        return 0
    except Exception as e:
        print(f"FAIL: {e if isinstance(e, Failure) else repr(e)}")
        procs.stop_all()
        procs.logs()
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
